"""The web page in a real browser against a real embedded server (``exportd serve``).

The browser is Debian's ``/usr/bin/chromium`` (installed by scripts/install-system-deps.sh)
driven by Playwright, never a Playwright download. Each test gets a fresh browser context that
records what the page must never do: open a dialog (an injected ``alert``), trip the
Content-Security-Policy, or log a JavaScript error. A screenshot of the finished export is saved
under ``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, Request, expect
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import Server
from tests.integration.conftest import write_test_catalog

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
        "EXPORTD_CREDITS_ENABLED": "false",
        "EXPORTD_MAX_RUNNING_EXPORTS": "2",
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

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_clean(self) -> None:
        """No dialog, no policy violation, no script error, no inserted script or image."""
        assert self.dialogs == []
        assert self.csp_violations() == []
        assert self.errors == []
        assert self.page.evaluate("document.scripts.length") == 1
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
    page.on("request", watched.requests.append)
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
