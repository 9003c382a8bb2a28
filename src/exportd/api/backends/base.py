"""The seam between the HTTP API and whatever runs exports.

The API speaks only to an :class:`ExportBackend`. The embedded backend keeps records in the state
store and runs exporter child processes; the Kubernetes backend creates ExportRequest custom
resources and reads their status. Both honour the same contract, and the API test suite runs
against each through one fixture:

- ``submit`` takes a spec whose variables are already validated against the catalog, records it
  (idempotently by ``spec.id``), and returns its first status.
- ``get``/``list``/``cancel`` take the caller's ``owner`` and raise
  :class:`~exportd.errors.NotFound` for another owner's export, exactly as for a missing one, so
  a caller cannot learn that an id exists. ``owner=None`` means any owner: only a caller with
  the admin scope gets there.
- ``record_store``: a backend that keeps its export records in a :class:`StateStore` names it;
  the API then inserts a new export's record in the same transaction as its credit debit and
  idempotency key, and ``submit`` finds the record there and starts it.
- ``wait_until_terminal`` sleeps on change notifications (never a polling loop) and returns the
  status when the export is terminal or the timeout passed, whichever comes first.
- ``wait_for_change`` is the same sleep for any change of status (the SSE stream).
- ``cancel`` returns once the export is recorded Cancelled (or raises
  :class:`~exportd.errors.Conflict` when it already finished otherwise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime

from exportd.spec import ExportSpec, ExportStatus
from exportd.store.base import StateStore

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
    @property
    def record_store(self) -> StateStore | None:
        """The state store holding this backend's export records, if it keeps them in one."""
        return None

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
    async def get(self, export_id: str, owner: str | None) -> ExportView: ...

    @abstractmethod
    async def list(
        self, owner: str | None, limit: int = LIST_LIMIT_DEFAULT, cursor: str | None = None
    ) -> ExportViewPage:
        """The owner's exports, newest first; ``next_cursor`` is ``None`` on the last page."""

    @abstractmethod
    async def cancel(self, export_id: str, owner: str | None) -> ExportView: ...

    @abstractmethod
    async def wait_until_terminal(self, export_id: str, timeout: float) -> ExportStatus: ...

    async def wait_for_change(
        self, export_id: str, owner: str, seen: ExportStatus, timeout: float
    ) -> ExportView:
        """The owner's export once its status differs from ``seen``, or as it is when
        ``timeout`` passed; sleeps on change notifications like ``wait_until_terminal``.
        Feeds the export's event stream; a backend without it cannot serve that stream."""
        raise NotImplementedError(f"{type(self).__name__} cannot wait for changes")
