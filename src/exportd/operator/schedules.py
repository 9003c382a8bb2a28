"""kopf handlers of ExportSchedules: a timer per schedule that runs due slots as ExportRequests.

Each tick (every ``schedule_tick_seconds``) reads the schedule and its runs, asks
:func:`exportd.contract.schedule.decide` what is due, and then, in an order that survives a crash
at any
point:

1. with ``Replace``, cancels the active runs (``spec.cancel``);
2. creates the slot's ExportRequest under its deterministic name (AlreadyExists is success: an
   operator restart, a second tick or a lost status write never creates a second one);
3. deletes finished runs beyond the history limits;
4. patches the schedule's status (last slot handled, last run, next slot, active runs, Ready).

An invalid spec (bad cron, unknown time zone, bad template) is refused with ``Ready=False``
``InvalidSpec`` and a message naming the field; nothing runs until it is fixed. The ExportRequests
themselves are run by the ordinary ExportRequest handlers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from exportd.contract import exportrequest as er
from exportd.contract import exportschedule as es
from exportd.contract.schedule import Decision, Outcome, decide, history_to_prune, run_name
from exportd.operator.kube import AlreadyExists, KubeApi, KubeError
from exportd.ops import metrics
from exportd.settings import OperatorSettings

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
RETRY_DELAY_SECONDS = 5.0


class ScheduleApi(KubeApi):
    """The calls a schedule's tick makes, on the namespace of the schedule."""

    async def runs_of(self, schedule: Mapping[str, Any]) -> list[dict[str, Any]]:
        meta = er.metadata(schedule)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        page = await self._call(
            f"list runs of {es.KIND} {namespace}/{name}",
            lambda: self.objects.list_namespaced_custom_object(
                er.GROUP,
                er.VERSION,
                namespace,
                er.PLURAL,
                label_selector=f"{es.LABEL_SCHEDULE}={name}",
            ),
        )
        items = cast(dict[str, Any], page).get("items") or []
        return [item for item in items if es.is_run_of(schedule, item)]

    async def create_run(self, body: dict[str, Any]) -> bool:
        """Create a run; ``False`` when it already exists."""
        namespace = body["metadata"]["namespace"]
        try:
            await self._call(
                f"create {er.KIND} {namespace}/{body['metadata']['name']}",
                lambda: self.objects.create_namespaced_custom_object(
                    er.GROUP, er.VERSION, namespace, er.PLURAL, body
                ),
            )
        except AlreadyExists:
            return False
        return True

    async def cancel_run(self, namespace: str, name: str) -> None:
        await self._ignore_gone(
            f"cancel {er.KIND} {namespace}/{name}",
            lambda: self.objects.patch_namespaced_custom_object(
                er.GROUP, er.VERSION, namespace, er.PLURAL, name, {"spec": {"cancel": True}}
            ),
        )

    async def delete_run(self, namespace: str, name: str) -> None:
        await self._ignore_gone(
            f"delete {er.KIND} {namespace}/{name}",
            lambda: self.objects.delete_namespaced_custom_object(
                er.GROUP, er.VERSION, namespace, er.PLURAL, name
            ),
        )

    async def _ignore_gone(self, what: str, call: Callable[[], Any]) -> None:
        try:
            await self._call(what, call)
        except KubeError as exc:
            if exc.status != 404:
                raise


OUTCOMES = {"run": Outcome.STARTED, "skip": Outcome.SKIPPED, "miss": Outcome.MISSED}


def _own_name(body: Mapping[str, Any]) -> str:
    return str(er.metadata(body).get("name"))


def _name(body: Mapping[str, Any]) -> str:
    meta = er.metadata(body)
    return f"{meta.get('namespace')}/{meta.get('name')}"


def validation_message(exc: ValidationError) -> str:
    """Each problem of an invalid spec, by its field path (``spec.timeZone: ...``)."""
    return "; ".join(
        f"spec.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}".replace("spec.:", "spec:")
        for error in exc.errors()
    )


def _count(decision: Decision) -> None:
    """Metrics of a tick's decision, counted once the tick's writes are done."""
    if decision.missed:
        metrics.SCHEDULE_MISSED_SLOTS.inc(decision.missed)
    if decision.action in OUTCOMES:
        metrics.SCHEDULE_RUNS.labels(outcome=OUTCOMES[decision.action].value).inc()


def _condition(status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "type": es.CONDITION_READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": er.rfc3339(now),
    }


class ScheduleTicker:
    """One tick of one schedule (see the module docstring)."""

    def __init__(self, api: ScheduleApi, clock: Clock) -> None:
        self.api = api
        self.clock = clock

    async def tick(self, body: Mapping[str, Any], patch: kopf.Patch) -> None:
        now = self.clock()
        try:
            spec = es.schedule_spec_of(body)
        except ValidationError as exc:
            message = validation_message(exc)
            if (body.get("status") or {}).get("message") != message:
                patch.status["conditions"] = [_condition("False", "InvalidSpec", message, now)]
                patch.status["reason"], patch.status["message"] = "InvalidSpec", message
                patch.status["nextScheduleTime"] = None
            return
        runs = await self.api.runs_of(body)
        status = body.get("status") or {}
        created_at = er.parse_time(er.metadata(body).get("creationTimestamp")) or now
        since = er.parse_time(status.get("lastSlotTime")) or created_at
        active = es.active_refs(runs)
        decision = decide(spec, since=since, now=now, active=len(active))
        names = {str(er.metadata(r).get("name")) for r in runs}
        if decision.slot is not None and run_name(_own_name(body), decision.slot) in names:
            # The slot's run exists: the body kopf handed over predates the status patch of the
            # tick that made it. Nothing to cancel, skip or create; the status is recorded again.
            decision = dataclasses.replace(decision, action="run", replace=False)
        created = False
        if decision.action == "run" and decision.slot is not None:
            run = es.run_body(body, spec, decision.slot)
            if run["metadata"]["name"] not in names:
                if decision.replace:
                    for ref in active:
                        await self.api.cancel_run(str(ref["namespace"]), str(ref["name"]))
                created = await self.api.create_run(run)
            if created:
                log.info("schedule %s: created run %s", _name(body), run["metadata"]["name"])
                runs = await self.api.runs_of(body)
        await self._prune(body, spec, runs)
        handled = er.rfc3339(decision.handled) if decision.handled else None
        if created or (decision.action != "run" and handled != status.get("lastSlotTime")):
            _count(decision)
        self._record(patch, decision, status, runs, now)

    async def _prune(
        self, body: Mapping[str, Any], spec: es.ExportScheduleSpec, runs: list[dict[str, Any]]
    ) -> None:
        records = [es.run_record(run) for run in runs]
        namespace = str(er.metadata(body).get("namespace"))
        limits = spec.successful_history_limit, spec.failed_history_limit
        for name in history_to_prune(records, *limits):
            await self.api.delete_run(namespace, name)

    @staticmethod
    def _record(
        patch: kopf.Patch,
        decision: Decision,
        status: Mapping[str, Any],
        runs: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """Patch the status fields that changed (a tick that changes nothing writes nothing)."""
        active = es.active_refs(runs)
        wanted: dict[str, Any] = {
            "active": active,
            "activeCount": len(active),
            "nextScheduleTime": er.rfc3339(decision.next_slot) if decision.next_slot else None,
            "lastSuccessfulTime": es.last_successful_time(runs, status.get("lastSuccessfulTime")),
        }
        if decision.handled is not None:
            wanted["lastSlotTime"] = er.rfc3339(decision.handled)
        if decision.action == "run" and decision.slot is not None:
            wanted["lastScheduleTime"] = er.rfc3339(decision.slot)
        if decision.action in OUTCOMES:
            wanted["lastOutcome"] = OUTCOMES[decision.action].value
        conditions = status.get("conditions") or []
        if not conditions or conditions[0].get("status") != "True":
            wanted["conditions"] = [_condition("True", "Scheduled", "", now)]
            wanted["reason"], wanted["message"] = None, None
        for key, value in wanted.items():
            if status.get(key) != value:
                patch.status[key] = value


def register_schedules(
    registry: kopf.OperatorRegistry, settings: OperatorSettings, runtime: Any, clock: Clock
) -> None:
    """The schedules' timer; ``runtime`` supplies the API client once the operator started."""
    resource = (er.GROUP, er.VERSION, es.PLURAL)

    @kopf.timer(
        *resource,
        registry=registry,
        id="schedule-tick",
        interval=settings.schedule_tick_seconds,
        timeout=120,
    )
    async def schedule_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        if runtime.client is None:
            raise kopf.TemporaryError("the operator is starting", delay=RETRY_DELAY_SECONDS)
        ticker = ScheduleTicker(ScheduleApi(runtime.client, settings.namespace), clock)
        try:
            await ticker.tick(body, patch)
        except KubeError as exc:
            metrics.SCHEDULE_RUNS.labels(outcome=Outcome.FAILED.value).inc()
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
