"""Checks a benchmark output against the table it came from: row count and column checksums.

Every file is read back by an independent reader (calamine via fastexcel for XLSX, Arrow's CSV
reader for CSV), so a fast but wrong output fails the benchmark instead of winning it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import fastexcel
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

CHECKED = ["id", "qty", "amount", "flag", "note"]


@dataclass(frozen=True)
class Checksums:
    rows: int
    id_sum: int
    qty_sum: int
    amount_sum: float
    flags: int
    notes: int

    def matches(self, other: Checksums) -> list[str]:
        problems = []
        for name in ("rows", "id_sum", "qty_sum", "flags", "notes"):
            if getattr(self, name) != getattr(other, name):
                problems.append(f"{name}: {getattr(other, name)} != {getattr(self, name)}")
        if not math.isclose(self.amount_sum, other.amount_sum, rel_tol=1e-9):
            problems.append(f"amount_sum: {other.amount_sum} != {self.amount_sum}")
        return problems


def expected(dsn: str, table: str) -> Checksums:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*), sum(id), sum(qty), sum(amount)::float8,"
            f" count(*) FILTER (WHERE flag), count(note) FROM {table}"
        ).fetchone()
    assert row is not None
    return Checksums(int(row[0]), int(row[1]), int(row[2]), float(row[3]), int(row[4]), int(row[5]))


def _sums(table: pa.Table) -> Checksums:
    flag = table.column("flag")
    if not pa.types.is_boolean(flag.type):
        flag = pc.is_in(pc.cast(flag, pa.string()), pa.array(["true", "t", "TRUE", "1"]))
    note = table.column("note")
    if pa.types.is_string(note.type) or pa.types.is_large_string(note.type):
        note = pc.if_else(pc.equal(note, ""), None, note)
    return Checksums(
        rows=table.num_rows,
        id_sum=int(pc.sum(pc.cast(table.column("id"), pa.float64())).as_py() or 0),
        qty_sum=int(pc.sum(pc.cast(table.column("qty"), pa.float64())).as_py() or 0),
        amount_sum=float(pc.sum(pc.cast(table.column("amount"), pa.float64())).as_py() or 0),
        flags=int(pc.sum(pc.cast(flag, pa.int64())).as_py() or 0),
        notes=len(note) - note.null_count,
    )


def xlsx_checksums(path: Path) -> Checksums:
    """All data sheets (a roll-over continues in "Export 2", ...), metadata sheet excluded."""
    reader = fastexcel.read_excel(str(path))
    tables = []
    for name in reader.sheet_names:
        if name == "Export info":
            continue
        sheet = reader.load_sheet(
            name, use_columns=CHECKED, dtypes={"flag": "boolean", "note": "string"}
        )
        tables.append(pa.Table.from_batches([sheet.to_arrow()]).select(CHECKED))
    return _sums(pa.concat_tables(tables, promote_options="permissive"))


def csv_checksums(path: Path) -> Checksums:
    """A header line; exportd's ``# exportd:`` first and last lines are skipped."""
    data = path.read_bytes()
    if data.startswith("\ufeff".encode()):
        data = data[3:]
    lines = data.split(b"\n", 1)
    if lines[0].startswith(b"# exportd:"):
        data = lines[1]
        data = data[: data.rindex(b"# exportd:")]
    table = pcsv.read_csv(
        io.BytesIO(data),
        convert_options=pcsv.ConvertOptions(
            include_columns=CHECKED,
            column_types={"flag": pa.string(), "note": pa.string(), "amount": pa.float64()},
            strings_can_be_null=True,
        ),
    )
    return _sums(table)


def check(path: Path, reference: Checksums) -> list[str]:
    measured = xlsx_checksums(path) if path.suffix == ".xlsx" else csv_checksums(path)
    return reference.matches(measured)
