"""The page's schedules section in a real browser against a real embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Server
from tests.e2e.test_webpage import (  # noqa: F401
    WatchedPage,
    browser,
    sign_in,
    watched,
    web_server,
)

pytestmark = pytest.mark.e2e


def test_schedules_can_be_created_paused_run_and_deleted_from_the_page(
    web_server: Server,  # noqa: F811
    watched: WatchedPage,  # noqa: F811
    sample_db: Path,
) -> None:
    """Sign in, fill the schedule form (daily at 07:00 Berlin, menu categories as CSV), create:
    the schedule's row shows its cron and next run; Pause shows it paused; Run now lists a
    started run; Delete empties the table. Must hold throughout: no dialog, no policy
    violation, no script error."""
    page = watched.page
    sign_in(page, web_server, "scheduler-user")
    section = page.locator("#schedules-section")
    expect(section).to_be_visible()
    expect(page.locator("#schedule-body")).to_contain_text("No schedules yet.")
    page.get_by_label("Schedule name").fill("Morning menus")
    page.get_by_label("Cron schedule").fill("0 7 * * *")
    page.get_by_label("Schedule time zone").fill("Europe/Berlin")
    page.get_by_label("Type to run").select_option("menuCategoriesByMuscle")
    page.get_by_label("Name of each file").fill("menus.csv")
    page.get_by_label("Values (JSON)").fill('{"a": "muscle1", "b": "muscle2"}')
    page.get_by_role("button", name="Create schedule").click()
    row = page.locator("#schedule-body tr").first
    expect(row).to_contain_text("Morning menus")
    expect(row).to_contain_text("0 7 * * * (Europe/Berlin)")
    expect(row).to_contain_text("no runs yet")

    row.get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused")
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    row.get_by_role("button", name="Run now").click()
    expect(row).to_contain_text("started")
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#schedule-body")).to_contain_text("No schedules yet.")

    # A bad cron is refused with the field named.
    page.get_by_label("Cron schedule").fill("0 25 * * *")
    page.locator("#schedule-file").fill("menus.csv")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#schedule-message")).to_contain_text("schedule:")
    watched.assert_clean()
