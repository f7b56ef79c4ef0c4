"""Storefront API: offers, redemptions, rollback, validation, trials, loyalty."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session, func, select

from campaigns.models import Assignment, Campaign, CouponCode, Customer, Redemption, TrialGrant
from campaigns.services.apikeys import create_api_key, revoke_api_key
from campaigns.services.campaigns import transition, update_campaign
from campaigns.types import utcnow
from tests.builders import (
    ACTOR,
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    incentive_arm,
    make_goal,
    make_running_campaign,
    percent_arm,
)
from tests.web.api.conftest import bearer
from web.api.storefront import OfferOut, OffersOut


def offers(client, key, customer: str, **params):
    return client.get(f"/api/v1/customers/{customer}/offers", params=params, headers=key)


def redeem(client, key, body: dict, idem: str | None = None):
    headers = dict(key)
    headers["Idempotency-Key"] = idem or uuid.uuid4().hex
    return client.post("/api/v1/redemptions", json=body, headers=headers)


@pytest.fixture
def coupon_campaign(session: Session) -> Campaign:
    return make_running_campaign(session, arms=[control_arm(), coupon_arm()],
                                 per_customer_limit=1)


def treated(session: Session, campaign: Campaign, arm: str = "web coupon") -> str:
    return customer_id_in_arm(session, campaign, arm)


class TestOffersAuth:
    def test_anonymous(self, client) -> None:
        response = client.get("/api/v1/customers/C1/offers")
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    def test_unknown_key(self, client) -> None:
        response = offers(client, bearer("cs_nope_secret"), "C1")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"

    def test_wrong_scope(self, client, management_key) -> None:
        response = offers(client, management_key, "C1")
        assert response.status_code == 403
        assert "storefront" in response.json()["message"]

    def test_revoked_key(self, client, session) -> None:
        created = create_api_key(session, name="old", scope="storefront", actor=ACTOR)
        assert offers(client, bearer(created.secret), "C1").status_code == 200
        revoke_api_key(session, api_key_id=created.api_key.id, actor=ACTOR)
        assert offers(client, bearer(created.secret), "C1").status_code == 401


class TestOffers:
    def test_new_customer_is_created_with_given_attributes(self, client, session,
                                                          storefront_key) -> None:
        response = offers(client, storefront_key, "NEW-1", value_tier="gold", segment="smb",
                          tenure_months=3)
        assert response.status_code == 200
        assert response.json() == {"customer_id": "NEW-1", "channel": None, "stage": None,
                                   "offers": []}
        customer = session.exec(select(Customer).where(Customer.external_id == "NEW-1")).one()
        assert (customer.value_tier, customer.segment, customer.tenure_months) == ("gold",
                                                                                   "smb", 3)

    def test_bad_attribute_names_field_and_creates_nobody(self, client, session,
                                                          storefront_key) -> None:
        response = offers(client, storefront_key, "NEW-2", value_tier="diamond")
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["query", "value_tier"]
        assert session.exec(select(Customer).where(Customer.external_id == "NEW-2")).first() \
            is None

    def test_bad_customer_id_is_named_with_the_other_problems(self, client, session,
                                                              storefront_key) -> None:
        response = offers(client, storefront_key, "no spaces", channel="fax")
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["errors"]] == [["path", "customer_id"],
                                                                 ["query", "channel"]]
        assert response.json()["message"] == "invalid request: path.customer_id, query.channel"
        assert session.exec(select(func.count()).select_from(Customer)).one() == 0

    def test_unknown_channel_and_stage(self, client, storefront_key, coupon_campaign) -> None:
        response = offers(client, storefront_key, "C1", channel="fax", stage="afterlife")
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["errors"]] == [["query", "channel"],
                                                                 ["query", "stage"]]

    def test_treatment_gets_offer_with_unique_code(self, client, session, storefront_key,
                                                   coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        first = offers(client, storefront_key, customer, channel="call_centre",
                       stage="after_sale").json()["offers"]
        assert len(first) == 1
        offer = first[0]
        assert offer["campaign_id"] == coupon_campaign.id
        assert offer["arm"] == "web coupon" and offer["incentive_type"] == "coupon"
        assert offer["code"].startswith("WEB") and len(offer["code"]) == 13
        assert offer["redemptions_left"] == 1
        assert offer["expires_at"] is not None
        again = offers(client, storefront_key, customer, stage="after_sale").json()["offers"]
        assert again[0]["code"] == offer["code"]
        assert session.exec(select(func.count()).select_from(CouponCode)).one() == 1

    def test_answer_has_the_documented_fields_in_order(self, client, session, storefront_key,
                                                       coupon_campaign) -> None:
        # The route serialises its own values (OfferView), not the documented models.
        customer = treated(session, coupon_campaign)
        body = offers(client, storefront_key, customer, stage="after_sale").json()
        assert list(body) == list(OffersOut.model_fields)
        assert list(body["offers"][0]) == list(OfferOut.model_fields)
        offer = OffersOut.model_validate(body).offers[0]
        assert offer.expires_at is not None and offer.expires_at.tzinfo is not None
        assert body["offers"][0]["expires_at"].endswith("Z")

    def test_code_comes_from_pregenerated_batch(self, client, session, storefront_key,
                                                coupon_campaign) -> None:
        from campaigns.services.campaigns import campaign_arms

        arm = campaign_arms(session, coupon_campaign)[1]
        session.add(CouponCode(code="WEBBATCH234", incentive_id=arm.incentive_id,
                               campaign_id=coupon_campaign.id))
        session.flush()
        customer = treated(session, coupon_campaign)
        offer = offers(client, storefront_key, customer).json()["offers"][0]
        assert offer["code"] == "WEBBATCH234"

    def test_control_is_exposed_without_offer(self, client, session, storefront_key,
                                              coupon_campaign) -> None:
        customer = treated(session, coupon_campaign, "control")
        assert offers(client, storefront_key, customer).json()["offers"] == []
        assignment = session.exec(select(Assignment)).one()
        assert assignment.campaign_id == coupon_campaign.id
        assert session.exec(select(CouponCode)).all() == []

    def test_first_exposure_is_recorded_once(self, client, session, storefront_key,
                                             coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        offers(client, storefront_key, customer, channel="web")
        first = session.exec(select(Assignment)).one().first_exposed_at
        time.sleep(0.01)
        offers(client, storefront_key, customer, channel="app")
        rows = session.exec(select(Assignment)).all()
        assert len(rows) == 1 and rows[0].first_exposed_at == first

    def test_assignment_survives_weight_change(self, client, session, storefront_key,
                                               coupon_campaign) -> None:
        from campaigns.services.campaigns import set_weights

        customer = treated(session, coupon_campaign)
        offers(client, storefront_key, customer)
        set_weights(session, campaign=coupon_campaign, actor=ACTOR,
                    weights={"weights": {"control": 99, "web coupon": 1}})
        assert offers(client, storefront_key, customer).json()["offers"][0]["arm"] \
            == "web coupon"

    def test_eligibility_rule_excludes(self, client, session, storefront_key) -> None:
        goal = make_goal(session, rule="value_tier in [bronze, silver]")
        campaign = make_running_campaign(session, goal=goal,
                                         arms=[control_arm(weight=1), coupon_arm(weight=99)])
        customer = treated(session, campaign)
        assert offers(client, storefront_key, customer, value_tier="platinum").json()[
            "offers"] == []
        assert session.exec(select(Assignment)).all() == []
        other = customer_id_in_arm(session, campaign, "web coupon", prefix="B")
        assert len(offers(client, storefront_key, other, value_tier="bronze").json()[
            "offers"]) == 1

    def test_stage_filter(self, client, session, storefront_key, coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        assert offers(client, storefront_key, customer, stage="pre_sale").json()[
            "offers"] == []
        assert session.exec(select(Assignment)).all() == []

    def test_exclusive_priority_wins_and_stackables_combine(self, client, session,
                                                           storefront_key) -> None:
        goal = make_goal(session)
        low = make_running_campaign(session, name="low", goal=goal, priority=1,
                                    stacking="stackable",
                                    arms=[control_arm(weight=1), percent_arm(weight=99)])
        high = make_running_campaign(session, name="high", goal=goal, priority=5,
                                     arms=[control_arm(weight=1), coupon_arm(weight=99)])
        customer = "C-stack"
        shown = offers(client, storefront_key, customer).json()["offers"]
        assigned = {a.campaign_id for a in session.exec(select(Assignment))}
        assert assigned == {high.id}  # the exclusive campaign claimed the customer alone
        assert [o["campaign_id"] for o in shown] in ([high.id], [])
        update_campaign(session, campaign=high, actor=ACTOR, campaign_update={"priority": 0})
        transition(session, campaign=high, target="paused", actor=ACTOR)
        make_running_campaign(session, name="also stackable", goal=goal, priority=3,
                              stacking="stackable",
                              arms=[control_arm(weight=1), percent_arm(weight=99)])
        shown = offers(client, storefront_key, "C-other").json()["offers"]
        assert {o["campaign_name"] for o in shown} <= {"low", "also stackable"}
        assert len({a.campaign_id for a in session.exec(select(Assignment).join(
            Customer).where(Customer.external_id == "C-other"))}) == 2
        assert low.id is not None

    def test_paused_campaign_disappears_at_once(self, client, session, storefront_key,
                                                coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        assert len(offers(client, storefront_key, customer).json()["offers"]) == 1
        transition(session, campaign=coupon_campaign, target="paused", actor=ACTOR)
        assert offers(client, storefront_key, customer).json()["offers"] == []

    def test_limit_reached_hides_offer(self, client, session, storefront_key,
                                       coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        offer = offers(client, storefront_key, customer).json()["offers"][0]
        assert redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                               "code": offer["code"],
                                               "order_amount_minor": 1000}).status_code == 201
        assert offers(client, storefront_key, customer).json()["offers"] == []

    def test_deadlock_is_a_503_that_says_send_again(self, client, storefront_key,
                                                     monkeypatch) -> None:
        import psycopg
        from sqlalchemy.exc import OperationalError

        import web.api.storefront

        def deadlock(*args: object, **kwargs: object) -> None:
            raise OperationalError("UPDATE", {}, psycopg.errors.DeadlockDetected("deadlock"))

        # the ORM path (SQLite) and the async one (PostgreSQL)
        monkeypatch.setattr(web.api.storefront, "customer_offers", deadlock)
        monkeypatch.setattr(web.api.storefront, "offers_postgresql", deadlock)
        response = offers(client, storefront_key, "C1")
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["code"] == "concurrency_conflict"
        assert "send it again" in response.json()["message"]

    def test_budget_spent_hides_offer(self, client, session, storefront_key,
                                      coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        coupon_campaign.spent_minor = coupon_campaign.budget_minor
        session.add(coupon_campaign)
        session.flush()
        assert offers(client, storefront_key, customer).json()["offers"] == []
        # exposed, but no code is issued for an offer that is not shown
        exposed = session.exec(select(Customer).where(Customer.external_id == customer)).one()
        assert session.exec(select(Assignment).where(
            Assignment.customer_id == exposed.id)).one()
        assert session.exec(select(CouponCode).where(
            CouponCode.customer_id == exposed.id)).all() == []


class TestRedemptions:
    def _offer(self, client, session, key, campaign):
        customer = treated(session, campaign)
        offer = offers(client, key, customer).json()["offers"][0]
        return customer, offer

    def test_redeem_charges_budget_once(self, client, session, storefront_key,
                                        coupon_campaign) -> None:
        customer, offer = self._offer(client, session, storefront_key, coupon_campaign)
        body = {"customer_id": customer, "channel": "web", "code": offer["code"],
                "order_id": "O-1", "order_amount_minor": 5990}
        response = redeem(client, storefront_key, body, idem="key-00000001")
        assert response.status_code == 201, response.json()
        result = response.json()
        assert (result["benefit_minor"], result["cost_minor"], result["status"]) == (
            599, 599, "applied")
        assert response.headers["idempotent-replayed"] == "false"
        replay = redeem(client, storefront_key, body, idem="key-00000001")
        assert replay.status_code == 200
        assert replay.json() == result
        assert replay.headers["idempotent-replayed"] == "true"
        session.refresh(coupon_campaign)
        assert coupon_campaign.spent_minor == 599
        assert session.exec(select(func.count()).select_from(Redemption)).one() == 1

    def test_same_key_other_body(self, client, session, storefront_key,
                                 coupon_campaign) -> None:
        customer, offer = self._offer(client, session, storefront_key, coupon_campaign)
        body = {"customer_id": customer, "channel": "web", "code": offer["code"],
                "order_amount_minor": 5990}
        assert redeem(client, storefront_key, body, idem="key-00000002").status_code == 201
        response = redeem(client, storefront_key, {**body, "order_amount_minor": 9990},
                          idem="key-00000002")
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"

    def test_missing_idempotency_key(self, client, storefront_key) -> None:
        response = client.post("/api/v1/redemptions", headers=storefront_key,
                               json={"customer_id": "C1", "channel": "web", "campaign_id": 1})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]

    def test_code_used_twice(self, client, session, storefront_key) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm()])
        customer, offer = self._offer(client, session, storefront_key, campaign)
        body = {"customer_id": customer, "channel": "web", "code": offer["code"],
                "order_amount_minor": 1000}
        assert redeem(client, storefront_key, body).status_code == 201
        second = redeem(client, storefront_key, body)
        assert second.status_code == 409
        assert second.json()["code"] == "code_already_redeemed"
        session.refresh(campaign)
        assert campaign.spent_minor == 100

    def test_customer_limit(self, client, session, storefront_key) -> None:
        campaign = make_running_campaign(session, per_customer_limit=2,
                                         arms=[control_arm(weight=1), percent_arm(weight=99)])
        customer = customer_id_in_arm(session, campaign, "ten percent")
        offers(client, storefront_key, customer)
        body = {"customer_id": customer, "channel": "web", "campaign_id": campaign.id,
                "order_amount_minor": 1000}
        assert [redeem(client, storefront_key, body).status_code for _ in range(3)] == [
            201, 201, 409]
        assert redeem(client, storefront_key, body).json()["code"] == "customer_limit_reached"

    def test_budget_exhausted_changes_nothing(self, client, session, storefront_key) -> None:
        campaign = make_running_campaign(session, budget_minor=150,
                                         arms=[control_arm(weight=1), percent_arm(weight=99)])
        customer = customer_id_in_arm(session, campaign, "ten percent")
        offers(client, storefront_key, customer)
        body = {"customer_id": customer, "channel": "web", "campaign_id": campaign.id,
                "order_amount_minor": 1000}
        assert redeem(client, storefront_key, body).status_code == 201
        refused = redeem(client, storefront_key, body)
        assert refused.status_code == 409 and refused.json()["code"] == "budget_exhausted"
        session.refresh(campaign)
        assert campaign.spent_minor == 100
        assert session.exec(select(func.count()).select_from(Redemption)).one() == 1
        assignment = session.exec(select(Assignment)).one()
        session.refresh(assignment)
        assert assignment.redemption_count == 1

    def test_control_and_not_offered(self, client, session, storefront_key,
                                     coupon_campaign) -> None:
        control = treated(session, coupon_campaign, "control")
        offers(client, storefront_key, control)
        body = {"customer_id": control, "channel": "web", "campaign_id": coupon_campaign.id}
        assert redeem(client, storefront_key, body).json()["code"] == "control_group"
        offers(client, storefront_key, "never-offered", stage="pre_sale")
        body["customer_id"] = "never-offered"
        assert redeem(client, storefront_key, body).json()["code"] == "not_offered"

    @pytest.mark.parametrize(("change", "status", "loc"), [
        ({"code": "NOPE-NOPE"}, 404, ["code"]),
        ({"customer_id": "ghost"}, 404, ["customer_id"]),
        ({"channel": "fax"}, 404, ["channel"]),
        ({"order_amount_minor": 10.5}, 422, ["order_amount_minor"]),
        ({"order_amount_minor": -1}, 422, ["order_amount_minor"]),
        ({"surprise": 1}, 422, ["surprise"]),
    ])
    def test_bad_input_names_field(self, client, session, storefront_key, coupon_campaign,
                                   change, status, loc) -> None:
        customer, offer = self._offer(client, session, storefront_key, coupon_campaign)
        body = {"customer_id": customer, "channel": "web", "code": offer["code"],
                "order_amount_minor": 1000, **change}
        response = redeem(client, storefront_key, body)
        assert response.status_code == status, response.json()
        assert response.json()["errors"][0]["loc"] == loc
        assert session.exec(select(func.count()).select_from(Redemption)).one() == 0

    def test_minimum_order(self, client, session, storefront_key) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm(
            min_order_minor=2000)])
        customer, offer = self._offer(client, session, storefront_key, campaign)
        response = redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                                   "code": offer["code"],
                                                   "order_amount_minor": 1999})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["order_amount_minor"]

    def test_expired_code(self, client, session, storefront_key, coupon_campaign) -> None:
        customer, offer = self._offer(client, session, storefront_key, coupon_campaign)
        code = session.exec(select(CouponCode)).one()
        code.expires_at = utcnow() - timedelta(seconds=1)
        session.add(code)
        session.flush()
        response = redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                                   "code": offer["code"]})
        assert response.status_code == 409 and response.json()["code"] == "code_expired"


class TestRollback:
    def test_restores_exactly_once(self, client, session, storefront_key,
                                   coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        offer = offers(client, storefront_key, customer).json()["offers"][0]
        body = {"customer_id": customer, "channel": "web", "code": offer["code"],
                "order_amount_minor": 2000}
        redemption = redeem(client, storefront_key, body).json()
        url = f"/api/v1/redemptions/{redemption['redemption_id']}/rollback"
        first = client.post(url, headers=storefront_key).json()
        second = client.post(url, headers=storefront_key).json()
        assert (first["status"], first["already_rolled_back"]) == ("rolled_back", False)
        assert (second["status"], second["already_rolled_back"]) == ("rolled_back", True)
        session.refresh(coupon_campaign)
        assert coupon_campaign.spent_minor == 0
        code = session.exec(select(CouponCode)).one()
        session.refresh(code)
        assert code.uses == 0
        # the code and the limit are usable again
        assert redeem(client, storefront_key, body).status_code == 201

    def test_unknown(self, client, storefront_key) -> None:
        response = client.post("/api/v1/redemptions/999999/rollback", headers=storefront_key)
        assert response.status_code == 404


class TestValidate:
    def validate(self, client, key, **body):
        return client.post("/api/v1/coupons/validate", json=body, headers=key)

    def test_reasons(self, client, session, storefront_key, coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        code = offers(client, storefront_key, customer).json()["offers"][0]["code"]
        ok = self.validate(client, storefront_key, code=code.lower(), customer_id=customer,
                           order_amount_minor=5000).json()
        assert (ok["valid"], ok["reason"], ok["benefit_minor"]) == (True, "ok", 500)
        assert self.validate(client, storefront_key, code="UNKNOWN99").json()["reason"] \
            == "unknown"
        assert self.validate(client, storefront_key, code=code, customer_id="someone").json()[
            "reason"] == "not_yours"
        redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                        "code": code, "order_amount_minor": 100})
        assert self.validate(client, storefront_key, code=code).json()["reason"] == "used"
        row = session.exec(select(CouponCode)).one()
        row.uses, row.expires_at = 0, utcnow() - timedelta(days=1)
        session.add(row)
        session.flush()
        assert self.validate(client, storefront_key, code=code).json()["reason"] == "expired"

    def test_every_answer_takes_the_floor_time(self, client, storefront_key) -> None:
        started = time.perf_counter()
        self.validate(client, storefront_key, code="UNKNOWN99")
        assert time.perf_counter() - started >= 0.05

    def test_failures_are_rate_limited(self, client, storefront_key, monkeypatch) -> None:
        from datetime import UTC, datetime

        import web.api.storefront

        # Inside one fixed-window minute, so the test cannot straddle a window boundary.
        monkeypatch.setattr(web.api.storefront, "utcnow",
                            lambda: datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC))
        statuses = [self.validate(client, storefront_key, code=f"BAD{i:05d}").status_code
                    for i in range(21)]
        assert statuses[:20] == [200] * 20
        assert statuses[20] == 429
        limited = self.validate(client, storefront_key, code="BAD99999")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "30"


class TestTrialsAndLoyalty:
    def test_trial_granted_once(self, client, session, storefront_key) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1), incentive_arm(
            "trial", "free_trial", {"product": "Premium", "days": 30, "cost_minor": 500},
            weight=99)])
        customer = customer_id_in_arm(session, campaign, "trial")
        offers(client, storefront_key, customer)
        body = {"customer_id": customer, "channel": "web", "campaign_id": campaign.id}
        granted = redeem(client, storefront_key, body)
        assert granted.status_code == 201
        assert granted.json()["trial"]["product"] == "Premium"
        trials = client.get(f"/api/v1/customers/{customer}/trials",
                            headers=storefront_key).json()["trials"]
        assert len(trials) == 1 and trials[0]["active"] is True
        again = redeem(client, storefront_key, body)
        assert again.status_code == 409 and again.json()["code"] == "trial_already_granted"
        assert session.exec(select(func.count()).select_from(TrialGrant)).one() == 1
        session.refresh(campaign)
        assert campaign.spent_minor == 500

    def test_loyalty_multiplier_on_target_channel(self, client, session,
                                                  storefront_key) -> None:
        ladder = [{"key": "base", "name": "Base", "threshold_points": 0, "benefits": "-"},
                  {"key": "gold", "name": "Gold", "threshold_points": 150, "benefits": "More"}]
        campaign = make_running_campaign(session, arms=[control_arm(weight=1), incentive_arm(
            "double points", "loyalty", {"tiers": ladder, "points_per_currency_unit": 1,
                                         "target_channel_multiplier_bp": 20000,
                                         "point_value_minor_per_1000": 10}, weight=99)])
        customer = customer_id_in_arm(session, campaign, "double points")
        offers(client, storefront_key, customer)
        on_web = redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                                 "campaign_id": campaign.id,
                                                 "order_amount_minor": 10000}).json()
        on_phone = redeem(client, storefront_key, {"customer_id": customer,
                                                   "channel": "call_centre",
                                                   "campaign_id": campaign.id,
                                                   "order_amount_minor": 10000}).json()
        assert (on_web["points"], on_phone["points"]) == (200, 100)
        loyalty = client.get(f"/api/v1/customers/{customer}/loyalty",
                             headers=storefront_key).json()
        assert loyalty["points"] == 300 and loyalty["tier"] == "gold"
        assert [e["delta"] for e in loyalty["ledger"]] == [100, 200]

    def test_unknown_customer(self, client, storefront_key) -> None:
        assert client.get("/api/v1/customers/ghost/loyalty",
                          headers=storefront_key).status_code == 404
        assert client.get("/api/v1/customers/ghost/trials",
                          headers=storefront_key).status_code == 404


class TestObservability:
    def test_metrics_and_request_id(self, client, session, storefront_key, analytics_key,
                                    coupon_campaign) -> None:
        customer = treated(session, coupon_campaign)
        code = offers(client, storefront_key, customer).json()["offers"][0]["code"]
        response = redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                                   "code": code, "order_amount_minor": 1000})
        assert len(response.headers["x-request-id"]) == 16
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=storefront_key).status_code == 403
        text = client.get("/metrics", headers=analytics_key).text
        assert 'channelshift_http_request_duration_seconds_bucket{le="0.005",method="GET",' \
               'route="/api/v1/customers/{customer_id}/offers"' in text
        assert f'channelshift_redemptions_total{{campaign_id="{coupon_campaign.id}",' \
               'incentive_type="coupon"} 1.0' in text
        assert 'channelshift_budget_spent_minor_total{campaign_id=' in text

    def test_logs_hold_no_secrets(self, client, session, storefront_key, coupon_campaign,
                                  capsys) -> None:
        import logging

        from web.observability import configure_logging

        configure_logging()
        try:
            customer = treated(session, coupon_campaign)
            code = offers(client, storefront_key, customer).json()["offers"][0]["code"]
            redeem(client, storefront_key, {"customer_id": customer, "channel": "web",
                                            "code": code})
            client.post("/api/v1/coupons/validate", json={"code": code},
                        headers=storefront_key)
            out = capsys.readouterr().out
        finally:
            for name in ("channelshift", "uvicorn"):
                logging.getLogger(name).handlers.clear()
        lines = [json.loads(line) for line in out.splitlines()]
        redemption = next(line for line in lines if line.get("route") == "/api/v1/redemptions")
        assert redemption["method"] == "POST" and redemption["request_id"]
        assert code not in out
        assert storefront_key["Authorization"].split()[1] not in out


class TestConfigurationCache:
    def test_hot_path_reads_no_configuration(self, engine, session, storefront_key,
                                             coupon_campaign, monkeypatch) -> None:
        """With a warm cache, an offers request touches no configuration table."""
        from fastapi.testclient import TestClient
        from sqlalchemy import event

        from campaigns.asyncdb import SessionConnection
        from campaigns.settings import Settings
        from web.app import create_app
        from web.deps import SessionRunner, async_database, get_session

        app = create_app(engine=engine, check_schema=False,
                         settings=Settings(config_refresh_seconds=60))

        opened = []

        def test_session():
            opened.append(recording)
            session.commit()
            yield session
            session.commit()

        app.dependency_overrides[get_session] = test_session
        app.dependency_overrides[async_database] = lambda: SessionRunner(session) \
            if engine.dialect.name == "postgresql" else None
        statements: list[str] = []

        def record(conn, cursor, statement, *args) -> None:
            statements.append(statement.lower())

        # On PostgreSQL the route's statements go to psycopg directly, past SQLAlchemy.
        execute = SessionConnection.execute

        async def record_async(self, query, params, *, prepare=None):
            if recording:
                statements.append(query.lower())
            return await execute(self, query, params, prepare=prepare)

        monkeypatch.setattr(SessionConnection, "execute", record_async)
        recording = False

        with TestClient(app) as client:
            offers(client, storefront_key, treated(session, coupon_campaign))  # warms up
            event.listen(engine, "before_cursor_execute", record)
            recording = True
            try:
                for i in range(5):
                    assert offers(client, storefront_key, f"warm-{i}").status_code == 200
            finally:
                event.remove(engine, "before_cursor_execute", record)
                recording = False
        assert statements, "the requests ran no SQL at all?"
        # The route opens a session only when it needs one: on SQLite for its ORM path, on
        # PostgreSQL (async statements, warm caches) never.
        assert opened.count(True) == (0 if engine.dialect.name == "postgresql" else 5)
        configuration = ("from arm", "from incentive", "from migration_goal", "from api_key",
                         "from arm_allocation", "from config_epoch", "from channel ")
        assert [s for s in statements if any(t in s for t in configuration)] == []
