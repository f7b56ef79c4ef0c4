"""The acceptance story of the marketer UI (issue 5), end to end in a real browser.

Debian's Chromium (headless, driven by Playwright) against a real uvicorn server with two
workers on a fresh database of the run's backend, which holds only the stages, a call
centre with its costs and an administrator. In one walk:

1. the admin signs in, creates the web channel and its cost to serve, a migration goal
   (after-sale questions from the call centre to the web), and a campaign with two
   incentive arms and a control through the wizard: a 150% discount is refused next to
   its field and corrected; the review's detectable lift is checked against statsmodels;
2. the admin schedules and starts the campaign behind its confirmation dialogs, makes a
   storefront API key and opens the (empty) report;
3. a storefront (httpx, with that key) fetches offers for a few hundred customers, which
   exposes and assigns them, and reports interactions on the goal's target channel,
   many more for one arm than for the others;
4. the report refreshes in place (htmx): the exposures per arm are the ones the offers
   answered, the verdict's difference and interval are the ones statsmodels computes from
   the raw counts, and chart.js drew the lift chart (an instance, a size, painted pixels);
5. the XLSX and HTML exports are downloaded through the browser and opened; the dashboard
   shows the headline; an analyst and a viewer are created on the users page; sign out;
6. the analyst sees no edit or lifecycle button and gets the 403 page on the edit and
   status pages; the viewer sees no export link and gets the 403 page on an export; each
   signs out.

Screenshots of the dashboard, the wizard's review and the report are written to
``artifacts/screenshots/acceptance-<step>-<backend>.png``. Any browser console error
fails the test, except the failed loads of the answers the story provokes on purpose
(the 422 of the wrong percentage, the 403s of the denied pages), each declared with its
URL before it is provoked.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, expect, sync_playwright
from scipy.stats import chisquare
from sqlmodel import Session, col, select
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

from analytics.exports import format_pp
from campaigns.models import Arm, Assignment, Campaign, Customer, Role
from campaigns.services.channels import create_channel, ensure_default_stages, set_channel_cost
from tests.liveserver import LiveServer, live_server
from tests.web.ui.conftest import PASSWORD, make_user

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"

ADMIN = "ada"
CAMPAIGN = "Web answers after sale"
GOAL = "After-sale questions on the web"
CONTROL, HEAVY, LIGHT = "control", "fifteen percent", "five euros"
ARMS = (CONTROL, HEAVY, LIGHT)
#: Customers a storefront asks offers for ("a few hundred").
CUSTOMERS = 300
TIERS = ("bronze", "silver", "gold")
#: Share of each arm's customers (by their order within the arm) who then use the web.
ADOPTION_TENTHS = {CONTROL: 2, HEAVY: 6, LIGHT: 3}
#: Milliseconds to wait for a figure computed on the server (busy machines are slow).
SLOW = 30_000
#: Seconds the storefront waits for the started campaign to reach every worker's cache.
EXPOSURE_DEADLINE = 20.0


# --- the server and the browser -----------------------------------------------------------


@pytest.fixture
def server(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    """A two-worker server on a fresh database: stages, a call centre with costs, an admin.

    Everything else (the web channel, the goal, the campaign, keys, users) is made through
    the UI by the test, as a marketer would.
    """
    url, _ = database
    data_dir = tmp_path_factory.mktemp("acceptance")
    with live_server(url, data_dir) as running:
        with Session(running.engine) as session:
            ensure_default_stages(session)
            create_channel(session, actor="test", channel_create={
                "key": "call_centre", "name": "Call centre", "kind": "call_centre"})
            for stage, cost_minor in (("pre_sale", 450), ("after_sale", 650)):
                set_channel_cost(session, actor="test", cost={
                    "channel": "call_centre", "stage": stage, "cost_minor": cost_minor})
            make_user(session, role=Role.ADMIN, username=ADMIN, timezone="Europe/Paris")
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
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          accept_downloads=True)
            context.set_default_timeout(15_000)
            yield context.new_page()
        finally:
            browser.close()


@dataclass
class Console:
    """Every console error and uncaught exception of a page.

    A refused request (422, 403) makes Chromium log "Failed to load resource"; the story
    provokes a few on purpose and declares each with :meth:`expect_refusal` first, so any
    other error, a Content-Security-Policy violation above all, fails the test.
    """

    allowed: set[tuple[str, int]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def expect_refusal(self, url: str, status: int) -> None:
        self.allowed.add((url, status))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if any(where == url and f"status of {status}" in message.text
               for url, status in self.allowed):
            return
        self.errors.append(f"{message.text} ({where})")


def screenshot(page: Page, step: str, backend: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"acceptance-{step}-{backend}.png"), full_page=True)


def sign_in(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    expect(page.locator(".account .who")).to_contain_text(username)


def sign_out(page: Page, url: str) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{url}/login")
    expect(page.get_by_role("status")).to_have_text("You have signed out.")


def nav(page: Page, label: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=label,
                                                            exact=True).click()


# --- 1. channel, cost, goal, wizard -------------------------------------------------------


def create_web_channel_with_cost(page: Page) -> None:
    nav(page, "Channels")
    page.get_by_role("link", name="New channel").click()
    page.get_by_label("Key").fill("web")
    page.get_by_label("Name").fill("Web")
    page.get_by_label("Kind").select_option("web")
    page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("status")).to_contain_text("Channel 'Web' created")
    page.get_by_label("After-sale (EUR per interaction)").fill("0.20")
    page.get_by_role("button", name="Save costs").click()
    expect(page.get_by_role("status")).to_have_text("Costs of Web saved (1 changed).")
    expect(page.get_by_role("row", name=re.compile(r"^Web\b")).get_by_text("€0.20")
           ).to_be_visible()
    expect(page.locator("canvas[data-chart][data-rendered=true]")).to_have_count(1)


def create_goal(page: Page) -> None:
    nav(page, "Goals")
    page.get_by_role("link", name="New goal").click()
    page.get_by_label("Name", exact=True).fill(GOAL)
    page.get_by_label("Stage").select_option("after_sale")
    page.get_by_label("Call centre (call_centre)").check()
    page.get_by_label("Move them to").select_option("web")
    page.get_by_label("Window (days)").fill("30")
    page.get_by_label("Target uplift (percentage points)").fill("5")
    page.get_by_role("button", name="Create goal").click()
    expect(page.get_by_role("status")).to_have_text(f"Goal '{GOAL}' created.")
    row = page.get_by_role("row", name=re.compile(f"^{GOAL}"))
    expect(row).to_contain_text("call_centre")
    expect(row).to_contain_text("+5 pp")


def run_wizard(page: Page, console: Console, server: LiveServer, backend: str) -> int:
    """Goal, audience, two incentive arms (one wrong, then corrected), budget, schedule,
    policy, review; returns the id of the draft it creates."""
    nav(page, "Campaigns")
    page.get_by_role("link", name="New campaign").click()
    goal = page.get_by_label("Migration goal")
    goal.select_option(goal.locator("option", has_text=GOAL).get_attribute("value"))
    page.get_by_label("Campaign name").fill(CAMPAIGN)
    page.get_by_role("button", name="Next: Audience").click()
    expect(page.locator("#audience-count .count-number")).to_have_attribute("data-count", "0")
    page.get_by_role("button", name="Next: Arms and incentives").click()

    page.locator("#f-arm0-name").fill(HEAVY)
    page.locator("#f-arm0-cfg-percent_bp").fill("150")
    page.get_by_role("button", name="Add an arm with an incentive").click()
    expect(page.locator("#f-arm1-name")).to_be_visible()
    page.locator("#f-arm1-type").select_option("fixed_discount")  # htmx redraws the arm
    expect(page.locator("#f-arm1-cfg-amount_minor")).to_be_visible()
    page.locator("#f-arm1-name").fill(LIGHT)
    page.locator("#f-arm1-cfg-amount_minor").fill("5")
    console.expect_refusal(f"{server.url}/campaigns/new", 422)
    page.get_by_role("button", name="Next: Budget and limits").click()
    percent = page.locator("#f-arm0-cfg-percent_bp")
    expect(page.locator("#f-arm0-cfg-percent_bp-error")).to_contain_text(
        "Percent must be between 0.01% and 100%")
    expect(percent).to_have_value("150")  # what was typed stays, next to its message
    expect(percent).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-arm1-name")).to_have_value(LIGHT)
    percent.fill("15")
    page.get_by_role("button", name="Next: Budget and limits").click()

    page.get_by_label("Budget (EUR)").fill("5000")
    page.get_by_label("Redemptions per customer").fill("1")
    page.get_by_role("button", name="Next: Schedule").click()
    expect(page.get_by_text("Europe/Paris", exact=True)).to_be_visible()
    page.get_by_role("button", name="Next: Stacking and guardrails").click()
    page.get_by_role("button", name="Next: Review").click()

    expect(page.get_by_role("heading", name="Can it detect the goal?")).to_be_visible()
    page.get_by_label("Expected customers exposed").fill(str(CUSTOMERS))
    page.get_by_label("Baseline adoption (%)").fill("20")
    page.get_by_role("button", name="Recalculate").click()
    expect(page.locator("table.power caption")).to_contain_text(
        f"with {CUSTOMERS} customers, from a baseline of 20.0%")
    check_detectable_lifts(page)
    expect(page.locator("p.too-small")).to_contain_text("Too small to detect")
    review = page.locator(".wizard-body")
    for shown in (CAMPAIGN, "15% off", "5.00 off", "€5,000.00"):
        expect(review).to_contain_text(shown)
    screenshot(page, "wizard-review", backend)
    page.get_by_role("button", name="Create draft campaign").click()
    expect(page.get_by_role("status")).to_contain_text("created as a draft")
    match = re.search(r"/campaigns/(\d+)$", page.url)
    assert match, page.url
    return int(match.group(1))


def check_detectable_lifts(page: Page) -> None:
    """At the lift the review says each arm can detect, statsmodels finds 80% power."""
    n_control, n_arm = CUSTOMERS * 34 // 100, CUSTOMERS * 33 // 100
    rows = page.locator("table.power tbody tr")
    expect(rows).to_have_count(2)
    for index in range(2):
        row = rows.nth(index)
        expect(row.locator("td").nth(0)).to_have_text(str(n_control))
        expect(row.locator("td").nth(1)).to_have_text(str(n_arm))
        lift = float(row.locator("td.mde").get_attribute("data-mde") or "nan")
        power = NormalIndPower().power(proportion_effectsize(0.2 + lift, 0.2),
                                       nobs1=n_control, ratio=n_arm / n_control, alpha=0.05)
        assert power == pytest.approx(0.8, abs=1e-6), (index, lift)


# --- 2. lifecycle and the API key ---------------------------------------------------------


def confirm_lifecycle(page: Page, button: str, status: str) -> None:
    """Press a lifecycle button, then the same button in the dialog that asks first."""
    page.locator(".lifecycle").get_by_role("link", name=button, exact=True).click()
    dialog = page.locator(f"dialog#confirm-{status}")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(page.get_by_role("status")).to_have_text(f"'{CAMPAIGN}' is now {status}.")
    expect(page.locator("h1 .badge")).to_have_text(status)


def start_campaign(page: Page) -> None:
    expect(page.locator("h1 .badge")).to_have_text("draft")
    # Cancelling the dialog changes nothing.
    page.locator(".lifecycle").get_by_role("link", name="Schedule").click()
    page.locator("dialog#confirm-scheduled").get_by_role("button", name="Cancel").click()
    expect(page.locator("dialog#confirm-scheduled")).to_be_hidden()
    expect(page.locator("h1 .badge")).to_have_text("draft")
    confirm_lifecycle(page, "Schedule", "scheduled")
    confirm_lifecycle(page, "Start now", "running")
    expect(page.locator(".lifecycle")).to_contain_text("Pause")


def create_storefront_key(page: Page) -> str:
    nav(page, "API keys")
    page.get_by_role("link", name="New API key").click()
    page.get_by_label("Name").fill("web shop (acceptance)")
    page.locator("#f-scope-storefront").check()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="API key created")).to_be_visible()
    secret = page.get_by_label("Secret").input_value()
    assert len(secret) >= 20, secret
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_role("row", name=re.compile(r"^web shop \(acceptance\)"))
           ).to_contain_text("storefront")
    return secret


# --- 3. a storefront's traffic --------------------------------------------------------------


@dataclass
class Traffic:
    """What the storefront saw and sent: each customer's arm, and who then used the web."""

    arms: dict[str, str]
    adopters: set[str]

    def exposed(self, arm: str) -> int:
        return sum(1 for name in self.arms.values() if name == arm)

    def adopted(self, arm: str) -> int:
        return sum(1 for customer in self.adopters if self.arms[customer] == arm)


def documented_arm(salt: str, customer: str, arms: list[tuple[str, int]]) -> str:
    """The arm the hash documented in ``campaigns/assignment.py`` picks, written out here:
    the first 8 bytes of SHA-256 of "salt:period:customer", scaled to the total weight."""
    bucket = int.from_bytes(hashlib.sha256(f"{salt}:1:{customer}".encode()).digest()[:8], "big")
    point = (bucket * sum(weight for _, weight in arms)) >> 64
    for name, cumulative in zip([name for name, _ in arms],
                                accumulate(weight for _, weight in arms), strict=True):
        if point < cumulative:
            return name
    raise AssertionError(f"no arm for point {point}")


def campaign_design(server: LiveServer, campaign_id: int) -> tuple[str, list[tuple[str, int]]]:
    """The campaign's salt and its (arm, weight) pairs in position order."""
    with Session(server.engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        arms = session.exec(select(Arm.name, Arm.weight).where(Arm.campaign_id == campaign_id)
                            .order_by(col(Arm.position))).all()
        return campaign.salt, [(name, weight) for name, weight in arms]


def assigned_arms(server: LiveServer, campaign_id: int) -> dict[str, str]:
    """Customer external id -> arm name, as the database recorded the assignments."""
    with Session(server.engine) as session:
        rows = session.exec(
            select(Customer.external_id, Arm.name)
            .join(Assignment, col(Assignment.customer_id) == col(Customer.id))
            .join(Arm, col(Arm.id) == col(Assignment.arm_id))
            .where(Assignment.campaign_id == campaign_id)).all()
    return dict(rows)


def fetch_offers(client: httpx.Client, customer: str, index: int, campaign_id: int
                 ) -> str | None:
    """The arm whose offer the customer got from the campaign (None: no offer)."""
    response = client.get(f"/api/v1/customers/{customer}/offers", params={
        "channel": "call_centre", "stage": "after_sale", "value_tier": TIERS[index % 3],
        "preferred_channel": "call_centre", "tenure_months": 12 + index % 24})
    assert response.status_code == 200, response.text
    offers = [offer for offer in response.json()["offers"]
              if offer["campaign_id"] == campaign_id]
    assert len(offers) <= 1, offers
    return offers[0]["arm"] if offers else None


def expose_customers(client: httpx.Client, server: LiveServer, campaign_id: int
                     ) -> dict[str, str]:
    """Ask offers for every customer until each is assigned (a worker may briefly serve
    its cached configuration from before the start); check the answers against the
    assignments the database recorded."""
    customers = [f"ACC{index:04d}" for index in range(CUSTOMERS)]
    offered: dict[str, str | None] = {}
    deadline = time.monotonic() + EXPOSURE_DEADLINE
    assigned: dict[str, str] = {}
    while True:
        for index, customer in enumerate(customers):
            if customer not in assigned:
                offered[customer] = fetch_offers(client, customer, index, campaign_id)
        assigned = assigned_arms(server, campaign_id)
        if len(assigned) == CUSTOMERS or time.monotonic() > deadline:
            break
    assert len(assigned) == CUSTOMERS, f"{len(assigned)} of {CUSTOMERS} assigned"
    salt, design = campaign_design(server, campaign_id)
    assert design == [(CONTROL, 34), (HEAVY, 33), (LIGHT, 33)]
    for customer, arm in assigned.items():
        # A treatment arm's customer got its offer; the control group got none.
        assert offered[customer] == (None if arm == CONTROL else arm), customer
        assert arm == documented_arm(salt, customer, design), customer
    return assigned


def report_interactions(client: httpx.Client, arms: dict[str, str]) -> set[str]:
    """One after-sale interaction per customer: on the web for the adopters (chosen by their
    order within their arm), at the call centre for the others; returns the adopters."""
    position: Counter[str] = Counter()
    adopters: set[str] = set()
    events: list[dict[str, Any]] = []
    now = datetime.now(UTC).isoformat()
    for customer in sorted(arms):
        arm = arms[customer]
        adopts = position[arm] % 10 < ADOPTION_TENTHS[arm]
        position[arm] += 1
        if adopts:
            adopters.add(customer)
        events.append({"type": "interaction", "event_id": f"acceptance-{customer}",
                       "customer_id": customer, "stage": "after_sale",
                       "channel": "web" if adopts else "call_centre", "occurred_at": now})
    response = client.post("/api/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": CUSTOMERS, "duplicates": 0,
                               "batch_size": CUSTOMERS}
    return adopters


def storefront_traffic(server: LiveServer, secret: str, campaign_id: int) -> Traffic:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {secret}"}) as client:
        arms = expose_customers(client, server, campaign_id)
        adopters = report_interactions(client, arms)
    counts = Counter(arms.values())
    assert set(counts) == set(ARMS) and min(counts.values()) >= 60, counts
    return Traffic(arms=arms, adopters=adopters)


# --- 4. the report ------------------------------------------------------------------------


def expected_verdict(traffic: Traffic, arm: str) -> str:
    """The difference and 95% Wald interval of the arm's adoption against control,
    computed by statsmodels from the raw counts the storefront produced."""
    arm_n, arm_k = traffic.exposed(arm), traffic.adopted(arm)
    control_n, control_k = traffic.exposed(CONTROL), traffic.adopted(CONTROL)
    low, high = confint_proportions_2indep(arm_k, arm_n, control_k, control_n,
                                           method="wald", compare="diff")
    diff = arm_k / arm_n - control_k / control_n
    return (f"a difference of {format_pp(diff)} (95% interval {format_pp(low)} to "
            f"{format_pp(high)})")


CHART_PAINTED = """(canvas) => {
  const chart = window.Chart && window.Chart.getChart(canvas);
  if (!chart || !canvas.width || !canvas.height) return false;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1;
  return painted > 2000 ? {painted, labels: chart.data.labels} : false;
}"""


def fact(scope: Locator, term: str) -> Locator:
    """The value (<dd>) of a term in a page's facts list."""
    return scope.locator("dl.facts > div").filter(
        has=scope.page.locator("dt", has_text=re.compile(f"^{term}$"))).locator("dd")


def check_report(page: Page, traffic: Traffic) -> None:
    live = page.locator("#report-live")
    sizes = live.locator("details#section-sizes")
    if sizes.get_attribute("open") is None:  # details are folded under the decision
        sizes.locator("summary").click()
    arms_table = live.locator("table.arms")
    expect(fact(live, "Customers exposed")).to_have_text(str(CUSTOMERS))
    for arm in ARMS:
        row = arms_table.get_by_role("row", name=re.compile(f"^{arm} "))
        expect(row.locator("td").nth(2)).to_have_text(str(traffic.exposed(arm)))
    # the sample ratio check, against scipy's chi-square test of the counts on the weights
    counts = [traffic.exposed(arm) for arm in ARMS]
    p_value = chisquare(counts, [CUSTOMERS * w / 100 for w in (34, 33, 33)]).pvalue
    expect(arms_table.locator("caption")).to_have_text(
        f"Sample ratio check passed: chi-square p = {p_value:.3g} (flagged below 0.001)."
        if p_value >= 0.001 else f"SAMPLE RATIO MISMATCH: chi-square p = {p_value:.3g} is "
        "below 0.001.")
    verdicts = live.locator("li.verdict-card")
    expect(verdicts).to_have_count(2)
    heavy = verdicts.filter(has_text=f"{HEAVY}:")
    # The campaign is still running: every verdict is interim.
    expect(heavy.locator(".verdict")).to_have_text("interim: credible lift")
    expect(heavy).to_contain_text(expected_verdict(traffic, HEAVY))
    light = verdicts.filter(has_text=f"{LIGHT}:")
    expect(light).to_contain_text(expected_verdict(traffic, LIGHT))
    expect(light.locator(".verdict")).not_to_have_text("interim: credible lift")

    canvases = live.locator("canvas[data-report-chart]")
    expect(live.locator(".chart-lift canvas[data-rendered=true]")).to_have_count(1)
    expect(live.locator("canvas[data-report-chart][data-rendered=true]")).to_have_count(
        canvases.count())
    lift = live.locator(".chart-lift canvas")
    box = lift.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100, box
    drawn = page.wait_for_function(CHART_PAINTED, arg=lift.element_handle()).json_value()
    assert f"{HEAVY} · Adopted the target channel" in drawn["labels"], drawn


def open_report_and_watch_it_update(page: Page, server: LiveServer, secret: str,
                                    campaign_id: int, backend: str) -> Traffic:
    page.get_by_role("link", name="Report", exact=True).click()
    expect(page).to_have_url(f"{server.url}/campaigns/{campaign_id}/report")
    expect(page.locator("#report-live .empty-report")).to_contain_text(
        "No customer has been exposed yet")
    traffic = storefront_traffic(server, secret, campaign_id)
    with page.expect_response(lambda response: "/report/live" in response.url) as refreshed:
        page.get_by_role("link", name="Refresh").click()  # htmx swaps the figures in
    assert refreshed.value.status == 200
    expect(page).to_have_url(f"{server.url}/campaigns/{campaign_id}/report")  # no reload
    expect(page.locator("#report-live .empty-report")).to_have_count(0, timeout=SLOW)
    check_report(page, traffic)
    screenshot(page, "report", backend)
    return traffic


def download(page: Page, link: str, folder: Path) -> Path:
    with page.expect_download() as started:
        page.locator("nav.downloads").get_by_role("link", name=link, exact=True).click()
    path = folder / started.value.suggested_filename
    started.value.save_as(path)
    return path


def check_exports(page: Page, campaign_id: int, folder: Path) -> None:
    xlsx = download(page, "XLSX", folder)
    assert xlsx.name.startswith(f"campaign-{campaign_id}-report-") and xlsx.suffix == ".xlsx"
    workbook = openpyxl.load_workbook(xlsx, read_only=True)
    assert "summary" in workbook.sheetnames, workbook.sheetnames
    texts = {cell for sheet in workbook.worksheets for row in sheet.iter_rows(values_only=True)
             for cell in row if isinstance(cell, str)}
    assert set(ARMS) <= texts, sorted(texts)[:50]
    assert CAMPAIGN in texts

    report = download(page, "HTML report", folder)
    assert report.suffix == ".html"
    html = report.read_text(encoding="utf-8")
    assert "<svg" in html and CAMPAIGN in html
    opened = page.context.new_page()
    try:
        opened.goto(report.as_uri())
        expect(opened.locator("svg").first).to_be_visible()
        expect(opened.get_by_text(CAMPAIGN).first).to_be_visible()
    finally:
        opened.close()


def check_dashboard(page: Page, backend: str) -> None:
    nav(page, "Dashboard")
    expect(page.get_by_role("heading", name="Running", level=2)).to_be_visible()
    card = page.locator("article.card").filter(has_text=CAMPAIGN)
    expect(fact(card, "Customers exposed")).to_have_text(str(CUSTOMERS))
    headline = card.locator("table.headline")  # loaded by htmx once the page is shown
    expect(headline).to_be_visible(timeout=SLOW)
    expect(headline.get_by_role("row", name=re.compile(f"^{HEAVY}"))
           .locator(".verdict")).to_be_visible()
    screenshot(page, "dashboard", backend)


def create_user(page: Page, username: str, role: Role) -> None:
    nav(page, "Users")
    page.get_by_role("link", name="New user").click()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.locator(f"#f-role-{role.value}").check()
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status")).to_have_text(
        f"User '{username}' ({role.value}) created.")


# --- 6. roles that may not -----------------------------------------------------------------


def expect_denied(page: Page, console: Console, url: str) -> None:
    console.expect_refusal(url, 403)
    response = page.goto(url)
    assert response is not None and response.status == 403, url
    expect(page.get_by_role("heading", name="Access denied", level=1)).to_be_visible()


def analyst_cannot_edit(page: Page, console: Console, server: LiveServer,
                        campaign_id: int) -> None:
    sign_in(page, server.url, "ana")
    nav(page, "Campaigns")
    page.get_by_role("link", name=CAMPAIGN, exact=True).click()
    expect(page.get_by_role("heading", name=CAMPAIGN, level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Report", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Edit", exact=True)).to_have_count(0)
    expect(page.locator(".lifecycle")).to_have_count(0)
    for name in ("Pause", "End"):
        expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
    # The analyst may export: the report offers the downloads.
    page.get_by_role("link", name="Report", exact=True).click()
    expect(page.locator("nav.downloads").get_by_role("link", name="XLSX")).to_be_visible()
    base = f"{server.url}/campaigns/{campaign_id}"
    expect_denied(page, console, f"{base}/edit")
    expect(page.get_by_text("signed in as ana (analyst)")).to_be_visible()
    expect_denied(page, console, f"{base}/status?to=paused")
    expect(page.locator("form[action$='/status']")).to_have_count(0)
    sign_out(page, server.url)


def viewer_cannot_export(page: Page, console: Console, server: LiveServer,
                         campaign_id: int) -> None:
    sign_in(page, server.url, "vic")
    page.goto(f"{server.url}/campaigns/{campaign_id}/report")
    expect(page.locator("#report-live li.verdict-card")).to_have_count(2)
    expect(page.locator("nav.downloads")).to_have_count(0)
    for suffix in ("csv", "xlsx", "html"):
        expect(page.locator(f"a[href*='report.{suffix}']")).to_have_count(0)
    expect_denied(page, console, f"{server.url}/campaigns/{campaign_id}/report.xlsx")
    expect(page.get_by_text(HEAVY)).to_have_count(0)  # the denial shows no report data
    sign_out(page, server.url)


# --- the story ------------------------------------------------------------------------------


@contextmanager
def no_console_errors(page: Page) -> Iterator[Console]:
    console = Console()
    console.watch(page)
    yield console
    assert console.errors == [], console.errors


def test_acceptance_story(server: LiveServer, page: Page, backend: str,
                          tmp_path: Path) -> None:
    with no_console_errors(page) as console:
        # An anonymous visitor is sent to sign in first.
        page.goto(f"{server.url}/campaigns")
        expect(page).to_have_url(f"{server.url}/login?next=%2Fcampaigns")
        sign_in(page, server.url, ADMIN)

        create_web_channel_with_cost(page)
        create_goal(page)
        campaign_id = run_wizard(page, console, server, backend)
        start_campaign(page)
        with Session(server.engine) as session:
            campaign = session.get(Campaign, campaign_id)
            assert campaign is not None and campaign.status == "running"
            assert campaign.starts_at is not None
            assert campaign.starts_at <= datetime.now(UTC)  # "Start now" started it now
        secret = create_storefront_key(page)

        nav(page, "Campaigns")
        page.get_by_role("link", name=CAMPAIGN, exact=True).click()
        open_report_and_watch_it_update(page, server, secret, campaign_id, backend)
        check_exports(page, campaign_id, tmp_path)
        check_dashboard(page, backend)
        create_user(page, "ana", Role.ANALYST)
        create_user(page, "vic", Role.VIEWER)
        sign_out(page, server.url)

        analyst_cannot_edit(page, console, server, campaign_id)
        viewer_cannot_export(page, console, server, campaign_id)
