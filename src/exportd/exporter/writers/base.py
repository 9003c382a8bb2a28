"""The writer interface: the plug-in point for file formats (xlsx, csv, ...).

A writer receives Arrow batches in order and writes them to a local file; the exporter publishes
that file to storage only after ``finish`` returned. ``finish`` reports how many rows it wrote,
so the exporter can hold it to the completeness contract (rows read == rows written).
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:  # the PostgreSQL CSV path imports this module and must stay without Arrow
    import pyarrow as pa


EXCEL_MAX_ROWS = 1_048_576
DATA_SHEET = "Export"
METADATA_SHEET = "Export info"


@dataclass(frozen=True)
class ExportMetadata:
    """What every file says about itself (XLSX: a metadata sheet; CSV: first and last line)."""

    export_id: str
    export_type: str
    requested_at: datetime
    timezone: str = "UTC"
    enabled: bool = True


@dataclass(frozen=True)
class WriteSummary:
    rows_written: int
    sheets: int = 1
    sha256: str | None = None  # of the file's bytes, when the writer hashed them as it wrote


class HashingFile(io.BufferedIOBase):
    """A binary file that feeds every byte written to SHA-256 on the way, so the exporter never
    reads the finished file again to hash it."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self._hash = hashlib.sha256()
        self._marks: dict[int, Any] = {}  # offset -> the hash's state before it

    @classmethod
    def create(cls, path: Path) -> HashingFile:
        return cls(path.open("w+b"))  # readable too: see rewrite

    def mark(self, offset: int) -> None:
        """Remember the hash's state here (``offset``: the bytes written so far), so the bytes
        from here on may be rewritten later (see :meth:`rewrite`)."""
        self._marks[offset] = self._hash.copy()

    def rewrite(self, offset: int, data: bytes) -> None:
        """Replace bytes at a marked ``offset`` (same length) and keep the hash exact: it goes
        back to its state at the mark and hashes everything from there again (the file's tail
        is read back, from the page cache: the price of a rare rewrite, never of a plain one)."""
        self._hash = self._marks.pop(offset)
        self._file.flush()
        end = self._file.seek(0, io.SEEK_END)
        self._file.seek(offset)
        self._file.write(data)
        self._hash.update(data)
        while chunk := self._file.read(min(1 << 20, max(end - self._file.tell(), 0))):
            self._hash.update(chunk)
        self._file.seek(end)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._hash.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes through this object first
            self._file.close()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Writer(ABC):
    def __init__(self, path: Path, metadata: ExportMetadata) -> None:
        self.path = path
        self.metadata = metadata

    @abstractmethod
    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    @abstractmethod
    def finish(self, completed_at: datetime) -> WriteSummary:
        """Write the trailer (completion timestamp) and close the file."""

    def abort(self) -> None:  # noqa: B027 - optional hook, most writers need nothing
        """Release what the writer holds after a failure; the exporter deletes the file."""
