"""PostgreSQL state store for production: the same interface and rules as the SQLite store.

Several API replicas share one database, so correctness comes from the database: compare-and-set
updates (``version`` / phase conditions in the ``WHERE``), row locks for credits and idempotency
keys (:mod:`exportd.store.postgres_rows`), and a transaction-scoped advisory lock around each
admission so queue limits (counts over many rows) hold across replicas too.

The driver is psycopg 3, synchronous, with a connection pool; every call runs in a small thread
pool of its own so the event loop never waits on the network and one slow query cannot starve
other users of the default executor. The DSN is ``state_db_url`` (``postgresql://...``); a
schema other than ``public`` is chosen the libpq way, ``?options=-csearch_path%3Dname``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from exportd.credits import CreditAccount, CreditPolicy, InsufficientCredits, accrue
from exportd.errors import Conflict
from exportd.links import LinkEvent
from exportd.spec import TERMINAL_PHASES, ExportStatus, Phase, utc_now
from exportd.store.admission import (
    Admission,
    Admitted,
    StoredResponse,
    admit,
    ensure_account,
    refund_export,
)
from exportd.store.base import Clock, ExportPage, ExportRecord, PageCursor, StateStore, clamp_limit
from exportd.store.pg_migrations import (
    ADMISSION_LOCK_KEY,
    CREATE_MIGRATIONS_TABLE,
    MIGRATION_LOCK_KEY,
    PG_MIGRATIONS,
)
from exportd.store.postgres_rows import (
    COLUMNS,
    PostgresAdmissionTx,
    Row,
    record_of,
    record_values,
    select_account,
)

POOL_MAX = 8
CONNECT_TIMEOUT_SECONDS = 10.0
_T = TypeVar("_T")
Conn = psycopg.Connection[Row]
_TERMINAL = sorted(phase.value for phase in TERMINAL_PHASES)
_LINK_COLUMNS = "export_id, kind, actor, via, client_ip, user_agent, at"


class PostgresStateStore(StateStore):
    def __init__(
        self,
        dsn: str,
        *,
        credit_policy: CreditPolicy | None = None,
        clock: Clock = utc_now,
        pool_max: int = POOL_MAX,
    ) -> None:
        self.dsn = dsn
        self.credit_policy = credit_policy or CreditPolicy()
        self.clock = clock
        self.pool_max = pool_max
        self._pool: ConnectionPool[Conn] | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise RuntimeError("state store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Conn]:
        if self._pool is None:
            raise RuntimeError("state store is not open")
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(self.pool_max, thread_name_prefix="exportd-pg")
        await self._call(self._open)

    def _open(self) -> None:
        pool: ConnectionPool[Conn] = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.pool_max,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            name="exportd-state",
        )
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        self._pool = pool
        self._migrate()

    def _migrate(self) -> None:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(CREATE_MIGRATIONS_TABLE)
            done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
            for migration in PG_MIGRATIONS:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (%s, %s, now())",
                    (migration.version, migration.name),
                )

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._call(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            return await self._call(self._ping)
        except (psycopg.Error, RuntimeError):
            return False

    def _ping(self) -> bool:
        with self._transaction() as conn:
            row = conn.execute("SELECT 1 AS one").fetchone()
            return row is not None and row["one"] == 1

    async def schema_version(self) -> int:
        return await self._call(self._schema_version)

    def _schema_version(self) -> int:
        with self._transaction() as conn:
            row = conn.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()
            return int(row["v"] or 0) if row else 0

    # -- records ----------------------------------------------------------------------------

    async def create(self, record: ExportRecord) -> ExportRecord:
        await self._call(self._insert, record)
        return record

    def _insert(self, record: ExportRecord) -> None:
        try:
            with self._transaction() as conn:
                conn.execute(
                    f"INSERT INTO exports ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    record_values(record),
                )
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"export {record.id} already exists", reason="AlreadyExists") from None

    async def get(self, export_id: str) -> ExportRecord | None:
        return await self._call(self._get, export_id)

    def _get(self, export_id: str) -> ExportRecord | None:
        with self._transaction() as conn:
            return self._get_in(conn, export_id)

    def _get_in(self, conn: Conn, export_id: str) -> ExportRecord | None:
        row = conn.execute(f"SELECT {COLUMNS} FROM exports WHERE id = %s", (export_id,)).fetchone()
        return record_of(row) if row else None

    async def list_for_owner(
        self, owner: str | None, limit: int = 20, cursor: str | None = None
    ) -> ExportPage:
        position = PageCursor.decode(cursor) if cursor else None
        return await self._call(self._list_for_owner, owner, clamp_limit(limit), position)

    def _list_for_owner(
        self, owner: str | None, limit: int, position: PageCursor | None
    ) -> ExportPage:
        sql = f"SELECT {COLUMNS} FROM exports WHERE (%s::text IS NULL OR owner = %s)"
        params: list[Any] = [owner, owner]
        if position is not None:
            sql += " AND (created_at, id) < (%s, %s)"
            params += [position.created_at, position.export_id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT %s"
        with self._transaction() as conn:
            rows = conn.execute(sql, [*params, limit + 1]).fetchall()
        items = [record_of(row) for row in rows[:limit]]
        more = len(rows) > limit
        return ExportPage(items, PageCursor.after(items[-1]).encode() if more else None)

    async def list_by_phase(self, phases: Collection[Phase]) -> list[ExportRecord]:
        return await self._call(self._list_by_phase, [Phase(p).value for p in phases])

    def _list_by_phase(self, phases: list[str]) -> list[ExportRecord]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM exports WHERE phase = ANY(%s) ORDER BY created_at, id",
                (phases,),
            ).fetchall()
        return [record_of(row) for row in rows]

    async def update_status(
        self,
        export_id: str,
        status: ExportStatus,
        *,
        pid: int | None = None,
        expected_version: int | None = None,
        expected_phases: Collection[Phase] | None = None,
    ) -> ExportRecord | None:
        phases = None if expected_phases is None else [Phase(p).value for p in expected_phases]
        return await self._call(self._update_one, export_id, status, pid, expected_version, phases)

    async def update_many(
        self, updates: Sequence[tuple[str, ExportStatus, int | None]]
    ) -> list[ExportRecord | None]:
        return await self._call(self._update_batch, list(updates))

    def _update_batch(
        self, updates: list[tuple[str, ExportStatus, int | None]]
    ) -> list[ExportRecord | None]:
        with self._transaction() as conn:
            return [self._apply(conn, i, status, pid, None, None) for i, status, pid in updates]

    def _update_one(
        self,
        export_id: str,
        status: ExportStatus,
        pid: int | None,
        expected_version: int | None,
        expected_phases: list[str] | None,
    ) -> ExportRecord | None:
        with self._transaction() as conn:
            return self._apply(conn, export_id, status, pid, expected_version, expected_phases)

    def _apply(
        self,
        conn: Conn,
        export_id: str,
        status: ExportStatus,
        pid: int | None,
        expected_version: int | None,
        expected_phases: list[str] | None,
    ) -> ExportRecord | None:
        sql = (
            "UPDATE exports SET phase = %s, status = %s, pid = %s, updated_at = now(), "
            "version = version + 1 WHERE id = %s"
        )
        params: list[Any] = [status.phase.value, Jsonb(status.to_json_dict()), pid, export_id]
        if expected_version is not None:
            sql += " AND version = %s"
            params.append(expected_version)
        if expected_phases is not None:
            sql += " AND phase = ANY(%s)"
            params.append(expected_phases)
        row = conn.execute(f"{sql} RETURNING {COLUMNS}", params).fetchone()
        if row is None:
            return None
        if self.credit_policy.refunds(status.phase):
            refund_export(PostgresAdmissionTx(conn), export_id, self.credit_policy, self.clock())
        return record_of(row)

    # -- admission: idempotency keys, queue limits, credits ---------------------------------

    async def admit(self, admission: Admission) -> Admitted:
        return await self._call(self._admit, admission)

    def _admit(self, admission: Admission) -> Admitted:
        try:
            with self._transaction() as conn:
                if admission.queue is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_KEY,))
                return admit(PostgresAdmissionTx(conn), admission)
        except psycopg.errors.UniqueViolation:
            raise Conflict(
                f"export {admission.export_id} already exists", reason="AlreadyExists"
            ) from None
        except InsufficientCredits:  # rolled back; keep the opening of a new account
            self._account(admission.owner, admission.credits or self.credit_policy, admission.now)
            raise

    async def credit_account(
        self, owner: str, policy: CreditPolicy, now: datetime
    ) -> CreditAccount:
        return accrue(await self._call(self._account, owner, policy, now), policy, now)

    def _account(self, owner: str, policy: CreditPolicy, now: datetime) -> CreditAccount:
        with self._transaction() as conn:
            stored = select_account(conn, owner, lock=False)
            if stored is not None:  # the common case: no write
                return stored
            return ensure_account(PostgresAdmissionTx(conn), owner, policy, now)

    async def refund(self, export_id: str) -> bool:
        return await self._call(self._refund, export_id)

    def _refund(self, export_id: str) -> bool:
        with self._transaction() as conn:
            tx = PostgresAdmissionTx(conn)
            return refund_export(tx, export_id, self.credit_policy, self.clock())

    async def complete_key(self, owner: str, key: str, response: StoredResponse) -> None:
        await self._call(
            self._execute,
            "UPDATE idempotency_keys SET state = 'done', response_status = %s, "
            "response_body = %s, response_headers = %s WHERE owner = %s AND key = %s",
            (response.status, response.body, Jsonb(response.headers), owner, key),
        )

    async def release_key(self, owner: str, key: str) -> None:
        await self._call(
            self._execute,
            "DELETE FROM idempotency_keys WHERE owner = %s AND key = %s AND state = 'pending'",
            (owner, key),
        )

    async def purge_expired_keys(self, now: datetime) -> int:
        return await self._call(
            self._execute, "DELETE FROM idempotency_keys WHERE expires_at <= %s", (now,)
        )

    def _execute(self, sql: str, params: Sequence[Any]) -> int:
        with self._transaction() as conn:
            return int(conn.execute(sql, params).rowcount)

    # -- housekeeping (exportd.housekeeping) -------------------------------------------------

    async def list_finished(
        self, created_before: datetime, limit: int = 500, after: PageCursor | None = None
    ) -> list[ExportRecord]:
        return await self._call(self._list_finished, created_before, clamp_limit(limit), after)

    def _list_finished(
        self, created_before: datetime, limit: int, after: PageCursor | None
    ) -> list[ExportRecord]:
        sql = f"SELECT {COLUMNS} FROM exports WHERE phase = ANY(%s) AND created_at < %s"
        params: list[Any] = [_TERMINAL, created_before]
        if after is not None:
            sql += " AND (created_at, id) > (%s, %s)"
            params += [after.created_at, after.export_id]
        sql += " ORDER BY created_at, id LIMIT %s"
        with self._transaction() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [record_of(row) for row in rows]

    async def delete_finished(self, export_id: str, version: int) -> bool:
        deleted = await self._call(
            self._execute,
            "DELETE FROM exports WHERE id = %s AND version = %s AND phase = ANY(%s)",
            (export_id, version, _TERMINAL),
        )
        return deleted == 1

    # -- handle links: the download audit log and revocations (exportd.links) -----------------

    async def add_link_event(self, event: LinkEvent) -> None:
        await self._call(
            self._execute,
            f"INSERT INTO link_events ({_LINK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            tuple(event.model_dump().values()),
        )

    async def link_events(self, export_id: str) -> list[LinkEvent]:
        return await self._call(self._link_events, export_id)

    def _link_events(self, export_id: str) -> list[LinkEvent]:
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_LINK_COLUMNS} FROM link_events WHERE export_id = %s ORDER BY at, id",
                (export_id,),
            ).fetchall()
        return [LinkEvent(**row) for row in rows]

    async def revoked_at(self, export_id: str) -> datetime | None:
        return await self._call(self._revoked_at, export_id)

    def _revoked_at(self, export_id: str) -> datetime | None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT MIN(at) AS at FROM link_events WHERE export_id = %s AND kind = 'revoke'",
                (export_id,),
            ).fetchone()
        return row["at"] if row is not None else None
