"""A 1,100,000-row export rolls over to a second sheet at Excel's real limit, losing nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import fastexcel
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.fastxlsx import EXCEL_MAX_ROWS, FastXlsxWriter

pytestmark = pytest.mark.integration
TOTAL = 1_100_000
BATCH = 100_000


def test_1_100_000_rows_fill_one_sheet_and_continue_on_a_second(tmp_path: Path) -> None:
    """Sheet 1 holds the header plus 1,048,575 rows (1,048,576 in all), sheet 2 the header
    plus the other 51,425; ids come back complete and in order (checked by sums and ends)."""
    path = tmp_path / "big.xlsx"
    writer = FastXlsxWriter(path, ExportMetadata("exp-big", "big", datetime.now(UTC)))
    for start in range(1, TOTAL + 1, BATCH):
        ids = pa.array(range(start, start + BATCH), pa.int64())
        writer.write_batch(
            pa.record_batch({"id": ids, "odd": pc.equal(pc.bit_wise_and(ids, 1), 1)})
        )
    summary = writer.finish(datetime.now(UTC))
    assert (summary.rows_written, summary.sheets) == (TOTAL, 2)

    reader = fastexcel.read_excel(str(path))
    assert reader.sheet_names == ["Export", "Export 2", "Export info"]
    first = reader.load_sheet("Export").to_arrow()
    second = reader.load_sheet("Export 2").to_arrow()
    assert first.column_names == second.column_names == ["id", "odd"]
    per_sheet = EXCEL_MAX_ROWS - 1
    assert (first.num_rows, second.num_rows) == (per_sheet, TOTAL - per_sheet)
    ids_1, ids_2 = first.column("id"), second.column("id")
    assert (ids_1[0].as_py(), ids_1[-1].as_py()) == (1, per_sheet)
    assert (ids_2[0].as_py(), ids_2[-1].as_py()) == (per_sheet + 1, TOTAL)
    assert pc.sum(ids_1).as_py() + pc.sum(ids_2).as_py() == TOTAL * (TOTAL + 1) // 2
    assert pc.sum(pc.cast(second.column("odd"), pa.int64())).as_py() == (TOTAL - per_sheet) // 2
    info = reader.load_sheet("Export info").to_arrow().to_pylist()
    assert [float(row["Value"]) for row in info if row["Field"] == "Rows"] == [TOTAL]
