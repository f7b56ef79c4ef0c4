"""Prize draws: recorded seed, re-runnable, verified, never beyond inventory."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import time_machine
from sqlmodel import Session, select

from campaigns.models import IncentiveStock, LotteryDraw, LotteryEntry
from campaigns.services.campaigns import campaign_arms
from campaigns.services.lotteries import draw_winners
from campaigns.types import utcnow
from tests.builders import control_arm, incentive_arm, make_customer, make_running_campaign

CONFIG = {"prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 29_900, "inventory": 2,
                      "odds": {"numerator": 1, "denominator": 100}},
                     {"key": "voucher", "name": "Voucher", "value_minor": 2_000,
                      "inventory": 3, "odds": {"numerator": 1, "denominator": 10}}],
          "entry_rule": {"event": "redemption"}}


def lottery(session: Session, *, customers: int = 10, config: dict | None = None):
    campaign = make_running_campaign(session, arms=[
        control_arm(), incentive_arm("draw", "lottery", config or CONFIG)])
    arm = campaign_arms(session, campaign)[1]
    for i in range(customers):
        customer = make_customer(session, external_id=f"P{i}")
        session.add(LotteryEntry(campaign_id=campaign.id, incentive_id=arm.incentive_id,
                                 customer_id=customer.id, entries=1 + i % 3,
                                 source_ref=f"seed:{i}"))
    session.flush()
    return campaign


class TestAlgorithm:
    def test_same_seed_same_winners(self) -> None:
        tickets = [(i, 1 + i % 4) for i in range(100)]
        prizes = [("a", 10, 3), ("b", 5, 5)]
        first = draw_winners(tickets, prizes, "00ff00ff00ff")
        assert first == draw_winners(tickets, prizes, "00ff00ff00ff")
        assert first != draw_winners(tickets, prizes, "00ff00ff00fe")
        assert len({a.customer_id for a in first}) == 8  # without replacement

    def test_fewer_customers_than_prizes(self) -> None:
        awards = draw_winners([(1, 5), (2, 1)], [("a", 10, 3)], "abcdef12")
        assert sorted(a.customer_id for a in awards) == [1, 2]

    def test_weighted_by_entries(self) -> None:
        wins = Counter(draw_winners([(1, 9), (2, 1)], [("a", 1, 1)], f"{seed:08x}")[0]
                       .customer_id for seed in range(2000))
        assert 1700 < wins[1] < 1900  # 90% expected


class TestDrawApi:
    def test_draw_verify_and_exhaust(self, client, session, management_key) -> None:
        campaign = lottery(session)
        url = f"/api/v1/campaigns/{campaign.id}/draws"
        drawn = client.post(url, json={"seed": "0123456789abcdef"}, headers=management_key)
        assert drawn.status_code == 201, drawn.json()
        result = drawn.json()
        assert result["seed"] == "0123456789abcdef"
        assert Counter(w["prize"] for w in result["winners"]) == {"tablet": 2, "voucher": 3}
        assert len({w["customer_id"] for w in result["winners"]}) == 5
        assert client.get(f"{url}/{result['draw_id']}", headers=management_key).json() \
            == result
        verified = client.post(f"{url}/{result['draw_id']}/verify", headers=management_key)
        assert verified.json()["verified"] is True
        again = client.post(url, headers=management_key)
        assert again.status_code == 409 and again.json()["code"] == "prizes_exhausted"
        stock = {s.item_key: (s.used, s.total) for s in session.exec(select(IncentiveStock))}
        assert stock == {"tablet": (2, 2), "voucher": (3, 3)}

    def test_tampered_entries_fail_verification(self, client, session, management_key) -> None:
        campaign = lottery(session)
        url = f"/api/v1/campaigns/{campaign.id}/draws"
        draw_id = client.post(url, headers=management_key).json()["draw_id"]
        entry = session.exec(select(LotteryEntry).order_by(LotteryEntry.id)).first()
        session.delete(entry)
        session.flush()
        assert client.post(f"{url}/{draw_id}/verify", headers=management_key).json()[
            "verified"] is False

    def test_errors(self, client, session, management_key, storefront_key) -> None:
        campaign = make_running_campaign(session)
        url = f"/api/v1/campaigns/{campaign.id}/draws"
        assert client.post(url, headers=management_key).json()["code"] == "not_a_lottery"
        assert client.post("/api/v1/campaigns/999999/draws",
                           headers=management_key).status_code == 404
        assert client.post(url, headers=storefront_key).status_code == 403
        bad = client.post(url, json={"seed": "xyz"}, headers=management_key)
        assert bad.status_code == 422 and bad.json()["errors"][0]["loc"][-1] == "seed"
        assert client.get(f"{url}/12345", headers=management_key).status_code == 404


class TestDrawDate:
    """A lottery that announces its draw date cannot be drawn before it."""

    def test_a_draw_before_the_announced_date_is_refused(self, client, session,
                                                          management_key) -> None:
        draw_at = (utcnow() + timedelta(days=3)).replace(microsecond=0)
        campaign = lottery(session, config={**CONFIG, "draw_at": draw_at.isoformat()})
        url = f"/api/v1/campaigns/{campaign.id}/draws"
        early = client.post(url, json={"seed": "0123456789abcdef"}, headers=management_key)
        assert early.status_code == 409, early.json()
        assert early.json()["code"] == "draw_not_due"
        assert f"{draw_at:%Y-%m-%d %H:%M:%S} UTC" in early.json()["message"]
        assert session.exec(select(LotteryDraw)).all() == []
        assert {s.used for s in session.exec(select(IncentiveStock))} == {0}

        with time_machine.travel(draw_at - timedelta(seconds=2), tick=False):
            assert client.post(url, headers=management_key).status_code == 409
        with time_machine.travel(draw_at + timedelta(seconds=1), tick=True):
            drawn = client.post(url, headers=management_key)
        assert drawn.status_code == 201, drawn.json()
        assert len(drawn.json()["winners"]) == 5
        assert datetime.fromisoformat(drawn.json()["drawn_at"]) == draw_at

    def test_entries_after_the_announced_date_do_not_count(self, client, session,
                                                           management_key) -> None:
        draw_at = (utcnow() + timedelta(days=3)).replace(microsecond=0)
        campaign = lottery(session, customers=0,
                           config={**CONFIG, "draw_at": draw_at.isoformat()})
        arm = campaign_arms(session, campaign)[1]
        for name, when in (("ON-TIME", draw_at - timedelta(minutes=1)),
                           ("LATE", draw_at + timedelta(minutes=1))):
            customer = make_customer(session, external_id=name)
            session.add(LotteryEntry(campaign_id=campaign.id, incentive_id=arm.incentive_id,
                                     customer_id=customer.id, entries=1, source_ref=name,
                                     created_at=when))
        session.flush()
        with time_machine.travel(draw_at + timedelta(minutes=5), tick=True):
            drawn = client.post(f"/api/v1/campaigns/{campaign.id}/draws",
                                headers=management_key)
        assert drawn.status_code == 201, drawn.json()
        assert [w["customer_id"] for w in drawn.json()["winners"]] == ["ON-TIME"]

    def test_a_lottery_without_a_date_is_drawn_by_hand_at_any_time(
        self, client, session, management_key
    ) -> None:
        campaign = lottery(session)
        drawn = client.post(f"/api/v1/campaigns/{campaign.id}/draws", headers=management_key)
        assert drawn.status_code == 201, drawn.json()
        assert datetime.fromisoformat(drawn.json()["drawn_at"]) <= datetime.now(UTC)
