"""Our apiserver emulator (tests/k8s/emulator.py): the five behaviours kopf needs that kmock 0.8
lacks, and the rest of the apiserver behaviour the operator, the API and kubectl rely on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from tests.k8s.cluster import CRD_PATH, new_apiserver
from tests.k8s.emulator import TABLE_CONTENT_TYPE, ApiServer
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401

pytestmark = pytest.mark.anyio

REQUESTS = "/apis/exportd.dev/v1alpha1/namespaces/ns/exportrequests"
ALL_REQUESTS = "/apis/exportd.dev/v1alpha1/exportrequests"
JOBS = "/apis/batch/v1/namespaces/ns/jobs"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


class Client:
    def __init__(self, api: ApiServer, session: aiohttp.ClientSession) -> None:
        self.api, self.session = api, session

    async def create(self, url: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        async with self.session.post(url, json=body) as response:
            assert response.status == status, await response.text()
            created: dict[str, Any] = await response.json()
            return created

    async def patch(
        self, url: str, body: Any, headers: dict[str, str] = MERGE, status: int = 200
    ) -> dict[str, Any]:
        async with self.session.patch(url, data=json.dumps(body), headers=headers) as response:
            assert response.status == status, await response.text()
            patched: dict[str, Any] = await response.json()
            return patched

    async def get(self, url: str, **params: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(url, params=params) as response:
            return response.status, await response.json()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    api = new_apiserver()
    async with (
        api,
        kmock.Server(api) as server,
        aiohttp.ClientSession(base_url=str(server.url)) as session,
    ):
        crd = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
        await Client(api, session).create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
        )
        yield Client(api, session)


async def test_create_fills_in_what_the_apiserver_does_and_answers_201(client: Client) -> None:
    created = await client.create(REQUESTS, {"metadata": {"name": "a"}, "spec": {"x": 1}})
    meta = created["metadata"]
    assert created["apiVersion"] == "exportd.dev/v1alpha1" and created["kind"] == "ExportRequest"
    assert meta["namespace"] == "ns" and meta["generation"] == 1
    assert meta["uid"] and meta["resourceVersion"]
    assert meta["creationTimestamp"].endswith("Z") and "." not in meta["creationTimestamp"]
    await client.create(REQUESTS, {"metadata": {"name": "a"}}, status=409)


async def test_every_write_gets_a_higher_resource_version_and_lists_carry_it(
    client: Client,
) -> None:
    created = await client.create(REQUESTS, {"metadata": {"name": "a"}, "spec": {}})
    patched = await client.patch(f"{REQUESTS}/a", {"spec": {"x": 2}})
    _, listing = await client.get(ALL_REQUESTS)
    versions = [created, patched, listing]
    numbers = [int(v["metadata"]["resourceVersion"]) for v in versions]
    assert numbers[0] < numbers[1] == numbers[2]
    unchanged = await client.patch(f"{REQUESTS}/a", {"spec": {"x": 2}})  # a no-op writes nothing
    assert unchanged["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]


async def test_a_failed_json_patch_test_answers_422(client: Client) -> None:
    await client.create(REQUESTS, {"metadata": {"name": "a"}, "spec": {}})
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
    await client.patch(f"{REQUESTS}/a", ops, headers=JSON_PATCH, status=422)


async def test_a_stale_resource_version_answers_409(client: Client) -> None:
    created = await client.create(REQUESTS, {"metadata": {"name": "a"}, "spec": {}})
    await client.patch(f"{REQUESTS}/a", {"spec": {"x": 1}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    await client.patch(f"{REQUESTS}/a", {**stale, "spec": {"x": 2}}, status=409)


async def test_a_watch_from_a_version_sends_only_later_events_and_ends_on_time(
    client: Client,
) -> None:
    """Subscribed at the list's version, nothing made in between is lost or replayed."""
    await client.create(REQUESTS, {"metadata": {"name": "before"}, "spec": {}})
    _, listing = await client.get(ALL_REQUESTS)
    await client.create(REQUESTS, {"metadata": {"name": "between"}, "spec": {}})
    params = {"watch": "true", "timeoutSeconds": "1"}
    params["resourceVersion"] = listing["metadata"]["resourceVersion"]
    async with client.session.get(ALL_REQUESTS, params=params) as watch:
        events = [json.loads(line) async for line in watch.content]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "between")]


async def test_a_watch_without_a_version_starts_with_the_current_objects(client: Client) -> None:
    client.api.bookmark_seconds = 0.2
    await client.create(REQUESTS, {"metadata": {"name": "a"}, "spec": {}})
    params = {"watch": "true", "timeoutSeconds": "1", "allowWatchBookmarks": "true"}
    async with client.session.get(ALL_REQUESTS, params=params) as watch:
        events = [json.loads(line) async for line in watch.content]
    assert (events[0]["type"], events[0]["object"]["metadata"]["name"]) == ("ADDED", "a")
    assert {event["type"] for event in events[1:]} == {"BOOKMARK"}


async def test_selectors_filter_lists_and_watches(client: Client) -> None:
    for name, tier in (("a", "gold"), ("b", "free"), ("c", None)):
        labels = {"tier": tier} if tier else {}
        await client.create(REQUESTS, {"metadata": {"name": name, "labels": labels}})

    async def names(**params: str) -> list[str]:
        _, listing = await client.get(ALL_REQUESTS, **params)
        return sorted(item["metadata"]["name"] for item in listing["items"])

    assert await names(labelSelector="tier=gold") == ["a"]
    assert await names(labelSelector="tier!=gold") == ["b", "c"]
    assert await names(labelSelector="tier in (gold, free)") == ["a", "b"]
    assert await names(labelSelector="!tier") == ["c"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]


async def test_status_is_a_subresource_of_its_own(client: Client) -> None:
    await client.create(REQUESTS, {"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {"p": 1}})
    through_status = await client.patch(
        f"{REQUESTS}/a/status", {"spec": {"x": 2}, "status": {"phase": "Running"}}
    )
    assert through_status["spec"] == {"x": 1} and through_status["status"] == {"phase": "Running"}
    through_main = await client.patch(f"{REQUESTS}/a", {"spec": {"x": 3}, "status": {"p": 2}})
    assert through_main["spec"] == {"x": 3} and through_main["status"] == {"phase": "Running"}
    assert through_main["metadata"]["generation"] == 2  # spec changed once


async def test_finalizers_hold_a_deletion_until_they_are_removed(client: Client) -> None:
    await client.create(REQUESTS, {"metadata": {"name": "a", "finalizers": ["f"]}})
    async with client.session.delete(f"{REQUESTS}/a") as response:
        deleting = await response.json()
    assert deleting["metadata"]["deletionTimestamp"]
    assert (await client.get(f"{REQUESTS}/a"))[0] == 200
    await client.patch(f"{REQUESTS}/a", {"metadata": {"finalizers": None}})
    assert (await client.get(f"{REQUESTS}/a"))[0] == 404


async def test_owned_objects_are_not_garbage_collected(client: Client) -> None:
    """Deliberately like kmock: code under test must delete what it owns itself."""
    owner = await client.create(REQUESTS, {"metadata": {"name": "a"}})
    reference = {"kind": "ExportRequest", "name": "a", "uid": owner["metadata"]["uid"]}
    await client.create(JOBS, {"metadata": {"name": "j", "ownerReferences": [reference]}})
    async with client.session.delete(f"{REQUESTS}/a", json={"propagationPolicy": "Foreground"}):
        pass
    assert (await client.get(f"{JOBS}/j"))[0] == 200


async def test_a_created_crd_is_discoverable_and_printed_as_a_table(client: Client) -> None:
    _, resources = await client.get("/apis/exportd.dev/v1alpha1")
    by_name = {entry["name"]: entry for entry in resources["resources"]}
    assert by_name["exportrequests"]["shortNames"] == ["exr"]
    assert by_name["exportrequests/status"]["shortNames"] == []
    body = {"metadata": {"name": "a"}, "spec": {"type": "t", "format": "csv"}}
    await client.create(REQUESTS, body)
    headers = {"Accept": f"{TABLE_CONTENT_TYPE},application/json"}
    async with client.session.get(REQUESTS, headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/json;as=Table")
        table = await response.json()
    names = [column["name"] for column in table["columnDefinitions"]]
    assert names[:7] == ["Name", "Type", "Format", "Phase", "Rows", "Duration", "Age"]
    # Format is status.format (the effective one, written by the operator): none yet.
    assert table["rows"][0]["cells"][:5] == ["a", "t", None, None, None]


async def test_waiting_returns_once_a_write_makes_the_condition_true(client: Client) -> None:
    async def later() -> None:
        await asyncio.sleep(0.2)
        await client.create(REQUESTS, {"metadata": {"name": "late"}})

    task = asyncio.create_task(later())
    found = await client.api.wait_until(
        lambda: client.api.current("exportd.dev/v1alpha1/exportrequests", "ns", "late"), 10
    )
    await task
    assert found is not None and found["metadata"]["name"] == "late"
    with pytest.raises(TimeoutError):
        await client.api.wait_until(lambda: False, 0.3)
