"""The schema of both SQL stores as plain, numbered SQL migrations.

A migration is applied once and recorded in ``schema_migrations``. Never edit an applied migration:
add the next number. SQLite and PostgreSQL keep the same tables and differ only in a few column
types, so the migrations are written once here over :class:`ColumnTypes`; :data:`MIGRATIONS` are
SQLite's, :mod:`exportd.store.pg_migrations` holds PostgreSQL's. A later migration that only one
database needs can still be appended to that database's list alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class ColumnTypes:
    """The column types the two databases spell differently."""

    json: str
    time: str
    identity: str  # an auto-numbered primary key


SQLITE_TYPES = ColumnTypes(json="TEXT", time="TEXT", identity="INTEGER PRIMARY KEY AUTOINCREMENT")


def exports_migration(types: ColumnTypes) -> Migration:
    return Migration(
        1,
        "exports",
        (
            f"""
            CREATE TABLE exports (
                id         TEXT PRIMARY KEY,
                owner      TEXT NOT NULL,
                phase      TEXT NOT NULL,
                spec       {types.json} NOT NULL,
                status     {types.json} NOT NULL,
                created_at {types.time} NOT NULL,
                updated_at {types.time} NOT NULL,
                version    INTEGER NOT NULL DEFAULT 1,
                pid        INTEGER
            )
            """,
            "CREATE INDEX exports_by_owner ON exports (owner, created_at DESC, id DESC)",
            "CREATE INDEX exports_by_phase ON exports (phase, created_at, id)",
        ),
    )


def credits_migration(types: ColumnTypes) -> Migration:
    return Migration(
        2,
        "credits and idempotency keys",
        (
            f"""
            CREATE TABLE credit_accounts (
                owner      TEXT PRIMARY KEY,
                balance    INTEGER NOT NULL,
                accrued_at {types.time} NOT NULL,
                updated_at {types.time} NOT NULL
            )
            """,
            f"""
            CREATE TABLE credit_ledger (
                export_id TEXT NOT NULL,
                kind      TEXT NOT NULL CHECK (kind IN ('debit', 'refund')),
                owner     TEXT NOT NULL,
                amount    INTEGER NOT NULL,
                at        {types.time} NOT NULL,
                PRIMARY KEY (export_id, kind)
            )
            """,
            "CREATE INDEX credit_ledger_by_owner ON credit_ledger (owner, at)",
            f"""
            CREATE TABLE idempotency_keys (
                owner            TEXT NOT NULL,
                key              TEXT NOT NULL,
                request_hash     TEXT NOT NULL,
                export_id        TEXT NOT NULL,
                state            TEXT NOT NULL CHECK (state IN ('pending', 'done')),
                response_status  INTEGER,
                response_body    TEXT,
                response_headers {types.json},
                created_at       {types.time} NOT NULL,
                expires_at       {types.time} NOT NULL,
                PRIMARY KEY (owner, key)
            )
            """,
            "CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at)",
        ),
    )


def link_events_migration(types: ColumnTypes) -> Migration:
    return Migration(
        3,
        "link events: download audit log and revocations (exportd.security.links)",
        (
            f"""
            CREATE TABLE link_events (
                id         {types.identity},
                export_id  TEXT NOT NULL,
                kind       TEXT NOT NULL CHECK (kind IN ('download', 'revoke')),
                actor      TEXT NOT NULL,
                via        TEXT NOT NULL CHECK (via IN ('bearer', 'link')),
                client_ip  TEXT,
                user_agent TEXT,
                at         {types.time} NOT NULL
            )
            """,
            "CREATE INDEX link_events_by_export ON link_events (export_id, kind, at)",
        ),
    )


def schedules_migration(types: ColumnTypes) -> Migration:
    return Migration(
        4,
        "schedules and their runs (exportd.store.schedules)",
        (
            f"""
            CREATE TABLE schedules (
                id         TEXT PRIMARY KEY,
                owner      TEXT NOT NULL,
                spec       {types.json} NOT NULL,
                state      {types.json} NOT NULL,
                created_at {types.time} NOT NULL,
                updated_at {types.time} NOT NULL,
                version    INTEGER NOT NULL DEFAULT 1
            )
            """,
            "CREATE INDEX schedules_by_owner ON schedules (owner, created_at, id)",
            f"""
            CREATE TABLE schedule_runs (
                schedule_id TEXT NOT NULL,
                slot        {types.time} NOT NULL,
                outcome     TEXT NOT NULL,
                export_id   TEXT,
                reason      TEXT,
                message     TEXT,
                at          {types.time} NOT NULL,
                PRIMARY KEY (schedule_id, slot)
            )
            """,
        ),
    )


def schema(types: ColumnTypes) -> tuple[Migration, ...]:
    """Every migration, in order, spelled for one database."""
    return (
        exports_migration(types),
        credits_migration(types),
        link_events_migration(types),
        schedules_migration(types),
    )


def create_migrations_table(types: ColumnTypes) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at {types.time} NOT NULL
)
"""


MIGRATIONS: tuple[Migration, ...] = schema(SQLITE_TYPES)
CREATE_MIGRATIONS_TABLE = create_migrations_table(SQLITE_TYPES)
