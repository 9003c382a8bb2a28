"""Rate limits (429 per user and per IP, with the IETF RateLimit fields), the 64 KB body limit
(413), and throttling (per-user slots, queue positions, 503 when the queue is full, nothing
charged)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from exportd.contract.catalog import STRING_MAX_DEFAULT
from tests.integration.conftest import ENDLESS_BODY, SEED_BODY, Api, auth, wait_for
from tests.integration.protect_harness import Harness, started_api

pytestmark = pytest.mark.anyio
FIELD_ITEM = re.compile(r'^"(?P<name>[a-z-]+)";(?P<params>[a-z]=\d+(;[a-z]=\d+)*)$')


def parse_field(value: str) -> dict[str, dict[str, int]]:
    """A RateLimit / RateLimit-Policy list as {policy: {param: value}}; fails on bad syntax."""
    parsed = {}
    for item in value.split(", "):
        match = FIELD_ITEM.match(item)
        assert match, f"not a structured-field list item: {item!r}"
        params = dict(p.split("=") for p in match["params"].split(";"))
        parsed[match["name"]] = {k: int(v) for k, v in params.items()}
    return parsed


def assert_429(response: Any, policy: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == "RateLimited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    state = parse_field(response.headers["ratelimit"])
    assert state[policy]["r"] == 0 and 1 <= state[policy]["t"] <= 60
    assert policy in parse_field(response.headers["ratelimit-policy"])


async def test_reads_over_the_per_user_limit_are_429_with_the_fields(
    tmp_path: Path, sample_db: Path
) -> None:
    """read 3/minute per user: Alice's answers count r=2,1,0 down; the 4th is 429 with
    Retry-After and the exhausted read-user policy; Bob, same IP, is still served."""
    async with started_api(tmp_path, sample_db, rate_limit_read_per_user="3/minute") as h:
        remaining = []
        for _ in range(3):
            answer = await h.client.get("/v1/credits", headers=auth("alice"))
            assert answer.status_code == 200
            policy = parse_field(answer.headers["ratelimit-policy"])
            assert policy["read-user"] == {"q": 3, "w": 60}
            remaining.append(parse_field(answer.headers["ratelimit"])["read-user"]["r"])
        assert remaining == [2, 1, 0]
        assert_429(await h.client.get("/v1/credits", headers=auth("alice")), "read-user")
        assert (await h.client.get("/v1/credits", headers=auth("bob"))).status_code == 200


async def test_one_ip_is_limited_across_users(tmp_path: Path, sample_db: Path) -> None:
    """read 4/minute per IP: four different users from one address, the fifth is 429 on the
    read-ip policy."""
    async with started_api(tmp_path, sample_db, rate_limit_read_per_ip="4/minute") as h:
        for user in ("u1", "u2", "u3", "u4"):
            assert (await h.client.get("/v1/credits", headers=auth(user))).status_code == 200
        assert_429(await h.client.get("/v1/credits", headers=auth("u5")), "read-ip")


async def test_creating_has_its_own_budget_apart_from_reading(
    tmp_path: Path, sample_db: Path
) -> None:
    """create 2/minute per user: the third create is 429 (create-user) and charges nothing,
    while Alice's reads still pass."""
    async with started_api(tmp_path, sample_db, rate_limit_create_per_user="2/minute") as h:
        menu = {**SEED_BODY, "type": "menuCategoriesByMuscle", "fileName": "m.csv"}
        menu["variables"] = {"a": "muscle1", "b": "muscle2"}
        for _ in range(2):
            created = await h.client.post("/v1/exports", json=menu, headers=auth("alice"))
            assert created.status_code == 202
        assert_429(
            await h.client.post("/v1/exports", json=menu, headers=auth("alice")), "create-user"
        )
        assert await h.balance("alice") == 3
        assert len(await h.exports_of("alice")) == 2


async def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(
    tmp_path: Path, sample_db: Path
) -> None:
    """read 2/minute per IP. Untrusted peer: X-Forwarded-For is ignored, so two 'different'
    clients share the peer's budget. With the peer trusted: each forwarded client has its own
    budget, and a spoofed left-most entry does not change who the client is."""
    async with started_api(tmp_path, sample_db, rate_limit_read_per_ip="2/minute") as h:
        for client in ("203.0.113.1", "203.0.113.2"):
            headers = {**auth("a" + client), "X-Forwarded-For": client}
            assert (await h.client.get("/v1/credits", headers=headers)).status_code == 200
        headers = {**auth("x"), "X-Forwarded-For": "203.0.113.3"}
        assert_429(await h.client.get("/v1/credits", headers=headers), "read-ip")
    async with started_api(
        tmp_path / "trusted",
        sample_db,
        rate_limit_read_per_ip="2/minute",
        trusted_proxies=["127.0.0.0/8"],
    ) as h:
        for client in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            headers = {**auth("a" + client), "X-Forwarded-For": client}
            assert (await h.client.get("/v1/credits", headers=headers)).status_code == 200
        spoofed = {"X-Forwarded-For": "198.51.100.9, 203.0.113.1"}
        assert (await h.client.get("/v1/credits", headers={**auth("b"), **spoofed})).is_success
        assert_429(await h.client.get("/v1/credits", headers={**auth("c"), **spoofed}), "read-ip")


async def test_a_body_over_64_kb_is_413_and_nothing_is_created(
    tmp_path: Path, sample_db: Path
) -> None:
    """A create request of 64 KB + 1 byte (declared length, and chunked without a length):
    413 problem+json naming the body; a body just under the limit reaches validation (422)."""
    async with started_api(tmp_path, sample_db) as h:
        padding = "x" * (64 * 1024)
        big = {**SEED_BODY, "variables": {"x": 1, "y": 2, "pad": padding}}
        answer = await h.client.post("/v1/exports", json=big, headers=auth("alice"))
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in answer.json()["errors"]] == ["body"]

        async def chunks() -> Any:
            for _ in range(70):
                yield b"x" * 1024

        chunked = await h.client.post("/export", content=chunks(), headers=auth("alice"))
        assert chunked.status_code == 413
        small = {**SEED_BODY, "variables": {"x": 1, "y": 2, "pad": "x" * 60_000}}
        answer = await h.client.post("/v1/exports", json=small, headers=auth("alice"))
        assert answer.status_code == 422
        assert await h.exports_of("alice") == []


async def endless(h: Harness, user: str) -> dict[str, Any]:
    answer = await h.client.post("/v1/exports", json=ENDLESS_BODY, headers=auth(user))
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def wait_phase(h: Harness, export_id: str, user: str, phase: str) -> dict[str, Any]:
    api = Api(h.app, h.client, h.settings, "embedded")
    return await wait_for(api, export_id, lambda shown: shown["phase"] == phase, owner=user)


async def test_per_user_slots_queue_with_positions_then_503_with_nothing_charged(
    tmp_path: Path, sample_db: Path
) -> None:
    """One running and one queued export per user, three slots in all. Alice's first runs, her
    second is Queued at position 1 although slots are free, Bob's runs past it; Alice's third
    is 503 with Retry-After and costs no credit; cancelling her running export lets the queued
    one run."""
    async with started_api(
        tmp_path,
        sample_db,
        max_running_exports=3,
        max_running_per_user=1,
        max_queued_per_user=1,
        queue_full_retry_after_seconds=17,
    ) as h:
        first = await endless(h, "alice")
        await wait_phase(h, first["id"], "alice", "Running")
        second = await endless(h, "alice")
        queued = await wait_phase(h, second["id"], "alice", "Queued")
        assert queued["queuePosition"] == 1
        bob = await endless(h, "bob")
        await wait_phase(h, bob["id"], "bob", "Running")
        refused = await h.client.post("/v1/exports", json=ENDLESS_BODY, headers=auth("alice"))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "17"
        assert refused.json()["reason"] == "QueueFull"
        assert await h.balance("alice") == 3
        assert len(await h.exports_of("alice")) == 2
        await h.client.delete(f"/v1/exports/{first['id']}", headers=auth("alice"))
        await wait_phase(h, second["id"], "alice", "Running")
        for export_id, user in ((second["id"], "alice"), (bob["id"], "bob")):
            await h.client.delete(f"/v1/exports/{export_id}", headers=auth(user))


async def test_the_global_queue_limit_refuses_everyone(tmp_path: Path, sample_db: Path) -> None:
    """One slot and a global queue of one: the third export of anyone is 503, uncharged."""
    async with started_api(tmp_path, sample_db, max_running_exports=1, max_queued_exports=1) as h:
        running = await endless(h, "alice")
        waiting = await endless(h, "bob")
        refused = await h.client.post("/v1/exports", json=ENDLESS_BODY, headers=auth("carol"))
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert await h.balance("carol") == 5
        for export_id, user in ((running["id"], "alice"), (waiting["id"], "bob")):
            await h.client.delete(f"/v1/exports/{export_id}", headers=auth(user))


MENU = {"type": "menuCategoriesByMuscle", "fileName": "m.csv", "variables": {"a": "muscle1"}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"returnType": "email", "email": "not-an-address"}, "email"),
        ({"variables": {"a": "m" * (STRING_MAX_DEFAULT + 1), "b": "muscle2"}}, "variables.a"),
        ({"variables": {f"v{i}": i for i in range(65)}}, "variables"),
        ({"fileName": "bell\x07.csv"}, "fileName"),
        ({"fileName": ".csv"}, "fileName"),
        ({"fileName": "m.csv", "format": "xlsx"}, "fileName"),
        ({"fileName": "x" * 197 + ".csv"}, "fileName"),
    ],
)
async def test_input_limits_are_422_problems_naming_the_field(
    tmp_path: Path, sample_db: Path, change: dict[str, Any], field: str
) -> None:
    """Bad e-mail, an over-long string variable (catalog bound), too many variables, control
    characters, a leading dot, an extension against the format, 201 characters: 422
    problem+json naming the field; no export and no debit."""
    async with started_api(tmp_path, sample_db) as h:
        answer = await h.client.post("/v1/exports", json={**MENU, **change}, headers=auth("alice"))
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert field in {error["field"] for error in answer.json()["errors"]}, answer.json()
        assert await h.exports_of("alice") == []
        assert await h.balance("alice") == 5
