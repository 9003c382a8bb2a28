"""The Arrow -> cell mapping, checked value by value on the shared edge-case batch."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa
import pytest

from exportd.exporter.cells import (
    EXCEL_MAX_TEXT,
    TRUNCATION_MARK,
    Cell,
    display_width,
    is_text_type,
    spreadsheet_cells,
    text_fields,
)


def _cells(batch: pa.RecordBatch, name: str, zone: str = "UTC") -> list[Cell]:
    return spreadsheet_cells(batch.column(name), zone)


def test_integers_over_15_digits_become_text_so_ids_are_not_rounded(
    edge_case_batch: pa.RecordBatch,
) -> None:
    assert _cells(edge_case_batch, "big_id") == [
        "1234567890123456789",
        999_999_999_999_999,
        "-1000000000000000",
        0,
        None,
    ]


def test_decimals_are_numbers_unless_more_than_15_significant_digits(
    edge_case_batch: pa.RecordBatch,
) -> None:
    assert _cells(edge_case_batch, "amount") == [1234.5, -0.01, "123456789012345.67", None, None]


def test_non_finite_floats_become_documented_text(edge_case_batch: pa.RecordBatch) -> None:
    assert _cells(edge_case_batch, "ratio") == [1.5, "NaN", "Infinity", "-Infinity", None]


def test_dates_before_1900_03_01_are_iso_text_others_real_dates(
    edge_case_batch: pa.RecordBatch,
) -> None:
    assert _cells(edge_case_batch, "day") == [
        date(2024, 2, 29),
        date(1900, 3, 1),
        date(9999, 12, 31),
        "1899-12-31",
        None,
    ]
    assert _cells(edge_case_batch, "moment")[3] == "1900-01-01T12:00:00"


def test_zoned_timestamp_is_converted_to_the_export_zone(edge_case_batch: pa.RecordBatch) -> None:
    assert _cells(edge_case_batch, "moment_tz")[0] == datetime(2024, 6, 1, 10, 0)
    assert _cells(edge_case_batch, "moment_tz", "Asia/Tokyo")[0] == datetime(2024, 6, 1, 19, 0)
    assert text_fields(edge_case_batch.column("moment_tz"), "Asia/Tokyo")[0] == (
        "2024-06-01T19:00:00+09:00"
    )


def test_text_is_cleaned_of_xml_illegal_characters_and_cut_with_a_mark(
    edge_case_batch: pa.RecordBatch,
) -> None:
    cells = _cells(edge_case_batch, "text")
    assert cells[1] == "abcd\te"
    long_cell = cells[2]
    assert isinstance(long_cell, str)
    assert len(long_cell) == EXCEL_MAX_TEXT
    assert long_cell.endswith(TRUNCATION_MARK)
    assert text_fields(edge_case_batch.column("text"))[2] == "x" * 40_000


def test_binary_is_hex_and_dictionary_columns_are_decoded(edge_case_batch: pa.RecordBatch) -> None:
    assert _cells(edge_case_batch, "blob") == ["00ff", "", "4142", "10", None]
    assert _cells(edge_case_batch, "tier") == ["gold", "free", "gold", "free", None]
    assert _cells(edge_case_batch, "nothing") == [None] * 5


def test_csv_fields_keep_exact_numbers_and_iso_dates(edge_case_batch: pa.RecordBatch) -> None:
    assert text_fields(edge_case_batch.column("amount"))[2] == "123456789012345.67"
    assert text_fields(edge_case_batch.column("big_id"))[0] == 1234567890123456789
    assert text_fields(edge_case_batch.column("day"))[:2] == ["2024-02-29", "1900-03-01"]
    assert text_fields(edge_case_batch.column("moment"))[0] == "2024-01-02T03:04:05"
    assert text_fields(edge_case_batch.column("flag")) == ["true", "false", "true", "false", None]
    assert text_fields(edge_case_batch.column("clock"))[0] == "13:45:01"


def test_only_free_text_columns_count_as_text() -> None:
    assert is_text_type(pa.string())
    assert is_text_type(pa.large_string())
    assert not is_text_type(pa.int64())
    assert not is_text_type(pa.timestamp("us", tz="UTC"))
    assert not is_text_type(pa.binary())


def test_dates_and_timestamps_outside_python_and_excel_become_exact_text() -> None:
    """Infinities (DuckDB's sentinels), years BC and past 9999, the last microsecond of 9999 and
    year 1 shown in a zone west of UTC: in both XLSX writers and CSV, exact ISO text, no crash
    (column widths included)."""
    from exportd.exporter.writers.fastxlsx_xml import column_cells

    days = pa.array([2**31 - 1, -(2**31 - 1), -735_160, 2_932_897, None], pa.int32())
    dates = days.cast(pa.date32())
    micros = [2**63 - 1, 253_402_300_799_999_999, -62_135_596_800_000_000, 0]
    stamps = pa.array(micros, pa.timestamp("us", tz="UTC"))
    expected_dates = ["infinity", "-infinity", "-0043-03-15", "+10000-01-01", None]
    assert spreadsheet_cells(dates) == expected_dates
    assert text_fields(dates) == expected_dates
    cells = spreadsheet_cells(stamps, "America/New_York")
    assert cells[:3] == [
        "infinity",
        datetime(9999, 12, 31, 18, 59, 59, 999999),  # New York's wall clock is still in range
        "0000-12-31T19:03:58",
    ]
    assert text_fields(stamps, "America/New_York")[:3] == [
        "infinity",
        "9999-12-31T18:59:59.999999-05:00",
        "0000-12-31T19:03:58-04:56:02",
    ]
    assert spreadsheet_cells(pa.array(micros[1:2], pa.timestamp("us"))) == [
        "9999-12-31T23:59:59.999999"  # a date-time cell would show 10000-01-01
    ]
    xml = column_cells(stamps, "America/New_York").to_pylist()
    assert ">0000-12-31T19:03:58<" in xml[2] and ">infinity<" in xml[0]
    assert ">-0043-03-15<" in column_cells(dates, "UTC").to_pylist()[2]
    assert display_width(cells, "at") >= 8


def test_float32_is_written_in_its_shortest_form_and_decimal_text_exactly() -> None:
    """float4 0.1 is 0.1 (not 0.10000000149011612) in XLSX and CSV; an exact decimal text is
    a number only when a double holds it with at most 15 significant digits."""
    from exportd.exporter.cells import decimal_text_array
    from exportd.exporter.writers.fastxlsx_xml import column_cells

    floats = pa.array([0.1, float("nan")], pa.float32())
    assert spreadsheet_cells(floats) == [0.1, "NaN"]
    assert text_fields(floats) == [0.1, "NaN"]
    assert column_cells(floats, "UTC").to_pylist()[0] == "<c><v>0.1</v></c>"
    exact = decimal_text_array(["0.00000000000000000001", "3.14159265358979323846", "1.50", "NaN"])
    assert spreadsheet_cells(exact) == [1e-20, "3.14159265358979323846", 1.5, "NaN"]
    assert text_fields(exact) == ["0.00000000000000000001", "3.14159265358979323846", "1.50", "NaN"]
    assert float(text_fields(exact)[0]) == 1e-20  # a number for the csv module: never quoted
    assert (
        column_cells(exact, "UTC").to_pylist()[1].endswith(">3.14159265358979323846</t></is></c>")
    )


def test_the_cell_limit_counts_utf16_code_units() -> None:
    """16,384 emoji are 32,768 UTF-16 units: cut (never inside a pair) in both XLSX writers;
    16,383 emoji and one letter fit exactly."""
    from exportd.exporter.writers.fastxlsx_xml import clean_and_cut

    texts = pa.array(["😀" * 16_384, "😀" * 16_383 + "x"])
    cut, fits = spreadsheet_cells(texts)
    assert cut.endswith(TRUNCATION_MARK)
    assert len(cut.encode("utf-16-le")) // 2 <= 32_767 and "\ufffd" not in cut
    assert fits == "😀" * 16_383 + "x"
    assert clean_and_cut(texts).to_pylist() == [cut, fits]


def _cut_by_characters(text: str) -> str:
    """The reference: whole characters kept while they fit, then the mark."""
    if len(text.encode("utf-16-le")) // 2 <= 32_767:
        return text
    room = 32_767 - len(TRUNCATION_MARK)
    kept, units = [], 0
    for char in text:
        units += 2 if ord(char) > 0xFFFF else 1
        if units > room:
            break
        kept.append(char)
    return "".join(kept) + TRUNCATION_MARK


@pytest.mark.parametrize(
    "text",
    [
        "a" * 40_000,
        "a" * 32_767,
        "a" * 32_768,
        "a" * 32_754 + "😀" + "b" * 100,  # the pair straddles the cut
        "a" * 32_753 + "😀" + "b" * 100,  # the pair ends exactly at the cut
        "😀" * 20_000,
        "é" * 17_000 + "😀" * 9_000,
        "a" * 16_383,
    ],
)
def test_cutting_on_the_utf16_encoding_keeps_whole_characters(text: str) -> None:
    from exportd.exporter.cells import cut_for_excel

    cut = cut_for_excel(text)
    assert cut == _cut_by_characters(text)
    assert len(cut.encode("utf-16-le")) // 2 <= 32_767
