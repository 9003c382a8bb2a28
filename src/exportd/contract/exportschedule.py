"""The ExportSchedule custom resource: its names, its spec and status, and the runs it makes.

Same group and version as ExportRequest (:mod:`exportd.contract.exportrequest`). Each run is an
ordinary
ExportRequest named by :func:`exportd.contract.schedule.run_name`, labelled with the schedule's
name and
owned by the schedule (a controller owner reference, so deleting the schedule deletes its runs
on a cluster). Its ``spec`` is the template plus ``requestedAt``: the slot's time. The requester
is the template's ``requestedBy`` or, as for any request applied by hand, ``kubernetes:<ns>``.
It imports no Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import StringConstraints

from exportd.contract import exportrequest as er
from exportd.contract.schedule import RunRecord, ScheduleRules, run_name
from exportd.contract.spec import ExportRequestBody, Phase

KIND = "ExportSchedule"
PLURAL = "exportschedules"
SINGULAR = "exportschedule"
LABEL_SCHEDULE = f"{er.GROUP}/schedule"
CONDITION_READY = "Ready"


class RunTemplate(ExportRequestBody):
    """``spec.template``: an ExportRequest's spec without the per-run fields."""

    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None


class ExportScheduleSpec(ScheduleRules):
    template: RunTemplate


def schedule_spec_of(body: Mapping[str, Any]) -> ExportScheduleSpec:
    """The CR's spec, validated (pydantic ``ValidationError`` naming the bad field)."""
    return ExportScheduleSpec.model_validate(body.get("spec") or {})


def run_body(
    schedule: Mapping[str, Any], spec: ExportScheduleSpec, slot: datetime
) -> dict[str, Any]:
    """The ExportRequest of ``schedule``'s run at ``slot``, ready to create."""
    meta = er.metadata(schedule)
    name = str(meta.get("name"))
    request = {**spec.template.to_json_dict(), "requestedAt": er.rfc3339(slot)}
    owner = {
        "apiVersion": er.API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": er.API_VERSION,
        "kind": er.KIND,
        "metadata": {
            "name": run_name(name, slot),
            "namespace": meta.get("namespace"),
            "labels": {LABEL_SCHEDULE: name},
            "ownerReferences": [owner],
        },
        "spec": request,
    }


def is_run_of(schedule: Mapping[str, Any], request: Mapping[str, Any]) -> bool:
    """Whether ``request`` is one of ``schedule``'s runs (by owner uid; the label is only a
    filter for the apiserver)."""
    uid = er.metadata(schedule).get("uid")
    owners = er.metadata(request).get("ownerReferences") or []
    return any(o.get("kind") == KIND and o.get("uid") == uid for o in owners)


def run_record(request: Mapping[str, Any]) -> RunRecord:
    return RunRecord(
        name=str(er.metadata(request).get("name")),
        slot=er.requested_at_of(request),
        phase=er.status_of(request).phase or Phase.PENDING,
    )


def last_successful_time(runs: Sequence[Mapping[str, Any]], previous: str | None) -> str | None:
    """The latest completion time of a succeeded run (kept when those runs are pruned)."""
    times = [
        status.completed_at
        for status in (er.status_of(run) for run in runs)
        if status.phase is Phase.SUCCEEDED and status.completed_at
    ]
    moments = [m for m in (er.parse_time(t) for t in [*times, previous]) if m is not None]
    return er.rfc3339(max(moments)) if moments else None


def active_refs(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    refs = []
    for run in runs:
        if run_record(run).phase.is_terminal:
            continue
        meta = er.metadata(run)
        refs.append(
            {
                "apiVersion": er.API_VERSION,
                "kind": er.KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            }
        )
    return sorted(refs, key=lambda ref: str(ref["name"]))
