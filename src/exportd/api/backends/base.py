"""The seam between the HTTP API and whatever runs exports.

The API speaks only to an :class:`ExportBackend`. The embedded backend keeps records in the state
store and runs exporter child processes; the Kubernetes backend creates ExportRequest custom
resources and reads their status. Both honour the same contract, and the API test suite runs
against each through one fixture:

- ``submit`` takes a spec whose variables are already validated against the catalog, records it
  (idempotently by ``spec.id``), and returns its first status.
- ``get``/``list``/``cancel`` take the caller's ``owner`` and raise
  :class:`~exportd.errors.NotFound` for another owner's export, exactly as for a missing one, so
  a caller cannot learn that an id exists.
- ``wait_until_terminal`` sleeps on change notifications (never a polling loop) and returns the
  status when the export is terminal or the timeout passed, whichever comes first.
- ``cancel`` returns once the export is recorded Cancelled (or raises
  :class:`~exportd.errors.Conflict` when it already finished otherwise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime

from exportd.spec import ExportSpec, ExportStatus

LIST_LIMIT_DEFAULT = 20


@dataclass(frozen=True)
class ExportView:
    """What the API may show about one export: its order and where it stands."""

    spec: ExportSpec
    status: ExportStatus
    created_at: datetime

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class ExportViewPage:
    items: list[ExportView] = field(default_factory=list)
    next_cursor: str | None = None


class ExportBackend(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Connect, migrate, resume unfinished work; called once from the app's lifespan."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def ready(self) -> bool:
        """Whether requests can be served now (``/readyz``)."""

    @abstractmethod
    async def submit(self, spec: ExportSpec) -> ExportStatus: ...

    @abstractmethod
    async def get(self, export_id: str, owner: str) -> ExportView: ...

    @abstractmethod
    async def list(
        self, owner: str, limit: int = LIST_LIMIT_DEFAULT, cursor: str | None = None
    ) -> ExportViewPage:
        """The owner's exports, newest first; ``next_cursor`` is ``None`` on the last page."""

    @abstractmethod
    async def cancel(self, export_id: str, owner: str) -> ExportView: ...

    @abstractmethod
    async def wait_until_terminal(self, export_id: str, timeout: float) -> ExportStatus: ...
