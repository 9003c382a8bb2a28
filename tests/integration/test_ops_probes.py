"""Probes and request ids on a started app; ``/readyz`` against a PostgreSQL state database that
is stopped and started again.

The PostgreSQL test stops this machine's shared server for a few seconds: it always starts it
again (in ``finally``) and waits until it accepts connections before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from exportd.api import create_app
from exportd.api.probes import Check, ReadinessMonitor
from tests.integration.conftest import auth, make_settings
from tests.integration.pgstate import PG_ADMIN_DSN, throwaway_schema

pytestmark = pytest.mark.anyio
DEADLINE_SECONDS = 60


@contextlib.asynccontextmanager
async def started(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client


async def wait_for_status(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while True:
        response = await client.get(path)
        if response.status_code == status:
            return response
        if time.monotonic() > give_up:
            pytest.fail(f"{path} stayed {response.status_code}: {response.text}")
        await asyncio.sleep(0.1)


async def test_probes_answer_and_readyz_names_its_checks(tmp_path: Path, sample_db: Path) -> None:
    settings = make_settings(tmp_path / "data", sample_db)
    async with started(settings) as client:
        assert (await client.get("/livez")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"state_db": "ok", "storage": "ok"}


async def test_readyz_fails_when_storage_is_unusable_and_recovers(
    tmp_path: Path, sample_db: Path
) -> None:
    """The storage root replaced by a plain file: not ready; restored: ready again."""
    root = tmp_path / "files"
    settings = make_settings(
        tmp_path / "data",
        sample_db,
        storage={"kind": "local", "root": root},
        readiness_interval_seconds=0.1,
    )
    async with started(settings) as client:
        await wait_for_status(client, "/readyz", 200)
        root.rmdir()
        root.write_text("not a directory")
        failing = await wait_for_status(client, "/readyz", 503)
        assert failing.json()["checks"]["storage"].startswith("failed")
        assert (await client.get("/livez")).status_code == 200  # alive all the same
        root.unlink()
        await wait_for_status(client, "/readyz", 200)


async def test_request_ids_are_taken_or_made_and_always_returned(
    tmp_path: Path, sample_db: Path
) -> None:
    settings = make_settings(tmp_path / "data", sample_db)
    async with started(settings) as client:
        given = await client.get("/v1/export-types", headers={"X-Request-ID": "abc-123"})
        assert given.headers["X-Request-ID"] == "abc-123"
        made = await client.get("/v1/export-types", headers=auth("alice"))
        assert len(made.headers["X-Request-ID"]) == 32
        hostile = await client.get("/livez", headers={"X-Request-ID": "a b\x7f" + "x" * 300})
        assert hostile.headers["X-Request-ID"] != "a b\x7f" + "x" * 300
        unknown = await client.get("/nope", headers=auth("alice"))
        assert unknown.status_code == 404 and unknown.headers["X-Request-ID"]


async def test_a_hanging_dependency_is_not_called_again_until_it_answers() -> None:
    """The cached self-check: a check that hangs counts as failed, and while it hangs the
    monitor does not pile up more calls of it."""
    calls = 0
    release = asyncio.Event()

    async def hangs() -> bool:
        nonlocal calls
        calls += 1
        await release.wait()
        return True

    monitor = ReadinessMonitor([Check("slow", hangs)], interval=60, timeout=0.05)
    first = await monitor.refresh()
    second = await monitor.refresh()
    assert not first.ready and not second.ready
    assert calls == 1
    release.set()
    await asyncio.sleep(0.01)
    assert (await monitor.refresh()).ready
    assert calls == 2
    await monitor.stop()
    assert not (await monitor.current()).ready  # shutting down


# -- PostgreSQL state database stopped and started ------------------------------------------


def pg_cluster(action: str) -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        command += ["-m", "fast"]  # do not wait for other clients to disconnect
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def wait_until_pg_accepts() -> None:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            with psycopg.connect(PG_ADMIN_DSN, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.2)


@pytest.fixture
def pg_state_url() -> Iterator[str]:
    """A state database of its own: a fresh schema in the shared test database."""
    with throwaway_schema() as url:
        yield url
        wait_until_pg_accepts()  # the test stops and starts the server; drop once it is back


async def test_readyz_fails_while_postgres_is_stopped_and_recovers(
    tmp_path: Path, sample_db: Path, pg_state_url: str
) -> None:
    settings = make_settings(
        tmp_path / "data",
        sample_db,
        state_db_url=pg_state_url,
        readiness_interval_seconds=0.2,
        readiness_timeout_seconds=1.0,
    )
    async with started(settings) as client:
        ready = await wait_for_status(client, "/readyz", 200)
        assert ready.json()["checks"]["state_db"] == "ok"
        try:
            await asyncio.to_thread(pg_cluster, "stop")
            down = await wait_for_status(client, "/readyz", 503)
            assert down.json()["checks"]["state_db"] != "ok"
            assert down.json()["checks"]["storage"] == "ok"
            assert (await client.get("/livez")).status_code == 200
        finally:
            await asyncio.to_thread(pg_cluster, "start")
            await asyncio.to_thread(wait_until_pg_accepts)
        back = await wait_for_status(client, "/readyz", 200)
        assert back.json()["checks"]["state_db"] == "ok"
