"""``python -m exportd.exporter``: run one export and exit with its documented code.

The process runs without pandas and NumPy, as in the exporter image (which installs neither):
where a development or bench environment has them, pyarrow imports NumPy when it loads and pandas
(~0.25 s, ~30 MiB with NumPy) on the first ``pa.array`` over a Python list, only to ask whether
the list is a pandas object. Nothing on the exporter's paths uses either. Only this entry point
blocks them: ``main()`` called in-process (tests, library users) leaves the interpreter as it is.

The garbage collector is kept off the objects start-up creates (modules, classes, pydantic's
schemas: they live until exit): it is off while they are imported and they are then frozen out of
its sight, and frozen again after the export, so the interpreter's exit does not walk them all
once more. Measured on the CSV path: about 70 ms of a 0.35 s small export.
"""

import gc
import os
import sys

gc.disable()


class _NoPandas:  # a meta path finder (importlib.abc would cost an import of its own)
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name in ("pandas", "numpy"):
            raise ModuleNotFoundError("the exporter process runs without pandas", name=name)


sys.meta_path.insert(0, _NoPandas())
# Arrow's buffers from the C library's allocator from the start: the fast XLSX writer switches
# to it anyway (writers/fastxlsx.py, use_system_allocator); chosen before pyarrow loads, mimalloc
# never starts (~4 MiB less peak RSS on a small export).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from exportd.exporter.cli import main  # noqa: E402

gc.freeze()
gc.enable()
code = main()
gc.freeze()  # what the export's path imported, too
raise SystemExit(code)
