"""Creates the benchmark tables in PostgreSQL once (10 mixed columns, generated server-side).

The shape is the one the performance issue measured: bigint id, int, numeric(12,2), double,
15-character text, 5-value text, date, timestamptz, boolean, and a text column that is 30% NULL.
The data is deterministic (derived from the row number), so reruns validate against the same sums.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

COLUMNS = "id, qty, amount, score, code, status, day, at, flag, note"

_CREATE = """
CREATE TABLE {table} AS
SELECT
  g::bigint AS id,
  (g::bigint * 7919 % 100000)::int AS qty,
  ((g::bigint * 104729 % 10000000) / 100.0)::numeric(12,2) AS amount,
  (g * 0.000123456789)::double precision AS score,
  substr(md5(g::text), 1, 15) AS code,
  (ARRAY['new','active','paused','closed','archived'])[1 + g % 5] AS status,
  (DATE '2000-01-01' + (g % 9000)::int) AS day,
  (TIMESTAMPTZ '2020-01-01 00:00:00+00' + g * INTERVAL '1 second' * 37) AS at,
  (g % 3 = 0) AS flag,
  CASE WHEN g % 10 < 3 THEN NULL ELSE 'note ' || (g % 977)::text END AS note
FROM generate_series(1, {rows}) AS g
"""


def table_name(rows: int) -> str:
    return f"bench_{rows}"


def ensure_table(dsn: str, rows: int) -> str:
    """Create ``bench_<rows>`` unless it exists with exactly ``rows`` rows; return its name."""
    name = table_name(rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if exists and exists[0]:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
            found = count.fetchone()
            if found and found[0] == rows:
                return name
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL(_CREATE).format(table=sql.Identifier(name), rows=sql.Literal(rows)))
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(name)))
    return name


WIDE_ROWS = 200_000
WIDE_COLUMNS = 100
# The wide table cycles through the ten column kinds of the narrow one.
_WIDE_KINDS = [
    "(g::bigint * {i} % 100000)::int",
    "((g::bigint * {i} * 104729 % 10000000) / 100.0)::numeric(12,2)",
    "(g * 0.000123456789 + {i})::double precision",
    "substr(md5((g + {i})::text), 1, 15)",
    "(ARRAY['new','active','paused','closed','archived'])[1 + (g + {i}) % 5]",
    "(DATE '2000-01-01' + ((g + {i}) % 9000)::int)",
    "(TIMESTAMPTZ '2020-01-01 00:00:00+00' + (g + {i}) * INTERVAL '1 second' * 37)",
    "((g + {i}) % 3 = 0)",
    "CASE WHEN (g + {i}) % 10 < 3 THEN NULL ELSE 'note ' || ((g + {i}) % 977)::text END",
]

ADVERSARIAL_TABLE = "bench_adversarial"
ADVERSARIAL_ROWS = 50_000
_ADVERSARIAL = """
CREATE TABLE {table} AS
SELECT
  g::bigint AS id,
  (ARRAY[9007199254740993, 1000000000000000, -9223372036854775808, 7])[1 + g % 4]::bigint AS big,
  (ARRAY['3.14159265358979323846264338327950288', '1e-20', 'NaN', '0.1', 'Infinity'])
    [1 + g % 5]::numeric AS free,
  (ARRAY['0.1', 'NaN', 'Infinity', '-0', '3.4e38'])[1 + g % 5]::real AS f4,
  (ARRAY['=1+2', E'\\x01ctl\\x1f', '😀 emoji', '+cmd', '@at', E'tab\\tin', E'cr\\rlf\\n', '',
         repeat('long ', 8000), '<&>"'''])[1 + g % 10] AS body,
  (ARRAY['infinity', '-infinity', '0044-03-15 BC', '1899-12-31', '10000-01-01', '2024-02-29'])
    [1 + g % 6]::date AS day,
  (ARRAY['9999-12-31 23:59:59.999999+00', '0001-01-01 00:00:00+00', 'infinity',
         '2024-06-01 12:00:00.5+00'])[1 + g % 4]::timestamptz AS at,
  CASE WHEN g % 7 = 0 THEN NULL ELSE g % 2 = 0 END AS flag
FROM generate_series(1, {rows}) AS g
"""


def _create(dsn: str, name: str, statement: sql.Composable, rows: int) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if exists and exists[0]:
            found = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
            ).fetchone()
            if found and found[0] == rows:
                return name
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        conn.execute(statement)
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(name)))
    return name


def ensure_wide_table(dsn: str) -> str:
    """``bench_wide``: 100 columns (id and 99 of the nine other kinds) x 200,000 rows."""
    name = "bench_wide"
    columns = ", ".join(
        _WIDE_KINDS[(i - 1) % len(_WIDE_KINDS)].format(i=i) + f" AS c{i:02d}"
        for i in range(1, WIDE_COLUMNS)
    )
    statement = sql.SQL(
        "CREATE TABLE {} AS SELECT g::bigint AS id, " + columns + " FROM generate_series(1, {})"
        " AS g"
    ).format(sql.Identifier(name), sql.Literal(WIDE_ROWS))
    return _create(dsn, name, statement, WIDE_ROWS)


def ensure_adversarial_table(dsn: str) -> str:
    """Values at every type's edge (see docs/types.md), repeated over 50,000 rows."""
    statement = sql.SQL(_ADVERSARIAL).format(
        table=sql.Identifier(ADVERSARIAL_TABLE), rows=sql.Literal(ADVERSARIAL_ROWS)
    )
    return _create(dsn, ADVERSARIAL_TABLE, statement, ADVERSARIAL_ROWS)
