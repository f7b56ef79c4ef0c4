"""The live report, its exports and the channel economics overview.

Figures on the pages are checked against independent computations (statsmodels and scipy
on the raw counts) and against the analytics functions they come from; exports are opened
with the tools an analyst would use (csv, openpyxl, a browser).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from scipy.stats import chisquare
from sqlmodel import Session, select
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.proportion import confint_proportions_2indep

from analytics.economics import ExportFormat, arm_economics, channel_overview, export_overview
from analytics.exports import format_p, format_pp
from analytics.guardrails import evaluate_guardrails
from analytics.report import build_report
from analytics.segments import segment_results
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    ChannelEvent,
    Customer,
    EventKind,
    Role,
    Stage,
)
from campaigns.services.campaigns import transition
from campaigns.services.channels import channel_by_key, set_channel_cost
from seeds.demo import ENDED_CAMPAIGN, seed_demo_world
from seeds.experiments import build_spec, import_experiment
from tests.builders import make_campaign, make_goal, make_running_campaign
from tests.liveserver import LiveServer, live_server
from tests.web.ui.conftest import PASSWORD, csrf_token, make_user, sign_in
from tests.web.ui.test_browser import ARTIFACTS, CHROMIUM
from web.ui.pages.reports import campaign_report

EXPOSED_AT = datetime.now(UTC) - timedelta(days=10)
TIERS = ("bronze", "silver", "gold")


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def charts_on(html: str) -> dict[str, dict]:
    """The chart specifications of a page by name (the JSON in each canvas's attribute)."""
    return {name: json.loads(spec) for name, spec in re.findall(
        r"<figure class=\"chart chart-(\w+)\">\s*<div class=\"chart-box\"><canvas "
        r"data-report-chart='([^']*)'", html)}


def expose(session: Session, campaign: Campaign, arm_name: str, *, customers: int,
           adopters: int, prefix: str) -> None:
    """``customers`` exposed in ``arm_name``; the first ``adopters`` then use the web.

    Customers cycle through three value tiers so a breakdown has cells to compare.
    """
    arm = session.exec(select(Arm).where(Arm.campaign_id == campaign.id,
                                         Arm.name == arm_name)).one()
    web = channel_by_key(session, "web")
    call_centre = channel_by_key(session, "call_centre")
    stage = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    for i in range(customers):
        customer = Customer(external_id=f"{prefix}{i}", value_tier=TIERS[i % 3])
        session.add(customer)
        session.flush()
        session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                               arm_id=arm.id, first_exposed_at=EXPOSED_AT))
        channel = web if i < adopters else call_centre
        session.add(ChannelEvent(client_event_id=f"{prefix}{i}", customer_id=customer.id,
                                 channel_id=channel.id, stage_id=stage.id,
                                 occurred_at=EXPOSED_AT + timedelta(days=1)))
    session.flush()


@pytest.fixture
def experiment(session: Session) -> Campaign:
    """A running campaign: control 40 of 200 adopted the web, treatment 80 of 220."""
    campaign = make_running_campaign(session)
    expose(session, campaign, "control", customers=200, adopters=40, prefix="C")
    expose(session, campaign, "ten percent", customers=220, adopters=80, prefix="T")
    return campaign


class TestReportFigures:
    def test_lift_interval_p_value_and_verdict_match_statsmodels(self, experiment,
                                                                 as_role) -> None:
        html = as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text
        low, high = confint_proportions_2indep(80, 220, 40, 200, method="wald",
                                               compare="diff", alpha=0.05)
        _, p_value = sm_proportion.test_proportions_2indep(80, 220, 40, 200, method="wald")
        row = re.search(r'<th scope="row" class="nowrap">ten percent</th><td class="metric">'
                        r'Adopted the target channel</td>(.*?)</tr>', html, re.S)
        assert row, html
        cells = text(row.group(1))
        assert "220 vs 200" in cells and "20.0%" in cells and "36.4%" in cells
        assert f"{format_pp(80 / 220 - 40 / 200)} {format_pp(low)} to {format_pp(high)}" \
            in cells
        assert format_p(p_value) in cells
        verdict = text(html[html.index('id="verdict-title"'):html.index('id="sizes-title"')])
        # A running campaign: the verdict is interim.
        assert "ten percent: interim: credible lift" in verdict
        assert "Interim, so far: It moved customers" in verdict
        assert f"a difference of {format_pp(80 / 220 - 40 / 200)}" in verdict

    def test_sections_equal_the_analytics_functions(self, session, experiment) -> None:
        """One aggregate fills economics, guardrails and segments: the same as each on its own."""
        connection = session.connection()
        report = campaign_report(connection, experiment.id, segment="value_tier")
        assert report.results == build_report(connection, experiment.id).results
        assert report.economics == arm_economics(connection, experiment.id)
        assert report.guardrails == evaluate_guardrails(connection, experiment.id)
        assert report.segments == segment_results(connection, experiment.id, "value_tier")
        assert {s.segment for s in report.segments} == {f"value_tier={t}" for t in TIERS}
        assert len(report.economics) >= 8 and len(report.guardrails) == 3

    def test_economics_guardrails_segments_and_methods_are_on_the_page(
            self, session, experiment, as_role) -> None:
        report = campaign_report(session.connection(), experiment.id, segment="value_tier")
        page = text(as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text)
        for heading in ("Economics", "Guardrails", "By value tier", "Methods",
                        "Sample sizes and dates"):
            assert heading in page
        for statement in report.methods:
            assert unescape(statement) in page
        migrations = next(e for e in report.economics if e.metric == "incremental_migrations")
        assert migrations.estimate is not None
        assert f"incremental migrations {migrations.estimate:.2f}" in page

    def test_charts_carry_their_data_for_the_module_to_draw(self, experiment, as_role) -> None:
        html = as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text
        blocks = charts_on(html)
        assert set(blocks) == {"lift", "adoption", "segments", "spend"}
        lift = blocks["lift"]
        index = lift["labels"].index("ten percent · Adopted the target channel")
        assert lift["estimate"][index] == round((80 / 220 / (40 / 200) - 1) * 100, 2)
        adoption = blocks["adoption"]
        final = {series["label"]: series["data"][-1] for series in adoption["series"]}
        assert final == {"control": 20.0, "ten percent": round(80 / 220 * 100, 2)}
        # No inline script anywhere: every script element loads a file of this site.
        assert re.findall(r"<script(?![^>]* src=\"/static/)", html) == []

    def test_sample_ratio_mismatch_is_loud(self, session, as_role) -> None:
        campaign = make_running_campaign(session)
        expose(session, campaign, "control", customers=300, adopters=30, prefix="C")
        expose(session, campaign, "ten percent", customers=150, adopters=20, prefix="T")
        _, p_value = chisquare([300, 150], [225, 225])
        assert p_value < 0.001
        html = as_role(Role.VIEWER).get(f"/campaigns/{campaign.id}/report").text
        alert = re.search(r'<div class="alert srm-alert" role="alert">(.*?)</div>', html, re.S)
        assert alert, "the SRM warning is missing"
        assert "Sample ratio mismatch: do not trust these results yet" in text(alert.group(1))
        assert html.index("srm-alert") < html.index('id="verdict-title"')

    def test_a_campaign_nobody_saw_has_an_empty_report(self, session, as_role) -> None:
        campaign = make_campaign(session)
        response = as_role(Role.VIEWER).get(f"/campaigns/{campaign.id}/report")
        assert response.status_code == 200
        assert "No customer has been exposed yet" in response.text

    def test_segment_choice(self, experiment, as_role) -> None:
        viewer = as_role(Role.VIEWER)
        url = f"/campaigns/{experiment.id}/report"
        assert "By region" in viewer.get(f"{url}?segment=region").text
        assert 'id="segments-title"' not in viewer.get(f"{url}?segment=none").text
        assert "By value tier" in viewer.get(f"{url}?segment=bogus").text  # the default


class TestLiveUpdates:
    def test_running_campaigns_poll_a_fragment(self, experiment, as_role) -> None:
        viewer = as_role(Role.VIEWER)
        page = viewer.get(f"/campaigns/{experiment.id}/report").text
        fragment_url = f"/campaigns/{experiment.id}/report/live?segment=value_tier"
        assert f'hx-get="{fragment_url}" hx-trigger="every 30s"' in page
        fragment = viewer.get(fragment_url, headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        assert '<div id="report-live"' in fragment.text and "<html" not in fragment.text
        assert "ten percent: " in text(fragment.text)

    def test_new_events_show_on_the_next_refresh(self, session, experiment, as_role) -> None:
        viewer = as_role(Role.VIEWER)
        url = f"/campaigns/{experiment.id}/report/live?segment=none"
        assert "220 vs 200" in text(viewer.get(url).text)
        expose(session, experiment, "ten percent", customers=30, adopters=10, prefix="U")
        assert "250 vs 200" in text(viewer.get(url).text)

    def test_ended_campaigns_do_not_poll(self, session, experiment, as_role) -> None:
        transition(session, campaign=experiment, target="ended", actor="test")
        page = as_role(Role.VIEWER).get(f"/campaigns/{experiment.id}/report").text
        assert "hx-trigger=\"every" not in page
        assert "Refresh" in page  # fetching on demand still works


class TestExports:
    def test_an_analyst_downloads_csv_xlsx_and_html(self, session, experiment,
                                                     as_role) -> None:
        analyst = as_role(Role.ANALYST)
        url = f"/campaigns/{experiment.id}/report"
        page = analyst.get(url).text
        for suffix in ("csv", "xlsx", "html"):
            assert f'href="{url}.{suffix}?segment=value_tier" download' in page
        stamp = datetime.now(UTC).strftime("%Y%m%d")
        expected = build_report(session.connection(), experiment.id)

        response = analyst.get(f"{url}.csv?segment=value_tier")
        assert response.status_code == 200
        assert response.headers["content-disposition"] == (
            f'attachment; filename="campaign-{experiment.id}-report-{stamp}.csv"')
        rows = list(csv.DictReader(io.StringIO(response.text)))
        adoption = next(r for r in expected.results
                        if r.arm == "ten percent" and r.metric == "adoption")
        diff = next(r for r in rows if r["arm"] == "ten percent" and r["segment"] == "all"
                    and r["metric"] == "adoption" and r["statistic"] == "diff")
        assert float(diff["value"]) == pytest.approx(adoption.comparison.diff)
        assert any(r["segment"] == "value_tier=gold" for r in rows)
        assert any(r["metric"] == "incremental_migrations" for r in rows)

        response = analyst.get(f"{url}.xlsx")
        assert response.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        workbook = openpyxl.load_workbook(io.BytesIO(response.content))
        assert {"summary", "metrics", "economics"} <= set(workbook.sheetnames)

        response = analyst.get(f"{url}.html")
        assert response.headers["content-disposition"].startswith("attachment;")
        assert "<svg" in response.text and "<script" not in response.text

    def test_a_viewer_cannot_export_and_sees_no_links(self, experiment, as_role) -> None:
        viewer = as_role(Role.VIEWER)
        url = f"/campaigns/{experiment.id}/report"
        page = viewer.get(url).text
        assert ".csv" not in page and ".xlsx" not in page and "report.html" not in page
        for suffix in ("csv", "xlsx", "html"):
            response = viewer.get(f"{url}.{suffix}")
            assert response.status_code == 403
            assert "Access denied" in response.text
            assert "ten percent" not in response.text


class TestImportedExperiment:
    """An experiment run elsewhere: a report like any other, but no lifecycle and no money."""

    @pytest.fixture
    def imported(self, session: Session) -> int:
        rows = 400
        frame = pd.DataFrame({
            "id": [str(i) for i in range(rows)], "arm": [str(i % 2) for i in range(rows)],
            # arm 1 buys in 40% of units, arm 0 in 25%: a lift of +15 points
            "bought": [str(int((i // 2) % 20 < (8 if i % 2 else 5))) for i in range(rows)],
            "region": [("north", "south")[(i // 2) % 2] for i in range(rows)]})
        result = import_experiment(session, frame, build_spec(
            name="Imported test", arm_column="arm", control="0", metrics=["bought:binary"],
            segments=["region"], id_column="id"), actor="test")
        session.flush()
        return result.campaign_id

    def test_report_figures_match_statsmodels(self, imported, as_role) -> None:
        html = as_role(Role.ANALYST).get(f"/campaigns/{imported}/report").text
        low, high = confint_proportions_2indep(80, 200, 50, 200, method="wald",
                                               compare="diff")
        page = text(html)
        assert f"a difference of {format_pp(0.15)} (95% interval {format_pp(low)} to " \
               f"{format_pp(high)})" in page
        assert "By region" in page and "Spend" not in page
        assert set(charts_on(html)) == {"lift", "segments"}

    def test_no_lifecycle(self, session, imported, as_role) -> None:
        marketer = as_role(Role.MARKETER)
        page = marketer.get(f"/campaigns/{imported}").text
        assert "data-confirm" not in page and "/edit" not in page
        response = marketer.post(f"/campaigns/{imported}/status", data={
            "to": "running", "csrf_token": csrf_token(page)})
        assert response.status_code == 409
        assert session.get(Campaign, imported).status == "ended"


# --- channel economics --------------------------------------------------------------------


@pytest.fixture
def channel_world(session: Session) -> dict[str, Customer]:
    """Web costs 0.20 per after-sale interaction, the call centre 7.00; a few customers."""
    make_goal(session)  # stages and the web / call-centre channels
    set_channel_cost(session, cost={"channel": "web", "stage": "after_sale", "cost_minor": 20},
                     actor="test")
    set_channel_cost(session, cost={"channel": "call_centre", "stage": "after_sale",
                                    "cost_minor": 700}, actor="test")
    web = channel_by_key(session, "web")
    call_centre = channel_by_key(session, "call_centre")
    stage = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    customers = {
        "ann": Customer(external_id="ann", preferred_channel="web", value_tier="gold"),
        "bob": Customer(external_id="bob", preferred_channel="web", value_tier="bronze"),
        "cy": Customer(external_id="cy", preferred_channel="call_centre", value_tier="gold"),
    }
    session.add_all(customers.values())
    session.flush()
    events = [("ann", web, datetime(2026, 1, 9, 14, tzinfo=UTC)),
              ("ann", web, datetime(2026, 1, 9, 16, tzinfo=UTC)),
              ("bob", web, datetime(2026, 1, 12, tzinfo=UTC)),
              ("cy", call_centre, datetime(2026, 1, 12, tzinfo=UTC)),
              ("cy", call_centre, datetime(2026, 1, 13, tzinfo=UTC))]
    for i, (who, channel, at) in enumerate(events):
        session.add(ChannelEvent(client_event_id=f"e{i}", customer_id=customers[who].id,
                                 channel_id=channel.id, stage_id=stage.id, occurred_at=at))
    session.add(ChannelEvent(client_event_id="churn", customer_id=customers["cy"].id,
                             channel_id=call_centre.id, stage_id=stage.id,
                             kind=EventKind.CHURN.value,
                             occurred_at=datetime(2026, 1, 14, tzinfo=UTC)))
    session.flush()
    return customers


class TestEconomicsPage:
    def test_figures_match_the_overview_and_a_hand_count(self, session, channel_world,
                                                         as_role) -> None:
        overview = channel_overview(session.connection())
        html = as_role(Role.VIEWER).get("/economics").text
        web = next(r for r in overview.channel_stages
                   if (r.channel, r.stage) == ("web", "after_sale"))
        assert (web.interactions, web.customers, web.cost_to_serve_minor) == (3, 2, 60)
        row = re.search(r"<tr><th scope=\"row\">Web</th><td>after sale</td>(.*?)</tr>", html)
        assert row and text(row.group(1)).split() == ["3", "2", "€0.20", "€0.60", "€0.30"]
        call = re.search(r"<tr><th scope=\"row\">Call_Centre</th><td>after sale</td>(.*?)</tr>",
                         html)
        assert call and text(call.group(1)).split() == ["2", "1", "€7.00", "€14.00",
                                                        "€14.00"]
        # Customers preferring the call centre: one, churned.
        preferred = re.search(r"<tr><th scope=\"row\">Call_Centre</th><td class=\"num\">1</td>"
                              r"(.*?)</tr>", html)
        assert preferred and "100.0%" in text(preferred.group(1))
        charts = charts_on(html)
        cost = charts["cost"]
        assert cost["labels"] == ["Call_Centre", "Web"]
        assert cost["series"][0]["data"] == [14.0, 0.6]
        assert set(charts) == {"cost", "tiers", "churn"}  # no acquisition events

    def test_the_period_is_read_in_the_users_time_zone(self, session, channel_world,
                                                       new_client) -> None:
        make_user(session, role=Role.VIEWER, username="tokyo", timezone="Asia/Tokyo")
        client = sign_in(new_client(), "tokyo")
        # 10 January in Tokyo starts at 15:00 UTC on the 9th: the 14:00 event is before it.
        html = client.get("/economics?since=2026-01-10&until=2026-01-10").text
        row = re.search(r"<tr><th scope=\"row\">Web</th><td>after sale</td>(.*?)</tr>", html)
        assert row and text(row.group(1)).split()[:2] == ["1", "1"]
        expected = channel_overview(session.connection(),
                                    since=datetime(2026, 1, 9, 15, tzinfo=UTC),
                                    until=datetime(2026, 1, 10, 15, tzinfo=UTC))
        assert [(r.channel, r.interactions) for r in expected.channel_stages
                if r.interactions] == [("web", 1)]

    def test_a_reversed_period_is_refused_next_to_its_field(self, channel_world,
                                                            as_role) -> None:
        response = as_role(Role.VIEWER).get("/economics?since=2026-02-01&until=2026-01-01")
        assert response.status_code == 422
        assert re.search(r'id="f-until-error"[^<]*<span[^>]*>Error:</span> The period must '
                         r'end on or after the day it starts', response.text)
        assert 'value="2026-02-01"' in response.text

    def test_exports_for_analysts_only(self, session, channel_world, as_role) -> None:
        analyst, viewer = as_role(Role.ANALYST), as_role(Role.VIEWER)
        assert 'href="/economics.csv"' in analyst.get("/economics").text
        assert "economics.csv" not in viewer.get("/economics").text
        response = analyst.get("/economics.csv")
        assert response.status_code == 200
        assert response.content == export_overview(channel_overview(session.connection()),
                                                   ExportFormat.CSV)
        assert response.headers["content-disposition"].startswith(
            'attachment; filename="channel-economics-')
        workbook = openpyxl.load_workbook(io.BytesIO(analyst.get("/economics.xlsx").content))
        assert "channel_stage" in workbook.sheetnames
        assert viewer.get("/economics.csv").status_code == 403
        assert viewer.get("/economics.xlsx").status_code == 403


# --- the demo world -----------------------------------------------------------------------


@pytest.mark.slow
class TestDemoWorld:
    def test_the_ended_campaigns_report_has_real_numbers(self, session, as_role) -> None:
        summary = seed_demo_world(session, customers=1_500)
        campaign_id = summary.ended_campaign_id
        report = build_report(session.connection(), campaign_id)
        page = as_role(Role.ANALYST).get(f"/campaigns/{campaign_id}/report")
        assert page.status_code == 200
        shown = text(page.text)
        for arm in ("web coupon", "prize draw"):
            adoption = next(r for r in report.results
                            if r.arm == arm and r.metric == "adoption")
            assert f"{arm}: " in shown
            assert f"a difference of {format_pp(adoption.comparison.diff)}" in shown
        assert f"{sum(arm.n for arm in report.arms):,}" in shown
        for chart in ("lift", "adoption", "spend", "segments"):
            assert chart in charts_on(page.text)
        campaign = as_role(Role.VIEWER).get(f"/campaigns/{campaign_id}").text
        assert "Prize draw" in campaign and "recorded seed" in campaign


# --- a real browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_server(database, tmp_path_factory) -> Iterator[tuple[LiveServer, int]]:
    """A server on a fresh database of the run's backend with a small demo world."""
    url, _ = database
    data_dir = tmp_path_factory.mktemp("ui-report")
    with live_server(url, data_dir) as running:
        with Session(running.engine) as session:
            summary = seed_demo_world(session, customers=1_000)
            make_user(session, role="analyst", username="ana", timezone="Europe/Paris")
            session.commit()
        yield running, summary.ended_campaign_id


@pytest.fixture
def browser_page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          accept_downloads=True)
            yield context.new_page()
        finally:
            browser.close()


@pytest.mark.slow
def test_browser_report_charts_and_downloads(report_server, browser_page: Page, backend: str,
                                             tmp_path: Path) -> None:
    server, campaign_id = report_server
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(f"{server.url}/login")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name=ENDED_CAMPAIGN, exact=True).click()
    page.get_by_role("link", name="Report", exact=True).click()
    expect(page).to_have_url(f"{server.url}/campaigns/{campaign_id}/report")
    expect(page.get_by_role("heading", name=re.compile("^Verdict"))).to_be_visible()
    # chart.js drew every chart (app.mjs marks a canvas once its chart exists)
    expect(page.locator("canvas[data-report-chart][data-rendered=true]")).to_have_count(4)
    assert page.locator(".chart-lift canvas").bounding_box()["height"] > 100

    with page.expect_download() as download:
        page.get_by_role("link", name="XLSX").click()
    xlsx = tmp_path / download.value.suggested_filename
    download.value.save_as(xlsx)
    assert xlsx.name == f"campaign-{campaign_id}-report-{datetime.now(UTC):%Y%m%d}.xlsx"
    workbook = openpyxl.load_workbook(xlsx)
    assert "summary" in workbook.sheetnames

    with page.expect_download() as download:
        page.get_by_role("link", name="HTML report").click()
    html_file = tmp_path / download.value.suggested_filename
    download.value.save_as(html_file)
    opened = page.context.new_page()
    opened.goto(html_file.as_uri())
    expect(opened.locator("svg").first).to_be_visible()
    expect(opened.get_by_text(ENDED_CAMPAIGN).first).to_be_visible()
    opened.close()

    with page.expect_response(lambda response: "/report/live" in response.url) as refreshed:
        page.get_by_role("link", name="Refresh").click()  # htmx fetches the fragment
    assert refreshed.value.status == 200
    expect(page).to_have_url(f"{server.url}/campaigns/{campaign_id}/report")  # no reload
    expect(page.locator("canvas[data-report-chart][data-rendered=true]")).to_have_count(4)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"report-{backend}.png"), full_page=True)
    assert problems == [], problems
