"""The web page's files, headers and rules, and the event stream's framing, without a browser.

What is tried: ``GET /`` and ``/static/...`` through the app in-process (no token), the shipped
HTML and script read as text, and the pure helpers of the event stream.
What must hold: a strict Content-Security-Policy and the other security headers on every page
response; only the listed files are served; the HTML has no inline script, style or event
handler and loads nothing from another origin; the script never turns text into markup; the
files are package data; event ids name states (equal statuses, equal ids; the signed link does
not count) and messages are framed as SSE.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import make_settings

from exportd.api import create_app
from exportd.api.routes.events import format_event, percent_of, state_id
from exportd.api.routes.page import ASSETS, CONTENT_SECURITY_POLICY
from exportd.contract.spec import ExportStatus, Phase

STATIC = resources.files("exportd.api") / "static"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path, sample_db: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app without its lifespan: the page needs no backend, and no token."""
    app = create_app(make_settings(tmp_path / "data", sample_db))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as opened:
        yield opened


def assert_security_headers(response: httpx.Response) -> None:
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.anyio
async def test_the_page_is_public_html_with_strict_security_headers(
    client: httpx.AsyncClient,
) -> None:
    """GET / without a token: 200 HTML that loads its script and stylesheet, with the CSP."""
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/static/app.js" defer></script>' in response.text
    assert_security_headers(response)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_are_public_typed_and_revalidated(
    client: httpx.AsyncClient, name: str, media_type: str
) -> None:
    """Each listed file: 200 with its type, the security headers and an ETag; asking again with
    that ETag answers 304 with no body."""
    response = await client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (STATIC / name).read_bytes()
    assert_security_headers(response)
    again = await client.get(f"/static/{name}", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/static/nope.js", "/static/index.htm", "/static/..%2Fapp.py", "/static/"]
)
async def test_only_listed_static_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    """Unknown names and traversal attempts are 404 (no token needed to learn that)."""
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.anyio
async def test_the_event_stream_needs_a_token(client: httpx.AsyncClient) -> None:
    """The page is public; the export's event stream is not: 401 before any work."""
    response = await client.get("/v1/exports/exp-1/events")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


class _Markup(HTMLParser):
    """Collects what could run or style inline, and every URL the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_code: list[str] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "style":
            self.inline_code.append("<style>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline_code.append(f"{tag} {name}={value}")
            if name in ("src", "href", "action") and value is not None:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_code.append(data)


SCRIPTS = ("app.js", "schedules.js")


def test_the_html_has_no_inline_code_and_loads_only_from_this_origin() -> None:
    """No inline script, <style>, style= or on*= attribute (the CSP would block them anyway);
    the one script is external; every URL is a same-origin path or a fragment."""
    markup = _Markup()
    markup.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    assert markup.inline_code == []
    assert [s.get("src") for s in markup.scripts] == ["/static/app.js", "/static/schedules.js"]
    assert markup.urls and all(re.match(r"^(/[a-z]|#)", url) for url in markup.urls)


def test_the_script_never_turns_text_into_markup_or_code() -> None:
    """app.js (and schedules.js) use none of the sinks that parse strings as HTML or code."""
    script = "".join((STATIC / name).read_text(encoding="utf-8") for name in SCRIPTS)
    sinks = [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setTimeout("',
        "DOMParser",
        "createContextualFragment",
    ]
    assert [sink for sink in sinks if sink in script] == []
    assert "localStorage" not in script and "document.cookie" not in script
    assert "sessionStorage" in script


def test_every_served_file_is_package_data() -> None:
    """pyproject ships api/static/*, and that pattern covers every file the page route serves."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["exportd"]
    for name in ASSETS:
        assert (STATIC / name).is_file()
        assert any(fnmatch.fnmatch(f"api/static/{name}", p) for p in patterns), name


def test_the_policy_forbids_framing_plugins_and_foreign_origins() -> None:
    """Nothing in the policy names another origin or a scheme wildcard."""
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert not re.search(r"https?:|\*|data:|blob:", CONTENT_SECURITY_POLICY)


def _status(**changes: Any) -> ExportStatus:
    return ExportStatus(phase=Phase.RUNNING, rows=10, attempts=1).evolve(**changes)


def test_event_ids_name_states_not_reads() -> None:
    """Equal statuses give equal ids; a different row count or phase gives another id; the
    signed link and its expiry (fresh on every read) do not change the id."""
    assert state_id(_status()) == state_id(_status())
    assert state_id(_status()) != state_id(_status(rows=11))
    assert state_id(_status()) != state_id(_status(phase=Phase.SUCCEEDED))
    assert state_id(_status(url="http://x/1")) == state_id(_status(url="http://x/2"))
    assert re.fullmatch(r"[0-9a-f]{24}", state_id(_status()))


def test_percent_is_known_only_while_waiting_and_when_done() -> None:
    assert percent_of(Phase.PENDING) == percent_of(Phase.QUEUED) == 0
    assert percent_of(Phase.SUCCEEDED) == 100
    assert percent_of(Phase.RUNNING) is None
    assert percent_of(Phase.FAILED) is None and percent_of(Phase.CANCELLED) is None


def test_an_event_is_one_sse_message_with_single_line_json() -> None:
    """id, event and data lines, then a blank line; a line break in the data stays escaped."""
    text = format_event("abc", "status", {"message": "two\nlines", "name": "<b>é</b>"})
    assert text == 'id: abc\nevent: status\ndata: {"message":"two\\nlines","name":"<b>é</b>"}\n\n'
