"""One benchmark case, run as its own process: ``python bench/cases.py CASE ROWS OUTPUT``.

Each case reads the whole ``bench_<ROWS>`` table from PostgreSQL in id order and writes OUTPUT.
The parent measures the wall time of this process; it reports its own peak RSS as its last line.
Imports count too, as they would for a real export process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def query(rows: int) -> str:
    return f"SELECT * FROM bench_{rows} ORDER BY id"


def pandas_openpyxl(rows: int, output: Path) -> None:
    """What most apps do: the whole result into a DataFrame, then to_excel."""
    import warnings

    import pandas as pd
    import psycopg

    warnings.simplefilter("ignore")  # pandas asks for SQLAlchemy; a DB-API connection works
    with psycopg.connect(DSN) as conn:
        frame = pd.read_sql(query(rows), conn)
    frame["at"] = frame["at"].dt.tz_localize(None)  # openpyxl refuses zoned timestamps
    frame.to_excel(output, index=False, engine="openpyxl")


def xlsxwriter_loop(rows: int, output: Path) -> None:
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
            f" flag, note FROM bench_{rows} ORDER BY id"
        )
        sheet.write_row(0, 0, [column.name for column in cursor.description or []])
        for number, row in enumerate(cursor, start=1):
            sheet.write_row(number, 0, row)
    book.close()


def duckdb_excel(rows: int, output: Path) -> None:
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
        f"COPY (SELECT * FROM pg.public.bench_{rows} ORDER BY id) TO '{output}' "
        "(FORMAT xlsx, HEADER true)"
    )


def psycopg_copy_csv(rows: int, output: Path) -> None:
    """The CSV baseline: psycopg's COPY TO STDOUT streamed into a file."""
    import psycopg

    with (
        psycopg.connect(DSN) as conn,
        conn.cursor() as cursor,
        cursor.copy(f"COPY ({query(rows)}) TO STDOUT (FORMAT csv, HEADER)") as copy,
        output.open("wb") as file,
    ):
        for data in copy:
            file.write(data)


def exportd_xlsx(rows: int, output: Path) -> None:
    """exportd's XLSX path: DuckDB's scanner into Arrow, the fast writer."""
    from exportd.exporter.pgarrow import PostgresArrowSource
    from exportd.exporter.sources.base import QueryOptions
    from exportd.exporter.writers.base import ExportMetadata
    from exportd.exporter.writers.fastxlsx import FastXlsxWriter
    from exportd.settings import SourceConfig

    source_config = SourceConfig.model_validate({"kind": "postgres", "dsn": DSN})
    writer = FastXlsxWriter(output, ExportMetadata("bench", "bench", datetime.now(UTC)))
    with PostgresArrowSource.from_config(source_config) as source:
        for batch in source.stream(query(rows), {}, QueryOptions()):
            writer.write_batch(batch)
        assert source.used_fast_path
    writer.finish(datetime.now(UTC))


def exportd_csv(rows: int, output: Path) -> None:
    """exportd's CSV path: COPY with parameters bound, neutralized, metadata lines."""
    from exportd.exporter.pgcopy import PostgresCsvCopy
    from exportd.settings import SourceConfig

    class Metadata:
        export_id = "bench"
        export_type = "bench"
        requested_at = datetime.now(UTC)
        timezone = "UTC"
        enabled = True

    source_config = SourceConfig.model_validate({"kind": "postgres", "dsn": DSN})
    with PostgresCsvCopy.from_config(source_config) as copier:
        copier.run(query(rows), {}, output, Metadata())


CASES: dict[str, Callable[[int, Path], None]] = {
    "pandas_openpyxl": pandas_openpyxl,
    "xlsxwriter_loop": xlsxwriter_loop,
    "duckdb_excel": duckdb_excel,
    "psycopg_copy_csv": psycopg_copy_csv,
    "exportd_xlsx": exportd_xlsx,
    "exportd_csv": exportd_csv,
}


def peak_rss_line() -> str:
    """This process's own peak RSS (VmHWM: the high-water mark of its address space since exec).

    ``wait4``'s ``ru_maxrss`` would be wrong here: the parent spawns with vfork, and Linux
    carries the parent's high-water mark into the child at exec.
    """
    status = Path("/proc/self/status").read_text(encoding="ascii")
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return f"VmHWM_KIB={kib}"


def without_bench_only_packages() -> None:
    """Run exportd's cases as installed by ``exportd[exporter]``: without pandas and NumPy.

    The bench environment has them for the pandas baseline, and pyarrow and DuckDB import them
    whenever they are importable (pyarrow on its first conversion of a Python value), which
    would add ~70 MiB and ~1 s to a process that never uses them.
    """
    for package in ("pandas", "numpy"):
        sys.modules[package] = None  # type: ignore[assignment]


if __name__ == "__main__":
    name, count, target = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    if name.startswith("exportd_"):
        without_bench_only_packages()
    CASES[name](count, target)
    print(peak_rss_line(), flush=True)
