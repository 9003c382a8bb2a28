"""The embedded sample database: a DuckDB file that makes exportd useful on first start.

Tables (all rows deterministic, generated in SQL so creation takes well under a second):

- ``users``: 100,000 rows. ``tier`` is ``1 + id % 5`` (1 free .. 5 enterprise, each 20%, so
  tiers 1-2 are 40%); ``notes`` is NULL for 30% of the rows and holds a few hostile or tricky
  values (a ``=HYPERLINK(...)`` formula, ``+``/``-``/``@`` prefixes, unicode, leading spaces, an
  empty string) so exports show how such text is handled.
- ``menus``, ``muscles``, ``muscle_menus``: the design-question data set. Counting the menus of
  each category that train ``muscle1`` or ``muscle2``, each menu once, gives training 3,
  balance 1, stretch 1. Some menus train both muscles and some only ``muscle3``, so a count
  without DISTINCT (training 4, balance 2) or without the muscle filter is wrong.

The file is built under a temporary name and hard-linked into place (create-only), so a reader
never sees a half-built database and two processes racing to create it both end up using one
complete file.

This module is the only definition of the sample data: ``exportd load-sample``
(:mod:`exportd.sample.sampleload`) builds the same tables in memory with :func:`build_sample` and
copies
them into PostgreSQL or MySQL/MariaDB, which is how the compose stack's databases are filled.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import duckdb

USER_ROWS = 100_000
# Named groups of tables, so a database that serves only one of them gets only that one.
DATA_SETS: dict[str, tuple[str, ...]] = {
    "users": ("users",),
    "menus": ("muscles", "menus", "muscle_menus"),
}

_USERS_SQL = f"""
CREATE TABLE users AS
WITH base AS (SELECT range::BIGINT AS id FROM range(1, {USER_ROWS} + 1))
SELECT
    id,
    ['Ada', 'Bob', 'Chloé', 'Dmitri', 'Emma', 'Farid', 'Grace', 'Hiro', 'Ines', 'Jonas',
     'Kofi', 'Lena', 'Mateo', 'Nora', 'Omar', 'Priya', 'Quinn', 'Rosa', 'Sven', 'Yuki']
        [1 + id % 20] || ' ' ||
    ['Smith', 'Müller', 'García', 'Rossi', 'Kim', 'Nowak', 'Silva', 'Dubois', 'Sato',
     'Jensen', 'Okafor', 'Novak', 'Larsen']
        [1 + (id * 7) % 13] AS name,
    'user' || id || '@example.com' AS email,
    (1 + id % 5)::INTEGER AS tier,
    ['US', 'DE', 'FR', 'GB', 'JP', 'BR', 'IN', 'NL', 'ES', 'CA'][1 + (id * 3) % 10]::CHAR(2)
        AS country,
    (DATE '2015-01-01' + ((id * 37) % 3650)::INTEGER) AS signup_date,
    CASE WHEN id % 17 = 0 THEN NULL
         ELSE TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds((id * 7919) % 31536000)
    END AS last_login,
    (((id * 7919) % 1000000) / 100.0 - 2000)::DECIMAL(12, 2) AS balance,
    id % 7 <> 0 AS active,
    CASE
        WHEN id % 10 IN (0, 3, 6) THEN NULL
        WHEN id % 1000 = 1 THEN '=HYPERLINK("http://x","y")'
        WHEN id % 1000 = 2 THEN '   leading spaces'
        WHEN id % 1000 = 4 THEN 'Grüße, 日本語, emoji 😀'
        WHEN id % 1000 = 5 THEN '+1+2'
        WHEN id % 1000 = 7 THEN '-2+3'
        WHEN id % 1000 = 8 THEN '@SUM(A1:A2)'
        WHEN id % 1000 = 9 THEN ''
        ELSE 'note ' || id
    END AS notes
FROM base;
-- Declared so copies into other databases (exportd.sample.sampleload) get the same key.
ALTER TABLE users ADD PRIMARY KEY (id);
"""

_MENUS_SQL = """
CREATE TABLE muscles (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL);
INSERT INTO muscles VALUES (1, 'muscle1'), (2, 'muscle2'), (3, 'muscle3');
CREATE TABLE menus (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, category VARCHAR NOT NULL);
INSERT INTO menus VALUES
    (1, 'Squat', 'training'),
    (2, 'Deadlift', 'training'),
    (3, 'Lunge', 'training'),
    (4, 'Bench press', 'training'),
    (5, 'Plank', 'balance'),
    (6, 'Single-leg stand', 'balance'),
    (7, 'Hamstring stretch', 'stretch'),
    (8, 'Shoulder stretch', 'stretch'),
    (9, 'Breathing', 'balance');
CREATE TABLE muscle_menus (menu_id INTEGER NOT NULL, muscle_id INTEGER NOT NULL);
INSERT INTO muscle_menus VALUES
    (1, 1), (2, 1), (2, 2), (3, 2), (4, 3),
    (5, 1), (5, 2), (6, 3),
    (7, 2), (8, 3);
"""


def ensure_sample_db(path: Path) -> Path:
    """Create the sample database at ``path`` unless it exists; return ``path``."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.building")
    try:
        _build(staged)
        # If another process won the race, its file is just as complete: keep that one.
        with contextlib.suppress(FileExistsError):
            os.link(staged, path)
    finally:
        staged.unlink(missing_ok=True)
        staged.with_name(staged.name + ".wal").unlink(missing_ok=True)
    return path


def build_sample(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table of :data:`DATA_SETS` in ``con`` (an empty database)."""
    con.execute(_USERS_SQL)
    con.execute(_MENUS_SQL)


def _build(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        build_sample(con)
        con.execute("CHECKPOINT")
    finally:
        con.close()
