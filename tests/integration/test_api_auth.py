"""Authentication at the edge: bad tokens are 401 before the body is read or anything stored."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from exportd.security.tokens import mint_token
from tests.integration.conftest import JWT_SECRET, SEED_BODY, Api, auth, token_for

pytestmark = pytest.mark.anyio


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


BAD_AUTHORIZATION = {
    "no token": None,
    "malformed": "Bearer not-a-jwt",
    "wrong scheme": f"Basic {token_for('alice')}",
    "wrong signature": f"Bearer {mint_token('alice', 'another-secret-' + 'x' * 40)}",
    "expired": f"Bearer {mint_token('alice', JWT_SECRET, ttl=60, now=time.time() - 7200)}",
    "alg none": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}."
    f"{_b64({'sub': 'alice', 'exp': int(time.time()) + 3600})}.",
}


@pytest.mark.parametrize("case", sorted(BAD_AUTHORIZATION))
@pytest.mark.parametrize("path", ["/export", "/v1/exports"])
async def test_bad_tokens_get_401_and_create_no_record(api: Api, case: str, path: str) -> None:
    """Each bad Authorization on a valid seed body: 401 problem+json with WWW-Authenticate:
    Bearer, and the state store still holds no export record."""
    value = BAD_AUTHORIZATION[case]
    headers = {} if value is None else {"Authorization": value}
    response = await api.client.post(path, json=SEED_BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert api.records() == 0


async def test_a_valid_token_does_create_a_record(api: Api) -> None:
    """Control for the test above: the same body with a valid token is accepted and stored."""
    response = await api.client.post("/v1/exports", json=SEED_BODY, headers=auth("alice"))
    assert response.status_code == 202, response.text
    assert api.records() == 1


async def test_401_comes_before_the_body_is_read(api: Api) -> None:
    """An unauthenticated request with an unreadable body is still 401, not 422: the body was
    never parsed."""
    response = await api.client.post(
        "/export", content=b"\xff{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "path", ["/v1/exports", "/v1/exports/exp-123", "/v1/export-types", "/nope"]
)
async def test_every_other_route_needs_a_token(api: Api, path: str) -> None:
    """Reads need a token too; an unknown path without one is 401 (nothing is revealed)."""
    assert (await api.client.get(path)).status_code == 401


@pytest.mark.parametrize("path", ["/", "/livez", "/readyz", "/openapi.json", "/docs"])
async def test_probes_and_documents_are_public(api: Api, path: str) -> None:
    assert (await api.client.get(path)).status_code == 200
