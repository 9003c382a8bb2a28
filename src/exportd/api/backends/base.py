"""The seam between the HTTP API and whatever runs exports.

The API speaks only to an :class:`ExportBackend`. The embedded backend keeps records in the state
store and runs exporter child processes; the Kubernetes backend creates ExportRequest custom
resources and reads their status. Both honour the same contract, and the API test suite runs
against each through one fixture:

- ``submit`` takes a spec whose variables are already validated against the catalog, records it
  (idempotently by ``spec.id``), and returns its first status.
- ``get``/``list``/``cancel`` take the caller's ``owner`` and raise
  :class:`~exportd.contract.errors.NotFound` for another owner's export, exactly as for a missing
  one, so
  a caller cannot learn that an id exists. ``owner=None`` means any owner: only a caller with
  the admin scope gets there.
- ``record_store``: a backend that keeps its export records in a :class:`StateStore` names it;
  the API then inserts a new export's record in the same transaction as its credit debit and
  idempotency key, and ``submit`` finds the record there and starts it.
- ``wait_until_terminal`` sleeps on change notifications (never a polling loop) and returns the
  status when the export is terminal or the timeout passed, whichever comes first;
  ``wait_for_change`` is the same sleep for any change of status (the SSE stream). Both are
  written once, here: a backend publishes to ``events`` whenever it sees an export change.
- ``in_flight``: a backend whose records are not in the state store counts its unfinished
  exports itself, for the queue limits (otherwise the admission transaction counts them).
- ``settle_with``: a backend whose records are not in the state store reports each export
  that ended, so the API can give its credit back (otherwise the store does it as it records
  the end).
- ``cancel`` returns once the export is recorded Cancelled (or raises
  :class:`~exportd.contract.errors.Conflict` when it already finished otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from exportd.contract.spec import ExportSpec, ExportStatus, Phase
from exportd.store.base import StateStore
from exportd.store.events import RecordEvents

LIST_LIMIT_DEFAULT = 20
Settle = Callable[[str, str, Phase], Awaitable[None]]


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

    def start_admitted(self, spec: ExportSpec) -> None:
        """Start an export whose record the admission transaction has just committed in
        ``record_store``; no I/O, so it cannot fail once the client was charged. Only backends
        with a ``record_store`` are asked."""
        raise NotImplementedError(f"{type(self).__name__} keeps no records in a state store")

    @abstractmethod
    async def get(self, export_id: str, owner: str | None) -> ExportView: ...

    @abstractmethod
    async def list(
        self, owner: str | None, limit: int = LIST_LIMIT_DEFAULT, cursor: str | None = None
    ) -> ExportViewPage:
        """The owner's exports, newest first; ``next_cursor`` is ``None`` on the last page."""

    @abstractmethod
    async def cancel(self, export_id: str, owner: str | None) -> ExportView: ...

    async def in_flight(self, owner: str) -> tuple[int, int] | None:
        """How many exports are unfinished: ``(owner's, everyone's)``; ``None`` when the
        state store holds the records (the admission transaction counts them there)."""
        return None

    def settle_with(self, settle: Settle) -> None:
        """Have ``settle(export_id, requester, phase)`` called once for each export that
        ends. Not needed when the state store holds the records: it settles as it records."""
        return None

    # ---- waiting: sleeps on ``events`` (published by whoever sees a change), re-reads --------

    events: RecordEvents

    async def wait_until_terminal(self, export_id: str, timeout: float) -> ExportStatus:
        view = await self._wait(export_id, None, timeout, lambda v: v.status.phase.is_terminal)
        return view.status

    async def wait_for_change(
        self, export_id: str, owner: str, seen: ExportStatus, timeout: float
    ) -> ExportView:
        """The owner's export once its status differs from ``seen``, or as it is when
        ``timeout`` passed (the event stream)."""
        return await self._wait(export_id, owner, timeout, lambda v: v.status != seen)

    async def _wait(
        self,
        export_id: str,
        owner: str | None,
        timeout: float,
        done: Callable[[ExportView], bool],
    ) -> ExportView:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.events.subscribe(export_id) as changed:
            while True:
                changed.clear()  # before reading: a change after the read wakes us
                view = await self.get(export_id, owner)
                remaining = deadline - loop.time()
                if done(view) or remaining <= 0:
                    return view
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
