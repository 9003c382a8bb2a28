"""Reconcile cost: Kubernetes API calls per reconcile round, against the test apiserver.

The real operator (kopf and our handlers, in its own thread and loop) runs against the emulator
of tests/k8s holding N ExportRequests, all finished but 20 that run (each with its active Job
and the exporter's progress reported every half second, which triggers rounds). Calls are
counted at the apiserver, by client: the operator's own client (the one reconcile rounds use)
and kopf's (watches, finalizers, progress annotations). Rounds are counted by the operator's
``exportd_operator_reconciles_total``. Measured once settled (the first rounds write every
request's conditions once), over a fixed window.

    .venv/bin/python bench/reconcile_cost.py            # N = 100 and N = 1000
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.k8s.cluster import CRD_PATH, REQUESTS, new_apiserver, write_catalog  # noqa: E402
from tests.k8s.emulator import ApiServer  # noqa: E402
from tests.k8s.operator import OperatorThread  # noqa: E402

from exportd.contract import exportrequest as er  # noqa: E402
from exportd.operator.jobs import MANAGED_BY, RequestRef, job_name  # noqa: E402
from exportd.ops import metrics  # noqa: E402
from exportd.settings import OperatorSettings  # noqa: E402

NAMESPACE = "default"
RUNNING = 20
WINDOW_SECONDS = 10.0
MERGE = {"Content-Type": "application/merge-patch+json"}
URL = f"/apis/{er.GROUP}/{er.VERSION}/namespaces/{NAMESPACE}/{er.PLURAL}"
SPEC = {"type": "userExport", "fileName": "u.csv", "variables": {"x": 1, "y": 1}}


class CountingApiServer(ApiServer):
    """Counts every request by client (User-Agent) and verb; forgets kmock's request log,
    whose growth would slow every later request down."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()

    async def _handle(self, request: kmock.Request) -> Any:
        agent = request.headers.get("User-Agent", "")
        client = "kopf" if agent.startswith("kopf") else "bench"
        if "OpenAPI-Generator" in agent:
            client = "operator"  # the kubernetes client the reconcile rounds use
        watch = "watch" in request.params or request.params.get("watch") == "true"
        verb = "watch" if watch else request.method.value.lower()
        self.calls[(client, verb)] += 1
        return await super()._handle(request)


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, json=body) as response:
        assert response.status == 201, await response.text()
        created: dict[str, Any] = await response.json()
        return created


async def patch(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with session.patch(url, json=body, headers=MERGE) as response:
        assert response.status == 200, await response.text()


async def seed(session: aiohttp.ClientSession, total: int) -> list[str]:
    crd = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    await post(session, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    running = []
    for index in range(total):
        name = f"exr-{index:05d}"
        body = {"apiVersion": er.API_VERSION, "kind": er.KIND, "metadata": {"name": name}}
        created = await post(session, URL, body | {"spec": SPEC})
        if index < total - RUNNING:
            status = {"phase": "Succeeded", "rows": 1, "completedAt": "2026-01-01T00:00:00Z"}
            await patch(session, f"{URL}/{name}/status", {"status": status})
            continue
        uid = created["metadata"]["uid"]
        job = job_name(RequestRef(NAMESPACE, name, uid))
        owner = {
            "apiVersion": er.API_VERSION,
            "kind": er.KIND,
            "name": name,
            "uid": uid,
            "controller": True,
        }
        labels = {er.LABEL_MANAGED_BY: MANAGED_BY}
        job_body = {
            "metadata": {"name": job, "labels": labels, "ownerReferences": [owner]},
            "spec": {"template": {"spec": {"containers": []}}},
        }
        await post(session, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", job_body)
        job_status = {"status": {"active": 1, "startTime": "2026-01-01T00:00:00Z"}}
        await patch(session, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job}/status", job_status)
        status = {"phase": "Running", "jobName": job, "startedAt": "2026-01-01T00:00:00Z"}
        await patch(session, f"{URL}/{name}/status", {"status": status})
        running.append(name)
    return running


async def report_progress(session: aiohttp.ClientSession, running: list[str]) -> None:
    rows = 0
    while True:
        rows += 100
        for name in running:
            progress = {"status": {"progress": {"rows": rows}}}
            await patch(session, f"{URL}/{name}/status", progress)
        await asyncio.sleep(0.5)


def rounds() -> float:
    return metrics.REGISTRY.get_sample_value("exportd_operator_reconciles_total") or 0.0


async def settle(api: CountingApiServer, total: int) -> None:
    """Until the first rounds have written every request's status once, and 2 s more."""
    while api.calls[("operator", "patch")] < total - RUNNING:
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)


async def measure(total: int, workdir: Path) -> dict[str, float]:
    api = new_apiserver(CountingApiServer)
    async with api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        async with aiohttp.ClientSession(base_url=url) as session:
            started = time.monotonic()
            running = await seed(session, total)
            seeded = time.monotonic() - started
            settings = OperatorSettings(
                data_dir=workdir / "data",
                catalog_path=write_catalog(workdir / "catalog"),
                signing_key="bench-signing-key",
                max_running_jobs=RUNNING,
                max_running_per_requester=RUNNING,
                resync_seconds=1.0,
                housekeeping_interval_seconds=3600,
            )
            operator = OperatorThread(settings, url)
            operator.start()
            reporter = asyncio.create_task(report_progress(session, running))
            try:
                await operator.wait_ready()
                await api.wait_until(lambda: api.watching[(str(kmock.resource(REQUESTS)), "")], 60)
                await settle(api, total)
                calls_before, rounds_before = collections.Counter(api.calls), rounds()
                await asyncio.sleep(WINDOW_SECONDS)
                window = api.calls - calls_before
                counted = rounds() - rounds_before
            finally:
                reporter.cancel()
                await operator.stop()
                api.end_watches()
    still = api.current(REQUESTS, NAMESPACE, running[0]) or {}
    assert still["status"]["phase"] == "Running", still  # the 20 ran the whole window
    ours = {verb: n for (client, verb), n in window.items() if client == "operator"}
    kopf = sum(n for (client, verb), n in window.items() if client == "kopf")
    return {
        "requests": total,
        "seed_seconds": round(seeded, 1),
        "rounds": counted,
        "operator_lists": ours.get("get", 0),
        "operator_calls": sum(ours.values()),
        "operator_calls_per_round": round(sum(ours.values()) / max(counted, 1), 2),
        "kopf_calls": kopf,
    }


async def main() -> None:
    print("requests  rounds  operator calls/round  operator GETs (lists)  kopf calls  (10 s)")
    for total in [int(n) for n in sys.argv[1:]] or [100, 1000]:
        with tempfile.TemporaryDirectory() as tmp:
            figures = await measure(total, Path(tmp))
        print(
            f"{figures['requests']:>8}  {figures['rounds']:>6.0f}  "
            f"{figures['operator_calls_per_round']:>20}  {figures['operator_lists']:>21}  "
            f"{figures['kopf_calls']:>10}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
