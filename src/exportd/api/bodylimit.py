"""Request bodies of at most ``max_body_bytes`` (64 KB): 413 problem+json beyond it.

An export request is a few hundred bytes; nothing the API accepts comes near the limit, so a
larger body is a mistake or an attack, and it is refused before a route parses it. A declared
``Content-Length`` over the limit is refused without reading a byte; a body without one (chunked)
is read only up to the limit and refused as soon as it passes it. Within the limit the body is
buffered once and handed to the route unchanged. Requests that carry no body (GET, HEAD,
OPTIONS) pass straight through, so long-lived GETs (event streams) keep their disconnect events.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exportd.api.problems import problem_response
from exportd.contract.errors import FieldError

BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODYLESS_METHODS:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise BodyTooLarge
            body, disconnected = await self._read(receive)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, _replay(body, disconnected, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks), True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        response = problem_response(
            413,
            message,
            reason="BodyTooLarge",
            errors=[FieldError("body", message)],
            headers={"Connection": "close"},
            instance=scope["path"],
        )
        await response(scope, receive, send)


def _replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """A receive that yields the buffered body once, then defers to the real one."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
