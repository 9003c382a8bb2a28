"""ExportSchedules against the emulator with the real operator and a clock the test moves.

The operator's schedule timer ticks every 0.3 s of real time but reads the test's clock, so
"five minutes later" is one assignment. Runs are ordinary ExportRequests that the operator and the
test kubelet really execute (a CSV from the sample database).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from exportd.contract import exportrequest as er
from exportd.contract import exportschedule as es
from exportd.contract.cron import Timetable
from exportd.contract.schedule import run_name
from exportd.contract.spec import utc_now
from tests.integration.protect_harness import FakeClock
from tests.integration.test_operator_kubectl import columns, kubectl_binary  # noqa: F401
from tests.k8s.cluster import NAMESPACE, REQUESTS, LocalCluster
from tests.k8s.fixtures import anyio_backend_fixture, cluster_fixture  # noqa: F401
from tests.k8s.kubectl import Kubectl

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SCHEDULES = f"{er.GROUP}/{er.VERSION}/{es.PLURAL}"
SCHEDULES_URL = f"/apis/{er.GROUP}/{er.VERSION}/namespaces/{NAMESPACE}/{es.PLURAL}"
NAME = "menus-every-5"
CRON = "*/5 * * * *"
TICK = 0.3
EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "exportschedule-weekly-menus.yaml"
TEMPLATE = {
    "type": "menuCategoriesByMuscle",
    "fileName": "menus.csv",
    "variables": {"a": "muscle1", "b": "muscle2"},
}


def example_status(cluster: LocalCluster) -> dict[str, Any]:
    found = cluster.api.current(SCHEDULES, NAMESPACE, "weekly-menus") or {}
    return dict(found.get("status") or {})


def schedule(cluster: LocalCluster) -> dict[str, Any]:
    body = cluster.api.current(SCHEDULES, NAMESPACE, NAME)
    assert body is not None
    return body


def status(cluster: LocalCluster) -> dict[str, Any]:
    found: dict[str, Any] = schedule(cluster).get("status") or {}
    return found


def run_names(cluster: LocalCluster) -> set[str]:
    return {str(er.metadata(r)["name"]) for r in cluster.api.all_of(REQUESTS)}


async def patch_schedule(cluster: LocalCluster, patch: dict[str, Any], sub: str = "") -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    url = f"{SCHEDULES_URL}/{NAME}{sub}"
    async with cluster.session.patch(url, json=patch, headers=headers) as response:
        assert response.status == 200, await response.text()


async def test_operator_runs_one_request_per_slot_across_restarts_and_prunes_history(
    cluster: LocalCluster,
    kubectl_binary: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A schedule every 5 minutes (successfulHistoryLimit 1) is applied; the clock is moved to
    each slot in turn. Must hold: each slot makes exactly one ExportRequest named
    <schedule>-<UTC YYYYMMDDHHMM>, owned by the schedule, which really runs; the older finished run
    is pruned; an operator restart that lost the status write makes no second request for the
    slot; after downtime over three slots exactly one catch-up run (the latest slot) is made; a
    slot later than startingDeadlineSeconds is missed, not run; `kubectl get exportschedules`
    shows Schedule, TimeZone, Suspend, Last, Next and Age; deploy/examples' schedule applied with
    kubectl is accepted and scheduled."""
    clock = FakeClock(utc_now())
    operator = await cluster.start_operator(clock, schedule_tick_seconds=TICK)
    body = {
        "apiVersion": er.API_VERSION,
        "kind": es.KIND,
        "metadata": {"name": NAME},
        "spec": {
            "schedule": CRON,
            "timeZone": "UTC",
            "suspend": False,
            "successfulHistoryLimit": 1,
            "template": TEMPLATE,
        },
    }
    async with cluster.session.post(SCHEDULES_URL, json=body) as response:
        assert response.status == 201, await response.text()
    created = er.parse_time(er.metadata(schedule(cluster))["creationTimestamp"])
    assert created is not None
    timetable = Timetable.of(CRON, "UTC")
    slot1 = timetable.next_after(max(created, clock.now))
    assert slot1 is not None
    await cluster.until(lambda: status(cluster).get("nextScheduleTime") == er.rfc3339(slot1))
    assert run_names(cluster) == set()  # nothing due yet

    # A schedule the CRD's patterns let through but the operator refuses, naming the field.
    bad = {**body, "metadata": {"name": "bad-zone"}}
    bad["spec"] = {**body["spec"], "timeZone": "Mars/Olympus_Mons"}
    async with cluster.session.post(SCHEDULES_URL, json=bad) as response:
        assert response.status == 201, await response.text()

    def refusal() -> dict[str, Any]:
        found = cluster.api.current(SCHEDULES, NAMESPACE, "bad-zone") or {}
        return dict(found.get("status") or {})

    await cluster.until(lambda: refusal().get("reason") == "InvalidSpec")
    assert refusal()["message"].startswith("spec.timeZone: ")
    assert refusal()["conditions"][0]["status"] == "False"

    # Slot 1, then slot 2: one run each, really executed; the first is pruned (limit 1).
    first, second = run_name(NAME, slot1), run_name(NAME, slot1 + timedelta(minutes=5))
    clock.now = slot1 + timedelta(seconds=20)
    run = await cluster.until_phase(first, "Succeeded")
    owners = er.metadata(run)["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        (es.KIND, NAME, er.metadata(schedule(cluster))["uid"])
    ]
    assert run["spec"]["requestedAt"] == er.rfc3339(slot1)
    clock.now = slot1 + timedelta(minutes=5, seconds=20)
    await cluster.until_phase(second, "Succeeded")
    await cluster.until(lambda: run_names(cluster) == {second})
    assert status(cluster)["lastScheduleTime"] == er.rfc3339(slot1 + timedelta(minutes=5))
    assert status(cluster)["lastSuccessfulTime"]
    jobs_before = len(cluster.jobs())

    # Restart after a crash between creating the run and recording it: no second request.
    await operator.stop()
    await patch_schedule(cluster, {"status": {"lastSlotTime": None}}, "/status")
    operator = await cluster.start_operator(clock, schedule_tick_seconds=TICK)
    await cluster.until(lambda: status(cluster).get("lastSlotTime") is not None)
    assert run_names(cluster) == {second}
    assert len(cluster.jobs()) == jobs_before

    # Down over slots 3, 4 and 5: one catch-up run, for slot 5.
    await operator.stop()
    slot5 = slot1 + timedelta(minutes=20)
    clock.now = slot5 + timedelta(minutes=2)
    operator = await cluster.start_operator(clock, schedule_tick_seconds=TICK)
    await cluster.until_phase(run_name(NAME, slot5), "Succeeded")
    await cluster.until(lambda: run_names(cluster) == {run_name(NAME, slot5)})
    assert status(cluster)["lastScheduleTime"] == er.rfc3339(slot5)

    # Slot 6 comes 90 s late with a 60-s starting deadline: missed, nothing runs.
    slot6 = slot5 + timedelta(minutes=5)
    await patch_schedule(cluster, {"spec": {"startingDeadlineSeconds": 60}})
    clock.now = slot6 + timedelta(seconds=90)
    await cluster.until(lambda: status(cluster).get("lastSlotTime") == er.rfc3339(slot6))
    assert status(cluster)["lastOutcome"] == "missed"
    assert run_names(cluster) == {run_name(NAME, slot5)}

    # The GitOps example, applied as users apply it: accepted, and scheduled by the operator.
    kubectl = Kubectl(kubectl_binary, tmp_path / "home", cluster.url)
    applied = await kubectl.run("apply", "--validate=false", "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    weekly = Timetable.of("0 7 * * MON", "Europe/Berlin").next_after(clock.now)
    assert weekly is not None
    await cluster.until(
        lambda: example_status(cluster).get("nextScheduleTime") == er.rfc3339(weekly)
    )
    await operator.stop()

    listed = await kubectl.run("get", "exportschedules", NAME)
    assert listed.returncode == 0, listed.stderr
    shown = columns(listed.stdout)
    assert shown | {"AGE": ""} == {
        "NAME": NAME,
        "SCHEDULE": CRON,
        "TIMEZONE": "UTC",
        "SUSPEND": "false",
        "LAST": shown["LAST"],
        "NEXT": er.rfc3339(slot6 + timedelta(minutes=5)),
        "AGE": "",
    }
    assert shown["LAST"] and shown["LAST"] != "<none>"


async def test_operator_forbid_skips_and_replace_cancels_the_active_run(
    cluster: LocalCluster,
) -> None:
    """A schedule whose runs never end by themselves (endless rows), first with Forbid, then
    with Replace. Must hold: with Forbid the next slot makes no request while the first runs
    (lastOutcome skipped); with Replace the following slot cancels the running request
    (spec.cancel, it ends Cancelled) and creates its own."""
    clock = FakeClock(utc_now())
    operator = await cluster.start_operator(clock, schedule_tick_seconds=TICK)
    template = {"type": "endlessRows", "fileName": "rows.csv", "variables": {"n": 10**12}}
    body = {
        "apiVersion": er.API_VERSION,
        "kind": es.KIND,
        "metadata": {"name": NAME},
        "spec": {"schedule": CRON, "concurrencyPolicy": "Forbid", "template": template},
    }
    async with cluster.session.post(SCHEDULES_URL, json=body) as response:
        assert response.status == 201, await response.text()
    created = er.parse_time(er.metadata(schedule(cluster))["creationTimestamp"])
    assert created is not None
    slot1 = Timetable.of(CRON, "UTC").next_after(max(created, clock.now))
    assert slot1 is not None
    first = run_name(NAME, slot1)
    clock.now = slot1 + timedelta(seconds=10)
    await cluster.until_phase(first, "Running")

    slot2 = slot1 + timedelta(minutes=5)
    clock.now = slot2 + timedelta(seconds=10)
    await cluster.until(lambda: status(cluster).get("lastSlotTime") == er.rfc3339(slot2))
    assert status(cluster)["lastOutcome"] == "skipped"
    assert run_names(cluster) == {first}

    await patch_schedule(cluster, {"spec": {"concurrencyPolicy": "Replace"}})
    slot3 = slot2 + timedelta(minutes=5)
    clock.now = slot3 + timedelta(seconds=10)
    await cluster.until_phase(first, "Cancelled")
    third = run_name(NAME, slot3)
    await cluster.until(lambda: cluster.request(third) is not None)
    assert run_names(cluster) == {first, third}
    await cluster.patch_request(third, {"spec": {"cancel": True}})  # stop the endless run
    await cluster.until_phase(third, "Cancelled")
    await operator.stop()
