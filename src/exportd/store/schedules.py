"""Schedules in the state store (both SQL databases): what the API's schedules are and did.

A schedule row holds its owner, its spec (:class:`~exportd.contract.schedule.ScheduleSpec`) and its
state (last slot handled, last run, next slot, last outcome and reason), with a version for
compare-and-set writes. Each handled slot adds one ``schedule_runs`` row, keyed by (schedule,
slot): started (with its export's id), skipped, missed or refused (with the reason, e.g.
``InsufficientCredits``). The key makes a second insert for a slot a no-op, so a restart or a
second server never records a slot twice; the export itself is keyed by its deterministic id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from exportd.contract.errors import Conflict
from exportd.contract.schedule import Outcome, ScheduleSpec
from exportd.contract.spec import CamelModel, utc_now
from exportd.store.sql_tx import Row, SqlTx

_T = TypeVar("_T")
_SCHEDULE_COLUMNS = "id, owner, spec, state, created_at, updated_at, version"
_RUN_COLUMNS = "schedule_id, slot, outcome, export_id, reason, message, at"


def new_schedule_id() -> str:
    return f"sch-{uuid.uuid4().hex[:16]}"


class ScheduleState(CamelModel):
    """Where a schedule stands (the embedded counterpart of the CR's status)."""

    last_slot_time: datetime | None = None
    last_schedule_time: datetime | None = None
    next_schedule_time: datetime | None = None
    last_outcome: Outcome | None = None
    last_reason: str | None = None
    last_message: str | None = None


class ScheduleRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    owner: str
    spec: ScheduleSpec
    state: ScheduleState = Field(default_factory=ScheduleState)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    version: int = 1


class ScheduleRun(CamelModel):
    """One handled slot."""

    schedule_id: str
    slot: datetime
    outcome: Outcome
    export_id: str | None = None
    reason: str | None = None
    message: str | None = None
    at: datetime


def _schedule_of(tx: SqlTx, row: Row) -> ScheduleRecord:
    return ScheduleRecord(
        id=row["id"],
        owner=row["owner"],
        spec=tx.model_of(ScheduleSpec, row["spec"]),
        state=tx.model_of(ScheduleState, row["state"]),
        created_at=tx.unstamp(row["created_at"]),
        updated_at=tx.unstamp(row["updated_at"]),
        version=row["version"],
    )


class ScheduleTx(SqlTx):
    """The schedule statements, over the dialect of :class:`SqlTx` (a base of ``StoreTx``)."""

    def insert_schedule(self, record: ScheduleRecord) -> None:
        self.run(
            f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.owner,
                self.model_value(record.spec),
                self.model_value(record.state),
                self.stamp(record.created_at),
                self.stamp(record.updated_at),
                record.version,
            ),
        )

    def select_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        row = self.one(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,))
        return _schedule_of(self, row) if row else None

    def select_schedules(self, owner: str | None) -> list[ScheduleRecord]:
        sql = (
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE ({self.text_mark} IS NULL OR "
            "owner = ?) ORDER BY created_at, id"
        )
        return [_schedule_of(self, row) for row in self.all(sql, (owner, owner))]

    def save_schedule(
        self, schedule_id: str, spec: ScheduleSpec, state: ScheduleState, version: int
    ) -> ScheduleRecord | None:
        """Write spec and state if the row is still at ``version``; the new row, else None."""
        now = utc_now()
        cursor = self.run(
            "UPDATE schedules SET spec = ?, state = ?, updated_at = ?, version = version + 1 "
            "WHERE id = ? AND version = ?",
            (
                self.model_value(spec),
                self.model_value(state),
                self.stamp(now),
                schedule_id,
                version,
            ),
        )
        return self.select_schedule(schedule_id) if cursor.rowcount == 1 else None

    def delete_schedule(self, schedule_id: str) -> bool:
        self.run("DELETE FROM schedule_runs WHERE schedule_id = ?", (schedule_id,))
        return self.run("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1

    def insert_run(self, run: ScheduleRun) -> bool:
        cursor = self.run(
            f"INSERT INTO schedule_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (schedule_id, slot) DO NOTHING",
            (
                run.schedule_id,
                self.stamp(run.slot),
                run.outcome.value,
                run.export_id,
                run.reason,
                run.message,
                self.stamp(run.at),
            ),
        )
        return cursor.rowcount == 1

    def select_runs(self, schedule_id: str) -> list[ScheduleRun]:
        rows = self.all(
            f"SELECT {_RUN_COLUMNS} FROM schedule_runs WHERE schedule_id = ? ORDER BY slot DESC",
            (schedule_id,),
        )
        return [
            ScheduleRun(
                schedule_id=row["schedule_id"],
                slot=self.unstamp(row["slot"]),
                outcome=Outcome(row["outcome"]),
                export_id=row["export_id"],
                reason=row["reason"],
                message=row["message"],
                at=self.unstamp(row["at"]),
            )
            for row in rows
        ]

    def delete_runs(self, schedule_id: str, slots: list[datetime]) -> None:
        for slot in slots:
            self.run(
                "DELETE FROM schedule_runs WHERE schedule_id = ? AND slot = ?",
                (schedule_id, self.stamp(slot)),
            )


class ScheduleStore:
    """The schedule calls of :class:`~exportd.store.sql_store.SqlStateStore` (a mixin: it runs
    its transactions through the store's ``_reading`` / ``_writing``)."""

    duplicate_error: ClassVar[type[Exception]]

    if TYPE_CHECKING:  # supplied by the store

        async def _reading(self, func: Callable[..., _T], *args: Any) -> _T: ...

        async def _writing(self, func: Callable[..., _T], *args: Any) -> _T: ...

    async def create_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        try:
            await self._writing(ScheduleTx.insert_schedule, record)
        except self.duplicate_error:
            raise Conflict(f"schedule {record.id} already exists", reason="AlreadyExists") from None
        return record

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._reading(ScheduleTx.select_schedule, schedule_id)

    async def list_schedules(self, owner: str | None) -> list[ScheduleRecord]:
        return await self._reading(ScheduleTx.select_schedules, owner)

    async def save_schedule(
        self, schedule_id: str, spec: ScheduleSpec, state: ScheduleState, version: int
    ) -> ScheduleRecord | None:
        return await self._writing(ScheduleTx.save_schedule, schedule_id, spec, state, version)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._writing(ScheduleTx.delete_schedule, schedule_id)

    async def add_schedule_run(self, run: ScheduleRun) -> bool:
        """Record a handled slot; ``False`` when that slot was recorded already."""
        return await self._writing(ScheduleTx.insert_run, run)

    async def schedule_runs(self, schedule_id: str) -> list[ScheduleRun]:
        return await self._reading(ScheduleTx.select_runs, schedule_id)

    async def forget_schedule_runs(self, schedule_id: str, slots: list[datetime]) -> None:
        await self._writing(ScheduleTx.delete_runs, schedule_id, slots)
