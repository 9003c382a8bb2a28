"""Bearer tokens: the one place a JWT is decoded, and the development minting helper.

Every check of RFC 8725 lives here, so the API cannot forget one:

- The algorithms come from settings, never from the token header. A deployment uses either a
  shared secret (HS256/384/512) or public keys (RS*, PS*, ES*, EdDSA), never both, so a token
  signed with HS256 "keyed" by the RSA public key (algorithm confusion) is refused, as is
  ``alg: none``.
- Public keys come from a PEM in settings, or from the identity provider's JWKS URL, chosen by
  the token's ``kid``. ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are never looked at: a token
  cannot name the key that verifies it. An unknown ``kid`` fetches the JWKS again (the provider
  may have rotated its keys), at most once a minute, so a flood of made-up ``kid`` values costs
  the provider one request a minute.
- ``exp`` and ``sub`` are required; ``aud`` and ``iss`` are checked when configured; ``nbf`` is
  honoured; a small leeway absorbs clock skew.

Any failure is one :class:`InvalidToken`, so callers answer one 401.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from exportd.settings import ApiSettings

REQUIRED_CLAIMS = ("exp", "sub")
SCOPE_CLAIMS = ("scope", "scp")
SYMMETRIC_PREFIX = "HS"
JWKS_REFRESH_SECONDS = 60.0
JWKS_TIMEOUT_SECONDS = 5.0
JWKS_MAX_BYTES = 256 * 1024
_PUBLIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


class InvalidToken(Exception):
    """The token is missing, malformed, expired, wrongly signed or lacks a required claim."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and the scopes it grants."""

    sub: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _fetch_jwks_sync(url: str) -> dict[str, Any]:
    import httpx

    with httpx.Client(timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False) as client:
        response = client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > JWKS_MAX_BYTES:
            raise ValueError("JWKS document too large")
        document: dict[str, Any] = response.json()
        return document


class JwksKeys:
    """The signing keys of a JWKS URL by ``kid``: fetched on first use, then again only for an
    unknown ``kid`` and at most once per ``refresh_seconds`` (``clock`` is injectable)."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float = JWKS_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str], dict[str, Any]] = _fetch_jwks_sync,
    ) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.fetch = fetch
        self.fetches = 0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:  # concurrent unknown kids share one fetch
            if kid not in self._keys and self._may_refresh():
                await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken(f"unknown key id {kid!r}")
        return key

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or (self.clock() - self._fetched_at >= self.refresh_seconds)

    async def _refresh(self) -> None:
        self._fetched_at = self.clock()
        self.fetches += 1
        try:
            document = await asyncio.to_thread(self.fetch, self.url)
            self._keys = _signing_keys(document)
        except Exception as exc:  # an unreachable provider: keep the keys we had
            raise InvalidToken(f"cannot load the signing keys: {type(exc).__name__}") from None


def _signing_keys(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for data in document.get("keys", []):
        if not isinstance(data, dict) or data.get("kty") not in _PUBLIC_KEY_TYPES:
            continue  # symmetric or malformed entries never verify a token here
        if data.get("use", "sig") != "sig" or not isinstance(data.get("kid"), str):
            continue
        try:
            keys[data["kid"]] = jwt.PyJWK(data)
        except jwt.PyJWTError:
            continue
    return keys


VERIFIED_CACHE_SIZE = 10_000
VERIFIED_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class TokenVerifier:
    """``key`` is the HS secret or a PEM public key; ``jwks`` replaces it for a JWKS URL."""

    key: str | None = None
    algorithms: Sequence[str] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: int = 30
    jwks: JwksKeys | None = None
    # Verified tokens by their exact text, until min(exp, CACHE_SECONDS after verification):
    # a client sends the same token with every request, and a JWT decode is most of a read's
    # CPU. Only successes are kept; a token whose exp passes is decoded again (leeway and all).
    _verified: dict[str, tuple[Principal, float]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        symmetric = {a.startswith(SYMMETRIC_PREFIX) for a in self.algorithms}
        if not self.algorithms or "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("jwt_algorithms must name at least one real algorithm")
        if len(symmetric) > 1:
            raise ValueError("jwt_algorithms mixes shared-secret (HS*) and public-key algorithms")
        if (self.key is None) == (self.jwks is None):
            raise ValueError("a token verifier needs exactly one of a key and a JWKS URL")
        if self.jwks is not None and True in symmetric:
            raise ValueError("a JWKS URL verifies public-key algorithms only (RS*, PS*, ES*)")
        if self.key is not None and (True in symmetric) == _is_pem(self.key):
            raise ValueError(
                "HS* algorithms need jwt_secret; RS*/PS*/ES* need jwt_public_key or jwt_jwks_url"
            )

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> TokenVerifier:
        algorithms = tuple(settings.jwt_algorithms)
        key: str | None = None
        jwks = None
        if settings.jwt_jwks_url is not None:
            jwks = JwksKeys(settings.jwt_jwks_url)
        elif settings.jwt_public_key is not None:
            key = settings.jwt_public_key
        else:
            key = settings.secret("jwt_secret")
        return cls(
            key=key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway_seconds=settings.jwt_leeway_seconds,
            jwks=jwks,
        )

    def verify(self, token: str) -> Principal:
        """The caller a valid token names, for a verifier with a static key."""
        if self.key is None:
            raise RuntimeError("a JWKS verifier needs authenticate() (it may fetch keys)")
        return self._decode(token, self.key)

    async def authenticate(self, token: str) -> Principal:
        """The caller a valid token names; :class:`InvalidToken` for anything else."""
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None and now < cached[1]:
            return cached[0]
        principal = await self._authenticate(token)
        self._remember(token, principal, now)
        return principal

    def _remember(self, token: str, principal: Principal, now: float) -> None:
        exp = principal.claims.get("exp")
        if not isinstance(exp, int | float):
            return
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            for stale in [t for t, (_, until) in self._verified.items() if until <= now]:
                del self._verified[stale]
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()  # many live tokens at once: start over, never grow
        self._verified[token] = (principal, min(float(exp), now + VERIFIED_CACHE_SECONDS))

    async def _authenticate(self, token: str) -> Principal:
        if self.jwks is None:
            return self.verify(token)
        header = _header_of(token)
        if header.get("alg") not in self.algorithms:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key id (kid)")
        key = await self.jwks.key_for(kid)
        if key.algorithm_name not in self.algorithms or key.algorithm_name != header["alg"]:
            raise InvalidToken(f"key {kid!r} does not sign {header['alg']!r} tokens")
        return self._decode(token, key)

    def _decode(self, token: str, key: str | jwt.PyJWK) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 253:
            raise InvalidToken("sub must be a non-empty string of at most 253 characters")
        return Principal(sub=subject, scopes=_scopes_of(claims), claims=claims)


def _is_pem(key: str) -> bool:
    return key.lstrip().startswith("-----BEGIN")


def _header_of(token: str) -> dict[str, Any]:
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    return header


def _scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    for name in SCOPE_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(str(item) for item in value)
    return frozenset()


def mint_token(
    sub: str,
    secret: Any,
    ttl: int = 3600,
    *,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    scopes: Sequence[str] = (),
    now: float | None = None,
    headers: dict[str, Any] | None = None,
    email: str | None = None,
) -> str:
    """A signed token for development and tests (``exportd token``); ``secret`` is the HS
    secret or a private key; ``email`` becomes the ``email`` claim (``email_recipients: token``)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "nbf": issued, "exp": issued + ttl}
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    if scopes:
        claims["scope"] = " ".join(scopes)
    if email is not None:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers)
