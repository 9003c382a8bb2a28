"""The SQLite dialect of the shared statements (:mod:`exportd.store.sql_statements`).

SQLite has no time or JSON types: moments are fixed-width UTC text, so string order is time
order, and models are their JSON text. Writes run inside ``BEGIN IMMEDIATE``, which already
excludes every other writer, so no row or admission locks are needed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from exportd.contract.spec import CamelModel, utc_now
from exportd.store.base import ExportRecord, PageCursor
from exportd.store.sql_statements import StoreTx
from exportd.store.sql_tx import Cursor, Fragment, Model

_STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string order is time order."""
    return moment.astimezone(UTC).strftime(_STAMP)


def unstamp(text: str) -> datetime:
    return datetime.strptime(text, _STAMP).replace(tzinfo=UTC)


class SqliteTx(StoreTx):
    owned_count = "COALESCE(SUM(owner = ?), 0) AS mine"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def run(self, sql: str, params: Sequence[object] | None = None) -> Cursor:
        return self.conn.execute(sql, () if params is None else params)

    def stamp(self, moment: datetime) -> str:
        return stamp(moment)

    def unstamp(self, value: Any) -> datetime:
        return unstamp(value)

    def model_value(self, model: CamelModel) -> str:
        return model.model_dump_json(by_alias=True)

    def model_of(self, cls: type[Model], value: Any) -> Model:
        return cls.model_validate_json(value)

    def json_value(self, data: dict[str, str]) -> str:
        return json.dumps(data)

    def json_of(self, value: Any) -> dict[str, str]:
        return dict(json.loads(value or "{}"))

    def now(self) -> Fragment:
        return "?", [stamp(utc_now())]

    def phase_in(self, phases: Collection[str]) -> Fragment:
        return f"phase IN ({', '.join('?' for _ in phases)})", list(phases)

    def keyset(self, op: Literal["<", ">"], position: PageCursor) -> Fragment:
        at = stamp(position.created_at)
        condition = f"(created_at {op} ? OR (created_at = ? AND id {op} ?))"
        return condition, [at, at, position.export_id]

    def updated(self, sql: str, params: Sequence[object], export_id: str) -> ExportRecord | None:
        if self.run(sql, params).rowcount != 1:
            return None
        return self.get_record(export_id)

    def lock_admissions(self) -> None:
        pass  # BEGIN IMMEDIATE already holds every other writer off
