"""Screenshots of the report page of a seeded demo campaign, at 1366 px, for a reviewer.

    python -m tests.web.ui.report_screenshots OUT_DIR [--database-url URL]

Starts a server on a scratch database (SQLite in a temporary folder unless a URL is
given), seeds the demo world, gives the ended campaign's customers a numeric score so
the Qini section has something to show, signs in with Debian's Chromium and writes
``report-first-screen.png`` (what a reader sees first), ``report-sections-open.png``
(every section open) and ``report-qini.png`` into OUT_DIR. Images are not committed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlmodel import Session

from seeds.demo import seed_demo_world
from tests.liveserver import live_server
from tests.web.ui.conftest import PASSWORD, make_user
from tests.web.ui.test_browser import CHROMIUM
from tests.web.ui.test_report_decision import WIDE, _score_customers


def save_screenshots(out_dir: Path, database_url: str | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as data_dir, \
            live_server(database_url or f"sqlite:///{Path(data_dir) / 'screens.sqlite3'}",
                        Path(data_dir)) as server:
        with Session(server.engine) as session:
            summary = seed_demo_world(session, customers=2_000)
            make_user(session, role="analyst", username="ana")
            _score_customers(session, summary.ended_campaign_id)
            session.commit()
        url = f"{server.url}/campaigns/{summary.ended_campaign_id}/report"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_context(viewport=WIDE).new_page()
            page.goto(f"{server.url}/login")
            page.get_by_label("Username").fill("ana")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{server.url}/")
            page.goto(url)
            page.locator("table.decision-table").wait_for()
            written.append(out_dir / "report-first-screen.png")
            page.screenshot(path=str(written[-1]))
            for summary_element in page.locator("details.report-section > summary").all():
                summary_element.click()
            page.wait_for_timeout(500)  # chart.js draws the charts the sections revealed
            written.append(out_dir / "report-sections-open.png")
            page.screenshot(path=str(written[-1]), full_page=True)
            page.goto(f"{url}?qini=propensity#qini-title")
            page.locator(".chart-qini canvas[data-rendered=true]").wait_for()
            page.wait_for_timeout(500)
            written.append(out_dir / "report-qini.png")
            page.locator("details#section-qini").screenshot(path=str(written[-1]))
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the PNG files into")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL URL to run on a scratch schema (default: SQLite)")
    arguments = parser.parse_args()
    for path in save_screenshots(arguments.out_dir, arguments.database_url):
        print(path)


if __name__ == "__main__":
    main()
