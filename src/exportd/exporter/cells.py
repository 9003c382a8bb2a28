"""The one mapping from Arrow column types to spreadsheet cells and to CSV text.

Every source delivers Arrow batches, every writer calls this module, so a value looks the same in
every file whatever database it came from. The rules (what a spreadsheet user expects):

- integers: numbers; with more than 15 digits, text (Excel keeps 15 significant digits, so
  ids would be rounded otherwise).
- decimals: numbers; with more than 15 significant digits, text with the exact digits.
- floats: numbers; NaN and infinities, which a spreadsheet cannot hold, as the text ``NaN``,
  ``Infinity`` and ``-Infinity``.
- dates: real dates (format ``yyyy-mm-dd``); before 1900-03-01 ISO text, because Excel's
  1900 date system counts a 29 February 1900 that never existed.
- timestamps: real datetimes (format ``yyyy-mm-dd hh:mm:ss``); with a time zone, first
  converted to the export's zone (the catalog's ``timezone``, UTC by default). Same 1900 rule.
- times: ISO text ``hh:mm:ss[.ffffff]``.
- booleans: booleans. NULL: an empty cell.
- text: characters illegal in XML 1.0 removed (TAB, LF and CR are kept); longer than Excel's
  32,767 characters, cut and ending in ``…[truncated]``. Always a string cell, never a formula.
- binary: lowercase hexadecimal text (cut like text when too long).
- anything else (lists, structs, ...): its Python text form, treated as text.

For CSV the same rules give text: numbers keep all their digits, dates and timestamps are ISO 8601
(a timestamp with a zone carries its offset), booleans are ``true``/``false``; text is cleaned
the same way but never cut (CSV has no cell limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

EXCEL_MAX_TEXT = 32_767
TRUNCATION_MARK = "…[truncated]"
EXCEL_MAX_DIGITS = 15
EXCEL_FIRST_SAFE_DATE = date(1900, 3, 1)
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
# RE2 syntax (Arrow's regex engine): the characters XML 1.0 does not allow anywhere.
XML_ILLEGAL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{fffe}\x{ffff}]"

# What the XLSX writer receives per cell: the Python type says which kind of cell to write.
Cell: TypeAlias = bool | int | float | str | date | datetime | None
# What the CSV writer receives: numbers stay numbers (written unquoted), the rest is text.
Field: TypeAlias = int | float | Decimal | str | None


def nonfinite_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def cut_for_excel(text: str) -> str:
    if len(text) <= EXCEL_MAX_TEXT:
        return text
    return text[: EXCEL_MAX_TEXT - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def is_text_type(arrow_type: pa.DataType) -> bool:
    """Columns whose values are free text (the ones CSV formula neutralizing applies to)."""
    return not (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_temporal(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _plain(array: pa.Array) -> pa.Array:
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


def _wall_clock(array: pa.Array, zone: str) -> pa.Array:
    """Timestamps as naive wall-clock times: zoned ones converted to ``zone`` first."""
    unit_type = array.type
    if unit_type.unit == "ns":
        array = pc.cast(array, pa.timestamp("us", tz=unit_type.tz), safe=False)
    if array.type.tz is None:
        return array
    return pc.local_timestamp(array.cast(pa.timestamp("us", tz=zone)))


def _integer_cell(value: int | None) -> Cell:
    if value is None:
        return None
    return str(value) if abs(value) >= 10**EXCEL_MAX_DIGITS else value


def _decimal_cell(value: Decimal | None) -> Cell:
    if value is None:
        return None
    if len(value.normalize().as_tuple().digits) > EXCEL_MAX_DIGITS:
        return format(value, "f")
    return float(value)


def _float_cell(value: float | None) -> Cell:
    if value is None:
        return None
    return value if math.isfinite(value) else nonfinite_text(value)


def _temporal_cell(value: date | None) -> Cell:
    if value is None:
        return None
    day = value.date() if isinstance(value, datetime) else value
    return value.isoformat() if day < EXCEL_FIRST_SAFE_DATE else value


def _time_text(value: time | None) -> str | None:
    return None if value is None else value.isoformat()


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
    if pa.types.is_floating(kind):
        return [_float_cell(v) for v in array.to_pylist()]
    if pa.types.is_timestamp(kind):
        return [_temporal_cell(v) for v in _wall_clock(array, zone).to_pylist()]
    if pa.types.is_date(kind):
        return [_temporal_cell(v) for v in array.to_pylist()]
    if pa.types.is_time(kind):
        return list(_time_text_values(array))
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
    if pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return list(array.to_pylist())
    if pa.types.is_floating(kind):
        return [_float_field(v) for v in array.to_pylist()]
    if pa.types.is_timestamp(kind):
        return _timestamp_texts(array, zone)
    if pa.types.is_date(kind):
        return [None if v is None else v.isoformat() for v in array.to_pylist()]
    if pa.types.is_time(kind):
        return list(_time_text_values(array))
    if _is_binary(kind):
        return list(_hex(array))
    return list(_clean_text(array))


def _float_field(value: float | None) -> Field:
    if value is None:
        return None
    return value if math.isfinite(value) else nonfinite_text(value)


def _timestamp_texts(array: pa.Array, zone: str) -> list[Field]:
    if array.type.unit == "ns":
        array = pc.cast(array, pa.timestamp("us", tz=array.type.tz), safe=False)
    if array.type.tz is None:
        return [None if v is None else v.isoformat() for v in array.to_pylist()]
    target = ZoneInfo(zone)
    return [None if v is None else v.astimezone(target).isoformat() for v in array.to_pylist()]


def _time_text_values(array: pa.Array) -> list[str | None]:
    if pa.types.is_time64(array.type) and array.type.unit == "ns":
        array = pc.cast(array, pa.time64("us"), safe=False)
    return [_time_text(v) for v in array.to_pylist()]


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
