"""SQLite state store for embedded mode: one file under the data directory.

WAL journal so readers never wait for the writer, a busy timeout instead of immediate "database is
locked" errors, and short explicit transactions (``BEGIN IMMEDIATE`` for writes, so a
compare-and-set cannot interleave). One connection guarded by a lock; each call runs in a worker
thread so the event loop is never blocked on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from exportd.errors import Conflict
from exportd.spec import ExportSpec, ExportStatus, Phase, utc_now
from exportd.store.base import (
    ExportPage,
    ExportRecord,
    PageCursor,
    StateStore,
    clamp_limit,
)
from exportd.store.migrations import CREATE_MIGRATIONS_TABLE, MIGRATIONS

BUSY_TIMEOUT_MS = 5000
_T = TypeVar("_T")
_COLUMNS = "id, owner, phase, spec, status, created_at, updated_at, version, pid"


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unstamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _record_of(row: sqlite3.Row) -> ExportRecord:
    return ExportRecord(
        spec=ExportSpec.model_validate_json(row["spec"]),
        status=ExportStatus.model_validate_json(row["status"]),
        owner=row["owner"],
        created_at=_unstamp(row["created_at"]),
        updated_at=_unstamp(row["updated_at"]),
        version=row["version"],
        pid=row["pid"],
    )


class SqliteStateStore(StateStore):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
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
                    (
                        record.id,
                        record.owner,
                        record.phase.value,
                        record.spec.model_dump_json(by_alias=True),
                        record.status.model_dump_json(by_alias=True),
                        _stamp(record.created_at),
                        _stamp(record.updated_at),
                        record.version,
                        record.pid,
                    ),
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
        self, owner: str, limit: int = 20, cursor: str | None = None
    ) -> ExportPage:
        position = PageCursor.decode(cursor) if cursor else None
        return await self._call(self._list_for_owner, owner, clamp_limit(limit), position)

    def _list_for_owner(self, owner: str, limit: int, position: PageCursor | None) -> ExportPage:
        sql = f"SELECT {_COLUMNS} FROM exports WHERE owner = ?"
        params: list[Any] = [owner]
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
        return self._get(export_id)
