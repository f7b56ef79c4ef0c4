"""Channel economics against independent computations on the raw rows.

Per-arm economics: point estimates against pandas on the raw rows, Welch intervals against
scipy, and every interval against a bootstrap over customers, on a seeded synthetic
campaign. The overview: exact figures on a hand-made world, and a pandas recomputation on
the demo world.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest
from scipy import stats as sps
from sqlalchemy import insert, text
from sqlmodel import Session, col, select

from analytics.economics import (
    ECONOMICS_METRICS,
    ChannelOverview,
    EconomicsResult,
    ExportFormat,
    PeriodError,
    arm_economics,
    channel_overview,
    check_period,
    export_overview,
    parse_time_bound,
)
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    Channel,
    ChannelCost,
    ChannelEvent,
    Conversion,
    Customer,
    LotteryDraw,
    LotteryWinner,
    MigrationGoal,
    Redemption,
    Stage,
)
from campaigns.services.campaigns import campaign_arms
from campaigns.services.channels import set_channel_cost
from seeds.demo import TRUE_EFFECTS, seed_demo_world
from tests.builders import ACTOR, control_arm, make_campaign, make_goal, percent_arm

T0 = datetime(2026, 3, 2, tzinfo=UTC)
COSTS = {("call_centre", "after_sale"): 700, ("ivr", "after_sale"): 110,
         ("web", "after_sale"): 20, ("web", "purchase"): 25}


def table(model: Any) -> Any:
    return model.__table__


def analyze(session: Session) -> None:
    """Give PostgreSQL's planner the statistics a production database has.

    Rows bulk-loaded inside the test's transaction are invisible to autovacuum; without
    statistics the planner picks nested loops that take seconds instead of milliseconds.
    """
    session.flush()
    if session.connection().dialect.name == "postgresql":
        session.execute(text("ANALYZE customer, assignment, channel_event, conversion, "
                             "redemption, lottery_winner, channel_cost"))


def frame(session: Session, model: Any, columns: list[str]) -> pd.DataFrame:
    rows = session.exec(select(*(getattr(model, c) for c in columns))).all()
    return pd.DataFrame(rows, columns=columns)


def by_metric(results: list[EconomicsResult], arm: str) -> dict[str, EconomicsResult]:
    return {r.metric: r for r in results if r.arm == arm}


# --------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class Synthetic:
    campaign: Campaign
    arms: dict[str, Arm]


def set_costs(session: Session) -> None:
    for (channel, stage), cost in COSTS.items():
        set_channel_cost(session, actor=ACTOR, cost={"channel": channel, "stage": stage,
                                                     "cost_minor": cost})


def build_synthetic(session: Session, *, sizes: dict[str, int], adoption: dict[str, float],
                    seed: int = 2026, name: str = "Synthetic", prizes: int = 0) -> Synthetic:
    """A campaign whose customers, events, conversions and redemptions are drawn at random.

    Arms: "control" and the treatment names in ``sizes``; adopters make web after-sale
    interactions and drop most of their call-centre / IVR contacts, treated adopters redeem.
    A third of the events carry no cost (the channel's cost applies), some carry a cost of
    their own; events and conversions outside the 30-day window must not count.
    """
    rng = np.random.default_rng(seed)
    goal = make_goal(session, sources=("call_centre", "ivr"), target="web")
    set_costs(session)
    treatments = [arm for arm in sizes if arm != "control"]
    campaign = make_campaign(session, name=name, goal=goal, arms=[
        control_arm(weight=100 - 30 * len(treatments)),
        *(percent_arm(arm, weight=30) for arm in treatments)])
    arms = {arm.name: arm for arm in campaign_arms(session, campaign)}
    channel = dict(session.exec(select(Channel.key, Channel.id)).all())
    stage = dict(session.exec(select(Stage.key, Stage.id)).all())

    labels = [arm for arm, n in sizes.items() for _ in range(n)]
    n = len(labels)
    external = [f"{name[:3]}{i:06d}" for i in range(n)]
    session.execute(insert(table(Customer)), [
        {"external_id": e, "tenure_months": 1, "points": 0, "lifetime_value_minor": 0,
         "is_new": False, "attributes": {}, "created_at": T0 - timedelta(days=400)}
        for e in external])
    ids = dict(session.exec(select(Customer.external_id, Customer.id)
                            .where(col(Customer.external_id).in_(external))).all())
    customers = [ids[e] for e in external]
    exposed = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 14 * 86_400, n)]
    session.execute(insert(table(Assignment)), [
        {"campaign_id": campaign.id, "customer_id": c, "arm_id": arms[label].id,
         "allocation_period": 1, "first_exposed_at": when, "redemption_count": 0}
        for c, label, when in zip(customers, labels, exposed, strict=True)])

    events: list[dict[str, Any]] = []
    conversions: list[dict[str, Any]] = []
    redemptions: list[dict[str, Any]] = []

    def at(start: datetime, low_days: float, high_days: float) -> datetime:
        return start + timedelta(seconds=int(rng.uniform(low_days, high_days) * 86_400))

    def event(customer: int, channel_key: str, when: datetime, *, kind: str = "interaction",
              stage_key: str = "after_sale") -> None:
        draw = rng.random()
        # a third without a cost, a tenth with a cost of their own
        cost = None if draw < 1 / 3 else (COSTS.get((channel_key, stage_key), 0) + 55
                                          if draw < 0.43 else COSTS.get((channel_key,
                                                                         stage_key), 0))
        events.append({"client_event_id": f"{name}-e{len(events)}", "customer_id": customer,
                       "channel_id": channel[channel_key], "stage_id": stage[stage_key],
                       "kind": kind, "occurred_at": when, "cost_minor": cost})

    for c, label, start in zip(customers, labels, exposed, strict=True):
        adopted = rng.random() < adoption[label]
        for _ in range(rng.poisson(3.0)):
            if not adopted or rng.random() < 0.4:
                event(c, "call_centre" if rng.random() < 0.7 else "ivr", at(start, 0, 30))
        if adopted:
            for _ in range(rng.integers(1, 4)):
                event(c, "web", at(start, 0, 30))
        event(c, "call_centre", at(start, 31, 45))  # after the window
        event(c, "call_centre", at(start, -20, -1))  # before exposure
        if rng.random() < 0.05:
            event(c, "call_centre", at(start, 0, 30), kind="complaint")  # not served
        for _ in range(rng.poisson(0.5 + 0.3 * adopted)):
            revenue = int(rng.lognormal(np.log(6000), 0.5))
            margin = None if rng.random() < 0.2 else revenue * int(rng.integers(18, 36)) // 100
            conversions.append({
                "client_event_id": f"{name}-cv{len(conversions)}", "customer_id": c,
                "channel_id": channel["web"], "kind": "purchase",
                "occurred_at": at(start, 0, 30), "revenue_minor": revenue,
                "margin_minor": margin})
        if rng.random() < 0.1:
            conversions.append({
                "client_event_id": f"{name}-cv{len(conversions)}", "customer_id": c,
                "channel_id": channel["web"], "kind": "purchase",
                "occurred_at": at(start, 31, 40), "revenue_minor": 99_999,
                "margin_minor": 50_000})
        if label != "control" and adopted and rng.random() < 0.7:
            for status in ("applied", "rolled_back") if rng.random() < 0.1 else ("applied",):
                key = f"{name}-r{len(redemptions)}"
                redemptions.append({
                    "idempotency_key": key, "request_hash": hashlib.sha256(key.encode())
                    .hexdigest(), "campaign_id": campaign.id, "arm_id": arms[label].id,
                    "customer_id": c, "channel_id": channel["web"], "order_id": key,
                    "order_amount_minor": 5000, "benefit_minor": 500,
                    "cost_minor": int(rng.integers(300, 800)), "status": status,
                    "response": {}, "created_at": at(start, 0, 30)})
    for rows, model in ((events, ChannelEvent), (conversions, Conversion),
                        (redemptions, Redemption)):
        session.execute(insert(table(model)), rows)
    if prizes:
        arm = arms[treatments[-1]]
        draw = LotteryDraw(campaign_id=campaign.id, incentive_id=arm.incentive_id,
                           seed="s", algorithm="test", entries_digest="d" * 64, drawn_by=ACTOR)
        session.add(draw)
        session.flush()
        winners = [c for c, label in zip(customers, labels, strict=True)
                   if label == treatments[-1]][:prizes]
        session.execute(insert(table(LotteryWinner)), [
            {"draw_id": draw.id, "customer_id": c, "prize_key": "voucher", "value_minor": 1500}
            for c in winners])
    analyze(session)
    return Synthetic(campaign=campaign, arms=arms)


def raw_per_customer(session: Session, campaign_id: int) -> pd.DataFrame:
    """Per-customer adoption, cost, revenue, margin, incentive cost and net value, in pandas."""
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    goal = session.get(MigrationGoal, campaign.goal_id)
    assert goal is not None
    days = pd.Timedelta(days=goal.window_days)
    arms = frame(session, Arm, ["id", "name", "is_control"]).rename(columns={"id": "arm_id"})
    people = frame(session, Assignment, ["campaign_id", "customer_id", "arm_id",
                                         "first_exposed_at"])
    people = people[people.campaign_id == campaign_id].merge(arms, on="arm_id")
    people["end"] = people.first_exposed_at + days

    events = frame(session, ChannelEvent, ["customer_id", "channel_id", "stage_id", "kind",
                                           "occurred_at", "cost_minor"])
    costs = frame(session, ChannelCost, ["channel_id", "stage_id", "cost_minor"])
    events = events.merge(costs.rename(columns={"cost_minor": "configured"}),
                          on=["channel_id", "stage_id"], how="left")
    events["cost"] = events.cost_minor.fillna(events.configured).fillna(0)
    events = events.merge(people[["customer_id", "first_exposed_at", "end"]], on="customer_id")
    events = events[(events.occurred_at >= events.first_exposed_at)
                    & (events.occurred_at < events.end) & (events.kind == "interaction")]
    adopted = events[(events.stage_id == goal.stage_id)
                     & (events.channel_id == goal.target_channel_id)].customer_id.unique()

    conversions = frame(session, Conversion, ["customer_id", "occurred_at", "revenue_minor",
                                              "margin_minor"])
    conversions = conversions.merge(people[["customer_id", "first_exposed_at", "end"]],
                                    on="customer_id")
    conversions = conversions[(conversions.occurred_at >= conversions.first_exposed_at)
                              & (conversions.occurred_at < conversions.end)]
    conversions["margin"] = conversions.margin_minor.fillna(conversions.revenue_minor)

    redemptions = frame(session, Redemption, ["campaign_id", "customer_id", "cost_minor",
                                              "status"])
    redemptions = redemptions[(redemptions.campaign_id == campaign_id)
                              & (redemptions.status == "applied")]
    draws = frame(session, LotteryDraw, ["id", "campaign_id"])
    prizes = frame(session, LotteryWinner, ["draw_id", "customer_id", "value_minor"])
    prizes = prizes[prizes.draw_id.isin(draws[draws.campaign_id == campaign_id].id)]

    def total(values: pd.DataFrame, column: str) -> pd.Series:
        return (people.customer_id.map(values.groupby("customer_id")[column].sum())
                .fillna(0).astype(float))

    out = people[["customer_id", "name", "is_control"]].rename(columns={"name": "arm"})
    out["adoption"] = people.customer_id.isin(adopted).astype(float)
    out["cost"] = total(events, "cost")
    out["revenue"] = total(conversions, "revenue_minor")
    out["margin"] = total(conversions, "margin")
    out["incentive"] = total(redemptions, "cost_minor") + total(prizes, "value_minor")
    out["net"] = out.margin - out.cost - out.incentive
    out["imputed"] = people.customer_id.map(
        conversions[conversions.margin_minor.isna()].groupby("customer_id").size()).fillna(0)
    return out


def economics_of(control: dict[str, np.ndarray], treated: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
    """The eight metrics from per-arm sums; arrays of sums give arrays of replicates."""
    n_t = treated["n"]

    def mean(arm: dict[str, np.ndarray], name: str) -> np.ndarray:
        return arm[name] / arm["n"]

    lift = mean(treated, "adoption") - mean(control, "adoption")
    net_lift = mean(treated, "net") - mean(control, "net")
    return {
        "incremental_migrations": n_t * lift,
        "incentive_cost_per_incremental_migration": treated["incentive"] / (n_t * lift),
        "cost_to_serve_saved_per_customer": mean(control, "cost") - mean(treated, "cost"),
        "incremental_revenue": n_t * (mean(treated, "revenue") - mean(control, "revenue")),
        "incremental_margin": n_t * (mean(treated, "margin") - mean(control, "margin")),
        "incentive_cost": treated["incentive"],
        "net_benefit": n_t * net_lift,
        "roi": net_lift / mean(treated, "incentive"),
    }


COLUMNS = ("adoption", "cost", "revenue", "margin", "incentive", "net")


def sums(values: pd.DataFrame, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-arm sums of each column; with a (replicates x customers) weight matrix, per row."""
    out: dict[str, np.ndarray] = {"n": np.asarray(float(len(values)))}
    for column in COLUMNS:
        data = values[column].to_numpy(dtype=float)
        out[column] = data.sum() if weights is None else weights @ data
    return out


@pytest.fixture
def synthetic(session: Session) -> Synthetic:
    return build_synthetic(session, sizes={"control": 1500, "coupon": 1500, "cashback": 1500},
                           adoption={"control": 0.15, "coupon": 0.45, "cashback": 0.40},
                           prizes=6)


class TestArmEconomics:
    def test_estimates_match_raw_rows(self, session: Session, synthetic: Synthetic) -> None:
        results = arm_economics(session.connection(), synthetic.campaign.id)
        assert [(r.arm, r.metric) for r in results] == [
            (arm, metric) for arm in ("coupon", "cashback") for metric in ECONOMICS_METRICS]
        raw = raw_per_customer(session, synthetic.campaign.id)
        control = raw[raw.arm == "control"]
        for arm in ("coupon", "cashback"):
            treated = raw[raw.arm == arm]
            expected = economics_of(sums(control), sums(treated))
            for metric, result in by_metric(results, arm).items():
                assert result.estimate == pytest.approx(float(expected[metric]), rel=1e-9), \
                    (arm, metric)
                assert result.reason is None, (arm, metric, result.reason)
                assert result.ci_low < result.estimate < result.ci_high, (arm, metric)
        # the data exercise every branch the SQL has to get right
        assert raw.imputed.sum() > 0 and raw[raw.arm == "cashback"].incentive.max() >= 1500
        margin = by_metric(results, "coupon")["incremental_margin"]
        imputed = int(raw[raw.arm.isin(["control", "coupon"])].imputed.sum())
        assert f"{imputed} conversion(s) without a margin" in margin.method
        assert "valued at their revenue" in by_metric(results, "coupon")["net_benefit"].method

        # the t intervals are scipy's, at the alpha asked for
        results = arm_economics(session.connection(), synthetic.campaign.id, alpha=0.1)
        treated = raw[raw.arm == "coupon"]
        n_t = len(treated)
        found = by_metric(results, "coupon")
        for metric, column, scale in (("cost_to_serve_saved_per_customer", "cost", -1),
                                      ("incremental_revenue", "revenue", n_t),
                                      ("incremental_margin", "margin", n_t),
                                      ("net_benefit", "net", n_t)):
            interval = sps.ttest_ind(treated[column], control[column], equal_var=False
                                     ).confidence_interval(confidence_level=0.9)
            expected = sorted((scale * interval.low, scale * interval.high))
            assert (found[metric].ci_low, found[metric].ci_high) == pytest.approx(
                expected, rel=1e-7), metric
        mean_interval = sps.ttest_1samp(treated.incentive, 0).confidence_interval(0.9)
        assert (found["incentive_cost"].ci_low, found["incentive_cost"].ci_high) == \
            pytest.approx((n_t * mean_interval.low, n_t * mean_interval.high), rel=1e-9)

    def test_every_interval_agrees_with_a_bootstrap(self, session: Session,
                                                    synthetic: Synthetic) -> None:
        """Delta-method and t intervals against a stratified bootstrap over customers.

        2,000 replicates: the bootstrap SD has a Monte Carlo error of about 1.6%, a 2.5%
        quantile about 1.5% of the interval's width; the tolerances allow that plus the
        slight skew of a ratio whose denominator has a 6% coefficient of variation.
        """
        results = arm_economics(session.connection(), synthetic.campaign.id)
        raw = raw_per_customer(session, synthetic.campaign.id)
        rng = np.random.default_rng(11)
        replicates = 2_000
        z = sps.norm.isf(0.025)

        def resample(values: pd.DataFrame) -> dict[str, np.ndarray]:
            n = len(values)
            weights = rng.multinomial(n, np.full(n, 1 / n), size=replicates).astype(float)
            return sums(values, weights)

        control = resample(raw[raw.arm == "control"])
        for arm in ("coupon", "cashback"):
            boot = economics_of(control, resample(raw[raw.arm == arm]))
            for metric, result in by_metric(results, arm).items():
                width = result.ci_high - result.ci_low
                low, high = np.quantile(boot[metric], [0.025, 0.975])
                assert np.std(boot[metric], ddof=1) == pytest.approx(width / (2 * z),
                                                                     rel=0.08), (arm, metric)
                assert abs(low - result.ci_low) < 0.1 * width, (arm, metric, low, result)
                assert abs(high - result.ci_high) < 0.1 * width, (arm, metric, high, result)

    def test_cost_per_migration_undefined_when_the_lift_interval_includes_zero(
            self, session: Session) -> None:
        built = build_synthetic(session, sizes={"control": 60, "same": 60, "worse": 300},
                                adoption={"control": 0.5, "same": 0.5, "worse": 0.0},
                                seed=5, name="Flat")
        results = arm_economics(session.connection(), built.campaign.id)
        same = by_metric(results, "same")["incentive_cost_per_incremental_migration"]
        assert same.estimate is None and same.ci_low is None and same.ci_high is None
        assert "includes 0" in same.reason and "95%" in same.reason
        assert by_metric(results, "same")["incremental_migrations"].ci_low < 0
        worse = by_metric(results, "worse")
        assert worse["incremental_migrations"].ci_high < 0
        assert "adoption fell" in worse["incentive_cost_per_incremental_migration"].reason
        # nobody in "worse" adopted, so nobody redeemed: no incentive, no ROI
        assert worse["incentive_cost"].estimate == 0
        assert worse["roi"].estimate is None
        assert "spent nothing on incentives" in worse["roi"].reason

    def test_without_control_or_imported_or_unknown(self, session: Session) -> None:
        goal = make_goal(session)
        no_control = make_campaign(session, name="No control", goal=goal,
                                   arms=[percent_arm(weight=100)], control_opt_out=True,
                                   control_opt_out_reason="everyone gets it")
        imported = Campaign(name="Imported", origin="imported", salt="s")
        session.add(imported)
        session.flush()
        connection = session.connection()
        assert arm_economics(connection, no_control.id) == []
        assert arm_economics(connection, imported.id) == []
        with pytest.raises(CampaignNotFound, match="campaign 987654 does not exist"):
            arm_economics(connection, 987_654)
        with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
            arm_economics(connection, no_control.id, alpha=1.0)

    def test_no_exposures_yet(self, session: Session) -> None:
        campaign = make_campaign(session, name="Fresh")
        assert arm_economics(session.connection(), campaign.id) == []


# --------------------------------------------------------------------------- overview


class World:
    """A hand-made world whose overview can be worked out on paper."""

    def __init__(self, session: Session) -> None:
        self.session = session
        make_goal(session, sources=("call_centre", "ivr"), target="web")  # channels, stages
        set_costs(session)
        self.channel = dict(session.exec(select(Channel.key, Channel.id)).all())
        self.stage = dict(session.exec(select(Stage.key, Stage.id)).all())
        self.customers: dict[str, int] = {}
        self.count = 0

    def customer(self, external_id: str, *, preferred: str | None, tier: str | None,
                 ltv: int, created: datetime = T0 - timedelta(days=100)) -> int:
        row = Customer(external_id=external_id, preferred_channel=preferred, value_tier=tier,
                       lifetime_value_minor=ltv, created_at=created)
        self.session.add(row)
        self.session.flush()
        assert row.id is not None
        self.customers[external_id] = row.id
        return row.id

    def event(self, customer: str, channel: str, stage: str, *, day: float,
              cost: int | None = None, kind: str = "interaction") -> None:
        self.count += 1
        self.session.add(ChannelEvent(
            client_event_id=f"w{self.count}", customer_id=self.customers[customer],
            channel_id=self.channel[channel], stage_id=self.stage[stage], kind=kind,
            occurred_at=T0 + timedelta(days=day), cost_minor=cost))

    def conversion(self, customer: str, channel: str | None, *, day: float, revenue: int,
                   margin: int | None) -> None:
        self.count += 1
        self.session.add(Conversion(
            client_event_id=f"w{self.count}", customer_id=self.customers[customer],
            channel_id=self.channel[channel] if channel else None,
            occurred_at=T0 + timedelta(days=day), revenue_minor=revenue, margin_minor=margin))


@pytest.fixture
def world(session: Session) -> World:
    w = World(session)
    w.customer("A", preferred="web", tier="gold", ltv=10_000)
    w.customer("B", preferred="web", tier="bronze", ltv=2_000)
    w.customer("C", preferred="call_centre", tier=None, ltv=3_000)
    w.customer("D", preferred=None, tier="bronze", ltv=500)
    w.customer("E", preferred="call_centre", tier="silver", ltv=7_000,
               created=T0 + timedelta(days=20))
    # A: two call-centre calls (one with its own cost), a web visit, an out-of-period call
    w.event("A", "call_centre", "after_sale", day=1)
    w.event("A", "call_centre", "after_sale", day=2, cost=900)
    w.event("A", "web", "after_sale", day=3)
    w.event("A", "call_centre", "after_sale", day=15)
    # B: web purchase interactions; a complaint that is not an interaction
    w.event("B", "web", "purchase", day=1)
    w.event("B", "web", "purchase", day=2, cost=0)
    w.event("B", "call_centre", "after_sale", day=3, cost=700, kind="complaint")
    # C: IVR after sale, and a web pre-sale visit (no configured cost at that stage)
    w.event("C", "ivr", "after_sale", day=4)
    w.event("C", "web", "pre_sale", day=4)
    # acquisitions (cost from the table at purchase) and churn
    w.event("D", "web", "purchase", day=0, kind="acquisition")
    w.event("E", "web", "purchase", day=0.5, kind="acquisition", cost=40)
    w.event("A", "web", "purchase", day=5, kind="acquisition")
    w.event("C", "call_centre", "after_sale", day=6, kind="churn", cost=0)
    w.event("B", "web", "after_sale", day=20, kind="churn", cost=0)  # after the period
    w.conversion("A", "web", day=1, revenue=5_000, margin=1_000)
    w.conversion("B", "web", day=2, revenue=3_000, margin=None)
    w.conversion("C", "call_centre", day=3, revenue=2_000, margin=600)
    w.conversion("D", None, day=3, revenue=700, margin=100)
    w.conversion("A", "web", day=11, revenue=9_999, margin=9_999)  # after the period
    session.flush()
    return w


PERIOD = {"since": T0, "until": T0 + timedelta(days=10)}


class TestChannelOverview:
    def test_channel_stage_rows(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        rows = {(r.channel, r.stage): r for r in overview.channel_stages}
        # every configured cost appears, with or without interactions, plus web pre_sale
        assert set(rows) == {*COSTS, ("web", "pre_sale")}
        call = rows[("call_centre", "after_sale")]
        assert (call.interactions, call.customers, call.cost_per_interaction_minor,
                call.cost_to_serve_minor, call.cost_to_serve_per_customer_minor) == (
            2, 1, 700, 700 + 900, 1600.0)
        assert call.channel_name == "Call_Centre"
        assert call.revenue_minor is None and call.margin_minor is None
        web_purchase = rows[("web", "purchase")]
        assert (web_purchase.interactions, web_purchase.customers,
                web_purchase.cost_to_serve_minor) == (2, 1, 25 + 0)
        web_pre = rows[("web", "pre_sale")]
        assert (web_pre.cost_per_interaction_minor, web_pre.cost_to_serve_minor) == (None, 0)
        ivr = rows[("ivr", "after_sale")]
        assert (ivr.interactions, ivr.cost_to_serve_minor) == (1, 110)
        web_after = rows[("web", "after_sale")]
        assert (web_after.interactions, web_after.cost_to_serve_minor) == (1, 20)
        ordered = [(r.channel, r.stage) for r in overview.channel_stages]
        assert ordered == sorted(ordered, key=lambda key: (key[0], ["pre_sale", "purchase",
                                                                    "after_sale"].index(key[1])))

    def test_channel_rows(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        channels = {r.channel: r for r in overview.channels}
        assert list(channels) == ["call_centre", "ivr", "web", None]
        web = channels["web"]
        assert (web.interactions, web.customers, web.cost_to_serve_minor, web.conversions,
                web.converting_customers, web.revenue_minor, web.margin_minor,
                web.margin_imputed_conversions) == (4, 3, 20 + 25 + 0 + 0, 2, 2, 8_000,
                                                    1_000 + 3_000, 1)
        assert web.cost_to_serve_per_customer_minor == pytest.approx(45 / 3)
        call = channels["call_centre"]
        assert (call.interactions, call.conversions, call.revenue_minor, call.margin_minor) \
            == (2, 1, 2_000, 600)
        unknown = channels[None]
        assert (unknown.channel_name, unknown.interactions, unknown.conversions,
                unknown.revenue_minor, unknown.cost_to_serve_per_customer_minor) == (
            None, 0, 1, 700, None)

    def test_preferred_channels(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        preferred = {r.channel: r for r in overview.preferred_channels}
        assert list(preferred) == ["call_centre", "web", None]
        web = preferred["web"]
        assert (web.customers, web.value_tiers, web.churned_customers, web.churn_rate,
                web.average_lifetime_value_minor) == (
            2, {"bronze": 1, "gold": 1}, 0, 0.0, 6_000.0)
        # E was created after the period: only C prefers the call centre, and C churned
        call = preferred["call_centre"]
        assert (call.customers, call.value_tiers, call.churned_customers, call.churn_rate,
                call.average_lifetime_value_minor) == (1, {"unknown": 1}, 1, 1.0, 3_000.0)
        assert preferred[None].customers == 1 and preferred[None].channel_name is None
        everyone = channel_overview(session.connection())
        assert {r.channel: r.customers for r in everyone.preferred_channels} == {
            "call_centre": 2, "web": 2, None: 1}
        assert {r.channel: r.churned_customers for r in everyone.preferred_channels} == {
            "call_centre": 1, "web": 1, None: 0}

    def test_acquisition(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        assert [(r.channel, r.acquisitions, r.customers, r.cost_minor,
                 r.cost_per_customer_minor) for r in overview.acquisition] == [
            ("web", 3, 3, 25 + 40 + 25, 30.0)]

    def test_period_bounds(self, session: Session, world: World) -> None:
        connection = session.connection()
        # since is inclusive (D's acquisition at T0 counts), until is exclusive
        first_day = channel_overview(connection, since=T0, until=T0 + timedelta(days=1))
        assert [(r.acquisitions, r.cost_minor) for r in first_day.acquisition] == [(2, 65)]
        assert sum(r.interactions for r in first_day.channel_stages) == 0
        later = channel_overview(connection, since=T0 + timedelta(days=1))
        stages = {(r.channel, r.stage): r for r in later.channel_stages}
        assert stages[("call_centre", "after_sale")].interactions == 3
        with pytest.raises(PeriodError, match=r"until .* must be later than since") as error:
            channel_overview(connection, since=T0, until=T0)
        assert error.value.field == "until"
        with pytest.raises(PeriodError, match="since must be timezone-aware"):
            channel_overview(connection, since=datetime(2026, 1, 1))

    def test_nothing_recorded(self, session: Session) -> None:
        overview = channel_overview(session.connection())
        assert (overview.channel_stages, overview.channels, overview.preferred_channels,
                overview.acquisition, overview.records()) == ([], [], [], [], [])
        assert list(csv.reader(io.StringIO(export_overview(overview, "csv").decode()))) == [
            ["section", "channel", "stage", "metric", "value"]]


class TestRecordsAndExports:
    def test_records_are_tidy_and_complete(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        records = overview.records()
        assert all(set(r) == {"section", "channel", "stage", "metric", "value"}
                   for r in records)
        assert all(r["value"] is not None for r in records)
        index = {(r["section"], r["channel"], r["stage"], r["metric"]): r["value"]
                 for r in records}
        assert len(index) == len(records)
        assert index[("channel_stage", "call_centre", "after_sale", "cost_to_serve_minor")] \
            == 1600
        assert ("channel_stage", "web", "pre_sale", "cost_per_interaction_minor") not in index
        assert index[("channel", "web", None, "margin_imputed_conversions")] == 1
        assert index[("preferred_channel", "web", None, "customers_value_tier_gold")] == 1
        assert index[("preferred_channel", "call_centre", None, "churn_rate")] == 1.0
        assert index[("acquisition", "web", None, "cost_per_customer_minor")] == 30.0

    def test_csv_is_the_records(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        text = export_overview(overview, ExportFormat.CSV).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(overview.records())
        for row, record in zip(rows, overview.records(), strict=True):
            assert row["section"] == record["section"] and row["metric"] == record["metric"]
            assert row["channel"] == (record["channel"] or "")
            assert row["stage"] == (record["stage"] or "")
            assert float(row["value"]) == pytest.approx(record["value"])
            if isinstance(record["value"], int):
                assert row["value"] == str(record["value"])  # counts stay integers

    def test_json_round_trip(self, session: Session, world: World) -> None:
        overview = channel_overview(session.connection(), **PERIOD)
        body = json.loads(export_overview(overview, "json"))
        assert body == json.loads(json.dumps(overview.as_dict()))
        assert body["since"] == "2026-03-02T00:00:00Z"
        assert body["until"] == "2026-03-12T00:00:00Z"
        assert body["acquisition"] == [{"channel": "web", "channel_name": "Web",
                                        "acquisitions": 3, "customers": 3, "cost_minor": 90,
                                        "cost_per_customer_minor": 30.0}]

    def test_xlsx_has_a_sheet_per_section(self, session: Session, world: World) -> None:
        session.exec(select(Channel).where(Channel.key == "web")).one().name = "=HYPERLINK(1)"
        session.flush()
        overview = channel_overview(session.connection(), **PERIOD)
        workbook = openpyxl.load_workbook(io.BytesIO(export_overview(overview, "xlsx")))
        assert workbook.sheetnames == ["channel_stage", "channel", "preferred_channel",
                                       "acquisition", "records"]
        records = list(workbook["records"].iter_rows(values_only=True))
        assert records[0] == ("section", "channel", "stage", "metric", "value")
        assert len(records) - 1 == len(overview.records())
        acquisition = list(workbook["acquisition"].iter_rows(values_only=True))
        assert acquisition == [
            ("channel", "channel_name", "acquisitions", "customers", "cost_minor",
             "cost_per_customer_minor"),
            ("web", "'=HYPERLINK(1)", 3, 3, 90, 30)]  # a name is never run as a formula
        tiers = next(workbook["preferred_channel"].iter_rows(values_only=True))
        assert tiers[-3:] == ("value_tier_bronze", "value_tier_gold", "value_tier_unknown")

    def test_unknown_format(self, session: Session) -> None:
        with pytest.raises(ValueError, match="'pdf' is not a valid ExportFormat"):
            export_overview(ChannelOverview(since=None, until=None), "pdf")


class TestPeriodParsing:
    @pytest.mark.parametrize(("text", "expected"), [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T09:00:00Z", datetime(2026, 1, 31, 9, tzinfo=UTC)),
        ("2026-01-31T10:00:00+01:00", datetime(2026, 1, 31, 9, tzinfo=UTC)),
    ])
    def test_valid(self, text: str, expected: datetime) -> None:
        parsed = parse_time_bound(text, field_name="since")
        assert parsed == expected and parsed.tzinfo == UTC

    @pytest.mark.parametrize(("text", "message"), [
        ("yesterday", "since must be a date .* got 'yesterday'"),
        ("2026-02-30", "since must be a date"),
        ("2026-01-31T09:00:00", "since needs a timezone"),
    ])
    def test_invalid(self, text: str, message: str) -> None:
        with pytest.raises(PeriodError, match=message) as error:
            parse_time_bound(text, field_name="since")
        assert error.value.field == "since"

    def test_reversed_period(self) -> None:
        with pytest.raises(PeriodError, match="must be later than since"):
            check_period(T0, T0 - timedelta(seconds=1))
        check_period(None, T0)
        check_period(T0, None)


# --------------------------------------------------------------------------- demo world

DEMO_NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def demo(session: Session) -> Any:
    summary = seed_demo_world(session, seed=11, customers=3_000, now=DEMO_NOW)
    analyze(session)
    return summary


def raw_overview(session: Session, *, since: datetime, until: datetime
                 ) -> Callable[[str], pd.DataFrame]:
    """The overview's tables recomputed from raw rows in pandas, by section."""
    channels = frame(session, Channel, ["id", "key"]).rename(columns={"id": "channel_id"})
    stages = frame(session, Stage, ["id", "key"]).rename(columns={"id": "stage_id",
                                                                  "key": "stage"})
    costs = frame(session, ChannelCost, ["channel_id", "stage_id", "cost_minor"])
    events = frame(session, ChannelEvent, ["customer_id", "channel_id", "stage_id", "kind",
                                           "occurred_at", "cost_minor"])
    events = events[(events.occurred_at >= since) & (events.occurred_at < until)]
    events = events.merge(costs.rename(columns={"cost_minor": "configured"}),
                          on=["channel_id", "stage_id"], how="left")
    events["cost"] = events.cost_minor.fillna(events.configured).fillna(0)
    events = events.merge(channels, on="channel_id").merge(stages, on="stage_id")
    conversions = frame(session, Conversion, ["customer_id", "channel_id", "occurred_at",
                                              "revenue_minor", "margin_minor"])
    conversions = conversions[(conversions.occurred_at >= since)
                              & (conversions.occurred_at < until)].merge(channels,
                                                                        on="channel_id")
    conversions["margin"] = conversions.margin_minor.fillna(conversions.revenue_minor)
    customers = frame(session, Customer, ["id", "preferred_channel", "value_tier",
                                          "lifetime_value_minor", "created_at"])
    customers = customers[customers.created_at < until]
    churned = events[events.kind == "churn"].customer_id.unique()
    customers["churned"] = customers.id.isin(churned)
    interactions = events[events.kind == "interaction"]
    acquired = events[events.kind == "acquisition"]

    def section(name: str) -> pd.DataFrame:
        if name == "channel_stage":
            return interactions.groupby(["key", "stage"]).agg(
                interactions=("cost", "size"), customers=("customer_id", "nunique"),
                cost=("cost", "sum"))
        if name == "channel":
            return interactions.groupby("key").agg(
                interactions=("cost", "size"), customers=("customer_id", "nunique"),
                cost=("cost", "sum"))
        if name == "conversions":
            return conversions.groupby("key").agg(
                conversions=("revenue_minor", "size"), revenue=("revenue_minor", "sum"),
                margin=("margin", "sum"))
        if name == "preferred_channel":
            return customers.groupby("preferred_channel").agg(
                customers=("id", "size"), churned=("churned", "sum"),
                ltv=("lifetime_value_minor", "mean"))
        if name == "tiers":
            return customers.groupby(["preferred_channel", "value_tier"]).size()
        assert name == "acquisition"
        return acquired.groupby("key").agg(customers=("customer_id", "nunique"),
                                           cost=("cost", "sum"))

    return section


@pytest.mark.slow
class TestDemoWorld:
    """One seeding (the slow part) for both checks."""

    def test_figures_match_raw_rows_and_are_sane(self, session: Session, demo: Any) -> None:
        self.check_overview(session)
        self.check_arm_economics(session, demo)

    def check_overview(self, session: Session) -> None:
        since, until = DEMO_NOW - timedelta(days=120), DEMO_NOW - timedelta(days=5)
        overview = channel_overview(session.connection(), since=since, until=until)
        raw = raw_overview(session, since=since, until=until)

        stages = raw("channel_stage")
        served = {(r.channel, r.stage): r for r in overview.channel_stages}
        assert set(served) == set(stages.index)
        for (channel, stage), expected in stages.iterrows():
            row = served[(channel, stage)]
            assert (row.interactions, row.customers, row.cost_to_serve_minor) == (
                expected.interactions, expected.customers, expected.cost), (channel, stage)
        call, web = served[("call_centre", "after_sale")], served[("web", "after_sale")]
        assert call.cost_per_interaction_minor > 20 * web.cost_per_interaction_minor
        assert (call.cost_to_serve_minor / call.interactions
                > 20 * web.cost_to_serve_minor / web.interactions)
        assert call.interactions > 1_000 and web.interactions > 1_000

        channels = {r.channel: r for r in overview.channels}
        for channel, expected in raw("channel").iterrows():
            row = channels[channel]
            assert (row.interactions, row.customers, row.cost_to_serve_minor) == (
                expected.interactions, expected.customers, expected.cost), channel
        for channel, expected in raw("conversions").iterrows():
            row = channels[channel]
            assert (row.conversions, row.revenue_minor, row.margin_minor) == (
                expected.conversions, expected.revenue, expected.margin), channel
        # the web's customers cost a fraction of the call centre's to serve
        assert (channels["web"].cost_to_serve_per_customer_minor * 10
                < channels["call_centre"].cost_to_serve_per_customer_minor)

        preferred = {r.channel: r for r in overview.preferred_channels}
        tiers = raw("tiers")
        for channel, expected in raw("preferred_channel").iterrows():
            row = preferred[channel]
            assert (row.customers, row.churned_customers) == (expected.customers,
                                                              expected.churned)
            assert row.average_lifetime_value_minor == pytest.approx(expected.ltv)
            assert row.value_tiers == tiers[channel].to_dict()
        assert 2_900 < sum(r.customers for r in overview.preferred_channels) < 3_000
        assert 0 < sum(r.churned_customers for r in overview.preferred_channels) < 300

        acquisition = {r.channel: r for r in overview.acquisition}
        expected_acquisition = raw("acquisition")
        assert set(acquisition) == set(expected_acquisition.index)
        for channel, expected in expected_acquisition.iterrows():
            assert (acquisition[channel].customers, acquisition[channel].cost_minor) == (
                expected.customers, expected.cost)
        assert acquisition["web"].cost_per_customer_minor == 25.0  # the web purchase cost

    def check_arm_economics(self, session: Session, demo: Any) -> None:
        results = arm_economics(session.connection(), demo.ended_campaign_id)
        raw = raw_per_customer(session, demo.ended_campaign_id)
        control = raw[raw.arm == "control"]
        for arm, truth in TRUE_EFFECTS.items():
            treated = raw[raw.arm == arm]
            expected = economics_of(sums(control), sums(treated))
            found = by_metric(results, arm)
            for metric in ("incremental_migrations", "cost_to_serve_saved_per_customer",
                           "incremental_revenue", "incremental_margin", "incentive_cost",
                           "net_benefit", "roi"):
                assert found[metric].estimate == pytest.approx(float(expected[metric]),
                                                               rel=1e-9), (arm, metric)
            migrations = found["incremental_migrations"]
            assert migrations.ci_low <= truth * len(treated) <= migrations.ci_high, arm
            assert found["incentive_cost"].estimate > 0  # coupons redeemed, prizes won
        prizes = session.exec(select(LotteryWinner.value_minor)).all()
        assert by_metric(results, "prize draw")["incentive_cost"].estimate == sum(prizes)
        coupon_cost = sum(session.exec(select(Redemption.cost_minor).where(
            Redemption.campaign_id == demo.ended_campaign_id)).all())
        assert by_metric(results, "web coupon")["incentive_cost"].estimate == coupon_cost
