"""The operator on a test cluster, no API involved: an ExportRequest applied as GitOps would.

A real kopf operator, the apiserver emulator, a kubelet running each Job's command as a local
process: the real exporter against the sample DuckDB database. Each test waits on the
emulator's change notifications for the request to reach a phase, then checks every effect.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import duckdb
import openpyxl
import pytest

from exportd.contract import exportrequest as er
from exportd.operator.jobs import JobTemplate, RequestRef, plan_job
from tests.k8s.cluster import NAMESPACE, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture, download, operator_fixture  # noqa: F401
from tests.k8s.operator import OperatorThread

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# The seed request's shape, on one tier (20,000 rows) to keep the test short.
SEED_SPEC = {
    "type": "userExport",
    "format": "xlsx",
    "fileName": "myexport.xlsx",
    "variables": {"x": 2, "y": 2},
}
ENDLESS_SPEC = {"type": "endlessRows", "fileName": "endless.csv", "variables": {"n": 10**12}}
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def users_between(sample_db: Path, low: int, high: int) -> int:
    with duckdb.connect(str(sample_db), read_only=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM users WHERE tier BETWEEN ? AND ?", [low, high]
        ).fetchone()
    assert row is not None
    return int(row[0])


def files_of(cluster: LocalCluster, name: str) -> list[Path]:
    return [path for path in cluster.files() if f"/exports/{name}/" in path.as_posix()]


async def test_a_request_applied_without_the_api_runs_its_planned_job_and_links_the_file(
    cluster: LocalCluster, operator: OperatorThread, sample_db: Path
) -> None:
    """CR created by hand -> exactly the planned Job -> exporter runs -> Succeeded with rows,
    bytes and a URL that downloads the very file (same bytes, all rows in the sheet)."""
    created = await cluster.create_request("exp-seed", SEED_SPEC)
    body = await cluster.until_phase("exp-seed", *TERMINAL)
    status = body["status"]
    assert status["phase"] == "Succeeded", status

    [job] = cluster.jobs()
    planned = plan_job(
        er.export_spec_from_body(created),
        RequestRef(NAMESPACE, "exp-seed", created["metadata"]["uid"]),
        JobTemplate.from_settings(cluster.operator_settings()),
        deadline_seconds=600,
    )
    assert job["spec"] == planned["spec"]
    assert job["metadata"]["name"] == planned["metadata"]["name"] == status["jobName"]
    assert job["metadata"]["ownerReferences"] == planned["metadata"]["ownerReferences"]
    assert [a.exit_code for a in cluster.kubelet.attempts_of(job["metadata"]["name"])] == [0]

    expected_rows = users_between(sample_db, 2, 2)
    [stored] = files_of(cluster, "exp-seed")
    content = stored.read_bytes()
    assert status["rows"] == expected_rows
    assert status["bytes"] == len(content)
    assert status["sha256"] == hashlib.sha256(content).hexdigest()
    assert status["attempts"] == 1
    assert status["expiresAt"] > status["completedAt"]

    response = await download(cluster, status["url"])
    assert response.status_code == 200
    assert response.content == content
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    data = workbook.worksheets[0]
    assert sum(1 for _ in data.iter_rows(min_row=2)) == expected_rows


async def test_progress_shows_while_running_and_cancel_stops_the_job_without_a_file(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    """spec.cancel on a running export: rows so far visible before; after, the Job is deleted,
    the exporter stopped, no file published, phase Cancelled."""
    await cluster.create_request("exp-cancel", ENDLESS_SPEC)

    def rows_so_far() -> int:
        body = cluster.request("exp-cancel") or {}
        status: dict[str, Any] = body.get("status") or {}
        return int(status.get("rows") or 0) if status.get("phase") == "Running" else 0

    assert await cluster.until(rows_so_far) > 0
    [job] = cluster.jobs()
    await cluster.patch_request("exp-cancel", {"spec": {"cancel": True}})
    body = await cluster.until_phase("exp-cancel", *TERMINAL)

    assert body["status"]["phase"] == "Cancelled"
    assert body["status"]["reason"] == "Cancelled"
    assert cluster.jobs() == []
    assert files_of(cluster, "exp-cancel") == []
    [attempt] = cluster.kubelet.attempts_of(job["metadata"]["name"])
    await cluster.until(lambda: attempt.exit_code is not None)
    assert attempt.exit_code == 75  # the exporter's answer to SIGTERM
    assert files_of(cluster, "exp-cancel") == []


async def test_deleting_a_running_request_deletes_its_job_and_publishes_nothing(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    await cluster.create_request("exp-delete", ENDLESS_SPEC)
    await cluster.until(lambda: cluster.phase("exp-delete") == "Running" and cluster.jobs())
    [job] = cluster.jobs()
    await cluster.until(lambda: cluster.kubelet.attempts_of(job["metadata"]["name"]))

    await cluster.delete_request("exp-delete")
    await cluster.until(lambda: cluster.request("exp-delete") is None and not cluster.jobs())

    [attempt] = cluster.kubelet.attempts_of(job["metadata"]["name"])
    await cluster.until(lambda: attempt.exit_code is not None)
    assert files_of(cluster, "exp-delete") == []


async def test_a_job_past_its_deadline_fails_the_request_as_deadline_exceeded(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    """The export type's timeoutSeconds (2) becomes the Job's activeDeadlineSeconds."""
    spec = {"type": "endlessRowsShortDeadline", "fileName": "late.csv", "variables": {"n": 10**12}}
    await cluster.create_request("exp-late", spec)
    body = await cluster.until_phase("exp-late", *TERMINAL)

    assert body["status"]["phase"] == "Failed"
    assert body["status"]["reason"] == "DeadlineExceeded"
    [job] = cluster.jobs()
    assert job["spec"]["activeDeadlineSeconds"] == 2
    assert files_of(cluster, "exp-late") == []


async def test_an_invalid_order_fails_at_once_without_a_job(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    """Variables are checked against the catalog before any Job: a CR applied by hand gets
    the same validation as the API's body."""
    spec = {"type": "userExport", "fileName": "x.csv", "variables": {"x": 9, "y": 2}}
    await cluster.create_request("exp-invalid", spec)
    body = await cluster.until_phase("exp-invalid", *TERMINAL)

    assert body["status"]["phase"] == "Failed"
    assert body["status"]["reason"] == "InvalidVariables"
    assert cluster.jobs() == []


async def test_an_export_from_the_real_postgresql_runs_as_a_job(
    cluster: LocalCluster, operator: OperatorThread
) -> None:
    """The exporter in the Job reads PostgreSQL on 127.0.0.1:5432; the file holds every row."""
    spec = {"type": "pgSeries", "fileName": "series.csv", "variables": {"n": 1000}}
    await cluster.create_request("exp-pg", spec)
    body = await cluster.until_phase("exp-pg", *TERMINAL)

    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert body["status"]["rows"] == 1000
    [stored] = files_of(cluster, "exp-pg")
    with stored.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["n", "label"] and rows[1] == ["1", "row 1"]
    assert rows[-1] == ["1000", "row 1000"] and len(rows) == 1001
