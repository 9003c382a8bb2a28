"""The one export contract shared by the API, the ExportRequest custom resource and the exporter.

The API validates a request body into :class:`ExportRequestBody`, stamps it into an
:class:`ExportSpec` (id, requester, request time), and hands that spec to a backend. The same spec
is the ``spec`` of an ExportRequest CR and the input of ``python -m exportd.exporter``. Progress and
outcome travel back as :class:`ExportStatus`. All JSON uses camelCase field names.

Phases (``Phase``):

- ``Pending``: accepted and recorded, not yet considered for admission.
- ``Queued``: waiting for a free slot (global or per-requester limit); ``queuePosition`` says where.
- ``Running``: an exporter process (or Job) is working on it; ``rows`` grows as it goes.
- ``Succeeded``: the file is stored at its final key; ``url`` (or the e-mail) delivers it.
- ``Failed``: it stopped for good; ``error.reason`` and ``error.message`` say why.
- ``Cancelled``: the requester cancelled it; no file was published.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from exportd.contract.addresses import EmailAddress

FILE_NAME_MAX = 200
_FILE_NAME_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")
EXPORT_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class ExportFormat(StrEnum):
    XLSX = "xlsx"
    CSV = "csv"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]


_CONTENT_TYPES = {
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.CSV: "text/csv; charset=utf-8",
}


class ReturnType(StrEnum):
    URL = "url"
    EMAIL = "email"


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


def _check_file_name(name: str) -> str:
    if _FILE_NAME_FORBIDDEN.search(name):
        raise ValueError("must not contain path separators or control characters")
    if name.startswith("."):
        raise ValueError("must not start with a dot")
    if name != name.strip():
        raise ValueError("must not start or end with white space")
    if PurePosixPath(name).suffix.lower().lstrip(".") not in {f.value for f in ExportFormat}:
        raise ValueError("must end in .xlsx or .csv")
    return name


FileName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=FILE_NAME_MAX),
    AfterValidator(_check_file_name),
]
ExportTypeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
VariableValue = str | int | float | bool | None
VariableKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class CamelModel(BaseModel):
    """Base of every contract model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def format_of(file_name: str) -> ExportFormat:
    return ExportFormat(PurePosixPath(file_name).suffix.lower().lstrip("."))


class ExportRequestBody(CamelModel):
    """What a client sends: the seed contract of ``POST /export`` and ``POST /v1/exports``."""

    type: ExportTypeName
    format: ExportFormat | None = None
    return_type: ReturnType = ReturnType.URL
    file_name: FileName
    variables: dict[VariableKey, VariableValue] = Field(default_factory=dict, max_length=64)
    email: EmailAddress | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        inferred = format_of(self.file_name)
        if self.format is not None and self.format != inferred:
            raise ValueError(f"fileName extension .{inferred} does not match format {self.format}")
        if self.return_type is ReturnType.EMAIL and self.email is None:
            raise ValueError("email is required when returnType is email")
        return self

    @property
    def resolved_format(self) -> ExportFormat:
        return self.format or format_of(self.file_name)


def new_export_id() -> str:
    """An id that is also a valid Kubernetes object name (lowercase, <= 63 characters)."""
    return f"exp-{uuid.uuid4().hex[:20]}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class ExportSpec(CamelModel):
    """The whole order for one export: the request plus who asked, when, and under which id."""

    id: Annotated[str, StringConstraints(pattern=EXPORT_ID_PATTERN)]
    type: ExportTypeName
    format: ExportFormat
    return_type: ReturnType = ReturnType.URL
    file_name: FileName
    variables: dict[VariableKey, VariableValue] = Field(default_factory=dict)
    email: EmailAddress | None = None
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    requested_at: datetime
    cancel: bool = False

    @classmethod
    def from_request(
        cls,
        body: ExportRequestBody,
        *,
        requested_by: str,
        export_id: str | None = None,
        requested_at: datetime | None = None,
        cancel: bool = False,
    ) -> ExportSpec:
        """The order for ``body`` (an API body or a CR's spec): a new id unless one is given,
        requested now unless a time is given."""
        return cls(
            id=new_export_id() if export_id is None else export_id,
            type=body.type,
            format=body.resolved_format,
            return_type=body.return_type,
            file_name=body.file_name,
            variables=dict(body.variables),
            email=body.email,
            requested_by=requested_by,
            requested_at=requested_at or utc_now(),
            cancel=cancel,
        )

    @property
    def object_key(self) -> str:
        """Where the finished file lives in storage: one key per export, so retries overwrite
        nothing and a second run finds the object already there."""
        return f"exports/{self.id}/{self.file_name}"


# A CSV in the default `header` layout has its times in a JSON object beside it
# (exportd.exporter.sidecar); housekeeping deletes it with the file, the API links to it.
CSV_SIDECAR_SUFFIX = ".meta.json"


def csv_sidecar_key(object_key: str) -> str:
    return f"{object_key}{CSV_SIDECAR_SUFFIX}"


class ExportErrorInfo(CamelModel):
    reason: str
    message: str


DELIVERED = "Delivered"  # the condition type an e-mail export's delivery is recorded under


class Condition(CamelModel):
    """One Kubernetes-style condition of an export, e.g. ``Delivered`` for an e-mail:
    ``status`` True, False or Unknown, with a CamelCase ``reason``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""


class ExportResult(CamelModel):
    """What the exporter reports when a file is stored (its JSON result line)."""

    rows_read: int
    rows_written: int
    bytes: int
    sha256: str
    object_key: str
    sheets: int = 1
    started_at: datetime
    completed_at: datetime
    created: bool = True  # False when a previous run had already stored this export's file
    delivered: bool | None = None  # returnType email: sent (None: another run owns it)
    conditions: list[Condition] = Field(default_factory=list)  # the Delivered condition


class ExportStatus(CamelModel):
    """Where an export stands; the ``status`` of an ExportRequest CR has the same fields."""

    phase: Phase = Phase.PENDING
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    object_key: str | None = None
    url: str | None = None
    expires_at: datetime | None = None
    queue_position: int | None = None
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: ExportErrorInfo | None = None
    delivered: bool | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def evolve(self, **changes: Any) -> ExportStatus:
        """A copy with some fields changed, validated again (status objects are immutable)."""
        return ExportStatus.model_validate({**self.model_dump(), **changes})
