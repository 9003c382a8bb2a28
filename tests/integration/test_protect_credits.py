"""Credits through the API (design Q1): one debit per accepted export in the same transaction
as its record, the 20-concurrent race, accrual at midnight by the test's clock, refunds, and
``GET /v1/credits``. Run on both state stores (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
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
BROKEN_BODY = {"type": "brokenQuery", "fileName": "broken.csv", "variables": {}}


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


async def wait_until(h: Harness, export_id: str, user: str = "alice") -> dict[str, Any]:
    status = await h.app.state.exportd.backend.wait_until_terminal(export_id, 120)
    assert status.phase.is_terminal
    answer = await h.client.get(f"/v1/exports/{export_id}", headers=auth(user))
    shown: dict[str, Any] = answer.json()
    return shown


async def test_twenty_concurrent_requests_with_one_credit_accept_exactly_one(
    tmp_path: Path, sample_db: Path, store_kind: str
) -> None:
    """Alice has 1 credit; 20 POST /v1/exports at once: exactly one 202, nineteen 402
    problem+json with ``nextCreditAt`` (the next midnight) and ``Retry-After``; one record."""
    now = datetime(2099, 6, 1, 18, 0, tzinfo=UTC)
    async with started_api(
        tmp_path, sample_db, store_kind=store_kind, now=now, credits_initial=1
    ) as h:
        answers = await asyncio.gather(
            *(
                h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
                for _ in range(20)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [202] + [402] * 19
        for refused in (a for a in answers if a.status_code == 402):
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["reason"] == "InsufficientCredits"
            assert refused.json()["nextCreditAt"] == "2099-06-02T00:00:00Z"
            assert refused.headers["retry-after"] == str(6 * 3600)
        assert len(await h.exports_of("alice")) == 1
        assert await h.balance("alice") == 0
        accepted = next(a for a in answers if a.status_code == 202)
        await wait_until(h, accepted.json()["id"])


async def test_a_credit_arrives_at_midnight_by_the_test_clock(
    tmp_path: Path, sample_db: Path, store_kind: str
) -> None:
    """Spent out at 23:59:30: 402 with Retry-After 30 s; the clock is set to 00:00 (nothing
    sleeps): GET /v1/credits shows 1 and the next export is accepted."""
    evening = datetime(2099, 6, 1, 23, 59, 30, tzinfo=UTC)
    async with started_api(
        tmp_path, sample_db, store_kind=store_kind, now=evening, credits_initial=1
    ) as h:
        first = await h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
        assert first.status_code == 202
        refused = await h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
        assert refused.status_code == 402 and refused.headers["retry-after"] == "30"
        credits = (await h.client.get("/v1/credits", headers=auth("alice"))).json()
        assert credits["balance"] == 0 and credits["nextCreditAt"] == "2099-06-02T00:00:00Z"
        h.clock.now = datetime(2099, 6, 2, 0, 0, tzinfo=UTC)
        assert await h.balance("alice") == 1
        second = await h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
        assert second.status_code == 202
        for answer in (first, second):
            await wait_until(h, answer.json()["id"])


async def test_failed_and_cancelled_exports_give_their_credit_back(
    tmp_path: Path, sample_db: Path
) -> None:
    """A failing export (query error) and a cancelled one: their credits come back; a
    succeeded one stays charged. (Both stores refund in the status write: see
    test_store_postgres.py.)"""
    async with started_api(tmp_path, sample_db) as h:
        failing = await h.client.post("/v1/exports", json=BROKEN_BODY, headers=auth("alice"))
        running = await h.client.post("/v1/exports", json=ENDLESS_BODY, headers=auth("alice"))
        succeeding = await h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
        assert await h.balance("alice") == 2
        assert (await wait_until(h, failing.json()["id"]))["phase"] == "Failed"
        cancelled = await h.client.delete(
            f"/v1/exports/{running.json()['id']}", headers=auth("alice")
        )
        assert cancelled.json()["phase"] == "Cancelled"
        assert (await wait_until(h, succeeding.json()["id"]))["phase"] == "Succeeded"
        assert await h.balance("alice") == 4


async def test_refunds_follow_the_configured_phases(tmp_path: Path, sample_db: Path) -> None:
    """credits_refund_on=[Failed]: a cancelled export keeps its charge, a failed one does not."""
    async with started_api(tmp_path, sample_db, credits_refund_on=["Failed"]) as h:
        running = await h.client.post("/v1/exports", json=ENDLESS_BODY, headers=auth("alice"))
        await h.client.delete(f"/v1/exports/{running.json()['id']}", headers=auth("alice"))
        failing = await h.client.post("/v1/exports", json=BROKEN_BODY, headers=auth("alice"))
        await wait_until(h, failing.json()["id"])
        assert await h.balance("alice") == 4


async def test_credits_resource_shows_balance_cap_and_next_accrual(
    tmp_path: Path, sample_db: Path
) -> None:
    """A new user: 5 of 5, no next credit (at the cap); after one export 4 of 5 and the next
    credit at the next midnight of the configured zone (Europe/Berlin: 22:00 UTC in summer)."""
    async with started_api(tmp_path, sample_db, credits_timezone="Europe/Berlin") as h:
        fresh = (await h.client.get("/v1/credits", headers=auth("alice"))).json()
        assert fresh == {
            "enabled": True,
            "balance": 5,
            "cap": 5,
            "perDay": 1,
            "timezone": "Europe/Berlin",
            "costPerExport": 1,
        }
        created = await h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
        after = (await h.client.get("/v1/credits", headers=auth("alice"))).json()
        assert after["balance"] == 4 and after["nextCreditAt"] == "2099-06-01T22:00:00Z"
        await wait_until(h, created.json()["id"])


async def test_disabled_credits_charge_nothing(tmp_path: Path, sample_db: Path) -> None:
    async with started_api(tmp_path, sample_db, credits_enabled=False, credits_initial=0) as h:
        created = await h.client.post("/v1/exports", json=MENU_BODY, headers=auth("alice"))
        assert created.status_code == 202
        await wait_until(h, created.json()["id"])
