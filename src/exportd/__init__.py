"""exportd: predefined, parameterized exports streamed to XLSX or CSV files of any size.

The package root holds the core: the export contract, the catalog, settings, storage and the
state store. Sub-packages add the processes: ``api`` (FastAPI), ``operator`` (kopf) and
``exporter`` (one export per process). The core imports none of fastapi, kopf or kubernetes.
"""

__version__ = "0.1.0"
