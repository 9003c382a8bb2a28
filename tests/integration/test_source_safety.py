"""Catalog queries cannot be bent: bound parameters, read-only sessions, statement timeouts and
cancellation that reaches the server, shown against the real PostgreSQL and MariaDB.

Server activity is read from ``pg_stat_activity`` and ``information_schema.processlist``;
waiting for the server is a bounded poll (a deadline), never an assertion on speed.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import pyarrow as pa
import pytest

from exportd.catalog import Catalog
from exportd.errors import Cancelled, InvalidInput, PermanentFailure
from exportd.exporter.sources import QueryOptions, Source, open_source
from exportd.settings import SourceConfig
from tests.integration.dbfixtures import (
    PG_DSN,
    SOURCE_KINDS,
    TypedDatabases,
    mysql_connect,
    mysql_rows,
    pg_connect,
    pg_rows,
    typed_databases_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration

SERVER_DEADLINE_SECONDS = 15.0

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


@pytest.fixture
def pg_writing_function(typed_databases: TypedDatabases) -> Iterator[str]:
    name = f"{typed_databases.schema}.sneaky_write"
    with pg_connect() as conn:
        conn.execute(
            f"CREATE FUNCTION {name}() RETURNS int LANGUAGE sql AS "
            f"'INSERT INTO {typed_databases.table} (id) VALUES (42) RETURNING 1'"
        )
    yield name
    with pg_connect() as conn:
        conn.execute(f"DROP FUNCTION {name}()")


@pytest.fixture
def mysql_writing_function(typed_databases: TypedDatabases) -> Iterator[str]:
    name = f"{typed_databases.schema}.sneaky_write"
    conn = mysql_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                f"CREATE FUNCTION {name}() RETURNS INT MODIFIES SQL DATA BEGIN "
                f"INSERT INTO {typed_databases.table} (id) VALUES (42); RETURN 1; END"
            )
        yield name
        with conn.cursor() as cursor:
            cursor.execute(f"DROP FUNCTION {name}")
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_query_that_writes_through_a_function_is_refused_by_the_read_only_session(
    typed_databases: TypedDatabases, kind: str, request: pytest.FixtureRequest
) -> None:
    """Even a catalog query calling a function that INSERTs cannot write: the transaction is
    read-only (reason ReadOnlyTransaction) and the table keeps its 4 rows."""
    function = request.getfixturevalue(
        f"{'pg' if kind == 'postgres' else 'mysql'}_writing_function"
    )
    before = table_fingerprint(kind, typed_databases)
    with (
        open_source(typed_databases.source(kind)) as source,
        pytest.raises(PermanentFailure) as refused,
    ):
        list(source.stream(f"SELECT {function}() AS w", {}, QueryOptions()))
    assert refused.value.reason == "ReadOnlyTransaction"
    assert table_fingerprint(kind, typed_databases) == before


def pg_active_queries(application_name: str) -> list[tuple[Any, ...]]:
    return pg_rows(
        "SELECT pid, state, query FROM pg_stat_activity "
        "WHERE application_name = %s AND state <> 'idle'",
        [application_name],
    )


def mysql_active_queries(marker: str) -> list[tuple[Any, ...]]:
    return mysql_rows(
        "SELECT ID, COMMAND, INFO FROM information_schema.processlist "
        "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
        [f"%{marker}%"],
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SERVER_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {SERVER_DEADLINE_SECONDS} s: {what}")
        time.sleep(0.05)


class ServerProbe:
    """One source configured so its queries can be found in the server's activity view."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.marker = f"exportd_probe_{secrets.token_hex(4)}"
        if kind == "postgres":
            self.config = SourceConfig(
                kind="postgres", dsn=f"{PG_DSN} application_name={self.marker}"
            )
        else:
            self.config = SourceConfig(kind="mysql", dsn="mysql://root@127.0.0.1:3306/test")

    def running(self) -> list[tuple[Any, ...]]:
        """PostgreSQL: the session is not idle (a query runs, or a transaction holds the open
        cursor between fetches); MySQL: a statement with the marker is in the processlist."""
        if self.kind == "postgres":
            return pg_active_queries(self.marker)
        return mysql_active_queries(self.marker)

    def sleep_query(self, seconds: int) -> str:
        function = "pg_sleep" if self.kind == "postgres" else "SLEEP"
        return f"SELECT {function}({seconds}) AS slept, '{self.marker}' AS marker"

    def slow_stream_query(self) -> str:
        """Many rows, each costing 10 ms on the server: the query is still producing when
        the test cancels it. Rows are padded so MariaDB's 16 kB network buffer fills (and
        the first rows leave the server) after a few rows, not after 5 seconds."""
        if self.kind == "postgres":
            return (
                f"SELECT g, pg_sleep(0.01) AS s, '{self.marker}' AS marker "
                "FROM generate_series(1, 100000) AS g"
            )
        return (
            f"SELECT seq, SLEEP(0.01) AS s, '{self.marker}' AS marker, "
            "REPEAT('x', 2000) AS padding FROM seq_1_to_100000"
        )


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_statement_timeout_fails_clearly_and_leaves_no_query_on_the_server(kind: str) -> None:
    """A 30 s query under a 1 s statement timeout fails with reason StatementTimeout naming
    the limit, and the server no longer runs it."""
    probe = ServerProbe(kind)
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
    probe = ServerProbe(kind)
    first_batch = threading.Event()
    outcome: list[BaseException | None] = []
    source = open_source(probe.config)

    def consume() -> None:
        try:
            for _batch in source.stream(probe.slow_stream_query(), {}, QueryOptions(batch_rows=20)):
                first_batch.set()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        assert first_batch.wait(SERVER_DEADLINE_SECONDS), "no batch arrived"
        assert probe.running() != [], "the query should be running on the server"
        source.cancel()
        consumer.join(SERVER_DEADLINE_SECONDS)
        assert not consumer.is_alive(), "the stream did not end after cancel()"
        assert isinstance(outcome[0], Cancelled)
        wait_until(lambda: probe.running() == [], "the cancelled query is gone")
    finally:
        source.cancel()
        consumer.join()
        source.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_cancel_interrupts_one_long_statement_on_the_server(kind: str) -> None:
    """A single 60 s statement (no batch boundary where the client could stop by itself) is
    interrupted by ``source.cancel()`` from another thread: the server cancels it, so the
    stream ends with Cancelled long before the 60 s are up, and the server runs nothing."""
    probe = ServerProbe(kind)
    outcome: list[BaseException | None] = []
    source = open_source(probe.config)

    def consume() -> None:
        try:
            list(source.stream(probe.sleep_query(60), {}, QueryOptions()))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        wait_until(lambda: probe.running() != [], "the long statement runs on the server")
        source.cancel()
        consumer.join(SERVER_DEADLINE_SECONDS)
        assert not consumer.is_alive(), "the statement was not interrupted by cancel()"
        assert isinstance(outcome[0], Cancelled)
        wait_until(lambda: probe.running() == [], "the cancelled statement is gone")
    finally:
        consumer.join()
        source.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_abandoning_a_stream_early_stops_the_query_on_the_server(kind: str) -> None:
    """A consumer that stops after the first batch (a row limit, a writer error) closes the
    generator; the server must not keep producing the rest of the result."""
    probe = ServerProbe(kind)
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
