"""Lottery entry caps and shared coupon codes under hundreds of concurrent redemptions,
against a real two-worker server on PostgreSQL, reconciled in the database."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from campaigns.models import Assignment, Campaign, CouponCode, Customer, LotteryEntry, Redemption
from tests.builders import incentive_arm, make_running_campaign
from tests.web.api import test_concurrency as live
from tests.web.api.test_concurrency import (
    expose,
    fire,
    redemption,
    setup,
    statuses,
    wait_for_catalog,
)

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

REQUESTS = 300


def summary(label: str, responses: list, elapsed: float) -> str:
    """One line of figures for docs/RELIABILITY.md (printed; run with ``-s`` to see it)."""
    latencies = sorted(r.elapsed.total_seconds() * 1000 for r in responses)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    counts = ", ".join(f"{n}x{status}" for status, n in sorted(statuses(responses).items()))
    return (f"{label}: {len(responses)} concurrent redemptions in {elapsed:.1f} s: {counts}; "
            f"p50 {latencies[len(latencies) // 2]:.0f} ms, p99 {p99:.0f} ms")

# The live server and its keys, as the other concurrency tests get them.
server = live.server
keys = live.keys


def opted_out(session: Session, *, name: str, priority: int, arm: dict) -> Campaign:
    return make_running_campaign(session, name=name, priority=priority, arms=[arm],
                                 control_opt_out=True, control_opt_out_reason="load test",
                                 budget_minor=1_000_000)


class TestLotteryEntryCapUnderLoad:
    def test_concurrent_redemptions_never_exceed_the_cap(self, server, keys) -> None:
        cap, customers_count = 3, 30
        config = {"prizes": [{"key": "voucher", "name": "Voucher", "value_minor": 2_000,
                              "inventory": 5, "odds": {"numerator": 1, "denominator": 10}}],
                  "entry_rule": {"event": "redemption", "max_entries_per_customer": cap}}
        campaign = setup(server, lambda s: opted_out(
            s, name="capped draw", priority=100,
            arm=incentive_arm("draw", "lottery", config, weight=100)))
        customers = [f"LOT{i}" for i in range(customers_count)]
        wait_for_catalog()
        expose(server, keys, customers)
        requests = [redemption(keys, {"customer_id": customers[i % customers_count],
                                      "channel": "web", "campaign_id": campaign.id})
                    for i in range(REQUESTS)]
        started = time.perf_counter()
        responses = fire(server, requests)
        print(summary("lottery entry cap", responses, time.perf_counter() - started))
        assert statuses(responses) == {201: cap * customers_count,
                                       409: REQUESTS - cap * customers_count}, \
            statuses(responses)
        assert {r.json()["code"] for r in responses if r.status_code == 409} \
            == {"entry_limit_reached"}
        with Session(server.engine) as session:
            entries = dict(session.exec(
                select(Customer.external_id, func.sum(LotteryEntry.entries))
                .join(Customer, Customer.id == LotteryEntry.customer_id)
                .where(LotteryEntry.campaign_id == campaign.id)
                .group_by(Customer.external_id)).all())
            assert entries == dict.fromkeys(customers, cap)
            held = session.exec(select(Assignment.lottery_entries).where(
                Assignment.campaign_id == campaign.id)).all()
            assert sorted(held) == [cap] * customers_count
            per_customer = Counter(session.exec(select(Redemption.customer_id).where(
                Redemption.campaign_id == campaign.id)).all())
            assert sorted(per_customer.values()) == [cap] * customers_count


class TestSharedCodeCapUnderLoad:
    def test_exactly_the_cap_is_redeemed(self, server, keys) -> None:
        cap = 10
        config = {"mode": "shared", "code": "RUSH10", "max_redemptions": cap,
                  "benefit": {"kind": "fixed", "amount_minor": 500}}
        campaign = setup(server, lambda s: opted_out(
            s, name="shared rush", priority=200,
            arm=incentive_arm("shared", "coupon", config, weight=100)))
        customers = [f"RUSH{i}" for i in range(REQUESTS)]
        wait_for_catalog()
        shown = expose(server, keys, customers)
        assert {o["offers"][0]["code"] for o in shown} == {"RUSH10"}
        started = time.perf_counter()
        responses = fire(server, [
            redemption(keys, {"customer_id": c, "channel": "web", "code": "rush10",
                              "order_amount_minor": 2_000}) for c in customers])
        print(summary("shared code", responses, time.perf_counter() - started))
        assert statuses(responses) == {201: cap, 409: REQUESTS - cap}, statuses(responses)
        assert {r.json()["code"] for r in responses if r.status_code == 409} \
            == {"code_limit_reached"}
        with Session(server.engine) as session:
            redeemed = session.exec(select(func.count()).select_from(Redemption).where(
                Redemption.campaign_id == campaign.id,
                Redemption.status == "applied")).one()
            code = session.exec(select(CouponCode).where(CouponCode.code == "RUSH10")).one()
            spent = session.get(Campaign, campaign.id).spent_minor
            cost = session.exec(select(func.sum(Redemption.cost_minor)).where(
                Redemption.campaign_id == campaign.id)).one()
            assert (redeemed, code.uses, spent, cost) == (cap, cap, cap * 500, cap * 500)
