"""The web page in a real browser against a real embedded server (``exportd serve``).

The browser is Debian's ``/usr/bin/chromium`` (installed by scripts/install-system-deps.sh)
driven by Playwright, never a Playwright download. Each test gets a fresh browser context that
records what the page must never do: open a dialog (an injected ``alert``), trip the
Content-Security-Policy, or log a JavaScript error. A screenshot of the finished export is saved
under ``test-artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    expect,
    sync_playwright,
)

from exportd.security.tokens import mint_token
from tests.e2e.conftest import Server
from tests.e2e.test_embedded_seed import COMPARED, expected_rows
from tests.integration.conftest import write_test_catalog

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'
# Export types only these tests need: markup in every text the catalog shows, and data that
# comes back in an error message; and a pattern in Python syntax no browser can compile, so
# only the server checks it.
WEB_TYPES: dict[str, Any] = {
    "xssProbe": {
        "title": f"{XSS_SCRIPT} report",
        "description": f"Shows {XSS_IMG} as text",
        "source": "sample",
        "query": "SELECT CAST(:label AS INTEGER) AS boom",
        "variables": {
            "label": {
                "type": "string",
                "required": True,
                "enum": [XSS_SCRIPT, "plain"],
                "description": f"{XSS_IMG} pick one",
            }
        },
        "metadata": False,
    },
    "serverRule": {
        "title": "Country code (pattern checked by the server)",
        "source": "sample",
        "query": "SELECT :code AS code",
        "variables": {
            "code": {"type": "string", "required": True, "pattern": "^(?P<cc>[A-Z]{2})$"}
        },
        "metadata": False,
    },
}
_RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def write_web_catalog(directory: Path) -> Path:
    path = write_test_catalog(directory)
    catalog = yaml.safe_load(path.read_text(encoding="utf-8"))
    catalog["types"].update(WEB_TYPES)
    path.write_text(yaml.safe_dump(catalog), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory, sample_db: Path) -> Iterator[Server]:
    """One embedded server for a module's browser tests (each test signs in as its own user)."""
    root = tmp_path_factory.mktemp("web")
    env = {
        "EXPORTD_CATALOG_PATH": str(write_web_catalog(root)),
        "EXPORTD_MAX_RUNNING_EXPORTS": "2",
        # One credit per user and two creations a minute: each test's user starts at most one
        # export, except the one that runs into both limits on purpose.
        "EXPORTD_CREDITS_INITIAL": "1",
        "EXPORTD_RATE_LIMIT_CREATE_PER_USER": "2/minute",
    }
    server = Server(root / "data", sample_db, env)
    # Server.env() writes the default test catalog; the explicit path above wins.
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class WatchedPage:
    """A page plus everything it did that a test may want to hold against it."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__cspViolations")
        return found

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_request(self, request: Request) -> None:
        self.requests.append(request)

    def on_console(self, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx answer as a console error; only script errors count here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def assert_clean(self) -> None:
        """No dialog, no policy violation, no script error, no inserted script or image."""
        assert self.dialogs == []
        assert self.csp_violations() == []
        assert self.errors == []
        assert self.page.evaluate("document.scripts.length") == 2  # app.js, schedules.js
        assert self.page.locator("img").count() == 0


@pytest.fixture
def watched(browser: Browser) -> Iterator[WatchedPage]:
    context = browser.new_context(accept_downloads=True)
    context.add_init_script(_RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(20_000)
    watched = WatchedPage(page)
    page.on("dialog", watched.on_dialog)
    page.on("console", watched.on_console)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("request", watched.on_request)
    try:
        yield watched
    finally:
        context.close()


def sign_in(page: Page, server: Server, sub: str) -> None:
    """Open the page, paste a token, and wait until the user's (empty) export list shows."""
    page.goto(f"{server.base_url}/")
    page.get_by_label("Access token").fill(server.token(sub))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#session-user")).to_have_text(sub)
    expect(page.locator("#recent-message")).to_have_text("No exports yet.")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def export_button(page: Page) -> Any:
    return page.get_by_role("button", name="Export", exact=True)


def api_requests(watched: WatchedPage, method: str | None = None) -> list[Request]:
    return [
        r for r in watched.requests if "/v1/" in r.url and (method is None or r.method == method)
    ]


def test_export_from_the_page_shows_progress_to_100_and_downloads_the_xlsx(
    web_server: Server, watched: WatchedPage, sample_db: Path, tmp_path: Path
) -> None:
    """Paste a token, pick userExport, x=1 y=2, Export: the bar reaches 100 % from the event
    stream, Download saves an XLSX with the tier 1-2 users; the stream was read with the bearer
    header (no token in any URL), the token is in session storage only, nothing tripped."""
    page = watched.page
    sign_in(page, web_server, "alice")
    page.get_by_label("Export type").select_option("userExport")
    page.get_by_label("x (required)", exact=True).fill("1")
    page.get_by_label("y (required)", exact=True).fill("2")
    page.get_by_label("File name").fill("myexport")
    export_button(page).click()

    expect(page.locator("#progress-percent")).to_have_text("100%", timeout=120_000)
    assert page.locator("#progress").evaluate("bar => bar.value") == 100
    expect(page.locator("#progress-text")).to_contain_text("40,000 rows")
    row = page.locator("#recent-body tr").first
    expect(row).to_contain_text("myexport.xlsx")
    expect(row).to_contain_text("Succeeded")
    expect(row).to_contain_text("40,000")
    screenshot(page, "webpage-export.png")
    expect(page.locator("#download-link")).to_have_text("Download myexport.xlsx")

    with page.expect_download() as started:
        page.locator("#download-link").click()
    download = started.value
    assert download.suggested_filename == "myexport.xlsx"
    saved = tmp_path / "downloaded.xlsx"
    download.save_as(saved)
    sheet = openpyxl.load_workbook(saved, read_only=True)["Export"].iter_rows(values_only=True)
    header = list(next(sheet))
    indexes = [header.index(name) for name in COMPARED]
    assert [tuple(r[i] for i in indexes) for r in sheet] == expected_rows(sample_db)

    token = web_server.token("alice").split(".")[0]  # the header part: same for every token
    streams = [r for r in api_requests(watched, "GET") if r.url.endswith("/events")]
    assert streams, "progress did not come from the event stream"
    assert all(r.headers["authorization"].startswith("Bearer ") for r in streams)
    assert not any(token in r.url for r in watched.requests)
    assert page.evaluate("sessionStorage.getItem('exportd.token')")
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    watched.assert_clean()


def test_script_in_catalog_texts_and_in_data_renders_as_text(
    web_server: Server, watched: WatchedPage
) -> None:
    """A type whose title, description, variable hint and enum carry <script> and <img onerror>,
    and whose query fails with that text in its error: all of it shows literally, no dialog
    opens, no element is created from it, the policy is never tripped."""
    page = watched.page
    sign_in(page, web_server, "mallory")
    page.get_by_label("Export type").select_option("xssProbe")
    expect(page.locator("#export-type option:checked")).to_have_text(f"{XSS_SCRIPT} report")
    expect(page.locator("#export-type-description")).to_have_text(f"Shows {XSS_IMG} as text")
    expect(page.locator("#var-label-hint")).to_contain_text(f"{XSS_IMG} pick one")
    assert page.locator("#var-label option").all_text_contents() == [XSS_SCRIPT, "plain"]
    page.locator("#var-label").select_option(label=XSS_SCRIPT)
    export_button(page).click()

    text = page.locator("#progress-text")
    expect(text).to_contain_text("Failed", timeout=60_000)
    expect(text).to_contain_text(XSS_SCRIPT)
    expect(page.locator("#recent-body tr").first).to_contain_text(XSS_SCRIPT)
    screenshot(page, "webpage-script-as-text.png")
    watched.assert_clean()


def test_a_bad_variable_is_refused_on_the_form_before_any_request(
    web_server: Server, watched: WatchedPage
) -> None:
    """x above its maximum and y missing: each field shows its own error, the form says nothing
    was sent, and indeed no request left the browser; fixing them lets the export go."""
    page = watched.page
    sign_in(page, web_server, "bob")
    page.get_by_label("Export type").select_option("userExport")
    x = page.get_by_label("x (required)", exact=True)
    x.fill("9")
    before = len(watched.requests)
    export_button(page).click()

    expect(page.locator("#var-x-error")).to_have_text("Must be at most 5.")
    expect(x).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#var-y-error")).to_have_text("This field is required.")
    expect(page.locator("#form-message")).to_contain_text("nothing was sent")
    assert watched.requests[before:] == []
    screenshot(page, "webpage-field-errors.png")
    assert page.evaluate("document.activeElement.id") == "var-x"

    x.fill("1")
    page.get_by_label("y (required)", exact=True).fill("1")
    export_button(page).click()
    expect(page.locator("#form-message")).to_contain_text("accepted")
    assert [r.method for r in api_requests(watched, "POST")] == ["POST"]
    expect(page.locator("#var-x-error")).to_be_hidden()
    watched.assert_clean()


def test_a_rule_only_the_server_checks_shows_the_servers_422_on_the_field(
    web_server: Server, watched: WatchedPage
) -> None:
    """A pattern this browser cannot compile is left to the server: the request goes out, the
    422 comes back, and its message appears on the variable's field and in the form message."""
    page = watched.page
    sign_in(page, web_server, "carol")
    page.get_by_label("Export type").select_option("serverRule")
    page.get_by_label("code (required)", exact=True).fill("a1")
    export_button(page).click()

    error = page.locator("#var-code-error")
    expect(error).to_contain_text("should match pattern")
    expect(page.get_by_label("code (required)", exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    expect(page.locator("#form-message")).to_contain_text("Some values were not accepted")
    posts = api_requests(watched, "POST")
    assert len(posts) == 1
    response = posts[0].response()
    assert response is not None and response.status == 422
    expect(page.locator("#recent-message")).to_have_text("No exports yet.")
    watched.assert_clean()


def test_cancel_in_the_table_stops_a_running_export_and_the_stream_says_so(
    web_server: Server, watched: WatchedPage
) -> None:
    """An endless export is Running (rows growing, the bar indeterminate); after a reload the
    page is still signed in and follows it again; its row's Cancel button cancels it; the
    progress area says Cancelled and the row shows it."""
    page = watched.page
    sign_in(page, web_server, "dave")
    page.get_by_label("Export type").select_option("endlessRows")
    page.get_by_label("n (required)", exact=True).fill(str(10**12))
    page.get_by_label("CSV text (.csv)").check()
    export_button(page).click()

    expect(page.locator("#progress-text")).to_contain_text("rows written so far", timeout=60_000)
    assert page.locator("#progress").evaluate("bar => bar.hasAttribute('value')") is False
    page.reload()  # still signed in (this tab's session storage), and following the export
    expect(page.locator("#progress-file")).to_have_text("endlessRows.csv")
    expect(page.locator("#progress-text")).to_contain_text("rows written so far")
    page.get_by_role("button", name="Cancel endlessRows.csv").click()
    expect(page.locator("#progress-text")).to_have_text("Cancelled; no file was made.")
    expect(page.locator("#recent-body tr").first).to_contain_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel endlessRows.csv")).to_have_count(0)
    watched.assert_clean()


def test_a_refused_token_is_explained_in_words_and_nothing_else_shows(
    web_server: Server, watched: WatchedPage
) -> None:
    """A token signed with another secret: the sign-in form says it was not accepted (401) and
    keeps the export form hidden; nothing is left in session storage."""
    page = watched.page
    page.goto(f"{web_server.base_url}/")
    page.get_by_label("Access token").fill(mint_token("eve", "not-the-server-secret-at-all-0123"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#token-error")).to_contain_text("Your token was not accepted")
    expect(page.locator("#export-section")).to_be_hidden()
    screenshot(page, "webpage-token-refused.png")
    assert page.evaluate("sessionStorage.length") == 0
    watched.assert_clean()


def test_out_of_credits_and_too_many_requests_are_explained_in_words(
    web_server: Server, watched: WatchedPage
) -> None:
    """With one credit a user's second export is refused: 402, shown as no credits left and
    when the next one comes; clicking on, the two-a-minute limit answers 429, shown as too many
    requests with the wait from Retry-After. (Up to five clicks: a fixed window may reset once
    in between, but five clicks cannot all fit in windows of two.)"""
    page = watched.page
    sign_in(page, web_server, "frank")
    page.get_by_label("Export type").select_option("userExport")
    page.get_by_label("x (required)", exact=True).fill("5")
    page.get_by_label("y (required)", exact=True).fill("5")
    message = page.locator("#form-message")
    export_button(page).click()
    expect(message).to_contain_text("accepted")

    export_button(page).click()
    expect(message).to_contain_text("Not enough credits to start an export")
    expect(message).to_contain_text("Your next credit arrives")
    statuses = []
    for _ in range(5):
        with page.expect_response(lambda r: r.request.method == "POST") as answered:
            export_button(page).click()
        statuses.append(answered.value.status)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429, statuses
    retry_after = answered.value.headers["retry-after"]
    expect(message).to_have_text(re.compile(r"^Too many requests\. Try again in \d+ seconds?\.$"))
    assert retry_after.isdigit()
    watched.assert_clean()
