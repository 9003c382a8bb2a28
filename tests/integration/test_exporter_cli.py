"""``python -m exportd.exporter`` as a real child process: the stdout protocol (JSON lines,
started first, result or error last), exit codes 0/2/3/75, and SIGTERM cancelling an export
with nothing published."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from exportd.contract.errors import ExitCode
from exportd.contract.spec import ExportResult
from tests.conftest import ExporterProcess, SpecFactory, parse_events

pytestmark = pytest.mark.integration

SHIPPED_CATALOG = Path(__file__).resolve().parents[2] / "src/exportd/data/catalog.yaml"


@pytest.fixture
def exporter(run_exporter_subprocess: ExporterProcess, tmp_path: Path) -> ExporterProcess:
    """The child runner with a catalog that adds a long-running and a never-ending type."""
    catalog = yaml.safe_load(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    catalog["types"]["slowUsers"] = {
        "query": "SELECT u.id, u.name, r.range AS copy FROM users u, range(100) r"
    }
    catalog["types"]["endless"] = {"query": "SELECT count(*) AS n FROM range(1000000000000)"}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    run_exporter_subprocess.env["EXPORTD_CATALOG_PATH"] = str(path)
    return run_exporter_subprocess


def _assert_protocol_shape(events: list[dict[str, object]], export_id: str) -> None:
    assert events[0] == {"event": "started", "exportId": export_id}
    for event in events[1:-1]:
        assert set(event) == {"event", "exportId", "rows"}
        assert event["event"] == "progress"
        assert event["exportId"] == export_id


def test_success_prints_started_progress_and_a_result_line_exit_0(
    exporter: ExporterProcess, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(file_name="x.csv")
    run = exporter.run_spec(spec)
    assert run.returncode == ExitCode.OK, run.stderr
    _assert_protocol_shape(run.events, spec.id)
    last = dict(run.last)
    assert last.pop("event") == "result"
    result = ExportResult.model_validate(last)
    assert (result.rows_read, result.rows_written) == (40_000, 40_000)
    assert result.object_key == spec.object_key
    stored = exporter.data_dir / "files" / spec.object_key
    assert stored.stat().st_size == result.bytes
    assert exporter.files_under("tmp") == []


def test_spec_can_come_from_stdin_or_a_file(
    exporter: ExporterProcess, make_export_spec: SpecFactory, tmp_path: Path
) -> None:
    from_stdin = make_export_spec(type="menuCategoriesByMuscle", file_name="m.csv")
    from_stdin = from_stdin.model_copy(update={"variables": {"a": "muscle1", "b": "muscle2"}})
    run = exporter.run(stdin=json.dumps(from_stdin.to_json_dict()))
    assert run.returncode == ExitCode.OK, run.stderr
    assert run.last["rowsWritten"] == 3
    spec_file = tmp_path / "spec.json"
    from_file = from_stdin.model_copy(update={"id": "exp-from-file"})
    spec_file.write_text(json.dumps(from_file.to_json_dict()), encoding="utf-8")
    run = exporter.run("--spec-file", str(spec_file))
    assert run.returncode == ExitCode.OK, run.stderr
    assert run.last["objectKey"] == "exports/exp-from-file/m.csv"


def test_invalid_variable_is_permanent_exit_3(
    exporter: ExporterProcess, make_export_spec: SpecFactory
) -> None:
    spec = make_export_spec(variables={"x": "1; DROP TABLE users", "y": 2})
    run = exporter.run_spec(spec)
    assert run.returncode == ExitCode.PERMANENT
    assert run.events[0]["event"] == "started"
    assert run.last["event"] == "error"
    assert run.last["reason"] == "InvalidVariables"
    assert run.last["retriable"] is False
    assert exporter.files_under("files") == []


def test_malformed_spec_is_permanent_and_usage_errors_exit_2(exporter: ExporterProcess) -> None:
    run = exporter.run("--spec-json", '{"id": "exp-1", "type": "userExport"}')
    assert run.returncode == ExitCode.PERMANENT
    assert [e["event"] for e in run.events] == ["error"]
    assert run.last["reason"] == "InvalidSpec"
    run = exporter.run("--no-such-option")
    assert run.returncode == ExitCode.USAGE
    assert run.last["event"] == "error"
    assert run.last["reason"] == "UsageError"


def test_unavailable_source_is_transient_exit_75(
    exporter: ExporterProcess, make_export_spec: SpecFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.duckdb"
    exporter.env["EXPORTD_SOURCES"] = json.dumps({"sample": {"path": str(missing)}})
    run = exporter.run_spec(make_export_spec(file_name="x.csv"))
    assert run.returncode == ExitCode.TRANSIENT
    assert run.last["event"] == "error"
    assert run.last["reason"] == "SourceUnavailable"
    assert run.last["retriable"] is True
    assert exporter.files_under("files") == []


@pytest.mark.parametrize(
    ("export_type", "wait_for"), [("slowUsers", "progress"), ("endless", "started")]
)
def test_sigterm_cancels_the_export_exit_75_and_nothing_is_stored(
    exporter: ExporterProcess, make_export_spec: SpecFactory, export_type: str, wait_for: str
) -> None:
    """slowUsers: rows are streaming when the signal comes; endless: the query is running and
    has produced no row yet, so only an interrupt of the query can end it."""
    spec = make_export_spec(type=export_type, variables={}, file_name="big.xlsx")
    child = exporter.start("--spec-json", json.dumps(spec.to_json_dict()))
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line)
        if json.loads(line)["event"] == wait_for:
            break
    child.send_signal(signal.SIGTERM)
    rest, stderr = child.communicate(timeout=120)
    events = parse_events("".join(lines) + rest)
    assert child.returncode == ExitCode.TRANSIENT, stderr
    assert events[0] == {"event": "started", "exportId": spec.id}
    assert events[-1] == {
        "event": "error",
        "reason": "Cancelled",
        "message": "the export was cancelled",
        "retriable": True,
    }
    assert exporter.files_under("files") == []
    assert exporter.files_under("tmp") == []
