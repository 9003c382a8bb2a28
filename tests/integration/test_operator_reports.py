"""Least privilege for export pods: a pod can report a result only for its own ExportRequest.

All export pods share a service account that may patch every request's status. The operator
trusts a result only when it is signed with the request's own report key (given to that
request's Job alone) and names a file under ``exports/<request>/``. Here a pod of one request
forges results on another, with its own key, and with the right key but another request's
file: both are refused, logged and posted as a Warning event, and the victim's real export
then succeeds with the report its own Job signed.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exportd.security.reports import report_key, sign_result
from tests.k8s.cluster import REQUESTS_URL, SIGNING_KEY, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
ENDLESS = {"type": "endlessRows", "fileName": "e.csv", "variables": {"n": 10**12}}
SEED = {"type": "userExport", "fileName": "victim.csv", "variables": {"x": 1, "y": 1}}


def forged_result(object_key: str) -> dict[str, Any]:
    return {
        "rowsRead": 1,
        "rowsWritten": 1,
        "bytes": 10,
        "sha256": "0" * 64,
        "objectKey": object_key,
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:00:01Z",
        "created": True,
    }


async def forge(cluster: LocalCluster, name: str, result: dict[str, Any], key: str) -> None:
    """Patch ``name``'s status as a pod holding report key ``key`` could."""
    status = {"result": result, "resultSignature": sign_result(key, name, result)}
    headers = {"Content-Type": "application/merge-patch+json"}
    url = f"{REQUESTS_URL}/{name}/status"
    async with cluster.session.patch(url, json={"status": status}, headers=headers) as response:
        assert response.status == 200, await response.text()


def refusals(cluster: LocalCluster, name: str) -> list[str]:
    return [
        event["message"]
        for event in cluster.api.all_of("v1/events")
        if event.get("reason") == "ReportRefused"
        and (event.get("involvedObject") or {}).get("name") == name
    ]


async def test_a_forged_report_for_another_request_is_refused_and_logged(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """One slot: ``holder`` runs endlessly, ``victim`` waits. A result on ``victim`` signed
    with the holder's key, then one signed with the victim's key but naming the holder's file:
    each is refused (victim stays Queued), logged once and posted as a Warning event. Cancelling
    the holder lets the victim run: its own Job's signed report makes it Succeeded."""
    caplog.set_level(logging.ERROR, logger="exportd.operator.controller")
    operator = await cluster.start_operator(max_running_jobs=1)
    try:
        holder = await cluster.create_request("holder", ENDLESS)
        await cluster.until(lambda: cluster.phase("holder") == "Running")
        victim = await cluster.create_request("victim", SEED)
        await cluster.until(lambda: cluster.phase("victim") == "Queued")
        holder_key = report_key(SIGNING_KEY, holder["metadata"]["uid"])
        victim_key = report_key(SIGNING_KEY, victim["metadata"]["uid"])

        await forge(cluster, "victim", forged_result("exports/victim/victim.csv"), holder_key)
        await cluster.until(lambda: len(refusals(cluster, "victim")) == 1)
        await forge(cluster, "victim", forged_result("exports/holder/e.csv"), victim_key)
        await cluster.until(lambda: len(refusals(cluster, "victim")) == 2)
        assert cluster.phase("victim") == "Queued"

        await cluster.patch_request("holder", {"spec": {"cancel": True}})
        body = await cluster.until_phase("victim", "Succeeded", "Failed")
    finally:
        await operator.stop()

    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert body["status"]["objectKey"] == "exports/victim/victim.csv"
    assert body["status"]["sha256"] != "0" * 64  # the real file's, not the forged one
    first, second = refusals(cluster, "victim")
    assert "not signed with this request's report key" in first
    assert "'exports/holder/e.csv' is not under exports/victim/" in second
    logged = [r.getMessage() for r in caplog.records]
    assert len([m for m in logged if "default/victim: a result report was refused" in m]) == 2
