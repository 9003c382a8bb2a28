"""One export from spec to stored file: the exporter's whole job, callable in-process.

The file is built in a private working directory and published to storage only when it is
complete and rows read equal rows written. Whatever happens (failure, cancel, crash of a
dependency), the working directory is removed and nothing appears at the final key.

Paths: CSV from PostgreSQL is written by the server's ``COPY`` (:mod:`exportd.exporter.copycsv`);
everything else streams Arrow batches from a source into a writer, PostgreSQL through DuckDB's
scanner (:mod:`exportd.exporter.pgarrow`). Arrow, DuckDB and the writers are imported only by the
path that uses them, so the COPY path's process stays small.
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
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exportd.contract.catalog import Catalog, ExportType
from exportd.contract.errors import Cancelled, PermanentFailure, TransientFailure
from exportd.contract.spec import ExportFormat, ExportResult, ExportSpec, utc_now
from exportd.exporter.cancelwatch import CancelWatcher
from exportd.exporter.delivering import deliver_export
from exportd.exporter.sidecar import has_sidecar, publish_sidecar
from exportd.exporter.writers import ExportMetadata, Writer, WriteSummary, open_writer
from exportd.settings import ExporterSettings, SourceConfig
from exportd.storage import storage_from_settings

if TYPE_CHECKING:
    import pyarrow as pa

    from exportd.exporter.sources import Source

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int], None]


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
        sha256 = summary.sha256 or _sha256(output)  # hashed while written, by most writers
        stored = storage.publish(
            output,
            spec.object_key,
            content_type=spec.format.content_type,
            download_name=spec.file_name,
            sha256=sha256,
        )
        if has_sidecar(spec.format, plan.export_type):
            written = summary.rows_written
            publish_sidecar(storage, workdir, spec, plan.metadata, completed_at, written, sha256)
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


def uses_copy_path(export_format: ExportFormat, source: SourceConfig) -> bool:
    """Whether the server writes the file itself (CSV from PostgreSQL, by ``COPY``)."""
    return export_format is ExportFormat.CSV and source.kind == "postgres"


def _open_source(plan: ExportPlan, settings: ExporterSettings) -> Source:
    config = plan.source
    if config.kind == "postgres":
        from exportd.exporter.pgarrow import PostgresArrowSource

        return PostgresArrowSource.from_config(config)
    if config.kind == "duckdb" and config.path == settings.sample_db_path:
        from exportd.sample.sampledb import ensure_sample_db

        ensure_sample_db(config.path)
    from exportd.exporter.sources import open_source

    return open_source(config)


def _produce(
    spec: ExportSpec,
    plan: ExportPlan,
    settings: ExporterSettings,
    output: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event,
) -> tuple[int, WriteSummary, datetime]:
    if uses_copy_path(spec.format, plan.source):
        from exportd.exporter.copycsv import copy_postgres_csv

        return copy_postgres_csv(plan, output, on_progress, cancel)
    return _produce_from_batches(spec, plan, settings, output, on_progress, cancel)


def _produce_from_batches(
    spec: ExportSpec,
    plan: ExportPlan,
    settings: ExporterSettings,
    output: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event,
) -> tuple[int, WriteSummary, datetime]:
    from exportd.exporter.sources import QueryOptions

    options = QueryOptions(
        batch_rows=settings.batch_rows,
        statement_timeout_seconds=plan.export_type.statement_timeout_seconds,
    )
    with _open_source(plan, settings) as source, CancelWatcher(cancel, source):
        writer = open_writer(spec.format, output, plan.metadata, plan.export_type)
        try:
            batches = source.stream(plan.export_type.query, plan.params, options)
            with _closing(batches):
                rows_read = _copy(batches, writer, plan.export_type.max_rows, on_progress, cancel)
            completed_at = utc_now()
            summary = writer.finish(completed_at)
            _log_path(source, writer, rows_read)
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


def _log_path(source: Source, writer: Writer, rows: int) -> None:
    """Which reader and writer did the work: operators compare exports' speed by it."""
    fast_read = getattr(source, "used_fast_path", None)
    small_read = getattr(source, "used_small_path", None)
    reader = type(source).__name__ + (" (DuckDB scanner)" if fast_read else "")
    reader += " (small result, psycopg)" if small_read else ""
    log.info("export path: %s -> %s, %d rows", reader, type(writer).__name__, rows)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
