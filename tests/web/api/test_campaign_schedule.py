"""A campaign's schedule holds on every storefront request, whether or not the scheduler
has ticked: offers, redemptions and code validation read ``starts_at`` and ``ends_at``
themselves (the scheduler is off in tests, so the campaign stays ``running``)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from sqlmodel import Session, func, select

from campaigns.models import Campaign, Redemption
from campaigns.types import utcnow
from tests.builders import (
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    make_running_campaign,
    percent_arm,
)


def offers(client, key, customer: str) -> list[dict]:
    response = client.get(f"/api/v1/customers/{customer}/offers", headers=key)
    assert response.status_code == 200, response.text
    return response.json()["offers"]


def redeem(client, key, body: dict):
    return client.post("/api/v1/redemptions", json=body,
                       headers={**key, "Idempotency-Key": uuid.uuid4().hex})


def ending_tomorrow(session: Session) -> Campaign:
    return make_running_campaign(session, arms=[control_arm(weight=1), coupon_arm(weight=99)],
                                 ends_at=utcnow() + timedelta(days=1))


class TestCampaignEndsAtItsEndTime:
    def test_offer_shown_before_ends_at_and_gone_after(self, client, session,
                                                       storefront_key) -> None:
        campaign = ending_tomorrow(session)
        customer = customer_id_in_arm(session, campaign, "web coupon")
        assert campaign.ends_at is not None
        with time_machine.travel(campaign.ends_at - timedelta(seconds=1), tick=True):
            assert [o["campaign_id"] for o in offers(client, storefront_key, customer)] \
                == [campaign.id]
        with time_machine.travel(campaign.ends_at + timedelta(seconds=1), tick=True):
            assert offers(client, storefront_key, customer) == []

    @pytest.mark.parametrize("arm", ["web coupon", "ten percent"])
    def test_redemption_one_second_after_ends_at_is_refused_and_charges_nothing(
            self, client, session, storefront_key, arm) -> None:
        campaign = make_running_campaign(
            session, arms=[control_arm(weight=1), coupon_arm(weight=99) if arm == "web coupon"
                           else percent_arm(weight=99)],
            ends_at=utcnow() + timedelta(days=1))
        customer = customer_id_in_arm(session, campaign, arm)
        offer = offers(client, storefront_key, customer)[0]
        body = {"customer_id": customer, "channel": "web", "order_amount_minor": 5000}
        body |= {"code": offer["code"]} if offer["code"] else {"campaign_id": campaign.id}
        assert campaign.ends_at is not None
        with time_machine.travel(campaign.ends_at + timedelta(seconds=1), tick=True):
            response = redeem(client, storefront_key, body)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "campaign_ended"
        session.refresh(campaign)
        assert campaign.status == "running"  # no tick ran: the request refused by itself
        assert campaign.spent_minor == 0
        assert session.exec(select(func.count()).select_from(Redemption)).one() == 0

    def test_redemption_just_before_ends_at_succeeds(self, client, session,
                                                     storefront_key) -> None:
        campaign = ending_tomorrow(session)
        customer = customer_id_in_arm(session, campaign, "web coupon")
        code = offers(client, storefront_key, customer)[0]["code"]
        assert campaign.ends_at is not None
        with time_machine.travel(campaign.ends_at - timedelta(seconds=5), tick=True):
            response = redeem(client, storefront_key, {
                "customer_id": customer, "channel": "web", "code": code,
                "order_amount_minor": 5000})
        assert response.status_code == 201, response.text

    def test_code_validation_after_ends_at_says_the_campaign_ended(
            self, client, session, storefront_key) -> None:
        campaign = ending_tomorrow(session)
        customer = customer_id_in_arm(session, campaign, "web coupon")
        code = offers(client, storefront_key, customer)[0]["code"]
        assert campaign.ends_at is not None
        with time_machine.travel(campaign.ends_at + timedelta(seconds=1), tick=True):
            response = client.post("/api/v1/coupons/validate", headers=storefront_key,
                                   json={"code": code, "customer_id": customer})
        assert response.status_code == 200, response.text
        assert (response.json()["valid"], response.json()["reason"]) \
            == (False, "campaign_ended")


class TestCampaignOffersNothingBeforeItsStartTime:
    def test_no_offer_and_no_redemption_while_the_clock_is_before_starts_at(
            self, client, session, storefront_key) -> None:
        # Started by hand, the campaign starts now; a request whose clock reads an hour
        # earlier (a clock stepped back, a host behind) is before its start.
        campaign = ending_tomorrow(session)
        customer = customer_id_in_arm(session, campaign, "web coupon")
        code = offers(client, storefront_key, customer)[0]["code"]
        assert campaign.starts_at is not None
        with time_machine.travel(campaign.starts_at - timedelta(hours=1), tick=True):
            assert offers(client, storefront_key, customer) == []
            response = redeem(client, storefront_key, {
                "customer_id": customer, "channel": "web", "code": code,
                "order_amount_minor": 5000})
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "campaign_not_started"
        session.refresh(campaign)
        assert campaign.spent_minor == 0
