"""``Idempotency-Key`` on both create routes (Stripe's semantics): replay, mismatch, the
concurrent duplicate, per-user scope, expiry, and nothing created or charged twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ENDLESS_BODY, auth
from tests.integration.protect_harness import Harness, started_api

pytestmark = pytest.mark.anyio
MENU_BODY = {
    "type": "menuCategoriesByMuscle",
    "fileName": "menus.csv",
    "variables": {"a": "muscle1", "b": "muscle2"},
}


def keyed(user: str, key: str) -> dict[str, str]:
    return {**auth(user), "Idempotency-Key": key}


async def settle(h: Harness, export_id: str) -> None:
    await h.app.state.exportd.backend.wait_until_terminal(export_id, 120)


async def test_same_key_and_body_replays_the_first_answer_and_charges_once(
    tmp_path: Path, sample_db: Path
) -> None:
    """POST /v1/exports twice with one key (the second body with its keys in another order):
    the same 202 body and Location, marked replayed; one export, one credit spent."""
    async with started_api(tmp_path, sample_db) as h:
        first = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("alice", "k1"))
        assert first.status_code == 202, first.text
        reordered = dict(reversed(list(MENU_BODY.items())))
        second = await h.client.post("/v1/exports", json=reordered, headers=keyed("alice", "k1"))
        assert second.status_code == 202, second.text
        assert second.json() == first.json()
        assert second.headers["location"] == first.headers["location"]
        assert second.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert len(await h.exports_of("alice")) == 1
        assert await h.balance("alice") == 4
        await settle(h, first.json()["id"])


async def test_the_seed_route_replays_its_link_answer(tmp_path: Path, sample_db: Path) -> None:
    """POST /export with a key returns the finished link; the retry returns the same JSON at
    once without a new export."""
    async with started_api(tmp_path, sample_db) as h:
        first = await h.client.post("/export", json=MENU_BODY, headers=keyed("alice", "seed"))
        assert first.status_code == 200 and first.json()["status"] == "success"
        again = await h.client.post("/export", json=MENU_BODY, headers=keyed("alice", "seed"))
        assert (again.status_code, again.json()) == (200, first.json())
        assert len(await h.exports_of("alice")) == 1


async def test_same_key_with_another_body_or_route_is_422_naming_the_header(
    tmp_path: Path, sample_db: Path
) -> None:
    async with started_api(tmp_path, sample_db) as h:
        first = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("alice", "k"))
        other = {**MENU_BODY, "fileName": "other.csv"}
        for path, body in (("/v1/exports", other), ("/export", MENU_BODY)):
            answer = await h.client.post(path, json=body, headers=keyed("alice", "k"))
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in answer.json()["errors"]] == ["Idempotency-Key"]
        assert len(await h.exports_of("alice")) == 1
        assert await h.balance("alice") == 4
        await settle(h, first.json()["id"])


async def test_a_concurrent_duplicate_is_409_while_the_first_is_in_progress(
    tmp_path: Path, sample_db: Path
) -> None:
    """POST /export with key K waits on an endless export; the same request with K meanwhile
    is 409 (nothing created or charged); once the first ends (cancelled) the key replays the
    first's answer."""
    async with started_api(tmp_path, sample_db, sync_wait_seconds=120) as h:
        waiting = asyncio.create_task(
            h.client.post("/export", json=ENDLESS_BODY, headers=keyed("alice", "K"))
        )
        export_id = await _first_export_of(h, "alice")
        duplicate = await h.client.post("/export", json=ENDLESS_BODY, headers=keyed("alice", "K"))
        assert duplicate.status_code == 409
        assert duplicate.json()["reason"] == "IdempotencyKeyInProgress"
        assert len(await h.exports_of("alice")) == 1
        assert await h.balance("alice") == 4
        await h.client.delete(f"/v1/exports/{export_id}", headers=auth("alice"))
        first = await waiting
        assert first.status_code == 409 and first.json()["reason"] == "Cancelled"
        replay = await h.client.post("/export", json=ENDLESS_BODY, headers=keyed("alice", "K"))
        assert (replay.status_code, replay.json()) == (409, first.json())
        assert replay.headers["idempotent-replayed"] == "true"


async def _first_export_of(h: Harness, user: str) -> str:
    for _ in range(600):
        items = await h.exports_of(user)
        if items:
            export_id: str = items[0]["id"]
            return export_id
        await asyncio.sleep(0.05)
    raise AssertionError("the first request never created its export")


async def test_keys_are_per_user_and_expire(tmp_path: Path, sample_db: Path) -> None:
    """Bob's K is not Alice's K; after 24 h (the test's clock) Alice's K is a new request."""
    async with started_api(tmp_path, sample_db) as h:
        alice = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("alice", "K"))
        bob = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("bob", "K"))
        assert alice.json()["id"] != bob.json()["id"]
        assert "idempotent-replayed" not in bob.headers
        h.clock.now += timedelta(hours=24, seconds=1)
        other: dict[str, Any] = {**MENU_BODY, "fileName": "later.csv"}
        later = await h.client.post("/v1/exports", json=other, headers=keyed("alice", "K2"))
        assert later.status_code == 202
        for answer in (alice, bob, later):
            await settle(h, answer.json()["id"])


async def test_a_refused_request_leaves_its_key_unused(tmp_path: Path, sample_db: Path) -> None:
    """No credit: 402 with key K; after midnight the same K creates the export (a refusal is
    not a stored answer)."""
    async with started_api(tmp_path, sample_db, credits_initial=0) as h:
        refused = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("alice", "K"))
        assert refused.status_code == 402
        h.clock.now += timedelta(days=1)
        created = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("alice", "K"))
        assert created.status_code == 202
        await settle(h, created.json()["id"])


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tkey"])
async def test_malformed_keys_are_422(tmp_path: Path, sample_db: Path, key: str) -> None:
    async with started_api(tmp_path, sample_db) as h:
        answer = await h.client.post("/v1/exports", json=MENU_BODY, headers=keyed("alice", key))
        assert answer.status_code == 422
        assert "Idempotency-Key" in {e["field"] for e in answer.json()["errors"]}
        assert await h.exports_of("alice") == []
