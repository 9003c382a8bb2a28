"""What the test PostgreSQL and MariaDB servers are running, for the tests that stop queries.

A query is found by a marker: PostgreSQL by the session's ``application_name`` (any non-idle
state counts: a query runs, or a transaction holds an open cursor between fetches), MariaDB by
the marker in the statement text (``information_schema.processlist``). Waiting for the server
is a bounded poll (a deadline), never an assertion on speed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from exportd.settings import SourceConfig
from tests.integration.dbfixtures import MYSQL_DSN, PG_DSN, mysql_rows, pg_rows

SERVER_DEADLINE_SECONDS = 15.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SERVER_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {SERVER_DEADLINE_SECONDS} s: {what}")
        time.sleep(0.05)


class ServerQueries:
    """Queries carrying ``marker`` (a fresh one by default) on the ``kind`` server, a source
    configured so they can be found there, and what the server runs with that marker."""

    def __init__(self, kind: str, marker: str | None = None) -> None:
        self.kind = kind
        self.marker = marker or f"exportd_probe_{secrets.token_hex(4)}"

    def source_overrides(self) -> dict[str, str]:
        """Source settings that tag a PostgreSQL session with the marker."""
        if self.kind == "postgres":
            return {"dsn": f"{PG_DSN} application_name={self.marker}"}
        return {}

    @property
    def config(self) -> SourceConfig:
        """A source on the ``kind`` test server (PostgreSQL or MariaDB) with the marker."""
        settings = {"kind": self.kind, "dsn": PG_DSN if self.kind == "postgres" else MYSQL_DSN}
        return SourceConfig.model_validate(settings | self.source_overrides())

    def running(self) -> list[tuple[Any, ...]]:
        """PostgreSQL: the marked session while not idle; MariaDB: the statements with the
        marker in the processlist (other than this query itself)."""
        if self.kind == "postgres":
            return pg_rows(
                "SELECT pid, state, query FROM pg_stat_activity "
                "WHERE application_name = %s AND state <> 'idle'",
                [self.marker],
            )
        return mysql_rows(
            "SELECT ID, COMMAND, INFO FROM information_schema.processlist "
            "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
            [f"%{self.marker}%"],
        )

    def busy(self) -> bool:
        return bool(self.running())

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
