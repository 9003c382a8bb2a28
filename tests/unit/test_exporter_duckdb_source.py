"""DuckDB source: streaming in batches, bound parameters, hardening, error taxonomy, timeout
and cancel, against the real sample database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from exportd.contract.errors import Cancelled, PermanentFailure, TransientFailure
from exportd.exporter.sources import QueryOptions, open_source
from exportd.exporter.sources.duckdb import DuckDBSource
from exportd.settings import SourceConfig

ENDLESS = "SELECT count(*) FROM range(1000000000000) a"


@pytest.fixture
def source(sample_db: Path) -> Iterator[DuckDBSource]:
    opened = open_source(SourceConfig(kind="duckdb", path=sample_db))
    assert isinstance(opened, DuckDBSource)
    yield opened
    opened.close()


def test_rows_stream_in_batches_of_the_requested_size(source: DuckDBSource) -> None:
    batches = list(
        source.stream(
            "SELECT id, tier FROM users WHERE tier BETWEEN :x AND :y ORDER BY id",
            {"x": 1, "y": 2},
            QueryOptions(batch_rows=4096),
        )
    )
    assert len(batches) > 5
    assert all(batch.num_rows <= 4096 for batch in batches)
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 40_000
    assert set(table.column("tier").to_pylist()) == {1, 2}


def test_empty_result_still_yields_the_schema(source: DuckDBSource) -> None:
    batches = list(source.stream("SELECT id, name FROM users WHERE id < 0", {}, QueryOptions()))
    assert len(batches) == 1
    assert batches[0].num_rows == 0
    assert batches[0].schema.names == ["id", "name"]


def test_injection_text_is_bound_as_a_value(source: DuckDBSource) -> None:
    for hostile in ("1; DROP TABLE users", "' OR 1=1 --"):
        batches = list(
            source.stream("SELECT id FROM users WHERE country = :c", {"c": hostile}, QueryOptions())
        )
        assert sum(b.num_rows for b in batches) == 0
    count = list(source.stream("SELECT count(*) AS n FROM users", {}, QueryOptions()))
    assert count[0].column("n").to_pylist() == [100_000]


def test_files_outside_the_database_cannot_be_read(source: DuckDBSource, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(PermanentFailure):
        list(source.stream(f"SELECT * FROM read_csv('{secret}')", {}, QueryOptions()))


def test_protections_cannot_be_switched_back_on(source: DuckDBSource) -> None:
    for statement in ("SET enable_external_access = true", "SET autoload_known_extensions=1"):
        with pytest.raises(PermanentFailure):
            list(source.stream(statement, {}, QueryOptions()))


def test_the_database_is_read_only(source: DuckDBSource) -> None:
    with pytest.raises(PermanentFailure):
        list(source.stream("DELETE FROM users", {}, QueryOptions()))


def test_bad_sql_and_unknown_tables_are_permanent(source: DuckDBSource) -> None:
    for bad in ("SELEC 1", "SELECT * FROM no_such_table", "SELECT no_such_column FROM users"):
        with pytest.raises(PermanentFailure) as caught:
            list(source.stream(bad, {}, QueryOptions()))
        assert caught.value.reason == "QueryError"


def test_missing_database_file_is_transient(tmp_path: Path) -> None:
    with pytest.raises(TransientFailure):
        DuckDBSource(tmp_path / "missing.duckdb")


def test_statement_timeout_interrupts_with_its_own_reason(source: DuckDBSource) -> None:
    with pytest.raises(PermanentFailure) as caught:
        list(source.stream(ENDLESS, {}, QueryOptions(statement_timeout_seconds=1)))
    assert caught.value.reason == "StatementTimeout"


def test_cancel_from_another_thread_interrupts_the_running_query(source: DuckDBSource) -> None:
    """Whether the cancel lands before or during the query, the stream ends Cancelled."""
    canceller = threading.Timer(0.2, source.cancel)
    canceller.start()
    with pytest.raises(Cancelled):
        list(source.stream(ENDLESS, {}, QueryOptions()))
    canceller.join()


def test_cancel_before_the_query_starts_is_not_lost(source: DuckDBSource) -> None:
    source.cancel()
    with pytest.raises(Cancelled):
        list(source.stream(ENDLESS, {}, QueryOptions()))
