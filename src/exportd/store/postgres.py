"""PostgreSQL state store for production: the same interface and rules as the SQLite store.

Several API replicas share one database, so correctness comes from the database: compare-and-set
updates (``version`` / phase conditions in the ``WHERE``), row locks for credits and idempotency
keys, and a transaction-scoped advisory lock around each admission so queue limits (counts over
many rows) hold across replicas too (:mod:`exportd.store.postgres_rows`). What a call does is
shared with SQLite (:mod:`exportd.store.sql_store`); this module only connects, migrates and
opens transactions.

The driver is psycopg 3, synchronous, with a connection pool; every call runs in a small thread
pool of its own so the event loop never waits on the network and one slow query cannot starve
other users of the default executor. A connection waits at most ``ACQUIRE_TIMEOUT_SECONDS`` for
the pool and is checked before it is handed out (one killed by the server is replaced, not
used), so a database outage answers 503 within about a second instead of hanging or 500.
The DSN is ``state_db_url`` (``postgresql://...``); a schema other than ``public`` is chosen
the libpq way, ``?options=-csearch_path%3Dname``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from exportd.contract.spec import utc_now
from exportd.security.credits import CreditPolicy
from exportd.store.base import Clock
from exportd.store.pg_migrations import CREATE_MIGRATIONS_TABLE, MIGRATION_LOCK_KEY, PG_MIGRATIONS
from exportd.store.postgres_rows import PostgresTx, Row
from exportd.store.sql_statements import StoreTx
from exportd.store.sql_store import SqlStateStore

POOL_MAX = 8
CONNECT_TIMEOUT_SECONDS = 10.0
ACQUIRE_TIMEOUT_SECONDS = 1.0
LIBPQ_CONNECT_TIMEOUT_SECONDS = 2  # libpq's smallest useful value
RECONNECT_FOREVER_SECONDS = 365 * 24 * 3600.0
_T = TypeVar("_T")
Conn = psycopg.Connection[Row]


class PostgresStateStore(SqlStateStore):
    duplicate_error = psycopg.errors.UniqueViolation
    driver_error = psycopg.Error
    # Refused or lost connections, server shutdown, and the pool's own timeout (PoolTimeout).
    unavailable_errors = (psycopg.OperationalError,)

    def __init__(
        self,
        dsn: str,
        *,
        credit_policy: CreditPolicy | None = None,
        clock: Clock = utc_now,
        pool_max: int = POOL_MAX,
    ) -> None:
        super().__init__(credit_policy=credit_policy, clock=clock)
        self.dsn = dsn
        self.pool_max = pool_max
        self._pool: ConnectionPool[Conn] | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _off_loop(self, func: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise RuntimeError("state store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args))

    @contextlib.contextmanager
    def _write(self) -> Iterator[StoreTx]:
        if self._pool is None:
            raise RuntimeError("state store is not open")
        with self._pool.connection() as conn, conn.transaction():
            yield PostgresTx(conn)

    # Reads are transactions too: the pool's connections are in autocommit mode.
    _read = _write

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(self.pool_max, thread_name_prefix="exportd-pg")
        await self._off_loop(self._open)

    def _open(self) -> None:
        pool: ConnectionPool[Conn] = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.pool_max,
            kwargs={
                "row_factory": dict_row,
                "autocommit": True,
                "connect_timeout": LIBPQ_CONNECT_TIMEOUT_SECONDS,
            },
            open=False,
            name="exportd-state",
            timeout=ACQUIRE_TIMEOUT_SECONDS,
            check=ConnectionPool.check_connection,
            reconnect_timeout=RECONNECT_FOREVER_SECONDS,
        )
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        self._pool = pool
        self._migrate()

    def _migrate(self) -> None:
        with self._write() as tx:
            tx.run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
            tx.run(CREATE_MIGRATIONS_TABLE)
            tx.migrate(PG_MIGRATIONS)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._off_loop(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
