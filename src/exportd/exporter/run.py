"""One export from spec to stored file: the exporter's whole job, callable in-process.

The file is built in a private working directory and published to storage only when it is
complete and rows read equal rows written. Whatever happens (failure, cancel, crash of a
dependency), the working directory is removed and nothing appears at the final key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa

from exportd.catalog import Catalog, ExportType
from exportd.errors import Cancelled, PermanentFailure, TransientFailure
from exportd.exporter.delivering import deliver_export
from exportd.exporter.sources import QueryOptions, Source, open_source
from exportd.exporter.writers import ExportMetadata, Writer, WriteSummary, open_writer
from exportd.sampledb import ensure_sample_db
from exportd.settings import ExporterSettings, SourceConfig
from exportd.spec import ExportResult, ExportSpec, utc_now
from exportd.storage import storage_from_settings

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int], None]
CANCEL_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ExportPlan:
    """Everything resolved before any query runs: bad input fails here, before side effects."""

    export_type: ExportType
    params: Mapping[str, Any]
    source: SourceConfig
    metadata: ExportMetadata


def plan_export(spec: ExportSpec, settings: ExporterSettings) -> ExportPlan:
    try:
        catalog = Catalog.load(settings.resolved_catalog_path)
    except (OSError, ValueError) as exc:
        raise PermanentFailure(f"cannot load the catalog: {exc}", reason="CatalogError") from exc
    export_type = catalog.get(spec.type)
    params = catalog.bind(spec.type, dict(spec.variables))
    source = settings.sources.get(export_type.source)
    if source is None:
        raise PermanentFailure(
            f"export type {spec.type!r} names unknown source {export_type.source!r}",
            reason="UnknownSource",
        )
    try:
        ZoneInfo(export_type.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PermanentFailure(
            f"unknown time zone {export_type.timezone!r}", reason="InvalidTimezone"
        ) from exc
    metadata = ExportMetadata(
        export_id=spec.id,
        export_type=spec.type,
        requested_at=spec.requested_at,
        timezone=export_type.timezone,
        enabled=export_type.metadata,
    )
    return ExportPlan(export_type, params, source, metadata)


def run_export(
    spec: ExportSpec,
    settings: ExporterSettings,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ExportResult:
    started_at = utc_now()
    plan = plan_export(spec, settings)
    cancel = cancel or threading.Event()
    storage = storage_from_settings(settings)
    workdir = _make_workdir(settings, spec.id)
    try:
        output = workdir / f"export.{spec.format.value}"
        rows_read, summary, completed_at = _produce(
            spec, plan, settings, output, on_progress, cancel
        )
        if cancel.is_set():
            raise Cancelled("the export was cancelled")
        sha256 = _sha256(output)
        stored = storage.publish(
            output,
            spec.object_key,
            content_type=spec.format.content_type,
            download_name=spec.file_name,
            sha256=sha256,
        )
    except OSError as exc:
        raise TransientFailure(f"local file error: {exc}", reason="FileError") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    delivered, conditions = deliver_export(spec, stored, storage, settings)  # returnType email
    return ExportResult(
        rows_read=rows_read,
        rows_written=summary.rows_written,
        bytes=stored.size,
        sha256=stored.sha256,
        object_key=stored.key,
        sheets=summary.sheets,
        started_at=started_at,
        completed_at=completed_at,
        created=stored.created,
        delivered=delivered,
        conditions=conditions,
    )


def _make_workdir(settings: ExporterSettings, export_id: str) -> Path:
    base = settings.temp_dir or settings.data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{export_id}.", dir=base))


def _open_source(plan: ExportPlan, settings: ExporterSettings) -> Source:
    config = plan.source
    if config.kind == "duckdb" and config.path == settings.sample_db_path:
        ensure_sample_db(config.path)
    return open_source(config)


def _produce(
    spec: ExportSpec,
    plan: ExportPlan,
    settings: ExporterSettings,
    output: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event,
) -> tuple[int, WriteSummary, datetime]:
    options = QueryOptions(
        batch_rows=settings.batch_rows,
        statement_timeout_seconds=plan.export_type.statement_timeout_seconds,
    )
    with _open_source(plan, settings) as source, _CancelWatcher(cancel, source):
        writer = open_writer(spec.format, output, plan.metadata, plan.export_type)
        try:
            batches = source.stream(plan.export_type.query, plan.params, options)
            with _closing(batches):
                rows_read = _copy(batches, writer, plan.export_type.max_rows, on_progress, cancel)
            completed_at = utc_now()
            summary = writer.finish(completed_at)
        except BaseException as exc:
            writer.abort()
            if cancel.is_set() and not isinstance(exc, Cancelled):
                raise Cancelled("the export was cancelled") from exc
            raise
    if summary.rows_written != rows_read:
        raise PermanentFailure(
            f"read {rows_read} rows but wrote {summary.rows_written}", reason="IncompleteExport"
        )
    return rows_read, summary, completed_at


def _copy(
    batches: Iterator[pa.RecordBatch],
    writer: Writer,
    max_rows: int | None,
    on_progress: ProgressCallback | None,
    cancel: threading.Event,
) -> int:
    """Feed every batch to the writer; return the number of rows read."""
    rows_read = 0
    for batch in batches:
        if cancel.is_set():
            raise Cancelled("the export was cancelled")
        rows_read += batch.num_rows
        if max_rows is not None and rows_read > max_rows:
            raise PermanentFailure(
                f"the export has more than its limit of {max_rows} rows", reason="TooManyRows"
            )
        writer.write_batch(batch)
        if on_progress is not None:
            on_progress(rows_read)
    return rows_read


@contextlib.contextmanager
def _closing(batches: Iterator[pa.RecordBatch]) -> Iterator[None]:
    """Close a stream abandoned early, so its query stops before the source closes."""
    try:
        yield
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class _CancelWatcher:
    """Turns a set cancel event into ``source.cancel()`` while a query may be blocking."""

    def __init__(self, cancel: threading.Event, source: Source) -> None:
        self._cancel = cancel
        self._source = source
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cancel-watcher", daemon=True)

    def _watch(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(CANCEL_POLL_SECONDS):
                log.info("cancel requested; cancelling the running query")
                self._source.cancel()
                return

    def __enter__(self) -> _CancelWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
