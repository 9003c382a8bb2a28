"""The API with ``EXPORTD_BACKEND=kubernetes``, on a test cluster of its own.

:func:`kubernetes_app` is an app factory for the API test suite (``BACKEND_FACTORIES``): its
backend is the real :class:`~exportd.api.backends.kubernetes.KubernetesBackend`, whose start
(in the app's lifespan) first brings up the emulator, the kubelet and the operator, configured
from the API's own settings (data directory, catalog, signing key, sample database), so the
links the API signs open the files the exporter Jobs stored.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from fastapi import FastAPI
from kubernetes.aio.client import Configuration

from exportd.api import create_app
from exportd.api.backends.kubernetes import KubernetesBackend
from exportd.contract import exportrequest as er
from exportd.contract.catalog import Catalog
from exportd.settings import ApiSettings
from tests.k8s.cluster import ExportSetup, LocalCluster, local_cluster


class ClusterBackend(KubernetesBackend):
    """The Kubernetes backend, plus the test cluster it talks to."""

    def __init__(self, settings: ApiSettings, catalog: Catalog) -> None:
        super().__init__(settings, catalog)
        self.cluster: LocalCluster | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        settings = self.settings
        sample = settings.sources["sample"].path
        assert sample is not None and settings.catalog_path is not None
        setup = ExportSetup(
            data_dir=settings.data_dir,
            catalog_path=settings.catalog_path,
            sample_db=sample,
            signing_key=settings.secret("signing_key"),
            public_url=settings.public_url,
        )
        workdir = Path(settings.data_dir).parent / "cluster"
        self.cluster = await self._stack.enter_async_context(
            local_cluster(workdir, sample, setup=setup)
        )
        operator = await self.cluster.start_operator(
            max_running_jobs=settings.max_running_exports,
            max_running_per_requester=settings.max_running_exports,
            job_backoff_limit=settings.max_attempts - 1,
        )
        self._stack.push_async_callback(operator.stop)
        self.configuration = Configuration(host=self.cluster.url)
        await super().start()

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await self._stack.aclose()


def kubernetes_app(settings: ApiSettings) -> FastAPI:
    catalog = Catalog.load(settings.resolved_catalog_path)
    return create_app(settings, backend=ClusterBackend(settings, catalog))


def count_export_requests(app: FastAPI) -> int:
    """How many ExportRequests the app's backend has created on its cluster."""
    backend = app.state.exportd.backend
    assert isinstance(backend, ClusterBackend) and backend.cluster is not None
    return len(backend.cluster.api.all_of(f"{er.GROUP}/{er.VERSION}/{er.PLURAL}"))
