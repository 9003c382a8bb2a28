"""The :class:`StateStore` of both SQL databases, over their connection handling.

Everything a call does beyond running statements lives here once: which transaction it needs,
refunding the credit of a record that ends Failed or Cancelled in the transaction that records
it, turning a duplicate id into :class:`~exportd.contract.errors.Conflict`, keeping a new credit
account
when an admission is refused, paging. A store supplies how calls leave the event loop
(:meth:`SqlStateStore._off_loop`) and how it opens a :class:`StoreTx` to read or to write.

A store that cannot be reached fails fast: the driver's connection errors become
:class:`~exportd.store.base.StateUnavailable` (503 + ``Retry-After`` in the API), and for
``FAIL_FAST_SECONDS`` after one, calls fail at once instead of queueing behind the pool, so an
outage answers in well under a second instead of piling requests up until they time out.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from exportd.contract.errors import Conflict
from exportd.contract.spec import ExportStatus, Phase
from exportd.security.credits import CreditAccount, CreditPolicy, InsufficientCredits, accrue
from exportd.security.links import LinkEvent
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
    StateUnavailable,
    clamp_limit,
)
from exportd.store.schedules import ScheduleStore
from exportd.store.sql_statements import StatusChange, StoreTx

log = logging.getLogger(__name__)
_T = TypeVar("_T")
FAIL_FAST_SECONDS = 0.5
Update = tuple[str, ExportStatus, int | None]


class SqlStateStore(ScheduleStore, StateStore):
    # The driver's error for a duplicate primary key, and the base of all its errors.
    duplicate_error: ClassVar[type[Exception]]
    driver_error: ClassVar[type[Exception]]
    # The driver's errors that mean "the database cannot be reached now" (not "bad SQL").
    unavailable_errors: ClassVar[tuple[type[Exception], ...]]

    def __init__(self, *, credit_policy: CreditPolicy | None, clock: Clock) -> None:
        self.credit_policy = credit_policy or CreditPolicy()
        self.clock = clock
        self._failing_until = 0.0  # monotonic time until which calls fail fast

    # -- plumbing ---------------------------------------------------------------------------

    @abstractmethod
    async def _off_loop(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run ``func(*args)`` away from the event loop."""

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        """``func(*args)`` off the loop; :class:`StateUnavailable` when the database is down."""
        if time.monotonic() < self._failing_until:
            raise StateUnavailable("the state store is unavailable; try again shortly")
        try:
            result = await self._off_loop(func, *args)
        except self.unavailable_errors as exc:
            self._failing_until = time.monotonic() + FAIL_FAST_SECONDS
            log.warning("state store unavailable: %s", str(exc).strip().splitlines()[:1])
            raise StateUnavailable("the state store is unavailable; try again shortly") from exc
        return result

    @abstractmethod
    def _read(self) -> AbstractContextManager[StoreTx]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[StoreTx]:
        """A transaction, committed when the block ends and rolled back when it raises."""

    async def _reading(self, func: Callable[..., _T], *args: Any) -> _T:
        return await self._call(self._read_with, func, *args)

    async def _writing(self, func: Callable[..., _T], *args: Any) -> _T:
        return await self._call(self._write_with, func, *args)

    def _read_with(self, func: Callable[..., _T], *args: Any) -> _T:
        with self._read() as tx:
            return func(tx, *args)

    def _write_with(self, func: Callable[..., _T], *args: Any) -> _T:
        with self._write() as tx:
            return func(tx, *args)

    async def ping(self) -> bool:
        try:
            return await self._reading(StoreTx.answers)
        except (self.driver_error, RuntimeError, StateUnavailable):
            return False

    async def schema_version(self) -> int:
        return await self._reading(StoreTx.schema_version)

    # -- records ----------------------------------------------------------------------------

    async def create(self, record: ExportRecord) -> ExportRecord:
        await self._call(self._insert, record)
        return record

    def _insert(self, record: ExportRecord) -> None:
        try:
            self._write_with(StoreTx.insert_record, record)
        except self.duplicate_error:
            raise Conflict(f"export {record.id} already exists", reason="AlreadyExists") from None

    async def get(self, export_id: str) -> ExportRecord | None:
        return await self._point_read(StoreTx.get_record, export_id)

    async def _point_read(self, func: Callable[..., _T], *args: Any) -> _T:
        """A read of one row by its key (a status read); SQLite answers it on the loop."""
        return await self._reading(func, *args)

    async def list_for_owner(
        self, owner: str | None, limit: int = 20, cursor: str | None = None
    ) -> ExportPage:
        position = PageCursor.decode(cursor) if cursor else None
        limit = clamp_limit(limit)
        # One more than a page tells whether another page follows.
        records = await self._reading(StoreTx.newest_first, owner, limit + 1, position)
        items = records[:limit]
        more = len(records) > limit
        return ExportPage(items, PageCursor.after(items[-1]).encode() if more else None)

    async def list_by_phase(self, phases: Collection[Phase]) -> list[ExportRecord]:
        return await self._reading(StoreTx.by_phase, [Phase(p).value for p in phases])

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
        change = StatusChange(export_id, status, pid, expected_version, phases)
        return await self._writing(self._apply, change)

    async def update_many(self, updates: Sequence[Update]) -> list[ExportRecord | None]:
        changes = [StatusChange(export_id, status, pid) for export_id, status, pid in updates]
        return await self._writing(self._apply_all, changes)

    def _apply_all(self, tx: StoreTx, changes: list[StatusChange]) -> list[ExportRecord | None]:
        return [self._apply(tx, change) for change in changes]

    def _apply(self, tx: StoreTx, change: StatusChange) -> ExportRecord | None:
        record = tx.set_status(change)
        if record is not None and self.credit_policy.refunds(change.status.phase):
            self._refund(tx, change.export_id)
        return record

    # -- admission: idempotency keys, queue limits, credits ---------------------------------

    async def admit(self, admission: Admission) -> Admitted:
        return await self._call(self._admit, admission)

    def _admit(self, admission: Admission) -> Admitted:
        try:
            return self._write_with(self._admit_in, admission)
        except self.duplicate_error:
            raise Conflict(
                f"export {admission.export_id} already exists", reason="AlreadyExists"
            ) from None
        except InsufficientCredits:  # rolled back; keep the opening of a new account
            self._account(admission.owner, admission.credits or self.credit_policy, admission.now)
            raise

    @staticmethod
    def _admit_in(tx: StoreTx, admission: Admission) -> Admitted:
        if admission.queue is not None:
            tx.lock_admissions()
        return admit(tx, admission)

    async def credit_account(
        self, owner: str, policy: CreditPolicy, now: datetime
    ) -> CreditAccount:
        return accrue(await self._call(self._account, owner, policy, now), policy, now)

    def _account(self, owner: str, policy: CreditPolicy, now: datetime) -> CreditAccount:
        stored = self._read_with(StoreTx.select_account, owner)
        if stored is not None:  # the common case: no write
            return stored
        return self._write_with(ensure_account, owner, policy, now)

    async def refund(self, export_id: str) -> bool:
        return await self._writing(self._refund, export_id)

    def _refund(self, tx: StoreTx, export_id: str) -> bool:
        return refund_export(tx, export_id, self.credit_policy, self.clock())

    async def complete_key(self, owner: str, key: str, response: StoredResponse) -> None:
        await self._writing(StoreTx.complete_key, owner, key, response)

    async def release_key(self, owner: str, key: str) -> None:
        await self._writing(StoreTx.release_key, owner, key)

    async def purge_expired_keys(self, now: datetime) -> int:
        return await self._writing(StoreTx.purge_expired_keys, now)

    # -- housekeeping (exportd.ops.housekeeping) -------------------------------------------------

    async def list_finished(
        self, created_before: datetime, limit: int = 500, after: PageCursor | None = None
    ) -> list[ExportRecord]:
        return await self._reading(StoreTx.finished, created_before, clamp_limit(limit), after)

    async def delete_finished(self, export_id: str, version: int) -> bool:
        return await self._writing(StoreTx.delete_finished, export_id, version)

    # -- handle links: the download audit log and revocations (exportd.security.links)
    # -----------------

    async def add_link_event(self, event: LinkEvent) -> None:
        await self._writing(StoreTx.add_link_event, event)

    async def link_events(self, export_id: str) -> list[LinkEvent]:
        return await self._reading(StoreTx.link_events, export_id)

    async def revoked_at(self, export_id: str) -> datetime | None:
        return await self._reading(StoreTx.revoked_at, export_id)
