"""The web page: ``GET /`` and its few static files, with the headers that keep it safe.

The page is plain HTML, one script and one stylesheet, all served from this origin, so the
Content-Security-Policy can forbid everything else: no inline script or style, no other origin,
no framing, no plugins, no form posts. Server text reaches the page only through the script,
which inserts it as text (``textContent``), never as markup. The files ship inside the package
(``exportd/api/static``) and are read once; only the names listed in :data:`ASSETS` are served.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response

from exportd.contract.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC_ROUTE = "/static"
INDEX = "index.html"
ASSETS = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "schedules.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def asset(name: str) -> Asset:
    if name not in ASSETS:
        raise NotFound(f"no static file {name!r}", reason="NotFound")
    body = (resources.files("exportd.api") / "static" / name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, ASSETS[name], etag)


def asset_response(request: Request, name: str) -> Response:
    """The file with the security headers; 304 when the browser's copy is current. Browsers
    revalidate every time (``no-cache``): the files are small, and a new version shows at once."""
    found = asset(name)
    headers = {**SECURITY_HEADERS, "ETag": found.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"], summary="The web page")
async def index(request: Request) -> Response:
    return asset_response(request, INDEX)


@router.api_route(f"{STATIC_ROUTE}/{{name}}", methods=["GET", "HEAD"])
async def static_file(request: Request, name: str) -> Response:
    return asset_response(request, name)
