"""The embedded sample database: table contents, the design data set, atomic creation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from exportd.sample.sampledb import USER_ROWS, ensure_sample_db


@pytest.fixture(scope="module")
def con(sample_db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(sample_db), read_only=True)
    yield connection
    connection.close()


def test_users_has_100k_rows_tiers_evenly_spread(con: duckdb.DuckDBPyConnection) -> None:
    assert con.sql("SELECT count(*), count(DISTINCT id) FROM users").fetchone() == (
        USER_ROWS,
        USER_ROWS,
    )
    tiers = dict(con.sql("SELECT tier, count(*) FROM users GROUP BY tier").fetchall())
    assert tiers == {tier: 20_000 for tier in range(1, 6)}
    assert con.sql("SELECT count(*) FROM users WHERE tier BETWEEN 1 AND 2").fetchone() == (40_000,)


def test_users_columns_have_the_documented_types(con: duckdb.DuckDBPyConnection) -> None:
    types = dict(
        con.sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'users'"
        ).fetchall()
    )
    assert types == {
        "id": "BIGINT",
        "name": "VARCHAR",
        "email": "VARCHAR",
        "tier": "INTEGER",
        "country": "VARCHAR",
        "signup_date": "DATE",
        "last_login": "TIMESTAMP WITH TIME ZONE",
        "balance": "DECIMAL(12,2)",
        "active": "BOOLEAN",
        "notes": "VARCHAR",
    }
    assert con.sql(
        "SELECT count(DISTINCT country), max(length(country)) FROM users"
    ).fetchone() == (
        10,
        2,
    )


def test_notes_are_30_percent_null_and_include_hostile_values(
    con: duckdb.DuckDBPyConnection,
) -> None:
    nulls = con.sql("SELECT count(*) FROM users WHERE notes IS NULL").fetchone()
    assert nulls == (30_000,)
    notes = {row[0] for row in con.sql("SELECT DISTINCT notes FROM users").fetchall()}
    assert {'=HYPERLINK("http://x","y")', "   leading spaces", "", "@SUM(A1:A2)"} <= notes
    assert any(note and not note.isascii() for note in notes)


def test_menus_per_category_for_two_muscles_counts_each_menu_once(
    con: duckdb.DuckDBPyConnection,
) -> None:
    join = (
        "FROM menus m JOIN muscle_menus mm ON mm.menu_id = m.id "
        "JOIN muscles mu ON mu.id = mm.muscle_id WHERE mu.name IN ('muscle1', 'muscle2') "
        "GROUP BY m.category"
    )
    distinct = dict(con.sql(f"SELECT m.category, count(DISTINCT m.id) {join}").fetchall())
    naive = dict(con.sql(f"SELECT m.category, count(*) {join}").fetchall())
    assert distinct == {"training": 3, "balance": 1, "stretch": 1}
    assert naive != distinct  # menus training both muscles make a plain count wrong


def test_concurrent_creation_yields_one_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "race" / "sample.duckdb"
    errors: list[BaseException] = []

    def create() -> None:
        try:
            ensure_sample_db(target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in target.parent.iterdir()] == ["sample.duckdb"]
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM users").fetchone() == (USER_ROWS,)
    assert ensure_sample_db(target) == target
