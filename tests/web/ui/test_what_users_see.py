"""What users see (issue 26, item 11): the wizard's heading, the review's conflict check,
unknown addresses, singular copy and amounts with their currency, the coupon length hint.

Each test reads the page (or the storefront's offer) as a marketer or a storefront meets it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

from campaigns.incentives.codes import DEFAULT_CHARSET, min_length_for
from campaigns.services.campaigns import transition
from tests.builders import (
    ACTOR,
    control_arm,
    incentive_arm,
    make_campaign,
    make_goal,
    make_running_campaign,
)
from tests.web.api import conftest as api_fixtures
from tests.web.ui import test_wizard as wizard_tests
from tests.web.ui.test_wizard import (
    TWO_ARMS,
    Wizard,
    field_error,
    fill_to_arms,
    paris,
    plain,
    two_incentive_arms,
)

# Fixtures of the API tests and the wizard's tests, used here as they are there.
client = api_fixtures.client
storefront_key = api_fixtures.storefront_key
world = wizard_tests.world
marketer = wizard_tests.marketer

HEADING = re.compile(r"<h1>New campaign <span[^>]*>(.*?)</span></h1>", re.S)


def heading(html: str) -> str:
    match = HEADING.search(html)
    assert match, html[:2000]
    return plain(match.group(1)).strip()


class TestWizardHeading:
    def test_every_step_says_which_of_seven_it_is(self, world, marketer) -> None:
        wizard = Wizard(marketer)
        seen = [heading(wizard.html)]
        fill_to_arms(wizard, world["goal"], rule="tenure_months >= 4")
        # fill_to_arms went through the audience step: see it again, as a marketer does
        wizard.press("back", **TWO_ARMS)
        assert wizard.step == "audience"
        seen.append(heading(wizard.html))
        wizard.press(eligibility_rule="tenure_months >= 4")
        seen.append(heading(wizard.html))
        two_incentive_arms(wizard)
        seen.append(heading(wizard.html))
        wizard.press(budget="1000", per_customer_limit="")
        seen.append(heading(wizard.html))
        wizard.press(starts_at="2031-05-01T09:00", ends_at="2031-06-01T09:00")
        seen.append(heading(wizard.html))
        wizard.press(stacking="exclusive", priority="0", guardrails=["churn"])
        assert wizard.step == "review"
        seen.append(heading(wizard.html))
        assert seen == [
            "step 1 of 7: Goal", "step 2 of 7: Audience", "step 3 of 7: Arms and incentives",
            "step 4 of 7: Budget and limits", "step 5 of 7: Schedule",
            "step 6 of 7: Stacking and guardrails", "step 7 of 7: Review"]


# --------------------------------------------------------------------------- conflicts


def conflict_items(html: str) -> list[str]:
    return [plain(item).strip() for item in re.findall(
        r'<li class="warning conflict[^"]*">(.*?)</li>', html, re.S)]


def to_review_with(wizard: Wizard, goal: Any, *, rule: str, stacking: str) -> None:
    fill_to_arms(wizard, goal, rule=rule)
    two_incentive_arms(wizard)
    wizard.press(budget="1000", per_customer_limit="")
    now = datetime.now(UTC)
    wizard.press(starts_at=paris(now + timedelta(days=1)),
                 ends_at=paris(now + timedelta(days=15)))
    wizard.press(stacking=stacking, priority="0", guardrails=["churn"])
    assert wizard.step == "review", plain(wizard.html)[:3000]


class TestReviewConflicts:
    def test_stackable_campaigns_of_any_stage_that_share_customers(
            self, session: Session, world, marketer) -> None:
        """Every running, paused or scheduled stackable campaign whose audience overlaps is
        named with its overlap and why; exclusive or disjoint ones are not."""
        purchase = make_goal(session, name="Buy on the web", stage="purchase",
                             sources=("store",), target="web")
        make_running_campaign(session, name="Web basket bonus", goal=purchase,
                              stacking="stackable", eligibility_rule="tenure_months >= 20")
        paused = make_running_campaign(session, name="Paused web bonus", goal=purchase,
                                       stacking="stackable")
        transition(session, campaign=paused, target="paused", actor=ACTOR)
        scheduled = make_campaign(session, name="Coming web bonus", goal=world["goal"],
                                  stacking="stackable", eligibility_rule="tenure_months < 10")
        transition(session, campaign=scheduled, target="scheduled", actor=ACTOR)
        make_running_campaign(session, name="Exclusive web deal", goal=purchase)
        make_running_campaign(session, name="Stackable newcomers", goal=world["goal"],
                              stacking="stackable", eligibility_rule="tenure_months < 2")
        make_campaign(session, name="Stackable draft", goal=purchase, stacking="stackable")

        wizard = Wizard(marketer)
        to_review_with(wizard, world["goal"], rule="tenure_months >= 4", stacking="stackable")
        items = conflict_items(wizard.html)

        def overlap(condition: str) -> int:
            return session.execute(text(
                "SELECT count(*) FROM customer WHERE value_tier <> 'platinum' "
                f"AND tenure_months >= 4 AND {condition}")).scalar_one()

        expected = {"Web basket bonus": ("running", overlap("tenure_months >= 20")),
                    "Paused web bonus": ("paused", overlap("1 = 1")),
                    "Coming web bonus": ("scheduled", overlap("tenure_months < 10"))}
        stacking = [item for item in items if item.startswith("Offers combine")]
        assert len(stacking) == len(expected), items
        for name, (status, count) in expected.items():
            item = next(item for item in stacking if f"'{name}'" in item)
            assert f"'{name}' ({status}), on the " in item
            assert f"shares {count:,} customers with this audience" in item
            assert "both campaigns are stackable" in item
        assert not any("Exclusive web deal" in item or "Stackable newcomers" in item
                       or "Stackable draft" in item for item in items), items

    def test_an_exclusive_draft_stacks_with_nothing(self, session: Session, world,
                                                     marketer) -> None:
        purchase = make_goal(session, name="Buy on the web", stage="purchase",
                             sources=("store",), target="web")
        make_running_campaign(session, name="Web basket bonus", goal=purchase,
                              stacking="stackable")
        wizard = Wizard(marketer)
        to_review_with(wizard, world["goal"], rule="", stacking="exclusive")
        assert conflict_items(wizard.html) == []
        assert ("No running, paused or scheduled campaign whose offers combine with this "
                "one's shares customers with it while it runs.") in plain(wizard.html)


# --------------------------------------------------------------------------- not found


class TestUnknownAddresses:
    @pytest.mark.parametrize("path", ["/no-such-page", "/campaigns/1/no-such-tab",
                                      "/goals/new/extra"])
    def test_a_ui_address_answers_an_html_page_with_a_link_home(self, path: str, world,
                                                                 marketer) -> None:
        for browser in (marketer, marketer.__class__(marketer.app)):
            response = browser.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("text/html")
            assert "<h1>Not found</h1>" in response.text
            assert '<a href="/">Go to the dashboard</a>' in response.text

    def test_an_api_address_keeps_its_json_answer(self, client) -> None:
        response = client.get("/api/v1/no-such-route")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "not_found"


# --------------------------------------------------------------------------- copy


LOYALTY_ONE_POINT = {"tiers": [{"key": "base", "name": "Base", "threshold_points": 0,
                                "benefits": "Free delivery"}],
                     "points_per_currency_unit": 1, "point_value_minor_per_1000": 500}
ONE_ENTRY_LOTTERY = {
    "entry_rule": {"event": "conversion", "entries_per_event": 1, "max_entries_per_customer": 1,
                   "min_amount_minor": 1000},
    "prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 30000, "inventory": 1,
                "odds": {"numerator": 1, "denominator": 100}}]}


class TestSingularCopyAndCurrency:
    def test_campaign_page_in_the_singular_with_currencies(self, session: Session, world,
                                                           marketer) -> None:
        campaign = make_campaign(
            session, name="One of each", goal=world["goal"], per_customer_limit=1,
            arms=[control_arm(weight=25),
                  incentive_arm("points", "loyalty", LOYALTY_ONE_POINT, weight=25),
                  incentive_arm("five off", "fixed_discount", {"amount_minor": 500},
                                weight=25),
                  incentive_arm("one trial", "free_trial",
                                {"product": "Premium", "days": 1, "value_minor": 999,
                                 "cost_minor": 200},
                                weight=25)])
        page = plain(marketer.get(f"/campaigns/{campaign.id}").text)
        assert "at most 1 redemption " in page or "at most 1 redemption." in page, page
        assert "1 redemptions" not in page
        assert "Earn 1 point per €1.00 spent" in page
        assert "€5.00 off" in page
        assert "1 day of Premium free" in page and "(worth €9.99)" in page

    def test_storefront_offer_text_names_the_currency_and_counts_right(
            self, session: Session, world, client, storefront_key) -> None:
        make_running_campaign(
            session, name="Shop offers", goal=world["goal"], stacking="stackable",
            arms=[control_arm(weight=1),
                  incentive_arm("five off", "fixed_discount",
                                {"amount_minor": 500, "min_order_minor": 2000}, weight=99)])
        lottery_goal = make_goal(session, name="Win on the app", stage="purchase",
                                 sources=("store",), target="app")
        make_running_campaign(
            session, name="Tablet draw", goal=lottery_goal, stacking="stackable",
            arms=[control_arm(weight=1),
                  incentive_arm("tablet", "lottery", ONE_ENTRY_LOTTERY, weight=99)])
        texts: dict[str, str] = {}
        for number in range(40):
            response = client.get(f"/api/v1/customers/W{number}/offers", headers=storefront_key)
            assert response.status_code == 200, response.text
            for offer in response.json()["offers"]:
                texts[offer["incentive_type"]] = " ".join(
                    (offer["title"], offer["description"], offer["terms"]))
        assert "€5.00 off your order." in texts["fixed_discount"]
        assert "Minimum order €20.00." in texts["fixed_discount"]
        lottery = texts["lottery"]
        assert "Get 1 entry for" in lottery and "Tablet (worth €300.00)" in lottery
        assert "At most 1 entry per customer." in lottery and "1 prize in total." in lottery
        assert "Minimum spend €10.00 per entry event." in lottery

    def test_a_refused_order_quotes_the_minimum_in_the_campaigns_currency(
            self, session: Session, world, client, storefront_key) -> None:
        campaign = make_running_campaign(
            session, name="Minimum order", goal=world["goal"],
            arms=[control_arm(weight=1),
                  incentive_arm("five off", "fixed_discount",
                                {"amount_minor": 500, "min_order_minor": 2000}, weight=99)])
        customer = next(f"W{number}" for number in range(40) if client.get(
            f"/api/v1/customers/W{number}/offers", headers=storefront_key).json()["offers"])
        response = client.post(
            "/api/v1/redemptions",
            headers={**storefront_key, "Idempotency-Key": "minimum-order-refused-1"},
            json={"customer_id": customer, "campaign_id": campaign.id, "channel": "web",
                  "order_amount_minor": 1500})
        assert response.status_code == 422, response.text
        assert "the minimum order is €20.00" in response.json()["message"]
        assert response.json()["errors"][0]["msg"] == (
            "order total €15.00 is below the minimum order of €20.00")

    def test_a_key_of_the_wrong_scope_is_told_it_needs_an_analytics_key(
            self, session: Session, world, client, storefront_key) -> None:
        campaign = make_campaign(session, name="Reported", goal=world["goal"])
        response = client.get(f"/api/v1/campaigns/{campaign.id}/report",
                              headers=storefront_key)
        assert response.status_code == 403
        assert "needs an analytics" in response.json()["message"], response.json()

    def test_one_new_code_is_one_code(self, session: Session, world, marketer) -> None:
        campaign = make_campaign(
            session, name="Coupons", goal=world["goal"],
            arms=[control_arm(), incentive_arm("coupon", "coupon", {
                "mode": "batch", "prefix": "W", "length": 10,
                "benefit": {"kind": "fixed", "amount_minor": 300}})])
        page = marketer.get(f"/campaigns/{campaign.id}")
        arm_id = re.search(r'name="arm_id" value="(\d+)"', page.text).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        action = re.search(r'<form method="post" action="([^"]*coupons[^"]*)"', page.text)
        assert action, page.text
        done = marketer.post(action.group(1), data={
            "csrf_token": token, "arm_id": arm_id, f"count_{arm_id}": "1"})
        assert done.status_code == 303, plain(done.text)[:2000]
        shown = plain(marketer.get(done.headers["location"]).text)
        assert "1 new code for 'coupon' (1 in all)" in shown, shown[:3000]
        assert "1 code generated" in shown
        assert "1 code for 'coupon' (1 in all)" in shown  # the audit trail
        assert "€3.00 off with a code" in shown


# --------------------------------------------------------------------------- coupon hint


class TestCouponLengthHint:
    def test_the_hinted_minimum_is_the_real_one(self, world, marketer) -> None:
        wizard = Wizard(marketer)
        fill_to_arms(wizard, world["goal"])
        base = {"control_name": "control", "control_weight": "50", "arm0-name": "code",
                "arm0-weight": "50", "arm0-type": "coupon"}
        wizard.press("refresh", **base)
        hint = re.search(r'<p class="hint" id="f-arm0-cfg-length-hint">([^<]*)</p>', wizard.html)
        assert hint, wizard.html
        stated = min(int(number) for number in re.findall(r"\d+", hint.group(1)))
        assert stated == min_length_for(DEFAULT_CHARSET)

        def try_length(length: int) -> str | None:
            wizard.press(**base, **{"arm0-cfg-mode": "batch", "arm0-cfg-length": str(length),
                                    "arm0-cfg-benefit-kind": "percent",
                                    "arm0-cfg-benefit-percent_bp": "10"})
            return field_error(wizard.html, "arm0-cfg-length")

        assert try_length(stated - 1) is not None
        if wizard.step == "budget":
            wizard.press("back")
        assert try_length(stated) is None
