"""Writer plug-ins: one module per file format, chosen by the export's format.

Adding a writer is one module with a ``Writer`` subclass exposing
``from_export_type(path, metadata, export_type)`` and one line in ``WRITER_KINDS``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from exportd.catalog import ExportType
from exportd.exporter.writers.base import ExportMetadata, Writer, WriteSummary
from exportd.spec import ExportFormat

WRITER_KINDS: dict[str, str] = {
    ExportFormat.XLSX.value: "exportd.exporter.writers.xlsx:XlsxWriter",
    ExportFormat.CSV.value: "exportd.exporter.writers.csv:CsvWriter",
}


def open_writer(
    export_format: ExportFormat, path: Path, metadata: ExportMetadata, export_type: ExportType
) -> Writer:
    module_name, class_name = WRITER_KINDS[export_format.value].split(":")
    writer_class = getattr(importlib.import_module(module_name), class_name)
    writer: Writer = writer_class.from_export_type(path, metadata, export_type)
    return writer


__all__ = ["WRITER_KINDS", "ExportMetadata", "WriteSummary", "Writer", "open_writer"]
