"""One reconcile round, as a pure function of every ExportRequest and every export Job.

Level-triggered: whatever event woke the operator, a round looks at the whole picture, so an
event missed while the operator was down (a Job that finished, a request created, a slot freed)
is picked up by the next round. Per request, the round decides:

- being deleted, or terminal with a Job still running: delete the Job;
- its Job finished: Succeeded with the exporter's result (rows, bytes, a signed URL), or Failed
  with a reason (the exporter's own, else the Job's: DeadlineExceeded, BackoffLimitExceeded);
- its Job runs: Running with attempts and rows so far; on ``spec.cancel`` delete the Job (it
  becomes Cancelled once the Job is gone, unless the exporter had already stored the file);
- no Job: the exporter's result is there -> Succeeded (its Job is gone, e.g. by TTL);
  cancelled -> Cancelled; it had a Job -> Failed (JobNotFound); an invalid order -> Failed;
  otherwise it waits for admission, which plans its Job or gives it a queue position.

Only changed status fields are patched, so a round over a settled cluster writes nothing. Jobs
must be listed before requests: a Job seen finished then always comes with the exporter's result
on its request, since the exporter writes the result before it exits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from exportd.contract import exportrequest as er
from exportd.contract.catalog import Catalog, ExportType
from exportd.contract.errors import ExportdError
from exportd.contract.spec import (
    DELIVERED,
    TERMINAL_PHASES,
    Condition,
    ExportErrorInfo,
    ExportResult,
    ExportSpec,
    Phase,
    ReturnType,
)
from exportd.delivery.by_email import failure_conditions
from exportd.operator.admission import Candidate, Limits, RequestKey, admit
from exportd.operator.events import WARNING, EventNote, InvolvedObject, transition_events
from exportd.operator.jobs import JobOutcome, JobState, JobTemplate, RequestRef, job_state, plan_job
from exportd.security.reports import refusal

TERMINAL_VALUES = frozenset(phase.value for phase in TERMINAL_PHASES)
CONDITION_READY = "Ready"
CONDITION_COMPLETE = "Complete"
CONDITION_FAILED = "Failed"
CONDITION_STALLED = "Stalled"

Linker = Callable[[str, str], tuple[str, int]]  # (object key, download name) -> (url, expiry)
Changes = dict[str, Any]  # camelCase status fields; None removes a field

OPERATOR_FIELDS = (
    "phase",
    "format",
    "duration",
    "queuePosition",
    "attempts",
    "jobName",
    "startedAt",
    "completedAt",
    "rows",
    "bytes",
    "sha256",
    "objectKey",
    "url",
    "expiresAt",
    "delivered",
    "reason",
    "message",
    "observedGeneration",
    "conditions",
    "expiredAt",  # housekeeping's: when the file expired (the Expired condition follows it)
)


@dataclass(frozen=True)
class RoundContext:
    now: datetime
    limits: Limits
    template: JobTemplate
    catalog: Catalog
    link: Linker
    report_secret: str | None = (
        None  # results are trusted only when signed (exportd.security.reports)
    )


@dataclass(frozen=True)
class RequestView:
    ref: RequestRef
    generation: int
    deleting: bool
    body: Mapping[str, Any]
    status: er.RequestStatus

    @property
    def key(self) -> RequestKey:
        return (self.ref.namespace, self.ref.name)

    @property
    def cancel(self) -> bool:
        return bool((self.body.get("spec") or {}).get("cancel"))


def request_view(body: Mapping[str, Any]) -> RequestView:
    meta = er.metadata(body)
    return RequestView(
        ref=RequestRef(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")),
        generation=int(meta.get("generation") or 1),
        deleting=bool(meta.get("deletionTimestamp")),
        body=body,
        status=er.status_of(body),
    )


@dataclass(frozen=True)
class StatusPatch:
    namespace: str
    name: str
    status: Changes
    uid: str = ""
    events: tuple[EventNote, ...] = ()  # to post once the patch is written

    @property
    def involved(self) -> InvolvedObject:
        return InvolvedObject(self.namespace, self.name, self.uid)

    def body(self) -> dict[str, Any]:
        return {"status": self.status}


@dataclass(frozen=True)
class JobCreation:
    """Create ``manifest``; once it exists, write ``on_created`` on the request."""

    request: RequestRef
    manifest: dict[str, Any]
    on_created: StatusPatch
    view: RequestView | None = None  # for the patch when the apiserver refuses the Job


@dataclass
class RoundPlan:
    create: list[JobCreation] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (namespace, Job name)
    patch: list[StatusPatch] = field(default_factory=list)
    refused: list[tuple[InvolvedObject, EventNote]] = field(default_factory=list)  # reports

    @property
    def empty(self) -> bool:
        return not (self.create or self.delete or self.patch)


@dataclass(frozen=True)
class _Waiting:
    view: RequestView
    spec: ExportSpec
    deadline_seconds: int


def plan_round(
    requests: Sequence[Mapping[str, Any]], jobs: Sequence[Mapping[str, Any]], ctx: RoundContext
) -> RoundPlan:
    views = [request_view(body) for body in requests]
    states = [job_state(body) for body in jobs]
    plan = RoundPlan()
    owned = _jobs_by_owner(states)
    known = {view.ref.uid for view in views}
    for state in states:
        if state.owner_uid not in known and not state.finished and not state.deleting:
            plan.delete.append((state.namespace, state.name))  # its request is gone
    waiting: list[_Waiting] = []
    for view in views:
        refused = _refused_report(view, ctx)
        if refused is not None:
            involved = InvolvedObject(view.ref.namespace, view.ref.name, view.ref.uid)
            plan.refused.append((involved, refused))
            view = replace(view, status=view.status.model_copy(update={"result": None}))
        outcome = _decide(view, owned.get(view.ref.uid), ctx)
        if isinstance(outcome, _Waiting):
            waiting.append(outcome)
            continue
        changes, delete_job = outcome
        if delete_job is not None:
            plan.delete.append(delete_job)
        if changes is not None:
            _add_patch(plan, view, changes, ctx.now)
    running = Counter(state.requester for state in states if not state.finished)
    _admit(plan, waiting, running, ctx)
    return plan


def _refused_report(view: RequestView, ctx: RoundContext) -> EventNote | None:
    """A Warning when the result on the status is not this request's own Job's report."""
    status = view.body.get("status") or {}
    result = status.get("result")
    if not isinstance(result, Mapping) or view.status.phase in TERMINAL_PHASES:
        return None
    signature = status.get("resultSignature")
    why = refusal(ctx.report_secret, view.ref.name, view.ref.uid, result, signature)
    if why is None:
        return None
    key = f"{result.get('objectKey')}/{signature}"
    return EventNote(WARNING, "ReportRefused", f"a result report was refused: {why}", key=key)


def _jobs_by_owner(states: Sequence[JobState]) -> dict[str, JobState]:
    """One Job per request; an unfinished one wins over a finished one."""
    owned: dict[str, JobState] = {}
    for state in states:
        if state.owner_uid is None:
            continue
        current = owned.get(state.owner_uid)
        if current is None or (current.finished and not state.finished):
            owned[state.owner_uid] = state
    return owned


Decision = tuple[Changes | None, tuple[str, str] | None]  # (status changes, Job to delete)


def _decide(view: RequestView, job: JobState | None, ctx: RoundContext) -> Decision | _Waiting:
    stop_job = None if job is None or job.deleting else (job.namespace, job.name)
    if view.deleting:
        return None, stop_job
    if view.status.phase in TERMINAL_PHASES:
        return {}, (stop_job if job is not None and not job.finished else None)
    if job is not None:
        return _with_job(view, job, stop_job, ctx)
    return _without_job(view, ctx)


def _with_job(
    view: RequestView, job: JobState, stop_job: tuple[str, str] | None, ctx: RoundContext
) -> Decision:
    if job.outcome is JobOutcome.COMPLETE:
        result = view.status.result
        if result is None:
            missing = "the Job completed but no result was reported"
            return _failed("ResultMissing", missing, ctx, job.completed_at), None
        return _succeeded(view, result, job.completed_at, ctx) | {"attempts": job.attempts}, None
    if job.outcome is JobOutcome.FAILED:
        if view.status.result is not None:  # the file is stored and reported: never Failed
            result = view.status.result
            changes = _succeeded(view, result, result.completed_at, ctx)
            return changes | {"attempts": job.attempts}, None
        return _job_failed(view, job, ctx) | {"attempts": job.attempts}, None
    changes = _running(view, job, ctx)
    if view.cancel and view.status.result is None:
        return changes | {"message": "cancelling: the Job is being deleted"}, stop_job
    return changes, None


def _without_job(view: RequestView, ctx: RoundContext) -> Decision | _Waiting:
    if view.status.result is not None:
        return _succeeded(view, view.status.result, view.status.result.completed_at, ctx), None
    if view.cancel:
        return _cancelled(ctx), None
    if view.status.job_name:
        message = f"Job {view.status.job_name} disappeared before it finished"
        return _failed("JobNotFound", message, ctx), None
    checked = check_order(view.body, ctx.catalog)
    if isinstance(checked, OrderProblem):
        return _failed(checked.reason, checked.message, ctx), None
    spec, export_type = checked
    return _Waiting(view, spec, export_type.timeout_seconds)


@dataclass(frozen=True)
class OrderProblem:
    reason: str
    message: str


def check_order(
    body: Mapping[str, Any], catalog: Catalog
) -> tuple[ExportSpec, ExportType] | OrderProblem:
    """The request's order checked against the schema and the catalog (type, variables): what
    a round fails a request for, and what the admission webhook refuses it for at apply time."""
    try:
        spec = er.export_spec_from_body(body)
        export_type = catalog.get(spec.type)
        catalog.bind(spec.type, dict(spec.variables))
    except ValidationError as exc:
        return OrderProblem("InvalidSpec", _validation_message(exc))
    except ExportdError as exc:
        return OrderProblem(exc.reason, exc.described())
    return spec, export_type


def _validation_message(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in error['loc']) or 'spec'}: {error['msg']}"
        for error in exc.errors()
    ]
    return "; ".join(problems)


def _admit(
    plan: RoundPlan, waiting: list[_Waiting], running: Counter[str], ctx: RoundContext
) -> None:
    by_key = {item.view.key: item for item in waiting}
    candidates = [
        Candidate(
            key=item.view.key,
            requester=er.requester_label(item.spec.requested_by),
            requested_at=item.spec.requested_at,
        )
        for item in waiting
    ]
    admission = admit(candidates, running, ctx.limits)
    for key in admission.admitted:
        item = by_key[key]
        manifest = plan_job(
            item.spec, item.view.ref, ctx.template, deadline_seconds=item.deadline_seconds
        )
        changes: Changes = {
            "phase": Phase.RUNNING.value,
            "jobName": manifest["metadata"]["name"],
            "attempts": 0,
            "startedAt": er.rfc3339(ctx.now),
            "queuePosition": None,
            "message": None,
        }
        status = _status_patch(item.view, changes, ctx.now)
        created = status or _noop(item.view)
        plan.create.append(JobCreation(item.view.ref, manifest, created, item.view))
    for key, position in admission.queue_positions.items():
        queued = {"phase": Phase.QUEUED.value, "queuePosition": position}
        _add_patch(plan, by_key[key].view, queued, ctx.now)


def _noop(view: RequestView) -> StatusPatch:
    return StatusPatch(view.ref.namespace, view.ref.name, {}, view.ref.uid)


def rejected_patch(view: RequestView, reason: str, message: str, now: datetime) -> StatusPatch:
    """The request failed because the apiserver refused its Job (quota, admission, conflict)."""
    changes = _failed(reason, message, None, now) | {"jobName": None}
    return _status_patch(view, changes, now) or _noop(view)


# ---- status changes -----------------------------------------------------------------------


def _running(view: RequestView, job: JobState, ctx: RoundContext) -> Changes:
    changes: Changes = {
        "phase": Phase.RUNNING.value,
        "jobName": job.name,
        "attempts": job.attempts,
        "queuePosition": None,
    }
    if not view.status.started_at:
        changes["startedAt"] = er.rfc3339(job.started_at or ctx.now)
    if view.status.progress is not None:
        changes["rows"] = view.status.progress.rows
    return changes


def _succeeded(
    view: RequestView, result: ExportResult, completed_at: datetime | None, ctx: RoundContext
) -> Changes:
    changes: Changes = {
        "phase": Phase.SUCCEEDED.value,
        "rows": result.rows_written,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "objectKey": result.object_key,
        "completedAt": er.rfc3339(completed_at or ctx.now),
        "queuePosition": None,
        "reason": None,
        "message": None,
    }
    spec = er.request_spec_of(view.body)
    if spec.return_type is ReturnType.EMAIL:
        changes["delivered"] = result.delivered  # the exporter sent it (None: another run did)
    if spec.return_type is ReturnType.URL:
        url, expires = ctx.link(result.object_key, spec.file_name)
        changes["url"] = url
        changes["expiresAt"] = er.rfc3339(datetime.fromtimestamp(expires, UTC))
    return changes


def _job_failed(view: RequestView, job: JobState, ctx: RoundContext) -> Changes:
    last, at = view.status.last_error, job.completed_at
    if job.reason == "DeadlineExceeded":
        message = f"the export ran past its deadline: {job.message}"
        return _failed("DeadlineExceeded", message, ctx, at)
    if job.reason == "PodFailurePolicy":
        if last is not None:
            return _failed(last.reason, last.message, ctx, at)
        return _failed("PermanentFailure", job.message, ctx, at)
    if job.reason == "BackoffLimitExceeded":
        gave_up = f"gave up after {job.attempts} attempts"
        if last is not None:
            return _failed(last.reason, f"{gave_up}: {last.message}", ctx, at)
        return _failed("BackoffLimitExceeded", gave_up, ctx, at)
    return _failed(job.reason or "JobFailed", job.message, ctx, at)


def _failed(
    reason: str, message: str, ctx: RoundContext | None, at: datetime | None = None
) -> Changes:
    moment = at or (ctx.now if ctx is not None else None)
    assert moment is not None
    return {
        "phase": Phase.FAILED.value,
        "reason": reason,
        "message": message,
        "completedAt": er.rfc3339(moment),
        "queuePosition": None,
    }


def _cancelled(ctx: RoundContext) -> Changes:
    return {
        "phase": Phase.CANCELLED.value,
        "reason": "Cancelled",
        "message": "cancelled on request (spec.cancel); no file was published",
        "completedAt": er.rfc3339(ctx.now),
        "queuePosition": None,
    }


# ---- patches and conditions -----------------------------------------------------------------


def _add_patch(plan: RoundPlan, view: RequestView, changes: Changes, now: datetime) -> None:
    patch = _status_patch(view, changes, now)
    if patch is not None:
        plan.patch.append(patch)


def _status_patch(view: RequestView, changes: Changes, now: datetime) -> StatusPatch | None:
    """The merge patch that brings the operator's fields to ``changes``; None if no change."""
    current: Mapping[str, Any] = view.body.get("status") or {}
    if not changes and not current:
        return None
    desired = {key: current.get(key) for key in OPERATOR_FIELDS} | changes
    desired["observedGeneration"] = view.generation
    desired["format"] = _effective_format(view) or desired.get("format")
    desired["duration"] = _duration(view, desired)
    wanted = [*_lifecycle_conditions(desired), *_delivery_conditions(view, desired)]
    desired["conditions"] = _conditions(
        wanted, view.status.conditions, view.generation, now, desired.get("expiredAt")
    )
    patch = {key: value for key, value in desired.items() if current.get(key) != value}
    if not patch:
        return None
    events = tuple(transition_events(current, patch))
    return StatusPatch(view.ref.namespace, view.ref.name, patch, view.ref.uid, events)


def _effective_format(view: RequestView) -> str | None:
    """What ``kubectl get exr`` shows as Format: spec.format, or inferred from fileName."""
    try:
        return er.request_spec_of(view.body).resolved_format.value
    except (ValidationError, ValueError):
        return None


def _duration(view: RequestView, desired: Mapping[str, Any]) -> str | None:
    """Creation to end, like a Job's Duration column (``1m12s``); None until it ended."""
    if desired.get("phase") not in TERMINAL_VALUES:
        return None
    start = er.parse_time(er.metadata(view.body).get("creationTimestamp"))
    end = er.parse_time(desired.get("completedAt"))
    if start is None or end is None:
        return None
    seconds = max(0, int((end - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"
    return shown


def _lifecycle_conditions(desired: Mapping[str, Any]) -> list[Condition]:
    """``Admitted`` and ``Finished``; ``Ready`` for kstatus (Flux, Argo CD): True once the
    request is settled (Succeeded, Cancelled), with ``Stalled`` True when it failed; and, like
    the Job API, ``Complete`` or ``Failed`` once it ended so (``kubectl wait``)."""
    phase = Phase(desired.get("phase") or Phase.PENDING.value)
    admitted = bool(desired.get("jobName"))
    finished = phase in TERMINAL_PHASES
    message = desired.get("message") or ""
    ready = phase in (Phase.SUCCEEDED, Phase.CANCELLED)
    ended: list[Condition] = []
    if phase is Phase.SUCCEEDED:
        ended.append(Condition(type=CONDITION_COMPLETE, status="True", reason=phase.value))
    if phase is Phase.FAILED:
        reason = desired.get("reason") or phase.value
        ended.append(
            Condition(type=CONDITION_FAILED, status="True", reason=reason, message=message)
        )
        ended.append(
            Condition(type=CONDITION_STALLED, status="True", reason=reason, message=message)
        )
    return [
        Condition(
            type=CONDITION_READY,
            status="True" if ready else "False",
            reason=phase.value,
            message=message,
        ),
        *ended,
        Condition(
            type=er.CONDITION_ADMITTED,
            status="True" if admitted else "False",
            reason="JobCreated" if admitted else phase.value,
        ),
        Condition(
            type=er.CONDITION_FINISHED,
            status="True" if finished else "False",
            reason=phase.value,
            message=desired.get("message") or "",
        ),
    ]


def _delivery_conditions(view: RequestView, desired: Mapping[str, Any]) -> list[Condition]:
    """An e-mail export's ``Delivered`` condition: the exporter's own when it succeeded (sent,
    or sent by an earlier run), False with the mail server's reason when sending failed it."""
    phase = desired.get("phase")
    result = view.status.result
    if phase == Phase.SUCCEEDED.value and result is not None:
        return [c for c in result.conditions if c.type == DELIVERED]
    if phase == Phase.FAILED.value and desired.get("reason"):
        error = ExportErrorInfo(reason=desired["reason"], message=desired.get("message") or "")
        try:
            spec = er.export_spec_from_body(view.body)
        except ValidationError:
            return []  # an invalid order was never sent
        return failure_conditions(spec, error)
    return []


def _conditions(
    wanted: Sequence[Condition],
    previous: Sequence[er.Condition],
    generation: int,
    now: datetime,
    expired_at: str | None = None,
) -> list[dict[str, Any]]:
    """``wanted`` as stored conditions: a transition time that moves only when the status
    does, and the generation they describe; ``Expired`` when housekeeping set ``expiredAt``
    (derived from that field, so a round planned before it saw the expiry restores it)."""
    before = {condition.type: condition for condition in previous}
    conditions = []
    for condition in wanted:
        old = before.get(condition.type)
        changed = old is None or old.status != condition.status
        stamp = er.rfc3339(now) if changed or old is None else old.last_transition_time
        conditions.append(
            condition.model_dump(mode="json", by_alias=True)
            | {"lastTransitionTime": stamp, "observedGeneration": generation}
        )
    if expired_at:
        conditions.append(er.expired_condition(expired_at))
    return conditions
