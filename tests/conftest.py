"""Fixtures shared by the whole suite: the sample database, isolated exporter settings, and a
way to run ``python -m exportd.exporter`` as a real child process.

Everything a test writes lives under its ``tmp_path``; the sample DuckDB file is built once per
session (read-only afterwards, so tests can share it).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from exportd.contract.spec import ExportSpec
from exportd.sample.sampledb import ensure_sample_db
from exportd.settings import ExporterSettings, SourceConfig
from tests.specs import seed_spec


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded sample database (users 100,000 rows, menus data set), built once."""
    return ensure_sample_db(tmp_path_factory.mktemp("sampledb") / "sample.duckdb")


@pytest.fixture
def exporter_settings(tmp_path: Path, sample_db: Path) -> ExporterSettings:
    """Exporter settings isolated under ``tmp_path/data`` that read the shared sample db."""
    return ExporterSettings(
        data_dir=tmp_path / "data",
        sources={"sample": SourceConfig(kind="duckdb", path=sample_db)},
        batch_rows=5_000,
    )


SpecFactory = Callable[..., ExportSpec]


@pytest.fixture
def make_export_spec() -> SpecFactory:
    """``make_export_spec(file_name="x.csv", variables={...}, id=...)``: a valid ExportSpec
    of the seed request (userExport, tiers 1-2) with any field overridden."""
    counter = iter(range(1, 1_000_000))

    def make(**overrides: Any) -> ExportSpec:
        defaults = {"id": f"exp-test-{next(counter)}", "requested_at": datetime.now(UTC)}
        return seed_spec(**(defaults | overrides))

    return make


@dataclass
class ExporterRun:
    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


def parse_events(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object (the protocol); fails loudly otherwise."""
    return [json.loads(line) for line in stdout.splitlines()]


@dataclass
class ExporterProcess:
    """Runs the exporter module as a child process with settings passed through its env."""

    data_dir: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "exportd.exporter", *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> ExporterRun:
        done = subprocess.run(
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        return ExporterRun(done.returncode, done.stdout, done.stderr, parse_events(done.stdout))

    def run_spec(self, spec: ExportSpec, timeout: float = 120) -> ExporterRun:
        return self.run("--spec-json", json.dumps(spec.to_json_dict()), timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def files_under(self, relative: str = "") -> list[Path]:
        root = self.data_dir / relative
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def loaded_by_import(modules: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has loaded after ``import {modules}``."""
    code = f"import sys, {modules}; print(' '.join(m for m in {watched!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def exporter_env(data_dir: Path, sample_db: Path, **extra: str) -> dict[str, str]:
    """The child's environment: no inherited ``EXPORTD_*`` setting, data under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    env["EXPORTD_DATA_DIR"] = str(data_dir)
    env["EXPORTD_SOURCES"] = json.dumps({"sample": {"kind": "duckdb", "path": str(sample_db)}})
    env.update(extra)
    return env


@pytest.fixture
def run_exporter_subprocess(tmp_path: Path, sample_db: Path) -> ExporterProcess:
    """A child-process runner of ``python -m exportd.exporter`` isolated under tmp_path.

    Add settings by changing ``.env`` (e.g. ``EXPORTD_CATALOG_PATH``) before running."""
    data_dir = tmp_path / "exporter-data"
    return ExporterProcess(data_dir=data_dir, env=exporter_env(data_dir, sample_db))


LONG_TEXT = "x" * 40_000
HOSTILE_FORMULA = '=HYPERLINK("http://x","y")'


@pytest.fixture
def edge_case_batch() -> pa.RecordBatch:
    """Five rows covering every Arrow type a source produces and the awkward values; the
    last row is NULL in every column. Writers' tests check each cell of it."""
    plus_two = timezone(timedelta(hours=2))
    columns: dict[str, pa.Array] = {
        "id": pa.array([1, 2, 3, 4, None], pa.int64()),
        "big_id": pa.array(
            [1234567890123456789, 999_999_999_999_999, -1_000_000_000_000_000, 0, None],
            pa.int64(),
        ),
        "amount": pa.array(
            [Decimal("1234.50"), Decimal("-0.01"), Decimal("123456789012345.67"), None, None],
            pa.decimal128(20, 2),
        ),
        "ratio": pa.array([1.5, math.nan, math.inf, -math.inf, None], pa.float64()),
        "flag": pa.array([True, False, True, False, None], pa.bool_()),
        "day": pa.array(
            [date(2024, 2, 29), date(1900, 3, 1), date(9999, 12, 31), date(1899, 12, 31), None],
            pa.date32(),
        ),
        "moment": pa.array(
            [
                datetime(2024, 1, 2, 3, 4, 5),
                datetime(1900, 3, 1),
                datetime(9999, 12, 31, 23, 59, 59),
                datetime(1900, 1, 1, 12, 0),
                None,
            ],
            pa.timestamp("us"),
        ),
        "moment_tz": pa.array(
            [datetime(2024, 6, 1, 12, 0, tzinfo=plus_two), None, None, None, None],
            pa.timestamp("us", tz="+02:00"),
        ),
        "text": pa.array(
            [HOSTILE_FORMULA, "a\x00b\x07c\x1fd\te", LONG_TEXT, "", None], pa.string()
        ),
        "more_text": pa.array(
            ["Grüße 😀", "  leading spaces", "http://example.com", "-1+2", None], pa.string()
        ),
        "blob": pa.array([b"\x00\xff", b"", b"AB", b"\x10", None], pa.binary()),
        "clock": pa.array([time(13, 45, 1), None, None, None, None], pa.time64("us")),
        "tier": pa.array(["gold", "free", "gold", "free", None]).dictionary_encode(),
        "nothing": pa.nulls(5),
    }
    return pa.RecordBatch.from_pydict(columns)


# ---- flakes stay visible ----------------------------------------------------------------------
# `make test` reruns a failing test (pytest-rerunfailures) so one infrastructure hiccup on this
# shared machine does not fail the suite; what failed the first time is still shown at the end
# of the run, and kept whole in test-artifacts/reruns.log, so a flake can be traced and fixed.

RERUN_LOG = Path(__file__).resolve().parents[1] / "test-artifacts" / "reruns.log"
RERUN_SUMMARY_LINES = 25
_reruns: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome != "rerun":
        return
    text = report.longreprtext
    _reruns.append((report.nodeid, text))
    RERUN_LOG.parent.mkdir(exist_ok=True)
    with RERUN_LOG.open("a", encoding="utf-8") as log:
        log.write(f"==== {datetime.now(UTC).isoformat()} {report.nodeid} ({report.when})\n")
        log.write(text + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _reruns:
        return
    terminalreporter.section("why tests were rerun")
    for nodeid, text in _reruns:
        terminalreporter.write_line(f"{nodeid}:")
        for line in text.splitlines()[-RERUN_SUMMARY_LINES:]:
            terminalreporter.write_line(f"    {line}")
    terminalreporter.write_line(f"(whole tracebacks: {RERUN_LOG})")
