"""ZIP64 for streamed sheet entries: a streaming reader (stream-unzip, which never reads the
central directory) must read an entry over 4 GiB, and the ZIP64 local header is decided
exactly: every streamed entry that reaches 4 GiB gets it, every smaller one stays plain ZIP 2.0
(its reserved bytes a padding extra field)."""

from __future__ import annotations

import hashlib
import struct
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from python_calamine import CalamineWorkbook
from stream_unzip import stream_unzip

from exportd.exporter.writers.base import ExportMetadata, HashingFile
from exportd.exporter.writers.fastxlsx import FastXlsxWriter
from exportd.exporter.writers.fastxlsx_zip import (
    PADDING_EXTRA_ID,
    ZipStream,
    deflate_piece,
    zip64_header_needed,
)

PIECE = 64 * 1024 * 1024
PIECES = 65  # 65 x 64 MiB = 4.06 GiB, past the 32-bit limit of 4 GiB - 1


def local_header(data: bytes, offset: int = 0) -> tuple[int, int, int, bytes]:
    """(version needed, compressed size, size, extra field) of the local header at offset."""
    fields = struct.unpack_from("<IHHHHHIIIHH", data, offset)
    assert fields[0] == 0x04034B50
    name_length, extra_length = fields[9], fields[10]
    start = offset + 30 + name_length
    return fields[1], fields[7], fields[8], data[start : start + extra_length]


def test_a_streamed_entry_over_4_gib_is_read_by_a_streaming_reader(tmp_path: Path) -> None:
    """SLOW BY DESIGN (~10 s): 4.06 GiB of sheet-like XML (deflated once per 64 MiB piece and
    appended 65 times, so only the CRC and the reader's inflate touch all of it) in an entry
    opened with zip64. stream-unzip, walking local headers and data descriptors only, must
    return the entry with its exact size and CRC (it checks both against the descriptor), and
    the local header must carry the ZIP64 extra field."""
    row = b'<row r="1"><c><v>1</v></c></row>'
    raw = memoryview((row * (PIECE // len(row) + 1))[:PIECE])
    assert len(raw) == PIECE
    compressed = deflate_piece(raw)
    path = tmp_path / "big.zip"
    with path.open("wb") as file:
        stream = ZipStream(file)
        stream.open_entry("xl/worksheets/sheet1.xml", zip64=True)
        for _ in range(PIECES):
            stream.add_piece(raw, compressed)
        stream.close_entry()
        stream.write_entry("after.txt", b"still there")
        stream.close()
    data = path.read_bytes()
    version, compressed_size, size, extra = local_header(data)
    assert version == 45 and (compressed_size, size) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert extra[:4] == struct.pack("<HH", 0x0001, 16)
    expected_crc = 0
    for _ in range(PIECES):
        expected_crc = zlib.crc32(raw, expected_crc)
    found = {}
    chunked = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    for name, _, chunks in stream_unzip(chunked):  # raises on a CRC or size mismatch
        found[name.decode()] = (sum(len(chunk) for chunk in chunks), 0)
    assert found["xl/worksheets/sheet1.xml"][0] == PIECE * PIECES > 0xFFFFFFFF
    assert found["after.txt"][0] == len(b"still there")
    with zipfile.ZipFile(path) as archive:  # the central directory agrees
        info = archive.getinfo("xl/worksheets/sheet1.xml")
        assert (info.file_size, info.CRC) == (PIECE * PIECES, expected_crc)


def test_small_sheets_stay_plain_zip_whatever_their_row_width(tmp_path: Path) -> None:
    """The ZIP64 header is decided by the entry's real size, not guessed from its rows: a sheet
    of two ~30 kB rows (once given ZIP64 by the old estimate) and a narrow one both stay plain
    ZIP 2.0 with the padding extra field; calamine, zipfile and stream-unzip read both."""
    meta = ExportMetadata("exp", "t", datetime(2026, 1, 1, tzinfo=UTC))
    for name, text, zip64 in (("wide", "w" * 30_000, False), ("narrow", "n" * 10, False)):
        path = tmp_path / f"{name}.xlsx"
        writer = FastXlsxWriter(path, meta)
        writer.write_batch(pa.record_batch({"k": pa.array([1, 2]), "t": pa.array([text] * 2)}))
        writer.finish(datetime(2026, 1, 1, tzinfo=UTC))
        data = path.read_bytes()
        with zipfile.ZipFile(path) as archive:
            offset = archive.getinfo("xl/worksheets/sheet1.xml").header_offset
        version, _, _, extra = local_header(data, offset)
        assert (version == 45 and extra[:2] == b"\x01\x00") is zip64, name
        assert (version, extra[:4]) == (20, struct.pack("<HH", PADDING_EXTRA_ID, 16)), name
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Export").to_python()
        assert rows[1:] == [[1.0, text], [2.0, text]]
        names = [
            entry_name
            for entry_name, _, chunks in stream_unzip([data])
            if not any(False for _ in chunks)
        ]
        assert b"xl/worksheets/sheet1.xml" in names


def test_the_reserved_header_becomes_zip64_exactly_at_4_gib_and_the_hash_stays_exact(
    tmp_path: Path,
) -> None:
    """The rewrite decision: sizes below 4 GiB - 1 (compressed and raw) keep the padding, either
    reaching it takes ZIP64. Then through the exporter's HashingFile, an entry grown past 4 GiB
    (66 x 64 MiB, deflated once) and one small entry: the big one's header is rewritten in place
    to ZIP64 (version 45, size markers, the ZIP64 extra), the small one keeps its padding, every
    reader gets the exact bytes, and the streamed SHA-256 equals the finished file's."""
    limit = 0xFFFFFFFF
    assert not zip64_header_needed(limit - 1, limit - 1)
    assert zip64_header_needed(10, limit) and zip64_header_needed(limit, 10)
    row = b'<row r="1"><c><v>1</v></c></row>'
    raw = memoryview((row * (PIECE // len(row) + 1))[:PIECE])
    compressed = deflate_piece(raw)
    path = tmp_path / "exact.zip"
    file = HashingFile.create(path)
    stream = ZipStream(file)  # type: ignore[arg-type]
    stream.open_entry("small.xml")
    stream.add_piece(raw[:1000], deflate_piece(raw[:1000]))
    stream.close_entry()
    stream.open_entry("big.xml")
    for _ in range(PIECES + 1):
        stream.add_piece(raw, compressed)
    stream.close_entry()
    stream.close()
    file.close()
    data = path.read_bytes()
    assert file.hexdigest() == hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(path) as archive:
        small, big = archive.getinfo("small.xml"), archive.getinfo("big.xml")
        assert archive.read("small.xml") == bytes(raw[:1000])
    version, _, _, extra = local_header(data, small.header_offset)
    assert (version, extra) == (20, struct.pack("<HHH14x", PADDING_EXTRA_ID, 16, 1))
    version, compressed_size, size, extra = local_header(data, big.header_offset)
    assert (version, compressed_size, size) == (45, 0xFFFFFFFF, 0xFFFFFFFF)
    assert extra == struct.pack("<HHQQ", 0x0001, 16, 0, 0)
    assert big.file_size == PIECE * (PIECES + 1)
    chunked = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    sizes = {name: sum(len(c) for c in chunks) for name, _, chunks in stream_unzip(chunked)}
    assert sizes == {b"small.xml": 1000, b"big.xml": PIECE * (PIECES + 1)}
