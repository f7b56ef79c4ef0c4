"""The report page reads top-down (issue 27 item 14): the decision first, details folded.

Figures are checked against the analytics they come from (economics, Qini) and against
statsmodels on the raw counts; money against Babel's digits for the currency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import date

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlmodel import Session, select
from statsmodels.stats.proportion import confint_proportions_2indep

from analytics.exports import format_money, format_percent, format_pp, interval_text
from analytics.report import SpendPoint, build_report
from analytics.segments import qini
from campaigns.models import Assignment, Campaign, Customer, Role
from tests.builders import make_running_campaign
from tests.web.ui.conftest import PASSWORD
from tests.web.ui.test_browser import ARTIFACTS, CHROMIUM
from tests.web.ui.test_report_pages import (  # noqa: F401  (report_server: a fixture)
    charts_on,
    expose,
    report_server,
    text,
)
from web.ui.pages.reports import metric_units, spend_chart


@pytest.fixture
def experiment(session: Session):
    """Control 40 of 200 adopted the web, treatment 80 of 220 (as the report page tests)."""
    campaign = make_running_campaign(session)
    expose(session, campaign, "control", customers=200, adopters=40, prefix="C")
    expose(session, campaign, "ten percent", customers=220, adopters=80, prefix="T")
    return campaign


def decision_html(html: str) -> str:
    match = re.search(r'<section class="decision".*?</section>', html, re.S)
    assert match, "the page has no decision section"
    return match.group(0)


def decision_row(html: str, arm: str) -> list[str]:
    row = re.search(rf'<tr><th scope="row">{re.escape(arm)}</th>(.*?)</tr>',
                    decision_html(html), re.S)
    assert row, arm
    return [text(cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]


def decision_columns(html: str) -> list[str]:
    return re.findall(r'<th scope="col" data-column="(\w+)">', decision_html(html))


class TestDecisionFirst:
    def test_each_arm_s_verdict_lift_cost_and_net_benefit(self, session, experiment,
                                                          as_role) -> None:
        html = as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text
        # The decision comes before every folded section and every table of detail.
        assert html.index('<section class="decision"') \
            < html.index('<details class="report-section"')
        assert decision_columns(html) == ["verdict", "lift", "relative_lift",
                                          "cost_per_migration", "net_benefit", "chance",
                                          "power"]
        low, high = confint_proportions_2indep(80, 220, 40, 200, method="wald",
                                               compare="diff")
        cells = decision_row(html, "ten percent")
        assert cells[0] == "interim: credible lift"  # the campaign is still running
        assert cells[1] == f"{format_pp(80 / 220 - 40 / 200)} {format_pp(low)} to " \
                           f"{format_pp(high)}"
        report = build_report(session.connection(), experiment.id)
        economics = {e.metric: e for e in report.economics if e.arm == "ten percent"}
        for cell, metric in ((cells[3], "incentive_cost_per_incremental_migration"),
                             (cells[4], "net_benefit")):
            result = economics[metric]
            if result.estimate is None:
                assert cell.startswith("\u2013")
            else:
                assert cell == (f"{format_money(result.estimate, 'EUR')} " + interval_text(
                    result.ci_low, result.ci_high, lambda v: format_money(v, "EUR")))
        primary = next(r for r in report.results
                       if r.arm == "ten percent" and r.metric == "adoption")
        assert primary.bayesian is not None
        assert cells[5].startswith(format_percent(primary.bayesian.chance_to_beat_baseline))
        power = next(p for p in report.power if p.arm == "ten percent" and p.metric == "adoption")
        assert cells[6].startswith(format_pp(power.effect.mde).lstrip("+"))
        health = dict(re.findall(r'data-health="(\w+)"><strong>[^<]*</strong> ([^<]*)</li>',
                                 decision_html(html)))
        assert health["srm"].startswith("Sample ratio check passed")
        assert "running" in health["interim"]
        assert health["guardrails"].startswith("No harm detected")

    def test_details_follow_in_collapsible_sections(self, experiment, as_role) -> None:
        html = as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text
        sections = re.findall(r'<details class="report-section" id="section-(\w+)" '
                              r'data-section="\w+"( open)?>\s*<summary><h2 id="(\w+)-title">',
                              html)
        keys = [key for key, _, _ in sections]
        assert keys == ["results", "segments", "power", "economics", "guardrails",
                        "timeline", "sizes", "methods"]
        assert all(not opened for _, opened, _ in sections)  # folded until asked
        assert set(charts_on(html)) == {"lift", "adoption", "segments", "spend"}

    def test_the_segment_table_and_methods_agree_on_holm(self, experiment, as_role) -> None:
        html = as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text
        caption = re.search(r'<table class="segments">\s*<caption>(.*?)</caption>', html, re.S)
        assert caption and ("Holm step-down (family-wise error rate) correction across the whole "
                            "table, every value tier") in text(caption.group(1))
        methods = text(html[html.index('id="methods-title"'):])
        assert "Segment breakdown (value_tier)" in methods
        assert "Holm step-down (family-wise error rate) correction across the breakdown's" \
            in methods

    def test_the_lift_chart_flags_primary_rows_and_clipped_points(self, session, as_role
                                                                  ) -> None:
        campaign = make_running_campaign(session)
        # control 5 of 200, treatment 100 of 200: a relative lift of +1,900%
        expose(session, campaign, "control", customers=200, adopters=5, prefix="C")
        expose(session, campaign, "ten percent", customers=200, adopters=100, prefix="T")
        lift = charts_on(as_role(Role.VIEWER).get(f"/campaigns/{campaign.id}/report").text
                         )["lift"]
        index = lift["labels"].index("ten percent · Adopted the target channel")
        assert lift["primary"][index] is True
        assert sum(lift["primary"]) < len(lift["primary"])  # other metrics are not primary
        assert lift["estimate"][index] == 300.0  # drawn at the axis's edge
        assert lift["value"][index] == round((100 / 200) / (5 / 200) * 100 - 100, 2)
        assert "estimate" in lift["clipped"][index]

    def test_an_imported_experiment_has_no_money_columns(self, session, as_role) -> None:
        import pandas as pd

        from seeds.experiments import build_spec, import_experiment
        rows = 400
        frame = pd.DataFrame({
            "id": [str(i) for i in range(rows)], "arm": [str(i % 2) for i in range(rows)],
            "bought": [str(int((i // 2) % 20 < (8 if i % 2 else 5))) for i in range(rows)],
            "model": [str((i * 37) % 100 / 100) for i in range(rows)]})
        result = import_experiment(session, frame, build_spec(
            name="Imported", arm_column="arm", control="0", metrics=["bought:binary"],
            id_column="id", score_column="model"), actor="test")
        session.flush()
        page = as_role(Role.ANALYST).get(f"/campaigns/{result.campaign_id}/report").text
        assert decision_columns(page) == ["verdict", "lift", "relative_lift", "chance",
                                          "power"]
        assert re.search(r'<option value="model"', page)  # the imported score is offered
        shown = as_role(Role.ANALYST).get(
            f"/campaigns/{result.campaign_id}/report?qini=model").text
        assert '<table class="deciles">' in shown and "qini" in charts_on(shown)


def _score_customers(session: Session, campaign_id: int) -> None:
    """Every exposed customer gets a numeric ``propensity`` and a text ``source``."""
    customers = session.exec(select(Customer).join(
        Assignment, Assignment.customer_id == Customer.id).where(
        Assignment.campaign_id == campaign_id).order_by(Customer.id)).all()
    for index, customer in enumerate(customers):
        customer.attributes = {"propensity": (index * 7919) % 1000 / 1000,
                               "source": "crm", "visits": index % 5}
        session.add(customer)
    session.flush()


class TestQiniSelect:
    def test_numeric_attributes_are_offered_and_drawn(self, session, experiment,
                                                      as_role) -> None:
        _score_customers(session, experiment.id)
        viewer = as_role(Role.VIEWER)
        url = f"/campaigns/{experiment.id}/report"
        page = viewer.get(url).text
        options = re.findall(r'<option value="(\w*)"', page[page.index('id="report-qini"'):
                                                             page.index("</select>",
                                                                        page.index(
                                                                            'id="report-qini"'))])
        assert options == ["", "propensity", "visits"]  # numbers only, not "source"
        assert '<table class="deciles">' not in page
        shown = viewer.get(f"{url}?qini=propensity").text
        assert re.search(r'<details class="report-section" id="section-qini" '
                         r'data-section="qini" open>', shown)
        expected = qini(session.connection(), experiment.id, "propensity")
        assert expected is not None
        rows = re.findall(r'<tr><th scope="row">ten percent</th><td class="num">(\d+)</td>'
                          r'.*?</tr>', shown[shown.index('<table class="deciles">'):], re.S)
        assert [int(decile) for decile in rows] == [d.decile for d in expected.deciles]
        first = expected.deciles[0]
        assert f"{first.treatment_n:,} vs {first.control_n:,}" in text(shown)
        curve = charts_on(shown)["qini"]
        gains = [point["y"] for point in curve["series"][0]["data"]]
        assert gains == [round(p.incremental_gain, 3) for p in expected.curve
                         if p.arm == "ten percent"]
        # the choice travels with the downloads and the refresh
        assert "qini=propensity" in shown[shown.index('id="report-live"'):][:600]
        assert viewer.get(f"{url}?qini=bogus").status_code == 200  # ignored, not a 500


class TestCurrencyDigits:
    def test_yen_are_not_divided_by_a_hundred(self, session, as_role) -> None:
        campaign = make_running_campaign(session, budget_minor=500_000)
        campaign.currency = "JPY"  # (the management API sets it from the configuration)
        session.add(campaign)
        session.flush()
        expose(session, campaign, "control", customers=60, adopters=10, prefix="C")
        expose(session, campaign, "ten percent", customers=60, adopters=25, prefix="T")
        html = as_role(Role.VIEWER).get(f"/campaigns/{campaign.id}/report").text
        report = build_report(session.connection(), campaign.id)
        net = next(e for e in report.economics
                   if e.arm == "ten percent" and e.metric == "net_benefit")
        cell = decision_row(html, "ten percent")[decision_columns(html).index("net_benefit")]
        assert net.estimate is not None
        assert cell.startswith(format_money(net.estimate, "JPY"))
        assert re.fullmatch(r"-?JPY [\d,]+", format_money(net.estimate, "JPY"))
        sizes = text(html[html.index('id="sizes-title"'):html.index('id="methods-title"')])
        assert "¥500,000" in sizes  # the Babel formatter: no decimals, not ¥5,000.00
        # Charts scale by the currency's digits too: 1,500 minor units are 1,500 yen.
        spent = replace(report, spend=[SpendPoint(day=date(2026, 1, 1), spent_minor=1500)])
        assert spend_chart(spent)["series"][0]["data"] == [1500]
        assert spend_chart(spent)["series"][1]["data"] == [500_000]
        assert metric_units(report)("revenue").scale == 1.0
        euros = replace(spent, campaign=replace(report.campaign, currency="EUR"))
        assert spend_chart(euros)["series"][0]["data"] == [15.0]


# --- a real browser at 1366 px ------------------------------------------------------------

WIDE = {"width": 1366, "height": 768}


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/")


def _no_horizontal_scroll(page: Page) -> None:
    widths = page.evaluate("[document.scrollingElement.scrollWidth,"
                           " document.scrollingElement.clientWidth]")
    assert widths[0] <= widths[1], widths


@pytest.fixture
def wide_page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser.new_context(viewport=WIDE).new_page()
        finally:
            browser.close()


@pytest.mark.slow
def test_browser_decision_first_sections_qini_and_yen(report_server, wide_page: Page,  # noqa: F811
                                                       backend: str) -> None:
    server, campaign_id = report_server
    with Session(server.engine) as session:
        _score_customers(session, campaign_id)
        session.commit()
    page = wide_page
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    _sign_in(page, server.url)
    page.goto(f"{server.url}/campaigns/{campaign_id}/report")

    # The decision is on the first screen, whole, with no horizontal scrolling.
    decision = page.locator("section.decision")
    expect(decision.get_by_role("heading", name=re.compile("^Decision"))).to_be_visible()
    table = page.locator("table.decision-table")
    expect(table.get_by_role("row")).to_have_count(3)  # header + two treatment arms
    box = table.bounding_box()
    assert box is not None and box["y"] + box["height"] <= WIDE["height"], box
    assert box["x"] + box["width"] <= WIDE["width"]
    _no_horizontal_scroll(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"report-decision-{backend}.png"))

    # Sections open and close; the lift chart shows primary metrics until asked for all.
    results = page.locator("details#section-results")
    expect(results).not_to_have_attribute("open", "")
    page.get_by_role("heading", name="Every metric").click()
    expect(results).to_have_attribute("open", "")
    canvas = page.locator(".chart-lift canvas[data-rendered=true]")
    expect(canvas).to_have_count(1)
    assert canvas.bounding_box()["height"] > 100
    primary_rows = int(canvas.get_attribute("data-rows"))
    page.get_by_label(re.compile("Show every metric")).check()
    expect(canvas).not_to_have_attribute("data-rows", str(primary_rows))
    assert int(canvas.get_attribute("data-rows")) > primary_rows
    for summary in page.locator("details.report-section > summary").all():
        if summary.locator("xpath=..").get_attribute("open") is None:
            summary.click()
    _no_horizontal_scroll(page)  # every section open: still no horizontal scrolling
    # An htmx refresh keeps what the reader opened.
    with page.expect_response(lambda response: "/report/live" in response.url):
        page.get_by_role("link", name="Refresh").click()
    expect(page.locator("details#section-results")).to_have_attribute("open", "")
    expect(page.get_by_label(re.compile("Show every metric"))).to_be_checked()
    page.get_by_role("heading", name="Every metric").click()
    expect(page.locator("details#section-results")).not_to_have_attribute("open", "")

    # The Qini select draws the curve and the decile table.
    page.get_by_label("Rank customers by").select_option("propensity")
    page.locator("form.qini-form").get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"qini=propensity"))
    expect(page.locator("details#section-qini")).to_have_attribute("open", "")
    expect(page.locator(".chart-qini canvas[data-rendered=true]")).to_have_count(1)
    expect(page.locator("table.deciles tbody tr")).to_have_count(20)  # 2 arms x 10 deciles
    _no_horizontal_scroll(page)
    page.screenshot(path=str(ARTIFACTS / f"report-qini-{backend}.png"), full_page=True)

    # Yen have no minor unit: the spend chart and the money cells are not divided by 100.
    with Session(server.engine) as session:
        campaign = session.get(Campaign, campaign_id)
        spent, currency = campaign.spent_minor, campaign.currency
        campaign.currency = "JPY"
        session.add(campaign)
        session.commit()
    try:
        page.goto(f"{server.url}/campaigns/{campaign_id}/report")
        page.get_by_role("heading", name="Over time").click()
        spec = json.loads(page.locator(".chart-spend canvas").get_attribute(
            "data-report-chart"))
        assert spec["unit"] == "JPY" and spec["series"][0]["data"][-1] == spent
        expect(page.locator(".chart-spend canvas[data-rendered=true]")).to_have_count(1)
        net = page.locator("table.decision-table tbody tr").first.locator("td").nth(4)
        expect(net.locator(".figure")).to_have_text(re.compile(r"^-?JPY [\d,]+$"))
    finally:
        with Session(server.engine) as session:
            campaign = session.get(Campaign, campaign_id)
            campaign.currency = currency
            session.add(campaign)
            session.commit()
    assert problems == [], problems
