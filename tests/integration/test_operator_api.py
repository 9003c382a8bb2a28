"""The API with the Kubernetes backend, end to end: HTTP request -> ExportRequest CR ->
operator -> Job -> exporter -> status -> the API's answer. The whole API test suite also runs on
this backend (``BACKEND_FACTORIES`` in tests/integration/conftest.py); this module checks what
only the Kubernetes side shows: the CR the API created and the seed answer of ``POST /export``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from exportd.contract import exportrequest as er
from tests.integration.conftest import SEED_BODY, auth, make_settings
from tests.k8s.api import ClusterBackend, kubernetes_app
from tests.k8s.cluster import NAMESPACE, REQUESTS, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def app(tmp_path: Path, sample_db: Path) -> AsyncIterator[FastAPI]:
    application = kubernetes_app(make_settings(tmp_path / "data", sample_db))
    async with application.router.lifespan_context(application):
        yield application


def cluster_of(app: FastAPI) -> LocalCluster:
    backend = app.state.exportd.backend
    assert isinstance(backend, ClusterBackend) and backend.cluster is not None
    return backend.cluster


async def post(app: FastAPI, path: str, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(path, json=body, headers=auth("alice"))


async def get(app: FastAPI, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(url, headers=auth("alice"))


async def test_post_export_returns_the_seed_json_with_a_link_to_the_file(app: FastAPI) -> None:
    """The seed request (users of tiers 1-2 as XLSX) through POST /export: 200 with
    {"status": "success", "url": ...}; the link downloads the exact file the Job stored."""
    response = await post(app, "/export", SEED_BODY)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"status", "url"} and answer["status"] == "success"
    cluster = cluster_of(app)
    [request] = cluster.api.all_of(REQUESTS)
    status = request["status"]
    assert status["phase"] == "Succeeded" and status["rows"] == 40_000
    assert request["spec"]["requestedBy"] == "alice"
    assert request["metadata"]["labels"][er.LABEL_REQUESTER] == er.requester_label("alice")

    download = await get(app, answer["url"])
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == status["sha256"]
    assert len(download.content) == status["bytes"]


async def test_an_export_created_through_the_api_is_a_request_named_by_its_id(
    app: FastAPI,
) -> None:
    variables = {"a": "muscle1", "b": "muscle2"}
    body = {"type": "menuCategoriesByMuscle", "fileName": "m.csv", "variables": variables}
    created = await post(app, "/v1/exports", body)
    assert created.status_code == 202, created.text
    export_id = created.json()["id"]

    cluster = cluster_of(app)
    request = cluster.request(export_id)
    assert request is not None
    assert request["metadata"]["namespace"] == NAMESPACE
    assert request["spec"]["type"] == "menuCategoriesByMuscle"
    body_after = await cluster.until_phase(export_id, "Succeeded", "Failed")
    shown = (await get(app, f"/v1/exports/{export_id}")).json()
    assert shown["phase"] == body_after["status"]["phase"] == "Succeeded"
    assert shown["rows"] == body_after["status"]["rows"]
