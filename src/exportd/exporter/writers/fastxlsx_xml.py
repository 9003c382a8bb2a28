"""Sheet XML for whole Arrow batches at once: the fast XLSX writer's cell builder.

Why vectorized: a Python loop per cell costs about a microsecond per cell, so 10 million cells
take longer than reading and compressing them together. Here every column's values become Arrow
strings through Arrow compute kernels (C++, run without the GIL), and a batch becomes ``<row>``
elements in one more kernel call; the bytes are the array's data buffer.

One pass per row: a column is described as *parts* (:data:`Parts`), the pieces whose element-wise
concatenation is its ``<c>`` element: constant markup (``'<c><v>'``), the value texts, constant
closing markup. The row join takes every column's parts at once, so a column's cells are never
built as an array of their own and the row XML is written in one copy. A column is made into
finished cells first only where its cells differ by row: NULLs (``<c/>``), and the rare values
written as text in a number column (big integers, NaN, dates outside Excel's range).

The values and cell types follow :mod:`exportd.exporter.cells` exactly (the one mapping); only
rare column types (times, binary, lists, ...) go through that module's per-value code.

XML details: cells carry no ``r`` attribute (a cell's position is its order in the row, so NULL
is written as an empty ``<c/>``); text is an inline string with ``&``, ``<``, ``>`` escaped, CR
written as ``&#13;`` (parsers turn a raw CR into LF), Excel's own ``_xHHHH_`` escape protected,
and ``xml:space="preserve"`` when the text starts or ends with white space.
"""

from __future__ import annotations

import re
from typing import Any, TypeAlias
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.compute as pc

from exportd.exporter import temporal
from exportd.exporter.cells import (
    END_SAFE_MICROS,
    EXCEL_MAX_DIGITS,
    EXCEL_MAX_TEXT,
    FIRST_SAFE_DAY,
    FIRST_SAFE_MICROS,
    LAST_EXCEL_DAY,
    XML_ILLEGAL,
    cut_for_excel,
    spreadsheet_cells,
)

STYLE_DATE = 1
STYLE_DATETIME = 2
STYLE_HEADER = 3

EMPTY_CELL = "<c/>"
EXCEL_DAYS_AT_UNIX_EPOCH = 25_569  # 1899-12-30 (Excel's day 0) to 1970-01-01
MICROS_PER_DAY = temporal.MICROS_PER_DAY
_BIG_INTEGER = 10**EXCEL_MAX_DIGITS
_TEXT_OPEN = '<c t="inlineStr"><is><t>'
_TEXT_OPEN_PRESERVE = '<c t="inlineStr"><is><t xml:space="preserve">'
_TEXT_CLOSE = "</t></is></c>"
_EDGE_SPACE = r"^[ \t\n\r]|[ \t\n\r]$"
_EXCEL_ESCAPE = r"_(x[0-9A-Fa-f]{4}_)"
_NEEDS_ESCAPE = r"[&<>\r]|_x[0-9A-Fa-f]{4}_"
_XML_ILLEGAL_PY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# The pieces of one column's cells, concatenated element-wise: constant markup or arrays.
Part: TypeAlias = str | pa.Array
Parts: TypeAlias = list[Part]


def joined(parts: Parts) -> pa.Array:
    """The finished cells of a column's parts (NULL where a value is NULL)."""
    if len(parts) == 1 and isinstance(parts[0], pa.Array):
        return parts[0]
    return pc.binary_join_element_wise(*parts, "")


def number_parts(texts: pa.Array, style: int = 0) -> Parts:
    """Numbers already rendered as text, as ``<c><v>..</v></c>`` (NULL stays NULL)."""
    opening = f'<c s="{style}"><v>' if style else "<c><v>"
    return [opening, texts, "</v></c>"]


def number_cells(texts: pa.Array, style: int = 0) -> pa.Array:
    return joined(number_parts(texts, style))


def _any(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def escape_text(strings: pa.Array) -> pa.Array:
    """Text made safe for an XML text node, keeping every character a reader shows.

    One regex pass finds whether anything needs escaping at all (most columns need nothing).
    """
    if not _any(pc.match_substring_regex(strings, _NEEDS_ESCAPE)):
        return strings
    strings = pc.replace_substring_regex(strings, _EXCEL_ESCAPE, r"_x005F_\1")
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        strings = pc.replace_substring(strings, raw, entity)
    return strings


def clean_and_cut(strings: pa.Array) -> pa.Array:
    """XML-illegal characters removed, then longer than Excel's limit cut and marked.

    The limit counts UTF-16 code units, which no text has more of than UTF-8 bytes; the rare
    texts over it in bytes are measured and cut one by one."""
    if not _all_printable_ascii(strings):
        strings = pc.replace_substring_regex(strings, XML_ILLEGAL, "")
    if len(strings) == strings.null_count or pc.max(pc.binary_length(strings)).as_py() <= (
        EXCEL_MAX_TEXT
    ):
        return strings
    long_bytes = pc.fill_null(pc.greater(pc.binary_length(strings), EXCEL_MAX_TEXT), False)
    long_texts = pc.filter(strings, long_bytes).to_pylist()
    cut = [cut_for_excel(text) for text in long_texts]
    if cut == long_texts:
        return strings
    return pc.replace_with_mask(strings, long_bytes, pa.array(cut, strings.type))


def _all_printable_ascii(strings: pa.Array) -> bool:
    """True when no value holds a control or non-ASCII character (a 4 ms check per million)."""
    return not _any(pc.invert(pc.ascii_is_printable(strings)))


def _edge_space(strings: pa.Array) -> pa.Array:
    if _all_printable_ascii(strings):  # only a space can be white space at an edge
        return pc.or_(pc.starts_with(strings, " "), pc.ends_with(strings, " "))
    return pc.match_substring_regex(strings, _EDGE_SPACE)


def text_parts(strings: pa.Array) -> Parts:
    """Clean text (already cut) as inline-string cells; never a formula, number or link."""
    edge_space = _edge_space(strings)
    opening: Part = _TEXT_OPEN
    if _any(edge_space):
        opening = pc.if_else(edge_space, _TEXT_OPEN_PRESERVE, _TEXT_OPEN)
    return [opening, escape_text(strings), _TEXT_CLOSE]


def text_cells(strings: pa.Array) -> pa.Array:
    return joined(text_parts(strings))


def _constant_text_cells(texts: pa.Array) -> pa.Array:
    """Fixed texts (``NaN``, ISO dates) that need neither cleaning nor escaping."""
    return pc.binary_join_element_wise(_TEXT_OPEN, texts, _TEXT_CLOSE, "")


def _choose_parts(mask: pa.Array, when_true: pa.Array, when_false: Parts) -> Parts:
    """``when_false``'s parts as they are unless some row takes ``when_true`` instead."""
    if not _any(mask):
        return when_false
    return [pc.if_else(pc.fill_null(mask, False), when_true, joined(when_false))]


def integer_parts(array: pa.Array) -> Parts:
    texts = pc.cast(array, pa.string())
    parts = number_parts(texts)
    if array.type.bit_width >= 64:
        big = pc.greater_equal(array, pa.scalar(_BIG_INTEGER, array.type))
        if pa.types.is_signed_integer(array.type):
            big = pc.or_(big, pc.less_equal(array, pa.scalar(-_BIG_INTEGER, array.type)))
        parts = _choose_parts(big, _constant_text_cells(texts), parts)
    return parts


def decimal_parts(array: pa.Array) -> Parts:
    texts = pc.cast(array, pa.string())
    parts = number_parts(texts)
    if array.type.precision > EXCEL_MAX_DIGITS:
        digits = pc.utf8_trim(pc.replace_substring_regex(texts, r"[-.]", ""), "0")
        wide = pc.greater(pc.utf8_length(digits), EXCEL_MAX_DIGITS)
        parts = _choose_parts(wide, _constant_text_cells(texts), parts)
    return parts


def float_parts(array: pa.Array) -> Parts:
    # Each width's shortest text: a float32 0.1 is "0.1", not the double 0.10000000149011612.
    values = pc.cast(array, pa.float64())
    parts = number_parts(pc.cast(array, pa.string()))
    nonfinite = pc.invert(pc.is_finite(values))
    if pc.any(nonfinite).as_py():
        names = pc.if_else(
            pc.is_nan(values),
            "NaN",
            pc.if_else(pc.greater(values, 0), "Infinity", "-Infinity"),
        )
        parts = _choose_parts(nonfinite, _constant_text_cells(names), parts)
    return parts


def bool_cells(array: pa.Array) -> pa.Array:
    return pc.if_else(array, '<c t="b"><v>1</v></c>', '<c t="b"><v>0</v></c>')


def date_parts(array: pa.Array) -> Parts:
    days = temporal.date_days(array)
    outside = pc.or_(pc.less(days, FIRST_SAFE_DAY), pc.greater(days, LAST_EXCEL_DAY))
    inside = pc.if_else(outside, 0, days)  # no overflow on the sentinels of infinity
    serials = pc.add(pc.cast(inside, pa.int64()), EXCEL_DAYS_AT_UNIX_EPOCH)
    parts = number_parts(pc.cast(serials, pa.string()), STYLE_DATE)
    return _with_exact_text(parts, outside, days, temporal.date_text)


def timestamp_parts(array: pa.Array, zone: str) -> Parts:
    micros, _ = temporal.wall_clock_micros(array, zone)
    serials = pc.add(pc.divide(pc.cast(micros, pa.float64(), safe=False), MICROS_PER_DAY), 25569.0)
    parts = number_parts(pc.cast(serials, pa.string()), STYLE_DATETIME)
    outside = pc.or_(pc.less(micros, FIRST_SAFE_MICROS), pc.greater_equal(micros, END_SAFE_MICROS))
    return _with_exact_text(parts, outside, micros, temporal.timestamp_text)


def _with_exact_text(parts: Parts, outside: pa.Array, values: pa.Array, text: Any) -> Parts:
    """Dates and times Excel cannot show as such (before 1900-03-01, after 9999, infinite)
    as their exact ISO text, like the one mapping; they are rare, so only they go through
    Python."""
    outside = pc.fill_null(outside, False)
    if not pc.any(outside).as_py():
        return parts
    cells = joined(parts)
    texts = [
        _TEXT_OPEN + text(value) + _TEXT_CLOSE for value in pc.filter(values, outside).to_pylist()
    ]
    replaced = pc.replace_with_mask(
        pc.cast(cells, pa.large_string()), outside, pa.array(texts, pa.large_string())
    )
    return [pc.cast(replaced, cells.type)]


def python_cells(array: pa.Array, zone: str) -> pa.Array:
    """Rare column types through the one mapping's per-value code."""
    values = spreadsheet_cells(array, zone)
    return pa.array([_python_cell(value) for value in values], pa.string())


def _python_cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return f'<c t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float):
        return f"<c><v>{value!r}</v></c>"
    text = escape(str(value)).replace("\r", "&#13;")
    opening = _TEXT_OPEN_PRESERVE if text != text.strip(" \t\n\r") else _TEXT_OPEN
    return opening + text + _TEXT_CLOSE


def column_parts(array: pa.Array, zone: str) -> Parts:
    """One column's ``<c>`` elements as parts (NULL as ``<c/>``): no part holds a NULL."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    parts = _typed_parts(array, array.type, zone)
    if any(isinstance(part, pa.Array) and part.null_count for part in parts):
        return [pc.fill_null(joined(parts), EMPTY_CELL)]
    return parts


def column_cells(array: pa.Array, zone: str) -> pa.Array:
    """One column as finished ``<c>`` elements, one per row, NULL as ``<c/>``."""
    return joined(column_parts(array, zone))


def _typed_parts(array: pa.Array, kind: pa.DataType, zone: str) -> Parts:
    if pa.types.is_null(kind):
        return [pa.array([EMPTY_CELL] * len(array), pa.string())]
    if pa.types.is_boolean(kind):
        return [bool_cells(array)]
    if pa.types.is_integer(kind):
        return integer_parts(array)
    if pa.types.is_decimal(kind):
        return decimal_parts(array)
    if pa.types.is_floating(kind):
        return float_parts(array)
    if pa.types.is_timestamp(kind):
        return timestamp_parts(array, zone)
    if pa.types.is_date(kind):
        return date_parts(array)
    if pa.types.is_string(kind):
        return text_parts(clean_and_cut(array))
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return text_parts(clean_and_cut(pc.cast(array, pa.string())))
    return [python_cells(array, zone)]


def rows_xml(columns: list[Parts], first_row: int, count: int) -> pa.Buffer:
    """``<row r="n">..</row>`` for ``count`` rows of the columns' parts, concatenated in one
    kernel call (adjacent constant markup merged first); ``first_row`` is 1-based."""
    ones = pa.repeat(pa.scalar(1, pa.int64()), count)
    numbers = pc.cast(pc.add(pc.cumulative_sum(ones), first_row - 1), pa.string())
    pieces: Parts = ['<row r="', numbers, '">']
    for part in [part for parts in columns for part in parts] + ["</row>"]:
        last = pieces[-1]
        if isinstance(part, str) and isinstance(last, str):
            pieces[-1] = last + part
        else:
            pieces.append(part)
    return concatenated(pc.binary_join_element_wise(*pieces, ""))


def concatenated(strings: pa.Array) -> pa.Buffer:
    """All strings of a NULL-free string array back to back, without copying."""
    _, offsets_buffer, data = strings.buffers()
    offsets = memoryview(offsets_buffer).cast(
        "q" if pa.types.is_large_string(strings.type) else "i"
    )
    start = offsets[strings.offset]
    end = offsets[strings.offset + len(strings)]
    return data.slice(start, end - start)


def header_cells(names: list[str]) -> str:
    cells = []
    for name in names:
        text = escape(_XML_ILLEGAL_PY.sub("", name)).replace("\r", "&#13;")
        cells.append(
            f'<c s="{STYLE_HEADER}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'
        )
    return "".join(cells)
