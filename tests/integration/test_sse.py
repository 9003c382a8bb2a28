"""``GET /v1/exports/{id}/events`` against a real embedded server, read with httpx streaming.

What is tried: following exports that succeed, fail, run until cancelled, and wait in the queue;
reconnecting with ``Last-Event-ID`` (current, stale, terminal); other users and no token.
What must hold: every status event has an id and the export's state; the stream ends right after
the terminal phase's event; a resumed stream never repeats the state the client last saw and
sends every newer one; heartbeats arrive while nothing changes; ownership and the token are
enforced before any stream starts.

The server runs one export at a time (so a second export waits in the queue) and sends a
heartbeat after 0.2 s of quiet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.integration.conftest import ENDLESS_BODY, SEED_BODY

pytestmark = pytest.mark.integration

TERMINAL = {"Succeeded", "Failed", "Cancelled"}


@dataclass
class Message:
    """One SSE message: its fields, its data (JSON) or, for a comment line, the comment."""

    fields: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    comment: str | None = None

    @property
    def is_status(self) -> bool:
        return self.fields.get("event") == "status"


def read_messages(response: httpx.Response) -> Iterator[Message]:
    message = Message()
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield Message(comment=line[1:].strip())
        elif line == "":
            if message.fields or data:
                message.data = json.loads("\n".join(data)) if data else None
                yield message
            message, data = Message(), []
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                message.fields[name] = value


@pytest.fixture(scope="module")
def sse_server(tmp_path_factory: pytest.TempPathFactory, sample_db: Path) -> Iterator[Server]:
    env = {
        "EXPORTD_MAX_RUNNING_EXPORTS": "1",
        "EXPORTD_EVENTS_HEARTBEAT_SECONDS": "0.2",
        "EXPORTD_CREDITS_ENABLED": "false",
    }
    server = Server(tmp_path_factory.mktemp("sse") / "data", sample_db, env)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def client(sse_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sse_server.base_url, timeout=httpx.Timeout(60)) as opened:
        yield opened


def create(server: Server, client: httpx.Client, body: dict[str, Any], sub: str = "alice") -> str:
    answer = client.post("/v1/exports", json=body, headers=server.headers(sub))
    assert answer.status_code == 202, answer.text
    export_id: str = answer.json()["id"]
    return export_id


def events_request(
    server: Server, export_id: str, *, sub: str = "alice", last_event_id: str | None = None
) -> dict[str, Any]:
    headers = {**server.headers(sub), "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return {"method": "GET", "url": f"/v1/exports/{export_id}/events", "headers": headers}


def whole_stream(
    server: Server, client: httpx.Client, export_id: str, **kwargs: Any
) -> list[Message]:
    """Every message until the server ends the stream (the read timeout guards a hang)."""
    with client.stream(**events_request(server, export_id, **kwargs)) as response:
        assert response.status_code == 200, response.read()
        return list(read_messages(response))


def statuses(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.is_status]


def cancel(server: Server, client: httpx.Client, export_id: str) -> None:
    answer = client.delete(f"/v1/exports/{export_id}", headers=server.headers())
    assert answer.status_code in (200, 409), answer.text


def test_the_stream_of_a_succeeding_export_ends_after_its_succeeded_event(
    sse_server: Server, client: httpx.Client
) -> None:
    """The seed export followed from its start: a retry hint first, then status events with
    distinct ids, phases only moving forward, the last one Succeeded at 100 % with the link and
    40,000 rows, and then the server closes the stream."""
    export_id = create(sse_server, client, SEED_BODY)
    with client.stream(**events_request(sse_server, export_id)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        messages = list(read_messages(response))

    assert messages[0].fields == {"retry": "2000"}
    events = statuses(messages)
    ids = [m.fields["id"] for m in events]
    assert len(ids) == len(set(ids)) and all(ids)
    order = ["Pending", "Queued", "Running", "Succeeded"]
    phases = [m.data["phase"] for m in events if m.data]
    assert phases == sorted(phases, key=order.index)
    last = events[-1].data
    assert last is not None
    assert last["phase"] == "Succeeded" and last["percent"] == 100
    assert last["rows"] == 40_000 and last["id"] == export_id
    assert last["url"].startswith(f"{sse_server.base_url}/v1/files/")
    assert messages[-1] is events[-1]


def test_the_stream_of_a_failing_export_ends_with_the_failure_and_its_reason(
    sse_server: Server, client: httpx.Client
) -> None:
    """A query that cannot run: the last event is Failed with its error, then the stream ends."""
    export_id = create(sse_server, client, {"type": "brokenQuery", "fileName": "b.csv"})
    events = statuses(whole_stream(sse_server, client, export_id))
    last = events[-1].data
    assert last is not None and last["phase"] == "Failed"
    assert last["error"]["reason"] and "no_such_table" in last["error"]["message"]
    assert "percent" not in last and "url" not in last


def first_running_with_rows(messages: Iterator[Message]) -> Message:
    for message in messages:
        if message.is_status and message.data and message.data.get("rows"):
            return message
    raise AssertionError("the stream ended before the export reported rows")


def test_last_event_id_resumes_after_the_state_seen_and_the_stream_ends_when_cancelled(
    sse_server: Server, client: httpx.Client
) -> None:
    """Drop the stream of a running export after a progress event; reconnect with its id: the
    first event is a newer state (never the one seen), and the stream goes on until Cancelled,
    then ends. Reconnecting with the Cancelled id gives no event at all; with a stale id or none,
    exactly the Cancelled event again, under the same id."""
    export_id = create(sse_server, client, ENDLESS_BODY)
    try:
        with client.stream(**events_request(sse_server, export_id)) as response:
            seen = first_running_with_rows(read_messages(response))
        assert seen.data is not None
        with client.stream(
            **events_request(sse_server, export_id, last_event_id=seen.fields["id"])
        ) as response:
            messages = read_messages(response)
            resumed = first_running_with_rows(messages)
            assert resumed.fields["id"] != seen.fields["id"]
            assert resumed.data is not None and resumed.data["rows"] > seen.data["rows"]
            cancel(sse_server, client, export_id)
            rest = statuses(list(messages))
    finally:
        cancel(sse_server, client, export_id)

    assert rest and rest[-1].data is not None and rest[-1].data["phase"] == "Cancelled"
    assert all(m.data and m.data["phase"] in {"Running", "Cancelled"} for m in rest)
    cancelled_id = rest[-1].fields["id"]

    after_end = whole_stream(sse_server, client, export_id, last_event_id=cancelled_id)
    assert statuses(after_end) == []
    for last_event_id in (seen.fields["id"], None):
        again = statuses(whole_stream(sse_server, client, export_id, last_event_id=last_event_id))
        assert [m.fields["id"] for m in again] == [cancelled_id]


def test_a_queued_export_gets_heartbeats_while_nothing_changes(
    sse_server: Server, client: httpx.Client
) -> None:
    """With the one slot taken by an endless export, a second one waits Queued: its stream
    shows the queue position, then heartbeat comments and no status event until it is
    cancelled, after which it sends Cancelled and ends."""
    running = create(sse_server, client, ENDLESS_BODY)
    try:
        waiting = create(sse_server, client, {**ENDLESS_BODY, "fileName": "second.csv"})
        with client.stream(**events_request(sse_server, waiting)) as response:
            messages = read_messages(response)
            for message in messages:
                if message.is_status and message.data and message.data["phase"] == "Queued":
                    assert message.data["queuePosition"] == 1
                    assert message.data["percent"] == 0
                    break
            quiet = [next(messages), next(messages)]
            assert [m.comment for m in quiet] == ["heartbeat", "heartbeat"]
            cancel(sse_server, client, waiting)
            rest = statuses(list(messages))
        assert [m.data["phase"] for m in rest if m.data] == ["Cancelled"]
    finally:
        cancel(sse_server, client, running)


def test_another_users_export_is_404_and_no_token_is_401_before_any_stream(
    sse_server: Server, client: httpx.Client
) -> None:
    """Bob asks for Alice's stream: 404, exactly as for an id that does not exist; without a
    token: 401 with a bearer challenge. Both are problem+json, not event streams."""
    export_id = create(sse_server, client, {"type": "brokenQuery", "fileName": "c.csv"})
    for request in (
        events_request(sse_server, export_id, sub="bob"),
        events_request(sse_server, "exp-does-not-exist"),
    ):
        answer = client.request(**request)
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
    anonymous = client.get(f"/v1/exports/{export_id}/events")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
