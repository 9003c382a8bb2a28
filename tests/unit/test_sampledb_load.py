"""``exportd load-sample`` against the local PostgreSQL and MariaDB: the same tables and rows as
the embedded DuckDB sample, and a second run leaves them as the first did.

Each test gets a throwaway database, dropped afterwards. The DuckDB side is the sample file
``ensure_sample_db`` builds (the ``sample_db`` fixture), so the comparison also shows that the
loader, which builds its own copy in memory, starts from the same definition.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest

from exportd.cli import main
from exportd.contract.errors import ExitCode
from exportd.sample.sampledb import DATA_SETS
from exportd.sample.sampleload import load_sample
from exportd.settings import SourceConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
MYSQL_ROOT: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
ALL_TABLES = [table for tables in DATA_SETS.values() for table in tables]
MENU_TABLES = list(DATA_SETS["menus"])


@pytest.fixture
def postgres_db() -> Iterator[str]:
    name = f"sampleload_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def mysql_db() -> Iterator[str]:
    name = f"sampleload_{uuid.uuid4().hex[:10]}"
    with pymysql.connect(**MYSQL_ROOT) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        with pymysql.connect(**MYSQL_ROOT) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE `{name}`")


@pytest.fixture
def reader_role(postgres_db: str) -> Iterator[str]:
    """A throwaway role (roles are cluster-wide); what it holds in ``postgres_db`` goes first."""
    role = f"sampleload_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        yield role
    finally:
        with psycopg.connect(postgres_dsn(postgres_db), autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No EXPORTD_* setting from outside the test; the data directory under ``tmp_path``."""
    for name in [key for key in os.environ if key.startswith("EXPORTD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("EXPORTD_DATA_DIR", str(tmp_path))
    return monkeypatch


def postgres_dsn(database: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={database}"


def postgres_source(database: str) -> SourceConfig:
    return SourceConfig(kind="postgres", dsn=f"postgresql://postgres@127.0.0.1:5432/{database}")


def mysql_source(database: str) -> SourceConfig:
    return SourceConfig(kind="mysql", dsn=f"mysql://root@127.0.0.1:3306/{database}")


def order_by_all(count: int) -> str:
    return ", ".join(str(position) for position in range(1, count + 1))


def duckdb_tables(sample_db: Path, tables: list[str]) -> dict[str, tuple[list[str], list[Any]]]:
    """Column names and rows, ordered by every column. Rows through Arrow: DuckDB's own fetch
    of time-zoned timestamps needs pytz, which is not installed."""
    con = duckdb.connect(str(sample_db), read_only=True)
    try:
        result = {}
        for table in tables:
            arrow = con.sql(f'SELECT * FROM "{table}"').to_arrow_table()
            names = arrow.column_names
            ordered = con.sql(
                f'SELECT * FROM "{table}" ORDER BY {order_by_all(len(names))}'
            ).to_arrow_table()
            rows = list(zip(*(column.to_pylist() for column in ordered.columns), strict=True))
            result[table] = (names, rows)
        return result
    finally:
        con.close()


def postgres_tables(database: str) -> dict[str, tuple[list[str], list[Any]]]:
    with psycopg.connect(postgres_dsn(database)) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' ORDER BY table_name"
            )
        ]
        result = {}
        for table in names:
            cursor = conn.execute(f'SELECT * FROM "{table}" LIMIT 0')
            columns = [column.name for column in cursor.description or []]
            rows = conn.execute(
                f'SELECT * FROM "{table}" ORDER BY {order_by_all(len(columns))}'
            ).fetchall()
            result[table] = (columns, rows)
        return result


def mysql_tables(database: str) -> dict[str, tuple[list[str], list[Any]]]:
    """As PostgreSQL gives them, but MySQL's TIMESTAMP arrives naive (in the session zone, set
    to UTC here) and BOOLEAN as 0/1, which equals False/True."""
    with pymysql.connect(**MYSQL_ROOT, database=database, charset="utf8mb4") as conn:
        with conn.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute("SHOW TABLES")
            names = sorted(row[0] for row in cursor.fetchall())
            result = {}
            for table in names:
                cursor.execute(f"SELECT * FROM `{table}` LIMIT 0")
                columns = [column[0] for column in cursor.description or []]
                cursor.execute(f"SELECT * FROM `{table}` ORDER BY {order_by_all(len(columns))}")
                rows = [
                    tuple(
                        value.replace(tzinfo=UTC) if isinstance(value, datetime) else value
                        for value in row
                    )
                    for row in cursor.fetchall()
                ]
                result[table] = (columns, rows)
        return result


def primary_keys_postgres(database: str) -> dict[str, list[str]]:
    with psycopg.connect(postgres_dsn(database)) as conn:
        rows = conn.execute(
            "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu USING (constraint_name, table_name) "
            "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public' "
            "ORDER BY 1, kcu.ordinal_position"
        ).fetchall()
    keys: dict[str, list[str]] = {}
    for table, column in rows:
        keys.setdefault(table, []).append(column)
    return keys


def primary_keys_mysql(database: str) -> dict[str, list[str]]:
    with pymysql.connect(**MYSQL_ROOT) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.key_column_usage "
            "WHERE table_schema = %s AND constraint_name = 'PRIMARY' "
            "ORDER BY 1, ordinal_position",
            [database],
        )
        rows = cursor.fetchall()
    keys: dict[str, list[str]] = {}
    for table, column in rows:
        keys.setdefault(table, []).append(column)
    return keys


def assert_same_as_duckdb(
    loaded: dict[str, tuple[list[str], list[Any]]], sample_db: Path, tables: list[str]
) -> None:
    expected = duckdb_tables(sample_db, tables)
    assert sorted(loaded) == sorted(expected)
    for table, (columns, rows) in expected.items():
        assert loaded[table][0] == columns, table
        assert len(loaded[table][1]) == len(rows), table
        assert loaded[table][1] == rows, table


def test_postgres_gets_the_duckdb_rows_and_a_second_load_changes_nothing(
    postgres_db: str, sample_db: Path
) -> None:
    source = postgres_source(postgres_db)
    counts = load_sample(source, ALL_TABLES)
    assert {c.table: c.rows for c in counts}["users"] == 100_000
    first = postgres_tables(postgres_db)
    assert_same_as_duckdb(first, sample_db, ALL_TABLES)
    assert primary_keys_postgres(postgres_db) == {
        "menus": ["id"],
        "muscles": ["id"],
        "users": ["id"],
    }

    assert load_sample(source, ALL_TABLES) == counts
    assert postgres_tables(postgres_db) == first


def test_mysql_gets_the_duckdb_rows_and_a_second_load_changes_nothing(
    mysql_db: str, sample_db: Path
) -> None:
    source = mysql_source(mysql_db)
    counts = load_sample(source, ALL_TABLES)
    first = mysql_tables(mysql_db)
    assert_same_as_duckdb(first, sample_db, ALL_TABLES)
    notes = {row[-1] for row in first["users"][1]}
    assert "Grüße, 日本語, emoji 😀" in notes  # 4-byte UTF-8 survives (utf8mb4)
    assert primary_keys_mysql(mysql_db) == {"menus": ["id"], "muscles": ["id"], "users": ["id"]}

    assert load_sample(source, ALL_TABLES) == counts
    assert mysql_tables(mysql_db) == first


def test_a_replaced_postgres_table_keeps_what_others_were_granted(
    postgres_db: str, reader_role: str
) -> None:
    """A role that could read a sample table still can after a later run drops and creates it
    again (a compose volume whose reader got SELECT on the tables some other way)."""
    load_sample(postgres_source(postgres_db), MENU_TABLES)
    with psycopg.connect(postgres_dsn(postgres_db), autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON menus TO "{reader_role}"')
    load_sample(postgres_source(postgres_db), MENU_TABLES)
    with psycopg.connect(postgres_dsn(postgres_db), autocommit=True) as conn:
        readable = conn.execute(
            "SELECT t, has_table_privilege(%s, t, 'SELECT') FROM unnest(%s::text[]) AS t",
            [reader_role, MENU_TABLES],
        ).fetchall()
    assert dict(readable) == {"muscles": False, "menus": True, "muscle_menus": False}


def test_compose_reader_may_read_the_tables_loaded_after_its_database_was_initialised(
    postgres_db: str, reader_role: str
) -> None:
    """deploy/compose/postgres/20-roles.sh runs on an empty database; the reader must still read
    what the sample-data service creates later. Its default-privileges statement, as written,
    for a throwaway role: a table loaded afterwards is readable by that role."""
    roles_sh = (ROOT / "deploy" / "compose" / "postgres" / "20-roles.sh").read_text()
    (statement,) = [line for line in roles_sh.splitlines() if "DEFAULT PRIVILEGES" in line]
    assert "GRANT SELECT ON TABLES TO exportd_reader" in statement
    with psycopg.connect(postgres_dsn(postgres_db), autocommit=True) as conn:
        conn.execute(statement.replace("exportd_reader", f'"{reader_role}"'))
    load_sample(postgres_source(postgres_db), ["menus"])
    with psycopg.connect(postgres_dsn(postgres_db), autocommit=True) as conn:
        conn.execute(f'SET ROLE "{reader_role}"')
        assert conn.execute("SELECT count(*) FROM menus").fetchone() == (9,)


def test_cli_loads_only_the_named_data_set_into_each_source(
    postgres_db: str, mysql_db: str, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, source in (
        ("WAREHOUSE", postgres_source(postgres_db)),
        ("SHOP", mysql_source(mysql_db)),
    ):
        assert source.dsn is not None
        cli_env.setenv(f"EXPORTD_SOURCES__{name}__KIND", source.kind)
        cli_env.setenv(f"EXPORTD_SOURCES__{name}__DSN", source.dsn.get_secret_value())

    assert main(["load-sample", "warehouse", "shop", "--only", "menus"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{name}: muscles 3 rows, menus 9 rows, muscle_menus 10 rows"
        for name in ("warehouse", "shop")
    ]
    assert sorted(postgres_tables(postgres_db)) == sorted(MENU_TABLES)
    assert sorted(mysql_tables(mysql_db)) == sorted(MENU_TABLES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load-sample", "nowhere"], "no source 'nowhere'"),
        (["load-sample", "sample"], "source 'sample' is duckdb"),
        (["load-sample", "sample", "--only", "orders"], "unknown data sets ['orders']"),
    ],
)
def test_cli_refuses_what_it_cannot_load_before_touching_a_database(
    argv: list[str],
    message: str,
    cli_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv) == int(ExitCode.PERMANENT)
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # not even the embedded sample file was built
