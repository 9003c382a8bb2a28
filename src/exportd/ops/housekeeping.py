"""Housekeeping: bring storage and the state store to what they should hold *now*.

Design question Q6 (docs/design-answers.md): the work is phrased as "delete everything that has
expired by now", never "process the last hour", so a missed or late run catches up by itself; and
every step is idempotent or conditional, so two runs at once (two API replicas, a manual run
beside the timer) are harmless and count each item once:

- a finished export's **file** past ``file_retention_seconds`` (from its completion) is deleted
  from storage, then the record forgets its object key (a compare-and-set on the record's
  version, so no new link is issued and only the run whose write succeeds counts it);
- a finished **record** past ``record_retention_seconds`` is deleted with its file and e-mail
  marker (storage deletes of missing objects succeed; the record is deleted only if still at the
  version this run read);
- a **stuck** export (Running, but no live exporter process and no status change for
  ``stuck_after_seconds``) is failed with reason ``Stuck`` (again compare-and-set);
- incomplete uploads older than a day are aborted, expired idempotency keys purged.

In embedded mode :func:`run_periodically` is a background task of ``exportd serve``; the
Kubernetes operator has its own timer (:mod:`exportd.operator.housekeeping`) over
ExportRequests, built on :func:`retention_action`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from exportd.contract.spec import ExportErrorInfo, Phase, csv_sidecar_key, utc_now
from exportd.ops import metrics
from exportd.settings import CommonSettings
from exportd.storage.base import Storage
from exportd.store.base import ExportRecord, PageCursor, StateStore
from exportd.store.outbox import ResultOutbox

log = logging.getLogger(__name__)
STALE_UPLOAD_SECONDS = 24 * 3600
LEFTOVER_AGE_SECONDS = 3600  # older than any publish in progress
PAGE_SIZE = 100
MARKER_NAME = ".delivered-email"  # exportd.delivery.by_email's claim marker, next to the file
IsLive = Callable[[ExportRecord], bool]


class RetentionAction(enum.Enum):
    KEEP = "keep"
    DELETE_FILE = "delete_file"
    DELETE_RECORD = "delete_record"


def retention_action(
    finished_at: datetime, has_file: bool, now: datetime, settings: CommonSettings
) -> RetentionAction:
    """What is due for a finished export: the whole record, only its file, or nothing."""
    age = now - finished_at
    if age >= timedelta(seconds=settings.record_retention_seconds):
        return RetentionAction.DELETE_RECORD
    if has_file and age >= timedelta(seconds=settings.file_retention_seconds):
        return RetentionAction.DELETE_FILE
    return RetentionAction.KEEP


def keys_to_delete(action: RetentionAction, export_id: str, object_key: str | None) -> list[str]:
    """What an expiry removes from storage: the file (and a CSV's times sidecar, if any); with
    the record, also the e-mail claim marker (kept as long as the record, so the at-most-once
    e-mail stays at most once)."""
    keys = [object_key, csv_sidecar_key(object_key)] if object_key else []
    if action is RetentionAction.DELETE_RECORD:
        keys.append(f"exports/{export_id}/{MARKER_NAME}")
    return keys


@dataclass
class HousekeepingReport:
    files_deleted: int = 0
    records_deleted: int = 0
    stuck_failed: int = 0
    uploads_aborted: int = 0
    keys_purged: int = 0
    leftovers_removed: int = 0
    errors: int = 0


def exporter_alive(record: ExportRecord) -> bool:
    """Whether the record's pid is alive and is an exporter working on this export (a reused
    pid belongs to another program and does not count)."""
    if record.pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"exportd.exporter" in cmdline and f"{record.id}.json".encode() in cmdline


def remove_leftovers(
    settings: CommonSettings, keep: Collection[str], older_than_seconds: float
) -> int:
    """Remove what killed exporters and APIs left on disk: work directories under
    ``DATA_DIR/tmp`` (named ``<export id>.*``), staged ``.part`` files of local storage and
    export folders left empty. Entries of the exports in ``keep`` (running now) and entries
    changed within ``older_than_seconds`` stay; how many were removed."""
    cutoff = time.time() - older_than_seconds
    removed = 0
    temp_root = settings.data_dir / "tmp"
    for entry in _children(temp_root):
        if entry.name.split(".", 1)[0] in keep or _newer(entry, cutoff):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if settings.storage.kind != "local":
        return removed
    exports_root = (settings.storage.root or settings.data_dir / "files") / "exports"
    for folder in _children(exports_root):
        if not folder.is_dir() or folder.name in keep:
            continue
        folder_old = not _newer(folder, cutoff)  # before an unlink below touches it
        for staged in folder.glob(".*.part"):
            if not _newer(staged, cutoff):
                staged.unlink(missing_ok=True)
                removed += 1
        if folder_old and not any(folder.iterdir()):
            with contextlib.suppress(OSError):  # someone published into it just now
                folder.rmdir()
                removed += 1
    return removed


def _children(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def _newer(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime > cutoff
    except FileNotFoundError:
        return True  # gone already: nothing to remove


class Housekeeper:
    """One pass over the state store and storage. ``is_live`` says whether a Running export
    still has its process (the local runner knows; a standalone run asks the process table)."""

    def __init__(
        self,
        settings: CommonSettings,
        store: StateStore,
        storage: Storage,
        *,
        is_live: IsLive = exporter_alive,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.is_live = is_live
        self.on_change = on_change
        self.outbox = ResultOutbox.of_data_dir(settings.data_dir)

    async def run(self, now: datetime | None = None) -> HousekeepingReport:
        now = now or utc_now()
        started = time.perf_counter()
        report = HousekeepingReport()
        try:
            await self._expire_finished(now, report)
            await self._fail_stuck(now, report)
            await self._storage_and_keys(now, report)
        except Exception:
            metrics.HOUSEKEEPING_RUNS.labels(outcome="failure").inc()
            log.exception("housekeeping failed")
            raise
        finally:
            metrics.HOUSEKEEPING_DURATION.observe(time.perf_counter() - started)
        outcome = "failure" if report.errors else "success"
        metrics.HOUSEKEEPING_RUNS.labels(outcome=outcome).inc()
        if not report.errors:
            metrics.HOUSEKEEPING_LAST_SUCCESS.set(time.time())
        log.info("housekeeping done: %s", report)
        return report

    # -- finished exports -------------------------------------------------------------------

    async def _expire_finished(self, now: datetime, report: HousekeepingReport) -> None:
        youngest = min(self.settings.file_retention_seconds, self.settings.record_retention_seconds)
        created_before = now - timedelta(seconds=youngest)
        cursor: PageCursor | None = None
        while True:
            page = await self.store.list_finished(created_before, PAGE_SIZE, cursor)
            for record in page:
                await self._expire_one(record, now, report)
            if len(page) < PAGE_SIZE:
                return
            cursor = PageCursor.after(page[-1])

    async def _expire_one(
        self, record: ExportRecord, now: datetime, report: HousekeepingReport
    ) -> None:
        finished_at = record.status.completed_at or record.updated_at
        has_file = record.status.object_key is not None
        action = retention_action(finished_at, has_file, now, self.settings)
        if action is RetentionAction.KEEP:
            return
        object_key = record.status.object_key or record.spec.object_key
        keys = keys_to_delete(action, record.id, object_key)
        if not await self._delete_objects(keys, report):
            return  # the record keeps pointing at its file until the file is really gone
        if action is RetentionAction.DELETE_RECORD:
            if await self.store.delete_finished(record.id, record.version):
                report.records_deleted += 1
                metrics.HOUSEKEEPING_ITEMS.labels(action="record_deleted").inc()
            return
        expired = record.status.evolve(object_key=None, url=None, expires_at=None)
        if await self.store.update_status(record.id, expired, expected_version=record.version):
            report.files_deleted += 1
            metrics.HOUSEKEEPING_ITEMS.labels(action="file_deleted").inc()

    async def _delete_objects(self, keys: list[str], report: HousekeepingReport) -> bool:
        try:
            for key in keys:
                await asyncio.to_thread(self.storage.delete, key)
        except Exception as exc:
            report.errors += 1
            metrics.STORAGE_FAILURES.labels(operation="delete").inc()
            log.warning("housekeeping could not delete %s: %s", keys, exc)
            return False
        return True

    # -- stuck exports ----------------------------------------------------------------------

    async def _fail_stuck(self, now: datetime, report: HousekeepingReport) -> None:
        quiet_since = now - timedelta(seconds=self.settings.stuck_after_seconds)
        for record in await self.store.list_by_phase([Phase.RUNNING]):
            if record.updated_at > quiet_since or self.is_live(record):
                continue
            if self.outbox.has(record.id):  # finished; the runner records it when it can
                continue
            quiet = int((now - record.updated_at).total_seconds())
            error = ExportErrorInfo(
                reason="Stuck",
                message=f"Running with no live exporter process and no change for {quiet} s",
            )
            failed = record.status.evolve(phase=Phase.FAILED, error=error, completed_at=now)
            updated = await self.store.update_status(
                record.id, failed, pid=None, expected_version=record.version
            )
            if updated is None:
                continue  # it changed meanwhile: another run or the runner got there first
            report.stuck_failed += 1
            metrics.HOUSEKEEPING_ITEMS.labels(action="stuck_failed").inc()
            metrics.observe_finished(updated.spec, updated.status)
            log.warning("export %s failed as stuck: %s", record.id, error.message)
            if self.on_change is not None:
                self.on_change(record.id)

    # -- storage and store upkeep -----------------------------------------------------------

    async def _storage_and_keys(self, now: datetime, report: HousekeepingReport) -> None:
        running = [r.id for r in await self.store.list_by_phase([Phase.RUNNING])]
        report.leftovers_removed += await asyncio.to_thread(
            remove_leftovers, self.settings, set(running), LEFTOVER_AGE_SECONDS
        )
        try:
            aborted = await asyncio.to_thread(
                self.storage.abort_stale_uploads, STALE_UPLOAD_SECONDS
            )
        except Exception as exc:
            report.errors += 1
            metrics.STORAGE_FAILURES.labels(operation="abort_uploads").inc()
            log.warning("housekeeping could not abort stale uploads: %s", exc)
        else:
            report.uploads_aborted += aborted
            metrics.HOUSEKEEPING_ITEMS.labels(action="upload_aborted").inc(aborted)
        report.keys_purged += await self.store.purge_expired_keys(now)


async def run_periodically(housekeeper: Housekeeper, interval: float) -> None:
    """Run now and then every ``interval`` seconds until cancelled; a failed run is logged
    and the next one tries again (the work left over is still due then)."""
    while True:
        with contextlib.suppress(Exception):  # already logged and counted by run()
            await housekeeper.run()
        await asyncio.sleep(interval)
