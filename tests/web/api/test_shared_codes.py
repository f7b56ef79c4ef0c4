"""Shared coupon codes: one code the marketer chose (``SAVE10``), offered to every treated
customer, validated and redeemed through the storefront API, within its total cap
(``max_redemptions``) and, when ``single_use``, once per customer."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, func, select

from campaigns.models import Campaign, CouponCode, Redemption
from tests.builders import incentive_arm, make_running_campaign


def shared_coupon(*, code: str = "SAVE10", **settings: Any) -> dict[str, Any]:
    config = {"mode": "shared", "code": code, "benefit": {"kind": "fixed", "amount_minor": 500},
              **settings}
    return incentive_arm("shared coupon", "coupon", config, weight=100)


def shared_campaign(session: Session, *, budget_minor: int | None = 100_000,
                    **settings: Any) -> Campaign:
    return make_running_campaign(session, arms=[shared_coupon(**settings)],
                                 control_opt_out=True,
                                 control_opt_out_reason="every customer gets the code",
                                 budget_minor=budget_minor)


def offers(client, key, customer: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/customers/{customer}/offers", headers=key)
    assert response.status_code == 200, response.json()
    return response.json()["offers"]


def redeem(client, key, customer: str, code: str, *, order_amount_minor: int = 2000):
    headers = {**key, "Idempotency-Key": uuid.uuid4().hex}
    return client.post("/api/v1/redemptions", headers=headers, json={
        "customer_id": customer, "channel": "web", "code": code,
        "order_amount_minor": order_amount_minor})


def validate(client, key, code: str, customer: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "order_amount_minor": 2000}
    if customer is not None:
        body["customer_id"] = customer
    return client.post("/api/v1/coupons/validate", json=body, headers=key).json()


def live_redemptions(session: Session, campaign: Campaign) -> int:
    return session.exec(select(func.count()).select_from(Redemption).where(
        Redemption.campaign_id == campaign.id, Redemption.status == "applied")).one()


class TestSharedCodeIsOfferedValidatedAndRedeemed:
    def test_offer_carries_the_code_that_validates_and_redeems(self, client, session,
                                                                storefront_key) -> None:
        campaign = shared_campaign(session)
        (offer,) = offers(client, storefront_key, "S1")
        assert offer["code"] == "SAVE10"
        checked = validate(client, storefront_key, "save10", "S1")
        assert (checked["valid"], checked["reason"], checked["benefit_minor"]) == (
            True, "ok", 500), checked
        response = redeem(client, storefront_key, "S1", "save10")
        assert response.status_code == 201, response.json()
        assert (response.json()["campaign_id"], response.json()["cost_minor"]) == (
            campaign.id, 500)
        session.refresh(campaign)
        assert campaign.spent_minor == 500
        code = session.exec(select(CouponCode).where(CouponCode.code == "SAVE10")).one()
        assert code.uses == 1

    def test_wrong_code_is_refused_and_changes_nothing(self, client, session,
                                                       storefront_key) -> None:
        campaign = shared_campaign(session)
        offers(client, storefront_key, "S1")
        response = redeem(client, storefront_key, "S1", "SAVE11")
        assert response.status_code == 404
        assert response.json()["code"] == "unknown_code"
        assert validate(client, storefront_key, "SAVE11", "S1")["reason"] == "unknown"
        session.refresh(campaign)
        assert (campaign.spent_minor, live_redemptions(session, campaign)) == (0, 0)


class TestSharedCodeCap:
    def test_cap_reached_is_refused_with_its_reason(self, client, session,
                                                    storefront_key) -> None:
        campaign = shared_campaign(session, max_redemptions=2)
        for customer in ("S1", "S2", "S3"):
            offers(client, storefront_key, customer)
        assert redeem(client, storefront_key, "S1", "SAVE10").status_code == 201
        assert redeem(client, storefront_key, "S2", "SAVE10").status_code == 201
        refused = redeem(client, storefront_key, "S3", "SAVE10")
        assert refused.status_code == 409
        assert refused.json()["code"] == "code_limit_reached"
        assert "2" in refused.json()["message"]
        assert validate(client, storefront_key, "SAVE10", "S3")["reason"] == "used"
        session.refresh(campaign)
        assert (campaign.spent_minor, live_redemptions(session, campaign)) == (1000, 2)

    def test_rollback_gives_the_use_back(self, client, session, storefront_key) -> None:
        shared_campaign(session, max_redemptions=1)
        offers(client, storefront_key, "S1")
        offers(client, storefront_key, "S2")
        first = redeem(client, storefront_key, "S1", "SAVE10").json()
        assert redeem(client, storefront_key, "S2", "SAVE10").status_code == 409
        rolled = client.post(f"/api/v1/redemptions/{first['redemption_id']}/rollback",
                             headers=storefront_key)
        assert rolled.status_code == 200, rolled.json()
        assert redeem(client, storefront_key, "S2", "SAVE10").status_code == 201


class TestSingleUseSharedCode:
    def test_each_customer_redeems_it_once(self, client, session, storefront_key) -> None:
        campaign = shared_campaign(session, single_use=True, max_redemptions=10)
        offers(client, storefront_key, "S1")
        offers(client, storefront_key, "S2")
        first = redeem(client, storefront_key, "S1", "SAVE10")
        assert first.status_code == 201, first.json()
        again = redeem(client, storefront_key, "S1", "SAVE10")
        assert again.status_code == 409
        assert again.json()["code"] == "code_already_used"
        assert validate(client, storefront_key, "SAVE10", "S1")["reason"] == "already_used"
        assert validate(client, storefront_key, "SAVE10", "S2")["reason"] == "ok"
        assert redeem(client, storefront_key, "S2", "SAVE10").status_code == 201
        session.refresh(campaign)
        assert (campaign.spent_minor, live_redemptions(session, campaign)) == (1000, 2)

    def test_rolled_back_use_can_be_made_again(self, client, session, storefront_key) -> None:
        shared_campaign(session, single_use=True)
        offers(client, storefront_key, "S1")
        first = redeem(client, storefront_key, "S1", "SAVE10").json()
        client.post(f"/api/v1/redemptions/{first['redemption_id']}/rollback",
                    headers=storefront_key)
        assert redeem(client, storefront_key, "S1", "SAVE10").status_code == 201

    def test_a_code_already_used_by_another_coupon_is_refused(self, client, session,
                                                              management_key) -> None:
        shared_campaign(session)
        response = client.post("/api/v1/incentives", headers=management_key, json={
            "name": "again", "type": "coupon",
            "config": {"mode": "shared", "code": "save10",
                       "benefit": {"kind": "fixed", "amount_minor": 100}}})
        assert response.status_code == 422, response.json()
        assert response.json()["errors"][0]["loc"] == ["config", "code"]
