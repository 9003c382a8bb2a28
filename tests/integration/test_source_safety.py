"""Catalog queries cannot be bent: bound parameters, read-only sessions, statement timeouts and
cancellation that reaches the server, shown against the real PostgreSQL and MariaDB.

Server activity is read from ``pg_stat_activity`` and ``information_schema.processlist``;
waiting for the server is a bounded poll (a deadline), never an assertion on speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import pyarrow as pa
import pytest

from exportd.contract.catalog import Catalog
from exportd.contract.errors import Cancelled, InvalidInput, PermanentFailure
from exportd.exporter.sources import QueryOptions, Source, open_source
from tests.integration.db_admin import admin_execute
from tests.integration.dbfixtures import (
    SOURCE_KINDS,
    TypedDatabases,
    mysql_rows,
    pg_rows,
    typed_databases_fixture,  # noqa: F401
)
from tests.integration.server_activity import (
    SERVER_DEADLINE_SECONDS,
    ServerQueries,
    wait_until,
)

pytestmark = pytest.mark.integration

# Injection payloads for the string variable: each must arrive as plain data.
STRING_PAYLOADS = [
    "x'; DROP TABLE {table}; --",
    "x\\'; DROP TABLE {table}; -- ",
    "' OR '1'='1",
    "1) OR (1=1",
    'x"; DROP TABLE {table}; --',
    "'); DELETE FROM {table}; --",
    "%(i)s",
    ":i",
    "$1",
    "? OR 1=1",
    "\u02bc OR 1=1 -- ",  # a look-alike apostrophe some escaping code normalizes
    "*/ OR 1=1 /*",
]
# Injection attempts through the typed variables: validation refuses each before any query.
TYPED_PAYLOADS = {
    "i": "1 OR 1=1",
    "f": "1; DROP TABLE {table}",
    "b": "true; DROP TABLE {table}",
    "d": "2024-02-29'; DROP TABLE {table}; --",
    "dt": "2024-01-01T00:00:00' OR '1'='1",
}
NO_MATCH: dict[str, Any] = {"s": "no such name", "i": -1, "f": -1.5, "b": None, "d": "1900-01-01",
            "dt": "1900-01-01T00:00:00"}  # fmt: skip


def injection_catalog(table: str) -> Catalog:
    """One export type with a variable of every kind, all in one WHERE clause."""
    return Catalog.model_validate(
        {
            "types": {
                "probe": {
                    "source": "db",
                    "query": (
                        f"SELECT id FROM {table} WHERE name = :s OR id = :i OR ratio = :f "
                        "OR active = :b OR born = :d OR seen_at = :dt ORDER BY id"
                    ),
                    "variables": {
                        "s": {"type": "string", "maxLength": 200},
                        "i": {"type": "integer"},
                        "f": {"type": "number"},
                        "b": {"type": "boolean", "required": False},
                        "d": {"type": "date"},
                        "dt": {"type": "datetime"},
                    },
                }
            }
        }
    )


def table_fingerprint(kind: str, databases: TypedDatabases) -> list[tuple[Any, ...]]:
    """The table's rows read over an independent admin connection."""
    sql = f"SELECT id, name, amount FROM {databases.table} ORDER BY id"
    if kind == "postgres":
        return pg_rows(sql)
    if kind == "mysql":
        return mysql_rows(sql)
    import duckdb

    with duckdb.connect(str(databases.duckdb_path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def matched_ids(source: Source, catalog: Catalog, variables: dict[str, Any]) -> list[int]:
    export_type = catalog.get("probe")
    params = catalog.bind("probe", variables)
    batches = list(source.stream(export_type.query, params, QueryOptions()))
    ids: list[int] = pa.Table.from_batches(batches).column("id").to_pylist()
    return ids


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_injection_through_every_variable_type_leaves_the_table_intact(
    typed_databases: TypedDatabases, kind: str
) -> None:
    """Hostile strings bind as data (they match no row, and ``' OR '1'='1`` does not return
    every row); hostile values for integer, number, boolean, date and datetime variables are
    refused by validation; afterwards the table holds exactly the same rows."""
    table = typed_databases.table
    catalog = injection_catalog(table)
    before = table_fingerprint(kind, typed_databases)
    assert len(before) == 4
    with open_source(typed_databases.source(kind)) as source:
        for payload in STRING_PAYLOADS:
            variables = {**NO_MATCH, "s": payload.format(table=table)}
            assert matched_ids(source, catalog, variables) == [], payload
        for name, payload in TYPED_PAYLOADS.items():
            with pytest.raises(InvalidInput) as refused:
                catalog.bind("probe", {**NO_MATCH, name: payload.format(table=table)})
            assert refused.value.errors[0].field == f"variables.{name}"
        # quotes, a double quote, a comma and "--" in real data match exactly as written
        quoted = {**NO_MATCH, "s": 'O\'Brien "quoted", comma; --'}
        assert matched_ids(source, catalog, quoted) == [9007199254740993]
        typed = {**NO_MATCH, "i": 1000000000000003, "d": "2024-02-29"}
        assert matched_ids(source, catalog, typed) == [1000000000000003, 1234567890123456]
    assert table_fingerprint(kind, typed_databases) == before


# A function that INSERTs a row into the table: PostgreSQL's and MariaDB's, and how to drop it.
WRITING_FUNCTION = {
    "postgres": (
        "CREATE FUNCTION {name}() RETURNS int LANGUAGE sql AS "
        "'INSERT INTO {table} (id) VALUES (42) RETURNING 1'",
        "DROP FUNCTION {name}()",
    ),
    "mysql": (
        "CREATE FUNCTION {name}() RETURNS INT MODIFIES SQL DATA BEGIN "
        "INSERT INTO {table} (id) VALUES (42); RETURN 1; END",
        "DROP FUNCTION {name}",
    ),
}


@pytest.fixture
def writing_function(typed_databases: TypedDatabases, kind: str) -> Iterator[str]:
    """The name of a function on the ``kind`` server that writes to the typed table."""
    name = f"{typed_databases.schema}.sneaky_write"
    create, drop = WRITING_FUNCTION[kind]
    admin_execute(kind, create.format(name=name, table=typed_databases.table))
    yield name
    admin_execute(kind, drop.format(name=name))


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_query_that_writes_through_a_function_is_refused_by_the_read_only_session(
    typed_databases: TypedDatabases, kind: str, writing_function: str
) -> None:
    """Even a catalog query calling a function that INSERTs cannot write: the transaction is
    read-only (reason ReadOnlyTransaction) and the table keeps its 4 rows."""
    before = table_fingerprint(kind, typed_databases)
    with (
        open_source(typed_databases.source(kind)) as source,
        pytest.raises(PermanentFailure) as refused,
    ):
        list(source.stream(f"SELECT {writing_function}() AS w", {}, QueryOptions()))
    assert refused.value.reason == "ReadOnlyTransaction"
    assert table_fingerprint(kind, typed_databases) == before


class Consumer:
    """Runs ``consume`` on another thread; ``outcome`` is what it ended with: None, or the
    exception it raised."""

    def __init__(self, consume: Callable[[], object]) -> None:
        self.outcome: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(consume,))
        self.thread.start()

    def _run(self, consume: Callable[[], object]) -> None:
        try:
            consume()
        except BaseException as exc:
            self.outcome = exc

    def check_cancel_stops_it(self, source: Source, probe: ServerQueries, what: str) -> None:
        """Cancels ``source`` from this thread: the consumer must end within the deadline
        with Cancelled, and the server must stop running ``what``."""
        source.cancel()
        self.thread.join(SERVER_DEADLINE_SECONDS)
        assert not self.thread.is_alive(), f"the {what} did not end after cancel()"
        assert isinstance(self.outcome, Cancelled)
        wait_until(lambda: probe.running() == [], f"the cancelled {what} is gone")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_statement_timeout_fails_clearly_and_leaves_no_query_on_the_server(kind: str) -> None:
    """A 30 s query under a 1 s statement timeout fails with reason StatementTimeout naming
    the limit, and the server no longer runs it."""
    probe = ServerQueries(kind)
    with open_source(probe.config) as source:
        with pytest.raises(PermanentFailure) as failure:
            list(
                source.stream(probe.sleep_query(30), {}, QueryOptions(statement_timeout_seconds=1))
            )
        assert failure.value.reason == "StatementTimeout"
        assert "statement timeout of 1 s" in failure.value.message
        wait_until(lambda: probe.running() == [], "the timed-out query is gone")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_cancel_from_another_thread_stops_a_streaming_query_on_the_server(kind: str) -> None:
    """While one thread streams a long query (first batch received), another calls
    ``source.cancel()``: the stream ends with Cancelled and the server drops the query."""
    probe = ServerQueries(kind)
    first_batch = threading.Event()
    source = open_source(probe.config)

    def consume() -> None:
        for _batch in source.stream(probe.slow_stream_query(), {}, QueryOptions(batch_rows=20)):
            first_batch.set()

    consumer = Consumer(consume)
    try:
        assert first_batch.wait(SERVER_DEADLINE_SECONDS), "no batch arrived"
        assert probe.running() != [], "the query should be running on the server"
        consumer.check_cancel_stops_it(source, probe, "query")
    finally:
        source.cancel()
        consumer.thread.join()
        source.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_cancel_interrupts_one_long_statement_on_the_server(kind: str) -> None:
    """A single 60 s statement (no batch boundary where the client could stop by itself) is
    interrupted by ``source.cancel()`` from another thread: the server cancels it, so the
    stream ends with Cancelled long before the 60 s are up, and the server runs nothing."""
    probe = ServerQueries(kind)
    source = open_source(probe.config)
    consumer = Consumer(lambda: list(source.stream(probe.sleep_query(60), {}, QueryOptions())))
    try:
        wait_until(lambda: probe.running() != [], "the long statement runs on the server")
        consumer.check_cancel_stops_it(source, probe, "statement")
    finally:
        consumer.thread.join()
        source.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_abandoning_a_stream_early_stops_the_query_on_the_server(kind: str) -> None:
    """A consumer that stops after the first batch (a row limit, a writer error) closes the
    generator; the server must not keep producing the rest of the result."""
    probe = ServerQueries(kind)
    with open_source(probe.config) as source:
        stream = cast(
            "Generator[pa.RecordBatch, None, None]",
            source.stream(probe.slow_stream_query(), {}, QueryOptions(batch_rows=20)),
        )
        next(stream)
        assert probe.running() != [], "the query should be running on the server"
        stream.close()
        wait_until(lambda: probe.running() == [], "the abandoned query is gone")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_percent_and_colon_in_sql_text_survive_placeholder_translation(
    typed_databases: TypedDatabases, kind: str
) -> None:
    """Literal ``%`` and ``:`` in the query text stay literal, with and without parameters, and
    a parameter value that looks like a placeholder arrives as plain text."""
    with open_source(typed_databases.source(kind)) as source:
        plain = list(source.stream("SELECT 'a%b' AS v, 'x:y' AS w", {}, QueryOptions()))
        bound = list(source.stream("SELECT 'a%b' AS v, :p AS w", {"p": "%s :p"}, QueryOptions()))
    assert plain[0].to_pylist() == [{"v": "a%b", "w": "x:y"}]
    assert bound[0].to_pylist() == [{"v": "a%b", "w": "%s :p"}]
