"""Cron expressions and their slots in an IANA time zone, with daylight-saving rules we choose.

A five-field expression (minute hour day-of-month month day-of-week) as Vixie cron reads it:
``*``, lists, ranges, steps, month and weekday names, ``7`` for Sunday, the ``@hourly`` /
``@daily`` / ``@midnight`` / ``@weekly`` / ``@monthly`` / ``@yearly`` / ``@annually`` macros,
and "either day field" when both day fields are restricted. No seconds field, no ``?``, ``L``,
``W`` or ``#``: an expression a Kubernetes CronJob accepts means the same here.

Slots are matched on the wall clock of the time zone and then placed on the time line:

- **Spring forward** (a local time that does not exist, e.g. 02:30 in Europe/Berlin on the last
  Sunday of March): the slot runs once, at the wall time moved forward by the gap (02:30 runs at
  03:30 CEST, the instant ``02:30`` names with the offset in force before the change).
- **Fall back** (a local time that happens twice, e.g. 02:30 on the last Sunday of October): the
  slot runs once, at its first occurrence (summer time). Wall times are matched once each, so a
  schedule of every hour has no second 02:00 on that day.

Two wall times that land on the same instant (02:30 moved to 03:30, and 03:30 itself) are one
slot. Own code rather than a library because the DST rules above are the contract, and a parser
of five fields is short.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
WEEKDAYS = {name: (i + 1) % 7 for i, name in enumerate(calendar.day_abbr)}  # MON=1 .. SUN=0
# The largest shift of a wall clock by a time-zone change: a window this wide around a wall time
# holds every instant it can land on.
MAX_SHIFT = timedelta(hours=3)
# How far back the slots of a schedule are looked for (after downtime, or since creation).
MAX_LOOKBACK = timedelta(days=100)
# How far ahead the next slot is looked for: "30 2 29 2 *" fires within 8 years.
MAX_LOOKAHEAD_DAYS = 366 * 8 + 2


class CronError(ValueError):
    """An expression or time zone that cannot be used; the message says which part is wrong."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, {k.upper(): v for k, v in MONTHS.items()}),
    _Field("day of week", 0, 7, {k.upper(): v for k, v in WEEKDAYS.items()}),
)


def _value(text: str, field: _Field) -> int:
    if field.names and text.upper() in field.names:
        return field.names[text.upper()]
    if not text.isdigit():
        raise CronError(f"{field.name}: {text!r} is not a number")
    number = int(text)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.name}: {number} is outside {field.low}-{field.high}")
    return number


def _part(part: str, field: _Field) -> set[int]:
    body, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronError(f"{field.name}: step {step_text!r} must be a positive number")
        step = int(step_text)
    if body == "*":
        low, high = field.low, field.high
    elif "-" in body:
        start, _, end = body.partition("-")
        low, high = _value(start, field), _value(end, field)
        if low > high:
            raise CronError(f"{field.name}: range {body!r} runs backwards")
    else:
        low = _value(body, field)
        high = field.high if step_text else low
    return set(range(low, high + 1, step))


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    if not text:
        raise CronError(f"{field.name}: empty")
    values: set[int] = set()
    for part in text.split(","):
        values |= _part(part, field)
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = " ".join(expression.split())
        fields = MACROS.get(text.lower(), text).split(" ")
        if len(fields) != 5:
            raise CronError(
                f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
            )
        parsed = [_parse_field(value, field) for value, field in zip(fields, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in parsed[4])
        return cls(
            text,
            parsed[0],
            parsed[1],
            parsed[2],
            parsed[3],
            weekdays,
            fields[2].startswith("*"),
            fields[4].startswith("*"),
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # Vixie cron: both restricted means either
            return in_month and in_week
        return in_month or in_week

    def walls_from(self, start: datetime, until_day: date) -> Iterator[datetime]:
        """Matching wall-clock times (naive) from ``start`` on, in order, up to ``until_day``."""
        day = start.date()
        while day <= until_day:
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = datetime.combine(day, time(hour, minute))
                        if wall >= start:
                            yield wall
            day += timedelta(days=1)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``CronError`` when unknown)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise CronError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The moment a wall time names: its first occurrence, or moved forward over a gap."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)


@dataclass(frozen=True)
class Timetable:
    """A cron expression in a time zone: the instants it fires at."""

    cron: Cron
    tz: ZoneInfo

    @classmethod
    def of(cls, expression: str, time_zone: str) -> Timetable:
        return cls(Cron.parse(expression), zone(time_zone))

    def slots_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Every slot in ``(after, until]``, in order, each once (UTC); looks back at most
        :data:`MAX_LOOKBACK` from ``until``."""
        after = max(after, until - MAX_LOOKBACK)
        if until <= after:
            return []
        start = _wall(after, self.tz) - MAX_SHIFT
        last_day = (_wall(until, self.tz) + MAX_SHIFT).date()
        found: set[datetime] = set()
        for wall in self.cron.walls_from(start, last_day):
            moment = instant(wall, self.tz)
            if after < moment <= until:
                found.add(moment)
        return sorted(found)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first slot after ``moment`` (UTC); ``None`` when it never fires (e.g. Feb 30)."""
        start = _wall(moment, self.tz) - MAX_SHIFT
        until_day = start.date() + timedelta(days=MAX_LOOKAHEAD_DAYS)
        best: datetime | None = None
        best_wall = start
        for wall in self.cron.walls_from(start, until_day):
            if best is not None and wall > best_wall + 2 * MAX_SHIFT:
                break
            candidate = instant(wall, self.tz)
            if candidate > moment and (best is None or candidate < best):
                best, best_wall = candidate, wall
        return best
