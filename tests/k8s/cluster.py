"""A whole test cluster on loopback: apiserver emulator, the CRD from ``crds/``, a kubelet, and the
exporter's configuration as ConfigMaps and a Secret (environment through ``envFrom``, the catalog
as a mounted file), exactly as the operator's Job manifests name them.

The exporter runs for real, against the session's sample DuckDB, storing files under the test's
data directory; the operator signs links with the same key the API would check them with.
"""

from __future__ import annotations

import base64
import json
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kmock
import yaml

from exportd.contract import exportrequest as er
from exportd.contract.spec import utc_now
from exportd.operator.jobs import MANAGED_BY
from exportd.settings import OperatorSettings
from tests.k8s.emulator import ApiServer
from tests.k8s.kubelet import Kubelet
from tests.k8s.operator import OperatorThread

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "exportrequest.yaml"
SCHEDULE_CRD_PATH = REPO / "crds" / "exportschedule.yaml"
SHIPPED_CATALOG = REPO / "src" / "exportd" / "data" / "catalog.yaml"
NAMESPACE = "default"
EXPORTER_CONFIG_MAP = "exportd-exporter"
EXPORTER_SECRET = "exportd-exporter"
CATALOG_CONFIG_MAP = "exportd-catalog"
SIGNING_KEY = "k8s-test-signing-key"
PUBLIC_URL = "http://testserver"
POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REQUESTS = f"{er.GROUP}/{er.VERSION}/{er.PLURAL}"
REQUESTS_URL = f"/apis/{er.GROUP}/{er.VERSION}/namespaces/{NAMESPACE}/{er.PLURAL}"
WAIT_SECONDS = 90.0
LEFTOVER_WATCH_SECONDS = 3.0
SERVED_GROUPS = frozenset({"", "batch", "apiextensions.k8s.io", "events.k8s.io"})

T = TypeVar("T")
Clock = Callable[[], datetime]
ApiServerT = TypeVar("ApiServerT", bound=ApiServer)

# Export types the tests add to the shipped catalog.
TEST_TYPES: dict[str, Any] = {
    # Runs until stopped: a practically endless range streamed as CSV rows.
    "endlessRows": {
        "source": "sample",
        "query": "SELECT range AS i, 'row ' || range AS label FROM range(:n)",
        "variables": {"n": {"type": "integer", "required": True, "min": 1}},
        "metadata": False,
    },
    # The same with a 2-second deadline: its Job is stopped by activeDeadlineSeconds.
    "endlessRowsShortDeadline": {
        "source": "sample",
        "query": "SELECT range AS i FROM range(:n)",
        "variables": {"n": {"type": "integer", "required": True, "min": 1}},
        "metadata": False,
        "timeoutSeconds": 2,
    },
    # The query fails in the database: the exporter exits 3 (not retriable).
    "brokenQuery": {
        "source": "sample",
        "query": "SELECT * FROM no_such_table WHERE 1 = :one",
        "variables": {"one": {"type": "integer", "required": True}},
    },
    # From the real PostgreSQL on this machine (no table needed).
    "pgSeries": {
        "source": "postgres",
        "query": "SELECT g AS n, 'row ' || g AS label FROM generate_series(1, :n) AS g ORDER BY g",
        "variables": {"n": {"type": "integer", "required": True, "min": 1}},
        "metadata": False,
    },
    # Its database file does not exist: the exporter exits 75 (retriable) every time.
    "missingDatabase": {
        "source": "missing",
        "query": "SELECT 1 AS one WHERE 1 = :one",
        "variables": {"one": {"type": "integer", "required": True}},
    },
}


def write_catalog(directory: Path) -> Path:
    catalog = yaml.safe_load(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    catalog["types"].update(TEST_TYPES)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    return path


@dataclass(frozen=True)
class ExportSetup:
    """What the exporter, the operator and the API must agree on."""

    data_dir: Path
    catalog_path: Path
    sample_db: Path
    signing_key: str = SIGNING_KEY
    public_url: str = PUBLIC_URL
    extra_env: Mapping[str, str] = field(default_factory=dict)  # e.g. EXPORTD_SMTP

    def exporter_env(self) -> dict[str, str]:
        sources = {
            "sample": {"kind": "duckdb", "path": str(self.sample_db)},
            "missing": {"kind": "duckdb", "path": str(self.data_dir / "no-such-database.duckdb")},
            "postgres": {"kind": "postgres", "dsn": POSTGRES_DSN},
        }
        return {
            "EXPORTD_DATA_DIR": str(self.data_dir),
            "EXPORTD_SOURCES": json.dumps(sources),
            "EXPORTD_PUBLIC_URL": self.public_url,
            "EXPORTD_PROGRESS_INTERVAL_SECONDS": "0.1",
            **self.extra_env,
        }


@dataclass
class LocalCluster:
    api: ApiServer
    url: str
    kubelet: Kubelet
    setup: ExportSetup
    session: aiohttp.ClientSession

    @property
    def data_dir(self) -> Path:
        return self.setup.data_dir

    @property
    def catalog_path(self) -> Path:
        return self.setup.catalog_path

    def operator_settings(self, **overrides: Any) -> OperatorSettings:
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "catalog_path": self.catalog_path,
            "signing_key": self.setup.signing_key,
            "public_url": self.setup.public_url,
            "exporter_env_config_map": EXPORTER_CONFIG_MAP,
            "exporter_env_secret": EXPORTER_SECRET,
            "exporter_catalog_config_map": CATALOG_CONFIG_MAP,
            "max_running_jobs": 4,
            "max_running_per_requester": 4,
            "resync_seconds": 2.0,
        }
        values.update(overrides)
        return OperatorSettings(**values)

    def operator(
        self, clock: Clock = utc_now, liveness: str | None = None, **overrides: Any
    ) -> OperatorThread:
        settings = self.operator_settings(**overrides)
        return OperatorThread(settings, self.url, clock, liveness)

    async def start_operator(
        self, clock: Clock = utc_now, liveness: str | None = None, **overrides: Any
    ) -> OperatorThread:
        """Start the operator and return once it watches requests and its Jobs (kopf's ready
        flag comes earlier, before its API discovery, which must not be cut short)."""
        operator = self.operator(clock, liveness, **overrides)
        operator.start()
        await operator.wait_ready()
        requests = (str(kmock.resource(REQUESTS)), "")
        jobs = (str(kmock.resource("batch/v1/jobs")), f"{er.LABEL_MANAGED_BY}={MANAGED_BY}")
        try:
            await self.until(lambda: self.api.watching[requests] and self.api.watching[jobs])
        except TimeoutError as exc:
            await operator.stop()
            watching = dict(self.api.watching)
            raise TimeoutError(f"the operator never watched; open watches: {watching}") from exc
        return operator

    async def create_request(
        self, name: str, spec: Mapping[str, Any], labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, **({"labels": dict(labels)} if labels else {})}
        body = {"apiVersion": er.API_VERSION, "kind": er.KIND, "metadata": metadata}
        body["spec"] = dict(spec)
        async with self.session.post(REQUESTS_URL, json=body) as response:
            assert response.status == 201, await response.text()
            created: dict[str, Any] = await response.json()
            return created

    async def patch_request(self, name: str, patch: Mapping[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(f"{REQUESTS_URL}/{name}", json=patch, headers=headers) as r:
            assert r.status == 200, await r.text()

    async def delete_request(self, name: str) -> None:
        async with self.session.delete(f"{REQUESTS_URL}/{name}") as response:
            assert response.status == 200, await response.text()

    def request(self, name: str) -> dict[str, Any] | None:
        return self.api.current(REQUESTS, NAMESPACE, name)

    def jobs(self) -> list[dict[str, Any]]:
        return self.api.all_of("batch/v1/jobs")

    def phase(self, name: str) -> str | None:
        body = self.request(name)
        return None if body is None else (body.get("status") or {}).get("phase")

    async def until(self, predicate: Callable[[], T], timeout: float = WAIT_SECONDS) -> T:
        """Wait (on the apiserver's change notifications) until ``predicate()`` is truthy."""
        return await self.api.wait_until(predicate, timeout)

    async def until_phase(self, name: str, *phases: str) -> dict[str, Any]:
        await self.until(lambda: self.phase(name) in phases)
        body = self.request(name)
        assert body is not None
        return body

    def files(self) -> list[Path]:
        root = self.data_dir / "files"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def new_apiserver(kind: type[ApiServerT] = ApiServer) -> ApiServerT:  # type: ignore[assignment]
    """An emulator (of class ``kind``) serving the built-in groups in use (no CRDs yet)."""
    api = kind()
    with warnings.catch_warnings():  # kmock 0.8 reads its bundled file with a deprecated call
        warnings.simplefilter("ignore", DeprecationWarning)
        api.resources.load_bundled()
    # Only the groups in use: kopf and kubectl read every group at start, 24 take a while.
    for resource in list(api.resources):
        if getattr(resource, "group", None) not in SERVED_GROUPS:
            del api.resources[resource]
    return api


async def _apply(session: aiohttp.ClientSession, url: str, body: Mapping[str, Any]) -> None:
    async with session.post(url, json=body) as response:
        assert response.status == 201, await response.text()


async def _seed(session: aiohttp.ClientSession, setup: ExportSetup) -> None:
    for path in (CRD_PATH, SCHEDULE_CRD_PATH):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        await _apply(session, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    config_map = {"metadata": {"name": EXPORTER_CONFIG_MAP}, "data": setup.exporter_env()}
    await _apply(session, f"/api/v1/namespaces/{NAMESPACE}/configmaps", config_map)
    catalog = {"catalog.yaml": setup.catalog_path.read_text(encoding="utf-8")}
    catalog_map = {"metadata": {"name": CATALOG_CONFIG_MAP}, "data": catalog}
    await _apply(session, f"/api/v1/namespaces/{NAMESPACE}/configmaps", catalog_map)
    secret_data = {"EXPORTD_SIGNING_KEY": base64.b64encode(setup.signing_key.encode()).decode()}
    secret = {"metadata": {"name": EXPORTER_SECRET}, "type": "Opaque", "data": secret_data}
    await _apply(session, f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)


@asynccontextmanager
async def local_cluster(
    workdir: Path,
    sample_db: Path,
    *,
    setup: ExportSetup | None = None,
    exporter_python: str = sys.executable,
) -> AsyncIterator[LocalCluster]:
    """A cluster under ``workdir``; ``setup`` defaults to a data directory and the test
    catalog there, the sample database, and the test signing key. Export pods run their
    ``python`` as ``exporter_python`` (this interpreter, or an image's venv)."""
    if setup is None:
        setup = ExportSetup(workdir / "data", write_catalog(workdir / "catalog"), sample_db)
    setup.data_dir.mkdir(parents=True, exist_ok=True)
    api: ApiServer = new_apiserver()
    async with api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        # Inside a pod the exporter finds the API at kubernetes.default.svc with its token;
        # here the node tells it where the emulator is, and it has no token.
        node_env = {
            "EXPORTD_KUBE_API_URL": url,
            "EXPORTD_KUBE_TOKEN_PATH": str(workdir / "no-token"),
        }
        try:
            async with aiohttp.ClientSession(base_url=url) as session:
                await _seed(session, setup)
                kubelet = Kubelet(url, workdir / "pods", node_env=node_env, python=exporter_python)
                async with kubelet:
                    yield LocalCluster(api, url, kubelet, setup, session)
            await _no_watch_left(api)
        finally:
            api.end_watches()


async def _no_watch_left(api: ApiServer) -> None:
    """Every client has stopped by now (API, operator, kubelet), so every watch stream it
    opened must end soon: one left open is a client that leaks a connection."""
    try:
        await api.wait_until(lambda: not api.open_watches(), LEFTOVER_WATCH_SECONDS)
    except TimeoutError:
        open_now = api.open_watches()
        raise AssertionError(f"watches left open by stopped clients: {open_now}") from None
