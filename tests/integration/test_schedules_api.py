"""Schedules in embedded mode: the /v1/schedules API and the server's scheduler, with a clock the
test moves (the scheduler's own timer is set to 60 s, so only the ticks the test asks for and
the one at each server start happen). Runs are real exports of the sample database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from exportd.api import create_app
from exportd.api.scheduler import Scheduler
from exportd.contract import exportrequest as er
from exportd.contract.catalog import Catalog
from exportd.ops import backup as backups
from exportd.ops import metrics
from exportd.store.base import store_from_settings
from exportd.store.schedules import ScheduleStore
from tests.integration.conftest import ENDLESS_BODY, MENU_BODY, auth, make_settings
from tests.integration.protect_harness import FakeClock, Harness, started_api
from tests.k8s.api import ClusterBackend
from tests.k8s.cluster import REQUESTS

pytestmark = pytest.mark.anyio
NOON = datetime(2099, 6, 1, 12, 0, tzinfo=UTC)
QUIET = {"schedule_tick_seconds": 60}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def create(h: Harness, body: dict[str, Any], sub: str = "alice") -> dict[str, Any]:
    response = await h.client.post("/v1/schedules", json=body, headers=auth(sub))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def show(h: Harness, schedule_id: str, sub: str = "alice") -> dict[str, Any]:
    response = await h.client.get(f"/v1/schedules/{schedule_id}", headers=auth(sub))
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


async def tick(h: Harness, now: datetime) -> None:
    h.clock.now = now
    scheduler: Scheduler = h.app.state.scheduler
    await scheduler.tick_all()


def counted(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def run_ids(h: Harness, schedule_id: str) -> set[str]:
    return {e["id"] for e in await h.exports_of("alice") if e["id"].startswith(schedule_id)}


async def test_embedded_schedule_fires_once_per_slot_across_restarts_and_catches_up_once(
    tmp_path: Path, sample_db: Path
) -> None:
    """Every 10 minutes from 12:00. Must hold: each slot makes exactly one export, with id
    <schedule>-<UTC YYYYMMDDHHMM>, however many ticks and server restarts happen; after the
    server was down over three slots its start runs only the latest one (two counted as missed
    slots); with a 60-s starting
    deadline a slot 5 minutes late is recorded as missed and nothing runs."""
    body = {"schedule": "*/10 * * * *", "timeZone": "UTC", "template": MENU_BODY}
    async with started_api(tmp_path, sample_db, now=NOON, **QUIET) as h:
        schedule = await create(h, body)
        sid = schedule["id"]
        assert schedule["nextScheduleTime"] == "2099-06-01T12:10:00Z"
        await tick(h, at("2099-06-01T12:09:59"))
        assert await run_ids(h, sid) == set()
        await tick(h, at("2099-06-01T12:10:05"))
        await tick(h, at("2099-06-01T12:10:30"))
        assert await run_ids(h, sid) == {f"{sid}-209906011210"}

    async with started_api(tmp_path, sample_db, now=at("2099-06-01T12:10:40"), **QUIET) as h:
        assert await run_ids(h, sid) == {f"{sid}-209906011210"}  # the start's tick: nothing due
        await tick(h, at("2099-06-01T12:20:01"))
        assert await run_ids(h, sid) == {f"{sid}-209906011210", f"{sid}-209906011220"}

    # Down from 12:20 to 12:55: slots 12:30, 12:40 and 12:50 passed; only 12:50 runs.
    missed_before = counted("exportd_schedule_missed_slots_total")
    async with started_api(tmp_path, sample_db, now=at("2099-06-01T12:55:00"), **QUIET) as h:
        assert await run_ids(h, sid) == {
            f"{sid}-209906011210",
            f"{sid}-209906011220",
            f"{sid}-209906011250",
        }
        assert counted("exportd_schedule_missed_slots_total") == missed_before + 2
        shown = await show(h, sid)
        assert shown["lastScheduleTime"] == "2099-06-01T12:50:00Z"
        assert shown["nextScheduleTime"] == "2099-06-01T13:00:00Z"
        update = {**body, "startingDeadlineSeconds": 60}
        response = await h.client.put(f"/v1/schedules/{sid}", json=update, headers=auth("alice"))
        assert response.status_code == 200, response.text

    async with started_api(tmp_path, sample_db, now=at("2099-06-01T13:05:00"), **QUIET) as h:
        shown = await show(h, sid)
        assert (shown["lastOutcome"], shown["lastReason"]) == ("missed", "StartingDeadlineExceeded")
        assert f"{sid}-209906011300" not in await run_ids(h, sid)
        assert shown["runs"][0]["slot"] == "2099-06-01T13:00:00Z"
        assert shown["runs"][0]["outcome"] == "missed"


async def test_forbid_skips_a_slot_while_a_run_is_active(tmp_path: Path, sample_db: Path) -> None:
    """A Forbid schedule whose run never ends by itself. Must hold: the next slot is skipped
    (recorded with reason RunActive), no second export starts, and the skipped slot does not
    run later when the first run ends."""
    body = {"schedule": "0 * * * *", "concurrencyPolicy": "Forbid", "template": ENDLESS_BODY}
    async with started_api(tmp_path, sample_db, now=NOON, **QUIET) as h:
        sid = (await create(h, body))["id"]
        await tick(h, at("2099-06-01T13:00:10"))
        first = f"{sid}-209906011300"
        assert await run_ids(h, sid) == {first}
        await tick(h, at("2099-06-01T14:00:10"))
        assert await run_ids(h, sid) == {first}
        shown = await show(h, sid)
        assert [(r["slot"], r["outcome"]) for r in shown["runs"]] == [
            ("2099-06-01T14:00:00Z", "skipped"),
            ("2099-06-01T13:00:00Z", "started"),
        ]
        assert shown["runs"][0]["reason"] == "RunActive"
        cancel = await h.client.delete(f"/v1/exports/{first}", headers=auth("alice"))
        assert cancel.status_code == 200, cancel.text
        await tick(h, at("2099-06-01T14:30:00"))
        assert await run_ids(h, sid) == {first}


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_a_run_refused_for_lack_of_credits_is_recorded_and_not_retried(
    tmp_path: Path, sample_db: Path, store_kind: str
) -> None:
    """The owner has one credit and earns none. Must hold: the first slot's run is charged
    and starts; the second is refused with reason InsufficientCredits, recorded on the schedule
    once (counted once in exportd_schedule_runs_total{outcome="refused"}), and further ticks
    before the next slot add no attempt (in both state stores)."""
    body = {"schedule": "0 * * * *", "template": MENU_BODY}
    async with started_api(
        tmp_path,
        sample_db,
        store_kind=store_kind,
        now=NOON,
        credits_initial=1,
        credits_per_day=0,
        **QUIET,
    ) as h:
        sid = (await create(h, body))["id"]
        await tick(h, at("2099-06-01T13:00:01"))
        assert await h.balance("alice") == 0
        refused_before = counted("exportd_schedule_runs_total", outcome="refused")
        for minute in (1, 2, 30):
            await tick(h, at("2099-06-01T14:00:00") + timedelta(minutes=minute))
        shown = await show(h, sid)
        assert (shown["lastOutcome"], shown["lastReason"]) == ("refused", "InsufficientCredits")
        assert [(r["outcome"], r.get("reason")) for r in shown["runs"]] == [
            ("refused", "InsufficientCredits"),
            ("started", None),
        ]
        assert await run_ids(h, sid) == {f"{sid}-209906011300"}
        assert counted("exportd_schedule_runs_total", outcome="refused") == refused_before + 1


async def test_schedules_are_owner_scoped_validated_and_can_pause_resume_and_run_now(
    tmp_path: Path, sample_db: Path
) -> None:
    """Must hold: another user's schedule is 404 for every verb and absent from their list;
    invalid bodies are 422 naming the field (schedule, timeZone, template.type,
    template.variables.a); run-now starts an export of the owner at once; a paused schedule
    runs nothing, and resume runs the latest slot passed meanwhile once; delete is 204."""
    body = {"schedule": "0 * * * *", "timeZone": "Europe/Berlin", "template": MENU_BODY}
    async with started_api(tmp_path, sample_db, now=NOON, **QUIET) as h:
        sid = (await create(h, body))["id"]
        path = f"/v1/schedules/{sid}"
        for method, url in [
            ("GET", path),
            ("PUT", path),
            ("DELETE", path),
            ("POST", f"{path}/pause"),
            ("POST", f"{path}/resume"),
            ("POST", f"{path}/run"),
        ]:
            response = await h.client.request(
                method, url, json=body if method == "PUT" else None, headers=auth("bob")
            )
            assert response.status_code == 404, (method, url, response.text)
        listed = await h.client.get("/v1/schedules", headers=auth("bob"))
        assert listed.json() == {"items": []}

        bad_variables = {**MENU_BODY, "variables": {"a": 5, "b": "muscle2"}}
        for bad, field in [
            ({**body, "schedule": "0 25 * * *"}, "schedule"),
            ({**body, "timeZone": "Mars/Olympus"}, "timeZone"),
            ({**body, "template": {**MENU_BODY, "type": "noSuchType"}}, "template.type"),
            ({**body, "template": bad_variables}, "template.variables.a"),
        ]:
            response = await h.client.post("/v1/schedules", json=bad, headers=auth("alice"))
            assert response.status_code == 422, response.text
            assert field in {e["field"] for e in response.json()["errors"]}, response.text

        run = await h.client.post(f"{path}/run", headers=auth("alice"))
        assert run.status_code == 202, run.text
        export_id = run.json()["exportId"]
        assert export_id == f"{sid}-209906011200"
        export = await h.client.get(f"/v1/exports/{export_id}", headers=auth("alice"))
        assert export.status_code == 200

        paused = await h.client.post(f"{path}/pause", headers=auth("alice"))
        assert paused.json()["suspend"] is True
        await tick(h, at("2099-06-01T14:00:30"))
        assert await run_ids(h, sid) == {export_id}
        resumed = await h.client.post(f"{path}/resume", headers=auth("alice"))
        assert resumed.json()["suspend"] is False
        await tick(h, at("2099-06-01T14:01:00"))
        await tick(h, at("2099-06-01T14:02:00"))
        assert await run_ids(h, sid) == {export_id, f"{sid}-209906011400"}

        assert (await h.client.delete(path, headers=auth("alice"))).status_code == 204
        assert (await h.client.get(path, headers=auth("alice"))).status_code == 404


async def test_daylight_saving_days_run_each_local_time_once(
    tmp_path: Path, sample_db: Path
) -> None:
    """A schedule at 02:30 Europe/Berlin. Must hold: on 2099-03-29 (02:00 -> 03:00, no 02:30)
    it runs once, at 03:30 CEST (01:30 UTC), the documented time; on 2099-10-25 (02:30 happens
    twice) it runs once, at the first 02:30 (00:30 UTC), not again at the second (01:30 UTC)."""
    body = {"schedule": "30 2 * * *", "timeZone": "Europe/Berlin", "template": MENU_BODY}
    async with started_api(tmp_path, sample_db, now=at("2099-03-28T12:00:00"), **QUIET) as h:
        spring = (await create(h, body))["id"]
        await tick(h, at("2099-03-29T01:29:59"))
        assert await run_ids(h, spring) == set()
        for moment in ("2099-03-29T01:30:05", "2099-03-29T02:30:05", "2099-03-29T12:00:00"):
            await tick(h, at(moment))
        assert await run_ids(h, spring) == {f"{spring}-209903290130"}

        h.clock.now = at("2099-10-24T12:00:00")
        autumn = (await create(h, body))["id"]
        for moment in ("2099-10-25T00:30:05", "2099-10-25T01:30:05", "2099-10-25T12:00:00"):
            await tick(h, at(moment))
        assert await run_ids(h, autumn) == {f"{autumn}-209910250030"}


async def test_api_schedules_on_the_kubernetes_backend_make_one_export_request_per_slot(
    tmp_path: Path, sample_db: Path
) -> None:
    """The API with the Kubernetes backend (emulator, real operator, kubelet). Must hold: a slot
    of an API schedule becomes one ExportRequest named by the run id, requested by the owner,
    however many ticks; the operator runs it, and the schedule shows the run Succeeded."""
    settings = make_settings(tmp_path / "data", sample_db, **QUIET)
    catalog = Catalog.load(settings.resolved_catalog_path)
    clock = FakeClock(NOON)
    app = create_app(settings, backend=ClusterBackend(settings, catalog), clock=clock)
    body = {"schedule": "0 * * * *", "template": MENU_BODY}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            h = Harness(app, client, settings, app.state.protection.store, clock)
            sid = (await create(h, body))["id"]
            await tick(h, at("2099-06-01T13:00:05"))
            await tick(h, at("2099-06-01T13:00:35"))
            cluster = app.state.exportd.backend.cluster
            run = f"{sid}-209906011300"
            assert [er.metadata(r)["name"] for r in cluster.api.all_of(REQUESTS)] == [run]
            request = await cluster.until_phase(run, "Succeeded")
            assert request["spec"]["requestedBy"] == "alice"
            shown = await show(h, sid)
            assert [(r["exportId"], r["phase"]) for r in shown["runs"]] == [(run, "Succeeded")]
            assert shown["lastSuccessfulTime"]


async def test_schedules_are_backed_up_and_restored(tmp_path: Path, sample_db: Path) -> None:
    """`exportd backup` keeps the API's schedules (spec and state) in schedules.jsonl; a
    restore into an empty store brings them back identical, and a second restore skips them."""
    body = {"schedule": "0 7 * * MON", "timeZone": "Europe/Berlin", "template": MENU_BODY}
    async with started_api(tmp_path, sample_db, now=NOON, **QUIET) as h:
        await create(h, body)
        await tick(h, at("2099-06-08T05:00:05"))  # Monday 07:00 Berlin: state moves on
        settings = h.settings
    summary = await backups.backup(settings, tmp_path / "backups")
    assert summary.schedules == 1

    target = make_settings(tmp_path / "target", sample_db)
    restored = await backups.restore(target, summary.path)
    assert (restored.schedules_restored, restored.schedules_skipped) == (1, 0)
    again = await backups.restore(target, summary.path)
    assert (again.schedules_restored, again.schedules_skipped) == (0, 1)

    stores = [store_from_settings(s) for s in (settings, target)]
    for store in stores:
        await store.open()
    try:
        source_schedules, target_schedules = [
            await schedule_store_of(store).list_schedules(None) for store in stores
        ]
    finally:
        for store in stores:
            await store.close()
    assert target_schedules == source_schedules
    assert source_schedules[0].state.last_schedule_time == at("2099-06-08T05:00:00")


def schedule_store_of(store: object) -> ScheduleStore:
    assert isinstance(store, ScheduleStore)
    return store
