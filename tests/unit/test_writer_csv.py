"""The CSV writer: RFC 4180 quoting, NULL vs empty string, formula neutralizing, metadata lines,
BOM, read back with the csv module and as raw text."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from tests.conftest import HOSTILE_FORMULA

from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.csv import CsvWriter

REQUESTED_AT = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
COMPLETED_AT = REQUESTED_AT + timedelta(seconds=5, microseconds=250)


def _write(
    path: Path, batches: list[pa.RecordBatch], *, enabled: bool = True, bom: bool = False
) -> str:
    metadata = ExportMetadata("exp-1", "userExport", REQUESTED_AT, enabled=enabled)
    writer = CsvWriter(path, metadata, bom=bom)
    for batch in batches:
        writer.write_batch(batch)
    summary = writer.finish(COMPLETED_AT)
    assert summary.rows_written == sum(b.num_rows for b in batches)
    return path.read_bytes().decode("utf-8")


def _small_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "note": pa.array(['say "hi", then\nleave', "", None], pa.string()),
        }
    )


def test_metadata_first_and_last_lines_have_the_documented_format(tmp_path: Path) -> None:
    lines = _write(tmp_path / "a.csv", [_small_batch()]).split("\r\n")
    assert lines[0] == (
        "# exportd: export=exp-1 type=userExport requested_at=2025-03-01T08:30:00Z timezone=UTC"
    )
    assert lines[-2] == "# exportd: completed_at=2025-03-01T08:30:05.000250Z rows=3"
    assert lines[-1] == ""


def test_rfc4180_quoting_and_null_distinct_from_empty_string(tmp_path: Path) -> None:
    text = _write(tmp_path / "a.csv", [_small_batch()], enabled=False)
    assert text == ('"id","note"\r\n1,"say ""hi"", then\nleave"\r\n2,""\r\n3,\r\n')
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["id", "note"], ["1", 'say "hi", then\nleave'], ["2", ""], ["3", ""]]


def test_text_that_a_spreadsheet_would_evaluate_is_neutralized(tmp_path: Path) -> None:
    values = [HOSTILE_FORMULA, "+1+2", "-1", "@SUM(A1)", "\tx", "\rx", "plain", " =x"]
    batch = pa.RecordBatch.from_pydict(
        {"t": pa.array(values), "n": pa.array(range(-4, 4), pa.int64())}
    )
    text = _write(tmp_path / "a.csv", [batch], enabled=False)
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    assert [row[0] for row in rows] == [
        "'" + HOSTILE_FORMULA,
        "'+1+2",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "plain",
        " =x",
    ]
    assert [row[1] for row in rows] == ["-4", "-3", "-2", "-1", "0", "1", "2", "3"]


def test_every_type_as_text_numbers_unquoted_nulls_empty(
    tmp_path: Path, edge_case_batch: pa.RecordBatch
) -> None:
    text = _write(tmp_path / "edge.csv", [edge_case_batch], enabled=False)
    lines = text.split("\r\n")
    assert lines[1].startswith('1,1234567890123456789,1234.50,1.5,"true","2024-02-29",')
    assert '"2024-01-02T03:04:05","2024-06-01T10:00:00+00:00"' in lines[1]
    null_row = lines[5]
    assert null_row == "," * (edge_case_batch.num_columns - 1)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    third = dict(zip(header, rows[3], strict=True))
    assert third["amount"] == "123456789012345.67"
    assert third["ratio"] == "Infinity"
    assert third["day"] == "9999-12-31"
    assert third["text"] == "x" * 40_000
    second = dict(zip(header, rows[2], strict=True))
    assert second["text"] == "abcd\te"
    assert second["more_text"] == "  leading spaces"
    assert second["blob"] == ""


def test_bom_is_written_only_when_asked(tmp_path: Path) -> None:
    _write(tmp_path / "bom.csv", [_small_batch()], bom=True)
    _write(tmp_path / "plain.csv", [_small_batch()])
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbf# exportd:")
    assert (tmp_path / "plain.csv").read_bytes().startswith(b"# exportd:")


def test_header_is_written_once_across_batches(tmp_path: Path) -> None:
    text = _write(tmp_path / "a.csv", [_small_batch(), _small_batch()], enabled=False)
    assert text.count('"id","note"') == 1
    assert len(list(csv.reader(io.StringIO(text, newline="")))) == 7
