"""The seed order (``userExport`` of tiers 1-2 by alice) as an ExportSpec, for tests that need
a valid order and care about only a few of its fields; and a small exporter result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from exportd.contract.spec import ExportResult, ExportSpec, format_of, utc_now

REQUESTED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def seed_spec(**overrides: Any) -> ExportSpec:
    """The seed order with any field overridden; the format follows ``file_name``."""
    file_name = overrides.pop("file_name", "myexport.xlsx")
    fields: dict[str, Any] = {
        "id": "exp-test",
        "type": "userExport",
        "format": format_of(file_name),
        "file_name": file_name,
        "variables": {"x": 1, "y": 2},
        "requested_by": "alice",
        "requested_at": REQUESTED_AT,
    }
    return ExportSpec(**(fields | overrides))


def small_result(object_key: str, size: int = 5) -> ExportResult:
    """What an exporter reports after storing a one-row file of ``size`` bytes at the key."""
    now = utc_now()
    return ExportResult(
        rows_read=1,
        rows_written=1,
        bytes=size,
        sha256="0" * 64,
        object_key=object_key,
        started_at=now,
        completed_at=now,
    )
