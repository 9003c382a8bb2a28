"""The local runner through the API: queueing, cancel, retries, failures, shutdown, recovery.

Every export here is a real ``python -m exportd.exporter`` child process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from exportd.contract.spec import ExportSpec, ExportStatus, Phase, new_export_id, utc_now
from exportd.store.base import ExportRecord
from exportd.store.sqlite import SqliteStateStore
from tests.integration.conftest import (
    BACKEND_FACTORIES,
    ENDLESS_BODY,
    MENU_BODY,
    Api,
    auth,
    make_settings,
    wait_for,
)

pytestmark = pytest.mark.anyio


def running_with_rows(shown: dict[str, Any]) -> bool:
    return shown["phase"] == "Running" and (shown.get("rows") or 0) > 0


def published_path(api: Api, export_id: str, file_name: str) -> Path:
    root = api.settings.storage.root
    assert root is not None
    return root / "exports" / export_id / file_name


async def create(api: Api, body: dict[str, Any], owner: str = "alice") -> str:
    response = await api.client.post("/v1/exports", json=body, headers=auth(owner))
    assert response.status_code == 202, response.text
    export_id: str = response.json()["id"]
    return export_id


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


async def test_cancel_a_running_export(api: Api) -> None:
    """An export observed Running with growing rows is cancelled: DELETE answers Cancelled,
    the exporter process is gone, nothing exists at the final path, and a second DELETE is a
    harmless repeat."""
    export_id = await create(api, ENDLESS_BODY)
    await wait_for(api, export_id, running_with_rows)
    pid = None
    if api.backend_kind == "embedded":
        record = await api.app.state.exportd.backend.store.get(export_id)
        pid = record.pid
        assert pid is not None
    response = await api.client.delete(f"/v1/exports/{export_id}", headers=auth("alice"))
    assert response.status_code == 200, response.text
    assert response.json()["phase"] == "Cancelled"
    assert "url" not in response.json()
    assert pid is None or not pid_alive(pid)
    assert not published_path(api, export_id, "endless.csv").exists()
    again = await api.client.delete(f"/v1/exports/{export_id}", headers=auth("alice"))
    assert again.status_code == 200 and again.json()["phase"] == "Cancelled"


@pytest.mark.parametrize("settings_overrides", [{"max_running_exports": 1}])
async def test_one_slot_queues_fifo_with_current_positions(api: Api) -> None:
    """With one slot: A runs, B and C wait as Queued 1 and 2; cancelling B moves C to 1;
    cancelling A lets C run to success."""
    a = await create(api, ENDLESS_BODY)
    await wait_for(api, a, lambda s: s["phase"] == "Running")
    b = await create(api, MENU_BODY)
    c = await create(api, MENU_BODY)
    await wait_for(api, b, lambda s: s["phase"] == "Queued" and s["queuePosition"] == 1)
    await wait_for(api, c, lambda s: s["phase"] == "Queued" and s["queuePosition"] == 2)
    assert (await api.client.delete(f"/v1/exports/{b}", headers=auth("alice"))).status_code == 200
    await wait_for(api, c, lambda s: s["phase"] == "Queued" and s["queuePosition"] == 1)
    assert (await api.client.delete(f"/v1/exports/{a}", headers=auth("alice"))).status_code == 200
    done = await wait_for(api, c, lambda s: s["phase"] == "Succeeded")
    assert "queuePosition" not in done and done["attempts"] == 1


@pytest.mark.parametrize("settings_overrides", [{"sync_wait_seconds": 0.5}])
async def test_post_export_past_the_wait_answers_202_accepted(api: Api) -> None:
    """POST /export on an export that outlasts sync_wait_seconds: 202 with exactly status,
    id and statusUrl; the status URL shows it still working."""
    response = await api.client.post("/export", json=ENDLESS_BODY, headers=auth("alice"))
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"status", "id", "statusUrl"} and body["status"] == "accepted"
    assert body["statusUrl"] == f"http://testserver/v1/exports/{body['id']}"
    await api.client.delete(f"/v1/exports/{body['id']}", headers=auth("alice"))


async def test_a_permanent_failure_is_not_retried(api: Api) -> None:
    """A query error (exit 3): POST /export answers a problem with the exporter's reason;
    the export is Failed after exactly one attempt."""
    body = {"type": "brokenQuery", "fileName": "b.csv"}
    response = await api.client.post("/export", json=body, headers=auth("alice"))
    assert response.status_code == 500
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["reason"] == "QueryError" and "no_such_table" in problem["detail"]
    shown = await wait_for(api, problem["exportId"], lambda s: s["phase"] == "Failed")
    assert shown["attempts"] == 1 and shown["error"]["reason"] == "QueryError"


@pytest.mark.parametrize("settings_overrides", [{"max_attempts": 2}])
async def test_a_transient_failure_is_retried_up_to_max_attempts(api: Api) -> None:
    """A source that is unavailable (exit 75) is run max_attempts times, then Failed with the
    exporter's reason and the count in the message."""
    export_id = await create(api, {"type": "missingSource", "fileName": "m.csv"})
    shown = await wait_for(api, export_id, lambda s: s["phase"] == "Failed")
    assert shown["attempts"] == 2
    assert shown["error"]["reason"] == "SourceUnavailable"
    assert "2 attempts" in shown["error"]["message"]


async def test_shutdown_gives_running_exports_back_without_charging_an_attempt(
    tmp_path: Path, sample_db: Path
) -> None:
    """Stopping the app (lifespan exit) while an export runs: the child is stopped and the
    record is Pending again with its attempt returned, ready for the next start. (Embedded
    runner bookkeeping; the operator's restart behaviour has its own tests.)"""
    import httpx

    settings = make_settings(tmp_path / "data", sample_db)
    app = BACKEND_FACTORIES["embedded"](settings)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        api = Api(app, client, settings, "embedded")
        export_id = await create(api, ENDLESS_BODY)
        await wait_for(api, export_id, running_with_rows)
        await client.aclose()
    store = SqliteStateStore(settings.state_db_path)
    await store.open()
    record = await store.get(export_id)
    await store.close()
    assert record is not None
    assert (record.phase, record.status.attempts, record.pid) == (Phase.PENDING, 0, None)


def _record(status: ExportStatus, owner: str = "alice") -> ExportRecord:
    spec = ExportSpec(
        id=new_export_id(),
        type="menuCategoriesByMuscle",
        format="csv",
        file_name="menus.csv",
        variables={"a": "muscle1", "b": "muscle2"},
        requested_by=owner,
        requested_at=utc_now(),
    )
    return ExportRecord.new(spec, status)


async def test_start_resumes_waiting_and_orphaned_records(tmp_path: Path, sample_db: Path) -> None:
    """Records left by a dead API: Queued and Pending ones run; Running ones without a process
    run again with the attempt the crash interrupted given back (attempt 1 again, and a record
    at its last attempt is not failed); a Running one whose result was kept in the outbox and
    whose file is stored is recorded Succeeded from it, without running again.
    (Seeds the embedded SQLite store, the outbox and the storage directly.)"""
    import httpx

    from exportd.store.outbox import ResultOutbox
    from tests.specs import small_result

    settings = make_settings(tmp_path / "data", sample_db, max_attempts=2)
    store = SqliteStateStore(settings.state_db_path)
    await store.open()
    queued = await store.create(_record(ExportStatus(phase=Phase.QUEUED, queue_position=1)))
    pending = await store.create(_record(ExportStatus(phase=Phase.PENDING)))
    orphan = await store.create(_record(ExportStatus(phase=Phase.RUNNING, attempts=1)))
    last = await store.create(_record(ExportStatus(phase=Phase.RUNNING, attempts=2)))
    finished = await store.create(_record(ExportStatus(phase=Phase.RUNNING, attempts=1)))
    await store.close()
    key = finished.spec.object_key
    root = settings.storage.root
    assert root is not None
    (root / key).parent.mkdir(parents=True)
    (root / key).write_bytes(b"a,b\n1,2\n")
    kept = small_result(key, size=8)
    ResultOutbox.of_data_dir(settings.data_dir).put(finished.id, kept)

    app = BACKEND_FACTORIES["embedded"](settings)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        api = Api(app, client, settings, "embedded")
        for record in (queued, pending, orphan):
            done = await wait_for(api, record.id, lambda s: s["phase"] == "Succeeded")
            assert done["attempts"] == 1
        again = await wait_for(api, last.id, lambda s: s["phase"] == "Succeeded")
        assert again["attempts"] == 2
        settled = await wait_for(api, finished.id, lambda s: s["phase"] == "Succeeded")
        assert (settled["attempts"], settled["rows"], settled["bytes"]) == (1, 1, 8)
        assert not ResultOutbox.of_data_dir(settings.data_dir).has(finished.id)
        await client.aclose()
