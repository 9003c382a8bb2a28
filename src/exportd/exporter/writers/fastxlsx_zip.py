"""A small streaming ZIP writer whose big entries are deflated in parallel, chunk by chunk.

Why not :mod:`zipfile`: it deflates in the thread that writes, one chunk after the other, and
compression of ~320 MB of sheet XML per million rows is the largest single cost of an XLSX export.
Here each chunk is deflated on its own (``Z_SYNC_FLUSH`` ends it on a byte boundary, so the
pieces concatenate into one valid deflate stream, as pigz does) by a pool of threads; zlib and
ISA-L release the GIL, so chunks compress on both cores while the next batch is read and built.
ISA-L (PyPI ``isal``) deflates about 3-4x faster than zlib level 1 with a slightly better ratio;
zlib level 1 is the fallback when it is not installed.

Format: streamed entries carry a data descriptor (general purpose flag bit 3), like Java's
``ZipOutputStream`` that Apache POI writes XLSX with; ZIP64 records are added only when a size or
an offset needs them (sheet XML past 4 GiB), so ordinary files are plain ZIP 2.0.

ZIP64, exactly: a streamed entry whose data reaches 4 GiB needs the ZIP64 extra field in its
local header (sizes ``0xFFFFFFFF`` in the header, zero in the extra, as APPNOTE 4.3.9.2 asks when
a data descriptor follows) and 8-byte sizes in its data descriptor, or a streaming reader that
never looks at the central directory misreads it. Its final size is unknown when its header is
written, so when the file can be rewritten (the exporter's local file) every streamed entry's
local header reserves the extra field's 20 bytes as a *padding* extra field, ID ``0xD935`` (the
one Android's zipalign writes into every aligned APK: 2 bytes of alignment, here 1, then zeros).
When the entry closes past 4 GiB, its header is rewritten in place, same length: version 45, the
size markers, the padding turned into the ZIP64 extra field. Otherwise it stays as written: a
plain ZIP 2.0 header with an extra field readers skip (APPNOTE 4.5.1: unknown IDs are ignored;
zipfile, stream-unzip, calamine's zip crate and LibreOffice skip it; it is never repeated in the
central directory). Why padding and not the ZIP64 field always: a ZIP64 header on every small
file asks every reader to handle ZIP64; why not a plain header rewritten later: 20 bytes cannot
be inserted before gigabytes of data. ``open_entry(zip64=True)`` forces the ZIP64 header; a file
that cannot be rewritten gets plain headers (and nothing past 4 GiB should be streamed into it).
"""

from __future__ import annotations

import importlib
import struct
import time
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import BinaryIO


def _deflate_module() -> ModuleType:
    """ISA-L when installed (same deflate format, several times faster), else zlib."""
    try:
        return importlib.import_module("isal.isal_zlib")
    except ImportError:  # pragma: no cover - only where isal is not installed
        return zlib


_deflate_lib = _deflate_module()
DEFLATE_ENGINE = "zlib" if _deflate_lib is zlib else "isal"
DEFLATE_LEVEL = 1

RAW_DEFLATE = -15
DEFLATED = 8
FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final, empty fixed-Huffman block: ends the deflate stream
ZIP32_LIMIT = 0xFFFFFFFF  # sizes and offsets from here on need ZIP64 records
ZIP32_MARKER = 0xFFFFFFFF  # "see the ZIP64 record" in a 32-bit field
FLAG_DATA_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800
VERSION_DEFAULT = 20
VERSION_ZIP64 = 45
ZIP64_EXTRA_ID = 0x0001
PADDING_EXTRA_ID = 0xD935  # Android zipalign's alignment padding
RESERVED_EXTRA_BYTES = 20  # the ZIP64 extra field of a local header: ID, length, two sizes


Bytes = bytes | bytearray | memoryview


def deflate_piece(data: Bytes, level: int = DEFLATE_LEVEL) -> bytes:
    """Deflate ``data`` as a non-final piece of a stream (runs without the GIL)."""
    compressor = _deflate_lib.compressobj(level, DEFLATED, RAW_DEFLATE)
    return bytes(compressor.compress(data) + compressor.flush(_deflate_lib.Z_SYNC_FLUSH))


@dataclass
class _Entry:
    name: bytes
    offset: int
    crc: int = 0
    compressed_size: int = 0
    size: int = 0
    flags: int = 0
    dos_time: int = 0
    dos_date: int = 0
    zip64_local: bool = False  # the local header has the ZIP64 extra field
    reserved: bool = False  # the local header holds padding that may become the ZIP64 field

    @property
    def needs_zip64(self) -> bool:
        return max(self.compressed_size, self.size, self.offset) >= ZIP32_LIMIT

    @property
    def version(self) -> int:
        return VERSION_ZIP64 if self.zip64_local or self.needs_zip64 else VERSION_DEFAULT


def _dos_stamp(moment: float) -> tuple[int, int]:
    t = time.localtime(moment)
    year = max(t.tm_year, 1980)
    return (
        (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
        ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday,
    )


class ZipStream:
    """Writes a ZIP archive front to back into an open binary file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        # Rewritable: a HashingFile (its hash kept exact) or a plain seekable file.
        self.rewritable = hasattr(file, "rewrite") or file.seekable()
        self._offset = 0
        self._entries: list[_Entry] = []
        self._open: _Entry | None = None
        self._dos_time, self._dos_date = _dos_stamp(time.time())

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._offset += len(data)

    def _local_header(self, entry: _Entry) -> bytes:
        sizes = (
            (0, 0, 0)
            if entry.flags & FLAG_DATA_DESCRIPTOR
            else (entry.crc, entry.compressed_size, entry.size)
        )
        extra = b""
        if entry.zip64_local:
            sizes = (0, ZIP32_MARKER, ZIP32_MARKER)
            extra = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, 0, 0)  # sizes in the descriptor
        elif entry.reserved:
            extra = struct.pack("<HHH14x", PADDING_EXTRA_ID, 16, 1)
        return (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                entry.version,
                entry.flags,
                DEFLATED,
                entry.dos_time,
                entry.dos_date,
                *sizes,
                len(entry.name),
                len(extra),
            )
            + entry.name
            + extra
        )

    def _new_entry(self, name: str, flags: int) -> _Entry:
        if self._open is not None:
            raise RuntimeError(f"entry {self._open.name!r} is still open")
        return _Entry(
            name.encode("utf-8"),
            self._offset,
            flags=flags | FLAG_UTF8,
            dos_time=self._dos_time,
            dos_date=self._dos_date,
        )

    def write_entry(self, name: str, data: bytes) -> None:
        """A small entry, deflated at once, its sizes in the local header."""
        entry = self._new_entry(name, 0)
        compressor = _deflate_lib.compressobj(DEFLATE_LEVEL, DEFLATED, RAW_DEFLATE)
        compressed = compressor.compress(data) + compressor.flush()
        entry.crc, entry.compressed_size, entry.size = zlib.crc32(data), len(compressed), len(data)
        self._write(self._local_header(entry))
        self._write(compressed)
        self._entries.append(entry)

    def open_entry(self, name: str, *, zip64: bool = False) -> None:
        """Start a streamed entry; add pieces with :meth:`add_piece`, end it with
        :meth:`close_entry`. ``zip64``: the ZIP64 local header whatever the size; otherwise
        it is decided exactly at the end when the file is rewritable (module docstring)."""
        entry = self._new_entry(name, FLAG_DATA_DESCRIPTOR)
        entry.zip64_local = zip64
        entry.reserved = not zip64 and self.rewritable
        if entry.reserved and hasattr(self._file, "mark"):
            self._file.mark(entry.offset)
        self._write(self._local_header(entry))
        self._open = entry

    def add_piece(self, raw: Bytes, compressed: bytes) -> None:
        """Append ``compressed`` (from :func:`deflate_piece`) of the next ``raw`` bytes.

        The CRC runs here, in order, at several GB/s (zlib releases the GIL for it)."""
        entry = self._require_open()
        self._write(compressed)
        entry.crc = zlib.crc32(raw, entry.crc)
        entry.compressed_size += len(compressed)
        entry.size += len(raw)

    def close_entry(self) -> None:
        entry = self._require_open()
        self._write(FINAL_EMPTY_BLOCK)
        entry.compressed_size += len(FINAL_EMPTY_BLOCK)
        if entry.reserved and zip64_header_needed(entry.compressed_size, entry.size):
            entry.zip64_local = True
            self._rewrite(entry.offset, self._local_header(entry))
        if entry.zip64_local or entry.compressed_size >= ZIP32_LIMIT or entry.size >= ZIP32_LIMIT:
            descriptor = struct.pack(
                "<IIQQ", 0x08074B50, entry.crc, entry.compressed_size, entry.size
            )
        else:
            descriptor = struct.pack(
                "<IIII", 0x08074B50, entry.crc, entry.compressed_size, entry.size
            )
        self._write(descriptor)
        self._entries.append(entry)
        self._open = None

    def _rewrite(self, offset: int, header: bytes) -> None:
        """The entry's local header again, in place (same length)."""
        rewrite = getattr(self._file, "rewrite", None)
        if rewrite is not None:
            rewrite(offset, header)
            return
        self._file.flush()
        self._file.seek(offset)
        self._file.write(header)
        self._file.seek(self._offset)

    def _require_open(self) -> _Entry:
        if self._open is None:
            raise RuntimeError("no entry is open")
        return self._open

    def close(self) -> None:
        """Write the central directory (ZIP64 records only where needed)."""
        if self._open is not None:
            raise RuntimeError("an entry is still open")
        directory_offset = self._offset
        for entry in self._entries:
            self._write(_central_record(entry))
        directory_size = self._offset - directory_offset
        count = len(self._entries)
        zip64 = directory_offset >= ZIP32_LIMIT or directory_size >= ZIP32_LIMIT or count >= 0xFFFF
        if zip64:
            self._write_zip64_end(count, directory_size, directory_offset)
        self._write(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                0xFFFF if zip64 else count,
                0xFFFF if zip64 else count,
                ZIP32_MARKER if zip64 else directory_size,
                ZIP32_MARKER if zip64 else directory_offset,
                0,
            )
        )
        self._file.flush()

    def _write_zip64_end(self, count: int, size: int, offset: int) -> None:
        record_offset = self._offset
        self._write(
            struct.pack(
                "<IQHHIIQQQQ",
                0x06064B50,
                44,
                VERSION_ZIP64,
                VERSION_ZIP64,
                0,
                0,
                count,
                count,
                size,
                offset,
            )
        )
        self._write(struct.pack("<IIQI", 0x07064B50, 0, record_offset, 1))


def zip64_header_needed(compressed_size: int, size: int) -> bool:
    """Whether a streamed entry of these final sizes needs the ZIP64 local header."""
    return max(compressed_size, size) >= ZIP32_LIMIT


def _central_record(entry: _Entry) -> bytes:
    extra = b""
    sizes = (entry.compressed_size, entry.size, entry.offset)
    if entry.needs_zip64:
        values = [v for v in (entry.size, entry.compressed_size, entry.offset) if v >= ZIP32_LIMIT]
        # APPNOTE 4.5.3: only the fields that overflow, in this fixed order.
        extra = struct.pack("<HH", 0x0001, 8 * len(values)) + b"".join(
            struct.pack("<Q", v) for v in values
        )
        sizes = tuple(ZIP32_MARKER if v >= ZIP32_LIMIT else v for v in sizes)  # type: ignore[assignment]
    version = entry.version
    compressed_size, size, offset = sizes
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            version,
            version,
            entry.flags,
            DEFLATED,
            entry.dos_time,
            entry.dos_date,
            entry.crc,
            compressed_size,
            size,
            len(entry.name),
            len(extra),
            0,
            0,
            0,
            0,
            entry.offset if not extra else offset,
        )
        + entry.name
        + extra
    )
