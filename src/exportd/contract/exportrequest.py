"""The ExportRequest custom resource: the one place that knows its group, names and layout.

The API (Kubernetes backend), the operator and the exporter's status reporter all meet here and
nowhere else. This module turns an :class:`~exportd.contract.spec.ExportSpec` into a CR body and
back, and
a CR's ``status`` into an :class:`~exportd.contract.spec.ExportStatus`. It imports no Kubernetes
client.

Who writes what in ``status`` (merge patches on the status subresource, so writers never clash):

- the operator: ``phase``, ``format`` (effective), ``duration``, ``queuePosition``,
  ``attempts``, ``jobName``, ``startedAt``, ``completedAt``, ``rows``, ``bytes``, ``sha256``,
  ``objectKey``, ``url``, ``expiresAt``,
  ``delivered``, ``reason``, ``message``, ``observedGeneration``, ``conditions``;
- the exporter (inside the Job): ``progress`` (rows so far), ``result`` (what it stored) with
  ``resultSignature`` (see :mod:`exportd.security.reports`) and ``lastError`` (why its last attempt
  failed). The operator turns these into the fields above.

The CR's name is the export id; ``spec`` is the API body plus ``requestedBy``, ``requestedAt`` and
``cancel``. A CR written by hand (GitOps) may leave out ``requestedBy`` (its requester is then
``kubernetes:<namespace>``) and ``requestedAt`` (its creation time counts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from exportd.contract.errors import ExportdError
from exportd.contract.spec import (
    DELIVERED,
    ExportErrorInfo,
    ExportRequestBody,
    ExportResult,
    ExportSpec,
    ExportStatus,
    Phase,
)
from exportd.contract.spec import Condition as SpecCondition

GROUP = "exportd.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ExportRequest"
PLURAL = "exportrequests"
SINGULAR = "exportrequest"
SHORT_NAMES = ("exr",)

LABEL_REQUESTER = f"{GROUP}/requester"
LABEL_EXPORT = f"{GROUP}/export"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
GITOPS_REQUESTER_PREFIX = "kubernetes:"
# The API labels what it creates (LABEL_MANAGED_BY) with this: housekeeping deletes only those;
# a request applied from Git stays (a GitOps tool would only re-create it and run it again).
API_MANAGER = "exportd-api"
CONDITION_EXPIRED = "Expired"

CONDITION_ADMITTED = "Admitted"
CONDITION_FINISHED = "Finished"
# The CR's conditions the API shows on the export (the others describe the resource).
EXPORT_CONDITIONS = frozenset({DELIVERED})
CONDITION_STATUSES = frozenset({"True", "False", "Unknown"})


def rfc3339(moment: datetime, *, precise: bool = False) -> str:
    """Kubernetes' timestamp form: UTC with a ``Z``; seconds unless ``precise``."""
    spec = "microseconds" if precise else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def requester_label(requested_by: str) -> str:
    """A label value for a requester: any string maps to 40 hex characters (labels allow no
    ``@`` and at most 63 characters), so listing by requester is one label selector."""
    return hashlib.sha256(requested_by.encode()).hexdigest()[:40]


class ExportRequestSpec(ExportRequestBody):
    """``spec`` of the CR: the API body plus who asked, when, whether to stop, and (optional)
    how long after finishing the request itself is deleted."""

    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None
    requested_at: datetime | None = None
    cancel: bool = False
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None


def expired_condition(expired_at: str) -> dict[str, Any]:
    """The ``Expired`` condition of a request whose file housekeeping deleted at ``expired_at``."""
    return {
        "type": CONDITION_EXPIRED,
        "status": "True",
        "reason": "FileRetention",
        "message": "the file was deleted after its retention; the request is kept",
        "lastTransitionTime": expired_at,
    }


def created_by_api(body: Mapping[str, Any]) -> bool:
    labels = metadata(body).get("labels") or {}
    return bool(labels.get(LABEL_MANAGED_BY) == API_MANAGER)


def ttl_after_finished(body: Mapping[str, Any]) -> int | None:
    """``spec.ttlSecondsAfterFinished`` when it is a whole number of seconds, else None."""
    value = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class _StatusModel(BaseModel):
    """Reads what the cluster holds; unknown keys are ignored so a newer writer breaks nothing."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Progress(_StatusModel):
    rows: int = 0
    updated_at: str | None = None


class ReportedError(_StatusModel):
    reason: str
    message: str = ""
    retriable: bool = False


class Condition(_StatusModel):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class RequestStatus(_StatusModel):
    """The CR's ``status`` as stored (all fields optional: a new CR has none)."""

    phase: Phase | None = None
    format: str | None = None
    duration: str | None = None
    queue_position: int | None = None
    attempts: int | None = None
    job_name: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    object_key: str | None = None
    url: str | None = None
    expires_at: str | None = None
    delivered: bool | None = None
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    expired_at: str | None = None
    progress: Progress | None = None
    result: ExportResult | None = None
    result_signature: str | None = None
    last_error: ReportedError | None = None


def metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = body.get("metadata") or {}
    return meta


def request_spec_of(body: Mapping[str, Any]) -> ExportRequestSpec:
    """The CR's spec, validated (pydantic ``ValidationError`` when it is not a valid order)."""
    return ExportRequestSpec.model_validate(body.get("spec") or {})


def requester_of(body: Mapping[str, Any]) -> str:
    spec = body.get("spec") or {}
    requested_by = spec.get("requestedBy")
    if isinstance(requested_by, str) and requested_by:
        return requested_by
    return f"{GITOPS_REQUESTER_PREFIX}{metadata(body).get('namespace', '')}"


def requested_at_of(body: Mapping[str, Any]) -> datetime:
    """When the export was asked for: ``spec.requestedAt``, else the CR's creation time."""
    spec = body.get("spec") or {}
    stamp = parse_time(spec.get("requestedAt")) or parse_time(
        metadata(body).get("creationTimestamp")
    )
    return stamp or datetime.fromtimestamp(0, UTC)


def export_spec_from_body(body: Mapping[str, Any]) -> ExportSpec:
    """CR -> the exporter's order. The id is the CR's name."""
    request = request_spec_of(body)
    return ExportSpec.from_request(
        request,
        export_id=metadata(body).get("name", ""),
        requested_by=requester_of(body),
        requested_at=requested_at_of(body),
        cancel=request.cancel,
    )


def body_from_export_spec(
    spec: ExportSpec, namespace: str, *, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The order -> a CR body ready to create (no status: the status subresource ignores it)."""
    # The CR's spec is the order without its id: the id is the CR's name.
    request = ExportRequestSpec.model_validate(spec.model_dump(exclude={"id"}))
    spec_json = request.to_json_dict()
    spec_json["requestedAt"] = rfc3339(spec.requested_at, precise=True)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.id,
            "namespace": namespace,
            "labels": {LABEL_REQUESTER: requester_label(spec.requested_by), **(labels or {})},
        },
        "spec": spec_json,
    }


def status_of(body: Mapping[str, Any]) -> RequestStatus:
    return RequestStatus.model_validate(body.get("status") or {})


def export_status_from_body(body: Mapping[str, Any]) -> ExportStatus:
    """CR -> what the API shows. While running, ``rows`` is the exporter's progress."""
    status = status_of(body)
    phase = status.phase or Phase.PENDING
    rows = status.rows
    if rows is None and status.progress is not None:
        rows = status.progress.rows
    error = None
    if phase is Phase.FAILED or (phase is Phase.CANCELLED and status.reason):
        error = ExportErrorInfo(
            reason=status.reason or "Failed", message=status.message or status.reason or ""
        )
    return ExportStatus(
        phase=phase,
        rows=rows,
        bytes=status.bytes,
        sha256=status.sha256,
        object_key=status.object_key,
        url=status.url,
        expires_at=parse_time(status.expires_at),
        queue_position=status.queue_position,
        attempts=status.attempts or 0,
        started_at=parse_time(status.started_at),
        completed_at=parse_time(status.completed_at),
        error=error,
        delivered=status.delivered,
        conditions=[
            SpecCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in status.conditions
            if c.type in EXPORT_CONDITIONS and c.status in CONDITION_STATUSES
        ],
    )


# What the exporter patches (merge patches on the status subresource).


def progress_patch(rows: int, now: datetime) -> dict[str, Any]:
    return {"status": {"progress": {"rows": rows, "updatedAt": rfc3339(now)}}}


def result_patch(result: ExportResult, now: datetime) -> dict[str, Any]:
    patch = progress_patch(result.rows_written, now)
    patch["status"]["result"] = result.to_json_dict()
    return patch


def error_patch(error: ExportdError) -> dict[str, Any]:
    reported = ReportedError(reason=error.reason, message=error.message, retriable=error.retriable)
    return {"status": {"lastError": reported.model_dump(mode="json", by_alias=True)}}
