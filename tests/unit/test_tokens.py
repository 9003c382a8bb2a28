"""The one token decoder: what it accepts and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exportd.security.tokens import InvalidToken, TokenVerifier, mint_token
from exportd.settings import ApiSettings

SECRET = "unit-test-secret-" + "s" * 64
verifier = TokenVerifier(key=SECRET)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_a_minted_token_names_its_subject_and_scopes() -> None:
    """mint_token -> verify round trip: sub and scopes come back."""
    principal = verifier.verify(mint_token("alice", SECRET, scopes=["exports:admin"]))
    assert principal.sub == "alice"
    assert principal.scopes == {"exports:admin"}


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("expired", mint_token("alice", SECRET, ttl=60, now=time.time() - 3600)),
        ("wrong secret", mint_token("alice", "another-secret-" + "a" * 64)),
        ("garbage", "not.a.token"),
        ("empty", ""),
        ("alg none", f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'a', 'exp': 2**40})}."),
        ("no exp", jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")),
        ("no sub", jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")),
        ("empty sub", jwt.encode({"sub": " ", "exp": int(time.time()) + 60}, SECRET)),
        ("numeric sub", jwt.encode({"sub": 5, "exp": int(time.time()) + 60}, SECRET)),
        ("future nbf", mint_token("alice", SECRET, now=time.time() + 3600)),
        ("HS512 not pinned", mint_token("alice", SECRET, algorithm="HS512")),
    ],
)
def test_bad_tokens_are_refused(name: str, token: str) -> None:
    """Each malformed, expired, unsigned, wrongly signed or incomplete token -> InvalidToken."""
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_tampered_payload_is_refused() -> None:
    """A valid token whose payload was swapped for another user's: signature check fails."""
    header, _, signature = mint_token("alice", SECRET).split(".")
    forged = f"{header}.{_b64({'sub': 'mallory', 'exp': int(time.time()) + 60})}.{signature}"
    with pytest.raises(InvalidToken):
        verifier.verify(forged)


def test_hs256_signed_with_a_public_key_is_refused_by_an_rs256_verifier() -> None:
    """Algorithm confusion: an RS256-pinned verifier must not accept HS256 keyed by its public key
    (PyJWT refuses to use a PEM public key as an HMAC secret)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    rs_verifier = TokenVerifier(key=public_pem, algorithms=("RS256",))
    good = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert rs_verifier.verify(good).sub == "a"
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64({"sub": "mallory", "exp": int(time.time()) + 60})
    mac = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    with pytest.raises(InvalidToken):
        rs_verifier.verify(forged)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    """With aud/iss configured, tokens lacking or mismatching them are refused."""
    strict = TokenVerifier(key=SECRET, audience="exportd", issuer="https://idp.example")
    ok = mint_token("alice", SECRET, audience="exportd", issuer="https://idp.example")
    assert strict.verify(ok).sub == "alice"
    for token in (
        mint_token("alice", SECRET),
        mint_token("alice", SECRET, audience="other", issuer="https://idp.example"),
        mint_token("alice", SECRET, audience="exportd", issuer="https://evil.example"),
    ):
        with pytest.raises(InvalidToken):
            strict.verify(token)


def test_leeway_absorbs_small_clock_skew_only() -> None:
    """A token expired 10 s ago passes a 30 s leeway; one expired 120 s ago does not."""
    now = time.time()
    assert verifier.verify(mint_token("alice", SECRET, ttl=60, now=now - 70)).sub == "alice"
    with pytest.raises(InvalidToken):
        verifier.verify(mint_token("alice", SECRET, ttl=60, now=now - 180))


def test_verifier_from_settings_pins_configured_algorithms(tmp_path: object) -> None:
    """from_settings takes secret, algorithms, aud, iss and leeway from ApiSettings."""
    settings = ApiSettings(
        data_dir=tmp_path,
        jwt_secret=SECRET,
        jwt_algorithms=["HS384"],
        jwt_audience="aud1",
        jwt_leeway_seconds=0,
    )
    configured = TokenVerifier.from_settings(settings)
    assert configured.verify(mint_token("bob", SECRET, algorithm="HS384", audience="aud1"))
    with pytest.raises(InvalidToken):
        configured.verify(mint_token("bob", SECRET, audience="aud1"))  # HS256: not pinned


@pytest.mark.parametrize(
    ("key", "algorithms"),
    [
        (SECRET, ("HS256", "RS256")),  # shared-secret and public-key algorithms mixed
        (SECRET, ("none",)),
        (SECRET, ()),
        ("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", ("HS256",)),
        (SECRET, ("RS256",)),  # a public-key algorithm with a shared secret
    ],
)
def test_unsafe_verifier_configurations_fail_at_start(key: str, algorithms: tuple[str]) -> None:
    """RFC 8725 3.1/3.2: the configuration itself must rule out algorithm confusion."""
    with pytest.raises(ValueError):
        TokenVerifier(key=key, algorithms=algorithms)


def test_settings_refuse_a_public_key_and_a_jwks_url_together(tmp_path: object) -> None:
    with pytest.raises(ValueError):
        ApiSettings(
            data_dir=tmp_path,
            jwt_public_key="-----BEGIN PUBLIC KEY-----",
            jwt_jwks_url="http://127.0.0.1/jwks",
        )


def test_a_verified_token_is_remembered_until_its_exp_and_a_bad_one_never() -> None:
    """Tried: one token authenticated twice, a token near its exp, and a tampered token.
    Must hold: the second answer is the remembered principal; no entry outlives the token's
    exp; a token that fails verification is refused every time and never remembered."""
    import asyncio

    cached = TokenVerifier(key=SECRET)
    token = mint_token("alice", SECRET, ttl=3600)
    first = asyncio.run(cached.authenticate(token))
    assert asyncio.run(cached.authenticate(token)) is first
    short = mint_token("bob", SECRET, ttl=5)
    principal = asyncio.run(cached.authenticate(short))
    assert cached._verified[short][1] <= principal.claims["exp"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            asyncio.run(cached.authenticate(tampered))
    assert tampered not in cached._verified
