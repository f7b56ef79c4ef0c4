"""Campaign pages: the list, the campaign page, the lifecycle with its confirmation step,
edits, coupon batches and prize draws, for the roles that may and may not use them."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import time_machine
from sqlmodel import Session, col, func, select

from campaigns.models import (
    AuditLog,
    Campaign,
    CouponCode,
    LotteryDraw,
    LotteryEntry,
    LotteryWinner,
    Role,
)
from campaigns.services.campaigns import campaign_arms, transition
from campaigns.services.lotteries import draw_winners, tickets
from tests.builders import (
    control_arm,
    coupon_arm,
    incentive_arm,
    make_campaign,
    make_customer,
    make_running_campaign,
)
from tests.web.ui.conftest import csrf_token, make_user, sign_in
from web.ui.pages.campaigns import ACTIONS, lifecycle_actions, local_input

LOTTERY = {"prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 29_900, "inventory": 2,
                       "odds": {"numerator": 1, "denominator": 100}},
                      {"key": "voucher", "name": "Voucher", "value_minor": 2_000,
                       "inventory": 3, "odds": {"numerator": 1, "denominator": 10}}],
           "entry_rule": {"event": "redemption"}}


def text(html: str) -> str:
    """The page's visible text, whitespace collapsed (for reading sentences across tags)."""
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def post_form(client, page_url: str, action: str, data: dict[str, str]):
    """Submit a form the way a browser does: with the CSRF token of the page it is on."""
    page = client.get(page_url)
    assert page.status_code == 200, page.text
    return client.post(action, data={**data, "csrf_token": csrf_token(page.text)})


class TestCampaignList:
    def test_grouped_by_status_with_spend_against_budget(self, session, as_role) -> None:
        running = make_running_campaign(session, name="Running one")
        running.spent_minor = 12_345
        make_campaign(session, name="Draft one")
        session.flush()
        html = as_role(Role.VIEWER).get("/campaigns").text
        assert html.index('id="list-running"') < html.index('id="list-draft"')
        page = text(html)
        assert "€123.45 of €1,000.00 (12%)" in page
        assert f'href="/campaigns/{running.id}"' in html

    def test_wizard_link_only_for_configuring_roles(self, as_role) -> None:
        assert 'href="/campaigns/new"' in as_role(Role.MARKETER).get("/campaigns").text
        assert 'href="/campaigns/new"' not in as_role(Role.ANALYST).get("/campaigns").text
        assert 'href="/campaigns/new"' not in as_role(Role.VIEWER).get("/campaigns").text

    def test_dashboard_cards_link_to_campaign_and_report(self, session, as_role) -> None:
        campaign = make_running_campaign(session)
        html = as_role(Role.VIEWER).get("/").text
        assert f'href="/campaigns/{campaign.id}"' in html

    def test_the_wizard_path_is_not_a_campaign(self, session, as_role) -> None:
        # /campaigns/new belongs to the wizard: the campaign routes match digits only.
        response = as_role(Role.MARKETER).get("/campaigns/new")
        assert "There is no campaign" not in response.text
        assert as_role(Role.MARKETER).get("/campaigns/999999").status_code == 404


class TestCampaignPage:
    def test_goal_arms_schedule_in_the_users_zone_and_audit_newest_first(
            self, session, new_client) -> None:
        starts = datetime(2031, 3, 1, 23, 30, tzinfo=UTC)
        campaign = make_campaign(session, starts_at=starts, ends_at=starts + timedelta(days=30))
        transition(session, campaign=campaign, target="scheduled", actor="user:mara")
        make_user(session, role=Role.VIEWER, username="tokyo", timezone="Asia/Tokyo")
        html = sign_in(new_client(), "tokyo").get(f"/campaigns/{campaign.id}").text
        page = text(html)
        assert "Self-service after sale" in page  # the goal
        assert "After-sale: Call_Centre → Web" in page
        assert "ten percent off" in page and "50%" in page
        assert "2031-03-02 08:30 JST" in page  # 23:30 UTC is 08:30 the next day in Tokyo
        audit = html[html.index('id="audit-title"'):]
        assert audit.index("campaign.scheduled") < audit.index("campaign.create")
        assert "draft → scheduled" in text(audit)

    def test_guardrail_pause_shows_who_and_why(self, session, as_role) -> None:
        campaign = make_running_campaign(session)
        transition(session, campaign=campaign, target="paused", actor="system:guardrails",
                   reason="guardrail harmed: complaints in arm 'ten percent'")
        page = text(as_role(Role.VIEWER).get(f"/campaigns/{campaign.id}").text)
        assert "Paused automatically" in page
        assert "by system:guardrails: guardrail harmed: complaints in arm 'ten percent'" in page

    def test_unknown_campaign_is_a_404_page(self, as_role) -> None:
        response = as_role(Role.VIEWER).get("/campaigns/424242")
        assert response.status_code == 404
        assert "There is no campaign 424242." in response.text


class TestLifecycleButtons:
    @pytest.mark.parametrize(("status", "labels"), [
        ("draft", ["Schedule"]), ("scheduled", ["Start now", "Back to draft", "Cancel"]),
        ("running", ["Pause", "End"]), ("paused", ["Resume", "End"]), ("ended", [])])
    def test_exactly_the_allowed_transitions(self, status, labels) -> None:
        assert [action.label for action in lifecycle_actions(status)] == labels

    def test_every_allowed_transition_has_a_button(self) -> None:
        from campaigns.services.campaigns import ALLOWED_TRANSITIONS

        allowed = {(current, target) for current, targets in ALLOWED_TRANSITIONS.items()
                   for target in targets}
        assert allowed == set(ACTIONS)

    def test_start_pause_and_end_each_ask_first(self, session, as_role) -> None:
        campaign = make_running_campaign(session)
        html = as_role(Role.MARKETER).get(f"/campaigns/{campaign.id}").text
        for target in ("paused", "ended"):
            # the button opens a dialog (or, without script, the confirmation page)
            assert (f'href="/campaigns/{campaign.id}/status?to={target}" '
                    f'data-confirm="confirm-{target}"') in html
            assert f'<dialog id="confirm-{target}"' in html
        assert "to=running" not in html and "to=scheduled" not in html


class TestLifecycle:
    def test_draft_to_scheduled_to_running_through_confirmations(self, session,
                                                                 as_role) -> None:
        marketer = as_role(Role.MARKETER)
        campaign = make_campaign(session)
        confirm = f"/campaigns/{campaign.id}/status?to=scheduled"
        page = marketer.get(confirm)
        assert "Schedule this campaign?" in page.text
        assert campaign.status == "draft"  # asking changes nothing
        response = post_form(marketer, confirm, f"/campaigns/{campaign.id}/status",
                             {"to": "scheduled"})
        assert response.status_code == 303
        assert response.headers["location"] == f"/campaigns/{campaign.id}"
        session.refresh(campaign)
        assert campaign.status == "scheduled"
        assert "is now scheduled" in marketer.get(response.headers["location"]).text

        start = f"/campaigns/{campaign.id}/status?to=running"
        assert "Start this campaign now?" in marketer.get(start).text
        before = datetime.now(UTC)
        response = post_form(marketer, start, f"/campaigns/{campaign.id}/status",
                             {"to": "running"})
        assert response.status_code == 303
        session.refresh(campaign)
        assert campaign.status == "running"
        assert campaign.starts_at is not None and campaign.starts_at >= before - timedelta(
            seconds=5)  # starting by hand starts now
        actions = session.exec(select(AuditLog.action, AuditLog.actor).where(
            AuditLog.entity_id == campaign.id, AuditLog.entity_type == "campaign")
            .order_by(col(AuditLog.id))).all()
        assert actions[-2:] == [("campaign.scheduled", "user:marketer_user"),
                                ("campaign.running", "user:marketer_user")]

    def test_refused_transition_lists_the_readiness_problems(self, session, as_role) -> None:
        campaign = make_campaign(session, budget_minor=None, arms=[
            {"name": "a", "weight": 60, "incentive": {"name": "a", "type": "percent_discount",
                                                       "config": {"percent_bp": 500}}}])
        marketer = as_role(Role.MARKETER)
        # The campaign page already lists them, before anyone tries.
        shown = text(marketer.get(f"/campaigns/{campaign.id}").text)
        assert "Before it can be scheduled" in shown
        response = post_form(marketer, f"/campaigns/{campaign.id}/status?to=scheduled",
                             f"/campaigns/{campaign.id}/status", {"to": "scheduled"})
        assert response.status_code == 409
        page = text(response.text)
        assert "cannot schedule yet" in page
        for problem in ("Set a budget above zero.",
                        "Add a control arm (a randomized holdout), or opt out explicitly "
                        "with a reason.",
                        "Arm weights must add up to 100 (they add up to 60)."):
            assert problem in page
        session.refresh(campaign)
        assert campaign.status == "draft"

    def test_pause_records_the_reason_shown_on_the_page(self, session, as_role) -> None:
        campaign = make_running_campaign(session)
        marketer = as_role(Role.MARKETER)
        response = post_form(marketer, f"/campaigns/{campaign.id}/status?to=paused",
                             f"/campaigns/{campaign.id}/status",
                             {"to": "paused", "reason": "stock-out in the web shop"})
        assert response.status_code == 303
        session.refresh(campaign)
        assert (campaign.status, campaign.pause_reason) == ("paused",
                                                            "stock-out in the web shop")
        page = text(marketer.get(f"/campaigns/{campaign.id}").text)
        assert "by user:marketer_user: stock-out in the web shop" in page

    def test_a_stale_button_is_refused_not_applied(self, session, as_role) -> None:
        campaign = make_running_campaign(session)
        transition(session, campaign=campaign, target="ended", actor="test")
        response = post_form(as_role(Role.MARKETER), f"/campaigns/{campaign.id}",
                             f"/campaigns/{campaign.id}/status", {"to": "paused"})
        assert response.status_code == 409
        assert "Ended -&gt; paused is not allowed." in response.text
        session.refresh(campaign)
        assert campaign.status == "ended"

    @pytest.mark.parametrize("role", [Role.ANALYST, Role.VIEWER])
    def test_read_only_roles_cannot_start_pause_or_edit(self, session, as_role, role) -> None:
        campaign = make_running_campaign(session)
        client = as_role(role)
        page = client.get(f"/campaigns/{campaign.id}").text
        assert "data-confirm" not in page and f"/campaigns/{campaign.id}/edit" not in page
        token = csrf_token(page)
        for method, path, data in (
                ("GET", f"/campaigns/{campaign.id}/status?to=paused", None),
                ("POST", f"/campaigns/{campaign.id}/status", {"to": "paused"}),
                ("GET", f"/campaigns/{campaign.id}/edit", None),
                ("POST", f"/campaigns/{campaign.id}/edit", {"name": "renamed"})):
            response = client.request(method, path, data={**data, "csrf_token": token}
                                      if data else None)
            assert response.status_code == 403, (method, path)
            assert "Access denied" in response.text
        session.refresh(campaign)
        assert (campaign.status, campaign.name) == ("running", "Spring push")


class TestEdit:
    def test_budget_in_major_units_and_end_in_the_users_zone(self, session,
                                                            new_client) -> None:
        campaign = make_running_campaign(session)
        make_user(session, role=Role.MARKETER, username="paris", timezone="Europe/Paris")
        client = sign_in(new_client(), "paris")
        edit = f"/campaigns/{campaign.id}/edit"
        form = client.get(edit).text
        assert re.search(r'id="f-starts_at"[^>]* disabled', form)  # fixed while running
        response = post_form(client, edit, edit, {
            "name": "Spring push", "description": "", "budget": "2500.50",
            "ends_at": "2031-01-15T10:00", "priority": "3",
            "guardrails": "churn"})
        assert response.status_code == 303, text(response.text)
        session.refresh(campaign)
        assert campaign.budget_minor == 250_050
        assert campaign.ends_at == datetime(2031, 1, 15, 9, 0, tzinfo=UTC)  # CET is UTC+1
        assert campaign.priority == 3 and campaign.guardrails == ["churn"]

    def test_a_wrong_value_keeps_what_was_typed_with_the_message_at_the_field(
            self, session, as_role) -> None:
        campaign = make_campaign(session)
        edit = f"/campaigns/{campaign.id}/edit"
        response = post_form(as_role(Role.MARKETER), edit, edit, {
            "name": "Spring push", "description": "typed text", "budget": "12.345",
            "priority": "x", **shown_times(campaign)})
        assert response.status_code == 422
        html = response.text
        assert re.search(r'id="f-budget-error"[^<]*<span[^>]*>Error:</span> Use at most 2 '
                         r'decimals', html)
        assert 'id="f-priority-error"' in html
        assert 'id="f-starts_at-error"' not in html  # the untouched schedule is no problem
        assert 'value="12.345"' in html and "typed text" in html
        session.refresh(campaign)
        assert campaign.budget_minor == 100_000 and campaign.description == ""

    def test_the_services_message_lands_on_its_field(self, session, as_role) -> None:
        campaign = make_campaign(session)
        campaign.spent_minor = 5_000
        session.flush()
        edit = f"/campaigns/{campaign.id}/edit"
        response = post_form(as_role(Role.MARKETER), edit, edit, {
            "name": "Spring push", "description": "", "budget": "10.00", "priority": "0",
            **shown_times(campaign)})
        assert response.status_code == 422
        assert re.search(r'id="f-budget-error"[^<]*<span[^>]*>Error:</span> Cannot be below '
                         r'what is already spent', response.text)


def shown_times(campaign: Campaign) -> dict[str, str]:
    """The schedule as the edit form shows it to a UTC user (sent back unchanged)."""
    return {"starts_at": local_input(campaign.starts_at, UTC),
            "ends_at": local_input(campaign.ends_at, UTC)}


def coupon_campaign(session: Session) -> Campaign:
    return make_running_campaign(session, arms=[control_arm(), coupon_arm()])


class TestCouponBatches:
    def test_generate_and_download(self, session, as_role) -> None:
        campaign = coupon_campaign(session)
        arm = campaign_arms(session, campaign)[1]
        marketer = as_role(Role.MARKETER)
        page = f"/campaigns/{campaign.id}"
        response = post_form(marketer, page, f"/campaigns/{campaign.id}/coupons",
                             {"arm_id": str(arm.id), f"count_{arm.id}": "25"})
        assert response.status_code == 303
        codes = session.exec(select(CouponCode.code).where(
            CouponCode.campaign_id == campaign.id)).all()
        assert len(codes) == len(set(codes)) == 25
        assert all(code.startswith("WEB") for code in codes)
        shown = text(marketer.get(page).text)
        assert "25 codes generated, 0 issued to customers, 25 left." in shown

        download = marketer.get(f"/campaigns/{campaign.id}/coupon-codes.csv")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        assert download.headers["content-disposition"] == (
            f'attachment; filename="campaign-{campaign.id}-coupon-codes.csv"')
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert sorted(row["code"] for row in rows) == sorted(codes)
        assert {row["arm"] for row in rows} == {"web coupon"}

    def test_a_bad_count_is_refused_next_to_its_field(self, session, as_role) -> None:
        campaign = coupon_campaign(session)
        arm = campaign_arms(session, campaign)[1]
        response = post_form(as_role(Role.MARKETER), f"/campaigns/{campaign.id}",
                             f"/campaigns/{campaign.id}/coupons",
                             {"arm_id": str(arm.id), f"count_{arm.id}": "0"})
        assert response.status_code == 422
        assert re.search(rf'id="f-count_{arm.id}-error"[^<]*<span[^>]*>Error:</span> Enter a '
                         r'number of codes from 1 to 1,000,000', response.text)
        assert session.exec(select(func.count()).select_from(CouponCode)
                            .where(CouponCode.campaign_id == campaign.id)).one() == 0

    def test_codes_are_for_configuring_roles_only(self, session, as_role) -> None:
        campaign = coupon_campaign(session)
        analyst = as_role(Role.ANALYST)
        page = analyst.get(f"/campaigns/{campaign.id}").text
        assert "coupon-codes.csv" not in page and "Generate codes" not in page
        assert analyst.get(f"/campaigns/{campaign.id}/coupon-codes.csv").status_code == 403


def lottery_campaign(session: Session, *, customers: int = 12,
                     draw_at: datetime | None = None) -> Campaign:
    config = LOTTERY if draw_at is None else {**LOTTERY, "draw_at": draw_at.isoformat()}
    campaign = make_running_campaign(session, arms=[control_arm(),
                                                    incentive_arm("draw", "lottery", config)])
    arm = campaign_arms(session, campaign)[1]
    for i in range(customers):
        customer = make_customer(session, external_id=f"P{i}")
        session.add(LotteryEntry(campaign_id=campaign.id, incentive_id=arm.incentive_id,
                                 customer_id=customer.id, entries=1 + i % 3,
                                 source_ref=f"test:{i}",
                                 created_at=datetime.now(UTC) - timedelta(hours=1)))
    session.flush()
    return campaign


class TestDraws:
    def test_draw_shows_the_recorded_seed_and_verifies(self, session, as_role) -> None:
        campaign = lottery_campaign(session)
        marketer = as_role(Role.MARKETER)
        draws = f"/campaigns/{campaign.id}/draws"
        response = post_form(marketer, draws, draws, {"seed": "00FF00FF00FF"})
        assert response.status_code == 303
        draw = session.exec(select(LotteryDraw).where(
            LotteryDraw.campaign_id == campaign.id)).one()
        assert draw.seed == "00ff00ff00ff"
        winners = session.exec(select(LotteryWinner.customer_id, LotteryWinner.prize_key)
                               .where(LotteryWinner.draw_id == draw.id)
                               .order_by(col(LotteryWinner.id))).all()
        # Independently re-run the published algorithm on the same tickets: same winners.
        arm = campaign_arms(session, campaign)[1]
        rerun = draw_winners(tickets(session, campaign_id=campaign.id,
                                     incentive_id=arm.incentive_id),
                             [("tablet", 29_900, 2), ("voucher", 2_000, 3)], "00ff00ff00ff")
        assert [(a.customer_id, a.prize_key) for a in rerun] == list(winners)
        assert len(winners) == 5

        page = marketer.get(draws)
        shown = text(page.text)
        assert f"Draw {draw.id}: 5 winners. Recorded seed 00ff00ff00ff." in shown
        assert "00ff00ff00ff" in shown and "tablet \u00d7 2, voucher \u00d7 3" in shown
        verified = text(marketer.get(f"{draws}?verify={draw.id}").text)
        assert f"Verified. Re-running draw {draw.id} with seed 00ff00ff00ff" in verified
        campaign_page = text(marketer.get(f"/campaigns/{campaign.id}").text)
        assert "5 winners, recorded seed 00ff00ff00ff" in campaign_page

    def test_a_bad_seed_is_refused_next_to_its_field(self, session, as_role) -> None:
        campaign = lottery_campaign(session)
        draws = f"/campaigns/{campaign.id}/draws"
        response = post_form(as_role(Role.MARKETER), draws, draws, {"seed": "not-hex"})
        assert response.status_code == 422
        assert re.search(r'id="f-seed-error"[^<]*<span[^>]*>Error:</span> Give 8-128 '
                         r'hexadecimal characters', response.text)
        assert 'value="not-hex"' in response.text
        assert session.exec(select(func.count()).select_from(LotteryDraw)
                            .where(LotteryDraw.campaign_id == campaign.id)).one() == 0

    def test_viewers_see_draws_but_cannot_draw(self, session, as_role) -> None:
        campaign = lottery_campaign(session)
        viewer = as_role(Role.VIEWER)
        page = viewer.get(f"/campaigns/{campaign.id}/draws")
        assert page.status_code == 200 and "Draw winners now" not in page.text
        response = viewer.post(f"/campaigns/{campaign.id}/draws",
                               data={"csrf_token": csrf_token(page.text)})
        assert response.status_code == 403


class TestDrawDate:
    def test_a_dated_draw_shows_when_it_runs_instead_of_a_button(self, session,
                                                                  as_role) -> None:
        # minutes ahead: days would outlive the signed-in session
        draw_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        campaign = lottery_campaign(session, draw_at=draw_at)
        marketer = as_role(Role.MARKETER)
        draws = f"/campaigns/{campaign.id}/draws"
        when = f"{draw_at:%Y-%m-%d %H:%M} UTC"
        page = marketer.get(draws)
        assert page.status_code == 200
        assert "Draw winners now" not in page.text
        assert f"The server draws the winners on {when}" in text(page.text)
        campaign_page = text(marketer.get(f"/campaigns/{campaign.id}").text)
        assert f"Draw on {when}" in campaign_page
        assert "Run a draw" not in campaign_page and "All draws and their seeds" in campaign_page

        refused = marketer.post(draws, data={"seed": "", "csrf_token": csrf_token(page.text)})
        assert refused.status_code == 409
        assert f"{draw_at:%Y-%m-%d %H:%M:%S} UTC" in text(refused.text)
        assert session.exec(select(func.count()).select_from(LotteryDraw)
                            .where(LotteryDraw.campaign_id == campaign.id)).one() == 0

        with time_machine.travel(draw_at + timedelta(seconds=1), tick=True):
            due = marketer.get(draws)
            assert "Draw winners now" in due.text  # due, and no scheduler ran it yet
            assert post_form(marketer, draws, draws, {"seed": ""}).status_code == 303
        draw = session.exec(select(LotteryDraw).where(
            LotteryDraw.campaign_id == campaign.id)).one()
        assert draw.drawn_at == draw_at
