"""Pins kmock 0.8's own emulator: the behaviours tests/k8s/emulator.py exists to correct.

If an upgrade of kmock changes any of them, one of these fails: then the corrections in our
subclass must be reviewed (some may have become redundant, some wrong). Each test states what
stock kmock does and what a real apiserver does instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib.metadata import version

import aiohttp
import kmock
import pytest
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401

pytestmark = pytest.mark.anyio

REQUESTS = "/apis/exportd.dev/v1alpha1/namespaces/ns/exportrequests"
JOBS = "/apis/batch/v1/namespaces/ns/jobs"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
async def stock() -> AsyncIterator[aiohttp.ClientSession]:
    emulator = kmock.KubernetesEmulator()
    emulator.resources["exportd.dev/v1alpha1/exportrequests"] = kmock.ResourceInfo(
        kind="ExportRequest", namespaced=True, subresources={"status"}
    )
    emulator.resources["batch/v1/jobs"] = kmock.ResourceInfo(kind="Job", namespaced=True)
    async with (
        emulator,
        kmock.Server(emulator) as server,
        aiohttp.ClientSession(base_url=str(server.url)) as session,
    ):
        created = await session.post(
            REQUESTS, json={"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"v": 1}}
        )
        assert created.status == 200
        yield session


def test_the_pinned_version_is_in_use() -> None:
    assert version("kmock") == "0.8"


async def test_create_answers_200_and_fills_in_nothing(stock: aiohttp.ClientSession) -> None:
    """apiserver: 201 with uid, resourceVersion, creationTimestamp, generation, kind."""
    created = await stock.post(REQUESTS, json={"metadata": {"name": "b"}, "spec": {}})
    assert created.status == 200
    assert await created.json() == {"metadata": {"name": "b"}, "spec": {}}


async def test_a_failed_json_patch_test_answers_500(stock: aiohttp.ClientSession) -> None:
    """apiserver: 422, which kopf takes as "changed meanwhile"; a 500 it retries forever."""
    ops = [{"op": "test", "path": "/spec/v", "value": 2}]
    patched = await stock.patch(f"{REQUESTS}/a", data=json.dumps(ops), headers=JSON_PATCH)
    assert patched.status == 500


async def test_a_stale_resource_version_is_accepted(stock: aiohttp.ClientSession) -> None:
    """apiserver: 409 Conflict."""
    patch = {"metadata": {"resourceVersion": "999"}, "spec": {"v": 3}}
    patched = await stock.patch(f"{REQUESTS}/a", json=patch, headers=MERGE)
    assert patched.status == 200


async def test_label_selectors_are_ignored(stock: aiohttp.ClientSession) -> None:
    listed = await stock.get(REQUESTS, params={"labelSelector": "x=2"})
    assert len((await listed.json())["items"]) == 1  # apiserver: none


async def test_put_is_not_served(stock: aiohttp.ClientSession) -> None:
    replaced = await stock.put(f"{REQUESTS}/a", json={"metadata": {"name": "a"}, "spec": {}})
    assert replaced.status == 404


async def test_the_status_subresource_also_changes_the_spec(stock: aiohttp.ClientSession) -> None:
    """apiserver: /status ignores everything but status."""
    patch = {"spec": {"v": 9}, "status": {"phase": "Running"}}
    patched = await stock.patch(f"{REQUESTS}/a/status", json=patch, headers=MERGE)
    assert (await patched.json())["spec"] == {"v": 9}


async def test_owned_objects_outlive_their_owner(stock: aiohttp.ClientSession) -> None:
    """No garbage collection, whatever the propagation policy."""
    owner = [{"apiVersion": "exportd.dev/v1alpha1", "kind": "ExportRequest", "name": "a"}]
    await stock.post(JOBS, json={"metadata": {"name": "j", "ownerReferences": owner}})
    await stock.delete(f"{REQUESTS}/a", json={"propagationPolicy": "Foreground"})
    assert (await stock.get(f"{REQUESTS}/a")).status == 404
    assert (await stock.get(f"{JOBS}/j")).status == 200


async def test_namespaces_cannot_be_created(stock: aiohttp.ClientSession) -> None:
    """kmock parses /api/v1/namespaces as the start of a namespaced path and fails."""
    created = await stock.post("/api/v1/namespaces", json={"metadata": {"name": "x"}})
    assert created.status == 500


async def test_a_watch_replays_everything_and_ignores_its_timeout(
    stock: aiohttp.ClientSession,
) -> None:
    """apiserver: only events after ?resourceVersion=, and the stream ends at ?timeoutSeconds=."""
    params = {"watch": "true", "resourceVersion": "12345", "timeoutSeconds": "1"}
    async with stock.get(REQUESTS, params=params) as watch:
        first = json.loads(await asyncio.wait_for(watch.content.readline(), 5))
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watch.content.readline(), 2)  # still open after 2 s
