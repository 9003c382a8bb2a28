"""Schedule routes: ``/v1/schedules``, exports on a clock (rules in
:mod:`exportd.contract.schedule`).

A schedule belongs to the user who created it: another user's schedule is 404, as an export is
(the admin scope sees and manages everyone's). The body is checked field by field (422 naming
the field: ``schedule``, ``timeZone``, ``template.variables.x``) and the template against the
catalog at create and update time, so a schedule that could never run is refused at once. The
server's scheduler (:mod:`exportd.api.scheduler`) fires it; each run is an ordinary export of
its owner, listed with the others under ``/v1/exports``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from exportd.api.auth import PrincipalDep
from exportd.api.backends.base import ExportView
from exportd.api.context import ApiContext, ContextDep
from exportd.api.models import Problem
from exportd.api.protection import ProtectionDep
from exportd.api.scheduler import Scheduler
from exportd.contract.errors import InvalidInput, NotFound
from exportd.contract.schedule import Outcome, ScheduleSpec
from exportd.contract.spec import CamelModel, Phase
from exportd.store.schedules import (
    ScheduleRecord,
    ScheduleRun,
    ScheduleState,
    new_schedule_id,
)

SCHEDULES_ROUTE = "/v1/schedules"
router = APIRouter(tags=["schedules"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (401, 404, 409, 422, 500)
}


class RunResource(CamelModel):
    slot: datetime
    outcome: Outcome
    export_id: str | None = None
    phase: Phase | None = None  # the export's, while it exists
    reason: str | None = None
    message: str | None = None


class ScheduleResource(ScheduleSpec):
    """A schedule as the API shows it: its spec, where it stands, and its recent runs."""

    id: str
    owner: str
    created_at: datetime
    last_slot_time: datetime | None = None  # the last slot handled (run, skipped, missed)
    last_schedule_time: datetime | None = None
    last_successful_time: datetime | None = None
    next_schedule_time: datetime | None = None
    last_outcome: Outcome | None = None
    last_reason: str | None = None
    last_message: str | None = None
    runs: list[RunResource] = Field(default_factory=list)


class ScheduleList(CamelModel):
    items: list[ScheduleResource]


async def get_scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]


def _check_template(context: ApiContext, spec: ScheduleSpec) -> None:
    """The template against settings and the catalog; the fields named under ``template``."""
    try:
        context.check_request(spec.template)
    except InvalidInput as exc:
        errors = [replace(e, field=f"template.{e.field}") for e in exc.errors]
        raise InvalidInput(exc.message, reason=exc.reason, errors=errors) from None


async def _owned(scheduler: Scheduler, schedule_id: str, owner: str | None) -> ScheduleRecord:
    record = await scheduler.store.get_schedule(schedule_id)
    if record is None or (owner is not None and record.owner != owner):
        raise NotFound(f"schedule {schedule_id} not found", reason="ScheduleNotFound")
    return record


def _run(run: ScheduleRun, views: dict[str, ExportView]) -> RunResource:
    view = views.get(run.export_id or "")
    return RunResource(
        slot=run.slot,
        outcome=run.outcome,
        export_id=run.export_id,
        phase=view.status.phase if view is not None else None,
        reason=run.reason,
        message=run.message,
    )


async def _resource(scheduler: Scheduler, record: ScheduleRecord) -> dict[str, Any]:
    views = await scheduler.views(record)
    runs = [_run(run, views) for run in await scheduler.store.schedule_runs(record.id)]
    finished = [
        v.status.completed_at
        for v in views.values()
        if v.status.phase is Phase.SUCCEEDED and v.status.completed_at
    ]
    resource = ScheduleResource.model_validate(
        {
            **record.spec.model_dump(),
            **record.state.model_dump(),
            "id": record.id,
            "owner": record.owner,
            "created_at": record.created_at,
            "last_successful_time": max(finished, default=None),
            "runs": runs,
        }
    )
    return resource.to_json_dict()


async def _save(
    scheduler: Scheduler, record: ScheduleRecord, spec: ScheduleSpec, state: ScheduleState
) -> dict[str, Any]:
    saved = await scheduler.store.save_schedule(record.id, spec, state, record.version)
    if saved is None:  # changed by the scheduler meanwhile: apply to the fresh row
        fresh = await _owned(scheduler, record.id, None)
        saved = await scheduler.store.save_schedule(fresh.id, spec, fresh.state, fresh.version)
        if saved is None:
            raise NotFound(f"schedule {record.id} not found", reason="ScheduleNotFound")
    return await _resource(scheduler, saved)


@router.post(
    SCHEDULES_ROUTE,
    status_code=201,
    response_model=ScheduleResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="Create a schedule: the template runs as an export at every cron slot",
)
async def create_schedule(
    spec: ScheduleSpec, principal: PrincipalDep, context: ContextDep, scheduler: SchedulerDep
) -> Response:
    _check_template(context, spec)
    now = scheduler.clock()
    next_slot = spec.timetable.next_after(now)
    record = ScheduleRecord(
        id=new_schedule_id(),
        owner=principal.sub,
        spec=spec,
        state=ScheduleState(next_schedule_time=next_slot),
        created_at=now,
        updated_at=now,
    )
    await scheduler.store.create_schedule(record)
    location = context.absolute(f"{SCHEDULES_ROUTE}/{record.id}")
    body = await _resource(scheduler, record)
    return JSONResponse(body, status_code=201, headers={"Location": location})


@router.get(
    SCHEDULES_ROUTE,
    response_model=ScheduleList,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="The caller's schedules (everyone's with the admin scope), oldest first",
)
async def list_schedules(
    principal: PrincipalDep, protection: ProtectionDep, scheduler: SchedulerDep
) -> Any:
    records = await scheduler.store.list_schedules(protection.admin_or(principal))
    return {"items": [await _resource(scheduler, record) for record in records]}


@router.get(
    f"{SCHEDULES_ROUTE}/{{schedule_id}}",
    response_model=ScheduleResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
)
async def get_schedule(
    schedule_id: str, principal: PrincipalDep, protection: ProtectionDep, scheduler: SchedulerDep
) -> Any:
    record = await _owned(scheduler, schedule_id, protection.admin_or(principal))
    return await _resource(scheduler, record)


@router.put(
    f"{SCHEDULES_ROUTE}/{{schedule_id}}",
    response_model=ScheduleResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="Replace a schedule's spec; its history and last slot are kept",
)
async def update_schedule(
    schedule_id: str,
    spec: ScheduleSpec,
    principal: PrincipalDep,
    context: ContextDep,
    protection: ProtectionDep,
    scheduler: SchedulerDep,
) -> Any:
    record = await _owned(scheduler, schedule_id, protection.admin_or(principal))
    _check_template(context, spec)
    state = record.state.model_copy(
        update={"next_schedule_time": spec.timetable.next_after(scheduler.clock())}
    )
    return await _save(scheduler, record, spec, state)


@router.delete(
    f"{SCHEDULES_ROUTE}/{{schedule_id}}",
    status_code=204,
    responses=_PROBLEMS,
    summary="Delete a schedule and its history (its exports stay)",
)
async def delete_schedule(
    schedule_id: str, principal: PrincipalDep, protection: ProtectionDep, scheduler: SchedulerDep
) -> Response:
    record = await _owned(scheduler, schedule_id, protection.admin_or(principal))
    await scheduler.store.delete_schedule(record.id)
    return Response(status_code=204)


async def _suspend(
    schedule_id: str, suspend: bool, principal: Any, protection: Any, scheduler: Scheduler
) -> Any:
    record = await _owned(scheduler, schedule_id, protection.admin_or(principal))
    spec = record.spec.model_copy(update={"suspend": suspend})
    return await _save(scheduler, record, spec, record.state)


@router.post(
    f"{SCHEDULES_ROUTE}/{{schedule_id}}/pause",
    response_model=ScheduleResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="Pause: no slot runs until resumed (sets suspend)",
)
async def pause_schedule(
    schedule_id: str, principal: PrincipalDep, protection: ProtectionDep, scheduler: SchedulerDep
) -> Any:
    return await _suspend(schedule_id, True, principal, protection, scheduler)


@router.post(
    f"{SCHEDULES_ROUTE}/{{schedule_id}}/resume",
    response_model=ScheduleResource,
    response_model_exclude_none=True,
    responses=_PROBLEMS,
    summary="Resume: the latest slot missed while paused runs if startingDeadlineSeconds allows",
)
async def resume_schedule(
    schedule_id: str, principal: PrincipalDep, protection: ProtectionDep, scheduler: SchedulerDep
) -> Any:
    return await _suspend(schedule_id, False, principal, protection, scheduler)


@router.post(
    f"{SCHEDULES_ROUTE}/{{schedule_id}}/run",
    status_code=202,
    response_model=RunResource,
    response_model_exclude_none=True,
    responses={**_PROBLEMS, 402: _PROBLEMS[422], 503: _PROBLEMS[422]},
    summary="Run now: one export from the template at once (charged like any export)",
)
async def run_schedule_now(
    schedule_id: str, principal: PrincipalDep, protection: ProtectionDep, scheduler: SchedulerDep
) -> Any:
    record = await _owned(scheduler, schedule_id, protection.admin_or(principal))
    run = await scheduler.run_now(record)
    views = await scheduler.views(record)
    return JSONResponse(_run(run, views).to_json_dict(), status_code=202)
