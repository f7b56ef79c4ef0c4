"""Channel events and conversions: batch validation, idempotent recording, side effects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from campaigns.db import session_scope
from campaigns.errors import ValidationFailed
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    ChannelEvent,
    Conversion,
    Customer,
    LotteryEntry,
    MigrationGoal,
    PointsLedger,
    TrialGrant,
)
from campaigns.services.campaigns import transition
from campaigns.services.catalog import Snapshot, load_snapshot
from campaigns.services.channels import set_channel_cost
from campaigns.services.events import (
    MAX_LISTED_ERRORS,
    EventBatchResult,
    ingest_events,
    load_vocabulary,
    validate_batch,
)
from campaigns.services.incentives import create_incentive
from campaigns.types import utcnow
from tests.builders import ACTOR, control_arm, make_campaign, make_channel, make_customer, make_goal
from tests.scratch import scratch_database

# --------------------------------------------------------------------------- builders

PRIZES = [{"key": "tablet", "name": "Tablet", "value_minor": 30000, "inventory": 2,
           "odds": {"numerator": 1, "denominator": 10000}}]
TIERS = [
    {"key": "bronze", "name": "Bronze", "threshold_points": 0, "benefits": "Points"},
    {"key": "silver", "name": "Silver", "threshold_points": 1000, "benefits": "Free shipping"},
    {"key": "gold", "name": "Gold", "threshold_points": 5000, "benefits": "Priority"},
]


def lottery_arm(*, event: str = "conversion", channel_key: str | None = None,
                min_amount_minor: int | None = None, entries_per_event: int = 1,
                max_entries_per_customer: int | None = None, weight: int = 50
                ) -> dict[str, Any]:
    rule: dict[str, Any] = {"event": event, "entries_per_event": entries_per_event}
    if channel_key is not None:
        rule["channel_key"] = channel_key
    if min_amount_minor is not None:
        rule["min_amount_minor"] = min_amount_minor
    if max_entries_per_customer is not None:
        rule["max_entries_per_customer"] = max_entries_per_customer
    return {"name": "lottery", "weight": weight,
            "incentive": {"name": "Win a tablet", "type": "lottery",
                          "config": {"prizes": PRIZES, "entry_rule": rule}}}


def loyalty_arm(*, points_per_currency_unit: int = 10, multiplier_bp: int = 20000,
                weight: int = 50) -> dict[str, Any]:
    return {"name": "loyalty", "weight": weight,
            "incentive": {"name": "Points", "type": "loyalty",
                          "config": {"tiers": TIERS,
                                     "points_per_currency_unit": points_per_currency_unit,
                                     "target_channel_multiplier_bp": multiplier_bp,
                                     "point_value_minor_per_1000": 500}}}


def running_campaign(session: Session, *, arm: dict[str, Any], name: str = "Events push",
                     **overrides: Any) -> Campaign:
    """A running campaign with a control arm and ``arm``; its goal targets the web channel."""
    goal = make_goal(session, target="web", sources=("call_centre",))
    make_channel(session, key="app")
    campaign = make_campaign(session, name=name, goal=goal, arms=[control_arm(), arm],
                             **overrides)
    transition(session, campaign=campaign, target="scheduled", actor=ACTOR)
    transition(session, campaign=campaign, target="running", actor=ACTOR)
    return campaign


def assign(session: Session, campaign: Campaign, *, customer: str = "C1",
           arm: str | None = None, exposed_at: datetime | None = None) -> Assignment:
    """Record that ``customer`` was exposed to ``arm`` (default: the campaign's treatment)."""
    arms = session.exec(select(Arm).where(Arm.campaign_id == campaign.id)).all()
    chosen = next(a for a in arms if (a.name == arm if arm else not a.is_control))
    found = session.exec(select(Customer).where(Customer.external_id == customer)).first()
    customer_row = found or make_customer(session, external_id=customer)
    assert campaign.id and customer_row.id and chosen.id
    assignment = Assignment(campaign_id=campaign.id, customer_id=customer_row.id,
                            arm_id=chosen.id,
                            first_exposed_at=exposed_at or utcnow() - timedelta(hours=1))
    session.add(assignment)
    session.flush()
    return assignment


def world(session: Session) -> None:
    """Stages, the web / call_centre / app channels and a cost for web at after_sale."""
    make_goal(session, target="web", sources=("call_centre",))
    make_channel(session, key="app")
    set_channel_cost(session, actor=ACTOR,
                     cost={"channel": "web", "stage": "after_sale", "cost_minor": 40})


def minutes_ago(minutes: int = 1) -> str:
    return (utcnow() - timedelta(minutes=minutes)).isoformat()


def interaction(event_id: str = "i1", *, customer: str = "C1", channel: str = "web",
                stage: str = "after_sale", **fields: Any) -> dict[str, Any]:
    return {"type": "interaction", "event_id": event_id, "customer_id": customer,
            "channel": channel, "stage": stage, "occurred_at": minutes_ago(), **fields}


def conversion(event_id: str = "c1", *, customer: str = "C1", revenue_minor: int = 1500,
               **fields: Any) -> dict[str, Any]:
    return {"type": "conversion", "event_id": event_id, "customer_id": customer,
            "occurred_at": minutes_ago(), "kind": "purchase", "revenue_minor": revenue_minor,
            **fields}


def ingest(session: Session, events: list[dict[str, Any]], *,
           snapshot: Snapshot | None = None) -> Any:
    return ingest_events(session, raw_events=events,
                         snapshot=snapshot or load_snapshot(session, epoch=0))


def count(session: Session, model: type[Any]) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def balance(session: Session, customer: str = "C1") -> tuple[int, str | None]:
    points, tier = session.exec(select(Customer.points, Customer.loyalty_tier)
                                .where(Customer.external_id == customer)).one()
    return points, tier


def entries(session: Session, campaign: Campaign, customer: str = "C1") -> list[int]:
    return list(session.exec(
        select(LotteryEntry.entries).join(Customer, Customer.id == LotteryEntry.customer_id)
        .where(LotteryEntry.campaign_id == campaign.id, Customer.external_id == customer)
        .order_by(LotteryEntry.id)).all())


def rejection(session: Session, events: list[dict[str, Any]], *,
              now: datetime | None = None) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationFailed) as caught:
        validate_batch(events, vocabulary=load_vocabulary(session), now=now)
    return [(error.loc, error.msg) for error in caught.value.errors]


# --------------------------------------------------------------------------- validation


class TestValidateBatch:
    def test_good_batch_resolves_keys_and_default_cost(self, session: Session) -> None:
        world(session)
        records = validate_batch(
            [interaction("i1"), interaction("i2", cost_minor=7),
             interaction("i3", channel="app"), conversion("c1", channel="app")],
            vocabulary=load_vocabulary(session))
        assert [r.event_id for r in records] == ["i1", "i2", "i3", "c1"]
        # web at after_sale costs 40 by default; an explicit cost wins; app has no cost
        assert [r.cost_minor for r in records[:3]] == [40, 7, None]
        assert records[0].channel_id is not None and records[0].stage_id is not None
        assert records[3].type == "conversion" and records[3].revenue_minor == 1500

    @pytest.mark.parametrize(("event", "field", "words"), [
        pytest.param(interaction(channel="fax"), "channel", "unknown channel 'fax'",
                     id="unknown_channel"),
        pytest.param(interaction(stage="after_life"), "stage", "unknown stage 'after_life'",
                     id="unknown_stage"),
        pytest.param(interaction(occurred_at="2026-01-31T09:00:00"), "occurred_at",
                     "with a timezone", id="naive_datetime"),
        pytest.param(interaction(occurred_at="yesterday"), "occurred_at", "ISO-8601",
                     id="not_a_datetime"),
        pytest.param(interaction(occurred_at=1767225600), "occurred_at", "ISO-8601",
                     id="unix_timestamp"),
        pytest.param({k: v for k, v in interaction().items() if k != "customer_id"},
                     "customer_id", "customer_id is required", id="missing_field"),
        pytest.param(interaction(revenue_minor=12.5), "revenue_minor", "whole number",
                     id="float_money"),
        pytest.param(interaction(cost_minor=40.0), "cost_minor", "whole number",
                     id="whole_float_money"),
        pytest.param(interaction(cost_minor="40"), "cost_minor", "whole number",
                     id="text_money"),
        pytest.param(interaction(revenue_minor=-1), "revenue_minor", "must be 0 or more",
                     id="negative_money"),
        pytest.param(conversion(revenue_minor=None), "revenue_minor", "whole number",
                     id="conversion_without_revenue"),
        pytest.param(interaction(kind="visit"), "kind", "must be one of", id="unknown_kind"),
        pytest.param(conversion(stage="purchase"), "stage",
                     "not a field of conversion events", id="stage_on_conversion"),
        pytest.param(interaction(type="click"), "type", "'interaction' or 'conversion'",
                     id="unknown_type"),
        pytest.param(interaction(event_id=""), "event_id", "cannot be empty",
                     id="empty_event_id"),
        pytest.param(interaction(event_id="x" * 201), "event_id", "at most 200",
                     id="long_event_id"),
        pytest.param(interaction(customer="bad id!"), "customer_id", "only letters",
                     id="bad_customer_id"),
    ])
    def test_bad_event_named_by_index_and_field(self, session: Session, event: dict[str, Any],
                                                field: str, words: str) -> None:
        world(session)
        problems = rejection(session, [interaction("ok1"), event])
        assert [loc for loc, _ in problems] == [("events", 1, field)]
        assert words in problems[0][1]

    def test_event_id_twice_in_batch(self, session: Session) -> None:
        world(session)
        problems = rejection(session, [interaction("e1"), interaction("e2"),
                                       conversion("e1")])
        assert problems == [(("events", 2, "event_id"),
                             "event_id 'e1' is used twice in this batch (first by event 0)")]

    def test_more_than_a_day_in_the_future(self, session: Session) -> None:
        world(session)
        now = utcnow()
        ahead = [interaction("soon", occurred_at=(now + timedelta(hours=23)).isoformat()),
                 interaction("late", occurred_at=(now + timedelta(hours=25)).isoformat())]
        problems = rejection(session, ahead, now=now)
        assert [loc for loc, _ in problems] == [("events", 1, "occurred_at")]
        assert "more than a day in the future" in problems[0][1]

    def test_every_problem_of_an_event_is_named(self, session: Session) -> None:
        world(session)
        problems = rejection(session, [interaction(channel="fax", stage="nope",
                                                   revenue_minor=1.5)])
        assert sorted(loc for loc, _ in problems) == [
            ("events", 0, "channel"), ("events", 0, "revenue_minor"), ("events", 0, "stage")]

    def test_not_an_object(self, session: Session) -> None:
        world(session)
        assert rejection(session, ["i1"])[0][0] == ("events", 0)

    def test_listing_is_capped_but_total_is_told(self, session: Session) -> None:
        world(session)
        bad = [interaction(f"e{n}", channel="fax") for n in range(MAX_LISTED_ERRORS + 5)]
        with pytest.raises(ValidationFailed) as caught:
            validate_batch(bad, vocabulary=load_vocabulary(session))
        assert len(caught.value.errors) == MAX_LISTED_ERRORS
        assert f"{MAX_LISTED_ERRORS + 5} problem(s)" in caught.value.message


# --------------------------------------------------------------------------- recording


class TestRecordEvents:
    def test_accepted_batch_is_stored(self, session: Session) -> None:
        world(session)
        result = ingest(session, [interaction("i1", revenue_minor=300, kind="complaint"),
                                  conversion("c1", channel="web", margin_minor=-20),
                                  interaction("i2", customer="C2")])
        assert (result.accepted, result.duplicates, result.batch_size) == (3, 0, 3)
        event = session.exec(select(ChannelEvent).where(
            ChannelEvent.client_event_id == "i1")).one()
        assert (event.kind, event.cost_minor, event.revenue_minor) == ("complaint", 40, 300)
        assert event.occurred_at.tzinfo is not None
        sale = session.exec(select(Conversion).where(Conversion.client_event_id == "c1")).one()
        assert (sale.kind, sale.revenue_minor, sale.margin_minor) == ("purchase", 1500, -20)

    def test_unknown_customers_created_once(self, session: Session) -> None:
        world(session)
        make_customer(session, external_id="C1", segment="retail")
        ingest(session, [interaction("i1", customer="C1"), interaction("i2", customer="C9"),
                         conversion("c1", customer="C9")])
        customers = session.exec(select(Customer.external_id, Customer.segment, Customer.points)
                                 .order_by(Customer.external_id)).all()
        assert customers == [("C1", "retail", 0), ("C9", None, 0)]

    def test_retried_batch_counted_once(self, session: Session) -> None:
        world(session)
        batch = [interaction("i1"), conversion("c1")]
        ingest(session, batch)
        again = ingest(session, [*batch, interaction("i2")])
        assert (again.accepted, again.duplicates, again.batch_size) == (1, 2, 3)
        assert (count(session, ChannelEvent), count(session, Conversion)) == (2, 1)

    def test_bad_batch_writes_nothing(self, session: Session) -> None:
        world(session)
        with pytest.raises(ValidationFailed):
            ingest(session, [interaction("i1", customer="NEW"), interaction("i2", stage="x")])
        assert (count(session, ChannelEvent), count(session, Customer)) == (0, 0)


# --------------------------------------------------------------------------- lottery


class TestLotteryEntries:
    def test_qualifying_events_earn_entries(self, session: Session) -> None:
        campaign = running_campaign(session, arm=lottery_arm(entries_per_event=2))
        assign(session, campaign)
        result = ingest(session, [conversion("c1"), conversion("c2"), interaction("i1")])
        assert entries(session, campaign) == [2, 2]
        assert result.effects.lottery_entries == 4
        refs = set(session.exec(select(LotteryEntry.source_ref)).all())
        assert refs == {"event:c1", "event:c2"}

    def test_capped_per_customer_across_batches(self, session: Session) -> None:
        campaign = running_campaign(session, arm=lottery_arm(entries_per_event=2,
                                                             max_entries_per_customer=5))
        assign(session, campaign)
        ingest(session, [conversion("c1")])
        ingest(session, [conversion("c2"), conversion("c3"), conversion("c4")])
        # 2 + 2 + the 1 left under the cap of 5; the fourth conversion earns nothing
        assert entries(session, campaign) == [2, 2, 1]

    def test_retry_earns_nothing_more(self, session: Session) -> None:
        campaign = running_campaign(session, arm=lottery_arm())
        assign(session, campaign)
        ingest(session, [conversion("c1")])
        assert ingest(session, [conversion("c1")]).effects.lottery_entries == 0
        assert entries(session, campaign) == [1]

    @pytest.mark.parametrize(("rule", "event"), [
        pytest.param({"channel_key": "app"}, conversion(channel="web"), id="wrong_channel"),
        pytest.param({"channel_key": "app"}, conversion(), id="conversion_without_channel"),
        pytest.param({"min_amount_minor": 2000}, conversion(revenue_minor=1999),
                     id="below_minimum"),
        pytest.param({"event": "interaction"}, conversion(), id="wrong_event_type"),
        pytest.param({"event": "interaction"}, interaction(kind="complaint"), id="complaint"),
        pytest.param({"event": "interaction", "min_amount_minor": 1}, interaction(),
                     id="interaction_without_revenue_below_minimum"),
    ])
    def test_events_that_do_not_qualify(self, session: Session, rule: dict[str, Any],
                                        event: dict[str, Any]) -> None:
        campaign = running_campaign(session, arm=lottery_arm(**rule))
        assign(session, campaign)
        ingest(session, [event])
        assert entries(session, campaign) == []

    def test_channel_and_minimum_met(self, session: Session) -> None:
        campaign = running_campaign(session, arm=lottery_arm(
            event="interaction", channel_key="app", min_amount_minor=500))
        assign(session, campaign)
        ingest(session, [interaction("i1", channel="app", revenue_minor=500),
                         interaction("i2", channel="app", revenue_minor=499)])
        assert entries(session, campaign) == [1]

    def test_unassigned_control_and_pre_exposure_events_earn_nothing(
            self, session: Session) -> None:
        campaign = running_campaign(session, arm=lottery_arm())
        assign(session, campaign, customer="CTRL", arm="control")
        assign(session, campaign, customer="LATE", exposed_at=utcnow())
        ingest(session, [conversion("c1", customer="NOBODY"), conversion("c2", customer="CTRL"),
                         conversion("c3", customer="LATE")])  # c3 happened before exposure
        assert count(session, LotteryEntry) == 0

    def test_paused_campaign_earns_nothing(self, session: Session) -> None:
        campaign = running_campaign(session, arm=lottery_arm())
        assign(session, campaign)
        transition(session, campaign=campaign, target="paused", actor=ACTOR)
        ingest(session, [conversion("c1")])
        assert count(session, LotteryEntry) == 0


# --------------------------------------------------------------------------- loyalty


class TestLoyaltyPoints:
    def test_points_without_multiplier_off_the_target_channel(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm())
        assign(session, campaign)
        result = ingest(session, [conversion("c1", revenue_minor=1550, channel="app")])
        # 10 points per 1.00 on 15.50, rounded down; app is not the goal's target channel
        assert result.effects.points_awarded == 155
        assert balance(session) == (155, "bronze")
        ledger = session.exec(select(PointsLedger)).one()
        assert (ledger.delta, ledger.source_ref, ledger.campaign_id) == (155, "event:c1",
                                                                         campaign.id)

    def test_multiplier_on_the_target_channel(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm(multiplier_bp=20000))
        assign(session, campaign)
        ingest(session, [conversion("c1", revenue_minor=1550, channel="web"),
                         interaction("i1", revenue_minor=1000, channel="web")])
        assert balance(session) == (310 + 200, "bronze")

    def test_interaction_without_revenue_earns_nothing(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm())
        assign(session, campaign)
        ingest(session, [interaction("i1"), conversion("c0", revenue_minor=0)])
        assert balance(session) == (0, None)
        assert count(session, PointsLedger) == 0

    def test_balance_is_added_in_the_database_and_tier_follows(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm(multiplier_bp=10000))
        make_customer(session, external_id="C1", points=900, loyalty_tier="bronze")
        assign(session, campaign)
        ingest(session, [conversion("c1", revenue_minor=1000)])
        assert balance(session) == (1000, "silver")
        ingest(session, [conversion("c2", revenue_minor=40000)])
        assert balance(session) == (5000, "gold")

    def test_retried_batch_awards_once(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm())
        assign(session, campaign)
        ingest(session, [conversion("c1", channel="app")])
        again = ingest(session, [conversion("c1", channel="app")])
        assert again.effects.points_awarded == 0
        assert balance(session) == (150, "bronze")
        assert count(session, PointsLedger) == 1

    def test_not_assigned_earns_nothing(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm())
        assign(session, campaign, customer="OTHER")
        ingest(session, [conversion("c1")])
        assert balance(session) == (0, None)

    def test_event_after_the_campaign_end_earns_nothing(self, session: Session) -> None:
        campaign = running_campaign(session, arm=loyalty_arm())
        assign(session, campaign)
        campaign.starts_at = utcnow() - timedelta(hours=2)
        campaign.ends_at = utcnow() - timedelta(minutes=30)  # not yet ended by the scheduler
        session.add(campaign)
        session.flush()
        ingest(session, [conversion("c1")])
        assert balance(session) == (0, None)


# --------------------------------------------------------------------------- trials


def trial(session: Session, *, customer: str = "C1", started_days_ago: int = 10,
          product: str = "Premium") -> TrialGrant:
    campaign = session.exec(select(Campaign)).first() or make_campaign(
        session, name="Trials", goal=session.exec(select(MigrationGoal)).first())
    incentive = create_incentive(session, actor=ACTOR, incentive_create={
        "name": f"{product} trial", "type": "free_trial",
        "config": {"product": product, "days": 30, "cost_minor": 100}})
    found = session.exec(select(Customer).where(Customer.external_id == customer)).first()
    owner = found or make_customer(session, external_id=customer)
    start = utcnow() - timedelta(days=started_days_ago)
    assert owner.id and campaign.id and incentive.id
    grant = TrialGrant(customer_id=owner.id, campaign_id=campaign.id,
                       incentive_id=incentive.id, product=product, starts_at=start,
                       ends_at=start + timedelta(days=30))
    session.add(grant)
    session.flush()
    return grant


def converted_at(session: Session, grant: TrialGrant) -> datetime | None:
    return session.exec(select(TrialGrant.converted_at)
                        .where(TrialGrant.id == grant.id)).one()


class TestTrialConversion:
    def test_trial_to_paid_marks_the_trials_converted(self, session: Session) -> None:
        world(session)
        premium, extra = trial(session), trial(session, product="Extra")
        first = utcnow() - timedelta(days=2)
        result = ingest(session, [
            conversion("t2", kind="trial_to_paid", occurred_at=minutes_ago(5)),
            conversion("t1", kind="trial_to_paid", occurred_at=first.isoformat())])
        assert result.effects.trials_converted == 2
        assert converted_at(session, premium) == first
        assert converted_at(session, extra) == first

    def test_only_the_first_conversion_counts(self, session: Session) -> None:
        world(session)
        grant = trial(session)
        first = utcnow() - timedelta(days=1)
        ingest(session, [conversion("t1", kind="trial_to_paid", occurred_at=first.isoformat())])
        ingest(session, [conversion("t2", kind="trial_to_paid")])
        assert converted_at(session, grant) == first

    def test_other_conversions_and_other_customers_leave_trials_alone(
            self, session: Session) -> None:
        world(session)
        grant = trial(session)
        ingest(session, [conversion("p1", kind="purchase"),
                         conversion("t1", kind="trial_to_paid", customer="C2")])
        assert converted_at(session, grant) is None

    def test_conversion_before_the_trial_started_does_not_count(
            self, session: Session) -> None:
        world(session)
        grant = trial(session, started_days_ago=1)
        ingest(session, [conversion("t1", kind="trial_to_paid",
                                    occurred_at=(utcnow() - timedelta(days=3)).isoformat())])
        assert converted_at(session, grant) is None


# --------------------------------------------------------------------------- concurrency


@pytest.fixture
def fresh_engine(database, tmp_path) -> Iterator[Engine]:
    """A migrated database of this run's backend whose commits other connections see."""
    with scratch_database(database, tmp_path, prefix="cs_events") as scratch:
        yield scratch.engine


def at_once(engine: Engine, batches: list[list[dict[str, Any]]]) -> list[EventBatchResult]:
    """Ingest each batch in its own thread and transaction, all starting together."""
    with Session(engine) as session:
        snapshot = load_snapshot(session, epoch=0)
    start = threading.Barrier(len(batches))
    results: list[Any] = [None] * len(batches)

    def work(index: int) -> None:
        start.wait()
        try:
            with session_scope(engine) as session:
                results[index] = ingest_events(session, raw_events=batches[index],
                                               snapshot=snapshot)
        except Exception as error:  # reported by the assertion below
            results[index] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(r, EventBatchResult) for r in results), results
    return results


@pytest.mark.slow
class TestConcurrentBatches:
    """Invariants kept by the database when batches for the same customer race."""

    WORKERS = 8

    def test_lottery_cap_holds(self, fresh_engine: Engine) -> None:
        with session_scope(fresh_engine) as session:
            campaign = running_campaign(session, arm=lottery_arm(
                entries_per_event=1, max_entries_per_customer=5))
            assign(session, campaign)
        at_once(fresh_engine, [[conversion(f"c{n}a"), conversion(f"c{n}b")]
                               for n in range(self.WORKERS)])
        with Session(fresh_engine) as session:
            assert sum(entries(session, campaign)) == 5

    def test_points_are_never_lost(self, fresh_engine: Engine) -> None:
        with session_scope(fresh_engine) as session:
            campaign = running_campaign(session, arm=loyalty_arm())
            assign(session, campaign)
        at_once(fresh_engine, [[conversion(f"c{n}", revenue_minor=1000, channel="app")]
                               for n in range(self.WORKERS)])
        with Session(fresh_engine) as session:
            assert balance(session) == (100 * self.WORKERS, "bronze")
            assert count(session, PointsLedger) == self.WORKERS

    def test_same_batch_sent_at_once_is_recorded_once(self, fresh_engine: Engine) -> None:
        with session_scope(fresh_engine) as session:
            campaign = running_campaign(session, arm=loyalty_arm())
            assign(session, campaign)
        batch = [conversion("c1", channel="app"), interaction("i1"),
                 interaction("i2", customer="NEW")]
        results = at_once(fresh_engine, [batch] * self.WORKERS)
        assert sum(r.accepted for r in results) == 3
        assert sum(r.duplicates for r in results) == 3 * (self.WORKERS - 1)
        with Session(fresh_engine) as session:
            assert balance(session) == (150, "bronze")
            assert (count(session, ChannelEvent), count(session, Conversion),
                    count(session, Customer)) == (2, 1, 2)
