"""Whole exports from the real databases through ``python -m exportd.exporter`` child processes.

Each run gets a test catalog (``EXPORTD_CATALOG_PATH``) whose export types read the source named
``db``; which database ``db`` is comes from ``EXPORTD_SOURCES__DB__*`` in the child's
environment. So one and the same export type runs against PostgreSQL, MariaDB and DuckDB.
Memory is the child's peak resident set from ``wait4``; nothing here is timed.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from exportd.contract.errors import ExitCode
from tests.integration.dbfixtures import (
    COLUMNS,
    MYSQL_DSN,
    PG_DSN,
    SOURCE_KINDS,
    TypedDatabases,
    closed_port,
    typed_databases_fixture,  # noqa: F401
)
from tests.integration.exporter_children import Exporter, sheet_rows, spec_document
from tests.integration.server_activity import ServerQueries, wait_until

pytestmark = pytest.mark.integration

MILLION = 1_000_000
PEAK_RSS_LIMIT_BYTES = 300 * 1024 * 1024

BULK_QUERIES = {
    "postgres": """
        SELECT g AS id, g % 1000 AS n, (g * 0.01)::numeric(12,2) AS amount,
               g * 0.5::float8 AS ratio, 'name ' || g AS name,
               DATE '2000-01-01' + (g % 10000) AS born,
               TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * INTERVAL '1 second' AS happened_at,
               g % 2 = 0 AS active, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note' END AS note
        FROM generate_series(1, :rows) AS g""",
    "mysql": """
        SELECT seq AS id, seq % 1000 AS n, CAST(seq * 0.01 AS DECIMAL(12,2)) AS amount,
               seq * 0.5e0 AS ratio, CONCAT('name ', seq) AS name,
               DATE '2000-01-01' + INTERVAL (seq % 10000) DAY AS born,
               TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND AS happened_at,
               seq % 2 = 0 AS active, IF(seq % 3 = 0, NULL, 'note') AS note
        FROM seq_1_to_1000000 WHERE seq <= :rows""",
    "duckdb": """
        SELECT i AS id, i % 1000 AS n, CAST(i * 0.01 AS DECIMAL(12,2)) AS amount,
               i * 0.5 AS ratio, 'name ' || i AS name,
               DATE '2000-01-01' + CAST(i % 10000 AS INTEGER) AS born,
               TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i) AS happened_at,
               i % 2 = 0 AS active, CASE WHEN i % 3 = 0 THEN NULL ELSE 'note' END AS note
        FROM range(1, :rows + 1) AS t(i)""",
}


def source_env(kind: str, databases: TypedDatabases, **overrides: str) -> dict[str, str]:
    settings = {"kind": kind}
    if kind == "postgres":
        settings["dsn"] = PG_DSN
    elif kind == "mysql":
        settings["dsn"] = MYSQL_DSN
    else:
        settings["path"] = str(databases.duckdb_path)
    settings.update(overrides)
    return {f"EXPORTD_SOURCES__DB__{key.upper()}": value for key, value in settings.items()}


ExporterFactory = Callable[..., Exporter]


@pytest.fixture
def exporter(tmp_path: Path, typed_databases: TypedDatabases) -> ExporterFactory:
    """``exporter(kind, catalog_types, **source_overrides)`` -> an Exporter for that source."""

    def make(kind: str, types: dict[str, Any], **source_overrides: str) -> Exporter:
        workdir = tmp_path / kind
        workdir.mkdir(exist_ok=True)
        sources = source_env(kind, typed_databases, **source_overrides)
        return Exporter.with_catalog(workdir, types, sources)

    return make


def spec(export_type: str, file_name: str, variables: dict[str, Any]) -> dict[str, Any]:
    export_id = f"exp-src-{export_type.lower()}-1"
    return spec_document(
        export_type, file_name, variables, export_id=export_id, requested_by="source-tests"
    )


def typed_type(databases: TypedDatabases) -> dict[str, Any]:
    return {
        "source": "db",
        "timezone": "Europe/Berlin",
        "query": (
            f"SELECT {', '.join(COLUMNS)} FROM {databases.table} WHERE id >= :min_id ORDER BY id"
        ),
        "variables": {"min_id": {"type": "integer"}},
    }


def test_same_export_type_gives_the_same_xlsx_cells_from_all_three_databases(
    exporter: ExporterFactory, typed_databases: TypedDatabases
) -> None:
    """The export type ``typed`` (zone Europe/Berlin) run against PostgreSQL, MariaDB and DuckDB
    gives identical sheets read back with openpyxl; spot checks show the cells are the expected
    ones: 16-digit ids as text, decimals and integers as numbers, timestamps with zone shifted
    to Berlin time, booleans, unicode, and NULL as an empty cell."""
    sheets = {}
    for kind in SOURCE_KINDS:
        runner = exporter(kind, {"typed": typed_type(typed_databases)})
        run = runner.run(spec("typed", "typed.xlsx", {"min_id": 0}))
        assert run.returncode == ExitCode.OK, run.stderr
        assert run.last["rowsWritten"] == 4
        sheets[kind] = sheet_rows(runner.stored_file(run))
    assert sheets["postgres"] == sheets["mysql"] == sheets["duckdb"]
    header, *rows = sheets["postgres"]
    assert header == COLUMNS
    by_id = {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in rows}
    assert set(by_id) == {"1000000000000003", "1000000000000004", "1234567890123456",
                          "9007199254740993"}  # fmt: skip
    first = by_id["1234567890123456"]
    assert (first["n"], first["amount"], first["ratio"]) == (42, 1234.5, 0.1)
    assert first["name"] == "Zoë 東京 🚀"
    assert first["born"] == datetime(2024, 2, 29)
    assert first["seen_at"] == datetime(2024, 1, 2, 3, 4, 5, 123000)  # openpyxl reads ms
    assert first["happened_at"] == datetime(2024, 6, 1, 14, 0, 0, 500000)  # 12:00:00.5 UTC
    assert first["active"] is True
    second = by_id["9007199254740993"]
    assert second["happened_at"] == datetime(2038, 1, 19, 4, 14, 7)  # CET, +1 h in winter
    assert second["active"] is False
    assert second["name"] == 'O\'Brien "quoted", comma; --'
    third = by_id["1000000000000003"]
    assert (third["amount"], third["name"], third["note"]) == (9999999999.99, "", None)
    empty = by_id["1000000000000004"]
    assert all(empty[column] is None for column in COLUMNS[1:])


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_a_million_row_csv_export_stays_under_300_mb(exporter: ExporterFactory, kind: str) -> None:
    """1,000,000 rows generated on the server, exported to CSV by a child process: it
    succeeds, writes every row, and its peak resident memory stays under 300 MB."""
    bulk = {"source": "db", "query": BULK_QUERIES[kind], "variables": {"rows": {"type": "integer"}}}
    runner = exporter(kind, {"bulk": bulk})
    run = runner.run(spec("bulk", "bulk.csv", {"rows": MILLION}))
    assert run.returncode == ExitCode.OK, run.stderr
    assert (run.last["rowsRead"], run.last["rowsWritten"]) == (MILLION, MILLION)
    with runner.stored_file(run).open("rb") as handle:
        lines = sum(1 for _ in handle)
    assert lines >= MILLION + 1  # header + rows (+ metadata lines)
    assert run.max_rss_bytes < PEAK_RSS_LIMIT_BYTES, f"peak RSS {run.max_rss_bytes / 2**20:.0f} MiB"


LONG_TEXT_QUERIES = {
    "postgres": "SELECT g AS id, repeat('long ', 8000) AS body FROM generate_series(1, :rows) g",
    "mysql": "SELECT seq AS id, REPEAT('long ', 8000) AS body FROM seq_1_to_1000000"
    " WHERE seq <= :rows",
}


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_an_xlsx_of_long_texts_stays_under_300_mb(exporter: ExporterFactory, kind: str) -> None:
    """5,000 rows of 40,000-character texts (200 MB, each cut to Excel's cell limit): batches
    are sized by bytes, so the exporter process stays under the same 300 MB as a million
    short rows (in 10,000-row batches this export held all its texts at once)."""
    long_type = {
        "source": "db",
        "query": LONG_TEXT_QUERIES[kind],
        "variables": {"rows": {"type": "integer"}},
    }
    runner = exporter(kind, {"long": long_type})
    run = runner.run(spec("long", "long.xlsx", {"rows": 5_000}))
    assert run.returncode == ExitCode.OK, run.stderr
    assert (run.last["rowsRead"], run.last["rowsWritten"]) == (5_000, 5_000)
    assert run.max_rss_bytes < PEAK_RSS_LIMIT_BYTES, f"peak RSS {run.max_rss_bytes / 2**20:.0f} MiB"


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_sigterm_mid_export_cancels_the_query_on_the_server_and_exits_75(
    exporter: ExporterFactory, kind: str
) -> None:
    """SIGTERM after the first progress event: the exporter exits 75 with reason Cancelled,
    publishes no file, and the server stops running its query."""
    view = ServerQueries(kind, f"exportd_sigterm_{kind}_{os.getpid()}")
    slow = {"source": "db", "query": view.slow_stream_query()}
    runner = exporter(kind, {"slow": slow}, **view.source_overrides())
    runner.env["EXPORTD_BATCH_ROWS"] = "20"
    runner.env["EXPORTD_PROGRESS_INTERVAL_SECONDS"] = "0.1"
    child = runner.start(spec("slow", "slow.csv", {}))
    assert child.stdout is not None
    events = []
    for line in child.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress":
            break
    assert events[-1]["event"] == "progress", events
    assert view.busy(), "the query should be on the server"
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=60)
    events += [json.loads(line) for line in rest.splitlines()]
    assert child.returncode == ExitCode.TRANSIENT
    assert events[-1]["event"] == "error"
    assert events[-1]["reason"] == "Cancelled"
    assert runner.published_files() == []
    wait_until(lambda: not view.busy(), "the cancelled query is gone from the server")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_statement_timeout_exits_3_with_reason_and_leaves_no_query(
    exporter: ExporterFactory, kind: str
) -> None:
    """An export type with statementTimeoutSeconds 1 running a 30 s query: exit 3, reason
    StatementTimeout, no file, and nothing left running on the server."""
    view = ServerQueries(kind, f"exportd_timeout_{kind}_{os.getpid()}")
    sleepy = {"source": "db", "query": view.sleep_query(30), "statementTimeoutSeconds": 1}
    runner = exporter(kind, {"sleepy": sleepy}, **view.source_overrides())
    run = runner.run(spec("sleepy", "sleepy.xlsx", {}))
    assert run.returncode == ExitCode.PERMANENT, run.stderr
    assert run.last["reason"] == "StatementTimeout"
    assert "statement timeout of 1 s" in run.last["message"]
    assert runner.published_files() == []
    wait_until(lambda: not view.busy(), "the timed-out query is gone from the server")


@pytest.mark.parametrize(
    ("kind", "overrides", "code", "reason"),
    [
        ("postgres", {"dsn": "host=127.0.0.1 port={port} user=postgres dbname=test"},
         ExitCode.TRANSIENT, "SourceUnavailable"),
        ("mysql", {"dsn": "mysql://root@127.0.0.1:{port}/test"},
         ExitCode.TRANSIENT, "SourceUnavailable"),
        ("postgres", {"dsn": "host=127.0.0.1 user=exportd_no_such_role dbname=test"},
         ExitCode.PERMANENT, "SourceAuthenticationFailed"),
        ("mysql", {"password_file": "{wrong_password_file}"},
         ExitCode.PERMANENT, "SourceAuthenticationFailed"),
    ],
    ids=["postgres-refused", "mysql-refused", "postgres-unknown-role", "mysql-wrong-password"],
)  # fmt: skip
def test_connection_failures_exit_with_the_documented_code(
    exporter: ExporterFactory,
    typed_databases: TypedDatabases,
    tmp_path: Path,
    kind: str,
    overrides: dict[str, str],
    code: ExitCode,
    reason: str,
) -> None:
    """Unreachable port -> 75 (a retry may help); a rejected login (unknown role; MariaDB root
    given a wrong password through the ``_FILE`` secret) -> 3. No file is published."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("definitely-wrong\n", encoding="utf-8")
    values = {"port": str(closed_port()), "wrong_password_file": str(wrong)}
    resolved = {key: value.format(**values) for key, value in overrides.items()}
    runner = exporter(kind, {"typed": typed_type(typed_databases)}, **resolved)
    run = runner.run(spec("typed", "typed.csv", {"min_id": 0}))
    assert run.returncode == code, run.stderr
    assert run.last["event"] == "error"
    assert run.last["reason"] == reason
    assert "definitely-wrong" not in run.last["message"] + run.stderr
    assert runner.published_files() == []
