"""The API's one ExportRequest watch, fed events directly (no server): what it counts as in
flight, which ends it reports for settling (once each), and whom it wakes.

The same watch runs against the emulator in the API suite on the Kubernetes backend
(tests/integration/test_api_accounting.py); here each rule is pinned on its own.
"""

from __future__ import annotations

from typing import Any

import pytest

from exportd.api.backends.kube_watch import ExportRequestWatch, OnFinished
from exportd.contract import exportrequest as er
from exportd.contract.spec import Phase
from exportd.store.events import RecordEvents

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(name: str, requester: str, phase: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": er.API_VERSION,
        "kind": er.KIND,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"requestedBy": requester},
    }
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


class Recorder:
    def __init__(self) -> None:
        self.ended: list[tuple[str, str, Phase]] = []

    async def __call__(self, name: str, requester: str, phase: Phase) -> None:
        self.ended.append((name, requester, phase))


def watch_with(on_finished: OnFinished, events: RecordEvents | None = None) -> ExportRequestWatch:
    def no_client() -> Any:
        raise AssertionError("these tests feed events; no call may reach a cluster")

    return ExportRequestWatch(no_client, "ns", events or RecordEvents(), on_finished=on_finished)


async def test_unfinished_requests_are_counted_per_requester_until_they_end() -> None:
    recorder = Recorder()
    watch = watch_with(recorder)
    await watch.apply_event("ADDED", request("a1", "alice"))
    await watch.apply_event("ADDED", request("a2", "alice", "Queued"))
    await watch.apply_event("ADDED", request("b1", "bob", "Running"))
    assert (watch.in_flight.count("alice"), watch.in_flight.count()) == (2, 3)

    await watch.apply_event("MODIFIED", request("a1", "alice", "Succeeded"))
    await watch.apply_event("DELETED", request("b1", "bob", "Running"))

    assert (watch.in_flight.count("alice"), watch.in_flight.count()) == (1, 1)
    assert watch.in_flight.count("bob") == 0


async def test_each_end_is_reported_once_and_an_unfinished_deletion_is_a_cancel() -> None:
    recorder = Recorder()
    watch = watch_with(recorder)
    failed = request("f1", "alice", "Failed")
    await watch.apply_event("ADDED", failed)
    await watch.apply_event("MODIFIED", failed)  # e.g. housekeeping touches it later
    await watch.apply_event("DELETED", request("r1", "bob", "Running"))
    await watch.apply_event("DELETED", failed)

    assert recorder.ended == [("f1", "alice", Phase.FAILED), ("r1", "bob", Phase.CANCELLED)]


async def test_a_failed_settlement_is_tried_again_on_the_next_event() -> None:
    attempts: list[str] = []

    async def flaky(name: str, requester: str, phase: Phase) -> None:
        attempts.append(name)
        if len(attempts) == 1:
            raise RuntimeError("the state store is down")

    watch = watch_with(flaky)
    failed = request("f1", "alice", "Failed")
    await watch.apply_event("MODIFIED", failed)
    await watch.apply_event("MODIFIED", failed)
    await watch.apply_event("MODIFIED", failed)
    assert attempts == ["f1", "f1"]


async def test_a_request_submitted_counts_before_its_event_arrives() -> None:
    watch = watch_with(Recorder())
    watch.submitted("a1", "alice")
    assert watch.in_flight.count("alice") == 1
    await watch.apply_event("ADDED", request("a1", "alice"))
    assert watch.in_flight.count() == 1  # the event does not count it twice


async def test_every_event_wakes_the_waiters_of_that_request_only() -> None:
    events = RecordEvents()
    watch = watch_with(Recorder(), events)
    with events.subscribe("a1") as mine, events.subscribe("b1") as other:
        await watch.apply_event("MODIFIED", request("a1", "alice", "Running"))
        assert mine.is_set() and not other.is_set()
        events.publish_all()
        assert other.is_set()
