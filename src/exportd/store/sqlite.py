"""SQLite state store for embedded mode: one file under the data directory.

WAL journal so readers never wait for the writer, a busy timeout instead of immediate "database is
locked" errors, and short explicit transactions (``BEGIN IMMEDIATE`` for writes, so a
compare-and-set cannot interleave). One connection guarded by a lock; each call runs in a worker
thread so the event loop is never blocked on disk. What a call does is shared with PostgreSQL
(:mod:`exportd.store.sql_store`); this module only connects, migrates and opens transactions.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from exportd.contract.spec import utc_now
from exportd.security.credits import CreditPolicy
from exportd.store.base import Clock
from exportd.store.migrations import CREATE_MIGRATIONS_TABLE, MIGRATIONS
from exportd.store.sql_statements import StoreTx
from exportd.store.sql_store import SqlStateStore
from exportd.store.sqlite_rows import SqliteTx

BUSY_TIMEOUT_MS = 5000
_T = TypeVar("_T")


class SqliteStateStore(SqlStateStore):
    duplicate_error = sqlite3.IntegrityError
    driver_error = sqlite3.Error
    # "database is locked" past the busy timeout, a full or failing disk.
    unavailable_errors = (sqlite3.OperationalError,)

    def __init__(
        self,
        path: Path | str,
        *,
        credit_policy: CreditPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(credit_policy=credit_policy, clock=clock)
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # point reads on the loop, see below
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    async def _off_loop(self, func: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(self._locked, func, *args)

    def _locked(self, func: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            return func(*args)

    async def _point_read(self, func: Callable[..., _T], *args: Any) -> _T:
        """One row by primary key, on the event loop, on a connection of its own.

        From the page cache that costs tens of microseconds: less than the hop to a worker
        thread and back, which was most of a status read's CPU. In WAL mode a reader takes no
        lock the writer holds, and this connection's busy timeout is 0, so the loop never waits
        behind a write; the rare busy answer (a checkpoint restarting the log) is retried on the
        usual worker-thread path, which also reports an unavailable database.
        """
        reader = self._reader
        if reader is None or time.monotonic() < self._failing_until:
            return await super()._point_read(func, *args)
        try:
            return func(SqliteTx(reader), *args)
        except sqlite3.OperationalError:
            return await super()._point_read(func, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state store is not open")
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[StoreTx]:
        yield SqliteTx(self.conn)

    @contextmanager
    def _write(self) -> Iterator[StoreTx]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield SqliteTx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._off_loop(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn
        self._migrate()
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.row_factory = sqlite3.Row
        reader.execute("PRAGMA busy_timeout = 0")
        reader.execute("PRAGMA query_only = ON")
        self._reader = reader

    def _migrate(self) -> None:
        self.conn.execute(CREATE_MIGRATIONS_TABLE)
        for migration in MIGRATIONS:  # one transaction each: a failing one keeps those before
            with self._write() as tx:
                tx.migrate([migration])

    async def close(self) -> None:
        await self._off_loop(self._close)

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
