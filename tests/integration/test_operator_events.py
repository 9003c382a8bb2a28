"""Kubernetes Events and conditions on ExportRequests, as kubectl and GitOps tools read them.

The real operator and exporter against the test apiserver: every transition posts its Event
(Normal Queued, JobCreated, Running, Succeeded, Delivered; Warning Retrying, Failed, JobRejected)
once; the conditions follow the Job API (``Complete``, ``Failed``: ``kubectl wait`` works) and
kstatus (``Ready``, ``Stalled``, ``status.observedGeneration``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.argocd import argocd_health
from tests.integration.server_fixtures import pki_fixture, smtp_fixture  # noqa: F401
from tests.integration.storage_servers import Pki, SmtpServer
from tests.integration.test_operator_email import EMAIL_SPEC, cluster_mailing_to
from tests.k8s.cluster import LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401
from tests.k8s.kubectl import Kubectl, kube_tools_dir

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
TERMINAL = ("Succeeded", "Failed", "Cancelled")
SEED = {"type": "userExport", "fileName": "seed.xlsx", "variables": {"x": 1, "y": 2}}
QUOTA_MESSAGE = (
    'jobs.batch "x" is forbidden: exceeded quota: exports, requested: count/jobs.batch=1, '
    "used: count/jobs.batch=10, limited: count/jobs.batch=10"
)


def events_of(cluster: LocalCluster, name: str) -> list[tuple[str, str]]:
    return [
        (event.get("type"), event.get("reason"))
        for event in cluster.api.all_of("v1/events")
        if (event.get("involvedObject") or {}).get("name") == name
    ]


def settled(cluster: LocalCluster, name: str) -> bool:
    """Ended, and the event of its end posted (events follow the status patch)."""
    phase = cluster.phase(name)
    return phase in TERMINAL and any(r == phase for _, r in events_of(cluster, name))


def conditions(body: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in body["status"]["conditions"]}


async def test_transitions_post_events_and_set_job_and_kstatus_conditions(
    smtp: SmtpServer, pki: Pki, tmp_path: Path, sample_db: Path
) -> None:
    """One slot, four requests: an e-mailed one (runs first), a seed one (queued behind it),
    a broken query (fails at once) and a missing database (retried once, then fails).
    ``kubectl wait --for=condition=Complete`` started while the seed request waits returns once
    it succeeded; ``--for=condition=Failed`` returns for the broken one. Each request carries
    exactly the events of its transitions, and Ready/Complete/Failed/Stalled as its outcome."""
    async with cluster_mailing_to(smtp, pki, tmp_path, sample_db) as cluster:
        kubectl = Kubectl(kube_tools_dir() / "kubectl", tmp_path / "home", cluster.url)
        operator = await cluster.start_operator(max_running_jobs=1, job_backoff_limit=1)
        try:
            await cluster.create_request("mail", EMAIL_SPEC)
            await cluster.until(lambda: cluster.phase("mail") == "Running")
            await cluster.create_request("seed", SEED)
            await cluster.until(lambda: cluster.phase("seed") == "Queued")
            complete = asyncio.create_task(
                kubectl.run("wait", "--for=condition=Complete", "exr/seed", "--timeout=120s")
            )
            broken = {"type": "brokenQuery", "fileName": "b.csv", "variables": {"one": 1}}
            await cluster.create_request("broken", broken)
            missing = {"type": "missingDatabase", "fileName": "m.csv", "variables": {"one": 1}}
            await cluster.create_request("missing", missing)
            waited = await complete
            failed = await kubectl.run(
                "wait", "--for=condition=Failed", "exr/broken", "--timeout=120s"
            )
            names = ("mail", "seed", "broken", "missing")
            await cluster.until(lambda: all(settled(cluster, n) for n in names))
            await cluster.until(lambda: ("Normal", "Delivered") in events_of(cluster, "mail"))
            bodies = {name: cluster.request(name) or {} for name in names}
            events = {name: events_of(cluster, name) for name in names}
        finally:
            await operator.stop()

    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout
    assert failed.returncode == 0, failed.stderr
    normal_run = [("Normal", "JobCreated"), ("Normal", "Running")]
    assert events["mail"] == [*normal_run, ("Normal", "Succeeded"), ("Normal", "Delivered")]
    assert events["seed"] == [("Normal", "Queued"), *normal_run, ("Normal", "Succeeded")]
    assert events["broken"][-1] == ("Warning", "Failed"), events
    assert ("Warning", "Retrying") in events["missing"]
    assert events["missing"][-1] == ("Warning", "Failed")
    assert conditions(bodies["seed"]) | {"Admitted": "", "Finished": ""} == {
        "Ready": "True",
        "Complete": "True",
        "Admitted": "",
        "Finished": "",
    }
    assert {"Ready": "False", "Failed": "True", "Stalled": "True"}.items() <= conditions(
        bodies["broken"]
    ).items()
    for body in bodies.values():
        assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
        assert body["status"]["completedAt"]
    health = {name: argocd_health(body)["status"] for name, body in bodies.items()}
    assert health == {
        "mail": "Healthy",
        "seed": "Healthy",
        "broken": "Degraded",
        "missing": "Degraded",
    }
