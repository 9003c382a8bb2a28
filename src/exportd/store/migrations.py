"""The SQLite schema as plain, numbered SQL migrations.

A migration is applied once, in its own transaction, and recorded in ``schema_migrations``.
Never edit an applied migration: add the next number. A PostgreSQL store keeps its own list with
the same numbers and meaning.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "exports",
        (
            """
            CREATE TABLE exports (
                id         TEXT PRIMARY KEY,
                owner      TEXT NOT NULL,
                phase      TEXT NOT NULL,
                spec       TEXT NOT NULL,
                status     TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                version    INTEGER NOT NULL DEFAULT 1,
                pid        INTEGER
            )
            """,
            "CREATE INDEX exports_by_owner ON exports (owner, created_at DESC, id DESC)",
            "CREATE INDEX exports_by_phase ON exports (phase, created_at, id)",
        ),
    ),
    Migration(
        2,
        "credits and idempotency keys",
        (
            """
            CREATE TABLE credit_accounts (
                owner      TEXT PRIMARY KEY,
                balance    INTEGER NOT NULL,
                accrued_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE credit_ledger (
                export_id TEXT NOT NULL,
                kind      TEXT NOT NULL CHECK (kind IN ('debit', 'refund')),
                owner     TEXT NOT NULL,
                amount    INTEGER NOT NULL,
                at        TEXT NOT NULL,
                PRIMARY KEY (export_id, kind)
            )
            """,
            "CREATE INDEX credit_ledger_by_owner ON credit_ledger (owner, at)",
            """
            CREATE TABLE idempotency_keys (
                owner            TEXT NOT NULL,
                key              TEXT NOT NULL,
                request_hash     TEXT NOT NULL,
                export_id        TEXT NOT NULL,
                state            TEXT NOT NULL CHECK (state IN ('pending', 'done')),
                response_status  INTEGER,
                response_body    TEXT,
                response_headers TEXT,
                created_at       TEXT NOT NULL,
                expires_at       TEXT NOT NULL,
                PRIMARY KEY (owner, key)
            )
            """,
            "CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at)",
        ),
    ),
    Migration(
        3,
        "link events: download audit log and revocations (exportd.links)",
        (
            """
            CREATE TABLE link_events (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                export_id  TEXT NOT NULL,
                kind       TEXT NOT NULL CHECK (kind IN ('download', 'revoke')),
                actor      TEXT NOT NULL,
                via        TEXT NOT NULL CHECK (via IN ('bearer', 'link')),
                client_ip  TEXT,
                user_agent TEXT,
                at         TEXT NOT NULL
            )
            """,
            "CREATE INDEX link_events_by_export ON link_events (export_id, kind, at)",
        ),
    ),
)

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""
