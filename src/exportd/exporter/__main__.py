"""``python -m exportd.exporter``: run one export and exit with its documented code.

The process runs without pandas, as in the exporter image (which does not install it): where a
development or bench environment has it, pyarrow would import it (~0.25 s, ~30 MiB) on the first
``pa.array`` over a Python list, only to ask whether the list is a pandas object. Nothing on the
exporter's paths uses pandas. Only this entry point blocks it: ``main()`` called in-process
(tests, library users) leaves the interpreter as it is.
"""

import sys


class _NoPandas:  # a meta path finder (importlib.abc would cost an import of its own)
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name in ("pandas", "numpy"):
            raise ModuleNotFoundError("the exporter process runs without pandas", name=name)


sys.meta_path.insert(0, _NoPandas())

from exportd.exporter.cli import main  # noqa: E402

raise SystemExit(main())
