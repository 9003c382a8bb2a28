"""Bearer authentication as a pure ASGI middleware.

It runs before routing and before a single byte of the body is received, so a request without a
valid token costs a header parse and an HMAC, and nothing is ever stored for it. The verified
:class:`~exportd.security.tokens.Principal` travels in the ASGI scope; handlers get it through
:func:`current_principal`. Public paths: probes, the API documents, the root, and the download
route (whose links carry their own signature). ``/v1/exports/{id}/download`` takes a bearer
token when one is sent, and otherwise leaves the check to the route (a handle link's token).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from exportd.api.problems import problem_response
from exportd.security.links import is_download_path
from exportd.security.signing import DOWNLOAD_ROUTE
from exportd.security.tokens import InvalidToken, Principal, TokenVerifier

PRINCIPAL_SCOPE_KEY = "exportd.principal"
PUBLIC_PATHS = frozenset({"/", "/livez", "/readyz", "/metrics", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = (f"{DOWNLOAD_ROUTE}/", "/static/")  # /static: the web page's files
REALM = "exportd"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise InvalidToken("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise InvalidToken("Authorization must be 'Bearer <token>'")
    return token


class BearerAuthMiddleware:
    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        if authorization is None and is_download_path(scope["path"]):
            # A handle link may carry its own token instead; the route checks it (or answers 401).
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.verifier.authenticate(bearer_token(authorization))
        except InvalidToken as exc:
            challenge = f'Bearer realm="{REALM}"'
            if authorization:
                challenge += ', error="invalid_token"'
            response = problem_response(
                401,
                str(exc),
                reason="Unauthenticated",
                headers={"WWW-Authenticate": challenge},
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


# Declared so the OpenAPI document shows the bearer scheme; the middleware does the checking.
_bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A JWT: HS256 by default, or RS256/ES256 verified with a public key or JWKS.",
)


async def current_principal(  # async: FastAPI runs a plain def in its threadpool
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> Principal:
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(principal, Principal):
        raise RuntimeError("route is not behind BearerAuthMiddleware")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
