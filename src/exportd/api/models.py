"""Response bodies of the HTTP API (request bodies are :mod:`exportd.contract.spec` models).

The seed responses of ``POST /export`` are exact: ``{"status":"success","url":...}``,
``{"status":"success","message":...}``, or ``{"status":"accepted","id":...,"statusUrl":...}``;
no other field may appear in them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from exportd.contract.spec import (
    CamelModel,
    Condition,
    ExportErrorInfo,
    ExportFormat,
    Phase,
    ReturnType,
    VariableValue,
)

EMAIL_SENT_MESSAGE = "The file has been sent to the provided email."


class SyncUrlResponse(CamelModel):
    status: Literal["success"] = "success"
    url: str


class SyncEmailResponse(CamelModel):
    status: Literal["success"] = "success"
    message: str = EMAIL_SENT_MESSAGE


class AcceptedResponse(CamelModel):
    status: Literal["accepted"] = "accepted"
    id: str
    status_url: str


class ExportResource(CamelModel):
    """One export as ``/v1/exports`` shows it: the order, its phase, and a fresh link."""

    id: str
    type: str
    format: ExportFormat
    file_name: str
    return_type: ReturnType
    variables: dict[str, VariableValue]
    phase: Phase
    queue_position: int | None = None
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    attempts: int = 0
    url: str | None = None
    expires_at: datetime | None = None
    metadata_url: str | None = Field(
        None,
        description="CSV in the default header layout: a link to its JSON sidecar holding the "
        "request and completion times (requestedAt, completedAt, rows, sha256).",
    )
    requested_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: ExportErrorInfo | None = None
    delivered: bool | None = None  # returnType email: whether the e-mail was sent
    conditions: list[Condition] | None = None  # e.g. Delivered, with its reason
    status_url: str


class ExportList(CamelModel):
    items: list[ExportResource]
    next_cursor: str | None = None


class ExportTypeList(CamelModel):
    items: list[dict[str, Any]]


class FieldProblem(CamelModel):
    field: str
    pointer: str
    message: str


class Problem(CamelModel):
    """RFC 9457 problem details, with ``reason`` and, for 422, the fields at fault."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    reason: str | None = None
    errors: list[FieldProblem] | None = None
    export_id: str | None = None
    next_credit_at: datetime | None = None  # 402: when the next credit arrives


class Health(CamelModel):
    status: str
