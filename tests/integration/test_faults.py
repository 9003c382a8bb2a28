"""Holding up under load and faults: concurrent creates, a state store or Redis that stops,
and what a crash leaves on disk. Everything real: exporter child processes, and PostgreSQL and
Redis servers this module starts on spare ports and stops (never the shared ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from exportd.api import create_app
from exportd.settings import ApiSettings
from exportd.store.outbox import ResultOutbox
from tests.integration.conftest import ENDLESS_BODY, MENU_BODY, Api, auth, make_settings, wait_for
from tests.integration.private_servers import private_postgres, private_redis

pytestmark = pytest.mark.anyio
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
OUTAGE_ANSWER_SECONDS = 2.0  # the most a request may wait for its 503 during an outage
DEADLINE_SECONDS = 120


@contextlib.asynccontextmanager
async def started(settings: ApiSettings) -> AsyncIterator[Api]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield Api(app, client, settings, "embedded")


def load_settings(tmp_path: Path, sample_db: Path, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "rate_limits_enabled": False,
        "credits_initial": 10,
        "credits_cap": 10,
        "max_running_exports": 4,
        "max_running_per_user": 2,
        "max_queued_exports": 300,
        "max_queued_per_user": 50,
    }
    return make_settings(tmp_path / "data", sample_db, **(values | overrides))


async def test_concurrent_creates_with_duplicate_keys_answer_no_5xx_and_charge_once(
    tmp_path: Path, sample_db: Path
) -> None:
    """10 users each send, all at once, 2 creates without a key and the same create with one
    Idempotency-Key 4 times (60 requests). Must hold: no 5xx; every duplicate answers 202 or
    409 IdempotencyKeyInProgress naming the SAME export id; each user has exactly 3 exports,
    all Succeeded; the ledger has one debit per export and no refund; every balance is
    10 - 3; a later retry of each key replays the first answer."""
    settings = load_settings(tmp_path, sample_db)
    users = [f"user{n}" for n in range(10)]
    async with started(settings) as api:

        async def create(user: str, key: str | None) -> tuple[str, str | None, httpx.Response]:
            headers = auth(user) | ({"Idempotency-Key": key} if key else {})
            return user, key, await api.client.post("/v1/exports", json=MENU_BODY, headers=headers)

        calls = [create(u, None) for u in users for _ in range(2)]
        calls += [create(u, f"key-of-{u}") for u in users for _ in range(4)]
        answers = await asyncio.gather(*calls)

        assert [r.status_code for _, _, r in answers if r.status_code >= 500] == []
        ids_by_key: dict[tuple[str, str], set[str]] = {}
        exports: dict[str, str] = {}  # export id -> owner
        for user, key, response in answers:
            body = response.json()
            if response.status_code == 409:
                assert body["reason"] == "IdempotencyKeyInProgress", body
                assert response.headers["retry-after"] == "1"
                export_id = body["exportId"]
            else:
                assert response.status_code == 202, body
                export_id = body["id"]
            exports[export_id] = user
            if key is not None:
                ids_by_key.setdefault((user, key), set()).add(export_id)
        assert all(len(ids) == 1 for ids in ids_by_key.values()), ids_by_key
        assert Counter(exports.values()) == dict.fromkeys(users, 3)

        for export_id, owner in exports.items():
            done = await wait_for(api, export_id, lambda s: s["phase"] in TERMINAL, owner=owner)
            assert done["phase"] == "Succeeded", done
        for user in users:
            credits = await api.client.get("/v1/credits", headers=auth(user))
            assert credits.json()["balance"] == 7, (user, credits.json())
            again = await api.client.post(
                "/v1/exports",
                json=MENU_BODY,
                headers=auth(user) | {"Idempotency-Key": f"key-of-{user}"},
            )
            assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
            assert {again.json()["id"]} == ids_by_key[(user, f"key-of-{user}")]
    ledger = ledger_rows_sqlite(settings)
    assert Counter(kind for _, kind in ledger) == {"debit": len(exports)}
    assert {export_id for export_id, _ in ledger} == set(exports)


def ledger_rows_sqlite(settings: ApiSettings) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(settings.state_db_path) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT export_id, kind FROM credit_ledger")]


async def answered_within(call: Any) -> httpx.Response:
    """The response, which must come within OUTAGE_ANSWER_SECONDS (an outage must not hang)."""
    response: httpx.Response = await asyncio.wait_for(call, OUTAGE_ANSWER_SECONDS)
    return response


async def test_state_store_outage_while_an_export_runs_keeps_its_result(
    tmp_path: Path, sample_db: Path
) -> None:
    """PostgreSQL state on a server this test owns. An export runs; the server is stopped;
    while it is down, a status read and a create each get 503 StateUnavailable with
    Retry-After within 2 s (never 500, never a hang), and the exporter finishes, its result
    kept in the outbox. Started again: with no housekeeping run (hourly) the export ends
    Succeeded on its first attempt, with one debit and no refund in the ledger."""
    with private_postgres() as pg:
        settings = load_settings(
            tmp_path,
            sample_db,
            state_db_url=pg.url,
            readiness_interval_seconds=0.2,
            readiness_timeout_seconds=1.0,
        )
        body = ENDLESS_BODY | {"variables": {"n": 2_000_000}}
        async with started(settings) as api:
            created = await api.client.post("/v1/exports", json=body, headers=auth("alice"))
            assert created.status_code == 202, created.text
            export_id = created.json()["id"]
            await wait_for(api, export_id, lambda s: s["phase"] == "Running" and s.get("rows"))
            await asyncio.to_thread(pg.stop)
            try:
                for call in (
                    api.client.get(f"/v1/exports/{export_id}", headers=auth("alice")),
                    api.client.post("/v1/exports", json=MENU_BODY, headers=auth("bob")),
                ):
                    answer = await answered_within(call)
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["reason"] == "StateUnavailable"
                    assert answer.headers["retry-after"] == "1"
                    assert answer.headers["content-type"] == "application/problem+json"
                ready = await answered_within(api.client.get("/readyz"))
                outbox = ResultOutbox.of_data_dir(settings.data_dir)
                give_up = time.monotonic() + DEADLINE_SECONDS
                while not outbox.has(export_id):  # the exporter finished during the outage
                    assert time.monotonic() < give_up, "the export did not finish"
                    await asyncio.sleep(0.1)
            finally:
                await asyncio.to_thread(pg.start)
            # Just after the restart a read may still answer 503 while the pool reconnects.
            done = await wait_for(api, export_id, lambda s: s.get("phase") in TERMINAL)
            assert done["phase"] == "Succeeded" and done["attempts"] == 1, done
            assert done["rows"] == 2_000_000
            assert not outbox.has(export_id)
            assert (await api.client.get("/readyz")).status_code in (200, 503)
        with psycopg.connect(pg.url) as conn:
            ledger = conn.execute("SELECT export_id, kind FROM credit_ledger").fetchall()
        assert ledger == [(export_id, "debit")]
    assert ready.status_code == 503 and ready.json()["checks"]["state_db"] != "ok"


async def test_redis_down_leaves_creates_answered_and_the_replica_ready(
    tmp_path: Path, sample_db: Path
) -> None:
    """Rate limits in a Redis this test owns, which is then stopped. Must hold: creates are
    still answered 202 (the limiter fails open), and /readyz stays 200 with Redis named under
    ``degraded`` and the degraded metric at 1."""
    with private_redis() as redis_server:
        settings = load_settings(
            tmp_path,
            sample_db,
            rate_limits_enabled=True,
            redis_url=redis_server.url,
            readiness_interval_seconds=0.1,
            readiness_timeout_seconds=0.5,
        )
        async with started(settings) as api:
            ready = await api.client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["degraded"] == []
            redis_server.stop()
            created = await api.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
            assert created.status_code == 202, created.text
            give_up = time.monotonic() + DEADLINE_SECONDS
            while "redis" not in (await api.client.get("/readyz")).json()["degraded"]:
                assert time.monotonic() < give_up, "redis never reported degraded"
                await asyncio.sleep(0.1)
            degraded = await api.client.get("/readyz")
            assert degraded.status_code == 200, degraded.text
            assert degraded.json()["checks"]["state_db"] == "ok"
            metrics = (await api.client.get("/metrics")).text
            assert 'exportd_dependency_degraded{dependency="redis"} 1.0' in metrics
            done = await wait_for(api, created.json()["id"], lambda s: s["phase"] in TERMINAL)
            assert done["phase"] == "Succeeded"


async def test_start_up_removes_orphaned_temporary_and_staged_files(
    tmp_path: Path, sample_db: Path
) -> None:
    """A killed exporter's work directory in DATA_DIR/tmp, a staged ``.part`` file and an
    empty export folder in local storage, as a crash leaves them. Must hold: all three are
    gone once the API has started, and a published file beside them is untouched."""
    settings = load_settings(tmp_path, sample_db)
    work = settings.data_dir / "tmp" / "exp-killed.abc123"
    work.mkdir(parents=True)
    (work / "partial.xlsx").write_bytes(b"half a workbook")
    root = settings.storage.root
    assert root is not None
    staged_folder = root / "exports" / "exp-staged"
    staged_folder.mkdir(parents=True)
    staged = staged_folder / ".rows.csv.0123456789abcdef.part"
    staged.write_bytes(b"a,b\n")
    empty = root / "exports" / "exp-empty"
    empty.mkdir()
    kept = root / "exports" / "exp-done" / "done.csv"
    kept.parent.mkdir()
    kept.write_bytes(b"a,b\n1,2\n")
    async with started(settings) as api:
        assert (await api.client.get("/readyz")).status_code == 200
        assert not work.exists()
        assert not staged.exists() and not staged_folder.exists()
        assert not empty.exists()
        assert kept.read_bytes() == b"a,b\n1,2\n"


async def test_a_committed_record_the_runner_missed_is_swept_into_the_queue(
    tmp_path: Path, sample_db: Path
) -> None:
    """A create whose commit reached the database but whose answer was lost leaves a Pending
    record the runner was never told about. Must hold: the runner's periodic sweep (made
    short here) queues it and it ends Succeeded on its first attempt."""
    from exportd.contract.spec import ExportRequestBody, ExportSpec, new_export_id
    from exportd.store.base import ExportRecord

    settings = load_settings(tmp_path, sample_db)
    app = create_app(settings)
    backend = app.state.exportd.backend
    backend.runner.sweep_seconds = 0.2
    body = ExportRequestBody.model_validate(MENU_BODY)
    spec = ExportSpec.from_request(body, requested_by="alice", export_id=new_export_id())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        await backend.store.create(ExportRecord.new(spec))  # behind the runner's back
        api = Api(app, client, settings, "embedded")
        done = await wait_for(api, spec.id, lambda s: s["phase"] in TERMINAL)
        assert done["phase"] == "Succeeded" and done["attempts"] == 1, done
