"""The PostgreSQL schema as plain, numbered SQL migrations (same numbers and meaning as
:mod:`exportd.store.migrations` for SQLite).

All pending migrations run in one transaction that first takes an advisory lock, so API replicas
starting together apply each migration exactly once and none sees a half-made schema. Never edit
an applied migration: add the next number.
"""

from __future__ import annotations

from exportd.store.migrations import Migration

# pg_advisory_xact_lock keys: one for migrations, one that serializes admissions (queue limits
# are counts over many rows, which row locks cannot protect).
MIGRATION_LOCK_KEY = 0x6578706F7274
ADMISSION_LOCK_KEY = 0x6578706F7275

PG_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "exports",
        (
            """
            CREATE TABLE exports (
                id         TEXT PRIMARY KEY,
                owner      TEXT NOT NULL,
                phase      TEXT NOT NULL,
                spec       JSONB NOT NULL,
                status     JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
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
                accrued_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE credit_ledger (
                export_id TEXT NOT NULL,
                kind      TEXT NOT NULL CHECK (kind IN ('debit', 'refund')),
                owner     TEXT NOT NULL,
                amount    INTEGER NOT NULL,
                at        TIMESTAMPTZ NOT NULL,
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
                response_headers JSONB,
                created_at       TIMESTAMPTZ NOT NULL,
                expires_at       TIMESTAMPTZ NOT NULL,
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
                id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                export_id  TEXT NOT NULL,
                kind       TEXT NOT NULL CHECK (kind IN ('download', 'revoke')),
                actor      TEXT NOT NULL,
                via        TEXT NOT NULL CHECK (via IN ('bearer', 'link')),
                client_ip  TEXT,
                user_agent TEXT,
                at         TIMESTAMPTZ NOT NULL
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
    applied_at TIMESTAMPTZ NOT NULL
)
"""
