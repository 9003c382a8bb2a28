"""PostgreSQL into the fast XLSX writer through DuckDB's scanner: the same Arrow as the psycopg
source, the query's order kept, bound parameters, read-only, timeouts, and the file's values."""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pyarrow as pa
import pytest

from exportd.contract.errors import PermanentFailure
from exportd.exporter.cells import spreadsheet_cells
from exportd.exporter.pgarrow import PostgresArrowSource
from exportd.exporter.sources.base import QueryOptions
from exportd.exporter.sources.postgres import PostgresSource
from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.fastxlsx import FastXlsxWriter
from exportd.settings import SourceConfig

pytestmark = pytest.mark.integration
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PLUS_TWO = timezone(timedelta(hours=2))
EDGE_COLUMNS = "id, n, amount, score, body, day, at, flag, note, raw"
EDGE_ROWS: list[tuple[Any, ...]] = [
    (1, 7, Decimal("1047.29"), 0.1, "plain", date(1900, 3, 1),
     datetime(2024, 6, 1, 12, 0, tzinfo=PLUS_TWO), True, "", b"\x00\xff"),
    (1234567890123456789, -2147483648, Decimal("-0.01"), float("nan"),
     '=HYPERLINK("http://x","y")', date(9999, 12, 31),
     datetime(1999, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), False, "+1 and -1", b""),
    (3, 0, Decimal("9999999999.99"), float("inf"), "a\x01b\x0bc\x1f", date(1899, 12, 31),
     datetime(1900, 1, 1, 0, 30, tzinfo=UTC), None, "@user", None),
    (4, 1, Decimal("0.00"), float("-inf"), "😀 emoji, \"quoted\"\nnext line", date(2024, 2, 29),
     datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC), True, "\ttab first", b"x"),
    (5, 2, Decimal("1.50"), -2.5e-7, "y" * 40_000, date(2000, 1, 1),
     datetime(2000, 1, 1, tzinfo=UTC), False, "  spaces  ", b"y"),
    (6, None, None, None, None, None, None, None, None, None),
]  # fmt: skip
EDGE_TABLE = """
CREATE TABLE {schema}.edge (
  id bigint PRIMARY KEY, n integer, amount numeric(12,2), score double precision, body text,
  day date, at timestamptz, flag boolean, note text, raw bytea)
"""
ORDERED_ROWS = 30_000
XLSX_COLUMNS = "id, n, amount, score, body, day, at, flag, note"


def pg_source() -> SourceConfig:
    return SourceConfig.model_validate({"kind": "postgres", "dsn": PG_DSN})


def create_edge_schema() -> str:
    """A schema with ``edge`` (the issue's edge values) and ``shuffled`` (rows stored out of
    order); the caller drops it."""
    schema = f"exportd_fx_{secrets.token_hex(4)}"
    shuffled = list(range(ORDERED_ROWS))
    random.Random(5).shuffle(shuffled)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(EDGE_TABLE.format(schema=schema))
        conn.execute(f"CREATE SEQUENCE {schema}.counter")
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {schema}.edge ({EDGE_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})",
                EDGE_ROWS,
            )
            cursor.execute(f"CREATE TABLE {schema}.shuffled (k integer, label text)")
            with cursor.copy(f"COPY {schema}.shuffled (k, label) FROM STDIN") as copy:
                for k in shuffled:
                    copy.write_row((k, f"row {k}"))
    return schema


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module", name="edge_schema")
def edge_schema_fixture() -> Iterator[str]:
    schema = create_edge_schema()
    try:
        yield schema
    finally:
        drop_schema(schema)


def read_fast(
    sql: str, params: dict[str, Any] | None = None, **options: Any
) -> tuple[pa.Table, bool]:
    """Through DuckDB's scanner even for a small result (the small-result probe is off)."""
    with PostgresArrowSource.from_config(pg_source(), small_result_rows=0) as source:
        batches = list(source.stream(sql, params or {}, QueryOptions(**options)))
        return pa.Table.from_batches(batches), source.used_fast_path


def read_psycopg(sql: str, params: dict[str, Any] | None = None) -> pa.Table:
    with PostgresSource.from_config(pg_source()) as source:
        return pa.Table.from_batches(list(source.stream(sql, params or {}, QueryOptions())))


def comparable(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN made comparable (NaN != NaN)."""
    return [
        {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in table.to_pylist()
    ]


def test_fast_path_gives_the_psycopg_sources_arrow(edge_schema: str) -> None:
    """Same schema (types, names) and same values, NULLs and edge values included."""
    sql = f"SELECT {XLSX_COLUMNS} FROM {edge_schema}.edge ORDER BY id"
    fast, used_fast = read_fast(sql)
    assert used_fast
    slow = read_psycopg(sql)
    assert fast.schema == slow.schema
    assert comparable(fast) == comparable(slow)


def test_small_result_is_read_whole_by_the_probe_as_the_psycopg_source_reads_it(
    edge_schema: str,
) -> None:
    """A result within ``small_result_rows`` (the edge rows; and 0 rows) is read by the type
    probe, without DuckDB: same schema and values as the psycopg source, NULLs and edges
    included; one row more than the limit goes through the scanner instead."""
    sql = f"SELECT {XLSX_COLUMNS} FROM {edge_schema}.edge ORDER BY id"
    for query in (sql, sql.replace("ORDER BY", "WHERE false ORDER BY")):
        with PostgresArrowSource.from_config(pg_source()) as source:
            small = pa.Table.from_batches(list(source.stream(query, {}, QueryOptions())))
            assert source.used_small_path and not source.used_fast_path
        slow = read_psycopg(query)
        assert small.schema == slow.schema
        assert comparable(small) == comparable(slow)
    limit = len(EDGE_ROWS) - 1
    with PostgresArrowSource.from_config(pg_source(), small_result_rows=limit) as source:
        scanned = pa.Table.from_batches(list(source.stream(sql, {}, QueryOptions())))
        assert source.used_fast_path and not source.used_small_path
    assert comparable(scanned) == comparable(read_psycopg(sql))


@pytest.mark.parametrize(
    ("rows", "small"),
    [(1_000, True), (1_001, False), (999, True), (500, True), (0, True)],
)
def test_the_probe_reads_in_steps_and_takes_the_small_path_exactly_up_to_its_limit(
    rows: int, small: bool
) -> None:
    """With a limit of 1,000 rows read 500 at a time: 1,000 rows (two full steps) are still a
    small result, 1,001 are not; every row arrives once and in order either way."""
    query = f"SELECT g AS id FROM generate_series(1, {rows}) AS g ORDER BY g"
    with PostgresArrowSource.from_config(pg_source(), small_result_rows=1_000) as source:
        table = pa.Table.from_batches(list(source.stream(query, {}, QueryOptions())))
        assert source.used_small_path is small and source.used_fast_path is not small
    assert table.column("id").to_pylist() == list(range(1, rows + 1))


def test_rows_of_long_texts_are_no_small_result_and_skip_duckdb() -> None:
    """3,000 rows of 40 kB texts (120 MB): the probe stops at ``batch_bytes`` instead of reading
    them whole, and rows this large are streamed by the psycopg source in byte-sized batches
    (DuckDB would hold several 2,048-row vectors of them); every value arrives intact."""
    query = (
        "SELECT g AS id, repeat(chr(97 + g % 26), 40000) AS body FROM generate_series(1, 3000) g"
    )
    with PostgresArrowSource.from_config(pg_source()) as source:
        batches = list(source.stream(query, {}, QueryOptions()))
        assert not source.used_small_path and not source.used_fast_path
    assert max(batch.nbytes for batch in batches) <= 2 * QueryOptions().batch_bytes
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist() == list(range(1, 3001))
    assert all(
        body == chr(97 + n % 26) * 40_000
        for n, body in enumerate(table.column("body").to_pylist(), start=1)
    )


def test_statement_timeout_cancels_a_slow_small_query() -> None:
    """The probe runs under the export's statement timeout and reports it as such."""
    with (
        PostgresArrowSource.from_config(pg_source()) as source,
        pytest.raises(PermanentFailure) as caught,
    ):
        list(
            source.stream(
                "SELECT 1::int AS one FROM pg_sleep(5)",
                {},
                QueryOptions(statement_timeout_seconds=1),
            )
        )
    assert caught.value.reason == "StatementTimeout"


def test_fast_path_keeps_the_order_of_the_query(edge_schema: str) -> None:
    """Rows stored shuffled come out exactly in ORDER BY order, across many batches."""
    table, used_fast = read_fast(
        f"SELECT k, label FROM {edge_schema}.shuffled ORDER BY k DESC", batch_rows=1000
    )
    assert used_fast
    assert table.column("k").to_pylist() == list(range(ORDERED_ROWS - 1, -1, -1))


def test_types_without_an_identical_arrow_form_fall_back_to_the_psycopg_source(
    edge_schema: str,
) -> None:
    """numeric without precision, char(n), json, bytea: read by the psycopg source instead."""
    sql = (
        f"SELECT id, amount::numeric AS free, 'ab'::char(4) AS padded, "
        f"json_build_object('k', id) AS doc, raw FROM {edge_schema}.edge ORDER BY id"
    )
    table, used_fast = read_fast(sql)
    assert not used_fast
    assert comparable(table) == comparable(read_psycopg(sql))


def test_parameters_are_bound_not_spliced(edge_schema: str) -> None:
    """An injection attempt matches nothing and changes nothing; a quote is just a character."""
    sql = f"SELECT id, note FROM {edge_schema}.edge WHERE note = :note ORDER BY id"
    hostile, used_fast = read_fast(sql, {"note": "x' OR '1'='1"})
    assert used_fast and hostile.num_rows == 0
    dropped, _ = read_fast(sql, {"note": "'; DROP TABLE " + edge_schema + ".edge; --"})
    assert dropped.num_rows == 0
    found, _ = read_fast(sql, {"note": "@user"})
    assert found.column("id").to_pylist() == [3]
    with psycopg.connect(PG_DSN) as conn:
        assert conn.execute(f"SELECT count(*) FROM {edge_schema}.edge").fetchone() == (6,)


def test_scanner_connection_is_read_only() -> None:
    table, used_fast = read_fast("SELECT current_setting('transaction_read_only') AS ro")
    assert used_fast
    assert table.column("ro").to_pylist() == ["on"]


def test_statement_timeout_cancels_a_slow_query() -> None:
    with pytest.raises(PermanentFailure) as caught:
        read_fast("SELECT 1::int AS one FROM pg_sleep(5)", statement_timeout_seconds=1)
    assert caught.value.reason == "StatementTimeout"


def test_postgres_rows_land_in_the_fast_xlsx_as_the_one_mapping_says(
    edge_schema: str, tmp_path: Path
) -> None:
    """End to end: every cell read by openpyxl equals cells.py's value for the psycopg
    source's batch (the +02:00 instant shown in Berlin time, the 19-digit id as text)."""
    sql = f"SELECT {XLSX_COLUMNS} FROM {edge_schema}.edge ORDER BY id"
    path = tmp_path / "pg.xlsx"
    writer = FastXlsxWriter(
        path, ExportMetadata("exp-pg", "edge", datetime.now(UTC), "Europe/Berlin")
    )
    with PostgresArrowSource.from_config(pg_source()) as source:
        for batch in source.stream(sql, {}, QueryOptions()):
            writer.write_batch(batch)
    assert writer.finish(datetime.now(UTC)).rows_written == len(EDGE_ROWS)
    reference = read_psycopg(sql)
    rows = list(openpyxl.load_workbook(path)["Export"].iter_rows(min_row=2, values_only=True))
    for index, name in enumerate(reference.column_names):
        expected = spreadsheet_cells(reference.column(name).combine_chunks(), "Europe/Berlin")
        got = [row[index] for row in rows]
        for value, want in zip(got, expected, strict=True):
            if isinstance(want, datetime):
                want = want.replace(microsecond=round(want.microsecond, -3))
            elif isinstance(want, date):
                want = datetime(want.year, want.month, want.day)
            assert value == want, name
    assert rows[0][6] == datetime(2024, 6, 1, 12, 0)
    assert rows[-1][0] == "1234567890123456789"
