"""The read-only accounts recommended in docs/sources.md work as documented.

The SQL is taken from the document itself (the ``sql`` blocks headed ``-- postgres: read-only
role`` and ``-- mysql: read-only user``), with the account, database and schema names replaced
by this session's unique ones. An export through each account reads the shared ``typed``
table, and the account cannot write even outside exportd's own read-only session.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pymysql
import pytest

from exportd.exporter.sources import QueryOptions, open_source
from exportd.settings import SourceConfig
from tests.integration.db_admin import mysql_execute, pg_execute
from tests.integration.dbfixtures import (
    TypedDatabases,
    mysql_connect,
    pg_connect,
    typed_databases_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "sources.md"
SQL_BLOCK = re.compile(r"```sql\n(?P<body>.*?)```", re.DOTALL)


def documented_statements(heading: str, replacements: dict[str, str]) -> list[str]:
    """The statements of the doc's sql block that starts with ``heading``."""
    for match in SQL_BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        body = match.group("body")
        if body.startswith(heading):
            for old, new in replacements.items():
                body = body.replace(old, new)
            lines = [line for line in body.splitlines() if not line.startswith("--")]
            return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    raise AssertionError(f"docs/sources.md has no sql block starting {heading!r}")


def export_ids(config: SourceConfig, table: str) -> list[int]:
    with open_source(config) as source:
        batches = list(source.stream(f"SELECT id FROM {table} ORDER BY id", {}, QueryOptions()))
    ids: list[int] = pa.Table.from_batches(batches).column("id").to_pylist()
    return ids


@pytest.fixture
def pg_reader(typed_databases: TypedDatabases) -> Iterator[str]:
    role = f"exportd_t_{secrets.token_hex(4)}_reader"
    statements = documented_statements(
        "-- postgres: read-only role",
        {
            "exportd_reader": role,
            "DATABASE app": "DATABASE test",
            "SCHEMA public": f"SCHEMA {typed_databases.schema}",
        },
    )
    assert len(statements) == 6
    pg_execute(*statements)
    yield role
    pg_execute(
        f"DROP TABLE IF EXISTS {typed_databases.schema}.created_later",
        f"DROP OWNED BY {role}",
        f"DROP ROLE {role}",
    )


def test_postgres_documented_role_reads_but_cannot_write(
    pg_reader: str, typed_databases: TypedDatabases
) -> None:
    """Exports through the documented role read the table (also one created after the grant);
    the role's own sessions are read-only, and without that its privileges still refuse an
    INSERT."""
    config = SourceConfig(kind="postgres", dsn=f"host=127.0.0.1 dbname=test user={pg_reader}")
    assert len(export_ids(config, typed_databases.table)) == 4
    with pg_connect() as conn:
        conn.execute(f"CREATE TABLE {typed_databases.schema}.created_later AS SELECT 7 AS id")
    assert export_ids(config, f"{typed_databases.schema}.created_later") == [7]
    with psycopg.connect(f"host=127.0.0.1 dbname=test user={pg_reader}", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(f"INSERT INTO {typed_databases.table} (id) VALUES (1)")
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO {typed_databases.table} (id) VALUES (1)")


@pytest.fixture
def mysql_reader(typed_databases: TypedDatabases) -> Iterator[tuple[str, str]]:
    user, password = f"exportd_t_{secrets.token_hex(4)}_reader", secrets.token_urlsafe(12)
    statements = documented_statements(
        "-- mysql: read-only user",
        {"exportd_reader": user, "change-me": password, "app.*": f"{typed_databases.schema}.*"},
    )
    assert len(statements) == 2
    mysql_execute(*statements)
    yield user, password
    mysql_execute(f"DROP USER '{user}'@'%'")


def test_mysql_documented_user_reads_but_cannot_write(
    mysql_reader: tuple[str, str], typed_databases: TypedDatabases
) -> None:
    """An export through the documented user reads the table; the user's own connection is
    refused an INSERT (error 1142)."""
    user, password = mysql_reader
    config = SourceConfig(
        kind="mysql",
        dsn=f"mysql://{user}@127.0.0.1:3306/{typed_databases.schema}",
        password=password,
    )
    assert len(export_ids(config, typed_databases.table)) == 4
    conn = mysql_connect(user=user, password=password, database=typed_databases.schema)
    try:
        with conn.cursor() as cursor, pytest.raises(pymysql.err.OperationalError) as refused:
            cursor.execute(f"INSERT INTO {typed_databases.table} (id) VALUES (1)")
    finally:
        conn.close()
    assert refused.value.args[0] == 1142
