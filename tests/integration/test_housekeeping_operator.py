"""Kubernetes mode: the operator's housekeeping timer and its metrics, on the test cluster.

Finished ExportRequests the API created are deleted with their files past the record retention;
those applied from outside the API (GitOps) are never deleted by retention, only their file
expires (condition Expired); spec.ttlSecondsAfterFinished deletes any request; those past the
file retention lose only their file and link; fresh ones are left alone. A real export run through a
Job is counted once in ``exportd_exports_total`` from the figures on its status, and reconcile
rounds are counted and timed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from exportd.contract import exportrequest as er
from exportd.contract.spec import utc_now
from exportd.ops import metrics
from tests.k8s.cluster import REQUESTS_URL, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401

pytestmark = pytest.mark.anyio
RECORD_DAYS, FILE_DAYS = 30, 7
SPEC = {"type": "userExport", "fileName": "u.csv", "variables": {"x": 1, "y": 1}}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def finished_request(
    cluster: LocalCluster,
    name: str,
    days_ago: float,
    *,
    with_file: bool,
    by_api: bool = False,
    spec: dict[str, Any] = SPEC,
) -> Path:
    """A request that finished ``days_ago`` (status written as the operator would have),
    labelled as the API labels what it creates when ``by_api``."""
    labels = {er.LABEL_MANAGED_BY: er.API_MANAGER} if by_api else None
    await cluster.create_request(name, spec, labels)
    key = f"exports/{name}/u.csv"
    path = cluster.data_dir / "files" / key
    status: dict[str, Any] = {
        "phase": "Succeeded",
        "rows": 1,
        "completedAt": er.rfc3339(utc_now() - timedelta(days=days_ago)),
    }
    if with_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("id\n1\n")
        status |= {"objectKey": key, "url": f"http://testserver/files/{key}", "expiresAt": "x"}
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.session.patch(
        f"{REQUESTS_URL}/{name}/status", json={"status": status}, headers=headers
    ) as response:
        assert response.status == 200, await response.text()
    return path


def conditions_of(cluster: LocalCluster, name: str) -> dict[str, str]:
    status = (cluster.request(name) or {}).get("status") or {}
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


async def test_the_timer_deletes_expired_requests_and_files_and_keeps_the_rest(
    cluster: LocalCluster,
) -> None:
    old = await finished_request(cluster, "exp-old", RECORD_DAYS + 1, with_file=True, by_api=True)
    applied = await finished_request(cluster, "exp-applied", RECORD_DAYS + 1, with_file=True)
    ttl_spec = {**SPEC, "ttlSecondsAfterFinished": 60}
    ttl = await finished_request(cluster, "exp-ttl", 1, with_file=True, spec=ttl_spec)
    expiring = await finished_request(cluster, "exp-expiring", FILE_DAYS + 1, with_file=True)
    fresh = await finished_request(cluster, "exp-fresh", 1, with_file=True)
    deleted_before = sample("exportd_housekeeping_items_total", action="request_deleted")
    files_before = sample("exportd_housekeeping_items_total", action="file_deleted")
    rounds_before = sample("exportd_operator_reconciles_total")
    finished_before = sample(
        "exportd_exports_total", type="userExport", format="csv", outcome="succeeded"
    )

    operator = await cluster.start_operator(housekeeping_interval_seconds=3600)
    try:
        await cluster.until(lambda: cluster.request("exp-old") is None)
        await cluster.until(lambda: cluster.request("exp-ttl") is None)
        await cluster.until(lambda: "Expired" in conditions_of(cluster, "exp-applied"))
        await cluster.until(
            lambda: "objectKey" not in ((cluster.request("exp-expiring") or {}).get("status") or {})
        )
        # A real export through a Job, counted once from its status.
        await cluster.create_request("exp-live", SPEC)
        done = await cluster.until_phase("exp-live", "Succeeded", "Failed")
        assert done["status"]["phase"] == "Succeeded", done["status"]
        await cluster.until(
            lambda: (
                sample(
                    "exportd_exports_total", type="userExport", format="csv", outcome="succeeded"
                )
                == finished_before + 1
            )
        )
    finally:
        await operator.stop()

    assert not old.exists() and not expiring.exists() and fresh.exists()
    assert not applied.exists() and not ttl.exists()
    # Applied from Git: still there (a GitOps tool would re-create it and run it again), its
    # file expired and said so, and the reconcile rounds since kept that condition.
    kept_applied = cluster.request("exp-applied") or {}
    assert kept_applied["status"]["phase"] == "Succeeded"
    assert "objectKey" not in kept_applied["status"] and "url" not in kept_applied["status"]
    assert conditions_of(cluster, "exp-applied")["Expired"] == "True"
    kept = cluster.request("exp-expiring")
    assert kept is not None
    assert kept["status"]["phase"] == "Succeeded" and kept["status"]["rows"] == 1
    assert "url" not in kept["status"] and "expiresAt" not in kept["status"]
    fresh_status = (cluster.request("exp-fresh") or {}).get("status") or {}
    assert fresh_status["objectKey"] == "exports/exp-fresh/u.csv"
    assert sample("exportd_housekeeping_items_total", action="request_deleted") == (
        deleted_before + 2
    )
    assert sample("exportd_housekeeping_items_total", action="file_deleted") == files_before + 2
    assert sample("exportd_operator_reconciles_total") > rounds_before
    assert sample("exportd_operator_reconcile_duration_seconds_count") > 0
    rows = sample("exportd_export_rows_sum", type="userExport", format="csv")
    assert rows >= done["status"]["rows"] > 0
