"""Lottery entries earned by redemptions: "at most N entries per customer" holds for them
as it does for events, a rolled-back redemption's entries never count in a draw, and a
redemption that earns no entry says so and keeps the customer's per-customer limit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, func, select

from campaigns.models import Assignment, Campaign, Customer, LotteryEntry, Redemption
from tests.builders import incentive_arm, make_running_campaign

VOUCHERS = [{"key": "voucher", "name": "Voucher", "value_minor": 2_000, "inventory": 5,
             "odds": {"numerator": 1, "denominator": 10}}]


def lottery_campaign(session: Session, *, entry_rule: dict[str, Any],
                     per_customer_limit: int | None = None, name: str = "Spring draw",
                     priority: int = 0, **settings: Any) -> Campaign:
    config = {"prizes": VOUCHERS, "entry_rule": entry_rule, **settings}
    return make_running_campaign(
        session, name=name, priority=priority,
        arms=[incentive_arm("draw", "lottery", config, weight=100)],
        control_opt_out=True, control_opt_out_reason="everyone may enter",
        per_customer_limit=per_customer_limit)


def enter(client, key, campaign: Campaign, customer: str):
    client.get(f"/api/v1/customers/{customer}/offers", headers=key)
    headers = {**key, "Idempotency-Key": uuid.uuid4().hex}
    return client.post("/api/v1/redemptions", headers=headers, json={
        "customer_id": customer, "channel": "web", "campaign_id": campaign.id})


def live_entries(session: Session, campaign: Campaign, customer: str) -> int:
    return session.exec(
        select(func.coalesce(func.sum(LotteryEntry.entries), 0))
        .join(Customer, Customer.id == LotteryEntry.customer_id)
        .where(LotteryEntry.campaign_id == campaign.id, Customer.external_id == customer,
               LotteryEntry.rolled_back_at.is_(None))).one()


class TestRedemptionEntriesKeepTheCap:
    def test_entries_stop_at_the_cap(self, client, session, storefront_key) -> None:
        campaign = lottery_campaign(session, entry_rule={
            "event": "redemption", "entries_per_event": 2, "max_entries_per_customer": 5})
        answers = [enter(client, storefront_key, campaign, "L1") for _ in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 409], [a.json() for a in answers]
        assert [a.json()["lottery_entries"] for a in answers[:2]] == [2, 2]
        # The offer promises 2 entries per redemption: one more would give 2 and pass the
        # cap of 5, so it is refused rather than cut to 1.
        assert answers[2].json()["code"] == "entry_limit_reached"
        assert "5" in answers[2].json()["message"]
        assert live_entries(session, campaign, "L1") == 4
        # the refusal wrote nothing
        assert session.exec(select(func.count()).select_from(Redemption)).one() == 2

    def test_each_limit_names_itself_when_both_apply(self, client, session,
                                                     storefront_key) -> None:
        entries_first = lottery_campaign(session, per_customer_limit=5, entry_rule={
            "event": "redemption", "max_entries_per_customer": 2})
        answers = [enter(client, storefront_key, entries_first, "L1") for _ in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 409]
        assert answers[2].json()["code"] == "entry_limit_reached"
        limit_first = lottery_campaign(session, per_customer_limit=1, name="limit first",
                                       priority=5, entry_rule={
                                           "event": "redemption", "max_entries_per_customer": 5})
        answers = [enter(client, storefront_key, limit_first, "L2") for _ in range(2)]
        assert [a.status_code for a in answers] == [201, 409]
        assert answers[1].json()["code"] == "customer_limit_reached"


class TestRolledBackEntries:
    def test_rolled_back_customer_never_wins(self, client, session, storefront_key,
                                             management_key) -> None:
        campaign = lottery_campaign(session, entry_rule={
            "event": "redemption", "max_entries_per_customer": 1})
        cancelled = enter(client, storefront_key, campaign, "GONE").json()
        assert enter(client, storefront_key, campaign, "KEPT").status_code == 201
        rolled = client.post(f"/api/v1/redemptions/{cancelled['redemption_id']}/rollback",
                             headers=storefront_key)
        assert rolled.status_code == 200, rolled.json()
        # five prizes for two customers: anyone holding a ticket wins
        drawn = client.post(f"/api/v1/campaigns/{campaign.id}/draws", headers=management_key)
        assert drawn.status_code == 201, drawn.json()
        assert [w["customer_id"] for w in drawn.json()["winners"]] == ["KEPT"]
        assert live_entries(session, campaign, "GONE") == 0
        verified = client.post(
            f"/api/v1/campaigns/{campaign.id}/draws/{drawn.json()['draw_id']}/verify",
            headers=management_key)
        assert verified.json()["verified"] is True

    def test_rollback_frees_the_place_under_the_cap(self, client, session,
                                                    storefront_key) -> None:
        campaign = lottery_campaign(session, entry_rule={
            "event": "redemption", "max_entries_per_customer": 1})
        first = enter(client, storefront_key, campaign, "L1").json()
        assert enter(client, storefront_key, campaign, "L1").status_code == 409
        client.post(f"/api/v1/redemptions/{first['redemption_id']}/rollback",
                    headers=storefront_key)
        assert enter(client, storefront_key, campaign, "L1").status_code == 201
        assert live_entries(session, campaign, "L1") == 1
        assignment = session.exec(select(Assignment).where(
            Assignment.campaign_id == campaign.id)).one()
        session.refresh(assignment)
        assert assignment.lottery_entries == 1


class TestRedemptionWithoutEntries:
    def test_says_so_and_keeps_the_limit(self, client, session, storefront_key) -> None:
        campaign = lottery_campaign(session, per_customer_limit=1,
                                    entry_rule={"event": "interaction"})
        first = enter(client, storefront_key, campaign, "L1")
        assert first.status_code == 201, first.json()
        assert first.json()["lottery_entries"] == 0
        assert "interaction" in first.json()["lottery_entries_note"]
        assert first.json()["counts_toward_limit"] is False
        assert enter(client, storefront_key, campaign, "L1").status_code == 201
        assert live_entries(session, campaign, "L1") == 0
        assignment = session.exec(select(Assignment).where(
            Assignment.campaign_id == campaign.id)).one()
        session.refresh(assignment)
        assert assignment.redemption_count == 0

    def test_counts_toward_the_limit_when_the_campaign_says_so(self, client, session,
                                                               storefront_key) -> None:
        campaign = lottery_campaign(session, per_customer_limit=1,
                                    entry_rule={"event": "interaction"},
                                    count_entryless_redemptions=True)
        first = enter(client, storefront_key, campaign, "L1")
        assert first.status_code == 201, first.json()
        assert first.json()["counts_toward_limit"] is True
        second = enter(client, storefront_key, campaign, "L1")
        assert (second.status_code, second.json()["code"]) == (409, "customer_limit_reached")
        client.post(f"/api/v1/redemptions/{first.json()['redemption_id']}/rollback",
                    headers=storefront_key)
        assert enter(client, storefront_key, campaign, "L1").status_code == 201
