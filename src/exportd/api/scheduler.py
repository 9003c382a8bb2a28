"""The server's scheduler: fires the API's schedules (kept in the state store) at their slots.

It follows the same rules as the operator for ExportSchedules (:mod:`exportd.contract.schedule`):
one run
per due slot with a deterministic export id (``<schedule id>-<UTC YYYYMMDDHHMM>``), at most one
catch-up after downtime, ``startingDeadlineSeconds``, the concurrency policy. It ticks once when
the server starts (so a slot passed while it was down is caught up at once) and then every
``schedule_tick_seconds``.

Each run is an ordinary export of the schedule's owner, admitted by
:meth:`exportd.api.protection.Protection.start_scheduled`: checked against the catalog, charged
a credit, held to the queue limits. A refusal (no credit left, queue full, an export type or
variable the catalog no longer accepts) is recorded on the schedule as a ``refused`` run with
its reason and message, and the slot counts as handled: it is **not retried**, neither in a
loop nor later; the next slot tries again. Retrying a refused slot would spend the credit the
owner earns next on an old slot, or hammer a full queue; a user who wants the run now presses
run-now.

A tick that fails half-way (the store unreachable) leaves the slot unhandled and the next tick
repeats it: the run's id makes a second admission a ``Conflict`` that starts nothing, and the
run row is keyed by (schedule, slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from exportd.api.backends.base import ExportView
from exportd.api.context import ApiContext
from exportd.api.protection import Protection
from exportd.contract.errors import Conflict, ExportdError, NotFound
from exportd.contract.schedule import (
    Decision,
    Outcome,
    RunRecord,
    decide,
    history_to_prune,
    run_name,
)
from exportd.contract.spec import ExportSpec, Phase
from exportd.ops import metrics
from exportd.store.base import Clock
from exportd.store.schedules import ScheduleRecord, ScheduleRun, ScheduleState, ScheduleStore

log = logging.getLogger(__name__)
# How a handled slot that made no export counts against the history limits.
_HISTORY_PHASE = {
    Outcome.REFUSED: Phase.FAILED,
    Outcome.SKIPPED: Phase.CANCELLED,
    Outcome.MISSED: Phase.CANCELLED,
}


def schedule_store(protection: Protection) -> ScheduleStore:
    store = protection.store
    if not isinstance(store, ScheduleStore):
        raise TypeError(f"{type(store).__name__} keeps no schedules")
    return store


class Scheduler:
    def __init__(self, context: ApiContext, protection: Protection, clock: Clock) -> None:
        self.context = context
        self.protection = protection
        self.clock = clock

    @property
    def store(self) -> ScheduleStore:
        return schedule_store(self.protection)

    async def tick_all(self) -> None:
        """One tick of every schedule; one schedule's failure does not stop the others."""
        for record in await self.store.list_schedules(None):
            try:
                await self.tick(record)
            except Exception:
                metrics.SCHEDULE_RUNS.labels(outcome=Outcome.FAILED.value).inc()
                log.exception("schedule %s: tick failed; retried next tick", record.id)

    async def views(self, record: ScheduleRecord) -> dict[str, ExportView]:
        """The exports of the schedule's started runs that still exist, by id."""
        found = {}
        for run in await self.store.schedule_runs(record.id):
            if run.export_id is None:
                continue
            with contextlib.suppress(NotFound):
                found[run.export_id] = await self.context.backend.get(run.export_id, record.owner)
        return found

    async def tick(self, record: ScheduleRecord) -> ScheduleRecord | None:
        now = self.clock()
        views = await self.views(record)
        active = [i for i, view in views.items() if not view.status.phase.is_terminal]
        since = record.state.last_slot_time or record.created_at
        decision = decide(record.spec, since=since, now=now, active=len(active))
        if decision.slot is not None and run_name(record.id, decision.slot) in views:
            # Its run exists (the state write of the tick that made it was lost): record it.
            decision = dataclasses.replace(decision, action="run", replace=False)
        run = await self._handle(record, decision, active, now)
        state = record.state.model_copy(update={"next_schedule_time": decision.next_slot})
        if run is not None:
            state = _after(state, run)
        saved: ScheduleRecord | None = record
        if state != record.state:
            saved = await self.store.save_schedule(record.id, record.spec, state, record.version)
        await self._prune(record, views)
        return saved

    async def run_now(self, record: ScheduleRecord) -> ScheduleRun:
        """Start a run at once, at the current minute (a second call in that minute is the
        same run); it does not change the schedule's slots. A refusal raises (402, 503, 422)
        as it does for any export the user asks for."""
        slot = self.clock().replace(second=0, microsecond=0)
        run = self._started(record, slot)
        assert run.export_id is not None
        if not await self._exists(run.export_id, record.owner):
            try:
                await self.protection.start_scheduled(self.context, self._order(record, slot))
            except Conflict as exc:
                if exc.reason != "AlreadyExists":
                    raise
        await self.store.add_schedule_run(run)
        return run

    def _order(self, record: ScheduleRecord, slot: datetime) -> ExportSpec:
        return ExportSpec.from_request(
            record.spec.template,
            requested_by=record.owner,
            export_id=run_name(record.id, slot),
            requested_at=slot,
        )

    def _started(self, record: ScheduleRecord, slot: datetime) -> ScheduleRun:
        return ScheduleRun(
            schedule_id=record.id,
            slot=slot,
            outcome=Outcome.STARTED,
            export_id=run_name(record.id, slot),
            at=self.clock(),
        )

    async def _handle(
        self, record: ScheduleRecord, decision: Decision, active: list[str], now: datetime
    ) -> ScheduleRun | None:
        if decision.slot is None or decision.action == "none":
            return None
        if decision.action == "run":
            if decision.replace:  # not the slot's own run, if a crash left it behind
                own = run_name(record.id, decision.slot)
                for export_id in (i for i in active if i != own):
                    with contextlib.suppress(ExportdError):
                        await self.context.backend.cancel(export_id, record.owner)
            run = await self._start(record, decision.slot)
        else:
            outcome, reason, message = _not_run(decision.action, decision.slot, now, active)
            run = ScheduleRun(
                schedule_id=record.id,
                slot=decision.slot,
                outcome=outcome,
                reason=reason,
                message=message,
                at=now,
            )
        if await self.store.add_schedule_run(run):
            metrics.SCHEDULE_RUNS.labels(outcome=run.outcome.value).inc()
            if decision.missed:
                metrics.SCHEDULE_MISSED_SLOTS.inc(decision.missed)
        return run

    async def _start(self, record: ScheduleRecord, slot: datetime) -> ScheduleRun:
        run = self._started(record, slot)
        export_id = str(run.export_id)
        if await self._exists(export_id, record.owner):  # started before a crash or restart
            return run
        try:
            await self.protection.start_scheduled(self.context, self._order(record, slot))
        except Conflict as exc:
            if exc.reason != "AlreadyExists":
                raise
            log.info("schedule %s: run %s existed already", record.id, export_id)
        except ExportdError as exc:  # credits, queue, catalog: recorded, not retried
            log.warning("schedule %s: run %s refused: %s", record.id, export_id, exc.message)
            return run.model_copy(
                update={
                    "outcome": Outcome.REFUSED,
                    "export_id": None,
                    "reason": exc.reason,
                    "message": exc.message,
                }
            )
        return run

    async def _exists(self, export_id: str, owner: str) -> bool:
        try:
            await self.context.backend.get(export_id, owner)
        except NotFound:
            return False
        return True

    async def _prune(self, record: ScheduleRecord, views: dict[str, ExportView]) -> None:
        history = []
        for run in await self.store.schedule_runs(record.id):
            view = views.get(run.export_id or "")
            phase = _HISTORY_PHASE.get(run.outcome) or (
                view.status.phase if view is not None else Phase.SUCCEEDED
            )
            history.append(RunRecord(run.slot.isoformat(), run.slot, phase))
        spec = record.spec
        doomed = history_to_prune(history, spec.successful_history_limit, spec.failed_history_limit)
        if doomed:
            slots = [r.slot for r in history if r.name in set(doomed)]
            await self.store.forget_schedule_runs(record.id, slots)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Tick now (catching up what passed while the server was down), then periodically."""
        await self._safe_tick()
        task = asyncio.create_task(self._loop(), name="exportd-scheduler")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.context.settings.schedule_tick_seconds)
            await self._safe_tick()

    async def _safe_tick(self) -> None:
        try:
            await self.tick_all()
        except Exception:
            log.exception("scheduler tick failed; retried next tick")


def _after(state: ScheduleState, run: ScheduleRun) -> ScheduleState:
    """The state once ``run``'s slot is handled."""
    started = run.outcome is Outcome.STARTED
    return state.model_copy(
        update={
            "last_slot_time": run.slot,
            "last_schedule_time": run.slot if started else state.last_schedule_time,
            "last_outcome": run.outcome,
            "last_reason": run.reason,
            "last_message": run.message,
        }
    )


def _not_run(
    action: str, slot: datetime, now: datetime, active: list[str]
) -> tuple[Outcome, str, str]:
    """Outcome, reason and message of a slot that does not run: skipped (Forbid, a run still
    active) or missed (later than startingDeadlineSeconds)."""
    if action == "skip":
        message = f"a run is still active ({', '.join(active)}); concurrencyPolicy Forbid"
        return Outcome.SKIPPED, "RunActive", message
    late = int((now - slot).total_seconds())
    message = f"{late} s late, past startingDeadlineSeconds"
    return Outcome.MISSED, "StartingDeadlineExceeded", message
