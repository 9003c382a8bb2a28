"""The PostgreSQL schema: the migrations of :mod:`exportd.store.migrations` in PostgreSQL's
column types (same numbers and meaning as SQLite's).

All pending migrations run in one transaction that first takes an advisory lock, so API replicas
starting together apply each migration exactly once and none sees a half-made schema. Never edit
an applied migration: add the next number.
"""

from __future__ import annotations

from exportd.store.migrations import ColumnTypes, Migration, create_migrations_table, schema

# pg_advisory_xact_lock keys: one for migrations, one that serializes admissions (queue limits
# are counts over many rows, which row locks cannot protect).
MIGRATION_LOCK_KEY = 0x6578706F7274
ADMISSION_LOCK_KEY = 0x6578706F7275

PG_TYPES = ColumnTypes(
    json="JSONB", time="TIMESTAMPTZ", identity="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
)
PG_MIGRATIONS: tuple[Migration, ...] = schema(PG_TYPES)
CREATE_MIGRATIONS_TABLE = create_migrations_table(PG_TYPES)
