"""XLSX writer on XlsxWriter (constant-memory): the general-purpose, feature-complete writer.

Rows stream to disk as they arrive. Cell values come from :mod:`exportd.exporter.cells` and are
written with the typed ``write_*`` methods, so text is always a string cell. XlsxWriter reports
an out-of-range row by returning -1 instead of raising; every return code is checked so no row is
ever lost silently, and a sheet that is full rolls over to a new one with the header repeated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import xlsxwriter
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from exportd.contract.catalog import ExportType
from exportd.contract.errors import PermanentFailure
from exportd.exporter.cells import (
    DATE_FORMAT,
    DATETIME_FORMAT,
    Cell,
    display_width,
    spreadsheet_cells,
)
from exportd.exporter.writers.base import (
    DATA_SHEET,
    EXCEL_MAX_ROWS,
    METADATA_SHEET,
    ExportMetadata,
    Writer,
    WriteSummary,
)

__all__ = ["DATA_SHEET", "EXCEL_MAX_ROWS", "METADATA_SHEET", "XlsxWriter", "open_safe_workbook"]


def open_safe_workbook(path: Path, *, tmpdir: Path | None = None) -> Workbook:
    """The only way exportd opens a workbook: no text is ever turned into a formula, a link
    or a number, rows go to disk as they are written, and files past 4 GiB stay valid."""
    options: dict[str, Any] = {
        "constant_memory": True,
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "strings_to_numbers": False,
        "use_zip64": True,
    }
    if tmpdir is not None:
        options["tmpdir"] = str(tmpdir)
    return xlsxwriter.Workbook(str(path), options)


class XlsxWriter(Writer):
    def __init__(
        self,
        path: Path,
        metadata: ExportMetadata,
        *,
        max_sheet_rows: int = EXCEL_MAX_ROWS,
    ) -> None:
        super().__init__(path, metadata)
        if max_sheet_rows < 2:
            raise ValueError("a sheet must hold the header and at least one row")
        self.max_sheet_rows = max_sheet_rows
        self._book = open_safe_workbook(path, tmpdir=path.parent)
        self._bold = self._book.add_format({"bold": True})
        self._date = self._book.add_format({"num_format": DATE_FORMAT})
        self._datetime = self._book.add_format({"num_format": DATETIME_FORMAT})
        self._sheets: list[Worksheet] = []
        self._sheet: Worksheet | None = None
        self._next_row = 0
        self._header: list[str] = []
        self._widths: list[int] = []
        self._rows_written = 0
        self._writers = self._cell_writers()

    @classmethod
    def from_export_type(
        cls, path: Path, metadata: ExportMetadata, export_type: ExportType
    ) -> XlsxWriter:
        return cls(path, metadata)

    def _cell_writers(self) -> dict[type, Callable[[Worksheet, int, int, Any], int]]:
        return {
            str: lambda ws, r, c, v: ws.write_string(r, c, v),
            int: lambda ws, r, c, v: ws.write_number(r, c, v),
            float: lambda ws, r, c, v: ws.write_number(r, c, v),
            bool: lambda ws, r, c, v: ws.write_boolean(r, c, v),
            datetime: lambda ws, r, c, v: ws.write_datetime(r, c, v, self._datetime),
            date: lambda ws, r, c, v: ws.write_datetime(r, c, v, self._date),
        }

    def write_batch(self, batch: pa.RecordBatch) -> None:
        zone = self.metadata.timezone
        columns = [spreadsheet_cells(column, zone) for column in batch.columns]
        if not self._header:
            self._header = list(batch.schema.names)
            self._widths = [
                display_width(values, name)
                for values, name in zip(columns, self._header, strict=True)
            ]
        for row in zip(*columns, strict=True):
            self._write_row(row)

    def _write_row(self, row: tuple[Cell, ...]) -> None:
        if self._sheet is None or self._next_row >= self.max_sheet_rows:
            self._start_sheet()
        sheet = self._sheet
        assert sheet is not None
        r = self._next_row
        writers = self._writers
        for c, value in enumerate(row):
            if value is None:
                continue
            if writers[type(value)](sheet, r, c, value) < 0:
                raise PermanentFailure(
                    f"cell ({r}, {c}) could not be written", reason="IncompleteExport"
                )
        self._next_row += 1
        self._rows_written += 1

    def _start_sheet(self) -> None:
        self._close_sheet()
        number = len(self._sheets) + 1
        sheet = self._book.add_worksheet(DATA_SHEET if number == 1 else f"{DATA_SHEET} {number}")
        for c, width in enumerate(self._widths):
            sheet.set_column(c, c, width)
        for c, name in enumerate(self._header):
            sheet.write_string(0, c, name, self._bold)
        sheet.freeze_panes(1, 0)
        self._sheets.append(sheet)
        self._sheet = sheet
        self._next_row = 1

    def _close_sheet(self) -> None:
        if self._sheet is not None and self._header:
            self._sheet.autofilter(0, 0, self._next_row - 1, len(self._header) - 1)

    def finish(self, completed_at: datetime) -> WriteSummary:
        if self._sheet is None:
            self._start_sheet()
        self._close_sheet()
        if self.metadata.enabled:
            self._write_metadata_sheet(completed_at)
        self._book.close()
        return WriteSummary(rows_written=self._rows_written, sheets=len(self._sheets))

    def abort(self) -> None:
        # The file is being thrown away; closing only releases XlsxWriter's temporary files.
        with contextlib.suppress(Exception):
            self._book.close()

    def _write_metadata_sheet(self, completed_at: datetime) -> None:
        meta = self.metadata
        zone = ZoneInfo(meta.timezone)
        sheet = self._book.add_worksheet(METADATA_SHEET)
        sheet.set_column(0, 0, 16)
        sheet.set_column(1, 1, 22)
        sheet.set_column(2, 2, 34)
        sheet.write_string(0, 0, "Field", self._bold)
        sheet.write_string(0, 1, "Value", self._bold)
        sheet.write_string(0, 2, "ISO 8601 (UTC)", self._bold)
        rows: list[tuple[str, Any]] = [
            ("Export id", meta.export_id),
            ("Export type", meta.export_type),
            ("Requested at", meta.requested_at),
            ("Completed at", completed_at),
            ("Time zone", meta.timezone),
            ("Rows", self._rows_written),
        ]
        for r, (label, value) in enumerate(rows, start=1):
            sheet.write_string(r, 0, label)
            if isinstance(value, datetime):
                local = value.astimezone(zone).replace(tzinfo=None)
                sheet.write_datetime(r, 1, local, self._datetime)
                sheet.write_string(r, 2, _utc_iso(value))
            elif isinstance(value, int):
                sheet.write_number(r, 1, value)
            else:
                sheet.write_string(r, 1, str(value))


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")
