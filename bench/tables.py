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
