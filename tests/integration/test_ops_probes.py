"""Probes and request ids on a started app; ``/readyz`` against a PostgreSQL state database that
is stopped and started again (a server of the test's own, on a spare port: never the shared one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exportd.api import create_app
from exportd.api.probes import Check, ReadinessMonitor
from tests.integration.conftest import auth, make_settings
from tests.integration.private_servers import private_postgres

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


async def test_readyz_reports_unusable_storage_as_degraded_and_recovers(
    tmp_path: Path, sample_db: Path
) -> None:
    """The storage root replaced by a plain file: still ready (every replica shares the storage,
    so failing readiness would only take all of them out), with storage named under
    ``degraded`` and its check failed; restored: no longer degraded."""
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
        failing = await wait_for_body(client, lambda body: body["degraded"] == ["storage"])
        assert failing.status_code == 200
        assert failing.json()["checks"]["storage"].startswith("failed")
        assert (await client.get("/livez")).status_code == 200  # alive all the same
        root.unlink()
        await wait_for_body(client, lambda body: body["degraded"] == [])


async def wait_for_body(client: httpx.AsyncClient, holds: Any) -> httpx.Response:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while True:
        response = await client.get("/readyz")
        if holds(response.json()):
            return response
        if time.monotonic() > give_up:
            pytest.fail(f"/readyz stayed {response.status_code}: {response.text}")
        await asyncio.sleep(0.1)


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


async def test_readyz_fails_while_postgres_is_stopped_and_recovers(
    tmp_path: Path, sample_db: Path
) -> None:
    """The state database (a server of this test's own) stopped: /readyz 503 naming it, the
    storage still ok, /livez 200; started again: ready again."""
    with private_postgres() as pg:
        settings = make_settings(
            tmp_path / "data",
            sample_db,
            state_db_url=pg.url,
            readiness_interval_seconds=0.2,
            readiness_timeout_seconds=1.0,
        )
        async with started(settings) as client:
            ready = await wait_for_status(client, "/readyz", 200)
            assert ready.json()["checks"]["state_db"] == "ok"
            try:
                await asyncio.to_thread(pg.stop)
                down = await wait_for_status(client, "/readyz", 503)
                assert down.json()["checks"]["state_db"] != "ok"
                assert down.json()["checks"]["storage"] == "ok"
                assert (await client.get("/livez")).status_code == 200
            finally:
                await asyncio.to_thread(pg.start)
            back = await wait_for_status(client, "/readyz", 200)
            assert back.json()["checks"]["state_db"] == "ok"


async def test_readyz_reports_an_unreachable_smtp_server_as_degraded(
    tmp_path: Path, sample_db: Path
) -> None:
    """SMTP configured on a loopback port where nothing listens. Must hold: /readyz 200 (the
    replica can still serve), ``smtp`` under ``degraded`` and its check failed."""
    from tests.e2e.conftest import free_port

    settings = make_settings(
        tmp_path / "data",
        sample_db,
        smtp={"host": "127.0.0.1", "port": free_port(), "sender": "exports@example.com"},
        readiness_interval_seconds=0.1,
    )
    async with started(settings) as client:
        ready = await wait_for_body(client, lambda body: body["degraded"] == ["smtp"])
        assert ready.status_code == 200
        assert ready.json()["checks"]["smtp"].startswith("failed")
        assert ready.json()["checks"]["state_db"] == "ok"
