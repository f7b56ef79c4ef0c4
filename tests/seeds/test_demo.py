"""The demo world: counts, idempotence, determinism and the effects built into it."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from campaigns.assignment import choose_arm
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    CampaignStatus,
    Channel,
    ChannelCost,
    ChannelEvent,
    CouponCode,
    Customer,
    IncentiveStock,
    LotteryDraw,
    LotteryEntry,
    LotteryWinner,
    PointsLedger,
    Redemption,
    Stage,
)
from campaigns.services.catalog import load_snapshot
from campaigns.services.channels import create_channel, ensure_default_stages, set_channel_cost
from campaigns.services.lotteries import verify_draw
from campaigns.services.redemptions import (
    IdempotencyKeyReused,
    RedemptionRequest,
    redeem,
    rollback_redemption,
)
from seeds.demo import (
    ENDED_CAMPAIGN,
    RUNNING_CAMPAIGN,
    TRUE_EFFECTS,
    demo_now,
    is_seeded,
    seed_demo_world,
)
from seeds.demo_simulation import CAMPAIGN_ARMS, simulate_demo_world
from seeds.demo_spec import ENDED_EXPERIMENT, RUNNING_EXPERIMENT, RUNNING_TRUE_EFFECTS

SMALL = 2_000
SEED = 20261122
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _count(session: Session, model: type) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def _arm_names(session: Session, campaign_id: int) -> dict[int, str]:
    arms = session.exec(select(Arm).where(Arm.campaign_id == campaign_id)).all()
    return {arm.id: arm.name for arm in arms if arm.id is not None}


def _adoption_by_arm(session: Session, campaign_id: int, *, stage: str, target: str,
                     window_days: int) -> dict[str, tuple[int, int]]:
    """(exposed, adopters) per arm, recomputed from the stored assignments and events."""
    arms = _arm_names(session, campaign_id)
    assignments = session.exec(select(Assignment).where(
        Assignment.campaign_id == campaign_id)).all()
    channel_id = session.exec(select(Channel.id).where(Channel.key == target)).one()
    stage_id = session.exec(select(Stage.id).where(Stage.key == stage)).one()
    times: dict[int, list[datetime]] = defaultdict(list)
    for customer_id, at in session.exec(
        select(ChannelEvent.customer_id, ChannelEvent.occurred_at).where(
            ChannelEvent.channel_id == channel_id, ChannelEvent.stage_id == stage_id,
            ChannelEvent.kind == "interaction")):
        times[customer_id].append(at)
    result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    window = timedelta(days=window_days)
    for a in assignments:
        counts = result[arms[a.arm_id]]
        counts[0] += 1
        start = a.first_exposed_at
        counts[1] += any(start <= t <= start + window for t in times[a.customer_id])
    return {arm: (n, adopters) for arm, (n, adopters) in result.items()}


# --------------------------------------------------------------------------- without a database


class TestSimulation:
    def test_same_seed_and_now_give_the_same_world(self) -> None:
        first = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        second = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        assert first.summary() == second.summary()
        for name in first.experiments:
            assert first.experiments[name].arm == second.experiments[name].arm
            assert np.array_equal(first.experiments[name].exposed_at,
                                  second.experiments[name].exposed_at)
        assert np.array_equal(first.events.t, second.events.t)
        assert np.array_equal(first.events.cost, second.events.cost)
        assert [c.code for c in first.coupons] == [c.code for c in second.coupons]
        assert first.redemptions == second.redemptions
        assert first.lottery_draw == second.lottery_draw

    def test_another_seed_gives_another_world(self) -> None:
        first = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        other = simulate_demo_world(seed=SEED + 1, customers=SMALL, now=NOW)
        assert first.salts != other.salts
        assert first.experiments[ENDED_CAMPAIGN].arm != other.experiments[ENDED_CAMPAIGN].arm

    def test_arms_come_from_choose_arm_with_the_seeded_salt(self) -> None:
        world = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        result = world.experiments[ENDED_CAMPAIGN]
        weights = [(arm.name, arm.weight) for arm in CAMPAIGN_ARMS[ENDED_CAMPAIGN]]
        expected = [choose_arm(salt=world.salts[ENDED_CAMPAIGN],
                               customer_id=world.customers.external_id[i], arms=weights)
                    for i in result.customer]
        assert result.arm == expected

    def test_probabilities_never_clip_so_effects_are_exact(self) -> None:
        world = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        for name, spec in ((ENDED_CAMPAIGN, ENDED_EXPERIMENT),
                           (RUNNING_CAMPAIGN, RUNNING_EXPERIMENT)):
            p0 = world.experiments[name].p0
            assert p0.min() > 0
            assert p0.max() + max(spec.effects.values()) < 1

    def test_full_size_coupon_uplift_is_close_to_the_true_effect(self) -> None:
        world = simulate_demo_world(seed=SEED, customers=20_000, now=NOW)
        adoption = world.experiments[ENDED_CAMPAIGN].adoption_by_arm()
        assert 0.15 < adoption["control"] < 0.25
        assert abs(adoption["web coupon"] - adoption["control"] - TRUE_EFFECTS["web coupon"]) < 0.03
        assert abs(adoption["prize draw"] - adoption["control"] - TRUE_EFFECTS["prize draw"]) < 0.03
        running = world.experiments[RUNNING_CAMPAIGN]
        assert 4000 < len(running.customer) < 6000
        assert RUNNING_TRUE_EFFECTS.keys() <= set(running.arm)

    def test_now_defaults_to_today_and_must_be_aware(self) -> None:
        today = demo_now()
        assert today.tzinfo is not None and (today.hour, today.minute, today.second) == (0, 0, 0)
        assert demo_now(NOW) == NOW
        with pytest.raises(ValueError, match="timezone"):
            demo_now(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- in the database


class TestSeededWorld:
    def test_counts_and_configuration(self, session: Session) -> None:
        summary = seed_demo_world(session, seed=SEED, customers=SMALL, now=NOW)
        world = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        expected = world.summary()
        assert summary.customers == SMALL == _count(session, Customer)
        assert summary.channels == 8 == _count(session, Channel)
        assert _count(session, ChannelCost) == 24
        for key, value in expected.items():
            assert getattr(summary, key) == value, key
        assert summary.channel_events == _count(session, ChannelEvent)
        assert summary.seed == SEED and summary.now == NOW
        ended = session.get(Campaign, summary.ended_campaign_id)
        running = session.get(Campaign, summary.running_campaign_id)
        draft = session.get(Campaign, summary.draft_campaign_id)
        assert ended and running and draft
        assert (ended.status, running.status, draft.status) == (
            CampaignStatus.ENDED, CampaignStatus.RUNNING, CampaignStatus.DRAFT)
        assert ended.starts_at == NOW - timedelta(days=75)
        assert ended.ends_at == NOW - timedelta(days=45)
        assert running.starts_at == NOW - timedelta(days=10)
        assert ended.salt == world.salts[ENDED_CAMPAIGN]
        assert 0 < running.spent_minor < (running.budget_minor or 0)
        assert session.exec(select(func.count()).select_from(Assignment).where(
            Assignment.campaign_id == draft.id)).one() == 0
        for name, campaign_id in summary.campaign_ids.items():
            arms = _arm_names(session, campaign_id)
            stored = Counter(arms[a] for a in session.exec(
                select(Assignment.arm_id).where(Assignment.campaign_id == campaign_id)))
            simulated = world.experiments[name].arm_counts() if name in world.experiments else {}
            assert stored == Counter(simulated), name

    def test_seeding_twice_changes_nothing(self, session: Session) -> None:
        assert not is_seeded(session)
        first = seed_demo_world(session, seed=SEED, customers=SMALL, now=NOW)
        assert is_seeded(session)
        tables = (Customer, ChannelEvent, Assignment, CouponCode, Redemption, LotteryEntry,
                  LotteryWinner, PointsLedger, Campaign, Channel)
        before = {model.__name__: _count(session, model) for model in tables}
        again = seed_demo_world(session, seed=SEED + 7, customers=SMALL * 2)
        assert again == first
        assert {model.__name__: _count(session, model) for model in tables} == before

    def test_ended_campaign_outcomes(self, session: Session) -> None:
        summary = seed_demo_world(session, seed=SEED, customers=SMALL, now=NOW)
        campaign = session.get(Campaign, summary.ended_campaign_id)
        assert campaign is not None
        adoption = _adoption_by_arm(session, summary.ended_campaign_id, stage="after_sale",
                                    target="web", window_days=30)
        world = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        simulated = world.experiments[ENDED_CAMPAIGN]
        assert {arm: a / n for arm, (n, a) in adoption.items()} == pytest.approx(
            simulated.adoption_by_arm())
        rate = {arm: a / n for arm, (n, a) in adoption.items()}
        assert abs(rate["web coupon"] - rate["control"] - TRUE_EFFECTS["web coupon"]) < 0.06
        # platinum customers are not eligible
        platinum = session.exec(select(func.count()).select_from(Assignment)
                                .join(Customer, col(Customer.id) == Assignment.customer_id)
                                .where(Assignment.campaign_id == campaign.id,
                                       Customer.value_tier == "platinum")).one()
        assert platinum == 0

        redemptions = session.exec(select(Redemption).where(
            Redemption.campaign_id == campaign.id)).all()
        assert redemptions
        assert campaign.spent_minor == sum(r.cost_minor for r in redemptions)
        assert campaign.spent_minor <= (campaign.budget_minor or 0)
        assert len({r.idempotency_key for r in redemptions}) == len(redemptions)
        assert all(r.status == "applied" and r.coupon_code_id for r in redemptions)
        assert campaign.starts_at is not None and campaign.ends_at is not None
        assert all(campaign.starts_at <= r.created_at < campaign.ends_at for r in redemptions)
        codes = {c.id: c for c in session.exec(select(CouponCode).where(
            CouponCode.campaign_id == campaign.id))}
        assert all(codes[r.coupon_code_id].customer_id == r.customer_id for r in redemptions)
        assert sum(c.uses for c in codes.values()) == len(redemptions)

        stock = {s.item_key: s for s in session.exec(select(IncentiveStock))}
        winners = session.exec(select(LotteryWinner)).all()
        assert winners
        awarded = Counter(w.prize_key for w in winners)
        for key, count in awarded.items():
            assert count <= stock[key].total
            assert stock[key].used == count
        draw = session.exec(select(LotteryDraw)).one()
        assert draw.seed and draw.campaign_id == campaign.id
        entries = session.exec(select(LotteryEntry)).all()
        arms = _arm_names(session, campaign.id)
        prize_arm = {a.customer_id for a in session.exec(select(Assignment).where(
            Assignment.campaign_id == campaign.id)) if arms[a.arm_id] == "prize draw"}
        assert {e.customer_id for e in entries} <= prize_arm
        assert {w.customer_id for w in winners} <= {e.customer_id for e in entries}

    def test_existing_channels_and_costs_are_reused(self, session: Session) -> None:
        ensure_default_stages(session)
        create_channel(session, actor="test",
                       channel_create={"key": "web", "name": "Our web shop", "kind": "web"})
        set_channel_cost(session, actor="test",
                         cost={"channel": "web", "stage": "after_sale", "cost_minor": 33})
        seed_demo_world(session, seed=SEED, customers=200, now=NOW)
        web = session.exec(select(Channel).where(Channel.key == "web")).one()
        assert web.name == "Our web shop"
        stage = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
        costs = set(session.exec(select(ChannelEvent.cost_minor).where(
            ChannelEvent.channel_id == web.id, ChannelEvent.stage_id == stage.id,
            ChannelEvent.kind == "interaction")))
        assert costs == {33}

    def test_the_draw_verifies_and_matches_the_simulation(self, session: Session) -> None:
        summary = seed_demo_world(session, seed=SEED, customers=SMALL, now=NOW)
        world = simulate_demo_world(seed=SEED, customers=SMALL, now=NOW)
        draw = session.exec(select(LotteryDraw)).one()
        assert draw.drawn_at == NOW - timedelta(days=44)
        check = verify_draw(session, campaign_id=summary.ended_campaign_id, draw_id=draw.id or 0)
        assert check["verified"] is True
        stored = session.exec(select(Customer.external_id, LotteryWinner.prize_key)
                              .join(LotteryWinner, col(LotteryWinner.customer_id) == Customer.id)
                              .order_by(col(LotteryWinner.id))).all()
        assert world.lottery_draw is not None
        assert [tuple(row) for row in stored] == [
            (world.customers.external_id[c], prize) for c, prize, _ in world.lottery_draw.winners]
        campaign = session.get(Campaign, summary.ended_campaign_id)
        assert campaign is not None and campaign.ends_at is not None
        entries = session.exec(select(LotteryEntry.created_at)).all()
        assert entries and max(entries) < campaign.ends_at

    def test_seeded_redemptions_replay_and_roll_back_like_real_ones(
        self, session: Session
    ) -> None:
        summary = seed_demo_world(session, seed=SEED, customers=SMALL, now=NOW)
        running = session.get(Campaign, summary.running_campaign_id)
        assert running is not None
        seeded = session.exec(select(Redemption).where(
            Redemption.campaign_id == running.id,
            col(Redemption.idempotency_key).like("demo-c2-%")).order_by(col(Redemption.id))
        ).all()
        points = next(r for r in seeded if r.response.get("points"))
        customer = session.get(Customer, points.customer_id)
        assert customer is not None
        request = RedemptionRequest(
            customer_id=customer.external_id, channel="app", campaign_id=running.id,
            order_id=points.order_id, order_amount_minor=points.order_amount_minor)
        snapshot = load_snapshot(session, epoch=0)
        replay = redeem(session, snapshot=snapshot, idempotency_key=points.idempotency_key,
                        request=request, now=NOW)
        assert replay.replayed and replay.body == points.response
        assert replay.body["redemption_id"] == points.id
        with pytest.raises(IdempotencyKeyReused):
            redeem(session, snapshot=snapshot, idempotency_key=points.idempotency_key,
                   request=request.model_copy(update={"order_amount_minor": 1}), now=NOW)
        balance, spent = customer.points, running.spent_minor
        rollback_redemption(session, redemption_id=points.id or 0, now=NOW)
        session.refresh(customer)
        session.refresh(running)
        assert customer.points == balance - points.response["points"]
        assert running.spent_minor == spent - points.cost_minor

    def test_running_campaign_and_points(self, session: Session) -> None:
        summary = seed_demo_world(session, seed=SEED, customers=SMALL, now=NOW)
        adoption = _adoption_by_arm(session, summary.running_campaign_id, stage="pre_sale",
                                    target="app", window_days=30)
        assert set(adoption) == {"control", "double points in the app", "5% app discount"}
        exposed = sum(n for n, _ in adoption.values())
        assert 0.15 * SMALL < exposed < 0.35 * SMALL
        assert all(0 < adopters < n for n, adopters in adoption.values())
        latest = session.exec(select(func.max(ChannelEvent.occurred_at))).one()
        assert latest is not None and latest < NOW
        ledger = dict(session.exec(select(PointsLedger.customer_id, func.sum(PointsLedger.delta))
                                   .group_by(col(PointsLedger.customer_id))).all())
        credited = session.exec(select(func.count()).select_from(PointsLedger).where(
            PointsLedger.campaign_id == summary.running_campaign_id)).one()
        assert credited > 0
        for customer in session.exec(select(Customer)):
            assert customer.id is not None
            assert customer.points == ledger.get(customer.id, 0)
