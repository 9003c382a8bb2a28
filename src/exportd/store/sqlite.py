"""SQLite state store for embedded mode: one file under the data directory.

WAL journal so readers never wait for the writer, a busy timeout instead of immediate "database is
locked" errors, and short explicit transactions (``BEGIN IMMEDIATE`` for writes, so a
compare-and-set cannot interleave). One connection guarded by a lock; each call runs in a worker
thread so the event loop is never blocked on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

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
from exportd.store.base import (
    Clock,
    ExportPage,
    ExportRecord,
    PageCursor,
    StateStore,
    clamp_limit,
)
from exportd.store.migrations import CREATE_MIGRATIONS_TABLE, MIGRATIONS
from exportd.store.sqlite_rows import (
    COLUMNS as _COLUMNS,
)
from exportd.store.sqlite_rows import (
    SqliteAdmissionTx,
    record_values,
    select_account,
    unstamp,
)
from exportd.store.sqlite_rows import (
    record_of as _record_of,
)
from exportd.store.sqlite_rows import (
    stamp as _stamp,
)

BUSY_TIMEOUT_MS = 5000
_LINK_COLUMNS = "export_id, kind, actor, via, client_ip, user_agent, at"
_T = TypeVar("_T")


class SqliteStateStore(StateStore):
    def __init__(
        self,
        path: Path | str,
        *,
        credit_policy: CreditPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.path = Path(path)
        self.credit_policy = credit_policy or CreditPolicy()
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(self._locked, func, *args)

    def _locked(self, func: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            return func(*args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state store is not open")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._call(self._open)

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

    def _migrate(self) -> None:
        self.conn.execute(CREATE_MIGRATIONS_TABLE)
        for migration in MIGRATIONS:
            with self._write() as conn:
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _stamp(utc_now())),
                )

    async def close(self) -> None:
        await self._call(self._close)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def ping(self) -> bool:
        try:
            return await self._call(lambda: self.conn.execute("SELECT 1").fetchone()[0] == 1)
        except (sqlite3.Error, RuntimeError):
            return False

    async def schema_version(self) -> int:
        row = await self._call(
            lambda: self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        )
        return int(row[0] or 0)

    # -- records ----------------------------------------------------------------------------

    async def create(self, record: ExportRecord) -> ExportRecord:
        await self._call(self._insert, record)
        return record

    def _insert(self, record: ExportRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO exports ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    record_values(record),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"export {record.id} already exists", reason="AlreadyExists") from None

    async def get(self, export_id: str) -> ExportRecord | None:
        return await self._call(self._get, export_id)

    def _get(self, export_id: str) -> ExportRecord | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM exports WHERE id = ?", (export_id,)
        ).fetchone()
        return _record_of(row) if row else None

    async def list_for_owner(
        self, owner: str | None, limit: int = 20, cursor: str | None = None
    ) -> ExportPage:
        position = PageCursor.decode(cursor) if cursor else None
        return await self._call(self._list_for_owner, owner, clamp_limit(limit), position)

    def _list_for_owner(
        self, owner: str | None, limit: int, position: PageCursor | None
    ) -> ExportPage:
        sql = f"SELECT {_COLUMNS} FROM exports WHERE (? IS NULL OR owner = ?)"
        params: list[Any] = [owner, owner]
        if position is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            stamp = _stamp(position.created_at)
            params += [stamp, stamp, position.export_id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self.conn.execute(sql, [*params, limit + 1]).fetchall()
        items = [_record_of(row) for row in rows[:limit]]
        more = len(rows) > limit
        return ExportPage(items, PageCursor.after(items[-1]).encode() if more else None)

    async def list_by_phase(self, phases: Collection[Phase]) -> list[ExportRecord]:
        return await self._call(self._list_by_phase, [Phase(p).value for p in phases])

    def _list_by_phase(self, phases: list[str]) -> list[ExportRecord]:
        marks = ", ".join("?" for _ in phases)
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM exports WHERE phase IN ({marks}) ORDER BY created_at, id",
            phases,
        ).fetchall()
        return [_record_of(row) for row in rows]

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
        with self._write():
            return [self._apply(i, status, pid, None, None) for i, status, pid in updates]

    def _update_one(
        self,
        export_id: str,
        status: ExportStatus,
        pid: int | None,
        expected_version: int | None,
        expected_phases: list[str] | None,
    ) -> ExportRecord | None:
        with self._write():
            return self._apply(export_id, status, pid, expected_version, expected_phases)

    def _apply(
        self,
        export_id: str,
        status: ExportStatus,
        pid: int | None,
        expected_version: int | None,
        expected_phases: list[str] | None,
    ) -> ExportRecord | None:
        sql = (
            "UPDATE exports SET phase = ?, status = ?, pid = ?, updated_at = ?, "
            "version = version + 1 WHERE id = ?"
        )
        params: list[Any] = [
            status.phase.value,
            status.model_dump_json(by_alias=True),
            pid,
            _stamp(utc_now()),
            export_id,
        ]
        if expected_version is not None:
            sql += " AND version = ?"
            params.append(expected_version)
        if expected_phases is not None:
            sql += f" AND phase IN ({', '.join('?' for _ in expected_phases)})"
            params += expected_phases
        if self.conn.execute(sql, params).rowcount != 1:
            return None
        if self.credit_policy.refunds(status.phase):
            refund_export(SqliteAdmissionTx(self.conn), export_id, self.credit_policy, self.clock())
        return self._get(export_id)

    # -- admission: idempotency keys, queue limits, credits ---------------------------------

    async def admit(self, admission: Admission) -> Admitted:
        return await self._call(self._admit, admission)

    def _admit(self, admission: Admission) -> Admitted:
        try:
            with self._write() as conn:
                return admit(SqliteAdmissionTx(conn), admission)
        except sqlite3.IntegrityError:
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
        stored = select_account(self.conn, owner)
        if stored is not None:  # the common case: no write
            return stored
        with self._write() as conn:
            return ensure_account(SqliteAdmissionTx(conn), owner, policy, now)

    async def refund(self, export_id: str) -> bool:
        return await self._call(self._refund, export_id)

    def _refund(self, export_id: str) -> bool:
        with self._write() as conn:
            tx = SqliteAdmissionTx(conn)
            return refund_export(tx, export_id, self.credit_policy, self.clock())

    async def complete_key(self, owner: str, key: str, response: StoredResponse) -> None:
        await self._call(
            self._execute_write,
            "UPDATE idempotency_keys SET state = 'done', response_status = ?, "
            "response_body = ?, response_headers = ? WHERE owner = ? AND key = ?",
            (response.status, response.body, json.dumps(response.headers), owner, key),
        )

    async def release_key(self, owner: str, key: str) -> None:
        await self._call(
            self._execute_write,
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND state = 'pending'",
            (owner, key),
        )

    async def purge_expired_keys(self, now: datetime) -> int:
        return await self._call(
            self._execute_write,
            "DELETE FROM idempotency_keys WHERE expires_at <= ?",
            (_stamp(now),),
        )

    def _execute_write(self, sql: str, params: Sequence[Any]) -> int:
        with self._write() as conn:
            return int(conn.execute(sql, params).rowcount)

    # -- housekeeping (exportd.housekeeping) -------------------------------------------------

    async def list_finished(
        self, created_before: datetime, limit: int = 500, after: PageCursor | None = None
    ) -> list[ExportRecord]:
        return await self._call(self._list_finished, created_before, clamp_limit(limit), after)

    def _list_finished(
        self, created_before: datetime, limit: int, after: PageCursor | None
    ) -> list[ExportRecord]:
        terminal = [phase.value for phase in TERMINAL_PHASES]
        sql = (
            f"SELECT {_COLUMNS} FROM exports WHERE phase IN ({', '.join('?' for _ in terminal)})"
            " AND created_at < ?"
        )
        params: list[Any] = [*terminal, _stamp(created_before)]
        if after is not None:
            stamp = _stamp(after.created_at)
            sql += " AND (created_at > ? OR (created_at = ? AND id > ?))"
            params += [stamp, stamp, after.export_id]
        sql += " ORDER BY created_at, id LIMIT ?"
        rows = self.conn.execute(sql, [*params, limit]).fetchall()
        return [_record_of(row) for row in rows]

    async def delete_finished(self, export_id: str, version: int) -> bool:
        terminal = [phase.value for phase in TERMINAL_PHASES]
        deleted = await self._call(
            self._execute_write,
            "DELETE FROM exports WHERE id = ? AND version = ? "
            f"AND phase IN ({', '.join('?' for _ in terminal)})",
            (export_id, version, *terminal),
        )
        return deleted == 1

    # -- handle links: the download audit log and revocations (exportd.links) -----------------

    async def add_link_event(self, event: LinkEvent) -> None:
        await self._call(
            self._execute_write,
            f"INSERT INTO link_events ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*event.model_dump(exclude={"at"}).values(), _stamp(event.at)),
        )

    async def link_events(self, export_id: str) -> list[LinkEvent]:
        rows = await self._call(
            lambda: self.conn.execute(
                f"SELECT {_LINK_COLUMNS} FROM link_events WHERE export_id = ? ORDER BY at, id",
                (export_id,),
            ).fetchall()
        )
        return [LinkEvent(**{**dict(row), "at": unstamp(row["at"])}) for row in rows]

    async def revoked_at(self, export_id: str) -> datetime | None:
        row = await self._call(
            lambda: self.conn.execute(
                "SELECT MIN(at) FROM link_events WHERE export_id = ? AND kind = 'revoke'",
                (export_id,),
            ).fetchone()
        )
        return unstamp(row[0]) if row is not None and row[0] else None
