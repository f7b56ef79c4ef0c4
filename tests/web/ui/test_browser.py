"""A real browser (Debian's Chromium, headless, driven by Playwright) against a real server.

Signs in, sees the dashboard of a seeded demo world with its statistics loaded by htmx,
sets a channel cost, and signs out; a screenshot of the dashboard is written to
``artifacts/screenshots/``. Console errors fail the test: a Content-Security-Policy
violation (an inline script, a blocked asset) shows up there first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlmodel import Session

from campaigns.services.channels import cost_table
from seeds.demo import seed_demo_world
from tests.liveserver import LiveServer, live_server
from tests.web.ui.conftest import PASSWORD, make_user

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def server(database, tmp_path_factory) -> Iterator[LiveServer]:
    """A two-worker server on a fresh database of the run's backend, with the demo world.

    No signing key is configured, so the workers share the key file they make in the data
    folder on first use: a session started on one worker must be valid on the other.
    """
    url, _ = database
    data_dir = tmp_path_factory.mktemp("ui-live")
    with live_server(url, data_dir) as running:
        with Session(running.engine) as session:
            seed_demo_world(session, customers=1_000)
            make_user(session, role="marketer", username="mara", timezone="Europe/Paris")
            session.commit()
        yield running


@pytest.fixture
def page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(`apt-get install chromium`; `make test` does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def test_sign_in_dashboard_channel_cost_sign_out(server: LiveServer, page: Page,
                                                 backend: str) -> None:
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(f"{server.url}/channels")
    expect(page).to_have_url(f"{server.url}/login?next=%2Fchannels")
    page.get_by_label("Username").fill("mara")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/channels")

    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    for status in ("Running", "Draft", "Ended"):
        expect(page.get_by_role("heading", name=status, level=2)).to_be_visible()
    # Both exposed campaigns load their headline (htmx) with a verdict for every arm.
    expect(page.locator("table.headline")).to_have_count(2, timeout=30_000)
    expect(page.locator("table.headline .verdict").first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{backend}.png"), full_page=True)

    nav.get_by_role("link", name="Channels").click()
    expect(page.locator("canvas[data-chart][data-rendered=true]")).to_have_count(1)
    page.get_by_role("link", name="Costs of Web").click()
    field = page.get_by_label("After-sale (EUR per interaction)")
    field.fill("0.195")
    page.get_by_role("button", name="Save costs").click()
    expect(page.locator("#f-cost_after_sale-error")).to_contain_text("at most 2 decimals")
    expect(field).to_have_value("0.195")
    field.fill("0.19")
    page.get_by_role("button", name="Save costs").click()
    expect(page.get_by_role("status")).to_have_text("Costs of Web saved (1 changed).")
    expect(page.get_by_role("row", name="Web").get_by_text("€0.19")).to_be_visible()
    with Session(server.engine) as session:
        assert cost_table(session)[("web", "after_sale")] == 19

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{server.url}/login")
    expect(page.get_by_role("status")).to_have_text("You have signed out.")
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/login")
    # The failed save above answered 422, which the browser logs; nothing else may.
    unexpected = [text for text in problems if "422" not in text]
    assert unexpected == [], unexpected

