"""Which path the real exporter takes for PostgreSQL, and that each gives the right file.

What must hold: XLSX from PostgreSQL is read through DuckDB's scanner and written by the fast
writer (its file has no docProps/app.xml and starts with the sheet), unless the export type asks
for XlsxWriter; CSV from PostgreSQL is written by the server's COPY, with every row, the metadata
lines, the row limit and cancel; the COPY path's exporter process peaks under 64 MiB.
"""

from __future__ import annotations

import csv
import io
import secrets
import threading
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from exportd.contract.errors import Cancelled, ExitCode, PermanentFailure
from exportd.exporter.run import run_export
from exportd.settings import ExporterSettings, SourceConfig
from tests.conftest import SpecFactory
from tests.integration.exporter_children import Exporter, sheet_rows, spec_document

pytestmark = pytest.mark.integration
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
ROWS = 20_000  # more than one batch of either reader
CSV_RSS_ROWS = 300_000
CSV_PEAK_RSS_LIMIT = 64 * 2**20


@pytest.fixture(scope="module")
def table() -> Iterator[str]:
    """A unique table of ROWS rows with the usual column types; dropped afterwards."""
    name = f"exportd_paths_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} AS SELECT i AS id, (i % 7)::int AS n,"
            " (i * 0.01)::numeric(12,2) AS amount, 'name ' || i AS name,"
            " DATE '2024-01-01' + (i % 365) AS day, i % 2 = 0 AS active,"
            " CASE WHEN i % 3 = 0 THEN NULL ELSE '=cmd ' || i END AS note"
            f" FROM generate_series(1, {ROWS}) AS i"
        )
        try:
            yield name
        finally:
            conn.execute(f"DROP TABLE {name}")


def expected_row(i: int) -> tuple[Any, ...]:
    return (
        i,
        i % 7,
        Decimal(i) / 100,
        f"name {i}",
        date.fromordinal(date(2024, 1, 1).toordinal() + i % 365),
        i % 2 == 0,
        None if i % 3 == 0 else f"=cmd {i}",
    )


def catalog_types(table: str) -> dict[str, Any]:
    query = f"SELECT * FROM {table} WHERE id >= :low ORDER BY id"
    variables = {"low": {"type": "integer"}}
    return {
        # The comments layout, so the COPY path's metadata lines are checked too.
        "pgRows": {"source": "pg", "query": query, "variables": variables, "csvLayout": "comments"},
        "pgRowsXlsxwriter": {
            "source": "pg",
            "query": query,
            "variables": variables,
            "xlsxWriter": "xlsxwriter",
        },
        "pgLimited": {"source": "pg", "query": query, "variables": variables, "maxRows": 10},
        "pgSleeps": {"source": "pg", "query": "SELECT pg_sleep(60) AS slept"},
        "pgBulk": {
            "source": "pg",
            "query": "SELECT i AS id, 'row ' || i AS name, i * 0.5 AS half"
            " FROM generate_series(1, :rows) AS i",
            "variables": {"rows": {"type": "integer"}},
        },
    }


@pytest.fixture
def settings(exporter_settings: ExporterSettings, tmp_path: Path, table: str) -> ExporterSettings:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"types": catalog_types(table)}), encoding="utf-8")
    sources = {"pg": SourceConfig.model_validate({"kind": "postgres", "dsn": PG_DSN})}
    return exporter_settings.model_copy(update={"catalog_path": catalog, "sources": sources})


def stored(settings: ExporterSettings, key: str) -> Path:
    assert settings.storage.root is not None
    return settings.storage.root / key


def written_by_fast_writer(path: Path) -> bool:
    """The fast writer streams the sheet first and writes no docProps; XlsxWriter writes
    ``docProps/app.xml`` naming Microsoft Excel and puts the sheet after the package parts."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return names[0] == "xl/worksheets/sheet1.xml" and "docProps/app.xml" not in names


def as_expected_xlsx(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """openpyxl's view of a row: numbers as numbers, dates as midnight datetimes."""
    i, n, amount, name, day, active, note = row
    return (i, n, float(amount), name, datetime(day.year, day.month, day.day), active, note)


@pytest.mark.parametrize(("export_type", "fast"), [("pgRows", True), ("pgRowsXlsxwriter", False)])
def test_postgres_xlsx_through_run_export_has_every_row_and_the_chosen_writer(
    settings: ExporterSettings,
    make_export_spec: SpecFactory,
    caplog: pytest.LogCaptureFixture,
    export_type: str,
    fast: bool,
) -> None:
    """PostgreSQL -> XLSX by run_export: every row with its value, read by DuckDB's scanner;
    the fast writer by default, XlsxWriter when the type says ``xlsxWriter: xlsxwriter``."""
    spec = make_export_spec(type=export_type, file_name="rows.xlsx", variables={"low": 1})
    with caplog.at_level("INFO", logger="exportd.exporter.run"):
        result = run_export(spec, settings)
    assert (result.rows_read, result.rows_written) == (ROWS, ROWS)
    path = stored(settings, result.object_key)
    assert written_by_fast_writer(path) is fast
    rows = sheet_rows(path)
    assert rows[0] == ("id", "n", "amount", "name", "day", "active", "note")
    assert rows[1:] == [as_expected_xlsx(expected_row(i)) for i in range(1, ROWS + 1)]
    writer = "FastXlsxWriter" if fast else "XlsxWriter"
    assert f"PostgresArrowSource (DuckDB scanner) -> {writer}, {ROWS} rows" in caplog.text


def test_postgres_csv_through_run_export_is_written_by_copy_with_every_row(
    settings: ExporterSettings, make_export_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL -> CSV by run_export: COPY writes it; the rows (formula text neutralized,
    NULL empty), the metadata lines, progress and the published file's checksum hold."""
    spec = make_export_spec(type="pgRows", file_name="rows.csv", variables={"low": 5})
    seen: list[int] = []
    with caplog.at_level("INFO", logger="exportd.exporter.copycsv"):
        result = run_export(spec, settings, on_progress=seen.append)
    assert "export path: PostgreSQL COPY -> CSV" in caplog.text
    wanted = ROWS - 4
    assert (result.rows_read, result.rows_written, seen[-1]) == (wanted, wanted, wanted)
    assert seen == sorted(seen) and len(seen) > 1  # reported while the COPY streams
    text = stored(settings, result.object_key).read_bytes().decode("utf-8")
    lines = text.split("\r\n")
    assert lines[0].startswith(f"# exportd: export={spec.id} type=pgRows ")
    assert lines[-2].endswith(f" rows={wanted}") and lines[-1] == ""
    records = list(csv.reader(io.StringIO("\r\n".join(lines[1:-2]))))
    assert records[0] == ["id", "n", "amount", "name", "day", "active", "note"]
    assert records[1:] == [
        [
            str(i),
            str(i % 7),
            f"{Decimal(i) / 100:.2f}",
            f"name {i}",
            day.isoformat(),
            "true" if active else "false",
            "" if note is None else f"'{note}",
        ]
        for i, _, _, _, day, active, note in map(expected_row, range(5, ROWS + 1))
    ]


def test_postgres_csv_over_max_rows_fails_and_publishes_nothing(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    """The COPY path keeps the row limit: more rows than maxRows fail, nothing is stored."""
    spec = make_export_spec(type="pgLimited", file_name="rows.csv", variables={"low": 1})
    with pytest.raises(PermanentFailure) as failure:
        run_export(spec, settings)
    assert failure.value.reason == "TooManyRows"
    assert not [p for p in settings.data_dir.rglob("*") if p.is_file()]


def test_postgres_csv_cancel_stops_the_copy_on_the_server(
    settings: ExporterSettings, make_export_spec: SpecFactory
) -> None:
    """Cancel during a COPY that would run a minute: Cancelled, the query gone, no file."""
    spec = make_export_spec(type="pgSleeps", file_name="sleep.csv", variables={})
    cancel = threading.Event()
    with psycopg.connect(PG_DSN, autocommit=True) as watcher:

        def cancel_once_running() -> None:
            for _ in range(300):
                running = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%pg_sleep(60)%'"
                    " AND pid <> pg_backend_pid()"
                ).fetchone()
                if running and running[0]:
                    break
                threading.Event().wait(0.1)
            cancel.set()

        helper = threading.Thread(target=cancel_once_running)
        helper.start()
        with pytest.raises(Cancelled):
            run_export(spec, settings, cancel=cancel)
        helper.join()
        left = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%pg_sleep(60)%'"
            " AND state = 'active' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert left == (0,)
    assert not [p for p in settings.data_dir.rglob("*") if p.is_file()]


def run_child(tmp_path: Path, table: str, spec: dict[str, Any]) -> tuple[int, str, int, Path]:
    """``python -m exportd.exporter`` under the RSS launcher, which must exit 0 having read as
    many rows as it wrote: rows written, stderr, the exporter's own peak RSS in bytes, and the
    published file."""
    sources = {"EXPORTD_SOURCES__PG__KIND": "postgres", "EXPORTD_SOURCES__PG__DSN": PG_DSN}
    runner = Exporter.with_catalog(tmp_path, catalog_types(table), sources)
    run = runner.run(spec)
    assert run.returncode == ExitCode.OK, run.stderr
    assert run.last["rowsRead"] == run.last["rowsWritten"]
    return run.last["rowsWritten"], run.stderr, run.max_rss_bytes, runner.stored_file(run)


def child_spec(export_type: str, file_name: str, variables: dict[str, Any]) -> dict[str, Any]:
    export_id = f"exp-paths-{secrets.token_hex(4)}"
    return spec_document(
        export_type, file_name, variables, export_id=export_id, requested_by="path-tests"
    )


def test_exporter_process_writes_postgres_csv_by_copy_under_64_mib(
    tmp_path: Path, table: str
) -> None:
    """The exporter process on 300,000 PostgreSQL rows to CSV: COPY path, every row, and its
    own peak RSS (wait4 of the child) under 64 MiB: no Arrow or DuckDB loaded."""
    spec = child_spec("pgBulk", "bulk.csv", {"rows": CSV_RSS_ROWS})
    rows, stderr, peak, path = run_child(tmp_path, table, spec)
    assert rows == CSV_RSS_ROWS
    assert "export path: PostgreSQL COPY -> CSV" in stderr
    with path.open("rb") as handle:
        assert sum(1 for _ in handle) == CSV_RSS_ROWS + 1  # the header, then the rows
    assert peak < CSV_PEAK_RSS_LIMIT, f"peak RSS {peak / 2**20:.1f} MiB"


def test_exporter_process_writes_postgres_xlsx_with_the_fast_writer(
    tmp_path: Path, table: str
) -> None:
    """The exporter process on the PostgreSQL table to XLSX: DuckDB scanner, fast writer,
    every row with its value."""
    spec = child_spec("pgRows", "rows.xlsx", {"low": 1})
    rows, stderr, _, path = run_child(tmp_path, table, spec)
    assert rows == ROWS
    assert "PostgresArrowSource (DuckDB scanner) -> FastXlsxWriter" in stderr
    assert written_by_fast_writer(path)
    values = sheet_rows(path)
    assert values[1:] == [as_expected_xlsx(expected_row(i)) for i in range(1, ROWS + 1)]
