"""PostgreSQL rows <-> store objects, and the admission statements of the PostgreSQL store.

Unlike SQLite, PostgreSQL runs transactions side by side, so the admission statements lock what
they decide on: the idempotency key row and the credit account row (``FOR UPDATE``, after an
``INSERT ... ON CONFLICT DO NOTHING`` that makes sure the row exists). Concurrent debits of one
account therefore queue on its row and each sees the balance the previous one left.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from exportd.credits import CreditAccount
from exportd.spec import ExportSpec, ExportStatus
from exportd.store.admission import IdempotencyEntry, LedgerKind, StoredResponse
from exportd.store.base import ExportRecord

Row = dict[str, Any]
COLUMNS = "id, owner, phase, spec, status, created_at, updated_at, version, pid"
IN_FLIGHT = ("Pending", "Queued", "Running")
_KEY_COLUMNS = (
    "owner, key, request_hash, export_id, state, response_status, response_body, "
    "response_headers, created_at, expires_at"
)


def record_of(row: Row) -> ExportRecord:
    return ExportRecord(
        spec=ExportSpec.model_validate(row["spec"]),
        status=ExportStatus.model_validate(row["status"]),
        owner=row["owner"],
        created_at=row["created_at"].astimezone(UTC),
        updated_at=row["updated_at"].astimezone(UTC),
        version=row["version"],
        pid=row["pid"],
    )


def record_values(record: ExportRecord) -> tuple[object, ...]:
    return (
        record.id,
        record.owner,
        record.phase.value,
        Jsonb(record.spec.to_json_dict()),
        Jsonb(record.status.to_json_dict()),
        record.created_at,
        record.updated_at,
        record.version,
        record.pid,
    )


def entry_of(row: Row) -> IdempotencyEntry:
    response = None
    if row["response_status"] is not None:
        response = StoredResponse(
            status=row["response_status"],
            body=row["response_body"],
            headers=dict(row["response_headers"] or {}),
        )
    return IdempotencyEntry(
        owner=row["owner"],
        key=row["key"],
        request_hash=row["request_hash"],
        export_id=row["export_id"],
        state=row["state"],
        created_at=row["created_at"].astimezone(UTC),
        expires_at=row["expires_at"].astimezone(UTC),
        response=response,
    )


def select_account(
    conn: psycopg.Connection[Row], owner: str, *, lock: bool
) -> CreditAccount | None:
    sql = "SELECT owner, balance, accrued_at FROM credit_accounts WHERE owner = %s"
    row = conn.execute(sql + (" FOR UPDATE" if lock else ""), (owner,)).fetchone()
    if row is None:
        return None
    return CreditAccount(row["owner"], row["balance"], row["accrued_at"].astimezone(UTC))


class PostgresAdmissionTx:
    """:class:`~exportd.store.admission.AdmissionTx` on a connection inside a transaction."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def claim_key(self, entry: IdempotencyEntry) -> IdempotencyEntry | None:
        inserted = self.conn.execute(
            "INSERT INTO idempotency_keys (owner, key, request_hash, export_id, state, "
            "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (owner, key) DO NOTHING RETURNING owner",
            (
                entry.owner,
                entry.key,
                entry.request_hash,
                entry.export_id,
                entry.state,
                entry.created_at,
                entry.expires_at,
            ),
        ).fetchone()
        if inserted is not None:
            return None
        row = self.conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM idempotency_keys WHERE owner = %s AND key = %s FOR UPDATE",
            (entry.owner, entry.key),
        ).fetchone()
        assert row is not None  # it conflicted, and keys are deleted only when expired
        return entry_of(row)

    def replace_key(self, entry: IdempotencyEntry) -> None:
        self.conn.execute(
            "UPDATE idempotency_keys SET request_hash = %s, export_id = %s, state = %s, "
            "response_status = NULL, response_body = NULL, response_headers = NULL, "
            "created_at = %s, expires_at = %s WHERE owner = %s AND key = %s",
            (
                entry.request_hash,
                entry.export_id,
                entry.state,
                entry.created_at,
                entry.expires_at,
                entry.owner,
                entry.key,
            ),
        )

    def lock_account(self, opening: CreditAccount) -> CreditAccount:
        self.conn.execute(
            "INSERT INTO credit_accounts (owner, balance, accrued_at, updated_at) "
            "VALUES (%s, %s, %s, now()) ON CONFLICT (owner) DO NOTHING",
            (opening.owner, opening.balance, opening.accrued_at),
        )
        account = select_account(self.conn, opening.owner, lock=True)
        assert account is not None
        return account

    def save_account(self, account: CreditAccount) -> None:
        self.conn.execute(
            "UPDATE credit_accounts SET balance = %s, accrued_at = %s, updated_at = now() "
            "WHERE owner = %s",
            (account.balance, account.accrued_at, account.owner),
        )

    def add_ledger(
        self, export_id: str, kind: LedgerKind, owner: str, amount: int, at: datetime
    ) -> bool:
        cursor = self.conn.execute(
            "INSERT INTO credit_ledger (export_id, kind, owner, amount, at) VALUES "
            "(%s, %s, %s, %s, %s) ON CONFLICT (export_id, kind) DO NOTHING",
            (export_id, kind, owner, amount, at),
        )
        return cursor.rowcount == 1

    def ledger_debit(self, export_id: str) -> tuple[str, int] | None:
        row = self.conn.execute(
            "SELECT owner, amount FROM credit_ledger WHERE export_id = %s AND kind = 'debit'",
            (export_id,),
        ).fetchone()
        return (row["owner"], row["amount"]) if row else None

    def in_flight(self, owner: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE owner = %s) AS mine, count(*) AS everyone "
            "FROM exports WHERE phase = ANY(%s)",
            (owner, list(IN_FLIGHT)),
        ).fetchone()
        assert row is not None
        return int(row["mine"]), int(row["everyone"])

    def insert_record(self, record: ExportRecord) -> None:
        self.conn.execute(
            f"INSERT INTO exports ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            record_values(record),
        )
