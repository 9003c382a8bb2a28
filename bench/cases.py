"""One baseline case, run as its own process: ``python bench/cases.py CASE TABLE OUTPUT``.

Each case reads the whole TABLE from PostgreSQL in id order and writes OUTPUT. The runner
measures the process (``measure.py``: wall, CPU, peak RSS); imports count too, as they would for
a real export process. exportd itself is not a case here: the runner starts the exporter exactly
as a Job does (``python -m exportd.exporter``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def query(table: str) -> str:
    return f"SELECT * FROM {table} ORDER BY id"


def xlsxwriter_loop(table: str, output: Path) -> None:
    """Server-side cursor + XlsxWriter constant_memory, one write_row per row."""
    import psycopg
    import xlsxwriter

    book = xlsxwriter.Workbook(
        str(output),
        {"constant_memory": True, "default_date_format": "yyyy-mm-dd", "strings_to_urls": False},
    )
    sheet = book.add_worksheet()
    with psycopg.connect(DSN) as conn, conn.cursor(name="bench") as cursor:
        # XlsxWriter refuses zoned timestamps: the server turns them into UTC wall time.
        cursor.execute(
            f"SELECT id, qty, amount, score, code, status, day, at AT TIME ZONE 'UTC' AS at,"
            f" flag, note FROM {table} ORDER BY id"
        )
        sheet.write_row(0, 0, [column.name for column in cursor.description or []])
        for number, row in enumerate(cursor, start=1):
            sheet.write_row(number, 0, row)
    book.close()


def duckdb_excel(table: str, output: Path) -> None:
    """DuckDB's postgres and excel extensions: ATTACH, then COPY ... TO xlsx."""
    import duckdb
    import duckdb_extension_excel
    import duckdb_extension_postgres

    connection = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    for module in (duckdb_extension_postgres, duckdb_extension_excel):
        binary = next((Path(module.__file__).parent / "extensions").glob("*/*.duckdb_extension"))
        connection.execute(f"SET extension_directory = '{output.parent / 'duckdb-ext'}'")
        connection.execute(f"INSTALL '{binary}'")
    connection.execute("LOAD postgres")
    connection.execute("LOAD excel")
    connection.execute(f"ATTACH '{DSN}' AS pg (TYPE postgres, READ_ONLY)")
    connection.execute(
        f"COPY (SELECT * FROM pg.public.{table} ORDER BY id) TO '{output}' "
        "(FORMAT xlsx, HEADER true)"
    )


def psycopg_copy_csv(table: str, output: Path) -> None:
    """The CSV baseline: psycopg's COPY TO STDOUT streamed into a file."""
    import psycopg

    with (
        psycopg.connect(DSN) as conn,
        conn.cursor() as cursor,
        cursor.copy(f"COPY ({query(table)}) TO STDOUT (FORMAT csv, HEADER)") as copy,
        output.open("wb") as file,
    ):
        for data in copy:
            file.write(data)


CASES: dict[str, Callable[[str, Path], None]] = {
    "xlsxwriter_loop": xlsxwriter_loop,
    "duckdb_excel": duckdb_excel,
    "psycopg_copy_csv": psycopg_copy_csv,
}


if __name__ == "__main__":
    CASES[sys.argv[1]](sys.argv[2], Path(sys.argv[3]))
