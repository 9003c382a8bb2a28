"""LibreOffice, a real spreadsheet client, reads a fast-writer file as the source data.

PostgreSQL formats the source rows as LibreOffice displays them (dates yyyy-mm-dd, datetimes in
the export's zone, booleans TRUE/FALSE, General numbers); headless LibreOffice converts the
XLSX written from the same rows to CSV; both CSVs must hold the same fields.
"""

from __future__ import annotations

import csv
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from exportd.exporter.pgarrow import PostgresArrowSource
from exportd.exporter.sources.base import QueryOptions
from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.fastxlsx import FastXlsxWriter
from tests.integration.test_fastxlsx_postgres import PG_DSN, pg_source

pytestmark = pytest.mark.integration
ZONE = "Europe/Berlin"
ROWS = """
(1, 7, 1047.29, 0.5, 'plain', DATE '1900-03-01', TIMESTAMPTZ '2024-06-01 12:00:00+02', true,
 'Zoë 東京 😀'),
(1234567890123456789, -7, -0.01, -2.25, '=1+2', DATE '9999-12-31',
 TIMESTAMPTZ '1999-12-31 23:59:59+00', false, 'O''Brien "quoted", comma'),
(3, 0, 0.00, 'NaN', 'line1' || chr(10) || 'line2', DATE '1899-12-31',
 TIMESTAMPTZ '2038-01-19 03:14:07+00', NULL, '@user'),
(4, NULL, 10.50, 'Infinity', '', DATE '2024-02-29', NULL, true, NULL),
(5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""
SOURCE_AS_SHOWN = f"""
SELECT id::text, n::text, rtrim(rtrim(amount::text, '0'), '.') AS amount, score::text,
  body, to_char(day, 'YYYY-MM-DD') AS day,
  to_char(at AT TIME ZONE '{ZONE}', 'YYYY-MM-DD HH24:MI:SS') AS at,
  CASE WHEN flag THEN 'TRUE' WHEN NOT flag THEN 'FALSE' END AS flag, note
FROM {{table}} AS t ORDER BY t.id
"""


@pytest.fixture(name="soffice")
def soffice_fixture() -> str:
    found = shutil.which("soffice")
    assert found, "LibreOffice is missing: run scripts/install-system-deps.sh (make test does)"
    return found


@pytest.fixture(name="lo_table")
def lo_table_fixture() -> Iterator[str]:
    table = f"exportd_lo_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigint, n int, amount numeric(12,2), score float8,"
            f" body text, day date, at timestamptz, flag boolean, note text)"
        )
        conn.execute(f"INSERT INTO {table} VALUES {ROWS}")
    try:
        yield table
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def source_rows(table: str) -> list[list[str]]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(SOURCE_AS_SHOWN.format(table=table)).fetchall()
    header = ["id", "n", "amount", "score", "body", "day", "at", "flag", "note"]
    return [header] + [["" if v is None else v for v in row] for row in rows]


def test_libreoffice_converts_the_file_to_the_source_data(
    soffice: str, lo_table: str, tmp_path: Path
) -> None:
    path = tmp_path / "lo.xlsx"
    writer = FastXlsxWriter(path, ExportMetadata("exp-lo", "lo", datetime.now(UTC), ZONE))
    with PostgresArrowSource.from_config(pg_source()) as source:
        for batch in source.stream(f"SELECT * FROM {lo_table} ORDER BY id", {}, QueryOptions()):
            writer.write_batch(batch)
    writer.finish(datetime.now(UTC))

    out = tmp_path / "out"
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{tmp_path / 'profile'}",
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false",
            "--outdir",
            str(out),
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    with (out / "lo.csv").open(encoding="utf-8", newline="") as handle:
        converted = list(csv.reader(handle))
    assert converted == source_rows(lo_table)
