"""The exporter imports only what its path uses: ``exportd run`` (the whole command, in a real
process) must not load pandas or numpy, nor XlsxWriter on the fast XLSX path, nor the API's or
the operator's frameworks; the PostgreSQL CSV path not even pyarrow or DuckDB, and a small
PostgreSQL XLSX export not DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import exporter_env
from tests.integration.dbfixtures import PG_DSN

pytestmark = pytest.mark.integration
NEVER = {"pandas", "numpy", "fastapi", "kopf", "kubernetes", "openpyxl", "uvicorn"}
# Loaded when an address is validated (exportd.contract.addresses), and these exports have none.
NEVER |= {"email_validator"}
# The exporter image has neither pandas nor numpy (exporter-image/extras.txt; the venvs of
# tests/e2e/test_image_parity.py hold neither); this test environment has both, for the tests
# that read exports with pandas, and DuckDB and pyarrow load them whenever they are installed.
# So the probe makes them not found, as in the image: the run must succeed without them, and an
# import of either by exportd's own code fails it.
PROBE = """
import json, sys

class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pandas", "numpy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoPandas())
from exportd.cli import main
code = main(sys.argv[1:])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
sys.exit(code)
"""


@pytest.mark.parametrize(
    ("source", "file_name", "absent"),
    [
        ("sample", "out.xlsx", {"xlsxwriter"}),
        ("sample", "out.csv", {"xlsxwriter"}),
        ("pg", "out.xlsx", {"xlsxwriter", "duckdb"}),  # a small result: no DuckDB scanner
        ("pg", "out.csv", {"xlsxwriter", "pyarrow", "duckdb"}),
    ],
)
def test_exportd_run_imports_nothing_its_path_does_not_use(
    tmp_path: Path, sample_db: Path, source: str, file_name: str, absent: set[str]
) -> None:
    """A 15-row export per path; the process's module set after it ends lacks every module
    listed (pandas and numpy above all: +60 MiB and +0.7 s of start-up)."""
    query = "SELECT * FROM users ORDER BY id LIMIT 15"
    if source == "pg":
        query = "SELECT g AS id, 'x' || g AS name, now() AS at FROM generate_series(1, 15) g"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"types": {"t": {"source": source, "query": query}}}))
    sources = {"sample": {"kind": "duckdb", "path": str(sample_db)}}
    sources["pg"] = {"kind": "postgres", "dsn": PG_DSN}
    env = exporter_env(
        tmp_path / "data",
        sample_db,
        EXPORTD_CATALOG_PATH=str(catalog),
        EXPORTD_SOURCES=json.dumps(sources),
    )
    output = tmp_path / file_name
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "run", "t", "-o", str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "exportd" in modules and output.exists()
    assert modules & (NEVER | absent) == set()
