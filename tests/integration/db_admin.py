"""Statements run as the administrator on the test PostgreSQL and MariaDB servers, for fixtures
that create a database object for one test and drop it afterwards."""

from __future__ import annotations

from tests.integration.dbfixtures import mysql_connect, pg_connect


def pg_execute(*statements: str) -> None:
    """Runs ``statements`` in order in one PostgreSQL session (autocommit)."""
    with pg_connect() as conn:
        for statement in statements:
            conn.execute(statement)


def mysql_execute(*statements: str) -> None:
    """Runs ``statements`` in order in one MariaDB session (autocommit), so a session setting
    among them applies to those after it."""
    conn = mysql_connect()
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


def admin_execute(kind: str, *statements: str) -> None:
    """:func:`pg_execute` for ``kind`` "postgres", :func:`mysql_execute` for "mysql"."""
    if kind == "postgres":
        pg_execute(*statements)
    else:
        mysql_execute(*statements)
