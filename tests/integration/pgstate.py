"""A throwaway PostgreSQL schema for state-store tests (real server on 127.0.0.1:5432).

Each use gets its own schema, named uniquely, reached through the DSN's libpq ``options``
(``search_path``), and dropped afterwards; parallel test runs never see each other's tables. A
server that is down fails the test loudly (no skip).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def throwaway_schema() -> Iterator[str]:
    """Yield a DSN whose search_path is a fresh, empty schema."""
    schema = f"exportd_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN_DSN}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
