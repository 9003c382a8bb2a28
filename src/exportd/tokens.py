"""Bearer tokens: the one place a JWT is decoded, and the development minting helper.

Every check of RFC 8725 that applies to a shared-secret deployment lives here, so the API cannot
forget one: the algorithms come from settings and never from the token header (``alg: none`` and
algorithm confusion are refused by PyJWT when the list is pinned), ``exp`` and ``sub`` are
required, ``aud`` and ``iss`` are checked when configured, ``nbf`` is honoured, and a small leeway
absorbs clock skew. Any failure is one :class:`InvalidToken`, so callers answer one 401.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from exportd.settings import ApiSettings

REQUIRED_CLAIMS = ("exp", "sub")
SCOPE_CLAIMS = ("scope", "scp")


class InvalidToken(Exception):
    """The token is missing, malformed, expired, wrongly signed or lacks a required claim."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and the scopes it grants."""

    sub: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenVerifier:
    key: str
    algorithms: Sequence[str] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: int = 30

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> TokenVerifier:
        return cls(
            key=settings.secret("jwt_secret"),
            algorithms=tuple(settings.jwt_algorithms),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str) -> Principal:
        """The caller a valid token names; :class:`InvalidToken` for anything else."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
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
    secret: str,
    ttl: int = 3600,
    *,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    scopes: Sequence[str] = (),
    now: float | None = None,
) -> str:
    """A signed token for development and tests (``exportd token``)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "nbf": issued, "exp": issued + ttl}
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, secret, algorithm=algorithm)
