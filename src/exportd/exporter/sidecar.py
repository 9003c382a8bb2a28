"""The request and completion times of a CSV export in the default ``header`` layout.

The ``comments`` layout writes them into the CSV itself (a ``# exportd:`` line first and last),
which csv readers, pandas and spreadsheet imports take for data rows. The default layout keeps the
CSV plain (header row first, nothing else) and puts the same facts in a small JSON object beside
the file, ``<object key>.meta.json``; the API hands it out as the export's ``metadataUrl`` and
housekeeping deletes it with the file.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from exportd.contract.catalog import ExportType
from exportd.contract.spec import CSV_SIDECAR_SUFFIX, ExportFormat, ExportSpec, csv_sidecar_key
from exportd.storage.base import Storage

if TYPE_CHECKING:  # the CSV-by-COPY exporter must not load pyarrow (its 64 MiB target)
    from exportd.exporter.writers.base import ExportMetadata


def has_sidecar(export_format: ExportFormat, export_type: ExportType) -> bool:
    return export_format is ExportFormat.CSV and export_type.csv_sidecar


def publish_sidecar(
    storage: Storage,
    workdir: Path,
    spec: ExportSpec,
    metadata: ExportMetadata,
    completed_at: datetime,
    rows: int,
    sha256: str,
) -> None:
    """Store the times (and what they describe) beside the file, create-only like the file."""
    document = {
        "export": metadata.export_id,
        "type": metadata.export_type,
        "file": spec.file_name,
        "requestedAt": _utc(metadata.requested_at),
        "completedAt": _utc(completed_at),
        "timezone": metadata.timezone,
        "rows": rows,
        "sha256": sha256,
    }
    data = json.dumps(document, indent=2).encode() + b"\n"
    path = workdir / "meta.json"
    path.write_bytes(data)
    storage.publish(
        path,
        csv_sidecar_key(spec.object_key),
        content_type="application/json",
        download_name=f"{spec.file_name}{CSV_SIDECAR_SUFFIX}",
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _utc(moment: datetime) -> str:
    """As the comments layout writes times: ISO 8601 in UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
