"""pytest fixtures for tests that need the test cluster; import them into a test module
(``from tests.k8s.fixtures import cluster_fixture  # noqa: F401`` provides ``cluster``).

``cluster`` is a fresh emulator, kubelet and data directory per test (kmock slows down as its
request log grows, so nothing is shared); ``operator`` runs the real operator against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from exportd.api import create_app
from exportd.api.backends.embedded import EmbeddedBackend
from exportd.contract.catalog import Catalog
from exportd.settings import ApiSettings
from tests.k8s.cluster import PUBLIC_URL, SIGNING_KEY, LocalCluster, local_cluster
from tests.k8s.operator import OperatorThread


@pytest.fixture(name="anyio_backend")
def anyio_backend_fixture() -> str:
    return "asyncio"


@pytest.fixture(name="cluster")
async def cluster_fixture(tmp_path: Path, sample_db: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, sample_db) as running:
        yield running


@pytest.fixture(name="operator")
async def operator_fixture(cluster: LocalCluster) -> AsyncIterator[OperatorThread]:
    running = await cluster.start_operator()
    yield running
    await running.stop()


async def download(cluster: LocalCluster, url: str) -> httpx.Response:
    """GET a signed link through the API's real download route, serving the cluster's files."""
    settings = ApiSettings(
        data_dir=cluster.data_dir,
        catalog_path=cluster.catalog_path,
        signing_key=SIGNING_KEY,
        public_url=PUBLIC_URL,
        jwt_secret="download-test-secret-of-sufficient-length",
    )
    catalog = Catalog.load(cluster.catalog_path)
    app = create_app(settings, backend=EmbeddedBackend(settings, catalog))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        return await client.get(url)
