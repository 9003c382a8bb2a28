"""The one mapping from Arrow column types to spreadsheet cells and to CSV text.

Every source delivers Arrow batches, every writer calls this module, so a value looks the same in
every file whatever database it came from. The contract (docs/types.md has the table per
database type): a value is written as a typed cell only when the spreadsheet holds it exactly;
anything else becomes its exact text, never a rounded number and never a failed export.

- integers: numbers; with more than 15 digits, text (Excel keeps 15 significant digits, so
  ids would be rounded otherwise).
- decimals (``decimal128`` and :class:`DecimalText`, the exact text of an unbounded numeric):
  numbers when they have at most 15 significant digits and a double holds them exactly,
  otherwise text with the exact digits; NaN and infinities as text.
- floats: numbers (a double is written bit-exact; a float32 as its shortest float32 form, ``0.1``
  not ``0.10000000149011612``); NaN and infinities as the text ``NaN``, ``Infinity``,
  ``-Infinity``.
- dates: real dates (format ``yyyy-mm-dd``) from 1900-03-01 to 9999-12-31; outside (Excel's
  1900 date system counts a 29 February 1900 that never existed, and ends at 9999), ISO text,
  infinities as ``infinity``/``-infinity`` (see :mod:`exportd.exporter.temporal`).
- timestamps: real datetimes (format ``yyyy-mm-dd hh:mm:ss``), with a time zone first converted to
  the export's zone (the catalog's ``timezone``, UTC by default). Same range rule, where the last
  date-time cell is 9999-12-31 23:59:59.9994999 (later ones would show as 10000-01-01 once Excel
  rounds to the millisecond). Excel resolves date-time cells to the millisecond.
- times: ISO text ``hh:mm:ss[.ffffff]``.
- booleans: booleans. NULL: an empty cell.
- text: characters illegal in XML 1.0 removed (TAB, LF and CR are kept); longer than Excel's
  32,767 UTF-16 code units, cut and ending in ``…[truncated]``. Always a string cell, never a
  formula.
- binary: lowercase hexadecimal text (cut like text when too long).
- anything else (lists, structs, ...): its Python text form, treated as text.

For CSV the same rules give text: numbers keep all their digits (a float32 its shortest form),
dates and timestamps are ISO 8601 (a timestamp with a zone carries its offset; years beyond
0000-9999 expanded, ``+10000-01-01``), booleans are ``true``/``false``; text is cleaned the same
way but never cut (CSV has no cell limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from exportd.exporter import temporal

EXCEL_MAX_TEXT = 32_767  # UTF-16 code units
TRUNCATION_MARK = "…[truncated]"
_KEPT_UNITS = EXCEL_MAX_TEXT - len(TRUNCATION_MARK.encode("utf-16-le")) // 2  # of a cut text
EXCEL_MAX_DIGITS = 15
EXCEL_FIRST_SAFE_DATE = date(1900, 3, 1)
EXCEL_LAST_DATE = date(9999, 12, 31)
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
# RE2 syntax (Arrow's regex engine): the characters XML 1.0 does not allow anywhere.
XML_ILLEGAL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{fffe}\x{ffff}]"
_UNIX_EPOCH = date(1970, 1, 1)
FIRST_SAFE_DAY = (EXCEL_FIRST_SAFE_DATE - _UNIX_EPOCH).days
LAST_EXCEL_DAY = (EXCEL_LAST_DATE - _UNIX_EPOCH).days
FIRST_SAFE_MICROS = FIRST_SAFE_DAY * temporal.MICROS_PER_DAY
# Excel shows date-times rounded to the millisecond: from half a millisecond before the end of
# its last day on, a date-time cell would read 10000-01-01.
END_SAFE_MICROS = (LAST_EXCEL_DAY + 1) * temporal.MICROS_PER_DAY - 500

# What the XLSX writer receives per cell: the Python type says which kind of cell to write.
Cell: TypeAlias = bool | int | float | str | date | datetime | None


class NumberText(str):
    """An exact decimal number as text: written unquoted by the CSV writer (``csv`` counts a
    value with ``__float__`` as a number and writes its ``str``)."""

    __slots__ = ()

    def __float__(self) -> float:
        return float(str(self))


# What the CSV writer receives: numbers stay numbers (written unquoted), the rest is text.
Field: TypeAlias = int | float | Decimal | NumberText | str | None


class DecimalText(pa.ExtensionType):  # type: ignore[misc]
    """A decimal column as the exact text the database printed (``1.50``, ``1E-20`` as
    ``0.00000000000000000001``, ``NaN``): for decimals no Arrow decimal holds, like
    PostgreSQL's ``numeric`` without precision or MySQL's ``DECIMAL(65, 30)``."""

    def __init__(self) -> None:
        super().__init__(pa.string(), "exportd.decimal_text")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> DecimalText:
        return cls()


DECIMAL_TEXT = DecimalText()


def is_decimal_text(arrow_type: pa.DataType) -> bool:
    return isinstance(arrow_type, DecimalText)


def decimal_text_array(texts: list[str | None]) -> pa.Array:
    storage = pa.array(texts, pa.string())
    return pa.ExtensionArray.from_storage(DECIMAL_TEXT, storage)


def nonfinite_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def cut_for_excel(text: str) -> str:
    """Text within Excel's 32,767 UTF-16 code units, cut and marked when longer (never in the
    middle of a surrogate pair). Counted and cut on the UTF-16 encoding: a loop over the
    characters took ~2 ms per long text, the encoding a few microseconds."""
    if len(text) <= EXCEL_MAX_TEXT // 2:
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    if len(units) <= 2 * EXCEL_MAX_TEXT:
        return text
    kept = units[: 2 * _KEPT_UNITS]
    if 0xD800 <= int.from_bytes(kept[-2:], "little") <= 0xDBFF:  # half of a pair: drop it
        kept = kept[:-2]
    return kept.decode("utf-16-le", "surrogatepass") + TRUNCATION_MARK


def is_text_type(arrow_type: pa.DataType) -> bool:
    """Columns whose values are free text (the ones CSV formula neutralizing applies to)."""
    return not (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or is_decimal_text(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_temporal(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _plain(array: pa.Array) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        return array.dictionary_decode()
    return array


def _clean_text(array: pa.Array) -> list[str | None]:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())
    cleaned: list[str | None] = pc.replace_substring_regex(array, XML_ILLEGAL, "").to_pylist()
    return cleaned


def _hex(array: pa.Array) -> list[str | None]:
    return [None if v is None else v.hex() for v in array.to_pylist()]


def _integer_cell(value: int | None) -> Cell:
    if value is None:
        return None
    return str(value) if abs(value) >= 10**EXCEL_MAX_DIGITS else value


def decimal_number(text: str) -> float | None:
    """The double an exact decimal text is, when Excel holds it exactly; else None.

    Exactly: at most 15 significant digits and the double's shortest form is the same number
    (which rules out underflow, overflow, NaN and infinities)."""
    try:
        exact = Decimal(text)
    except InvalidOperation:
        return None
    if not exact.is_finite() or len(exact.normalize().as_tuple().digits) > EXCEL_MAX_DIGITS:
        return None
    number = float(exact)
    return number if math.isfinite(number) and Decimal(repr(number)) == exact else None


def _decimal_cell(value: Decimal | str | None) -> Cell:
    if value is None:
        return None
    text = decimal_text(value)
    number = decimal_number(text)
    return text if number is None else number


def decimal_text(value: Decimal | str) -> str:
    """The exact text of a decimal: plain digits, never an exponent (``1E-20`` is
    ``0.00000000000000000001``), NaN and infinities as ``NaN``, ``Infinity``, ``-Infinity``."""
    if isinstance(value, str):
        return value
    if not value.is_finite():
        return "NaN" if value.is_nan() else ("Infinity" if value > 0 else "-Infinity")
    return format(value, "f")


def _float_values(array: pa.Array) -> list[float | None]:
    """Floats as Python floats; a float32 as the double of its shortest text (``0.1``)."""
    if pa.types.is_float64(array.type):
        return list(array.to_pylist())
    texts = pc.cast(array, pa.string()).to_pylist()
    return [None if text is None else float(text) for text in texts]


def _float_cell(value: float | None) -> Cell:
    if value is None:
        return None
    return value if math.isfinite(value) else nonfinite_text(value)


def date_cell(days: int | None) -> Cell:
    """A date (days since 1970) as a date cell, or its exact text outside Excel's range."""
    if days is None:
        return None
    if FIRST_SAFE_DAY <= days <= LAST_EXCEL_DAY:
        return _UNIX_EPOCH + timedelta(days=days)
    return temporal.date_text(days)


def datetime_cell(micros: int | None) -> Cell:
    """A wall-clock time (microseconds since 1970) as a date-time cell, or its exact text."""
    if micros is None:
        return None
    if FIRST_SAFE_MICROS <= micros < END_SAFE_MICROS:
        return datetime(1970, 1, 1) + timedelta(microseconds=micros)
    return temporal.timestamp_text(micros)


def _time_texts(array: pa.Array) -> list[str | None]:
    if pa.types.is_time64(array.type) and array.type.unit == "ns":
        array = pc.cast(array, pa.time64("us"), safe=False)
    return [None if v is None else v.isoformat() for v in array.to_pylist()]


def spreadsheet_cells(array: pa.Array, zone: str = "UTC") -> list[Cell]:
    """One column of Arrow values as XLSX cell values (see the module rules)."""
    array = _plain(array)
    kind = array.type
    if pa.types.is_null(kind):
        return [None] * len(array)
    if pa.types.is_boolean(kind):
        return list(array.to_pylist())
    if pa.types.is_integer(kind):
        return [_integer_cell(v) for v in array.to_pylist()]
    if pa.types.is_decimal(kind):
        return [_decimal_cell(v) for v in array.to_pylist()]
    if is_decimal_text(kind):
        return [_decimal_cell(v) for v in array.storage.to_pylist()]
    if pa.types.is_floating(kind):
        return [_float_cell(v) for v in _float_values(array)]
    if pa.types.is_timestamp(kind):
        local, _ = temporal.wall_clock_micros(array, zone)
        return [datetime_cell(v) for v in local.to_pylist()]
    if pa.types.is_date(kind):
        return [date_cell(v) for v in temporal.date_days(array).to_pylist()]
    if pa.types.is_time(kind):
        return list(_time_texts(array))
    if _is_binary(kind):
        return [None if v is None else cut_for_excel(v) for v in _hex(array)]
    return [None if v is None else cut_for_excel(v) for v in _clean_text(array)]


def text_fields(array: pa.Array, zone: str = "UTC") -> list[Field]:
    """One column of Arrow values as CSV fields (see the module rules)."""
    array = _plain(array)
    kind = array.type
    if pa.types.is_null(kind):
        return [None] * len(array)
    if pa.types.is_boolean(kind):
        return [None if v is None else ("true" if v else "false") for v in array.to_pylist()]
    if pa.types.is_integer(kind):
        return list(array.to_pylist())
    if pa.types.is_decimal(kind) or is_decimal_text(kind):
        values = array.storage if is_decimal_text(kind) else array
        return [_decimal_field(v) for v in values.to_pylist()]
    if pa.types.is_floating(kind):
        return [_float_field(v) for v in _float_values(array)]
    if pa.types.is_timestamp(kind):
        return _timestamp_texts(array, zone)
    if pa.types.is_date(kind):
        days = temporal.date_days(array).to_pylist()
        return [None if v is None else temporal.date_text(v) for v in days]
    if pa.types.is_time(kind):
        return list(_time_texts(array))
    if _is_binary(kind):
        return list(_hex(array))
    return list(_clean_text(array))


def _decimal_field(value: Decimal | str | None) -> Field:
    if value is None:
        return None
    text = decimal_text(value)
    return NumberText(text) if text[-1].isdigit() else text


def _float_field(value: float | None) -> Field:
    if value is None:
        return None
    return value if math.isfinite(value) else nonfinite_text(value)


def _timestamp_texts(array: pa.Array, zone: str) -> list[Field]:
    local, utc = temporal.wall_clock_micros(array, zone)
    if array.type.tz is None:
        return [None if v is None else temporal.timestamp_text(v) for v in local.to_pylist()]
    offsets = pc.subtract(local, utc).to_pylist()
    return [
        None if v is None else temporal.timestamp_text(v, offset)
        for v, offset in zip(local.to_pylist(), offsets, strict=True)
    ]


def _is_binary(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def display_width(values: list[Any], header: str, *, minimum: int = 8, maximum: int = 60) -> int:
    """A column width (in characters) that fits the header and typical values."""
    widest = len(header)
    for value in values[:200]:
        widest = max(widest, len(_display_text(value)))
    return max(minimum, min(maximum, widest + 2))


_DISPLAY: dict[type, Callable[[Any], str]] = {
    datetime: lambda _: "yyyy-mm-dd hh:mm:ss",
    date: lambda _: "yyyy-mm-dd",
}


def _display_text(value: Any) -> str:
    if value is None:
        return ""
    render = _DISPLAY.get(type(value), str)
    return render(value)
