"""Credits, queue limits and the event stream, on every backend (the shared API suite).

The embedded backend keeps its records in the state store, so its admission transaction counts
the queue and its status write refunds; the Kubernetes backend keeps them in ExportRequests, so
its one watch counts the unfinished requests and reports the ended ones for settling. What is
tried, on both: a failing and a cancelled export; a queue at its limit; following an export's
event stream. What must hold: the credits of the failed and cancelled exports come back and
the succeeded one's does not; a create past the queue limit is 503 with Retry-After, charges
nothing and creates nothing; the stream sends every state once, with ids, and ends right after
the terminal one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.conftest import (
    ENDLESS_BODY,
    MENU_BODY,
    Api,
    auth,
    wait_for,
)

pytestmark = pytest.mark.anyio
BROKEN_BODY = {"type": "brokenQuery", "fileName": "broken.csv", "variables": {}}
INITIAL_CREDITS = 5
SETTLE_SECONDS = 30.0


async def balance(api: Api, user: str) -> int:
    response = await api.client.get("/v1/credits", headers=auth(user))
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value


async def balance_becomes(api: Api, user: str, expected: int) -> None:
    """The Kubernetes backend settles from its watch, a moment after the phase is shown."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_SECONDS
    while (current := await balance(api, user)) != expected:
        assert loop.time() < give_up, f"balance stayed {current}, expected {expected}"
        await asyncio.sleep(0.05)


async def create(api: Api, body: dict[str, Any], user: str) -> str:
    response = await api.client.post("/v1/exports", json=body, headers=auth(user))
    assert response.status_code == 202, response.text
    export_id: str = response.json()["id"]
    return export_id


async def test_failed_and_cancelled_exports_give_their_credit_back(api: Api) -> None:
    failing = await create(api, BROKEN_BODY, "alice")
    running = await create(api, ENDLESS_BODY, "alice")
    succeeding = await create(api, MENU_BODY, "alice")
    assert await balance(api, "alice") == INITIAL_CREDITS - 3

    await wait_for(api, failing, lambda shown: shown["phase"] == "Failed")
    await wait_for(api, running, lambda shown: shown["phase"] == "Running")
    cancelled = await api.client.delete(f"/v1/exports/{running}", headers=auth("alice"))
    assert cancelled.json()["phase"] == "Cancelled"
    await wait_for(api, succeeding, lambda shown: shown["phase"] == "Succeeded")

    await balance_becomes(api, "alice", INITIAL_CREDITS - 1)


@pytest.mark.parametrize(
    "settings_overrides", [{"max_running_exports": 1, "max_queued_exports": 1}]
)
async def test_a_create_past_the_queue_limit_is_503_and_charges_nothing(api: Api) -> None:
    """One slot and a queue of one: alice's export runs, bob's waits, carol's is refused."""
    running = await create(api, ENDLESS_BODY, "alice")
    waiting = await create(api, ENDLESS_BODY, "bob")
    await wait_for(api, running, lambda shown: shown["phase"] == "Running")
    await wait_for(api, waiting, lambda s: s["phase"] == "Queued", owner="bob")
    records = api.records()

    refused = await api.client.post("/v1/exports", json=MENU_BODY, headers=auth("carol"))

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "QueueFull"
    assert int(refused.headers["retry-after"]) >= 1
    assert await balance(api, "carol") == INITIAL_CREDITS
    assert api.records() == records
    for export_id, user in ((running, "alice"), (waiting, "bob")):
        await api.client.delete(f"/v1/exports/{export_id}", headers=auth(user))


def status_events(stream: str) -> list[tuple[str, dict[str, Any]]]:
    """The (id, data) of every ``status`` message of an SSE body."""
    found = []
    for block in stream.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "status":
            found.append((fields["id"], json.loads(fields["data"])))
    return found


async def test_the_event_stream_follows_an_export_to_its_end(api: Api) -> None:
    export_id = await create(api, MENU_BODY, "alice")

    response = await api.client.get(f"/v1/exports/{export_id}/events", headers=auth("alice"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = status_events(response.text)
    ids = [event_id for event_id, _ in events]
    assert len(ids) == len(set(ids)), "a state was sent twice"
    assert events[-1][1]["phase"] == "Succeeded"
    assert events[-1][1]["percent"] == 100
    assert all(data["phase"] != "Succeeded" for _, data in events[:-1])
    assert response.text.rstrip().endswith("}")  # nothing after the terminal event

    resumed = await api.client.get(
        f"/v1/exports/{export_id}/events",
        headers=auth("alice") | {"Last-Event-ID": ids[-1]},
    )
    assert status_events(resumed.text) == []
