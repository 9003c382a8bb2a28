"""Embedded backend: records in the state store, exports run by the local runner.

One machine, no cluster: SQLite under the data directory, exporter child processes, and the
DuckDB sample database created on first start so the seed request works out of the box.
"""

from __future__ import annotations

import asyncio
import logging

from exportd.api.backends.base import (
    LIST_LIMIT_DEFAULT,
    ExportBackend,
    ExportView,
    ExportViewPage,
)
from exportd.contract.catalog import Catalog
from exportd.contract.errors import Conflict, NotFound
from exportd.contract.spec import ExportSpec, ExportStatus, Phase
from exportd.runner import LocalRunner
from exportd.settings import ApiSettings
from exportd.storage.base import Storage, storage_from_settings
from exportd.store.base import ExportRecord, StateStore, store_from_settings
from exportd.store.events import RecordEvents

log = logging.getLogger(__name__)


class EmbeddedBackend(ExportBackend):
    def __init__(
        self,
        settings: ApiSettings,
        catalog: Catalog,
        *,
        store: StateStore | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or store_from_settings(settings)
        self.events = RecordEvents()
        self.storage = storage or storage_from_settings(settings)
        self.runner = LocalRunner(settings, self.store, self.events, self.storage, catalog)
        self._started = False

    async def start(self) -> None:
        await asyncio.to_thread(self._ensure_sample_db)
        await self.store.open()
        await self.runner.start()
        self._started = True

    def _ensure_sample_db(self) -> None:
        """Create the sample database when the ``sample`` source is the embedded one."""
        from exportd.sample.sampledb import ensure_sample_db

        source = self.settings.sources.get("sample")
        if source is not None and source.kind == "duckdb" and source.path is not None:
            ensure_sample_db(source.path)

    async def stop(self) -> None:
        if self._started:
            await self.runner.stop()
        await self.store.close()
        self._started = False

    async def ready(self) -> bool:
        return self._started and await self.store.ping()

    @property
    def record_store(self) -> StateStore:
        return self.store

    def start_admitted(self, spec: ExportSpec) -> None:
        self.runner.submit(spec.id, spec.requested_by)

    async def submit(self, spec: ExportSpec) -> ExportStatus:
        existing = await self.store.get(spec.id)
        if existing is None:
            try:
                existing = await self.store.create(ExportRecord.new(spec))
            except Conflict:
                existing = await self.store.get(spec.id)
        if existing is None or existing.spec != spec:
            raise Conflict(f"export {spec.id} already exists", reason="AlreadyExists")
        if existing.phase in (Phase.PENDING, Phase.QUEUED):  # recorded, maybe not started yet
            self.runner.submit(spec.id, existing.owner)
        return self.runner.shown_status(existing)

    def _view(self, record: ExportRecord) -> ExportView:
        return ExportView(
            spec=record.spec, status=self.runner.shown_status(record), created_at=record.created_at
        )

    async def _record(self, export_id: str, owner: str | None) -> ExportRecord:
        """``owner=None``: any owner's (the admin scope)."""
        record = await self.store.get(export_id)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(f"no export {export_id!r}", reason="ExportNotFound")
        return record

    async def get(self, export_id: str, owner: str | None) -> ExportView:
        return self._view(await self._record(export_id, owner))

    async def list(
        self, owner: str | None, limit: int = LIST_LIMIT_DEFAULT, cursor: str | None = None
    ) -> ExportViewPage:
        page = await self.store.list_for_owner(owner, limit, cursor)
        return ExportViewPage([self._view(r) for r in page.items], page.next_cursor)

    async def cancel(self, export_id: str, owner: str | None) -> ExportView:
        record = await self._record(export_id, owner)
        if not record.phase.is_terminal:
            await self.runner.cancel(export_id)
            record = await self._record(export_id, owner)
        if record.phase is not Phase.CANCELLED:
            raise Conflict(
                f"export {export_id} already finished as {record.phase}",
                reason="AlreadyFinished",
            )
        return self._view(record)
