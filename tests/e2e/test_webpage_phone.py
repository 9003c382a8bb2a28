"""The web page on a phone, by keyboard, checked by axe-core: Chromium at 360, 390 and 414 px.

What is tried, at each width, as one person would: sign in by keyboard, Tab through the export
form (the seed's ``userExport`` offered first, its variables hinted from the catalog), export,
read the credit balance, e-mail an export into the development outbox, start an endless export
and cancel it. What must hold: the page never scrolls sideways, the focus follows the form's
order, the balance and the next credit time show, the cancel ends the export, and axe-core finds
no serious or critical violation. axe-core comes from npm (scripts/fetch-axe.sh); it is run in
the page through the DevTools protocol, so the page's Content-Security-Policy stays as served.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import Server
from tests.e2e.test_webpage import (  # noqa: F401 (the browser fixture)
    _RECORD_CSP_VIOLATIONS,
    WatchedPage,
    browser,
    screenshot,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = [360, 390, 414]
# The form's controls in Tab order, from the export type to the Export button.
FORM_TAB_ORDER = [
    "export-type",
    "var-x",
    "var-y",
    "format-xlsx",
    "delivery-url",
    "file-name",
    "export-button",
]
_ACTIVE = """() => {
  const el = document.activeElement;
  if (el.name === "format" || el.name === "delivery") return `${el.name}-${el.value}`;
  return el.id;
}"""
_SERIOUS = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}"""
_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("body *")]
    .filter((el) => el.getClientRects().length && !el.closest(".table-scroll"))
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`);
  return { scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5) };
}"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    path = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-axe.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.strip()
    return Path(path).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def phone_server(tmp_path_factory: pytest.TempPathFactory, sample_db: Path) -> Iterator[Server]:
    """An embedded server with the default e-mail set-up: no SMTP, so the development outbox."""
    root = tmp_path_factory.mktemp("phone")
    server = Server(root / "data", sample_db, {"EXPORTD_MAX_RUNNING_EXPORTS": "2"})
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def phone(request: pytest.FixtureRequest, browser: Browser) -> Iterator[WatchedPage]:  # noqa: F811
    context = browser.new_context(
        viewport={"width": request.param, "height": 780}, has_touch=True, accept_downloads=True
    )
    context.add_init_script(_RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(20_000)
    watched = WatchedPage(page)
    page.on("dialog", watched.on_dialog)
    page.on("console", watched.on_console)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    try:
        yield watched
    finally:
        context.close()


def assert_no_sideways_scroll(page: Page, where: str) -> None:
    found = page.evaluate(_OVERFLOW)
    assert found["scroll"] <= found["width"], f"{where}: scrolls sideways: {found}"
    assert found["wide"] == [], f"{where}: wider than the screen: {found}"


def assert_axe_clean(page: Page, axe_source: str, where: str) -> None:
    page.evaluate(axe_source)
    assert page.evaluate(_SERIOUS) == [], where


def tab_to(page: Page, target: str, limit: int = 12) -> list[str]:
    """Press Tab until ``target`` has the focus; the ids passed on the way."""
    seen = [page.evaluate(_ACTIVE)]
    while seen[-1] != target:
        assert len(seen) <= limit, f"Tab never reached {target}: {seen}"
        page.keyboard.press("Tab")
        seen.append(page.evaluate(_ACTIVE))
    return seen


def test_the_page_on_a_phone_by_keyboard(
    phone: WatchedPage, phone_server: Server, axe_source: str
) -> None:
    """See the module docstring; the user is new at each width (5 credits)."""
    page = phone.page
    width = page.viewport_size["width"] if page.viewport_size else 0
    user = f"phone{width}"
    page.goto(f"{phone_server.base_url}/")
    assert_no_sideways_scroll(page, "sign-in")
    assert_axe_clean(page, axe_source, "sign-in")

    tab_to(page, "token")
    page.keyboard.type(phone_server.token(user))
    page.keyboard.press("Enter")
    expect(page.locator("#session-user")).to_have_text(user)
    expect(page.locator("#export-type option:checked")).to_have_text("Users by tier")
    expect(page.locator("#var-x-hint")).to_contain_text("Lowest tier included")
    expect(page.locator("#var-x-hint")).to_contain_text("for example 1")
    expect(page.locator("#credits")).to_contain_text("Credits: 5")
    assert page.evaluate(_ACTIVE) == "export-type"  # the form takes the focus
    assert_no_sideways_scroll(page, "form")
    assert_axe_clean(page, axe_source, "form")

    order = []
    for control in FORM_TAB_ORDER:
        order.append(page.evaluate(_ACTIVE))
        if control == "var-x":
            page.keyboard.type("1")
        elif control == "var-y":
            page.keyboard.type("2")
        elif control == "file-name":
            page.keyboard.press("Control+A")
            page.keyboard.type("phone")
        if control != FORM_TAB_ORDER[-1]:
            page.keyboard.press("Tab")
    assert order == FORM_TAB_ORDER
    page.keyboard.press("Enter")  # on the Export button
    expect(page.locator("#progress-text")).to_contain_text("40,000 rows", timeout=120_000)
    expect(page.locator("#download-link")).to_have_text("Download phone.xlsx")
    expect(page.locator("#credits")).to_contain_text("Credits: 4")
    expect(page.locator("#credits")).to_contain_text("Next credit")
    assert_no_sideways_scroll(page, "finished export")

    # E-mail delivery, chosen by keyboard: the development outbox keeps the message.
    page.locator('input[name="delivery"][value="url"]').focus()
    page.keyboard.press("ArrowDown")  # radio group: the next choice, E-mail
    expect(page.locator("#email")).to_be_focused()
    page.keyboard.type(f"{user}@example.com")
    page.keyboard.press("Enter")
    expect(page.locator("#progress-text")).to_contain_text("development outbox", timeout=120_000)
    expect(page.locator("#outbox-list li").first).to_contain_text(f"To {user}@example.com")
    expect(page.locator("#outbox-note")).to_contain_text("Development outbox")

    # Cancel a running export from the progress area, by keyboard.
    page.locator("#export-type").select_option("endlessRows")
    page.locator('input[name="delivery"][value="url"]').check()
    page.get_by_label("n (required)", exact=True).fill(str(10**12))
    page.get_by_label("n (required)", exact=True).press("Enter")
    expect(page.locator("#progress-text")).to_contain_text("rows written so far", timeout=60_000)
    assert_no_sideways_scroll(page, "running export")
    assert_axe_clean(page, axe_source, "running export")
    page.locator("#progress-cancel").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#progress-text")).to_have_text("Cancelled; no file was made.")
    expect(page.locator("#progress-cancel")).to_be_hidden()
    expect(page.locator("#recent-body tr").first).to_contain_text("Cancelled")
    screenshot(page, f"webpage-phone-{width}.png")
    assert_no_sideways_scroll(page, "after cancel")
    assert_axe_clean(page, axe_source, "after cancel")
    phone.assert_clean()
