"""The type contract (docs/types.md) as data: per database type, how values are generated, how
they are written as SQL literals, and what an independent reader must find in XLSX and CSV.

Expectations are computed here from the generated Python values with the standard library
only, not with the exporter's own conversion code, so a bug there cannot hide itself.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

ZONE = "America/New_York"
LOCAL = ZoneInfo(ZONE)
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
MARK = "…[truncated]"
FIRST_DATE = date(1900, 3, 1)
PI = Decimal("3.14159265358979323846264338327950288419716939937510")


@dataclass(frozen=True)
class Edge:
    """A value Python's types cannot hold: its SQL literal and the texts each format shows."""

    literal: str
    xlsx: Any
    pg_csv: str


@dataclass(frozen=True)
class Kind:
    """One database type of the contract."""

    name: str
    sql_type: str
    values: st.SearchStrategy[Any]
    xlsx: Callable[[Any], Any]  # what python-calamine reads
    csv: Callable[[Any], Any]  # the csv module's text (a float: the number that text is)


def literal(value: Any, *, mysql: bool = False) -> str | None:
    """The text a value is inserted as (the column's cast makes it typed); instants in UTC,
    with ``+00`` for PostgreSQL and without for MariaDB (whose session zone is UTC)."""
    if value is None:
        return None
    if isinstance(value, Edge):
        return value.literal
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).replace("inf", "Infinity")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            naive = value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
            return naive if mysql else naive + "+00"
        return value.isoformat(sep=" ")
    return str(value)


# -- numbers ----------------------------------------------------------------------------------


def integer_xlsx(value: int) -> Any:
    return float(value) if abs(value) < 10**15 else str(value)


def decimal_text(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    return format(value.copy_abs() if value.is_zero() else value, "f")


def decimal_xlsx(value: Decimal) -> Any:
    """A number when a double holds it exactly with at most 15 significant digits."""
    text = decimal_text(value)
    if not value.is_finite() or len(value.normalize().as_tuple().digits) > 15:
        return text
    number = float(value)
    return number if (number != 0 and Decimal(repr(number)) == value) or value.is_zero() else text


def float32(value: float) -> float:
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:  # past float32's largest finite value
        return math.copysign(math.inf, value)


def shortest32(value: float) -> float:
    """The double of a float32's shortest decimal text (0.1 for the float32 nearest 0.1)."""
    value = float32(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if float32(float(text)) == value:
            return float(text)
    return value


def nonfinite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def float32_csv(value: float) -> Any:
    return shortest32(value) if math.isfinite(value) else nonfinite(value)


def float_csv(value: float) -> Any:
    return value if math.isfinite(value) else nonfinite(value)


def decimal30_text(value: Decimal) -> str:
    """MariaDB's DECIMAL(65, 30) text: always 30 decimal places."""
    with localcontext() as context:
        context.prec = 100
        return decimal_text(value.quantize(Decimal("1E-30")))


def mariadb_float(value: float) -> float:
    """MariaDB's text protocol sends FLOAT with 6 significant digits, as its own client shows
    it (a documented limit of the MariaDB source, docs/types.md)."""
    return float(f"{float32(value):.6g}")


def float32_xlsx(value: float) -> Any:
    return shortest32(value) if math.isfinite(value) else nonfinite(value)


def float_xlsx(value: float) -> Any:
    return value if math.isfinite(value) else nonfinite(value)


# -- text -------------------------------------------------------------------------------------


def clean(text: str) -> str:
    return XML_ILLEGAL.sub("", text)


def excel_text(text: str) -> str:
    """Cleaned, then cut to 32,767 UTF-16 code units (a surrogate pair never split)."""
    text = clean(text)
    if len(text.encode("utf-16-le")) // 2 <= 32_767:
        return text
    kept = ""
    for char in text:
        if len((kept + char).encode("utf-16-le")) // 2 > 32_767 - len(MARK):
            break
        kept += char
    return kept + MARK


def csv_text(text: str) -> str:
    text = clean(text)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


# -- dates and times --------------------------------------------------------------------------


def date_xlsx(value: date | Edge) -> Any:
    if isinstance(value, Edge):
        return value.xlsx
    return value if value >= FIRST_DATE else value.isoformat()


def timestamp_xlsx(local: datetime) -> Any:
    """Date-time cells resolve to the millisecond; before 1900-03-01 ISO text."""
    return local if local >= datetime(1900, 3, 1) else local.isoformat()


def pg_fraction(text: str) -> str:
    """PostgreSQL prints fractional seconds without trailing zeros."""
    if "." in text[11:]:
        text = text.rstrip("0").rstrip(".")
    return text


def pg_offset(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    text = f"{sign}{seconds // 3600:02d}"
    if seconds % 3600:
        text += f":{seconds // 60 % 60:02d}"
    if seconds % 60:
        text += f":{seconds % 60:02d}"
    return text


def pg_timestamptz(value: datetime) -> str:
    local = value.astimezone(LOCAL)
    offset = local.utcoffset()
    assert offset is not None
    return pg_fraction(local.replace(tzinfo=None).isoformat(sep=" ")) + pg_offset(offset)


def either(edge: Callable[[Edge], Any], plain: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: edge(value) if isinstance(value, Edge) else plain(value)


def millis(values: st.SearchStrategy[datetime]) -> st.SearchStrategy[datetime]:
    return values.map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


# -- strategies -------------------------------------------------------------------------------

# No NUL (PostgreSQL text cannot hold it) and no lone surrogates (not UTF-8); the 32,767-unit
# edges are in the edge tests (large values make hypothesis's reports slow).
TEXTS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24
) | st.sampled_from(["", "=1+2", "-x", " lead and trail ", "a\r\nb", "_x0041_", "&<>\"'"])
DECIMALS_FREE = st.decimals(allow_nan=False, allow_infinity=False).filter(
    lambda d: -60 <= d.as_tuple().exponent <= 60  # type: ignore[operator]
) | st.sampled_from(
    [Decimal("1E-20"), PI, Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"),
     Decimal("123456789012345"), Decimal("1234567890123456"), Decimal("0.1"), Decimal("-0.000")]
)  # fmt: skip
DECIMALS_12_2 = st.decimals(min_value=-(10**10) + 1, max_value=10**10 - 1, places=2)
DECIMALS_65_30 = st.decimals(min_value=-(10**34), max_value=10**34, places=30) | st.sampled_from(
    [Decimal("1E-20"), Decimal("3.141592653589793238462643383280"), Decimal("0.1")]
)
FLOAT32 = st.floats(width=32, allow_subnormal=False)
FLOAT32_FINITE = st.floats(width=32, allow_subnormal=False, allow_nan=False, allow_infinity=False)
FLOAT64 = st.floats(allow_subnormal=False)
FLOAT64_FINITE = st.floats(allow_subnormal=False, allow_nan=False, allow_infinity=False)
BIGINTS = st.integers(-(2**63), 2**63 - 1) | st.sampled_from(
    [10**15 - 1, 10**15, -(10**15) + 1, -(10**15), 2**53 + 1]
)

PG_DATE_EDGES = [
    Edge("infinity", "infinity", "infinity"),
    Edge("-infinity", "-infinity", "-infinity"),
    Edge("0044-03-15 BC", "-0043-03-15", "0044-03-15 BC"),
    Edge("10000-01-01", "+10000-01-01", "10000-01-01"),
]
PG_TIMESTAMP_EDGES = [
    Edge("9999-12-31 23:59:59.999999", "9999-12-31T23:59:59.999999", "9999-12-31 23:59:59.999999"),
    Edge("9999-12-31 23:59:59.9995", "9999-12-31T23:59:59.999500", "9999-12-31 23:59:59.9995"),
    Edge("9999-12-31 23:59:59.999", datetime(9999, 12, 31, 23, 59, 59, 999000),
         "9999-12-31 23:59:59.999"),
    Edge("infinity", "infinity", "infinity"),
    Edge("-infinity", "-infinity", "-infinity"),
    Edge("0001-01-01 00:00:00 BC", "0000-01-01T00:00:00", "0001-01-01 00:00:00 BC"),
    Edge("1900-02-28 23:59:59", "1900-02-28T23:59:59", "1900-02-28 23:59:59"),
]  # fmt: skip
PG_TIMESTAMPTZ_EDGES = [
    # year 1 UTC is year 0 (1 BC) on New York's local mean time (-04:56:02)
    Edge("0001-01-01 00:00:00+00", "0000-12-31T19:03:58", "0001-12-31 19:03:58-04:56:02 BC"),
    Edge("infinity", "infinity", "infinity"),
    Edge("10000-01-01 04:59:59.9996+00", "9999-12-31T23:59:59.999600",
         "9999-12-31 23:59:59.9996-05"),
]  # fmt: skip


def _dates(low: date, edges: list[Edge]) -> st.SearchStrategy[Any]:
    plain = st.dates(min_value=low) | st.sampled_from([FIRST_DATE, date(1900, 2, 28)])
    return plain | st.sampled_from(edges) if edges else plain


PG_KINDS = [
    Kind("i2", "smallint", st.integers(-(2**15), 2**15 - 1), integer_xlsx, str),
    Kind("i4", "integer", st.integers(-(2**31), 2**31 - 1), integer_xlsx, str),
    Kind("i8", "bigint", BIGINTS, integer_xlsx, str),
    Kind("num", "numeric", DECIMALS_FREE, decimal_xlsx, decimal_text),
    Kind("num12", "numeric(12,2)", DECIMALS_12_2, decimal_xlsx, decimal_text),
    Kind("f4", "real", FLOAT32, float32_xlsx, float32_csv),
    Kind("f8", "double precision", FLOAT64, float_xlsx, float_csv),
    Kind("b", "boolean", st.booleans(), lambda v: v, lambda v: "true" if v else "false"),
    Kind("t", "text", TEXTS, excel_text, csv_text),
    Kind("d", "date", _dates(date(1, 1, 1), PG_DATE_EDGES), date_xlsx,
         either(lambda e: e.pg_csv, date.isoformat)),
    Kind("ts", "timestamp",
         millis(st.datetimes()) | st.sampled_from(PG_TIMESTAMP_EDGES),
         either(lambda e: e.xlsx, timestamp_xlsx),
         either(lambda e: e.pg_csv, lambda v: pg_fraction(v.isoformat(sep=" ")))),
    Kind("tz", "timestamptz",
         millis(st.datetimes(min_value=datetime(1901, 1, 1), timezones=st.just(UTC)))
         | st.sampled_from(PG_TIMESTAMPTZ_EDGES),
         either(lambda e: e.xlsx,
                lambda v: timestamp_xlsx(v.astimezone(LOCAL).replace(tzinfo=None))),
         either(lambda e: e.pg_csv, pg_timestamptz)),
]  # fmt: skip

MY_KINDS = [
    Kind("i2", "SMALLINT", st.integers(-(2**15), 2**15 - 1), integer_xlsx, str),
    Kind("i4", "INT", st.integers(-(2**31), 2**31 - 1), integer_xlsx, str),
    Kind("i8", "BIGINT", BIGINTS, integer_xlsx, str),
    Kind("u8", "BIGINT UNSIGNED", st.integers(0, 2**64 - 1), integer_xlsx, str),
    Kind("num", "DECIMAL(65,30)", DECIMALS_65_30, decimal_xlsx, decimal30_text),
    Kind("num12", "DECIMAL(12,2)", DECIMALS_12_2, decimal_xlsx, decimal_text),
    Kind("f4", "FLOAT", FLOAT32_FINITE, mariadb_float, mariadb_float),
    Kind("f8", "DOUBLE", FLOAT64_FINITE, float_xlsx, float_csv),
    Kind("b", "BOOLEAN", st.booleans(), lambda v: v, lambda v: "true" if v else "false"),
    Kind("t", "LONGTEXT", TEXTS, excel_text, csv_text),
    Kind("d", "DATE", _dates(date(1000, 1, 1), []), date_xlsx, date.isoformat),
    Kind("ts", "DATETIME(6)", millis(st.datetimes(min_value=datetime(1000, 1, 1))),
         timestamp_xlsx, datetime.isoformat),
    Kind("tz", "TIMESTAMP(6) NULL",
         millis(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2038, 1, 18),
                             timezones=st.just(UTC))),
         lambda v: timestamp_xlsx(v.astimezone(LOCAL).replace(tzinfo=None)),
         lambda v: v.astimezone(LOCAL).isoformat()),
]  # fmt: skip


def rows_of(kinds: list[Kind]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Rows of one value (or NULL) per kind."""
    row = st.tuples(*(st.none() | kind.values for kind in kinds))
    return st.lists(row, min_size=1, max_size=6)


def edge_rows(kinds: list[Kind], edges: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    """Every listed edge value of every kind, one per row (NULL where a kind has no more)."""
    height = max(len(values) for values in edges.values())
    return [
        tuple(edges.get(kind.name, [])[i] if i < len(edges.get(kind.name, [])) else None
              for kind in kinds)
        for i in range(height)
    ]  # fmt: skip
