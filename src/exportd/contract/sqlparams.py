"""One placeholder style in the catalog (``:name``), translated for each driver.

The scanner skips string literals, quoted identifiers, comments, dollar-quoted bodies and
PostgreSQL ``::`` casts, so only real placeholders are rewritten. Values are never put into the
SQL text: the result is the driver's own placeholder syntax, and the values travel separately.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(
    r"""
      (?P<skip>
          '(?:[^']|'')*'                 # string literal
        | "(?:[^"]|"")*"                 # quoted identifier
        | `[^`]*`                        # MySQL quoted identifier
        | --[^\n]*                       # line comment
        | /\*.*?\*/                      # block comment
        | \$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$   # dollar-quoted body
        | ::                             # cast
      )
    | (?<![:\w]):(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)


def _rewrite(sql: str, render: Callable[[str], str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        return match.group(0) if name is None else render(name)

    return _TOKEN.sub(replace, sql)


def placeholders_in(sql: str) -> set[str]:
    """The names of the ``:name`` placeholders a query uses."""
    found: set[str] = set()

    def collect(name: str) -> str:
        found.add(name)
        return name

    _rewrite(sql, collect)
    return found


def to_pyformat(sql: str) -> str:
    """``:name`` to ``%(name)s`` (psycopg, PyMySQL); literal ``%`` doubled first."""
    escaped = _rewrite(sql.replace("%", "%%"), lambda name: f"%({name})s")
    return escaped


def to_dollar(sql: str) -> str:
    """``:name`` to ``$name`` (DuckDB named parameters)."""
    return _rewrite(sql, lambda name: f"${name}")
