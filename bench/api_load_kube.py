"""The create run of ``make bench-api`` against the Kubernetes backend on the emulator.

No cluster runs on this machine: the API (Kubernetes backend), the kopf operator and a test
kubelet that runs each Job's command as a local process all talk to the loopback API emulator of
the test suite (tests/k8s), in this one process. The same tiny export type, users and credits as
``bench/api_load.py``: an idle round (sequential creates, each awaited), then 20 users x 10
concurrent creates; figures only (the emulator itself slows down as its request log grows, so
they describe this setup, not a cluster). Bounded: every wait gives up after DEADLINE_SECONDS.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api_load import BODY, IDLE_CREATES, PER_USER, USERS, quantile
from tests.integration.conftest import auth, make_settings
from tests.k8s.api import kubernetes_app

from exportd.sample.sampledb import ensure_sample_db

DEADLINE_SECONDS = 900
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


async def wait_terminal(client: httpx.AsyncClient, exports: dict[str, str]) -> dict[str, int]:
    give_up = time.monotonic() + DEADLINE_SECONDS
    pending = dict(exports)
    phases: dict[str, int] = {}
    while pending and time.monotonic() < give_up:
        for export_id, owner in list(pending.items()):
            shown = (await client.get(f"/v1/exports/{export_id}", headers=auth(owner))).json()
            phase = shown.get("phase")
            if phase in TERMINAL:
                phases[phase] = phases.get(phase, 0) + 1
                del pending[export_id]
        if pending:
            await asyncio.sleep(1.0)
    if pending:
        phases["unfinished"] = len(pending)
    return phases


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="exportd-bench-kube-"))
    sample = ensure_sample_db(work / "sample.duckdb")
    settings = make_settings(
        work / "data",
        sample,
        rate_limits_enabled=False,
        credits_initial=10,
        credits_cap=10,
        max_queued_exports=300,
        max_queued_per_user=PER_USER,
    )
    app = kubernetes_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=300) as client,
    ):
        idle = []
        for _ in range(IDLE_CREATES):
            started = time.perf_counter()
            response = await client.post("/v1/exports", json=BODY, headers=auth("idle"))
            idle.append(time.perf_counter() - started)
            await wait_terminal(client, {response.json()["id"]: "idle"})

        async def create(user: str) -> tuple[str, float, httpx.Response]:
            started = time.perf_counter()
            response = await client.post("/v1/exports", json=BODY, headers=auth(user))
            return user, time.perf_counter() - started, response

        users = [f"load{n}" for n in range(USERS)]
        began = time.perf_counter()
        answers = await asyncio.gather(*(create(u) for u in users for _ in range(PER_USER)))
        statuses: dict[int, int] = {}
        for _, _, response in answers:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        exports = {r.json()["id"]: u for u, _, r in answers if r.status_code == 202}
        phases = await wait_terminal(client, exports)
        drained = time.perf_counter() - began
        balances = [
            (await client.get("/v1/credits", headers=auth(u))).json()["balance"] for u in users
        ]
        made = [sum(1 for owner in exports.values() if owner == u) for u in users]
    latencies = [latency for _, latency, _ in answers]
    idle_p50 = statistics.median(idle)
    exact = all(b == 10 - m for b, m in zip(balances, made, strict=True))
    print(
        f"| kubernetes (emulator) | {idle_p50 * 1000:.0f} ms | "
        f"{quantile(latencies, 0.5) * 1000:.0f} ms | {quantile(latencies, 0.99) * 1000:.0f} ms | "
        f"{quantile(latencies, 0.99) / idle_p50:.1f}x | statuses {statuses} | phases {phases} | "
        f"balances exact: {'yes' if exact else 'NO'} | all {len(exports)} done in {drained:.0f} s |"
    )


if __name__ == "__main__":
    asyncio.run(main())
