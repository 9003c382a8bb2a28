"""Batches of the server sources (PostgreSQL and MariaDB, in-process) are sized by what their
rows weigh: rows of 40 kB texts come in batches of about ``batch_bytes``, not 10,000 rows (400 MB)
at once, and every row arrives once, in order, whatever the batch sizes were."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from exportd.exporter.sources import QueryOptions, open_source
from exportd.exporter.sources.base import FIRST_BATCH_ROWS, next_batch_rows
from exportd.settings import SourceConfig
from tests.integration.dbfixtures import MYSQL_DSN, PG_DSN

pytestmark = pytest.mark.integration
ROWS = 3_000
TEXT = 40_000
QUERIES = {
    "postgres": (
        PG_DSN,
        "SELECT g AS id, repeat(chr(97 + g % 26), :size) AS body"
        " FROM generate_series(1, :rows) AS g ORDER BY g",
    ),
    "mysql": (
        MYSQL_DSN,
        "SELECT seq AS id, REPEAT(CHAR(97 + seq % 26 USING utf8mb4), :size) AS body"
        " FROM seq_1_to_1000000 WHERE seq <= :rows ORDER BY seq",
    ),
}


@pytest.mark.parametrize("kind", sorted(QUERIES))
def test_large_rows_come_in_batches_of_about_batch_bytes_all_in_order(kind: str) -> None:
    dsn, query = QUERIES[kind]
    options = QueryOptions(batch_rows=10_000, batch_bytes=1024 * 1024)
    with open_source(SourceConfig.model_validate({"kind": kind, "dsn": dsn})) as source:
        batches = list(source.stream(query, {"size": TEXT, "rows": ROWS}, options))
    assert batches[0].num_rows == FIRST_BATCH_ROWS
    # After the first, each batch holds what fits in 1 MiB of 40 kB rows: 26 rows, not 10,000.
    assert all(batch.num_rows <= 1024 * 1024 // TEXT for batch in batches[1:-1])
    assert max(batch.nbytes for batch in batches[1:]) <= 1024 * 1024
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist() == list(range(1, ROWS + 1))
    bodies = table.column("body").to_pylist()
    assert all(body == chr(97 + n % 26) * TEXT for n, body in enumerate(bodies, start=1))


def test_small_rows_grow_to_batch_rows_after_the_first_batch() -> None:
    batch = pa.record_batch({"id": pa.array(range(100), pa.int64())})
    assert next_batch_rows(batch, QueryOptions(batch_rows=10_000)) == 10_000
    wide = pa.record_batch({"t": pa.array(["x" * 100_000] * 10)})
    assert next_batch_rows(wide, QueryOptions(batch_bytes=1024 * 1024)) == 10
    huge = pa.record_batch({"t": pa.array(["x" * 5_000_000])})
    assert next_batch_rows(huge, QueryOptions(batch_bytes=1024 * 1024)) == 1


def test_duckdb_vectors_are_joined_up_to_batch_rows_or_batch_bytes(tmp_path: Path) -> None:
    """The DuckDB source reads 2,048-row vectors and joins them: short rows into batches of at
    most ``batch_rows`` (four vectors, 8,192 rows, here; the last 9,040), long ones not beyond
    a vector; all rows in order."""
    import duckdb

    path = tmp_path / "rows.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE short AS SELECT i AS id FROM range(1, 50001) t(i)")
        con.execute(
            "CREATE TABLE long AS SELECT i AS id, repeat(chr(97 + (i % 26)::int), 4000) AS body"
            " FROM range(1, 5001) t(i)"
        )
    config = SourceConfig.model_validate({"kind": "duckdb", "path": str(path)})
    options = QueryOptions(batch_rows=10_000, batch_bytes=1024 * 1024)
    with open_source(config) as source:
        short = list(source.stream("SELECT id FROM short ORDER BY id", {}, options))
        long = list(source.stream("SELECT id, body FROM long ORDER BY id", {}, options))
    assert [batch.num_rows for batch in short] == [8_192] * 5 + [50_000 - 5 * 8_192]
    assert pa.Table.from_batches(short).column("id").to_pylist() == list(range(1, 50_001))
    assert all(batch.num_rows <= 2_048 for batch in long)
    table = pa.Table.from_batches(long)
    assert table.column("id").to_pylist() == list(range(1, 5_001))
    assert table.column("body").to_pylist() == [chr(97 + n % 26) * 4000 for n in range(1, 5_001)]
