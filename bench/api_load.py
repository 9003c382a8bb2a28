"""``make bench-api``: the API under load, as a whole ``exportd serve`` process on loopback.

For each state store (embedded SQLite; PostgreSQL state + Redis rate limits), one server:

- creates: 200 concurrent ``POST /v1/exports`` from 20 users (10 each) of a tiny export type
  (``menuCategoriesByMuscle``: a few rows from the sample DuckDB), against an idle server's
  create latency. Interleaved A B A B: idle round (sequential creates, each waiting for its export
  to finish, so the queue is empty), load round, idle round, load round; each load round's create
  p99 is divided by the idle p50 measured just before it (target < 3x, min-max shown). Checked
  after each load round: no 5xx, every export Succeeded, every user's balance exactly
  ``credits_initial - exports``.
- status reads: 1,000 finished exports seeded in the state store before the server starts, then
  ``GET /v1/exports/{id}`` at 500 requests/s (open loop) for 20 s: p50/p99 (target p99 < 50 ms).

Every loop is bounded in count and time; only 127.0.0.1 is used. Results are printed and written
to ``bench/API_RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from exportd.contract.spec import ExportSpec, ExportStatus, Phase, utc_now
from exportd.security.tokens import mint_token

EXPORTD = Path(sys.executable).parent / "exportd"
SECRET = "bench-api-secret-bench-api-secret"  # noqa: S105 - loopback bench only
BODY = {
    "type": "menuCategoriesByMuscle",
    "fileName": "menus.csv",
    "variables": {"a": "muscle1", "b": "muscle2"},
}
USERS = 20
PER_USER = 10
CREDITS = 10
SEEDED = 1000
READ_RATE = 500
READ_SECONDS = 20
READ_WORKERS = 32
IDLE_CREATES = 10
ROUNDS = 2
DEADLINE_SECONDS = 600
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def headers(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, SECRET, 6 * 3600)}"}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Server:
    name: str
    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            "PATH": os.defpath,
            "HOME": str(self.data_dir),
            "LANG": "C.UTF-8",
            "EXPORTD_DATA_DIR": str(self.data_dir),
            "EXPORTD_HOST": "127.0.0.1",
            "EXPORTD_PORT": str(self.port),
            "EXPORTD_PUBLIC_URL": self.url,
            "EXPORTD_JWT_SECRET": SECRET,
            "EXPORTD_LOG_LEVEL": "WARNING",
            "EXPORTD_MAX_RUNNING_EXPORTS": "4",
            "EXPORTD_MAX_QUEUED_EXPORTS": "300",
            "EXPORTD_MAX_QUEUED_PER_USER": str(PER_USER),
            "EXPORTD_CREDITS_INITIAL": str(CREDITS),
            "EXPORTD_CREDITS_CAP": str(CREDITS),
            "EXPORTD_RATE_LIMIT_CREATE_PER_USER": "1000/minute",
            "EXPORTD_RATE_LIMIT_CREATE_PER_IP": "100000/minute",
            "EXPORTD_RATE_LIMIT_READ_PER_USER": "100000/minute",
            "EXPORTD_RATE_LIMIT_READ_PER_IP": "1000000/minute",
            "EXPORTD_SHUTDOWN_DRAIN_SECONDS": "0",
            **self.env,
        }
        log = (self.data_dir.parent / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [str(EXPORTD), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name}: exportd serve exited {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: not ready in 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


async def seed(state_url: str | None, data_dir: Path) -> list[tuple[str, str]]:
    """SEEDED finished exports, written through the state store before the server starts."""
    from exportd.store.base import ExportRecord, StateStore
    from exportd.store.postgres import PostgresStateStore
    from exportd.store.sqlite import SqliteStateStore

    store: StateStore = (
        PostgresStateStore(state_url) if state_url else SqliteStateStore(data_dir / "state.sqlite3")
    )
    await store.open()
    seeded = []
    now = utc_now()
    for number in range(SEEDED):
        owner = f"reader{number % USERS}"
        spec = _spec(owner)
        status = ExportStatus(
            phase=Phase.SUCCEEDED, attempts=1, rows=5, started_at=now, completed_at=now
        )
        await store.create(ExportRecord.new(spec, status))
        seeded.append((spec.id, owner))
    await store.close()
    return seeded


def _spec(owner: str) -> ExportSpec:
    from exportd.contract.spec import ExportRequestBody, new_export_id

    body = ExportRequestBody.model_validate(BODY)
    return ExportSpec.from_request(body, requested_by=owner, export_id=new_export_id())


async def idle_round(client: httpx.AsyncClient, user: str) -> list[float]:
    """Sequential creates on an empty queue; each export is awaited before the next create."""
    latencies = []
    for _ in range(IDLE_CREATES):
        started = time.perf_counter()
        response = await client.post("/v1/exports", json=BODY, headers=headers(user))
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 202, response.text
        await wait_terminal(client, {response.json()["id"]: user})
    return latencies


async def wait_terminal(client: httpx.AsyncClient, exports: dict[str, str]) -> dict[str, str]:
    phases: dict[str, str] = {}
    give_up = time.monotonic() + DEADLINE_SECONDS
    pending = dict(exports)
    while pending and time.monotonic() < give_up:
        for export_id, owner in list(pending.items()):
            shown = (await client.get(f"/v1/exports/{export_id}", headers=headers(owner))).json()
            if shown["phase"] in TERMINAL:
                phases[export_id] = shown["phase"]
                del pending[export_id]
        if pending:
            await asyncio.sleep(0.5)
    for export_id in pending:
        phases[export_id] = "unfinished"
    return phases


@dataclass
class LoadRound:
    latencies: list[float]
    queued_latencies: list[float]  # sequential creates right after the burst, queue full
    statuses: dict[int, int]
    phases: dict[str, int]
    balances_exact: bool


async def load_round(client: httpx.AsyncClient, prefix: str) -> LoadRound:
    users = [f"{prefix}{n}" for n in range(USERS)]

    async def create(user: str) -> tuple[str, float, httpx.Response]:
        started = time.perf_counter()
        response = await client.post("/v1/exports", json=BODY, headers=headers(user))
        return user, time.perf_counter() - started, response

    answers = await asyncio.gather(*(create(u) for u in users for _ in range(PER_USER)))
    # The queue now holds most of the burst: a create must cost what it costs when idle.
    probe = f"{prefix}probe"
    queued = [await create(probe) for _ in range(IDLE_CREATES)]
    users.append(probe)
    statuses: dict[int, int] = {}
    exports: dict[str, str] = {}
    for user, _, response in answers + queued:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 202:
            exports[response.json()["id"]] = user
    phases = await wait_terminal(client, exports)
    counts: dict[str, int] = {}
    for phase in phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    made = {u: sum(1 for owner in exports.values() if owner == u) for u in users}
    exact = True
    for user in users:
        balance = (await client.get("/v1/credits", headers=headers(user))).json()["balance"]
        exact = exact and balance == CREDITS - made[user]
    return LoadRound(
        [latency for _, latency, _ in answers],
        [latency for _, latency, _ in queued],
        statuses,
        counts,
        exact,
    )


async def status_reads(base_url: str, seeded: list[tuple[str, str]]) -> dict[str, Any]:
    """Open loop: request i is due at t0 + i / READ_RATE, whatever the previous ones do; a
    pool of READ_WORKERS connections sends each as soon as it is due (latency from sending)."""
    total = READ_RATE * READ_SECONDS
    tokens = {owner: headers(owner) for _, owner in seeded}
    latencies: list[float] = []
    errors = 0
    late = 0
    next_index = 0
    limits = httpx.Limits(max_connections=READ_WORKERS, max_keepalive_connections=READ_WORKERS)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal errors, late, next_index
            while next_index < total:
                i = next_index
                next_index += 1
                delay = start + i / READ_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.01:
                    late += 1  # the client could not keep up: sent late (counted, not hidden)
                export_id, owner = seeded[i % len(seeded)]
                sent = time.perf_counter()
                try:
                    response = await client.get(f"/v1/exports/{export_id}", headers=tokens[owner])
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - sent)

        workers = [worker() for _ in range(READ_WORKERS)]
        await asyncio.wait_for(asyncio.gather(*workers), READ_SECONDS * 6)
        elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "rate": total / elapsed,
        "p50_ms": quantile(latencies, 0.5) * 1000,
        "p99_ms": quantile(latencies, 0.99) * 1000,
        "errors": errors,
        "late": late,
    }


async def run_mode(
    name: str, work: Path, env: dict[str, str], state_url: str | None, rounds: int
) -> dict[str, Any]:
    data_dir = work / name / "data"
    data_dir.mkdir(parents=True)
    seeded = await seed(state_url, data_dir)
    server = Server(name, data_dir, env)
    server.start()
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=180, limits=limits) as client:
            await idle_round(client, f"warm-{name}")  # imports, caches, first exporter start
            pairs = []
            for number in range(rounds):
                idle = await idle_round(client, f"idle{number}-")
                load = await load_round(client, f"load{number}-")
                pairs.append((statistics.median(idle), load))
        reads = await status_reads(server.url, seeded)
    finally:
        server.stop()
    return {"name": name, "pairs": pairs, "reads": reads}


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "# `make bench-api` results",
        "",
        f"`exportd serve` as a whole process on 127.0.0.1; {USERS} users x {PER_USER} concurrent "
        "creates of `menuCategoriesByMuscle` per load round, 4 exports running at once; "
        f"{ROUNDS} rounds, each after an idle round (A B A B). Status reads: {READ_RATE} req/s "
        f"for {READ_SECONDS} s against {SEEDED} seeded exports.",
        "",
        "| "
        + " | ".join(
            [
                "state store",
                "idle create p50",
                "load create p50",
                "load create p99",
                "p99 / idle p50 (min-max)",
                "create with the queue full p50 / idle p50 (min-max)",
                "5xx",
                "Succeeded",
                "balances exact",
                "reads p50",
                "reads p99",
                "read errors",
                "read rate achieved",
            ]
        )
        + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        pairs = result["pairs"]
        ratios = [quantile(load.latencies, 0.99) / idle for idle, load in pairs] or [0.0]
        queued = [statistics.median(load.queued_latencies) / idle for idle, load in pairs] or [0.0]
        idle_p50 = statistics.median([idle for idle, _ in pairs] or [0.0])
        all_load = [x for _, load in pairs for x in load.latencies] or [0.0]
        fives = sum(n for _, load in pairs for status, n in load.statuses.items() if status >= 500)
        succeeded = sum(load.phases.get("Succeeded", 0) for _, load in pairs)
        total = (USERS * PER_USER + IDLE_CREATES) * len(pairs)
        exact = all(load.balances_exact for _, load in pairs)
        reads = result["reads"]
        lines.append(
            f"| {result['name']} | {idle_p50 * 1000:.0f} ms | "
            f"{quantile(all_load, 0.5) * 1000:.0f} ms | {quantile(all_load, 0.99) * 1000:.0f} ms | "
            f"{min(ratios):.2f}x-{max(ratios):.2f}x | {min(queued):.2f}x-{max(queued):.2f}x | "
            f"{fives} | {succeeded}/{total} | "
            f"{'yes' if exact else 'NO'} | {reads['p50_ms']:.1f} ms | {reads['p99_ms']:.1f} ms | "
            f"{reads['errors']} | {reads['rate']:.0f}/s, {reads['late']} late |"
        )
    lines.append("")
    for result in results:
        for number, (_, load) in enumerate(result["pairs"]):
            lines.append(
                f"- {result['name']} round {number}: statuses {load.statuses}, phases {load.phases}"
            )
    return "\n".join(lines) + "\n"


async def main(modes: list[str], rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="exportd-bench-api-"))
    results = []
    if "sqlite" in modes:
        results.append(await run_mode("sqlite", work, {}, None, rounds))
    if "postgres" in modes:
        import psycopg

        schema = f"exportd_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
        env = {
            "EXPORTD_STATE_DB_URL": url,
            "EXPORTD_REDIS_URL": REDIS_URL,
            "EXPORTD_REDIS_KEY_PREFIX": schema,
        }
        try:
            results.append(await run_mode("postgres+redis", work, env, url, rounds))
        finally:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    text = report(results)
    print(text)
    Path(__file__).with_name("API_RESULTS.md").write_text(text)
    print(json.dumps({"work_dir": str(work)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="idle + load round pairs")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.modes, arguments.rounds))
