"""The operator's /healthz (kopf's liveness endpoint, as the image serves it) fails when
reconciling stalls, and recovers when rounds finish again.

A round is made to hang for real: the apiserver holds the Job's create of a new request
unanswered (an admission hook waiting), so the round that creates it cannot finish. Past
``liveness_stall_seconds`` without a finished round, /healthz answers 500; once the apiserver
answers, rounds finish and /healthz answers 200 with the seconds since the last round.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import free_port
from tests.k8s.cluster import LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SEED = {"type": "userExport", "fileName": "seed.csv", "variables": {"x": 1, "y": 1}}


async def health(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(url, timeout=10)).status_code


async def test_healthz_fails_while_reconciling_stalls_and_recovers(cluster: LocalCluster) -> None:
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_jobs(resource: str, body: dict[str, Any]) -> None:
        if resource == "batch/v1/jobs":
            held.set()
            await release.wait()

    cluster.api.admission.append(hold_jobs)
    url = f"http://127.0.0.1:{free_port()}/healthz"
    # kopf caches probe results for a while: a short stall limit keeps the test short.
    operator = await cluster.start_operator(
        liveness=url, liveness_stall_seconds=2.0, resync_seconds=0.5
    )
    try:
        assert await health(url) == 200
        await cluster.create_request("held", SEED)
        await asyncio.wait_for(held.wait(), 60)
        statuses = []
        while not statuses or statuses[-1] != 500:
            await asyncio.sleep(1.0)
            statuses.append(await health(url))
            assert len(statuses) < 60, statuses
        release.set()
        await cluster.until_phase("held", "Succeeded", "Failed")
        statuses = []
        while not statuses or statuses[-1] != 200:
            await asyncio.sleep(1.0)
            statuses.append(await health(url))
            assert len(statuses) < 60, statuses
    finally:
        release.set()
        await operator.stop()
