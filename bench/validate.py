"""Checks a benchmark output against its table, every column: a digest of each column's values.

The database gives each column's canonical text in id order (``string_agg`` under ``md5``);
the file is read back by an independent reader (calamine via fastexcel for XLSX, Arrow's CSV
reader for CSV) and its cells are put in the same canonical text. A fast but wrong output, in
any column, fails the benchmark instead of winning it. XLSX numbers are doubles (a numeric(12,2)
is compared at its scale), date-times are compared to the microsecond, NULL is kept apart.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import fastexcel
import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv

NULL = "\\N"
DATA_SHEET = "Export"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # PostgreSQL's data_type
    scale: int | None


@dataclass(frozen=True)
class Reference:
    rows: int
    columns: list[Column]
    digests: dict[str, str]


def _sql_text(column: Column) -> str:
    name = f'"{column.name}"'
    if column.kind == "timestamp with time zone":
        return f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    return f"{name}::text"


def expected(dsn: str, table: str) -> Reference:
    with psycopg.connect(dsn) as conn:
        columns = [
            Column(*row)
            for row in conn.execute(
                "SELECT column_name, data_type, numeric_scale FROM information_schema.columns"
                " WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        ]
        digests = ", ".join(
            f"md5(string_agg(coalesce({_sql_text(c)}, '{NULL}'), E'\\n' ORDER BY id))"
            for c in columns
        )
        row = conn.execute(f"SELECT count(*), {digests} FROM {table}").fetchone()
    assert row is not None
    return Reference(
        int(row[0]), columns, {c.name: d for c, d in zip(columns, row[1:], strict=True)}
    )


def _digest(values: list[Any], text: Callable[[Any], str]) -> str:
    joined = "\n".join(NULL if v is None else text(v) for v in values)
    return hashlib.md5(joined.encode("utf-8")).hexdigest()  # noqa: S324 - a checksum


def _float_text(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _xlsx_text(column: Column) -> Callable[[Any], str]:
    if column.kind in ("bigint", "integer", "smallint"):
        return lambda v: str(int(v))
    if column.kind == "numeric":
        return lambda v: f"{v:.{column.scale or 0}f}"
    if column.kind == "double precision":
        return _float_text
    if column.kind == "boolean":
        return lambda v: "true" if v else "false"
    if column.kind == "date":
        return lambda v: v.isoformat() if isinstance(v, date) else str(v)
    if column.kind == "timestamp with time zone":
        return lambda v: v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else str(v)
    return str


_PG_BOOLEAN = {"t": "true", "f": "false"}  # plain COPY's spelling of the same values


def _csv_text(column: Column) -> Callable[[Any], str]:
    if column.kind == "boolean":
        return lambda v: _PG_BOOLEAN.get(v, v)
    if column.kind == "timestamp with time zone":
        return lambda v: datetime.fromisoformat(v).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")
    return str


_XLSX_DTYPES = {
    "bigint": "float", "integer": "float", "smallint": "float", "numeric": "float",
    "double precision": "float", "boolean": "boolean", "date": "date",
    "timestamp with time zone": "datetime",
}  # fmt: skip


def xlsx_tables(path: Path, reference: Reference) -> pa.Table:
    """All data sheets (a roll-over continues in "Export 2", ...), metadata sheet excluded."""
    reader = fastexcel.read_excel(str(path))
    dtypes = {c.name: _XLSX_DTYPES.get(c.kind, "string") for c in reference.columns}
    tables = []
    for name in reader.sheet_names:
        if name != "Export info":
            sheet = reader.load_sheet(name, dtypes=dtypes)  # type: ignore[arg-type]
            tables.append(pa.Table.from_batches([sheet.to_arrow()]))
    return pa.concat_tables(tables)


def csv_table(path: Path) -> pa.Table:
    """A header line; exportd's ``# exportd:`` first and last lines are skipped."""
    data = path.read_bytes()
    if data.startswith("\ufeff".encode()):
        data = data[3:]
    if data.startswith(b"# exportd:"):
        data = data.split(b"\n", 1)[1]
        data = data[: data.rindex(b"# exportd:")]
    header = data.split(b"\n", 1)[0].decode().strip().split(",")
    names = [name.strip('"') for name in header]
    return pcsv.read_csv(
        io.BytesIO(data),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def check(path: Path, reference: Reference, *, columns: bool = True) -> list[str]:
    """Problems found: the row count, and each column whose digest differs."""
    xlsx = path.suffix == ".xlsx"
    table = xlsx_tables(path, reference) if xlsx else csv_table(path)
    problems = []
    if table.num_rows != reference.rows:
        problems.append(f"rows: {table.num_rows} != {reference.rows}")
    if not columns:
        return problems
    for column in reference.columns:
        text = _xlsx_text(column) if xlsx else _csv_text(column)
        found = _digest(table.column(column.name).to_pylist(), text)
        if found != reference.digests[column.name]:
            problems.append(f"column {column.name} differs")
    return problems
