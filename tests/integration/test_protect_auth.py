"""Authentication (RFC 8725) and authorization at the edge of the API.

The app verifies RS256/ES256 tokens with keys from a JWKS endpoint served on loopback by the
test. Every bad token is a 401 with ``WWW-Authenticate: Bearer``, answered before the body is
read and with nothing stored; a caller sees only its own exports unless it has the admin scope;
request bodies refuse unknown fields.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from exportd.security.tokens import InvalidToken, JwksKeys, TokenVerifier
from tests.integration.conftest import SEED_BODY, auth, token_for
from tests.integration.jwks_server import JwksServer, SigningKey, ec_key, jwks_server, rsa_key
from tests.integration.protect_harness import Harness, started_api

pytestmark = pytest.mark.anyio
AUDIENCE, ISSUER = "exportd", "https://idp.test"
RSA_KEY, EC_KEY, EVIL_KEY = rsa_key("k1"), ec_key("k-ec"), rsa_key("evil")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64json(data: dict[str, Any]) -> str:
    return b64(json.dumps(data).encode())


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def public_pem(key: SigningKey) -> bytes:
    return key.private.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_keyed_by_public_key() -> str:
    """Algorithm confusion: HS256 with the RSA *public* key (which anyone has) as the secret."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'k1'})}.{b64json(claims())}"
    mac = hmac.new(public_pem(RSA_KEY), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def tampered() -> str:
    header, _, signature = RSA_KEY.sign(claims()).split(".")
    return f"{header}.{b64json(claims(sub='mallory'))}.{signature}"


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as server:
        server.keys = [RSA_KEY, EC_KEY]
        yield server


@pytest.fixture(scope="module")
def attacker() -> Iterator[JwksServer]:
    """The attacker's own JWKS, named by the forged tokens' ``jku``/``x5u`` headers."""
    with jwks_server() as server:
        server.keys = [EVIL_KEY]
        yield server


@pytest.fixture
async def h(tmp_path: Path, sample_db: Path, jwks: JwksServer) -> AsyncIterator[Harness]:
    async with started_api(
        tmp_path,
        sample_db,
        jwt_algorithms=["RS256", "ES256"],
        jwt_jwks_url=jwks.url,
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
    ) as harness:
        yield harness


def stored_rows(harness: Harness) -> dict[str, int]:
    with sqlite3.connect(harness.settings.state_db_path) as conn:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("exports", "credit_accounts", "credit_ledger", "idempotency_keys")
        }


def bad_authorizations(attacker: JwksServer) -> dict[str, str | None]:
    good = RSA_KEY.sign(claims())
    return {
        "no header": None,
        "wrong scheme": f"Basic {good}",
        "alg none": f"{b64json({'alg': 'none', 'kid': 'k1'})}.{b64json(claims())}.",
        "HS256 signed with the RSA public key": hs256_keyed_by_public_key(),
        "expired": RSA_KEY.sign(claims(exp=int(time.time()) - 3600)),
        "future nbf": RSA_KEY.sign(claims(nbf=int(time.time()) + 3600)),
        "wrong aud": RSA_KEY.sign(claims(aud="someone-else")),
        "wrong iss": RSA_KEY.sign(claims(iss="https://evil.test")),
        "missing exp": RSA_KEY.sign(claims(exp=None)),
        "missing sub": RSA_KEY.sign(claims(sub=None)),
        "unknown kid": EVIL_KEY.sign(claims(), kid="k-unknown"),
        "tampered payload": tampered(),
        "jku to the attacker's keys": EVIL_KEY.sign(claims(), jku=attacker.url),
        "x5u to the attacker": EVIL_KEY.sign(claims(), x5u=attacker.url),
        "RS256 token naming the ES256 key": RSA_KEY.sign(claims(), kid="k-ec"),
    }


CASES = sorted(bad_authorizations(JwksServer(url="http://unused")))


@pytest.mark.parametrize("case", CASES)
async def test_every_bad_token_is_401_with_nothing_stored(
    h: Harness, attacker: JwksServer, case: str
) -> None:
    """Each case on POST /v1/exports with a valid body: 401, ``WWW-Authenticate: Bearer``,
    problem+json; no record, credit account, debit or idempotency key is stored; the attacker's
    key server named in ``jku``/``x5u`` is never contacted."""
    value = bad_authorizations(attacker)[case]
    if value is not None and not value.startswith("Basic "):
        value = f"Bearer {value}"
    headers = {"Idempotency-Key": f"key-{case}"}
    if value is not None:
        headers["Authorization"] = value
    before = len(attacker.requests)
    response = await h.client.post("/v1/exports", json=SEED_BODY, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert stored_rows(h) == dict.fromkeys(stored_rows(h), 0)
    assert len(attacker.requests) == before


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
async def test_valid_rs256_and_es256_tokens_from_the_jwks_are_accepted(
    h: Harness, key: SigningKey
) -> None:
    """Control for the cases above: the same request with a good token is accepted."""
    headers = {"Authorization": f"Bearer {key.sign(claims())}"}
    response = await h.client.post("/v1/exports", json=SEED_BODY, headers=headers)
    assert response.status_code == 202, response.text
    assert stored_rows(h)["exports"] == 1


async def test_401_is_answered_before_a_byte_of_the_body_is_read(h: Harness) -> None:
    """Called as raw ASGI with a body announced at 100 MB and a ``receive`` that records any
    call: the answer is 401 and ``receive`` was never called."""
    received: list[Any] = []

    async def receive() -> dict[str, Any]:
        received.append(True)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/exports",
        "raw_path": b"/v1/exports",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", b"100000000"),
            (b"authorization", b"Bearer " + EVIL_KEY.sign(claims()).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    await h.app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
    assert received == []


async def test_jwks_is_fetched_again_on_an_unknown_kid_at_most_once_a_minute(
    jwks: JwksServer,
) -> None:
    """Against the loopback JWKS, with a clock the test moves: the first token fetches the
    keys; a token with a new kid 10 s later is refused without a fetch; once the provider
    publishes that key and 61 s have passed, one fetch picks it up; floods of unknown kids
    right after cause no further fetch."""
    now = [1000.0]
    keys = JwksKeys(jwks.url, clock=lambda: now[0])
    verifier = TokenVerifier(algorithms=("RS256", "ES256"), jwks=keys, audience=AUDIENCE)
    rotated = rsa_key("k2")
    requests = len(jwks.requests)
    assert (await verifier.authenticate(RSA_KEY.sign(claims()))).sub == "alice"
    assert len(jwks.requests) == requests + 1
    now[0] += 10
    jwks.keys = [RSA_KEY, EC_KEY, rotated]
    with pytest.raises(InvalidToken):
        await verifier.authenticate(rotated.sign(claims()))
    assert len(jwks.requests) == requests + 1
    now[0] += 61
    assert (await verifier.authenticate(rotated.sign(claims(sub="bob")))).sub == "bob"
    assert len(jwks.requests) == requests + 2
    for number in range(20):
        with pytest.raises(InvalidToken):
            await verifier.authenticate(EVIL_KEY.sign(claims(), kid=f"made-up-{number}"))
    assert len(jwks.requests) == requests + 2
    jwks.keys = [RSA_KEY, EC_KEY]


async def test_a_pem_public_key_verifies_rs256_and_refuses_hs256_confusion(
    tmp_path: Path, sample_db: Path
) -> None:
    """jwt_public_key (PEM) instead of a JWKS: RS256 accepted, HS256 keyed by that PEM 401."""
    async with started_api(
        tmp_path,
        sample_db,
        jwt_algorithms=["RS256"],
        jwt_public_key=public_pem(RSA_KEY).decode(),
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
    ) as harness:
        good = {"Authorization": f"Bearer {RSA_KEY.sign(claims())}"}
        assert (await harness.client.get("/v1/credits", headers=good)).status_code == 200
        forged = {"Authorization": f"Bearer {hs256_keyed_by_public_key()}"}
        assert (await harness.client.get("/v1/credits", headers=forged)).status_code == 401


async def test_another_user_gets_404_and_the_admin_scope_sees_all(
    tmp_path: Path, sample_db: Path
) -> None:
    """Bob: 404 on GET and DELETE of Alice's export (as for a missing id) and an empty list;
    a token with ``exports:admin`` reads it, lists everyone's with ``all=true`` and cancels it;
    ``all=true`` without the scope is 403."""
    async with started_api(tmp_path, sample_db) as harness:
        client = harness.client
        body = {**SEED_BODY, "type": "endlessRows", "fileName": "e.csv", "variables": {"n": 10**12}}
        created = await client.post("/v1/exports", json=body, headers=auth("alice"))
        export_id = created.json()["id"]
        for method in ("GET", "DELETE"):
            answer = await client.request(method, f"/v1/exports/{export_id}", headers=auth("bob"))
            assert answer.status_code == 404
        assert await harness.exports_of("bob") == []
        forbidden = await client.get("/v1/exports?all=true", headers=auth("bob"))
        assert forbidden.status_code == 403
        admin = {"Authorization": f"Bearer {token_for('root', scopes=['exports:admin'])}"}
        seen = await client.get(f"/v1/exports/{export_id}", headers=admin)
        assert seen.status_code == 200 and seen.json()["id"] == export_id
        listing = await client.get("/v1/exports?all=true", headers=admin)
        assert [item["id"] for item in listing.json()["items"]] == [export_id]
        cancelled = await client.delete(f"/v1/exports/{export_id}", headers=admin)
        assert cancelled.status_code == 200 and cancelled.json()["phase"] == "Cancelled"


@pytest.mark.parametrize(
    ("field", "value"),
    [("owner", "bob"), ("cost", 0), ("sql", "SELECT * FROM users"), ("requestedBy", "bob")],
)
async def test_unknown_or_server_owned_fields_are_422_naming_them(
    tmp_path: Path, sample_db: Path, field: str, value: Any
) -> None:
    """A body smuggling ``owner``, ``cost``, ``sql`` or ``requestedBy``: 422 naming the field,
    on both create routes, and nothing is stored or charged."""
    async with started_api(tmp_path, sample_db) as harness:
        for path in ("/export", "/v1/exports"):
            answer = await harness.client.post(
                path, json={**SEED_BODY, field: value}, headers=auth("alice")
            )
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert field in {error["field"] for error in answer.json()["errors"]}
        assert stored_rows(harness)["exports"] == 0
        assert await harness.balance("alice") == 5
