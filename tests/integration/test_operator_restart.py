"""Restart safety: the operator may stop at any point and start again on the same cluster.

Its Job names are derived from the request, creating one twice answers 409 (taken as "already
there"), and every round looks at the whole cluster: so a restart makes no second Job, and a
Job that finished while the operator was down is picked up.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.aio.client import ApiClient, Configuration

from exportd.contract import exportrequest as er
from exportd.operator.connection import Cluster
from exportd.operator.controller import Controller
from exportd.operator.handlers import Runtime
from exportd.operator.jobs import JobTemplate, RequestRef, plan_job
from exportd.operator.kube import KubeApi
from exportd.operator.reconcile import JobCreation, StatusPatch
from tests.k8s.cluster import NAMESPACE, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TERMINAL = ("Succeeded", "Failed", "Cancelled")
SPEC: dict[str, Any] = {"type": "menuCategoriesByMuscle", "fileName": "menus.csv"}
SPEC["variables"] = {"a": "muscle1", "b": "muscle2"}


def jobs_ever(cluster: LocalCluster) -> list[list[Any]]:
    """Every Job the apiserver ever stored, each as its history (None marks a deletion)."""
    return [
        list(obj.history)
        for (resource, _, _), obj in cluster.api.objects.items()
        if resource.plural == "jobs"
    ]


def job_finished(cluster: LocalCluster) -> bool:
    return any(
        condition["type"] == "Complete"
        for job in cluster.jobs()
        for condition in (job.get("status") or {}).get("conditions", [])
    )


async def test_restart_after_the_job_was_created_makes_no_second_job_and_ends_succeeded(
    cluster: LocalCluster,
) -> None:
    """Operator stopped right after creating the Job; the Job completes while it is down;
    the restarted operator finds it, writes Succeeded, and no other Job was ever created."""
    cluster.kubelet.pause()
    first = await cluster.start_operator()
    await cluster.create_request("exp-restart", SPEC)
    await cluster.until(lambda: cluster.jobs() and cluster.kubelet.pending == 1)
    await first.stop()

    cluster.kubelet.resume()
    await cluster.until(lambda: job_finished(cluster))
    assert cluster.phase("exp-restart") == "Running"  # nobody has looked yet

    second = await cluster.start_operator()
    body = await cluster.until_phase("exp-restart", *TERMINAL)
    await second.stop()

    assert body["status"]["phase"] == "Succeeded"
    assert body["status"]["url"]
    [history] = jobs_ever(cluster)
    assert None not in history  # never deleted and created again
    assert len(cluster.kubelet.attempts) == 1


async def test_restart_while_the_exporter_runs_keeps_its_one_job(cluster: LocalCluster) -> None:
    cluster.kubelet.pause()
    first = await cluster.start_operator()
    await cluster.create_request("exp-running", SPEC)
    await cluster.until(lambda: cluster.kubelet.pending == 1)
    await first.stop()

    second = await cluster.start_operator()
    cluster.kubelet.resume()
    body = await cluster.until_phase("exp-running", *TERMINAL)
    await second.stop()

    assert body["status"]["phase"] == "Succeeded"
    assert len(jobs_ever(cluster)) == 1
    assert len(cluster.kubelet.attempts) == 1


async def test_creating_an_existing_job_again_counts_as_created(cluster: LocalCluster) -> None:
    """The 409 path itself: the second create of a planned Job (as after a restart between
    the create and the status write) leaves one Job and is reported as success."""
    created = await cluster.create_request("exp-twice", SPEC)
    ref = RequestRef(NAMESPACE, "exp-twice", created["metadata"]["uid"])
    template = JobTemplate.from_settings(cluster.operator_settings())
    manifest = plan_job(er.export_spec_from_body(created), ref, template, deadline_seconds=60)
    creation = JobCreation(ref, manifest, StatusPatch(NAMESPACE, "exp-twice", {"jobName": "x"}))
    cluster.kubelet.pause()
    settings = cluster.operator_settings()
    context = Runtime(settings, Cluster(server=cluster.url)).context_factory()
    async with ApiClient(Configuration(host=cluster.url)) as client:
        controller = Controller(KubeApi(client, NAMESPACE), context)
        await controller._create_job(creation)
        await controller._create_job(creation)

    assert len(cluster.jobs()) == 1
    body = cluster.request("exp-twice")
    assert body is not None and body["status"]["jobName"] == "x"
