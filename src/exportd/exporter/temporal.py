"""Dates and timestamps as integers, so no value of any database can crash an export.

Python's ``date`` and ``datetime`` hold years 1 to 9999 only; databases hold more: PostgreSQL
and DuckDB have ``infinity`` and ``-infinity``, years BC and years past 9999, and a timestamp
in year 1 becomes year 0 once shown in a zone west of UTC. Every such value arrives in Arrow as
an integer (days, or microseconds since 1970) and is handled here as one: converted to a zone's
wall clock by Arrow's kernels, and written as text by pure integer arithmetic.

Text forms: ISO 8601 (``2024-01-31``, ``2024-01-31T12:00:00.5+01:00`` as Python's
``isoformat``); years outside 0000-9999 in ISO 8601's expanded form (``+10000-01-01``,
``-0043-03-15``, astronomical numbering: year 0 is 1 BC); infinities as PostgreSQL spells them,
``infinity`` and ``-infinity``. DuckDB's sentinels mark infinities (days ``±(2^31-1)``,
microseconds ``±(2^63-1)``); the PostgreSQL source gives the same (see its loaders).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

DATE_INFINITY = 2**31 - 1
MICROS_INFINITY = 2**63 - 1
MICROS_PER_DAY = 86_400_000_000
MICROS_PER_SECOND = 1_000_000
# Arrow's zone conversion applies the tz database's listed transitions only (up to 2037): later
# summers would get standard time. Python's zoneinfo follows the zone's rule for any year.
LISTED_TRANSITIONS_END = (datetime(2037, 1, 1) - datetime(1970, 1, 1)) // timedelta(microseconds=1)
PYTHON_END = (datetime(9999, 12, 30) - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01.

    H. Hinnant's ``civil_from_days``, exact for every integer."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (the inverse of the above)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def year_text(year: int) -> str:
    return f"{year:04d}" if 0 <= year <= 9999 else f"{year:+05d}"


def date_text(days: int) -> str:
    if abs(days) == DATE_INFINITY:
        return "infinity" if days > 0 else "-infinity"
    year, month, day = civil_from_days(days)
    return f"{year_text(year)}-{month:02d}-{day:02d}"


def offset_text(offset_micros: int) -> str:
    sign = "-" if offset_micros < 0 else "+"
    seconds = abs(offset_micros) // MICROS_PER_SECOND
    text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}"
    return text + (f":{seconds % 60:02d}" if seconds % 60 else "")


def timestamp_text(micros: int, offset_micros: int | None = None) -> str:
    """ISO 8601 of a wall-clock time, with its UTC offset when one is given."""
    if abs(micros) == MICROS_INFINITY:
        return "infinity" if micros > 0 else "-infinity"
    days, rest = divmod(micros, MICROS_PER_DAY)
    seconds, fraction = divmod(rest, MICROS_PER_SECOND)
    text = f"{date_text(days)}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if fraction:
        text += f".{fraction:06d}"
    return text if offset_micros is None else text + offset_text(offset_micros)


def date_days(array: pa.Array) -> pa.Array:
    """A date column as int32 days since 1970 (date64 milliseconds converted)."""
    if pa.types.is_date64(array.type):
        array = pc.cast(array, pa.date32(), safe=False)
    return pc.cast(array, pa.int32())


def utc_micros(array: pa.Array) -> pa.Array:
    """A timestamp column as int64 microseconds (its own time base: UTC when zoned)."""
    if array.type.unit != "us":
        array = pc.cast(array, pa.timestamp("us", tz=array.type.tz), safe=False)
    return pc.cast(array, pa.int64())


def wall_clock_micros(array: pa.Array, zone: str) -> tuple[pa.Array, pa.Array]:
    """(wall-clock microseconds in ``zone``, UTC microseconds) of a timestamp column.

    Naive timestamps are wall-clock times already; infinities stay infinities."""
    micros = utc_micros(array)
    if array.type.tz is None:
        return micros, micros
    infinite = pc.equal(pc.abs(micros), MICROS_INFINITY)
    has_infinity = bool(pc.any(infinite).as_py())
    finite = pc.if_else(infinite, 0, micros) if has_infinity else micros
    zoned = pc.cast(finite, pa.timestamp("us", tz=zone))
    local = pc.cast(pc.local_timestamp(zoned), pa.int64())
    if has_infinity:
        local = pc.if_else(infinite, micros, local)
    late = pc.and_(pc.greater_equal(micros, LISTED_TRANSITIONS_END), pc.less(micros, PYTHON_END))
    if pc.any(late).as_py():
        local = _late_wall_clock(micros, local, pc.fill_null(late, False), ZoneInfo(zone))
    return local, micros


def _late_wall_clock(micros: pa.Array, local: pa.Array, late: pa.Array, zone: ZoneInfo) -> pa.Array:
    """Wall-clock times after 2037 by Python's zoneinfo (rare values, one by one)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    corrected = []
    for value in pc.filter(micros, late).to_pylist():
        moment = epoch + timedelta(microseconds=value)
        offset = moment.astimezone(zone).utcoffset() or timedelta(0)
        corrected.append(value + offset // timedelta(microseconds=1))
    return pc.replace_with_mask(local, late, pa.array(corrected, pa.int64()))
