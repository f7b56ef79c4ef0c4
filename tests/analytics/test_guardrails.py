"""Guardrail monitoring: numbers against raw rows, false alarms and power by simulation.

The simulations work on sufficient statistics built with numpy (no database), the way a
campaign accumulates them day by day; the database tests check that the guardrails read
what was recorded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from sqlalchemy import insert
from sqlmodel import Session

from analytics.guardrails import (
    DEFAULT_TUNING_N,
    GUARDRAILS,
    MIN_ARM_SIZE,
    GuardrailResult,
    assess_guardrails,
    describe_harm,
    evaluate_guardrails,
    format_money,
)
from analytics.stats import MeanStats, compare_means, compare_proportions
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Assignment,
    Campaign,
    ChannelEvent,
    Conversion,
    Customer,
    MigrationGoal,
)
from campaigns.services.campaigns import campaign_arms
from campaigns.types import utcnow
from tests.builders import control_arm, make_campaign, percent_arm

METRICS = tuple(GUARDRAILS)  # complaints, churn, revenue


# ------------------------------------------------------------------- test data helpers


@dataclass(frozen=True)
class ArmPlan:
    """How one arm's customers behave in the test data."""

    complaints: float = 0.05  # Poisson mean of complaints per customer
    churn: float = 0.02  # chance a customer churns
    conversion: float = 0.3  # chance of a purchase
    order_minor: float = 4_000  # mean order value (lognormal), minor units


def draw(rng: np.random.Generator, plan: ArmPlan, n: int) -> dict[str, np.ndarray]:
    """Per-customer complaints, churn and revenue for ``n`` customers of one arm."""
    converts = rng.random(n) < plan.conversion
    sigma = 0.8
    orders = np.round(rng.lognormal(math.log(plan.order_minor) - sigma**2 / 2, sigma, n))
    return {"complaints": rng.poisson(plan.complaints, n).astype(float),
            "churn": (rng.random(n) < plan.churn).astype(float),
            "revenue": np.where(converts, np.maximum(orders, 1.0), 0.0)}


def arm_row(arm: str, values: Mapping[str, np.ndarray], *, is_control: bool = False
            ) -> dict[str, Any]:
    """An arm_statistics-shaped row from raw per-customer values."""
    row: dict[str, Any] = {"arm": arm, "is_control": is_control,
                           "n": len(next(iter(values.values())))}
    for metric, column in values.items():
        row[f"{metric}_sum"] = float(column.sum())
        row[f"{metric}_sum_sq"] = float(np.dot(column, column))
    return row


def populate(session: Session, campaign: Campaign, *,
             plans: Mapping[str, ArmPlan | None] | None = None,
             customers_per_arm: int = 400, seed: int = 0,
             exposed_at: datetime | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Expose customers to every arm of ``campaign`` and record their complaints, churn
    and purchases inside the goal's window; returns the per-customer values by arm.

    Arms missing from ``plans`` behave like ``ArmPlan()``; an arm planned as ``None``
    gets no customers at all.
    """
    plans = plans or {}
    rng = np.random.default_rng(seed)
    exposed_at = exposed_at or utcnow() - timedelta(days=10)
    goal = session.get(MigrationGoal, campaign.goal_id)
    assert goal is not None
    values: dict[str, dict[str, np.ndarray]] = {}
    for arm in campaign_arms(session, campaign):
        if arm.name in plans and plans[arm.name] is None:
            continue
        plan = plans.get(arm.name) or ArmPlan()
        values[arm.name] = arm_values = draw(rng, plan, customers_per_arm)
        customers = [Customer(external_id=f"g{campaign.id}-{arm.id}-{i}")
                     for i in range(customers_per_arm)]
        session.add_all(customers)
        session.flush()
        session.execute(insert(Assignment.__table__), [  # type: ignore[attr-defined]
            {"campaign_id": campaign.id, "customer_id": c.id, "arm_id": arm.id,
             "allocation_period": 1, "first_exposed_at": exposed_at} for c in customers])
        events: list[dict[str, Any]] = []
        conversions: list[dict[str, Any]] = []
        for customer, complaints, churned, revenue in zip(
                customers, arm_values["complaints"], arm_values["churn"], arm_values["revenue"],
                strict=True):
            base = {"customer_id": customer.id, "channel_id": goal.target_channel_id,
                    "stage_id": goal.stage_id}
            events += [base | {"client_event_id": f"{customer.external_id}-complaint-{j}",
                               "kind": "complaint",
                               "occurred_at": exposed_at + timedelta(days=1, minutes=j)}
                       for j in range(int(complaints))]
            if churned:
                events.append(base | {"client_event_id": f"{customer.external_id}-churn",
                                      "kind": "churn",
                                      "occurred_at": exposed_at + timedelta(days=2)})
            if revenue:
                conversions.append({"client_event_id": f"{customer.external_id}-order",
                                    "customer_id": customer.id, "kind": "purchase",
                                    "channel_id": goal.target_channel_id,
                                    "occurred_at": exposed_at + timedelta(days=3),
                                    "revenue_minor": int(revenue)})
        if events:
            session.execute(insert(ChannelEvent.__table__), events)  # type: ignore[attr-defined]
        if conversions:
            session.execute(insert(Conversion.__table__), conversions)  # type: ignore[attr-defined]
    session.flush()
    return values


def harmful_plans(arm: str = "ten percent") -> dict[str, ArmPlan]:
    """The treatment arm sextuples complaints: 0.05 -> 0.30 per customer."""
    return {arm: ArmPlan(complaints=0.30)}


# --------------------------------------------------------------------- pure assessment


def waudby_smith(control: np.ndarray, treatment: np.ndarray, *, alpha: float,
                 tuning_n: float) -> tuple[float, float, float]:
    """(diff, half-width, p) of the asymptotic confidence sequence, worked from raw rows."""
    n = len(control) + len(treatment)
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning_n
    var_diff = np.var(control, ddof=1) / len(control) + np.var(treatment, ddof=1) / len(treatment)
    half = math.sqrt(n * var_diff) * math.sqrt(
        2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha))
    diff = float(treatment.mean() - control.mean())
    p = math.sqrt(n * rho2 + 1) * math.exp(-(diff**2 / var_diff) * n * rho2 / (2 * (n * rho2 + 1)))
    return diff, half, min(p, 1.0)


class TestAssessGuardrails:
    @pytest.fixture
    def arms(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        rng = np.random.default_rng(3)
        return (draw(rng, ArmPlan(), 3_000),
                draw(rng, ArmPlan(complaints=0.09, churn=0.015), 3_000))

    def test_numbers_match_the_sequence_worked_from_raw_rows(self, arms) -> None:
        control, treatment = arms
        results = assess_guardrails([arm_row("control", control, is_control=True),
                                     arm_row("offer", treatment)], metrics=METRICS)
        assert [r.metric for r in results] == list(METRICS)
        per_comparison_alpha = 2 * 0.05 / 3  # Bonferroni over 1 arm x 3 metrics, one-sided
        for result in results:
            diff, half, p = waudby_smith(control[result.metric], treatment[result.metric],
                                         alpha=per_comparison_alpha, tuning_n=DEFAULT_TUNING_N)
            assert result.control_mean == pytest.approx(control[result.metric].mean())
            assert result.treatment_mean == pytest.approx(treatment[result.metric].mean())
            assert result.diff == pytest.approx(diff)
            assert result.ci_low == pytest.approx(diff - half, rel=1e-9)
            assert result.ci_high == pytest.approx(diff + half, rel=1e-9)
            assert result.p_value_always_valid == pytest.approx(p, rel=1e-9)
            assert result.level == pytest.approx(1 - per_comparison_alpha)
            assert (result.control_n, result.treatment_n) == (3_000, 3_000)
            assert result.reason is None
        # complaints rose; churn fell (harmless) and revenue did not move
        assert [r.harm_detected for r in results] == [True, False, False]
        assert results[0].harm_direction == 1 and results[2].harm_direction == -1

    @pytest.mark.parametrize(("metric", "offer", "harmful"), [
        ("complaints", ArmPlan(complaints=0.15), True),
        ("complaints", ArmPlan(complaints=0.01), False),
        ("churn", ArmPlan(churn=0.07), True),
        ("churn", ArmPlan(churn=0.002), False),
        ("revenue", ArmPlan(order_minor=2_500), True),
        ("revenue", ArmPlan(order_minor=6_000), False),
    ])
    def test_harm_only_on_the_harmful_side(self, metric: str, offer: ArmPlan,
                                           harmful: bool) -> None:
        rng = np.random.default_rng(4)
        control, treatment = draw(rng, ArmPlan(), 4_000), draw(rng, offer, 4_000)
        result, = assess_guardrails([arm_row("control", control, is_control=True),
                                     arm_row("offer", treatment)], metrics=[metric])
        assert result.ci_low is not None and result.ci_high is not None
        assert result.ci_low > 0 or result.ci_high < 0  # a clear change either way
        assert result.harm_detected is harmful, result

    def test_the_family_of_arms_and_metrics_shares_alpha(self, arms) -> None:
        control, treatment = arms
        rows = [arm_row("control", control, is_control=True), arm_row("a", treatment),
                arm_row("b", treatment)]
        results = assess_guardrails(rows, metrics=METRICS, alpha=0.05)
        assert len(results) == 6
        assert all(r.level == pytest.approx(1 - 0.1 / 6) for r in results)
        # a bigger family widens each interval
        alone, = assess_guardrails(rows[:2], metrics=["complaints"])
        assert alone.level == pytest.approx(0.9)
        assert (alone.ci_high - alone.ci_low) < (results[0].ci_high - results[0].ci_low)

    def test_too_early_to_flag_below_the_minimum_arm_size(self) -> None:
        rng = np.random.default_rng(5)
        n = MIN_ARM_SIZE - 1
        control, treatment = draw(rng, ArmPlan(), n), draw(rng, ArmPlan(complaints=3.0), n)
        result, = assess_guardrails([arm_row("control", control, is_control=True),
                                     arm_row("offer", treatment)], metrics=["complaints"])
        assert result.ci_low is not None and result.ci_low > 0  # the interval says harm...
        assert result.harm_detected is False  # ...but 99 customers are too few to act on
        assert result.reason is not None and "too early" in result.reason

    def test_without_a_control_arm_nothing_is_flagged(self) -> None:
        rng = np.random.default_rng(6)
        results = assess_guardrails([arm_row("offer", draw(rng, ArmPlan(complaints=3.0), 500))],
                                    metrics=METRICS)
        assert len(results) == 3
        assert not any(r.harm_detected for r in results)
        assert all("no control arm" in (r.reason or "") for r in results)

    def test_an_arm_nobody_was_exposed_to_is_undefined(self, arms) -> None:
        control, _ = arms
        result, = assess_guardrails([arm_row("control", control, is_control=True),
                                     {"arm": "new", "is_control": False, "n": 0}],
                                    metrics=["churn"])
        assert result.treatment_n == 0 and result.treatment_mean is None
        assert result.ci_low is None and result.harm_detected is False
        assert result.reason

    def test_invalid_parameters(self, arms) -> None:
        control, treatment = arms
        rows = [arm_row("control", control, is_control=True), arm_row("a", treatment)]
        with pytest.raises(ValueError, match="unknown guardrail metric 'latency'"):
            assess_guardrails(rows, metrics=["latency"])
        with pytest.raises(ValueError, match=r"alpha must be strictly between 0 and 0\.5"):
            assess_guardrails(rows, metrics=METRICS, alpha=0.5)
        assert assess_guardrails(rows, metrics=[]) == []


# ------------------------------------------------------------------------- simulations

CAMPAIGNS = 400
LOOKS = 30  # one look a day for a month
DAILY_PER_ARM = 200  # 6,000 customers per arm after 30 days


@dataclass(frozen=True)
class Simulation:
    """Cumulative per-arm sums after each day: arrays of shape (campaigns, 2 arms, looks)."""

    n: np.ndarray  # customers per arm at each look
    sums: dict[str, np.ndarray]
    sums_sq: dict[str, np.ndarray]

    def rows(self, campaign: int, look: int) -> list[dict[str, Any]]:
        rows = []
        for arm, name in enumerate(("control", "offer")):
            row: dict[str, Any] = {"arm": name, "is_control": arm == 0, "n": int(self.n[look])}
            for metric in self.sums:
                row[f"{metric}_sum"] = float(self.sums[metric][campaign, arm, look])
                row[f"{metric}_sum_sq"] = float(self.sums_sq[metric][campaign, arm, look])
            rows.append(row)
        return rows

    def stats(self, metric: str, campaign: int, arm: int, look: int) -> MeanStats:
        return MeanStats(n=int(self.n[look]), sum=float(self.sums[metric][campaign, arm, look]),
                         sum_sq=float(self.sums_sq[metric][campaign, arm, look]))


def simulate(*, campaigns: int, plans: tuple[ArmPlan, ArmPlan], seed: int) -> Simulation:
    """Each day DAILY_PER_ARM new customers per arm; sums accumulate as the database's would."""
    rng = np.random.default_rng(seed)
    sums = {m: np.empty((campaigns, 2, LOOKS)) for m in METRICS}
    sums_sq = {m: np.empty((campaigns, 2, LOOKS)) for m in METRICS}
    for arm, plan in enumerate(plans):
        daily = draw(rng, plan, campaigns * LOOKS * DAILY_PER_ARM)
        for metric, values in daily.items():
            by_day = values.reshape(campaigns, LOOKS, DAILY_PER_ARM)
            sums[metric][:, arm] = np.cumsum(by_day.sum(axis=2), axis=1)
            sums_sq[metric][:, arm] = np.cumsum((by_day**2).sum(axis=2), axis=1)
    return Simulation(n=DAILY_PER_ARM * np.arange(1, LOOKS + 1), sums=sums, sums_sq=sums_sq)


def first_alarm_day(simulation: Simulation, campaign: int, metrics=METRICS) -> int | None:
    """The first daily look at which any guardrail flags harm (None: never)."""
    for look in range(LOOKS):
        if any(r.harm_detected for r in assess_guardrails(simulation.rows(campaign, look),
                                                          metrics=metrics)):
            return look + 1
    return None


@pytest.fixture(scope="module")
def aa_simulation() -> Simulation:
    return simulate(campaigns=CAMPAIGNS, plans=(ArmPlan(), ArmPlan()), seed=2026)


class TestAASimulation:
    """400 seeded A/A campaigns (no real effect), each looked at daily for 30 days."""

    def test_guardrails_under_daily_peeking_rarely_pause_a_harmless_campaign(
        self, aa_simulation: Simulation
    ) -> None:
        alarms = [first_alarm_day(aa_simulation, i) for i in range(CAMPAIGNS)]
        rate = np.mean([day is not None for day in alarms])
        # at most 5% (+-3%) of campaigns ever paused, over 30 looks and all three guardrails
        assert rate <= 0.08

    def test_fixed_horizon_test_at_the_end_rejects_about_alpha(
        self, aa_simulation: Simulation
    ) -> None:
        last = LOOKS - 1
        for metric in METRICS:
            compare = compare_proportions if metric == "churn" else compare_means
            p_values = np.array([compare(aa_simulation.stats(metric, i, 0, last),
                                         aa_simulation.stats(metric, i, 1, last)).p_value
                                 for i in range(CAMPAIGNS)], dtype=float)
            assert 0.02 <= np.mean(p_values < 0.05) <= 0.08, metric

    def test_the_same_peeking_with_a_fixed_horizon_test_would_cry_wolf(
        self, aa_simulation: Simulation
    ) -> None:
        """The simulation can tell a valid monitor from an invalid one: testing every day
        with the fixed-horizon test at the guardrails' own one-sided level pauses far
        more than 5% of harmless campaigns."""
        n = aa_simulation.n.astype(float)
        paused = np.zeros(CAMPAIGNS, dtype=bool)
        critical = sps.norm.isf(0.05 / len(METRICS))
        for metric in METRICS:
            sums, sums_sq = aa_simulation.sums[metric], aa_simulation.sums_sq[metric]
            variance = (sums_sq - sums**2 / n) / (n - 1)
            z = (sums[:, 1] - sums[:, 0]) / n / np.sqrt((variance[:, 0] + variance[:, 1]) / n)
            paused |= (GUARDRAILS[metric].harm_direction * z > critical).any(axis=1)
        assert paused.mean() > 0.12


class TestPower:
    """Real harm is caught, and early: 100 campaigns per scenario, 200 customers a day per arm."""

    @pytest.mark.parametrize(("metric", "harmful"), [
        ("complaints", ArmPlan(complaints=0.075)),  # +50%
        ("churn", ArmPlan(churn=0.04)),  # doubled
        ("revenue", ArmPlan(order_minor=3_000)),  # orders 25% smaller
    ])
    def test_clear_harm_is_caught_within_two_weeks(self, metric: str, harmful: ArmPlan) -> None:
        simulation = simulate(campaigns=100, plans=(ArmPlan(), harmful), seed=7)
        days = [first_alarm_day(simulation, i, metrics=[metric]) for i in range(100)]
        caught = [day for day in days if day is not None]
        assert len(caught) >= 90
        assert np.median(caught) <= 14


# -------------------------------------------------------------------------- sentences


class TestSentences:
    def test_money_in_major_units(self) -> None:
        assert format_money(123_450, "EUR") == "EUR 1,234.50"
        assert format_money(-320, "usd") == "-USD 3.20"
        assert format_money(1_234, "JPY", signed=True) == "+JPY 1,234"
        assert format_money(1_234.5, "KWD") == "KWD 1.234"  # three-digit minor unit (fils)

    def _result(self, metric: str, **values: float) -> GuardrailResult:
        return GuardrailResult(arm="ten percent", metric=metric,
                               harm_direction=GUARDRAILS[metric].harm_direction,
                               p_value_always_valid=0.001, harm_detected=True, control_n=400,
                               treatment_n=410, level=1 - 0.1 / 3, **values)

    def test_complaints(self) -> None:
        result = self._result("complaints", control_mean=0.05, treatment_mean=0.2, diff=0.15,
                              ci_low=0.087, ci_high=0.213)
        assert describe_harm(result) == (
            "complaints per customer in arm 'ten percent': 0.200 against 0.050 in control "
            "(+0.150; always-valid 96.7% interval +0.087 to +0.213; 410 and 400 customers)")

    def test_churn_in_percentage_points(self) -> None:
        result = self._result("churn", control_mean=0.02, treatment_mean=0.065, diff=0.045,
                              ci_low=0.012, ci_high=0.078)
        assert describe_harm(result) == (
            "churn rate in arm 'ten percent': 6.5% against 2.0% in control (+4.5 points; "
            "always-valid 96.7% interval +1.2 points to +7.8 points; 410 and 400 customers)")

    def test_revenue_in_the_campaign_currency(self) -> None:
        result = self._result("revenue", control_mean=1_230, treatment_mean=1_010, diff=-220,
                              ci_low=-350, ci_high=-90)
        assert describe_harm(result, currency="GBP") == (
            "revenue per customer in arm 'ten percent': GBP 10.10 against GBP 12.30 in control "
            "(-GBP 2.20; always-valid 96.7% interval -GBP 3.50 to -GBP 0.90; 410 and 400 "
            "customers)")

    def test_undefined_comparison_says_why(self) -> None:
        result = GuardrailResult(arm="new", metric="churn", harm_direction=1, control_mean=0.1,
                                 treatment_mean=None, diff=None, ci_low=None, ci_high=None,
                                 p_value_always_valid=None, harm_detected=False,
                                 reason="an arm has no units")
        assert describe_harm(result) == "churn rate in arm 'new': an arm has no units"


# ----------------------------------------------------------------------------- database


class TestEvaluateGuardrails:
    def test_reads_what_was_recorded_and_flags_the_harmful_arm(self, session: Session) -> None:
        campaign = make_campaign(session, name="Complaints up")
        values = populate(session, campaign, plans=harmful_plans(), seed=11)
        results = evaluate_guardrails(session.connection(), campaign.id)
        assert [(r.arm, r.metric) for r in results] == [("ten percent", m) for m in METRICS]
        control, treatment = values["control"], values["ten percent"]
        for result in results:
            assert result.control_n == result.treatment_n == 400
            assert result.control_mean == pytest.approx(control[result.metric].mean())
            assert result.treatment_mean == pytest.approx(treatment[result.metric].mean())
            assert result.harm_detected is (result.metric == "complaints"), result
        assert control["complaints"].sum() > 0 and control["churn"].sum() > 0
        assert control["revenue"].sum() > 0  # every guardrail had data to read

    def test_watches_only_the_campaigns_guardrails(self, session: Session) -> None:
        campaign = make_campaign(session, name="Revenue only", guardrails=["revenue"])
        populate(session, campaign, plans=harmful_plans(), seed=12)
        results = evaluate_guardrails(session.connection(), campaign.id)
        assert [(r.metric, r.harm_detected) for r in results] == [("revenue", False)]
        assert results[0].level == pytest.approx(0.9)

    def test_an_arm_without_exposures_still_counts_in_the_family(self, session: Session
                                                                  ) -> None:
        campaign = make_campaign(session, name="Three arms", arms=[
            control_arm(weight=34), percent_arm("ten percent", weight=33),
            percent_arm("twenty percent", weight=33, percent_bp=2000)])
        populate(session, campaign, plans={"twenty percent": None}, seed=13)
        results = evaluate_guardrails(session.connection(), campaign.id)
        assert len(results) == 6
        assert all(r.level == pytest.approx(1 - 0.1 / 6) for r in results)
        empty = [r for r in results if r.arm == "twenty percent"]
        assert all(r.treatment_n == 0 and not r.harm_detected and r.reason for r in empty)

    def test_unknown_and_imported_campaigns(self, session: Session) -> None:
        with pytest.raises(CampaignNotFound):
            evaluate_guardrails(session.connection(), 987_654_321)
        imported = Campaign(name="Imported test", origin="imported", salt="x")
        session.add(imported)
        session.flush()
        with pytest.raises(ValueError, match="imported experiment"):
            evaluate_guardrails(session.connection(), imported.id)
