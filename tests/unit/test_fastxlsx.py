"""The fast XLSX writer: exact values and types in openpyxl and calamine (fastexcel), layout,
roll-over, and failures that reach the caller."""

from __future__ import annotations

import math
import zipfile
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastexcel
import openpyxl
import pyarrow as pa
import pytest

from exportd.exporter.cells import TRUNCATION_MARK, spreadsheet_cells
from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.fastxlsx import FastXlsxWriter
from exportd.exporter.writers.xlsx import XlsxWriter

REQUESTED = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
COMPLETED = datetime(2025, 1, 31, 12, 0, 5, tzinfo=UTC)
TEXTS = [
    "plain",
    '=HYPERLINK("http://x","y")',
    "a\x01b\x0bc\ufffe",
    "😀 emoji",
    "x" * 40_000,
    "  lead",
    "trail ",
    "a&b<c>d\"e'f",
    "l1\nl2\r\nl3",
    "https://example.com/a",
    "",
    None,
]
ROWS = len(TEXTS)


def _pad(values: list[Any]) -> list[Any]:
    return (values + [None] * ROWS)[:ROWS]


def edge_batch() -> pa.RecordBatch:
    """Every column type the sources produce, with the edge values of the issue."""
    return pa.record_batch(
        {
            "id": pa.array(
                _pad([1, 1234567890123456789, -5, 999_999_999_999_999, 10**15, -(10**15)]),
                pa.int64(),
            ),
            "small": pa.array(_pad([7, -32768, 32767]), pa.int16()),
            "amount": pa.array(
                _pad([Decimal("1047.29"), Decimal("-0.01"), Decimal("0.00")]), pa.decimal128(12, 2)
            ),
            "wide": pa.array(
                _pad([Decimal("12345678901234567.5"), Decimal("1.5"), Decimal("100")]),
                pa.decimal128(38, 10),
            ),
            "score": pa.array(
                _pad([0.1, float("nan"), float("inf"), float("-inf"), 1 / 3, 1e20, -2.5e-7]),
                pa.float64(),
            ),
            "ratio": pa.array(_pad([0.1, 1.5]), pa.float32()),
            "text": pa.array(TEXTS, pa.string()),
            "day": pa.array(
                _pad([date(1900, 3, 1), date(9999, 12, 31), date(1899, 12, 31), date(2024, 2, 29)]),
                pa.date32(),
            ),
            "at": pa.array(
                _pad(
                    [
                        datetime(2024, 6, 1, 12, 0, tzinfo=UTC) - timedelta(hours=2),
                        datetime(1900, 1, 1, tzinfo=UTC),
                        datetime(2024, 6, 1, 10, 0, 0, 123000, tzinfo=UTC),
                        datetime(9999, 12, 31, 10, 0, tzinfo=UTC),
                    ]
                ),
                pa.timestamp("us", tz="UTC"),
            ),
            "naive": pa.array(_pad([datetime(2020, 2, 29, 23, 59, 59)]), pa.timestamp("us")),
            "flag": pa.array(_pad([True, False]), pa.bool_()),
            "nothing": pa.nulls(ROWS),
            "blob": pa.array(_pad([b"\x00\xff", b""]), pa.binary()),
            "clock": pa.array(_pad([time(12, 34, 56), time(1, 2, 3, 4)]), pa.time64("us")),
        }
    )


def write_fast(path: Path, batches: list[pa.RecordBatch], **options: Any) -> Any:
    zone = options.pop("timezone", "UTC")
    writer = FastXlsxWriter(path, ExportMetadata("exp-1", "edge", REQUESTED, zone), **options)
    for batch in batches:
        writer.write_batch(batch)
    return writer.finish(COMPLETED)


def as_openpyxl_reads(value: Any) -> Any:
    """What openpyxl gives back for a cell value of the one mapping."""
    if isinstance(value, datetime):
        # Excel stores days as a double; openpyxl rounds the fraction to milliseconds.
        return value.replace(microsecond=round(value.microsecond, -3))
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        # openpyxl does not undo Excel's _xHHHH_ escape in inline strings (Excel does).
        return value.replace("_x", "_x005F_x") if "_x" in value else value
    return value


def test_every_cell_in_openpyxl_equals_the_one_mapping_with_its_type(tmp_path: Path) -> None:
    """Each cell of every type (edge values included) reads back as cells.py maps it, in the
    Berlin zone: numbers as numbers, big ids and NaN as text, dates and times as datetimes."""
    batch = edge_batch()
    path = tmp_path / "edge.xlsx"
    write_fast(path, [batch], timezone="Europe/Berlin")
    sheet = openpyxl.load_workbook(path)["Export"]
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == batch.schema.names
    for index, name in enumerate(batch.schema.names):
        expected = [
            as_openpyxl_reads(v) for v in spreadsheet_cells(batch.column(index), "Europe/Berlin")
        ]
        got = [row[index] for row in rows[1:]]
        assert got == expected, name
        assert [type(v) for v in got] == [type(v) for v in expected], name


def test_edge_values_land_as_the_issue_asks(tmp_path: Path) -> None:
    """Spot checks: +02:00 instant shown in the export zone, 19-digit id as text, text cut at
    32,767 characters and marked, control characters gone, a formula stays text."""
    path = tmp_path / "edge.xlsx"
    write_fast(path, [edge_batch()], timezone="Europe/Berlin")
    rows = list(openpyxl.load_workbook(path)["Export"].iter_rows(min_row=2, values_only=True))
    names = edge_batch().schema.names
    column = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    assert column["at"][0] == datetime(2024, 6, 1, 12, 0)  # 10:00Z is 12:00 in Berlin
    assert column["id"][:2] == [1, "1234567890123456789"]
    assert column["score"][1:4] == ["NaN", "Infinity", "-Infinity"]
    assert column["text"][1] == '=HYPERLINK("http://x","y")'
    assert column["text"][2] == "abc"
    assert len(column["text"][4]) == 32_767 and column["text"][4].endswith(TRUNCATION_MARK)
    assert column["day"][:3] == [datetime(1900, 3, 1), datetime(9999, 12, 31), "1899-12-31"]
    assert all(v is None for v in column["nothing"])
    assert all(v is None for v in rows[-1])  # NULL in every column


def test_no_cell_is_a_formula_or_a_link(tmp_path: Path) -> None:
    path = tmp_path / "edge.xlsx"
    write_fast(path, [edge_batch()])
    sheet = openpyxl.load_workbook(path)["Export"]
    cells = [cell for row in sheet.iter_rows() for cell in row]
    assert not [c for c in cells if c.data_type == "f"]
    assert not [c for c in cells if c.hyperlink is not None]


def test_calamine_reads_exact_values(tmp_path: Path) -> None:
    """fastexcel (calamine, as used by polars) sees the same values and types."""
    batch = pa.record_batch(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "amount": pa.array([Decimal("1047.29"), Decimal("-0.01"), None], pa.decimal128(12, 2)),
            "score": pa.array([0.1, 1 / 3, -2.5e-7], pa.float64()),
            "text": pa.array(["😀 emoji", "a&b<c>", "_x0041_"], pa.string()),
            "day": pa.array([date(1900, 3, 1), date(9999, 12, 31), None], pa.date32()),
            "at": pa.array(
                [datetime(2024, 6, 1, 10, tzinfo=UTC), None, datetime(2000, 1, 1, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            "flag": pa.array([True, None, False], pa.bool_()),
            "big": pa.array([1234567890123456789, 10**15, -(10**16)], pa.int64()),
        }
    )
    path = tmp_path / "calamine.xlsx"
    write_fast(path, [batch])
    reader = fastexcel.read_excel(str(path))
    assert reader.sheet_names == ["Export", "Export info"]
    table = reader.load_sheet("Export").to_arrow()
    assert table.column("id").to_pylist() == [1.0, 2.0, 3.0]
    assert table.column("amount").to_pylist() == [1047.29, -0.01, None]
    assert table.column("score").to_pylist() == [0.1, 1 / 3, -2.5e-7]
    assert table.column("text").to_pylist() == ["😀 emoji", "a&b<c>", "_x0041_"]
    assert table.column("day").to_pylist()[:2] == [datetime(1900, 3, 1), datetime(9999, 12, 31)]
    assert table.column("at").to_pylist() == [datetime(2024, 6, 1, 10), None, datetime(2000, 1, 1)]
    assert table.column("flag").to_pylist() == [True, None, False]
    assert table.column("big").to_pylist() == [
        "1234567890123456789",
        "1000000000000000",
        "-10000000000000000",
    ]


def test_same_cells_as_the_xlsxwriter_writer(tmp_path: Path) -> None:
    """Both XLSX writers behind the one interface give openpyxl identical data sheets."""
    batch = edge_batch()
    fast, slow = tmp_path / "fast.xlsx", tmp_path / "slow.xlsx"
    write_fast(fast, [batch], timezone="Asia/Kolkata")
    writer = XlsxWriter(slow, ExportMetadata("exp-1", "edge", REQUESTED, "Asia/Kolkata"))
    writer.write_batch(batch)
    writer.finish(COMPLETED)
    fast_rows = list(openpyxl.load_workbook(fast)["Export"].iter_rows(values_only=True))
    slow_rows = list(openpyxl.load_workbook(slow)["Export"].iter_rows(values_only=True))
    # A row of NULLs only: XlsxWriter leaves it out, the fast writer writes empty cells.
    assert fast_rows[-1] == (None,) * len(fast_rows[0])
    fast_rows = fast_rows[:-1]
    for fast_row, slow_row in zip(fast_rows, slow_rows, strict=True):
        for fast_value, slow_value in zip(fast_row, slow_row, strict=True):
            if isinstance(fast_value, int | float) and not isinstance(fast_value, bool):
                # Excel numbers are doubles; openpyxl shows "0" as int and "0.00" as float.
                assert isinstance(slow_value, int | float) and not isinstance(slow_value, bool)
            else:
                assert type(fast_value) is type(slow_value)
            if isinstance(fast_value, float):
                # XlsxWriter writes 16 significant digits, the fast writer the shortest exact
                # text: a float32 0.1 is 0.10000000149011612 here, 0.1000000014901161 there.
                assert math.isclose(fast_value, slow_value, rel_tol=1e-15)
            elif isinstance(fast_value, str) and "\r" in fast_value:
                # XlsxWriter keeps a CR as Excel's escape _x000D_ (openpyxl leaves it as is),
                # the fast writer as the XML reference &#13;: both are a CR in Excel.
                assert fast_value == slow_value.replace("_x000D_", "\r")
            else:
                assert fast_value == slow_value


def test_header_is_bold_frozen_filtered_and_sized(tmp_path: Path) -> None:
    path = tmp_path / "layout.xlsx"
    write_fast(path, [edge_batch()])
    sheet = openpyxl.load_workbook(path)["Export"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:N{ROWS + 1}"
    assert all(cell.font.b for cell in sheet[1])
    assert not sheet["A2"].font.b
    assert sheet["H2"].number_format == "yyyy-mm-dd"
    assert sheet["I2"].number_format == "yyyy-mm-dd hh:mm:ss"
    widths = [sheet.column_dimensions[letter].width for letter in "AGH"]
    assert all(8 <= width <= 62 for width in widths)


def test_metadata_sheet_says_what_the_export_was(tmp_path: Path) -> None:
    path = tmp_path / "meta.xlsx"
    write_fast(path, [edge_batch()], timezone="Europe/Berlin")
    rows = list(openpyxl.load_workbook(path)["Export info"].iter_rows(values_only=True))
    assert rows[0] == ("Field", "Value", "ISO 8601 (UTC)")
    fields = {row[0]: row[1:] for row in rows[1:]}
    assert fields["Export id"][0] == "exp-1"
    assert fields["Export type"][0] == "edge"
    assert fields["Requested at"] == (
        datetime(2025, 1, 31, 13, 0, 0, 123000),
        "2025-01-31T12:00:00.123456Z",
    )
    assert fields["Completed at"] == (datetime(2025, 1, 31, 13, 0, 5), "2025-01-31T12:00:05Z")
    assert fields["Time zone"][0] == "Europe/Berlin"
    assert fields["Rows"][0] == ROWS


def test_metadata_sheet_can_be_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "nometa.xlsx"
    writer = FastXlsxWriter(path, ExportMetadata("exp-1", "t", REQUESTED, enabled=False))
    writer.write_batch(edge_batch())
    writer.finish(COMPLETED)
    assert openpyxl.load_workbook(path).sheetnames == ["Export"]


def test_sheets_roll_over_with_the_header_repeated(tmp_path: Path) -> None:
    """With 4 rows per sheet (header included), 10 rows in 3 batches give 4 sheets; no row is
    lost or doubled and each sheet's autofilter covers its own rows."""
    ids = list(range(1, 11))
    batches = [
        pa.record_batch({"id": pa.array(chunk, pa.int64()), "t": pa.array([str(i) for i in chunk])})
        for chunk in (ids[:4], ids[4:5], ids[5:])
    ]
    path = tmp_path / "roll.xlsx"
    summary = write_fast(path, batches, max_sheet_rows=4)
    assert (summary.rows_written, summary.sheets) == (10, 4)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Export", "Export 2", "Export 3", "Export 4", "Export info"]
    seen = []
    for name in book.sheetnames[:4]:
        rows = list(book[name].iter_rows(values_only=True))
        assert rows[0] == ("id", "t")
        assert book[name].auto_filter.ref == f"A1:B{len(rows)}"
        seen += [row[0] for row in rows[1:]]
    assert seen == ids


def test_empty_result_gives_a_header_only_sheet(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    summary = write_fast(path, [pa.RecordBatch.from_pylist([], schema=schema)])
    assert (summary.rows_written, summary.sheets) == (0, 1)
    rows = list(openpyxl.load_workbook(path)["Export"].iter_rows(values_only=True))
    assert rows == [("id", "name")]


def test_package_is_a_valid_zip_with_every_part(tmp_path: Path) -> None:
    path = tmp_path / "zip.xlsx"
    write_fast(path, [edge_batch()] * 3)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
    assert {
        "[Content_Types].xml",
        "_rels/.rels",
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "xl/styles.xml",
        "xl/worksheets/sheet1.xml",
        "xl/worksheets/sheet2.xml",
    } <= names


def test_zip64_records_appear_when_sizes_pass_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the 4 GiB limit lowered to 1 kB, the archive needs ZIP64 sizes, offsets and end
    records; Python's zipfile (strict about them) and openpyxl still read it."""
    from exportd.exporter.writers import fastxlsx_zip

    monkeypatch.setattr(fastxlsx_zip, "ZIP32_LIMIT", 1000)
    path = tmp_path / "zip64.xlsx"
    write_fast(path, [edge_batch()])
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        sheet = archive.getinfo("xl/worksheets/sheet1.xml")
        assert sheet.file_size > 1000
    rows = list(openpyxl.load_workbook(path)["Export"].iter_rows(values_only=True))
    assert len(rows) == ROWS + 1


def test_a_failure_in_the_builder_thread_reaches_the_caller(tmp_path: Path) -> None:
    """An unknown time zone breaks timestamp conversion inside the builder thread; the error
    surfaces from write_batch or finish instead of a truncated file."""
    writer = FastXlsxWriter(tmp_path / "bad.xlsx", ExportMetadata("e", "t", REQUESTED, "No/Zone"))
    with pytest.raises(pa.ArrowInvalid):
        writer.write_batch(edge_batch())
        writer.finish(COMPLETED)
    writer.abort()


def test_abort_stops_the_threads_and_closes_the_file(tmp_path: Path) -> None:
    writer = FastXlsxWriter(tmp_path / "a.xlsx", ExportMetadata("e", "t", REQUESTED))
    writer.write_batch(edge_batch())
    writer.abort()
    assert not writer._builder.is_alive() and not writer._appender.is_alive()
    assert writer._file.closed


def test_sheet_limit_is_checked() -> None:
    with pytest.raises(ValueError):
        FastXlsxWriter(
            Path("/nonexistent/x.xlsx"), ExportMetadata("e", "t", REQUESTED), max_sheet_rows=1
        )


def test_less_common_arrow_types_follow_the_one_mapping(tmp_path: Path) -> None:
    """large_string, string_view, dictionary, uint64 past 15 digits, int8, date64, ns
    timestamps: the same cells as cells.py gives."""
    batch = pa.record_batch(
        {
            "large": pa.array(["x", None, " y"], pa.large_string()),
            "view": pa.array(["p", "q&r", None], pa.string_view()),
            "dict": pa.array(["k", "k", None]).dictionary_encode(),
            "unsigned": pa.array([1, 2**63 + 5, None], pa.uint64()),
            "tiny": pa.array([1, -2, None], pa.int8()),
            "date64": pa.array([date(2024, 1, 2), None, date(1900, 2, 28)], pa.date64()),
            "nanos": pa.array(
                [datetime(2024, 1, 2, 3, 4, 5), None, datetime(1970, 1, 1)], pa.timestamp("ns")
            ),
        }
    )
    path = tmp_path / "types.xlsx"
    write_fast(path, [batch])
    rows = list(openpyxl.load_workbook(path)["Export"].iter_rows(min_row=2, values_only=True))
    for index in range(batch.num_columns):
        expected = [as_openpyxl_reads(v) for v in spreadsheet_cells(batch.column(index), "UTC")]
        assert [row[index] for row in rows] == expected, batch.schema.names[index]


def test_the_fast_writer_is_the_default_xlsx_writer() -> None:
    """choose_xlsx_writer: this writer unless an export type asks for XlsxWriter."""
    from exportd.contract.catalog import ExportType
    from exportd.exporter.writers.fastxlsx import choose_xlsx_writer

    assert choose_xlsx_writer(ExportType(query="SELECT 1")) is FastXlsxWriter
