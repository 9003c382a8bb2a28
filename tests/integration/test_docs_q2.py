"""The Q2 answer in docs/sql/q2.sql runs unchanged on PostgreSQL and DuckDB and gives the
expected counts on the sample data set.

The data set is not copied here: the DuckDB sample database is built with
``exportd.sample.sampledb.ensure_sample_db`` and its menus tables (columns, types and rows) are
copied
into a fresh PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from exportd.sample.sampledb import ensure_sample_db

pytestmark = pytest.mark.integration

Q2_FILE = Path(__file__).resolve().parents[2] / "docs" / "sql" / "q2.sql"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MENU_TABLES = ("menus", "muscles", "muscle_menus")
EXPECTED = {"training": 3, "balance": 1, "stretch": 1}

# The tempting wrong answer: a plain join counts a menu once per muscle it trains.
NAIVE_JOIN = """
SELECT m.category, COUNT(*) AS menu_count
FROM menus AS m
JOIN muscle_menus AS mm ON mm.menu_id = m.id
JOIN muscles AS mu ON mu.id = mm.muscle_id
WHERE mu.name IN ('muscle1', 'muscle2')
GROUP BY m.category
"""


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_sample_db(tmp_path_factory.mktemp("q2") / "sample.duckdb")


def _copy_table(source: duckdb.DuckDBPyConnection, target: psycopg.Connection, table: str) -> None:
    columns = source.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    assert columns, f"sample database has no table {table}"
    column_defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(data_type))
        for name, data_type in columns
    )
    target.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), column_defs))
    rows = source.execute(f'SELECT * FROM "{table}"').fetchall()
    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(columns))
    insert = sql.SQL("INSERT INTO {} VALUES ({})").format(sql.Identifier(table), placeholders)
    with target.cursor() as cursor:
        cursor.executemany(insert, rows)


@pytest.fixture
def postgres_with_sample(sample_db: Path) -> Iterator[psycopg.Connection]:
    """A PostgreSQL connection whose search_path is a new schema holding the menus data set."""
    schema = f"docs_q2_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            source = duckdb.connect(str(sample_db), read_only=True)
            try:
                for table in MENU_TABLES:
                    _copy_table(source, conn, table)
            finally:
                source.close()
            yield conn
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_q2_sql_counts_each_menu_once_on_postgresql(
    postgres_with_sample: psycopg.Connection,
) -> None:
    """docs/sql/q2.sql, run as written on PostgreSQL: training 3, balance 1, stretch 1."""
    rows = postgres_with_sample.execute(Q2_FILE.read_text(encoding="utf-8")).fetchall()
    assert dict(rows) == EXPECTED
    assert [category for category, _ in rows] == ["training", "balance", "stretch"]


def test_q2_sql_counts_each_menu_once_on_duckdb(sample_db: Path) -> None:
    """docs/sql/q2.sql, run as written on the DuckDB sample database: the same counts."""
    con = duckdb.connect(str(sample_db), read_only=True)
    try:
        rows = con.execute(Q2_FILE.read_text(encoding="utf-8")).fetchall()
    finally:
        con.close()
    assert dict(rows) == EXPECTED
    assert [category for category, _ in rows] == ["training", "balance", "stretch"]


def test_data_set_tells_the_right_answer_from_the_naive_join(
    postgres_with_sample: psycopg.Connection, sample_db: Path
) -> None:
    """The data set has menus training both muscles, so a plain join over-counts on both
    databases; the Q2 test above would catch an answer that forgot to count menus once."""
    naive_pg = dict(postgres_with_sample.execute(NAIVE_JOIN).fetchall())
    con = duckdb.connect(str(sample_db), read_only=True)
    try:
        naive_duck = dict(con.execute(NAIVE_JOIN).fetchall())
    finally:
        con.close()
    assert naive_pg == naive_duck == {"training": 4, "balance": 2, "stretch": 1}
