"""The Arrow -> cell mapping, checked value by value on the shared edge-case batch."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa

from exportd.exporter.cells import (
    EXCEL_MAX_TEXT,
    TRUNCATION_MARK,
    Cell,
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
