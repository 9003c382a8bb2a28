"""The exporter's CSV path for PostgreSQL sources: ``COPY (query) TO STDOUT`` into the file.

Why a path of its own: the server formats the CSV (see :mod:`exportd.exporter.pgcopy`), so rows
never become Arrow batches or Python objects; this module imports neither pyarrow nor DuckDB, which
keeps the exporter process small (the CSV path's peak RSS target is 64 MiB). It holds the copy to
the exporter's contract: rows read equal rows written, the row limit, cancel by the watcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from exportd.contract.errors import Cancelled, PermanentFailure
from exportd.exporter.cancelwatch import CancelWatcher
from exportd.exporter.pgcopy import PostgresCsvCopy
from exportd.exporter.writers.base import WriteSummary

if TYPE_CHECKING:
    from exportd.exporter.run import ExportPlan

log = logging.getLogger(__name__)


def copy_postgres_csv(
    plan: ExportPlan,
    output: Path,
    on_progress: Callable[[int], None] | None,
    cancel: threading.Event,
) -> tuple[int, WriteSummary, datetime]:
    """Write the export's CSV by COPY; rows read, what was written, and when it completed."""
    export_type = plan.export_type
    with PostgresCsvCopy.from_config(plan.source) as copier, CancelWatcher(cancel, copier):
        if cancel.is_set():
            raise Cancelled("the export was cancelled")
        result = copier.run(
            export_type.query,
            plan.params,
            output,
            plan.metadata,
            statement_timeout_seconds=export_type.statement_timeout_seconds,
            bom=export_type.csv_bom,
            comments=export_type.csv_layout == "comments",
            neutralize_formulas=export_type.csv_neutralize_formulas,
            max_rows=export_type.max_rows,
            on_progress=on_progress,
        )
    if cancel.is_set():
        raise Cancelled("the export was cancelled")
    if result.rows_read != result.rows_written:
        raise PermanentFailure(
            f"read {result.rows_read} rows but wrote {result.rows_written}",
            reason="IncompleteExport",
        )
    log.info("export path: PostgreSQL COPY -> CSV, %d rows", result.rows_written)
    summary = WriteSummary(rows_written=result.rows_written, sha256=result.sha256)
    return result.rows_read, summary, result.completed_at
