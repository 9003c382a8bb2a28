"""HEAD answered like GET without the body (RFC 9110 9.3.2), on every GET route.

FastAPI routes declared with ``@router.get`` take no HEAD, so a client (or a link checker, or
``curl -I``) asking for a download link's size and type got 405. This middleware runs a HEAD
request as GET and passes on the status and headers (``Content-Length`` and ``Content-Type``
included) but no body bytes.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def send_headers_only(message: Message) -> None:
            nonlocal finished
            if finished:
                return
            if message["type"] == "http.response.body":
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
