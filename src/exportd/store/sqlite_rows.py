"""SQLite rows <-> store objects, and the admission statements of the SQLite store.

Kept apart from :mod:`exportd.store.sqlite` (connection, locking, migrations) so each module stays
small. Every function here runs on a connection that already holds the write transaction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from exportd.credits import CreditAccount
from exportd.spec import ExportSpec, ExportStatus
from exportd.store.admission import IdempotencyEntry, LedgerKind, StoredResponse
from exportd.store.base import ExportRecord

COLUMNS = "id, owner, phase, spec, status, created_at, updated_at, version, pid"
IN_FLIGHT = "('Pending', 'Queued', 'Running')"
_KEY_COLUMNS = (
    "owner, key, request_hash, export_id, state, response_status, response_body, "
    "response_headers, created_at, expires_at"
)


def stamp(moment: datetime) -> str:
    """Fixed-width UTC text, so SQL string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unstamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def record_of(row: sqlite3.Row) -> ExportRecord:
    return ExportRecord(
        spec=ExportSpec.model_validate_json(row["spec"]),
        status=ExportStatus.model_validate_json(row["status"]),
        owner=row["owner"],
        created_at=unstamp(row["created_at"]),
        updated_at=unstamp(row["updated_at"]),
        version=row["version"],
        pid=row["pid"],
    )


def record_values(record: ExportRecord) -> tuple[object, ...]:
    return (
        record.id,
        record.owner,
        record.phase.value,
        record.spec.model_dump_json(by_alias=True),
        record.status.model_dump_json(by_alias=True),
        stamp(record.created_at),
        stamp(record.updated_at),
        record.version,
        record.pid,
    )


def entry_of(row: sqlite3.Row) -> IdempotencyEntry:
    response = None
    if row["response_status"] is not None:
        response = StoredResponse(
            status=row["response_status"],
            body=row["response_body"],
            headers=json.loads(row["response_headers"] or "{}"),
        )
    return IdempotencyEntry(
        owner=row["owner"],
        key=row["key"],
        request_hash=row["request_hash"],
        export_id=row["export_id"],
        state=row["state"],
        created_at=unstamp(row["created_at"]),
        expires_at=unstamp(row["expires_at"]),
        response=response,
    )


def select_entry(conn: sqlite3.Connection, owner: str, key: str) -> IdempotencyEntry | None:
    row = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM idempotency_keys WHERE owner = ? AND key = ?", (owner, key)
    ).fetchone()
    return entry_of(row) if row else None


def select_account(conn: sqlite3.Connection, owner: str) -> CreditAccount | None:
    row = conn.execute(
        "SELECT owner, balance, accrued_at FROM credit_accounts WHERE owner = ?", (owner,)
    ).fetchone()
    if row is None:
        return None
    return CreditAccount(row["owner"], row["balance"], unstamp(row["accrued_at"]))


class SqliteAdmissionTx:
    """:class:`~exportd.store.admission.AdmissionTx` on a connection inside ``BEGIN IMMEDIATE``
    (which already excludes every other writer, so no row locks are needed)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def claim_key(self, entry: IdempotencyEntry) -> IdempotencyEntry | None:
        existing = select_entry(self.conn, entry.owner, entry.key)
        if existing is None:
            self.conn.execute(
                "INSERT INTO idempotency_keys (owner, key, request_hash, export_id, state, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.owner,
                    entry.key,
                    entry.request_hash,
                    entry.export_id,
                    entry.state,
                    stamp(entry.created_at),
                    stamp(entry.expires_at),
                ),
            )
        return existing

    def replace_key(self, entry: IdempotencyEntry) -> None:
        self.conn.execute(
            "UPDATE idempotency_keys SET request_hash = ?, export_id = ?, state = ?, "
            "response_status = NULL, response_body = NULL, response_headers = NULL, "
            "created_at = ?, expires_at = ? WHERE owner = ? AND key = ?",
            (
                entry.request_hash,
                entry.export_id,
                entry.state,
                stamp(entry.created_at),
                stamp(entry.expires_at),
                entry.owner,
                entry.key,
            ),
        )

    def lock_account(self, opening: CreditAccount) -> CreditAccount:
        account = select_account(self.conn, opening.owner)
        if account is not None:
            return account
        self.save_account(opening)
        return opening

    def save_account(self, account: CreditAccount) -> None:
        now = stamp(datetime.now(UTC))
        self.conn.execute(
            "INSERT INTO credit_accounts (owner, balance, accrued_at, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET balance = excluded.balance, "
            "accrued_at = excluded.accrued_at, updated_at = excluded.updated_at",
            (account.owner, account.balance, stamp(account.accrued_at), now),
        )

    def add_ledger(
        self, export_id: str, kind: LedgerKind, owner: str, amount: int, at: datetime
    ) -> bool:
        cursor = self.conn.execute(
            "INSERT INTO credit_ledger (export_id, kind, owner, amount, at) VALUES "
            "(?, ?, ?, ?, ?) ON CONFLICT (export_id, kind) DO NOTHING",
            (export_id, kind, owner, amount, stamp(at)),
        )
        return cursor.rowcount == 1

    def ledger_debit(self, export_id: str) -> tuple[str, int] | None:
        row = self.conn.execute(
            "SELECT owner, amount FROM credit_ledger WHERE export_id = ? AND kind = 'debit'",
            (export_id,),
        ).fetchone()
        return (row["owner"], row["amount"]) if row else None

    def in_flight(self, owner: str) -> tuple[int, int]:
        row = self.conn.execute(
            f"SELECT COALESCE(SUM(owner = ?), 0), COUNT(*) FROM exports WHERE phase IN {IN_FLIGHT}",
            (owner,),
        ).fetchone()
        return int(row[0]), int(row[1])

    def insert_record(self, record: ExportRecord) -> None:
        self.conn.execute(
            f"INSERT INTO exports ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record_values(record),
        )
