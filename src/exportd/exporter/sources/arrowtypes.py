"""Row tuples from a DB-API driver into typed Arrow batches, the same way for every server.

Drivers hand out rows; writers want columns with one precise Arrow type each. This module holds
the column plans the PostgreSQL and MySQL sources share: a plan is the column's Arrow type and a
function turning one batch of that column's Python values into an Arrow array. Conversions are
column-wise and run inside Arrow (C++) wherever possible; per-value Python work is reserved for
rare types or for a fallback path taken only when a batch holds an odd value.

Decimals wider than Arrow's decimal128 (38 digits), and PostgreSQL ``numeric`` without a declared
precision, are kept as their exact text in a :class:`exportd.exporter.cells.DecimalText` column
(``1e-20`` stays ``0.00000000000000000001``, ``NaN`` stays ``NaN``): no value is rounded, and the
writers decide per value whether a spreadsheet number holds it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import time, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exportd.contract.errors import PermanentFailure
from exportd.exporter.cells import DECIMAL_TEXT, decimal_text, decimal_text_array

Builder = Callable[[Sequence[Any]], pa.Array]

DECIMAL128_MAX_PRECISION = 38
WIDE_DECIMAL_SCALE = 10
WIDE_DECIMAL = pa.decimal128(DECIMAL128_MAX_PRECISION, WIDE_DECIMAL_SCALE)
MICROS_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class ColumnPlan:
    """How one result column becomes an Arrow array: its field and its batch builder."""

    name: str
    type: pa.DataType
    build: Builder

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.type)


def unsupported(column: str, detail: str) -> PermanentFailure:
    return PermanentFailure(
        f"column {column!r}: {detail}; cast the column in the query (for example to text)",
        reason="UnsupportedValue",
    )


def rows_to_batch(rows: Sequence[Sequence[Any]], plans: Sequence[ColumnPlan]) -> pa.RecordBatch:
    """Transpose a list of row tuples and build each column with its plan."""
    if not rows:
        return empty_batch(plans)
    schema = pa.schema([plan.field for plan in plans])
    columns = list(zip(*rows, strict=True))
    arrays = [_build(plan, column) for plan, column in zip(plans, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def empty_batch(plans: Sequence[ColumnPlan]) -> pa.RecordBatch:
    """A zero-row batch that still carries the schema (the first batch of an empty result)."""
    schema = pa.schema([plan.field for plan in plans])
    return _empty(schema)


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array([], type=field.type) for field in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _build(plan: ColumnPlan, values: Sequence[Any]) -> pa.Array:
    try:
        return plan.build(values)
    except PermanentFailure:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError) as exc:
        raise unsupported(plan.name, f"a value does not fit {plan.type}: {exc}") from exc


def plan(name: str, arrow_type: pa.DataType, build: Builder | None = None) -> ColumnPlan:
    return ColumnPlan(name, arrow_type, build or direct(arrow_type))


def direct(arrow_type: pa.DataType) -> Builder:
    """Python values the driver already converted (int, Decimal, datetime, ...) into Arrow."""

    def build(values: Sequence[Any]) -> pa.Array:
        return pa.array(values, type=arrow_type)

    return build


def decimal_from_objects(arrow_type: pa.Decimal128Type, column: str) -> Builder:
    """``Decimal`` values; the slow path rounds extra decimal places to the column's scale."""
    quantum = Decimal(1).scaleb(-arrow_type.scale)
    context = Context(prec=DECIMAL128_MAX_PRECISION, rounding=ROUND_HALF_EVEN)

    def fit(value: Decimal | None) -> Decimal | None:
        if value is None:
            return None
        if not value.is_finite():
            raise unsupported(column, f"{value} has no spreadsheet or Arrow decimal form")
        try:
            return value.quantize(quantum, context=context)
        except InvalidOperation:
            raise unsupported(column, f"{value} does not fit {arrow_type}") from None

    def build(values: Sequence[Any]) -> pa.Array:
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError):
            return pa.array([fit(value) for value in values], type=arrow_type)

    return build


def decimal_type(precision: int | None, scale: int | None) -> pa.DataType:
    """The Arrow type for a declared ``DECIMAL(p, s)``: decimal128 when it holds every value,
    else the exact text (:data:`exportd.exporter.cells.DECIMAL_TEXT`)."""
    if precision is None or scale is None or precision > DECIMAL128_MAX_PRECISION:
        return DECIMAL_TEXT
    return pa.decimal128(max(precision, 1), max(scale, 0))


def decimal_plan(name: str, precision: int | None, scale: int | None, *, text: bool) -> ColumnPlan:
    """The plan of a decimal column whose driver gives ``Decimal`` objects or, with ``text``,
    the server's decimal text."""
    arrow_type = decimal_type(precision, scale)
    if not isinstance(arrow_type, pa.Decimal128Type):
        return ColumnPlan(name, arrow_type, exact_decimal_texts())
    if text:
        return ColumnPlan(name, arrow_type, decimal_from_text(arrow_type, name))
    return ColumnPlan(name, arrow_type, decimal_from_objects(arrow_type, name))


def exact_decimal_texts() -> Builder:
    """Decimals (``Decimal`` objects or the server's text) as their exact text."""

    def build(values: Sequence[Any]) -> pa.Array:
        return decimal_text_array([None if v is None else decimal_text(v) for v in values])

    return build


def from_text(arrow_type: pa.DataType) -> Builder:
    """Values the driver left as text (MySQL's text protocol), parsed by Arrow's casts."""

    def build(values: Sequence[Any]) -> pa.Array:
        return pa.array(values, type=pa.string()).cast(arrow_type)

    return build


def decimal_from_text(arrow_type: pa.Decimal128Type, column: str) -> Builder:
    """Decimal text; values with more decimal places than the type are rounded half-even."""
    rounded = decimal_from_objects(arrow_type, column)

    def build(values: Sequence[Any]) -> pa.Array:
        try:
            return pa.array(values, type=pa.string()).cast(arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return rounded([None if value is None else Decimal(value) for value in values])

    return build


def temporal_from_text(arrow_type: pa.DataType, zero_prefixes: tuple[str, ...]) -> Builder:
    """Date or timestamp text; "zero dates" (a MySQL oddity like ``0000-00-00``) become NULL."""
    parse = from_text(arrow_type)

    def is_zero(value: str) -> bool:
        return value.startswith(zero_prefixes) or "-00" in value[:10]

    def build(values: Sequence[Any]) -> pa.Array:
        try:
            return parse(values)
        except pa.ArrowInvalid:
            return parse([None if value is None or is_zero(value) else value for value in values])

    return build


def bool_from_integer_text() -> Builder:
    """``TINYINT(1)`` text (0, 1, occasionally other integers) to booleans: non-zero is true."""

    def build(values: Sequence[Any]) -> pa.Array:
        numbers = pa.array(values, type=pa.string()).cast(pa.int16())
        return pc.not_equal(numbers, 0)

    return build


def time_of_day_from_timedelta_text(column: str) -> Builder:
    """MySQL ``TIME`` (a duration, ``-838:59:59`` to ``838:59:59``) as a time of day.

    Values outside one day cannot be a time of day, so they fail the export with a clear reason.
    """

    def to_time(value: str | None) -> time | None:
        if value is None:
            return None
        negative = value.startswith("-")
        hours, minutes, seconds = value.lstrip("-").split(":")
        delta = timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))
        if negative or delta >= timedelta(days=1):
            raise unsupported(column, f"TIME value {value} is not a time of day")
        micros = round(delta / timedelta(microseconds=1))
        return time(
            micros // 3_600_000_000,
            micros // 60_000_000 % 60,
            micros // 1_000_000 % 60,
            micros % 1_000_000,
        )

    def build(values: Sequence[Any]) -> pa.Array:
        return pa.array([to_time(value) for value in values], type=pa.time64("us"))

    return build


def unsigned_from_bits() -> Builder:
    """MySQL ``BIT(n)`` arrives as big-endian bytes."""

    def build(values: Sequence[Any]) -> pa.Array:
        return pa.array(
            [None if value is None else int.from_bytes(value, "big") for value in values],
            type=pa.uint64(),
        )

    return build


def bool_from_bits() -> Builder:
    def build(values: Sequence[Any]) -> pa.Array:
        return pa.array(
            [None if value is None else any(value) for value in values], type=pa.bool_()
        )

    return build


def text_of_anything() -> Builder:
    """Strings as they are; other objects by ``str`` (only for types a driver did not leave
    as text, so the cost is paid by rare columns alone)."""

    def build(values: Sequence[Any]) -> pa.Array:
        try:
            return pa.array(values, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array(
                [
                    value if value is None or isinstance(value, str) else str(value)
                    for value in values
                ],
                type=pa.string(),
            )

    return build
