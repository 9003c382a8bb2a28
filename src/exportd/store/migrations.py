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
)

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""
