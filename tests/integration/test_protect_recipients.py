"""Who may receive e-mailed exports (``email_recipients``) and the daily e-mail cap.

Each mode runs the real embedded app with the development outbox as its mail path (no SMTP
server is needed to see what would be sent). What must hold: an allowed address is delivered;
a refused one is a 403 problem+json ``RecipientNotAllowed`` that creates no export and charges
no credit; the cap refuses the e-mail export beyond it with 429 ``EmailCapReached`` and a
``Retry-After``, while link exports go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from exportd.security.tokens import mint_token
from tests.integration.conftest import JWT_SECRET, auth
from tests.integration.delivery_apps import SMALL_BODY, embedded_api

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
EMAIL_SENT = {"status": "success", "message": "The file has been sent to the provided email."}


def emailed(address: str) -> dict[str, Any]:
    return {**SMALL_BODY, "returnType": "email", "email": address}


def bearer(sub: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(sub, JWT_SECRET, **claims)}"}


async def assert_refused(api: Any, response: httpx.Response, owner: str, status: int) -> None:
    """A problem+json refusal that left no export and no charge behind."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    exports = await api.client.get("/v1/exports", headers=auth(owner))
    credits = await api.client.get("/v1/credits", headers=auth(owner))
    assert len(exports.json()["items"]) == credits.json()["cap"] - credits.json()["balance"]


async def test_any_lets_every_address_receive(tmp_path: Path, sample_db: Path) -> None:
    """``email_recipients: any`` (the embedded default): an address of any domain is served."""
    async with embedded_api(tmp_path / "data", sample_db) as api:
        response = await api.client.post("/export", json=emailed("x@other.org"), headers=auth("al"))
        assert response.json() == EMAIL_SENT


async def test_domains_lets_only_allowed_domains_receive(tmp_path: Path, sample_db: Path) -> None:
    """``domains`` with example.com allowed: alice@example.com is served; bob@other.org and
    a@sub.example.com are refused 403 RecipientNotAllowed (the detail names the allowed
    domains), with no export created and no credit charged."""
    overrides = {"email_recipients": "domains", "email_allowed_domains": ["Example.com"]}
    async with embedded_api(tmp_path / "data", sample_db, **overrides) as api:
        ok = await api.client.post("/export", json=emailed("alice@example.com"), headers=auth("u"))
        assert ok.json() == EMAIL_SENT
        for address in ("bob@other.org", "a@sub.example.com"):
            refused = await api.client.post("/v1/exports", json=emailed(address), headers=auth("u"))
            await assert_refused(api, refused, "u", 403)
            problem = refused.json()
            assert problem["reason"] == "RecipientNotAllowed"
            assert problem["type"] == "urn:exportd:problem:RecipientNotAllowed"
            assert "example.com" in problem["detail"]


async def test_token_lets_only_the_email_claim_receive(tmp_path: Path, sample_db: Path) -> None:
    """``token``: the token's own email claim (any case) is served; another address, a token
    without the claim, and a claim marked unverified are refused 403 RecipientNotAllowed."""
    async with embedded_api(tmp_path / "data", sample_db, email_recipients="token") as api:
        own = bearer("carol", email="carol@corp.example")
        ok = await api.client.post("/export", json=emailed("Carol@corp.example"), headers=own)
        assert ok.json() == EMAIL_SENT
        other = await api.client.post("/v1/exports", json=emailed("eve@corp.example"), headers=own)
        await assert_refused(api, other, "carol", 403)
        assert other.json()["reason"] == "RecipientNotAllowed"
        no_claim = await api.client.post(
            "/v1/exports", json=emailed("dave@corp.example"), headers=bearer("dave")
        )
        assert no_claim.status_code == 403 and no_claim.json()["reason"] == "RecipientNotAllowed"


async def test_daily_cap_refuses_the_third_email_export(tmp_path: Path, sample_db: Path) -> None:
    """A cap of 2: two e-mail exports are served, the third is 429 EmailCapReached with a
    Retry-After of at most a day, no export and no charge; a link export still works, and
    another user's cap is untouched."""
    async with embedded_api(tmp_path / "data", sample_db, email_daily_cap_per_user=2) as api:
        for _ in range(2):
            ok = await api.client.post("/export", json=emailed("a@example.com"), headers=auth("u"))
            assert ok.json() == EMAIL_SENT
        third = await api.client.post(
            "/v1/exports", json=emailed("a@example.com"), headers=auth("u")
        )
        await assert_refused(api, third, "u", 429)
        assert third.json()["reason"] == "EmailCapReached"
        assert 1 <= int(third.headers["retry-after"]) <= 24 * 3600
        link = await api.client.post("/export", json=SMALL_BODY, headers=auth("u"))
        assert link.status_code == 200 and "url" in link.json()
        other = await api.client.post("/export", json=emailed("b@example.com"), headers=auth("v"))
        assert other.json() == EMAIL_SENT


async def test_a_cap_of_zero_turns_email_off(tmp_path: Path, sample_db: Path) -> None:
    """``email_daily_cap_per_user: 0``: every e-mail export is refused 403 EmailDisabled (no
    export, no charge); a link export is served."""
    async with embedded_api(tmp_path / "data", sample_db, email_daily_cap_per_user=0) as api:
        refused = await api.client.post("/export", json=emailed("a@example.com"), headers=auth("u"))
        await assert_refused(api, refused, "u", 403)
        assert refused.json()["reason"] == "EmailDisabled"
        link = await api.client.post("/export", json=SMALL_BODY, headers=auth("u"))
        assert link.status_code == 200 and "url" in link.json()
