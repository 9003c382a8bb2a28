"""The XlsxWriter-based writer, read back with openpyxl: exact values, cell types, layout,
metadata sheet and roll-over without loss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest
from openpyxl.worksheet.worksheet import Worksheet
from tests.conftest import HOSTILE_FORMULA

from exportd.exporter.cells import EXCEL_MAX_TEXT, TRUNCATION_MARK
from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.xlsx import DATA_SHEET, METADATA_SHEET, XlsxWriter

REQUESTED_AT = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)


def _metadata(**changes: object) -> ExportMetadata:
    fields: dict[str, object] = {
        "export_id": "exp-1",
        "export_type": "userExport",
        "requested_at": REQUESTED_AT,
    }
    fields.update(changes)
    return ExportMetadata(**fields)  # type: ignore[arg-type]


def _write(path: Path, batches: list[pa.RecordBatch], **kwargs: object) -> int:
    metadata = kwargs.pop("metadata", _metadata())
    writer = XlsxWriter(path, metadata, **kwargs)  # type: ignore[arg-type]
    for batch in batches:
        writer.write_batch(batch)
    return writer.finish(REQUESTED_AT + timedelta(seconds=5)).sheets


def _column(sheet: Worksheet, header: str, rows: int = 5) -> list[openpyxl.cell.cell.Cell]:
    """The first ``rows`` data cells of a column (a row of only NULLs stores no cells, so
    openpyxl's max_row would stop before it)."""
    names = [cell.value for cell in sheet[1]]
    index = names.index(header) + 1
    cells = sheet.iter_rows(min_row=2, max_row=rows + 1, min_col=index, max_col=index)
    return [row[0] for row in cells]


@pytest.fixture
def edge_book(tmp_path: Path, edge_case_batch: pa.RecordBatch) -> openpyxl.Workbook:
    path = tmp_path / "edge.xlsx"
    _write(path, [edge_case_batch])
    return openpyxl.load_workbook(path)


def _values(book: openpyxl.Workbook, header: str) -> list[tuple[object, str]]:
    return [(c.value, c.data_type) for c in _column(book[DATA_SHEET], header)]


def test_numbers_ids_and_decimals_have_exact_values_and_types(
    edge_book: openpyxl.Workbook,
) -> None:
    assert _values(edge_book, "id") == [(1, "n"), (2, "n"), (3, "n"), (4, "n"), (None, "n")]
    assert _values(edge_book, "big_id") == [
        ("1234567890123456789", "s"),
        (999_999_999_999_999, "n"),
        ("-1000000000000000", "s"),
        (0, "n"),
        (None, "n"),
    ]
    assert _values(edge_book, "amount")[:3] == [
        (1234.5, "n"),
        (-0.01, "n"),
        ("123456789012345.67", "s"),
    ]
    assert _values(edge_book, "ratio") == [
        (1.5, "n"),
        ("NaN", "s"),
        ("Infinity", "s"),
        ("-Infinity", "s"),
        (None, "n"),
    ]
    assert _values(edge_book, "flag") == [
        (True, "b"),
        (False, "b"),
        (True, "b"),
        (False, "b"),
        (None, "n"),
    ]


def test_dates_and_timestamps_are_real_dates_with_formats(edge_book: openpyxl.Workbook) -> None:
    days = _column(edge_book[DATA_SHEET], "day")
    assert [c.value for c in days] == [
        datetime(2024, 2, 29),
        datetime(1900, 3, 1),
        datetime(9999, 12, 31),
        "1899-12-31",
        None,
    ]
    assert {c.number_format for c in days[:3]} == {"yyyy-mm-dd"}
    moments = _column(edge_book[DATA_SHEET], "moment")
    assert moments[0].value == datetime(2024, 1, 2, 3, 4, 5)
    assert moments[0].number_format == "yyyy-mm-dd hh:mm:ss"
    assert moments[2].value == datetime(9999, 12, 31, 23, 59, 59)
    assert moments[3].value == "1900-01-01T12:00:00"


def test_plus_two_hours_timestamp_is_converted_to_utc(edge_book: openpyxl.Workbook) -> None:
    assert _column(edge_book[DATA_SHEET], "moment_tz")[0].value == datetime(2024, 6, 1, 10, 0)


def test_timestamps_follow_the_export_time_zone(
    tmp_path: Path, edge_case_batch: pa.RecordBatch
) -> None:
    path = tmp_path / "tokyo.xlsx"
    _write(path, [edge_case_batch], metadata=_metadata(timezone="Asia/Tokyo"))
    book = openpyxl.load_workbook(path)
    assert _column(book[DATA_SHEET], "moment_tz")[0].value == datetime(2024, 6, 1, 19, 0)
    info = {row[0].value: row[1].value for row in book[METADATA_SHEET].iter_rows(min_row=2)}
    assert info["Time zone"] == "Asia/Tokyo"


def test_text_is_always_a_string_cell_never_a_formula_or_link(
    edge_book: openpyxl.Workbook,
) -> None:
    sheet = edge_book[DATA_SHEET]
    texts = _column(sheet, "text")
    assert texts[0].value == HOSTILE_FORMULA
    assert texts[0].data_type == "s"
    assert texts[0].hyperlink is None
    url = _column(sheet, "more_text")[2]
    assert (url.value, url.data_type, url.hyperlink) == ("http://example.com", "s", None)
    assert _values(edge_book, "more_text")[3] == ("-1+2", "s")
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    assert not sheet._hyperlinks


def test_control_characters_removed_long_text_cut_and_marked(
    edge_book: openpyxl.Workbook,
) -> None:
    texts = [c.value for c in _column(edge_book[DATA_SHEET], "text")]
    assert texts[1] == "abcd\te"
    assert isinstance(texts[2], str)
    assert len(texts[2]) == EXCEL_MAX_TEXT
    assert texts[2] == "x" * (EXCEL_MAX_TEXT - len(TRUNCATION_MARK)) + TRUNCATION_MARK
    assert _values(edge_book, "more_text")[:2] == [("Grüße 😀", "s"), ("  leading spaces", "s")]


def test_binary_hex_dictionary_and_all_null_columns(edge_book: openpyxl.Workbook) -> None:
    assert [v for v, _ in _values(edge_book, "blob")] == ["00ff", "", "4142", "10", None]
    assert [v for v, _ in _values(edge_book, "tier")] == ["gold", "free", "gold", "free", None]
    assert [v for v, _ in _values(edge_book, "nothing")] == [None] * 5
    assert _values(edge_book, "clock")[0] == ("13:45:01", "s")


def test_last_row_null_in_every_column_is_all_empty_cells(edge_book: openpyxl.Workbook) -> None:
    sheet = edge_book[DATA_SHEET]
    assert [cell.value for cell in sheet[6]] == [None] * len(sheet[1])
    assert sheet.auto_filter.ref == "A1:N6"


def test_header_is_bold_frozen_and_filtered_with_sensible_widths(
    edge_book: openpyxl.Workbook,
) -> None:
    sheet = edge_book[DATA_SHEET]
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:N6"
    widths = [sheet.column_dimensions[letter].width for letter in "ABCDEFGHIJKLMN"]
    assert all(8 <= width <= 62 for width in widths)


def test_metadata_sheet_has_ids_both_timestamps_and_row_count(
    edge_book: openpyxl.Workbook,
) -> None:
    assert edge_book.sheetnames == [DATA_SHEET, METADATA_SHEET]
    info = {row[0].value: row[1].value for row in edge_book[METADATA_SHEET].iter_rows(min_row=2)}
    assert info["Export id"] == "exp-1"
    assert info["Export type"] == "userExport"
    assert info["Requested at"] == datetime(2025, 3, 1, 8, 30)
    assert info["Completed at"] == datetime(2025, 3, 1, 8, 30, 5)
    assert info["Completed at"] >= info["Requested at"]
    assert info["Time zone"] == "UTC"
    assert info["Rows"] == 5


def test_metadata_sheet_can_be_switched_off(
    tmp_path: Path, edge_case_batch: pa.RecordBatch
) -> None:
    path = tmp_path / "plain.xlsx"
    _write(path, [edge_case_batch], metadata=_metadata(enabled=False))
    assert openpyxl.load_workbook(path).sheetnames == [DATA_SHEET]


def test_rows_roll_over_to_new_sheets_with_the_header_repeated(tmp_path: Path) -> None:
    """With a 4-row sheet (header + 3), 10 rows fill sheets of 3, 3, 3 and 1: none lost."""
    path = tmp_path / "roll.xlsx"
    batches = [
        pa.RecordBatch.from_pydict({"n": pa.array(range(start, start + 5), pa.int64())})
        for start in (0, 5)
    ]
    sheets = _write(path, batches, max_sheet_rows=4)
    book = openpyxl.load_workbook(path)
    data_sheets = [name for name in book.sheetnames if name != METADATA_SHEET]
    assert sheets == 4
    assert data_sheets == [DATA_SHEET, f"{DATA_SHEET} 2", f"{DATA_SHEET} 3", f"{DATA_SHEET} 4"]
    seen: list[object] = []
    for name in data_sheets:
        rows = list(book[name].iter_rows(values_only=True))
        assert rows[0] == ("n",)
        assert len(rows) <= 4
        assert book[name]["A1"].font.b
        seen.extend(row[0] for row in rows[1:])
    assert seen == list(range(10))


def test_empty_result_still_has_a_header_row(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    empty = pa.RecordBatch.from_pylist([], schema=pa.schema([("id", pa.int64())]))
    _write(path, [empty])
    rows = list(openpyxl.load_workbook(path)[DATA_SHEET].iter_rows(values_only=True))
    assert rows == [("id",)]
