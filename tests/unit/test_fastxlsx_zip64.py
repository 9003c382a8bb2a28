"""ZIP64 for streamed sheet entries: a streaming reader (stream-unzip, which never reads the
central directory) must read an entry over 4 GiB, and the writer must give the ZIP64 local
header to every sheet that may grow that large."""

from __future__ import annotations

import struct
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from python_calamine import CalamineWorkbook
from stream_unzip import stream_unzip

from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.fastxlsx import FastXlsxWriter, sheet_may_pass_zip32
from exportd.exporter.writers.fastxlsx_zip import ZipStream, deflate_piece

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


def test_wide_rows_get_a_zip64_sheet_and_narrow_rows_stay_plain_zip(tmp_path: Path) -> None:
    """Rows of ~30 kB could fill a sheet past 4 GiB: their sheet entry is opened with the ZIP64
    local header, and calamine, zipfile and stream-unzip read it; a 10-column table's sheet
    stays plain ZIP 2.0 (what every spreadsheet program reads)."""
    assert sheet_may_pass_zip32(30_000, 1_048_575)
    assert not sheet_may_pass_zip32(300, 1_048_575)
    meta = ExportMetadata("exp", "t", datetime(2026, 1, 1, tzinfo=UTC))
    for name, text, zip64 in (("wide", "w" * 30_000, True), ("narrow", "n" * 10, False)):
        path = tmp_path / f"{name}.xlsx"
        writer = FastXlsxWriter(path, meta)
        writer.write_batch(pa.record_batch({"k": pa.array([1, 2]), "t": pa.array([text] * 2)}))
        writer.finish(datetime(2026, 1, 1, tzinfo=UTC))
        data = path.read_bytes()
        with zipfile.ZipFile(path) as archive:
            offset = archive.getinfo("xl/worksheets/sheet1.xml").header_offset
        version, _, _, extra = local_header(data, offset)
        assert (version == 45 and extra[:2] == b"\x01\x00") is zip64, name
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Export").to_python()
        assert rows[1:] == [[1.0, text], [2.0, text]]
        names = [
            entry_name
            for entry_name, _, chunks in stream_unzip([data])
            if not any(False for _ in chunks)
        ]
        assert b"xl/worksheets/sheet1.xml" in names
