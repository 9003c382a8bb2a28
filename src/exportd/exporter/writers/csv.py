"""CSV writer: RFC 4180 via the csv module, UTF-8, NULL kept apart from the empty string.

File layout (``\\r\\n`` line ends, as RFC 4180 asks):

.. code-block:: text

    # exportd: export=<id> type=<type> requested_at=<ISO 8601 UTC> timezone=<zone>
    "id","name","notes"
    1,"Alice",""
    2,"Bob",
    # exportd: completed_at=<ISO 8601 UTC> rows=<n>

- The first and last ``# exportd:`` lines appear only in the ``comments`` layout (the export
  type's ``csv_layout``) with ``metadata`` on. Times are UTC, e.g. ``2025-01-31T12:00:00.123456Z``.
  The default ``header`` layout starts with the header row and has nothing else, so csv readers,
  pandas and spreadsheet imports read it with no options; the exporter then keeps the times in a
  JSON sidecar (:mod:`exportd.exporter.sidecar`).
- Numbers are never quoted; text, dates, timestamps and booleans always are.
- NULL is an empty, unquoted field; an empty string is ``""``.
- Text starting with ``=``, ``+``, ``-``, ``@``, TAB or CR gets a leading ``'`` so spreadsheet
  programs show it instead of evaluating it (OWASP CSV injection advice), unless the export type
  sets ``csv_neutralize_formulas: false``. Numbers are not touched.
- A UTF-8 byte order mark starts the file when the export type sets ``csv_bom``.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO, cast

import pyarrow as pa

from exportd.contract.catalog import ExportType
from exportd.exporter.cells import Field, is_text_type, text_fields
from exportd.exporter.writers.base import ExportMetadata, HashingFile, Writer, WriteSummary

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
METADATA_PREFIX = "# exportd:"
LINE_END = "\r\n"


class _Null:
    """Written as an empty, unquoted field: ``QUOTE_NONNUMERIC`` quotes every value except
    numbers, and this object counts as a number whose text is empty."""

    def __float__(self) -> float:
        return 0.0

    def __str__(self) -> str:
        return ""


NULL = _Null()


def neutralize(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class CsvWriter(Writer):
    def __init__(
        self,
        path: Path,
        metadata: ExportMetadata,
        *,
        bom: bool = False,
        comments: bool = True,
        neutralize_formulas: bool = True,
    ) -> None:
        super().__init__(path, metadata)
        self._comments = comments and metadata.enabled
        self._neutralize = neutralize_formulas
        self._bytes = HashingFile.create(path)
        self._file: IO[str] = io.TextIOWrapper(
            cast(BinaryIO, self._bytes), encoding="utf-8-sig" if bom else "utf-8", newline=""
        )
        self._csv = csv.writer(self._file, quoting=csv.QUOTE_NONNUMERIC, lineterminator=LINE_END)
        self._rows_written = 0
        self._header_written = False
        if self._comments:
            self._file.write(
                f"{METADATA_PREFIX} export={metadata.export_id} type={metadata.export_type} "
                f"requested_at={iso_utc(metadata.requested_at)} timezone={metadata.timezone}"
                f"{LINE_END}"
            )

    @classmethod
    def from_export_type(
        cls, path: Path, metadata: ExportMetadata, export_type: ExportType
    ) -> CsvWriter:
        return cls(
            path,
            metadata,
            bom=export_type.csv_bom,
            comments=export_type.csv_layout == "comments",
            neutralize_formulas=export_type.csv_neutralize_formulas,
        )

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if not self._header_written:
            self._csv.writerow(batch.schema.names)
            self._header_written = True
        columns = [
            _csv_column(
                column, self.metadata.timezone, self._neutralize and is_text_type(field.type)
            )
            for column, field in zip(batch.columns, batch.schema, strict=True)
        ]
        rows = list(zip(*columns, strict=True))
        self._csv.writerows(rows)
        self._rows_written += len(rows)

    def finish(self, completed_at: datetime) -> WriteSummary:
        if self._comments:
            self._file.write(
                f"{METADATA_PREFIX} completed_at={iso_utc(completed_at)} "
                f"rows={self._rows_written}{LINE_END}"
            )
        self._file.flush()
        self._file.close()
        return WriteSummary(rows_written=self._rows_written, sha256=self._bytes.hexdigest())

    def abort(self) -> None:
        self._file.close()


def _csv_column(column: pa.Array, zone: str, neutralize_text: bool) -> list[Field | _Null]:
    values = text_fields(column, zone)
    if neutralize_text:
        return [NULL if v is None else neutralize(str(v)) for v in values]
    return [NULL if v is None else v for v in values]
