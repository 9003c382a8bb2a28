"""``exportd backup`` and ``exportd restore``: export records and ExportRequests, to and from a
directory.

Why not only ``pg_dump``: the records are what a user sees in ``GET /v1/exports`` and what the
runner resumes; a backup in the service's own format can be restored into either state store
(SQLite or PostgreSQL, an empty one of a new version, another machine) and read by a person.
In Kubernetes mode the ExportRequests are the source of truth, so they are saved too, as YAML
that ``kubectl apply`` also understands.

A backup is one directory, ``exportd-backup-<UTC time>``, written under a hidden name and renamed
when complete, so a half-written backup is never mistaken for a good one:

- ``manifest.json``: format version, exportd version, time, counts;
- ``exports.jsonl``: one :class:`~exportd.store.base.ExportRecord` per line;
- ``exportrequests.yaml`` (Kubernetes mode): every ExportRequest of the namespace, spec and
  status, without the fields the API server sets (uid, resourceVersion, ...);
- ``schedules.jsonl`` (when there are any): the API's schedules
  (:class:`~exportd.store.schedules.ScheduleRecord`, spec and state; their run history is not
  kept, their runs are among the export records).

Restore never overwrites: a record or request that already exists is left as it is and counted
as skipped, so restoring twice, or into a store that has moved on, is harmless. Restored
ExportRequests get their status back through the status subresource. Credits and idempotency
keys are not part of the backup (take the database's own backup for those; see
docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import yaml

from exportd import __version__
from exportd.contract import exportrequest as er
from exportd.contract.errors import Conflict, InvalidInput
from exportd.contract.spec import Phase, utc_now
from exportd.ops import logs
from exportd.settings import ApiSettings, Backend
from exportd.store.base import ExportRecord, StateStore, store_from_settings
from exportd.store.schedules import ScheduleRecord, ScheduleStore

if TYPE_CHECKING:
    from kubernetes.aio.client import Configuration

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "exports.jsonl"
SCHEDULES = "schedules.jsonl"
REQUESTS = "exportrequests.yaml"
PREFIX = "exportd-backup-"
SERVER_SET_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "ownerReferences",
    "finalizers",  # the operator adds its own; a stale one would block deletion
)


@dataclass
class BackupSummary:
    path: Path
    records: int = 0
    export_requests: int = 0
    schedules: int = 0


@dataclass
class RestoreSummary:
    records_restored: int = 0
    records_skipped: int = 0
    requests_restored: int = 0
    requests_skipped: int = 0
    schedules_restored: int = 0
    schedules_skipped: int = 0
    problems: list[str] = field(default_factory=list)


def backup_name(moment: datetime) -> str:
    return f"{PREFIX}{moment.strftime('%Y%m%dT%H%M%SZ')}"


# -- backup ---------------------------------------------------------------------------------


async def backup(
    settings: ApiSettings,
    destination: Path,
    *,
    store: StateStore | None = None,
    configuration: Configuration | None = None,
) -> BackupSummary:
    """Write a complete backup directory under ``destination`` and return where it is."""
    now = utc_now()
    final = destination / backup_name(now)
    partial = destination / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    summary = BackupSummary(final)
    try:
        summary.records = await _dump_records(settings, partial / RECORDS, store)
        summary.schedules = await _dump_schedules(settings, partial / SCHEDULES, store)
        if settings.backend is Backend.KUBERNETES:
            requests = await list_export_requests(settings, configuration)
            _write_yaml(partial / REQUESTS, [portable(body) for body in requests])
            summary.export_requests = len(requests)
        manifest = {
            "format": FORMAT_VERSION,
            "exportdVersion": __version__,
            "createdAt": now.isoformat(),
            "backend": settings.backend.value,
            "records": summary.records,
            "exportRequests": summary.export_requests,
            "schedules": summary.schedules,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("backup written to %s (%d records)", final, summary.records)
    return summary


async def _dump_records(settings: ApiSettings, path: Path, store: StateStore | None) -> int:
    async with _opened(settings, store) as opened:
        records = await opened.list_by_phase(list(Phase))
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")
    return len(records)


async def _dump_schedules(settings: ApiSettings, path: Path, store: StateStore | None) -> int:
    async with _opened(settings, store) as opened:
        schedules = await opened.list_schedules(None) if isinstance(opened, ScheduleStore) else []
    if schedules:
        path.write_text("".join(s.model_dump_json() + "\n" for s in schedules), encoding="utf-8")
    return len(schedules)


def portable(body: dict[str, Any]) -> dict[str, Any]:
    """An ExportRequest as it can be created again: spec, status, labels, annotations."""
    metadata = {
        key: value
        for key, value in (body.get("metadata") or {}).items()
        if key not in SERVER_SET_METADATA
    }
    kept = {"apiVersion": er.API_VERSION, "kind": er.KIND, "metadata": metadata}
    for part in ("spec", "status"):
        if body.get(part) is not None:
            kept[part] = body[part]
    return kept


def _write_yaml(path: Path, documents: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        yaml.safe_dump_all(documents, handle, sort_keys=False)


# -- restore --------------------------------------------------------------------------------


async def restore(
    settings: ApiSettings,
    source: Path,
    *,
    store: StateStore | None = None,
    configuration: Configuration | None = None,
) -> RestoreSummary:
    """Bring a backup directory back; existing records and requests are left untouched."""
    manifest = _read_manifest(source)
    summary = RestoreSummary()
    async with _opened(settings, store) as opened:
        for record in read_records(source / RECORDS):
            try:
                await opened.create(record)
            except Conflict:
                summary.records_skipped += 1
            else:
                summary.records_restored += 1
        if (source / SCHEDULES).exists() and isinstance(opened, ScheduleStore):
            await _restore_schedules(opened, source / SCHEDULES, summary)
    if manifest.get("exportRequests") and (source / REQUESTS).exists():
        if settings.backend is not Backend.KUBERNETES:
            summary.problems.append(
                "the backup holds ExportRequests; restore them with EXPORTD_BACKEND=kubernetes"
            )
        else:
            documents = list(yaml.safe_load_all((source / REQUESTS).read_text(encoding="utf-8")))
            await restore_export_requests(settings, documents, summary, configuration)
    log.info("restore from %s: %s", source, asdict(summary))
    return summary


async def _restore_schedules(store: ScheduleStore, path: Path, summary: RestoreSummary) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            await store.create_schedule(ScheduleRecord.model_validate_json(line))
        except Conflict:
            summary.schedules_skipped += 1
        else:
            summary.schedules_restored += 1


def _read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{source} is not an exportd backup: {exc}") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise InvalidInput(f"backup format {manifest.get('format')!r} is not supported")
    return manifest


def read_records(path: Path) -> Iterator[ExportRecord]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield ExportRecord.model_validate_json(line)


class _opened:
    """The given store as is, or the configured one, opened for the block and closed after."""

    def __init__(self, settings: ApiSettings, store: StateStore | None) -> None:
        self.given = store
        self.store = store or store_from_settings(settings)

    async def __aenter__(self) -> StateStore:
        if self.given is None:
            await self.store.open()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        if self.given is None:
            await self.store.close()


# -- Kubernetes mode ------------------------------------------------------------------------
# The Kubernetes client is imported only here, when the backend is kubernetes.


async def list_export_requests(
    settings: ApiSettings, configuration: Configuration | None = None
) -> list[dict[str, Any]]:
    from kubernetes.aio.client import ApiClient, CustomObjectsApi

    from exportd.api.backends.kubernetes import load_configuration

    items: list[dict[str, Any]] = []
    async with ApiClient(configuration or await load_configuration()) as client:
        objects = CustomObjectsApi(client)
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"_continue": token} if token else {}
            page = cast(
                dict[str, Any],
                await objects.list_namespaced_custom_object(
                    er.GROUP,
                    er.VERSION,
                    settings.kubernetes_namespace,
                    er.PLURAL,
                    limit=500,
                    **extra,
                ),
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items


async def restore_export_requests(
    settings: ApiSettings,
    documents: list[dict[str, Any]],
    summary: RestoreSummary,
    configuration: Configuration | None = None,
) -> None:
    from kubernetes.aio.client import ApiClient, CustomObjectsApi
    from kubernetes.aio.client.exceptions import ApiException

    from exportd.api.backends.kubernetes import load_configuration

    namespace = settings.kubernetes_namespace
    async with ApiClient(configuration or await load_configuration()) as client:
        objects = CustomObjectsApi(client)
        for document in documents:
            body = {key: value for key, value in document.items() if key != "status"}
            body["metadata"] = {**document["metadata"], "namespace": namespace}
            name = body["metadata"]["name"]
            try:
                await objects.create_namespaced_custom_object(
                    er.GROUP, er.VERSION, namespace, er.PLURAL, body
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                summary.requests_skipped += 1
                continue
            if document.get("status"):
                await objects.patch_namespaced_custom_object_status(
                    er.GROUP, er.VERSION, namespace, er.PLURAL, name, {"status": document["status"]}
                )
            summary.requests_restored += 1


# -- command line ---------------------------------------------------------------------------


def run_command(args: Any, out: IO[str]) -> int:
    """``exportd backup | restore | housekeeping`` (parsed by :mod:`exportd.cli`)."""
    settings = ApiSettings()
    logs.setup_process_logging(settings)
    if args.command == "backup":
        destination = args.to or settings.data_dir / "backups"
        summary = asyncio.run(backup(settings, destination))
        print(summary.path, file=out)
        return 0
    if args.command == "restore":
        restored = asyncio.run(restore(settings, args.source))
        print(json.dumps(asdict(restored)), file=out)
        return 1 if restored.problems else 0
    report = asyncio.run(_housekeeping_once(settings))
    print(json.dumps(asdict(report)), file=out)
    return 1 if report.errors else 0


async def _housekeeping_once(settings: ApiSettings) -> Any:
    """One pass, beside a running server or instead of its timer (cron)."""
    from exportd.ops.housekeeping import Housekeeper
    from exportd.storage import storage_from_settings

    async with _opened(settings, None) as store:
        return await Housekeeper(settings, store, storage_from_settings(settings)).run()
