"""The fast XLSX writer: sheet XML built per batch in bulk and deflated on both cores.

Why it exists: a row loop through XlsxWriter spends ~66 s on a million rows, DuckDB's excel
extension ~13 s. Here the exporter's thread only hands each Arrow batch over and goes back to
reading; a builder thread turns slices of it into sheet XML with Arrow kernels
(:mod:`fastxlsx_xml`), a small pool deflates the pieces in parallel (:mod:`fastxlsx_zip`), and a
writer thread appends them to the file in order. Queues between the stages are bounded, so memory
stays flat however many rows pass.

Output: data sheets "Export", "Export 2", ... with a bold, frozen header row, an autofilter and
column widths from the first rows; a new sheet (header repeated) starts when a sheet holds
``max_sheet_rows`` rows including its header (Excel's 1,048,576 by default); then the
"Export info" metadata sheet of the XlsxWriter writer. Cell values and types are those of
:mod:`exportd.exporter.cells`. Rows handed in and rows written are counted separately and must
match, or ``finish`` fails (no silent truncation).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from exportd.contract.catalog import ExportType
from exportd.contract.errors import PermanentFailure
from exportd.exporter.cells import display_width, spreadsheet_cells
from exportd.exporter.writers import fastxlsx_parts as parts
from exportd.exporter.writers.base import (
    DATA_SHEET,
    EXCEL_MAX_ROWS,
    METADATA_SHEET,
    ExportMetadata,
    HashingFile,
    Writer,
    WriteSummary,
)
from exportd.exporter.writers.fastxlsx_xml import column_parts, rows_xml
from exportd.exporter.writers.fastxlsx_zip import Bytes, ZipStream, deflate_piece

PIECE_TARGET_BYTES = 8 * 1024 * 1024
XML_BYTES_PER_VALUE_BYTE = 2
XML_BYTES_PER_CELL = 24
WIDTH_SAMPLE_ROWS = 200
QUEUE_POLL_SECONDS = 0.1


def choose_xlsx_writer(export_type: ExportType) -> type[Writer]:
    """The XLSX writer for an export type: this one, unless the type asks for XlsxWriter.

    XlsxWriter stays for what needs its features (styled templates, small files); an export
    type selects it with ``xlsxWriter: xlsxwriter`` once the catalog has that field.
    """
    if getattr(export_type, "xlsx_writer", "fast") == "xlsxwriter":
        from exportd.exporter.writers.xlsx import XlsxWriter  # only its users pay the import

        return XlsxWriter
    return FastXlsxWriter


def _built(piece: pa.RecordBatch, first_row: int, zone: str) -> tuple[Bytes, bytes]:
    """Sheet XML of a slice of rows and its deflated form (runs in the pool)."""
    columns = [column_parts(column, zone) for column in piece.columns]
    if columns:
        raw: Bytes = memoryview(rows_xml(columns, first_row, piece.num_rows))
    else:
        raw = b"".join(f'<row r="{first_row + i}"/>'.encode() for i in range(piece.num_rows))
    return raw, deflate_piece(raw)


def _row_bytes(batch: pa.RecordBatch) -> int:
    """Sheet XML bytes per row of a batch, estimated from its cells and data size."""
    columns = max(batch.num_columns, 1)
    data = XML_BYTES_PER_VALUE_BYTE * batch.nbytes // max(batch.num_rows, 1)
    return int(XML_BYTES_PER_CELL * columns + data)


def _deflated(raw: Bytes) -> tuple[Bytes, bytes]:
    return raw, deflate_piece(raw)


def use_system_allocator() -> None:
    """Arrow buffers from the C library's allocator instead of mimalloc, process-wide.

    Sheet XML is allocated by the builder thread and freed by the appender thread; mimalloc
    keeps such cross-thread frees in per-thread heaps for a while, which measured ~25 MiB more
    peak RSS on a million rows (the exporter runs one export per process, so the choice is
    its alone).
    """
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


@dataclass(frozen=True)
class _Open:
    name: str  # ZIP64 or not is decided when the entry closes (fastxlsx_zip.py)


@dataclass(frozen=True)
class _Piece:
    built: Future[tuple[Bytes, bytes]]  # the raw XML and its deflated form


@dataclass(frozen=True)
class _Close:
    pass


_ZipOp = _Open | _Piece | _Close
_STOP = object()


class FastXlsxWriter(Writer):
    """XLSX for the exporter's hot path; see the module docstring."""

    def __init__(
        self,
        path: Path,
        metadata: ExportMetadata,
        *,
        max_sheet_rows: int = EXCEL_MAX_ROWS,
        threads: int = 2,
        piece_target_bytes: int = PIECE_TARGET_BYTES,
    ) -> None:
        super().__init__(path, metadata)
        if not 2 <= max_sheet_rows <= EXCEL_MAX_ROWS:
            raise ValueError("a sheet holds the header and 1 to 1,048,575 rows")
        use_system_allocator()
        self.max_sheet_rows = max_sheet_rows
        self._piece_target = piece_target_bytes
        self._file = HashingFile.create(path)
        self._zip = ZipStream(self._file)  # type: ignore[arg-type]
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fastxlsx-build")
        self._batches: queue.Queue[object] = queue.Queue(maxsize=2)
        self._ops: queue.Queue[object] = queue.Queue(maxsize=2 * threads)
        self._failed = threading.Event()
        self._error: BaseException | None = None
        self._rows_received = 0
        self._rows_written = 0
        self._header: list[str] = []
        self._widths: list[int] = []
        self._sheets: list[parts.SheetPart] = []
        self._sheet_rows = 0
        self._builder = threading.Thread(target=self._guard, args=(self._build_loop,), daemon=True)
        self._appender = threading.Thread(
            target=self._guard, args=(self._append_loop,), daemon=True
        )
        self._builder.start()
        self._appender.start()

    @classmethod
    def from_export_type(
        cls, path: Path, metadata: ExportMetadata, export_type: ExportType
    ) -> FastXlsxWriter:
        return cls(path, metadata)

    # -- the exporter's thread ---------------------------------------------------------------

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._raise_if_failed()
        self._rows_received += batch.num_rows
        self._put(self._batches, batch)

    def finish(self, completed_at: datetime) -> WriteSummary:
        self._put(self._batches, _STOP)
        self._builder.join()
        self._appender.join()
        self._pool.shutdown()
        self._raise_if_failed()
        if self._rows_written != self._rows_received:
            raise PermanentFailure(
                f"received {self._rows_received} rows but wrote {self._rows_written}",
                reason="IncompleteExport",
            )
        self._write_closing_parts(completed_at)
        return WriteSummary(
            rows_written=self._rows_written,
            sheets=len(self._sheets),
            sha256=self._file.hexdigest(),
        )

    def abort(self) -> None:
        """Stop the threads and close the file; the exporter deletes it."""
        self._failed.set()
        for thread in (self._builder, self._appender):
            thread.join(timeout=10)
        self._pool.shutdown(cancel_futures=True)
        with contextlib.suppress(OSError):
            self._file.close()

    def _write_closing_parts(self, completed_at: datetime) -> None:
        meta = self.metadata
        sheets = list(self._sheets)
        if meta.enabled:
            sheets.append(parts.SheetPart(METADATA_SHEET, 3, 7, autofilter=False))
            info = parts.metadata_sheet(
                meta.export_id,
                meta.export_type,
                meta.requested_at,
                completed_at,
                meta.timezone,
                self._rows_written,
            )
            self._zip.write_entry(f"xl/worksheets/sheet{len(sheets)}.xml", info)
        self._zip.write_entry("xl/workbook.xml", parts.workbook(sheets))
        self._zip.write_entry("xl/_rels/workbook.xml.rels", parts.workbook_rels(len(sheets)))
        self._zip.write_entry("xl/styles.xml", parts.styles())
        self._zip.write_entry("_rels/.rels", parts.root_rels())
        self._zip.write_entry("[Content_Types].xml", parts.content_types(len(sheets)))
        self._zip.close()
        self._file.close()

    # -- plumbing shared by the threads ------------------------------------------------------

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # handed to the exporter's thread, raised there
            if self._error is None:
                self._error = exc
            self._failed.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._failed.is_set():
            raise PermanentFailure("the XLSX writer was aborted", reason="WriterAborted")

    def _put(self, target: queue.Queue[object], item: object) -> None:
        while True:
            self._raise_if_failed()
            try:
                target.put(item, timeout=QUEUE_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _get(self, source: queue.Queue[object]) -> object:
        while True:
            if self._failed.is_set():
                self._raise_if_failed()
            try:
                return source.get(timeout=QUEUE_POLL_SECONDS)
            except queue.Empty:
                continue

    # -- builder thread: batches -> sheet XML pieces -----------------------------------------

    def _build_loop(self) -> None:
        while (batch := self._get(self._batches)) is not _STOP:
            assert isinstance(batch, pa.RecordBatch)
            if not self._sheets:
                self._learn_layout(batch)
                self._start_sheet()
            for piece in self._pieces(batch):
                if self._sheet_rows >= self.max_sheet_rows:
                    self._end_sheet()
                    self._start_sheet()
                self._emit_rows(piece)
        if not self._sheets:
            self._start_sheet()
        self._end_sheet()
        self._put(self._ops, _STOP)

    def _learn_layout(self, batch: pa.RecordBatch) -> None:
        self._header = list(batch.schema.names)
        sample = batch.slice(0, WIDTH_SAMPLE_ROWS)
        self._widths = [
            display_width(spreadsheet_cells(column, self.metadata.timezone), name)
            for column, name in zip(sample.columns, self._header, strict=True)
        ]

    def _pieces(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """Slices of the batch small enough to build and deflate quickly, cut at sheet ends."""
        step = max(1, self._piece_target // _row_bytes(batch))
        start = 0
        sheet_rows = self._sheet_rows
        while start < batch.num_rows:
            room = self.max_sheet_rows - sheet_rows
            if room <= 0:
                room = self.max_sheet_rows - 1
                sheet_rows = 1
            length = min(step, room, batch.num_rows - start)
            yield batch.slice(start, length)
            sheet_rows += length
            start += length

    def _emit_rows(self, piece: pa.RecordBatch) -> None:
        if piece.num_rows == 0:
            return
        first_row = self._sheet_rows + 1
        zone = self.metadata.timezone
        self._put(self._ops, _Piece(self._pool.submit(_built, piece, first_row, zone)))
        self._sheet_rows += piece.num_rows
        self._rows_written += piece.num_rows

    def _emit(self, raw: Bytes) -> None:
        self._put(self._ops, _Piece(self._pool.submit(_deflated, raw)))

    def _start_sheet(self) -> None:
        number = len(self._sheets) + 1
        name = DATA_SHEET if number == 1 else f"{DATA_SHEET} {number}"
        self._sheets.append(parts.SheetPart(name, len(self._header), 1, bool(self._header)))
        self._put(self._ops, _Open(f"xl/worksheets/sheet{number}.xml"))
        head = parts.sheet_head(
            self._header, self._widths, selected=number == 1, frozen=bool(self._header)
        )
        self._emit(head)
        self._sheet_rows = 1 if self._header else 0

    def _end_sheet(self) -> None:
        current = self._sheets[-1]
        finished = parts.SheetPart(
            current.name, current.columns, max(self._sheet_rows, 1), current.autofilter
        )
        self._sheets[-1] = finished
        self._emit(parts.sheet_tail(finished))
        self._put(self._ops, _Close())

    # -- appender thread: compressed pieces -> file, in order --------------------------------

    def _append_loop(self) -> None:
        while (op := self._get(self._ops)) is not _STOP:
            if isinstance(op, _Piece):
                self._zip.add_piece(*op.built.result())
            elif isinstance(op, _Open):
                self._zip.open_entry(op.name)
            elif isinstance(op, _Close):
                self._zip.close_entry()
