"""Scheduled exports: the rules both modes follow, as pure functions over a clock reading.

The operator (an ``ExportSchedule`` custom resource, :mod:`exportd.operator.schedules`) and the
embedded server (schedules in the state store, :mod:`exportd.scheduler`) ask the same question
on every tick: *given the last slot handled and the time now, what is due?* The answer
(:func:`decide`) follows a Kubernetes CronJob:

- The slots passed since the last handled slot (the schedule's creation for a new one) are
  found; only the **latest** may run: after downtime at most one catch-up run, never a burst.
  The older ones are counted as missed.
- ``startingDeadlineSeconds``: when the latest slot is more than that late, it is missed too and
  nothing runs until the next slot. Without a deadline a late slot always runs (once).
- ``concurrencyPolicy``: ``Allow`` runs beside active runs; ``Forbid`` skips the slot while a
  run is active (the slot is handled, it does not run later); ``Replace`` cancels the active
  runs and starts the new one.
- ``suspend``: nothing is handled while suspended; on resume the latest slot passed meanwhile
  runs if the deadline allows (as a CronJob does).

Every run has a deterministic name (:func:`run_name`): the schedule's name and the slot's UTC
minute. Creating a run that already exists is success, so two ticks, two replicas or a restart
between "created the run" and "recorded it" never start a slot twice. Daylight saving: see
:mod:`exportd.contract.cron`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from exportd.contract.cron import Cron, CronError, Timetable, zone
from exportd.contract.spec import CamelModel, ExportRequestBody, Phase

RUN_NAME_MAX = 63
SLOT_FORMAT = "%Y%m%d%H%M"
DEFAULT_SUCCESSFUL_HISTORY = 3
DEFAULT_FAILED_HISTORY = 1
HISTORY_MAX = 100


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class Outcome(StrEnum):
    """What a tick did with a due slot (the ``outcome`` label of the runs metric)."""

    STARTED = "started"  # a run was created
    SKIPPED = "skipped"  # Forbid, a run still active
    REFUSED = "refused"  # the run was refused (credits, queue, invalid order): not retried
    MISSED = "missed"  # later than startingDeadlineSeconds
    FAILED = "failed"  # creating it failed for another reason; retried on the next tick


def _check_cron(expression: str) -> str:
    try:
        return Cron.parse(expression).expression
    except CronError as exc:
        raise ValueError(str(exc)) from None


def _check_zone(name: str) -> str:
    try:
        zone(name)
    except CronError as exc:
        raise ValueError(str(exc)) from None
    return name


CronExpression = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(_check_cron)
]
TimeZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_check_zone)
]
HistoryLimit = Annotated[int, Field(ge=0, le=HISTORY_MAX)]


class ScheduleRules(CamelModel):
    """When and how a schedule runs: the fields the CR's spec and the API's body share."""

    schedule: CronExpression
    time_zone: TimeZoneName = "UTC"
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    suspend: bool = False
    starting_deadline_seconds: Annotated[int, Field(ge=0)] | None = None
    successful_history_limit: HistoryLimit = DEFAULT_SUCCESSFUL_HISTORY
    failed_history_limit: HistoryLimit = DEFAULT_FAILED_HISTORY

    @property
    def timetable(self) -> Timetable:
        return Timetable.of(self.schedule, self.time_zone)


class ScheduleSpec(ScheduleRules):
    """A schedule: its rules and the export each run makes (``template``, an export order)."""

    template: ExportRequestBody
    title: Annotated[str, StringConstraints(max_length=200)] | None = None  # shown by the page


@dataclass(frozen=True)
class Decision:
    """What is due now. ``slot`` is the slot acted on (run, skipped or missed); ``handled``
    the new last handled slot; ``missed`` how many slots passed without a run."""

    action: Literal["run", "skip", "miss", "none"]
    slot: datetime | None
    handled: datetime | None
    missed: int
    replace: bool
    next_slot: datetime | None


def decide(rules: ScheduleRules, *, since: datetime, now: datetime, active: int) -> Decision:
    """The decision of one tick. ``since`` is the last handled slot (or the creation time),
    ``active`` the number of the schedule's runs not finished yet."""
    timetable = rules.timetable
    next_slot = timetable.next_after(now)
    if rules.suspend:
        return Decision("none", None, None, 0, False, next_slot)
    slots = timetable.slots_between(since, now)
    if not slots:
        return Decision("none", None, None, 0, False, next_slot)
    latest, older = slots[-1], len(slots) - 1
    deadline = rules.starting_deadline_seconds
    if deadline is not None and now - latest > timedelta(seconds=deadline):
        return Decision("miss", latest, latest, len(slots), False, next_slot)
    if active and rules.concurrency_policy is ConcurrencyPolicy.FORBID:
        return Decision("skip", latest, latest, older, False, next_slot)
    replace = bool(active) and rules.concurrency_policy is ConcurrencyPolicy.REPLACE
    return Decision("run", latest, latest, older, replace, next_slot)


def slot_stamp(slot: datetime) -> str:
    return slot.astimezone(UTC).strftime(SLOT_FORMAT)


def run_name(schedule_name: str, slot: datetime) -> str:
    """The run of ``schedule_name`` at ``slot``: ``<name>-<UTC YYYYMMDDHHMM>``, a DNS label of
    at most 63 characters (a long name is cut and made unique again by a hash of it)."""
    stamp = slot_stamp(slot)
    room = RUN_NAME_MAX - len(stamp) - 1
    base = schedule_name
    if len(base) > room:
        digest = hashlib.sha256(schedule_name.encode()).hexdigest()[:8]
        base = f"{schedule_name[: room - 9].rstrip('-')}-{digest}"
    return f"{base}-{stamp}"


@dataclass(frozen=True)
class RunRecord:
    """One run as history sees it."""

    name: str
    slot: datetime
    phase: Phase


def history_to_prune(
    runs: Sequence[RunRecord], successful_limit: int, failed_limit: int
) -> list[str]:
    """Finished runs beyond the limits, oldest first: succeeded ones beyond
    ``successful_limit``, failed or cancelled ones beyond ``failed_limit``. Active runs stay."""
    ordered = sorted(runs, key=lambda run: (run.slot, run.name), reverse=True)
    succeeded = [r.name for r in ordered if r.phase is Phase.SUCCEEDED]
    failed = [r.name for r in ordered if r.phase in (Phase.FAILED, Phase.CANCELLED)]
    doomed = succeeded[successful_limit:] + failed[failed_limit:]
    return sorted(doomed, key=lambda name: next(r.slot for r in runs if r.name == name))
