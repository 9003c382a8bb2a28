"""One test table, created the same in PostgreSQL, MariaDB and a DuckDB file, for source tests.

Each test session gets its own schema (a database in MariaDB) named ``exportd_t_<random>`` so
runs never collide, and drops it at the end. The table ``typed`` holds what a spreadsheet user
cares about: 16-digit ids (one above 2**53), integers, decimals, doubles, unicode and quoted
text, dates, naive timestamps, timestamps with zone, booleans, empty text and NULLs.

Import the fixtures into a test module with
``from tests.integration.dbfixtures import typed_databases_fixture  # noqa: F401`` and ask for
``typed_databases``.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest

from exportd.settings import SourceConfig

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
MYSQL_ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}

COLUMNS = (
    "id", "n", "amount", "ratio", "name", "born", "seen_at", "happened_at", "active", "note",
)  # fmt: skip
# The canonical rows; every source must return exactly these (timestamps with zone are UTC).
TYPED_ROWS: list[tuple[Any, ...]] = [
    (
        1234567890123456, 42, Decimal("1234.50"), 0.1, "Zoë 東京 🚀", date(2024, 2, 29),
        datetime(2024, 1, 2, 3, 4, 5, 123456), datetime(2024, 6, 1, 12, 0, 0, 500000, UTC),
        True, "first",
    ),
    (
        9007199254740993, -7, Decimal("-0.01"), -2.5e10, "O'Brien \"quoted\", comma; --",
        date(1999, 12, 31), datetime(2000, 1, 1), datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC),
        False, "line1\nline2",
    ),
    (
        1000000000000003, 0, Decimal("9999999999.99"), 0.0, "", date(1970, 1, 2),
        datetime(1970, 1, 1, 0, 0, 1), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        True, None,
    ),
    (1000000000000004, None, None, None, None, None, None, None, None, None),
]  # fmt: skip
TYPED_ROWS_BY_ID = sorted(TYPED_ROWS, key=lambda row: int(row[0]))

PG_TABLE = """
CREATE TABLE {schema}.typed (
  id bigint PRIMARY KEY, n integer, amount numeric(12,2), ratio double precision, name text,
  born date, seen_at timestamp, happened_at timestamptz, active boolean, note text)
"""
MYSQL_TABLE = """
CREATE TABLE {schema}.typed (
  id BIGINT PRIMARY KEY, n INT, amount DECIMAL(12,2), ratio DOUBLE, name VARCHAR(200),
  born DATE, seen_at DATETIME(6), happened_at TIMESTAMP(6) NULL, active TINYINT(1),
  note TEXT) CHARACTER SET utf8mb4
"""
DUCKDB_TABLE = """
CREATE TABLE {schema}.typed (
  id BIGINT PRIMARY KEY, n INTEGER, amount DECIMAL(12,2), ratio DOUBLE, name VARCHAR,
  born DATE, seen_at TIMESTAMP, happened_at TIMESTAMPTZ, active BOOLEAN, note VARCHAR)
"""


@dataclass(frozen=True)
class TypedDatabases:
    """Where the session's copies of ``typed`` live and how to reach them as sources."""

    schema: str
    duckdb_path: Path

    @property
    def table(self) -> str:
        return f"{self.schema}.typed"

    def source_json(self, kind: str) -> dict[str, Any]:
        """The source as settings JSON (what ``EXPORTD_SOURCES`` of a child process holds)."""
        if kind == "postgres":
            return {"kind": "postgres", "dsn": PG_DSN}
        if kind == "mysql":
            return {"kind": "mysql", "dsn": MYSQL_DSN}
        return {"kind": "duckdb", "path": str(self.duckdb_path)}

    def source(self, kind: str) -> SourceConfig:
        return SourceConfig.model_validate(self.source_json(kind))


SOURCE_KINDS = ("postgres", "mysql", "duckdb")


def pg_connect() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_DSN, autocommit=True)


def mysql_connect(**overrides: Any) -> pymysql.Connection[Any]:
    arguments = {**MYSQL_ROOT, "charset": "utf8mb4", "autocommit": True, **overrides}
    return pymysql.connect(**arguments)


def pg_rows(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with pg_connect() as conn:
        return conn.execute(sql, params).fetchall()


def mysql_rows(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = mysql_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    finally:
        conn.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _create_pg(schema: str) -> None:
    with pg_connect() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(PG_TABLE.format(schema=schema))
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {schema}.typed VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                TYPED_ROWS,
            )


def _create_mysql(schema: str) -> None:
    conn = mysql_connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute(f"CREATE DATABASE {schema} CHARACTER SET utf8mb4")
            cursor.execute(MYSQL_TABLE.format(schema=schema))
            rows = [_naive_utc(row) for row in TYPED_ROWS]
            cursor.executemany(
                f"INSERT INTO {schema}.typed VALUES ({', '.join(['%s'] * len(COLUMNS))})", rows
            )
    finally:
        conn.close()


def _naive_utc(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        value.replace(tzinfo=None) if isinstance(value, datetime) and value.tzinfo else value
        for value in row
    )


def _create_duckdb(schema: str, path: Path) -> None:
    with duckdb.connect(str(path)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(DUCKDB_TABLE.format(schema=schema))
        conn.executemany(
            f"INSERT INTO {schema}.typed VALUES ({', '.join(['?'] * len(COLUMNS))})", TYPED_ROWS
        )


def _drop_all(schema: str) -> None:
    with pg_connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn_my = mysql_connect()
    try:
        with conn_my.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {schema}")
    finally:
        conn_my.close()


@pytest.fixture(scope="session", name="typed_databases")
def typed_databases_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TypedDatabases]:
    """The ``typed`` table in all three databases for this session; dropped afterwards."""
    schema = f"exportd_t_{secrets.token_hex(4)}"
    duckdb_path = tmp_path_factory.mktemp("typed") / "typed.duckdb"
    try:
        _create_pg(schema)
        _create_mysql(schema)
        _create_duckdb(schema, duckdb_path)
        yield TypedDatabases(schema, duckdb_path)
    finally:
        _drop_all(schema)
