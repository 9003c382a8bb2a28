"""Admission: at most N Jobs cluster-wide and M per requester; the rest wait in phase Queued
with their queuePosition, and start first in, first out."""

from __future__ import annotations

from typing import Any

import pytest

from exportd.contract import exportrequest as er
from tests.k8s.cluster import NAMESPACE, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REQUESTS = f"{er.GROUP}/{er.VERSION}/{er.PLURAL}"
SPEC: dict[str, Any] = {"type": "menuCategoriesByMuscle", "fileName": "menus.csv"}
SPEC["variables"] = {"a": "muscle1", "b": "muscle2"}


def queue_positions(cluster: LocalCluster, name: str) -> list[int]:
    """Every queuePosition the request's status ever showed, in order."""
    positions: list[int] = []
    for version in cluster.api.history_of(REQUESTS, NAMESPACE, name):
        position = (version.get("status") or {}).get("queuePosition")
        if position is not None and (not positions or positions[-1] != position):
            positions.append(position)
    return positions


def job_creation_order(cluster: LocalCluster) -> list[str]:
    return [
        dict(obj.history.raw[0] or {})["metadata"]["labels"][er.LABEL_EXPORT]
        for (resource, _, _), obj in cluster.api.objects.items()
        if resource.plural == "jobs"
    ]


async def test_ten_requests_made_while_the_operator_was_down_run_two_at_a_time_in_order(
    cluster: LocalCluster,
) -> None:
    names = [f"exp-q{index:02d}" for index in range(10)]
    for name in names:
        await cluster.create_request(name, SPEC)
    operator = await cluster.start_operator(max_running_jobs=2)
    await cluster.until(lambda: all(cluster.phase(n) == "Succeeded" for n in names), timeout=180)
    await operator.stop()

    assert cluster.kubelet.max_running == 2  # the limit was used, and never exceeded
    assert job_creation_order(cluster) == names  # first in, first out
    # The first round queued all but two, numbered in order; positions only ever moved up.
    assert [queue_positions(cluster, name)[:1] for name in names] == [[], []] + [
        [position] for position in range(1, 9)
    ]
    for name in names:
        positions = queue_positions(cluster, name)
        assert positions == sorted(positions, reverse=True)


async def test_a_requester_at_its_limit_waits_while_others_go_ahead(cluster: LocalCluster) -> None:
    """Per-requester limit 1: alice's second and third wait (positions 1 and 2), bob's single
    request, made after them, starts at once; all finish once the Jobs can run."""
    cluster.kubelet.pause()
    operator = await cluster.start_operator(max_running_jobs=4, max_running_per_requester=1)
    for name, requester in (("alice-1", "alice"), ("alice-2", "alice"), ("alice-3", "alice")):
        await cluster.create_request(name, {**SPEC, "requestedBy": requester})
    await cluster.create_request("bob-1", {**SPEC, "requestedBy": "bob"})
    await cluster.until(lambda: len(cluster.jobs()) == 2 and cluster.phase("alice-3") == "Queued")

    admitted = sorted(job["metadata"]["labels"][er.LABEL_EXPORT] for job in cluster.jobs())
    assert admitted == ["alice-1", "bob-1"]
    waiting = [cluster.request(name) or {} for name in ("alice-2", "alice-3")]
    assert [body["status"]["queuePosition"] for body in waiting] == [1, 2]

    cluster.kubelet.resume()
    everyone = ("alice-1", "alice-2", "alice-3", "bob-1")
    await cluster.until(lambda: all(cluster.phase(n) == "Succeeded" for n in everyone))
    await operator.stop()
    assert job_creation_order(cluster)[-2:] == ["alice-2", "alice-3"]
