"""The campaign report: assembled from campaign_results, time series checked on raw rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pandas as pd
import pytest
from scipy import stats as sps
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlmodel import Session, select

from analytics.guardrails import GuardrailResult
from analytics.queries import goal_window
from analytics.report import (
    adoption_timeline,
    build_report,
    resolve_campaign,
    sample_days,
    spend_timeline,
)
from analytics.reports import PRIMARY_METRICS, campaign_results
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    Channel,
    ChannelEvent,
    Redemption,
    Stage,
)
from seeds.demo import DRAFT_CAMPAIGN, ENDED_CAMPAIGN, TRUE_EFFECTS, DemoSummary, seed_demo_world
from tests.builders import control_arm, make_customer, make_running_campaign, percent_arm

NOW = datetime(2026, 11, 22, tzinfo=UTC)
#: Large enough for every arm to show an effect, small enough to seed in about a second.
DEMO_CUSTOMERS = 3_000
TIDY_KEYS = ["campaign", "arm", "segment", "metric", "statistic", "value"]


# --------------------------------------------------------------------------- fixtures
# One transaction per module holds the demo world (seeded once, on first use) and is rolled
# back at the end; each test works in a savepoint of it. On SQLite the module's connection
# holds the write lock, so every test of the module must use this `session`.


@contextmanager
def rolled_back_connection(engine: Engine) -> Iterator[Connection]:
    connection = engine.connect()
    outer = connection.begin()
    try:
        yield connection
    finally:
        outer.rollback()
        connection.close()


@contextmanager
def savepoint_session(connection: Connection) -> Iterator[Session]:
    savepoint = connection.begin_nested()
    session = Session(bind=connection, join_transaction_mode="create_savepoint",
                      expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        if savepoint.is_active:
            savepoint.rollback()


def seed_demo(connection: Connection) -> DemoSummary:
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    summary = seed_demo_world(session, customers=DEMO_CUSTOMERS, now=NOW)
    session.commit()  # releases the session's savepoint into the module's transaction
    session.close()
    return summary


@pytest.fixture(scope="module")
def world(engine: Engine) -> Iterator[Connection]:
    with rolled_back_connection(engine) as connection:
        yield connection


@pytest.fixture(scope="module")
def demo(world: Connection) -> DemoSummary:
    return seed_demo(world)


@pytest.fixture
def session(world: Connection) -> Iterator[Session]:
    with savepoint_session(world) as session:
        yield session


def make_skewed_campaign(session: Session, *, control: int = 200, treatment: int = 100,
                         treatment_arm: str = "ten percent", name: str = "Skewed split"
                         ) -> Campaign:
    """A 50/50 campaign running since 21 days before NOW, its exposures split
    ``control`` : ``treatment``.

    Every fifth customer used the web (the goal's target channel) after exposure.
    """
    campaign = make_running_campaign(session, name=name, arms=[
        control_arm(weight=50), percent_arm(treatment_arm, weight=50)])
    campaign.starts_at, campaign.ends_at = NOW - timedelta(days=21), NOW + timedelta(days=30)
    session.add(campaign)
    arms = {arm.name: arm for arm in session.exec(
        select(Arm).where(Arm.campaign_id == campaign.id))}
    web = session.exec(select(Channel).where(Channel.key == "web")).one()
    after_sale = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    exposed = NOW - timedelta(days=20)
    for index in range(control + treatment):
        customer = make_customer(session, external_id=f"{name}-{index}")
        arm = arms["control"] if index < control else arms[treatment_arm]
        session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id, arm_id=arm.id,
                               first_exposed_at=exposed + timedelta(hours=index)))
        if index % 5 == 0:
            session.add(ChannelEvent(client_event_id=f"{name}-web-{index}",
                                     customer_id=customer.id, channel_id=web.id,
                                     stage_id=after_sale.id, kind="interaction",
                                     occurred_at=exposed + timedelta(hours=index, minutes=30),
                                     cost_minor=10))
    session.flush()
    return campaign


# --------------------------------------------------------------------------- independent


def raw_frame(session: Session, *columns) -> pd.DataFrame:
    rows = session.exec(select(*columns)).all()
    return pd.DataFrame(rows, columns=[c.key for c in columns])


def independent_timeline(session: Session, campaign_id: int) -> dict[tuple[str, date],
                                                                      tuple[int, int]]:
    """(arm, day) -> (exposed so far, adopted so far), from every raw row, in pandas."""
    window = goal_window(session.connection(), campaign_id)
    assignments = raw_frame(session, Assignment.campaign_id, Assignment.customer_id,
                            Assignment.arm_id, Assignment.first_exposed_at)
    assignments = assignments[assignments.campaign_id == campaign_id]
    events = raw_frame(session, ChannelEvent.customer_id, ChannelEvent.channel_id,
                       ChannelEvent.stage_id, ChannelEvent.kind, ChannelEvent.occurred_at)
    target = events[(events.channel_id == window.target_channel_id)
                    & (events.stage_id == window.stage_id) & (events.kind == "interaction")]
    joined = assignments.merge(target, on="customer_id")
    joined = joined[(joined.occurred_at >= joined.first_exposed_at) & (
        joined.occurred_at < joined.first_exposed_at + timedelta(days=window.window_days))]
    adopted_at = joined.groupby("customer_id").occurred_at.min()
    assignments = assignments.assign(
        exposed_day=assignments.first_exposed_at.map(lambda t: t.date()),
        adopted_day=assignments.customer_id.map(adopted_at).map(
            lambda t: t.date() if pd.notna(t) else None))
    names = {arm_id: name for arm_id, name in session.exec(
        select(Arm.id, Arm.name).where(Arm.campaign_id == campaign_id))}
    seen = set(assignments.exposed_day) | set(assignments.adopted_day.dropna())
    days = [min(seen) + timedelta(days=i) for i in range((max(seen) - min(seen)).days + 1)]
    out = {}
    for arm_id, group in assignments.groupby("arm_id"):
        for day in days:
            out[(names[arm_id], day)] = (
                int((group.exposed_day <= day).sum()),
                int(group.adopted_day.map(lambda d, day=day: pd.notna(d) and d <= day).sum()))
    return out


# --------------------------------------------------------------------------- demo world


@pytest.mark.slow
class TestDemoReport:
    def test_campaign_arms_and_sample_sizes(self, session: Session, demo) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        campaign = session.get(Campaign, demo.ended_campaign_id)
        info = report.campaign
        assert (info.id, info.name, info.status, info.origin) == (
            campaign.id, ENDED_CAMPAIGN, "ended", "live")
        assert info.goal and info.stage == "After-sale" and info.target_channel == "Web"
        assert (info.currency, info.budget_minor, info.spent_minor) == (
            campaign.currency, campaign.budget_minor, campaign.spent_minor)
        assert (info.starts_at, info.ends_at) == (campaign.starts_at, campaign.ends_at)
        assert report.generated_at == NOW
        assert [a.name for a in report.arms] == ["control", *TRUE_EFFECTS]
        assert report.control is not None and report.control.incentive_type is None
        assert {a.incentive_type for a in report.arms if not a.is_control} == {"coupon",
                                                                              "lottery"}
        counts = raw_frame(session, Assignment.campaign_id, Assignment.arm_id,
                           Assignment.first_exposed_at)
        counts = counts[counts.campaign_id == demo.ended_campaign_id]
        names = {arm_id: name for arm_id, name in session.exec(select(Arm.id, Arm.name))}
        assert {a.name: a.n for a in report.arms} == {
            names[arm_id]: n for arm_id, n in counts.arm_id.value_counts().items()}
        weights = {a.name: a.planned_weight for a in report.arms}
        assert sum(weights.values()) == 100
        assert report.date_range is not None
        assert report.date_range.first_exposure == counts.first_exposed_at.min()
        assert report.date_range.last_exposure == counts.first_exposed_at.max()
        # SRM recomputed independently from the raw counts and the planned weights
        observed = [a.n for a in report.arms]
        expected = [sum(observed) * a.planned_weight / 100 for a in report.arms]
        assert report.srm.p_value == pytest.approx(sps.chisquare(observed, expected).pvalue,
                                                   rel=1e-9)
        assert report.srm.flagged is False
        # The demo's 3,000 customers cannot detect the goal's +5 points in every arm: the
        # only warnings are those arms' power banners, one per underpowered arm.
        underpowered = [p.arm for p in report.power if p.underpowered]
        assert underpowered and report.warnings == report.cautions
        assert [w.split(" arm '")[1].split("'")[0] for w in report.warnings] == underpowered

    def test_results_are_campaign_results(self, session: Session, demo) -> None:
        connection = session.connection()
        report = build_report(connection, demo.ended_campaign_id, alpha=0.1, now=NOW)
        expected = campaign_results(connection, demo.ended_campaign_id, alpha=0.1)
        assert report.results == expected.results
        assert report.srm == expected.srm
        assert report.alpha == 0.1
        assert {r.segment for r in report.results} == {"all"}
        assert {r.arm for r in report.results} == set(TRUE_EFFECTS)

    def test_timeline_matches_raw_rows(self, session: Session, demo) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        truth = independent_timeline(session, demo.ended_campaign_id)
        assert {(p.arm, p.day) for p in report.timeline} == set(truth)  # every day, dense
        for point in report.timeline:
            assert (point.exposed, point.adopted) == truth[(point.arm, point.day)], point
        # every window has closed: the last point of each arm is its adoption count
        rows = {r["arm"]: r for r in campaign_results(session.connection(),
                                                      demo.ended_campaign_id).arms}
        last = {p.arm: p for p in report.timeline}
        for arm, point in last.items():
            assert (point.exposed, point.adopted) == (rows[arm]["n"], rows[arm]["adoption_sum"])
        days = [p.day for p in report.timeline if p.arm == "control"]
        assert days == sorted(days) and len(days) <= 120
        assert days[0] == report.date_range.first_exposure.date()

    def test_timeline_is_sampled_to_at_most_max_points(self, session: Session, demo) -> None:
        connection = session.connection()
        full = adoption_timeline(connection, demo.ended_campaign_id)
        short = adoption_timeline(connection, demo.ended_campaign_id, max_points=7)
        for arm in TRUE_EFFECTS:
            mine = [p for p in short if p.arm == arm]
            assert 1 < len(mine) <= 7
            assert mine[-1] == [p for p in full if p.arm == arm][-1]
            assert set(mine) <= set(full)

    def test_spend_matches_raw_redemptions(self, session: Session, demo) -> None:
        campaign_id = demo.ended_campaign_id
        # one redemption rolled back later, as the redemption service would
        redemption = session.exec(select(Redemption).where(
            Redemption.campaign_id == campaign_id).order_by(Redemption.id)).first()
        campaign = session.get(Campaign, campaign_id)
        redemption.status = "rolled_back"
        redemption.rolled_back_at = campaign.ends_at - timedelta(days=3)
        campaign.spent_minor -= redemption.cost_minor
        session.add_all([redemption, campaign])
        session.flush()
        spend = build_report(session.connection(), campaign_id, now=NOW).spend
        raw = raw_frame(session, Redemption.campaign_id, Redemption.cost_minor,
                        Redemption.created_at, Redemption.rolled_back_at)
        raw = raw[raw.campaign_id == campaign_id]
        for point in spend:
            charged = raw[raw.created_at.map(lambda t, d=point.day: t.date() <= d)]
            refunded = raw[raw.rolled_back_at.map(
                lambda t, d=point.day: pd.notna(t) and t.date() <= d)]
            assert point.spent_minor == charged.cost_minor.sum() - refunded.cost_minor.sum()
        assert spend[0].day == campaign.starts_at.date()
        assert spend[-1].day == campaign.ends_at.date()
        assert spend[-1].spent_minor == campaign.spent_minor > 0

    def test_records_are_tidy(self, session: Session, demo) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        records = report.records()
        assert all(list(r) == TIDY_KEYS for r in records)
        assert {r["campaign"] for r in records} == {ENDED_CAMPAIGN}
        keys = [(r["arm"], r["segment"], r["metric"], r["statistic"]) for r in records]
        assert len(keys) == len(set(keys))
        numbers = {k: r["value"] for k, r in zip(keys, records, strict=True)}
        for result in report.results:
            c = result.comparison
            key = (result.arm, "all", result.metric)
            assert numbers[(*key, "diff")] == c.diff
            assert numbers[(*key, "diff_ci_low")] == c.diff_ci_low
            assert numbers[(*key, "n_control")] == c.control_n
            assert numbers[(*key, "rel_lift_ci_high")] == c.rel_lift_ci_high
            assert ((*key, "p_value_holm") in numbers) == (result.metric in PRIMARY_METRICS)
            assert ((*key, "variance_reduction") in numbers) == result.metric.endswith("_cuped")
        assert numbers[("all", "all", "sample_ratio", "srm_p_value")] == report.srm.p_value
        assert numbers[("all", "all", "sample_ratio", "srm_flagged")] == 0
        for arm in report.arms:
            assert numbers[(arm.name, "all", "assignment", "n")] == arm.n
        texts = [r["statistic"] for r in records if r["metric"] in ("method", "date_range")]
        assert texts[0].startswith("first_exposure=2026-") and texts[0].endswith("Z")
        assert len(texts) == 3 + len(report.methods)
        assert all(r["value"] is None for r in records if r["metric"] in ("method",
                                                                           "date_range"))
        assert all(isinstance(r["value"], int | float) or r["value"] is None
                   for r in records)

    def test_methods_follow_the_contents(self, session: Session, demo) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        text = " ".join(report.methods)
        for phrase in ("unpooled Wald z test", "Welch's t test", "delta-method", "CUPED",
                       "30 days before each customer's first exposure", "Holm",
                       "across 4 comparisons", "chi-square", "95%"):
            assert phrase in text, phrase
        # The demo campaign watches guardrails; an imported experiment (no guardrails)
        # states no sequential method.
        assert "always-valid" in text
        guarded = replace(report, guardrails=[GuardrailResult(
            arm="web coupon", metric="complaints", harm_direction=1, control_mean=0.01,
            treatment_mean=0.02, diff=0.01, ci_low=0.002, ci_high=0.018,
            p_value_always_valid=0.01, harm_detected=True)])
        assert any("always-valid" in m for m in guarded.methods)
        assert any("Guardrail harmed: complaints" in w for w in guarded.warnings)

    def test_draft_campaign_reports_nothing_yet(self, session: Session, demo) -> None:
        report = build_report(session.connection(), demo.draft_campaign_id, now=NOW)
        assert report.campaign.name == DRAFT_CAMPAIGN and report.campaign.status == "draft"
        assert report.results == [] and report.timeline == [] and report.spend == []
        assert report.date_range is None
        assert report.srm.p_value is None and not report.srm.flagged
        assert [a.n for a in report.arms] == [0, 0, 0]

    def test_running_campaign_spend_runs_to_now(self, session: Session, demo) -> None:
        report = build_report(session.connection(), demo.running_campaign_id, now=NOW)
        assert report.campaign.status == "running"
        assert report.spend[-1].day == NOW.date()
        assert report.spend[-1].spent_minor == report.campaign.spent_minor
        assert report.results and report.timeline

    def test_resolve_by_id_or_exact_name(self, session: Session, demo) -> None:
        connection = session.connection()
        assert resolve_campaign(connection, str(demo.ended_campaign_id)) == \
            demo.ended_campaign_id
        assert resolve_campaign(connection, ENDED_CAMPAIGN) == demo.ended_campaign_id
        with pytest.raises(CampaignNotFound, match="campaign 'after-sale"):
            resolve_campaign(connection, ENDED_CAMPAIGN.lower())


# --------------------------------------------------------------------------- small worlds


class TestSampleRatioMismatch:
    def test_skewed_split_is_flagged(self, session: Session) -> None:
        campaign = make_skewed_campaign(session)
        report = build_report(session.connection(), campaign.id, now=NOW)
        assert [(a.name, a.n, a.planned_weight) for a in report.arms] == [
            ("control", 200, 50), ("ten percent", 100, 50)]
        expected = sps.chisquare([200, 100], [150, 150]).pvalue
        assert report.srm.p_value == pytest.approx(expected, rel=1e-9)
        assert report.srm.flagged is True
        assert report.warnings[0].startswith("SAMPLE RATIO MISMATCH")
        adoption = next(r for r in report.results if r.metric == "adoption")
        assert adoption.comparison.control_mean == pytest.approx(40 / 200)
        assert adoption.comparison.treatment_mean == pytest.approx(20 / 100)

    def test_even_split_is_not_flagged(self, session: Session) -> None:
        campaign = make_skewed_campaign(session, control=150, treatment=150)
        report = build_report(session.connection(), campaign.id, now=NOW)
        assert report.srm.flagged is False and report.srm.p_value == pytest.approx(1.0)
        # No SRM warning: only the cautions of a 20-day-old campaign of 300 customers.
        assert [w.split(":")[0] for w in report.warnings] == ["INTERIM RESULTS",
                                                              "UNDERPOWERED"]


class TestInputs:
    def test_unknown_campaign(self, session: Session) -> None:
        with pytest.raises(CampaignNotFound, match="campaign 987654 does not exist"):
            build_report(session.connection(), 987654)

    @pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
    def test_alpha_outside_0_1(self, session: Session, alpha: float) -> None:
        with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
            build_report(session.connection(), 1, alpha=alpha)

    def test_spend_before_start_is_empty(self, session: Session) -> None:
        campaign = make_skewed_campaign(session, control=2, treatment=2)
        assert spend_timeline(session.connection(), campaign.id,
                              now=campaign.starts_at - timedelta(days=1)) == []


class TestSampleDays:
    def test_short_series_is_kept_whole(self) -> None:
        days = [date(2026, 1, 1) + timedelta(days=i) for i in range(120)]
        assert sample_days(days) == days

    def test_long_series_is_thinned_evenly_keeping_the_last_day(self) -> None:
        days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
        kept = sample_days(days)
        assert len(kept) <= 120 and kept[-1] == days[-1]
        gaps = {(b - a).days for a, b in pairwise(kept)}
        assert gaps == {4}

    def test_empty(self) -> None:
        assert sample_days([]) == []
