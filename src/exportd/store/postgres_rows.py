"""The PostgreSQL dialect of the shared statements (:mod:`exportd.store.sql_statements`).

Unlike SQLite, PostgreSQL runs transactions side by side, so the statements lock what they decide
on: the idempotency key row and the credit account row (``FOR UPDATE``), and, around an admission
with queue limits, a transaction-scoped advisory lock (a count over many rows cannot be held by
row locks). Moments are ``TIMESTAMPTZ`` and models ``JSONB``, which psycopg converts both ways.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from exportd.contract.spec import CamelModel
from exportd.store.base import ExportRecord, PageCursor
from exportd.store.pg_migrations import ADMISSION_LOCK_KEY
from exportd.store.sql_statements import StoreTx
from exportd.store.sql_tx import COLUMNS, Cursor, Fragment, Model

Row = dict[str, Any]


class PostgresTx(StoreTx):
    row_lock = " FOR UPDATE"
    text_mark = "?::text"
    owned_count = "count(*) FILTER (WHERE owner = ?) AS mine"

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def run(self, sql: str, params: Sequence[object] | None = None) -> Cursor:
        # psycopg's marks are %s; shared SQL holds no other ? (see exportd.store.sql_tx).
        return self.conn.execute(sql.replace("?", "%s"), params)

    def stamp(self, moment: datetime) -> datetime:
        return moment

    def unstamp(self, value: Any) -> datetime:
        moment: datetime = value
        return moment.astimezone(UTC)

    def event_time(self, value: Any) -> datetime:
        moment: datetime = value  # in the session's time zone, as link events always were
        return moment

    def model_value(self, model: CamelModel) -> Jsonb:
        return Jsonb(model.to_json_dict())

    def model_of(self, cls: type[Model], value: Any) -> Model:
        return cls.model_validate(value)

    def json_value(self, data: dict[str, str]) -> Jsonb:
        return Jsonb(data)

    def json_of(self, value: Any) -> dict[str, str]:
        return dict(value or {})

    def now(self) -> Fragment:
        return "now()", []

    def phase_in(self, phases: Collection[str]) -> Fragment:
        return "phase = ANY(?)", [list(phases)]

    def keyset(self, op: Literal["<", ">"], position: PageCursor) -> Fragment:
        return f"(created_at, id) {op} (?, ?)", [position.created_at, position.export_id]

    def updated(self, sql: str, params: Sequence[object], export_id: str) -> ExportRecord | None:
        row = self.one(f"{sql} RETURNING {COLUMNS}", params)
        return self.record_of(row) if row else None

    def lock_admissions(self) -> None:
        self.run("SELECT pg_advisory_xact_lock(?)", (ADMISSION_LOCK_KEY,))
