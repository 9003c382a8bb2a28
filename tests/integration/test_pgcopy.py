"""CSV by PostgreSQL COPY: the CSV writer's content (formula neutralizing, cleaning, NULL apart
from empty, metadata lines), bound parameters, limits, timeouts and cancellation."""

from __future__ import annotations

import csv
import io
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exportd.contract.errors import Cancelled, PermanentFailure
from exportd.exporter.pgcopy import PostgresCsvCopy
from exportd.exporter.sources.base import QueryOptions
from exportd.exporter.sources.postgres import PostgresSource
from exportd.exporter.writers.base import ExportMetadata
from exportd.exporter.writers.csv import CsvWriter
from tests.conftest import loaded_by_import
from tests.integration.test_fastxlsx_postgres import (
    EDGE_ROWS,
    PG_DSN,
    edge_schema_fixture,  # noqa: F401 - the same module-scoped table of edge-case rows
    pg_source,
)

pytestmark = pytest.mark.integration
REQUESTED = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
TIMESTAMP_COLUMN = "at"


def copy_csv(sql: str, path: Path, params: dict[str, Any] | None = None, **options: Any) -> Any:
    zone = options.pop("timezone", "Europe/Berlin")
    enabled = options.pop("metadata", True)
    metadata = ExportMetadata("exp-csv", "edge", REQUESTED, zone, enabled)
    with PostgresCsvCopy.from_config(pg_source()) as copier:
        return copier.run(sql, params or {}, path, metadata, **options)


def writer_csv(sql: str, path: Path) -> None:
    """The reference: the CSV writer fed by the psycopg source."""
    writer = CsvWriter(path, ExportMetadata("exp-csv", "edge", REQUESTED, "Europe/Berlin"))
    with PostgresSource.from_config(pg_source()) as source:
        for batch in source.stream(sql, {}, QueryOptions()):
            writer.write_batch(batch)
    writer.finish(datetime.now(UTC))


def parsed(path: Path) -> list[list[str]]:
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    assert lines[0].startswith("# exportd: ") and lines[-2].startswith("# exportd: ")
    return list(csv.reader(io.StringIO("\r\n".join(lines[1:-2]) + "\r\n")))


def test_copy_csv_has_the_csv_writers_content(edge_schema: str, tmp_path: Path) -> None:
    """Field by field the same as the CSV writer (timestamps compared as instants: COPY keeps
    PostgreSQL's ISO form), for every edge value."""
    sql = f"SELECT * FROM {edge_schema}.edge ORDER BY id"
    result = copy_csv(sql, tmp_path / "copy.csv")
    writer_csv(sql, tmp_path / "writer.csv")
    assert (result.rows_read, result.rows_written) == (len(EDGE_ROWS), len(EDGE_ROWS))
    ours, theirs = parsed(tmp_path / "copy.csv"), parsed(tmp_path / "writer.csv")
    assert ours[0] == theirs[0]
    at = ours[0].index(TIMESTAMP_COLUMN)
    assert len(ours) == len(theirs) == len(EDGE_ROWS) + 1
    for mine, reference in zip(ours[1:], theirs[1:], strict=True):
        if mine[at]:
            assert datetime.fromisoformat(mine[at]) == datetime.fromisoformat(reference[at])
            mine[at] = reference[at]
        assert mine == reference


def test_text_is_neutralized_cleaned_and_null_stays_apart_from_empty(
    edge_schema: str, tmp_path: Path
) -> None:
    path = tmp_path / "raw.csv"
    copy_csv(f"SELECT id, body, note FROM {edge_schema}.edge ORDER BY id", path)
    raw = path.read_bytes()
    assert b'1,"plain",""\r\n' in raw  # empty string quoted
    assert b"6,,\r\n" in raw  # NULL: empty and unquoted
    assert b'"\'=HYPERLINK(""http://x"",""y"")","\'+1 and -1"' in raw
    assert b'3,"abc","\'@user"\r\n' in raw  # control characters removed
    assert b'"\'\ttab first"' in raw
    assert b'"\xf0\x9f\x98\x80 emoji, ""quoted""\nnext line"' in raw  # inner LF kept as is
    assert raw.count(b"\r\n") == len(EDGE_ROWS) + 3  # rows, header, two metadata lines
    assert b"y" * 40_000 in raw  # CSV has no cell limit: nothing cut


def test_formula_hidden_behind_a_control_character_is_still_neutralized(tmp_path: Path) -> None:
    """Cleaning runs before neutralizing, so \\x01=cmd cannot become a live =cmd."""
    path = tmp_path / "hidden.csv"
    copy_csv("SELECT chr(1) || '=cmd()' AS t, 'a' || chr(2) AS u", path, metadata=False)
    assert path.read_bytes() == b'"t","u"\r\n"\'=cmd()","a"\r\n'


def test_metadata_lines_and_header_match_the_csv_writer(edge_schema: str, tmp_path: Path) -> None:
    sql = f"SELECT id, note FROM {edge_schema}.edge ORDER BY id"
    result = copy_csv(sql, tmp_path / "copy.csv")
    writer_csv(sql, tmp_path / "writer.csv")
    ours = (tmp_path / "copy.csv").read_bytes().split(b"\r\n")
    theirs = (tmp_path / "writer.csv").read_bytes().split(b"\r\n")
    assert ours[:2] == theirs[:2]
    completed = result.completed_at.isoformat().replace("+00:00", "Z")
    assert ours[-2] == f"# exportd: completed_at={completed} rows=6".encode()


def test_metadata_off_and_bom_on(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    copy_csv("SELECT 1 AS one, true AS yes", path, metadata=False, bom=True)
    assert path.read_bytes() == b'\xef\xbb\xbf"one","yes"\r\n1,"true"\r\n'


def test_parameters_are_bound_safely(edge_schema: str, tmp_path: Path) -> None:
    sql = f"SELECT id FROM {edge_schema}.edge WHERE note = :note OR body = :body ORDER BY id"
    path = tmp_path / "p.csv"
    result = copy_csv(sql, path, {"note": "x' OR '1'='1", "body": "'); DROP TABLE x; --"})
    assert result.rows_written == 0
    result = copy_csv(sql, path, {"note": "@user", "body": "plain"})
    assert parsed(path)[1:] == [["1"], ["3"]]
    with psycopg.connect(PG_DSN) as conn:
        assert conn.execute(f"SELECT count(*) FROM {edge_schema}.edge").fetchone() == (6,)


def test_the_transaction_is_read_only(edge_schema: str, tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure) as caught:
        copy_csv(f"SELECT nextval('{edge_schema}.counter') AS n", tmp_path / "ro.csv")
    assert caught.value.reason == "ReadOnlyTransaction"


def test_more_rows_than_allowed_fails(tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure) as caught:
        copy_csv("SELECT g FROM generate_series(1, 20000) AS g", tmp_path / "m.csv", max_rows=100)
    assert caught.value.reason == "TooManyRows"


def test_statement_timeout_stops_the_query(tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure) as caught:
        copy_csv(
            "SELECT 1 AS one FROM pg_sleep(5)", tmp_path / "t.csv", statement_timeout_seconds=1
        )
    assert caught.value.reason == "StatementTimeout"


def test_cancel_from_another_thread_stops_the_copy_on_the_server(tmp_path: Path) -> None:
    copier = PostgresCsvCopy.from_config(pg_source())
    metadata = ExportMetadata("exp-c", "t", REQUESTED)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            copier.run("SELECT 1 AS one FROM pg_sleep(30)", {}, tmp_path / "c.csv", metadata)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    copier.cancel()
    thread.join(timeout=10)
    copier.close()
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    with psycopg.connect(PG_DSN) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    assert left == (0,)


def test_an_error_in_the_middle_of_the_copy_fails_the_export(tmp_path: Path) -> None:
    """The server fails at row 3,000 (division by zero), after whole chunks were written: the
    error is the database's own, classified, not a short file reported as complete."""
    with pytest.raises(PermanentFailure) as caught:
        copy_csv(
            "SELECT g, 1 / (g - 3000) AS inverse FROM generate_series(1, 10000) AS g",
            tmp_path / "e.csv",
        )
    assert "division by zero" in caught.value.message


def test_every_row_of_a_long_copy_arrives_once_and_in_order(tmp_path: Path) -> None:
    """Hundreds of chunks and socket waits: the file holds exactly the rows the server sent."""
    result = copy_csv(
        "SELECT g AS n, repeat('x', g % 50) AS pad FROM generate_series(1, 200000) AS g",
        tmp_path / "long.csv",
    )
    rows = parsed(tmp_path / "long.csv")
    assert rows[0] == ["n", "pad"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, 200001))
    assert all(row[1] == "x" * (int(row[0]) % 50) for row in rows[1:])
    assert result.rows_read == result.rows_written == 200000


def test_the_connection_serves_again_after_a_finished_copy(tmp_path: Path) -> None:
    """After the COPY's final result is read the connection is idle, not left mid-protocol."""
    from exportd.exporter.pgcopyout import copy_out

    chunks: list[bytes] = []
    with psycopg.connect(PG_DSN) as conn:
        count = copy_out(
            conn,
            "COPY (SELECT g FROM generate_series(1, %(n)s) AS g) TO STDOUT",
            {"n": 1000},
            lambda buffer, rows: chunks.append(bytes(buffer)),
            chunk_rows=100,
        )
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    assert count == 1000
    assert b"".join(chunks) == b"".join(f"{n}\n".encode() for n in range(1, 1001))


def test_a_statement_that_is_no_copy_out_is_refused_and_a_failed_read_closes(
    tmp_path: Path,
) -> None:
    """copy_out reads only ``COPY ... TO STDOUT``; on any failure, above all the consumer's
    mid-copy (the row limit, a full disk), the connection is closed, never reused half-read."""
    from exportd.exporter.pgcopyout import copy_out

    def ignore(buffer: bytearray, rows: int) -> None:
        pass

    def fail(buffer: bytearray, rows: int) -> None:
        if rows:
            raise OSError("disk full")

    with psycopg.connect(PG_DSN) as conn:
        with pytest.raises(psycopg.ProgrammingError, match="TUPLES_OK"):
            copy_out(conn, "SELECT 1", {}, ignore, chunk_rows=10)
        assert conn.closed
    with psycopg.connect(PG_DSN) as conn:
        statement = "COPY (SELECT g FROM generate_series(1, 100000) AS g) TO STDOUT"
        with pytest.raises(OSError, match="disk full"):
            copy_out(conn, statement, {}, fail, chunk_rows=10)
        assert conn.closed


def test_the_copy_path_never_loads_arrow() -> None:
    """What keeps a CSV export process small: no pyarrow, no DuckDB."""
    assert loaded_by_import("exportd.exporter.pgcopy", ("pyarrow", "duckdb")) == []


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([b'1,"=x","+y"\n'], b'1,"\'=x","\'+y"\r\n'),
        ([b'"-1",2\n', b'"@a",3\n'], b'"\'-1",2\r\n"\'@a",3\r\n'),
        ([b'"a,""=b",-5\n'], b'"a,""=b",-5\r\n'),  # inside a value, after a doubled quote
        ([b'"x\n""=y"\n', b'"\t",1\n'], b'"x\n""=y"\r\n"\'\t",1\r\n'),  # LF inside a value
        ([b'"ab\x01c\x1f",1\n'], b'"abc",1\r\n'),
    ],
)
def test_chunks_are_cleaned_neutralized_and_end_in_crlf(
    rows: list[bytes], expected: bytes, tmp_path: Path
) -> None:
    from exportd.exporter.pgcopy import _flush

    path = tmp_path / "chunk.csv"
    with path.open("wb") as file:
        assert _flush(bytearray(b"".join(rows)), len(rows), file) == len(rows)
    assert path.read_bytes() == expected
