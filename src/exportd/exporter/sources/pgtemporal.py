"""PostgreSQL dates and timestamps Python cannot hold, loaded as Arrow's integers.

psycopg turns ``date``, ``timestamp`` and ``timestamptz`` into Python objects, which fail for
``infinity``, years BC and years past 9999, all legal in PostgreSQL. These loaders keep
psycopg's fast path and, only for such a value, parse PostgreSQL's ISO text into the integer
Arrow stores (days or microseconds since 1970, UTC for ``timestamptz``), infinities as the
sentinels of :mod:`exportd.exporter.temporal`. ``pa.array`` takes those integers beside the
objects, so a column never fails over a value the database accepted.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

from exportd.exporter import temporal

DATE_OID = 1082
TIMESTAMP_OID = 1114
TIMESTAMPTZ_OID = 1184
_ISO = re.compile(
    r"(\d+)-(\d\d)-(\d\d)"
    r"(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?"
    r"( BC)?"
)


def parse_iso(text: str, *, micros: bool) -> int:
    """Days (``micros`` False) or microseconds since 1970-01-01 (UTC when an offset is given)
    of PostgreSQL's ISO output, including ``infinity`` and years BC (1 BC is year 0)."""
    if text in ("infinity", "-infinity"):
        sentinel = temporal.MICROS_INFINITY if micros else temporal.DATE_INFINITY
        return sentinel if text == "infinity" else -sentinel
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(f"not a PostgreSQL ISO date or timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, sign, oh, om, os_, bc = match.groups()
    astronomical = 1 - int(year) if bc else int(year)
    days = temporal.days_from_civil(astronomical, int(month), int(day))
    if not micros:
        return days
    seconds = int(hour or 0) * 3600 + int(minute or 0) * 60 + int(second or 0)
    if sign:
        offset = int(oh) * 3600 + int(om or 0) * 60 + int(os_ or 0)
        seconds -= offset if sign == "+" else -offset
    return (
        days * temporal.MICROS_PER_DAY
        + seconds * temporal.MICROS_PER_SECOND
        + int((fraction or "0").ljust(6, "0"))
    )


def _text(data: Any) -> str:
    return bytes(data).decode("ascii")


class _Date(DateLoader):
    def load(self, data: Any) -> Any:
        try:
            return super().load(data)
        except psycopg.DataError:
            return parse_iso(_text(data), micros=False)


class _Timestamp(TimestampLoader):
    def load(self, data: Any) -> Any:
        try:
            return super().load(data)
        except psycopg.DataError:
            return parse_iso(_text(data), micros=True)


class _Timestamptz(TimestamptzLoader):
    def load(self, data: Any) -> Any:
        try:
            return super().load(data)
        except psycopg.DataError:
            return parse_iso(_text(data), micros=True)


def register_loaders(connection: psycopg.Connection[Any]) -> None:
    """Make ``connection`` load every legal date and timestamp (text format, as the named
    cursor fetches)."""
    connection.adapters.register_loader(DATE_OID, _Date)
    connection.adapters.register_loader(TIMESTAMP_OID, _Timestamp)
    connection.adapters.register_loader(TIMESTAMPTZ_OID, _Timestamptz)
