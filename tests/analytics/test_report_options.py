"""Power after the fact, money caps and the CUPED pre-period, against independent engines.

Detectable effects are checked with statsmodels' power functions; capped statistics with
numpy / pandas / scipy / statsmodels computing the same from the raw per-customer values
(:func:`tests.analytics.test_queries.independent`), on the demo world's ended campaign.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from sqlalchemy import Engine, update
from sqlalchemy.engine import Connection
from sqlmodel import Session, select
from statsmodels.stats.power import NormalIndPower, normal_power
from statsmodels.stats.proportion import proportion_effectsize

from analytics.queries import (
    CapRule,
    arm_statistics_and_adoption,
    goal_window,
    parse_cap,
    positive_percentile,
)
from analytics.report import ReportOptionError, build_report
from analytics.stats import (
    MeanStats,
    RatioStats,
    compare_proportions,
    compare_ratios,
    detectable_effect,
    mde_from_se,
)
from campaigns.models import Arm, MigrationGoal
from seeds.demo import DemoSummary
from tests.analytics.test_queries import independent
from tests.analytics.test_report import NOW, rolled_back_connection, savepoint_session, seed_demo

Z_SUM = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)


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


@pytest.fixture(scope="module")
def raw(world: Connection, demo: DemoSummary) -> pd.DataFrame:
    """The ended campaign's per-customer values, with arm names, from the raw rows."""
    with savepoint_session(world) as session:
        frame = independent(session, demo.ended_campaign_id)
        names = dict(session.exec(select(Arm.id, Arm.name).where(
            Arm.campaign_id == demo.ended_campaign_id)).all())
    return frame.assign(arm=frame.arm_id.map(names))


def arm_values(raw: pd.DataFrame, arm: str, column: str) -> np.ndarray:
    return raw.loc[raw.arm == arm, column].to_numpy(dtype=float)


# --------------------------------------------------------------------------- power


class TestDetectableEffect:
    @pytest.mark.parametrize(("control", "treatment", "n_control", "n_treatment"), [
        (40, 60, 400, 420), (3, 9, 90, 60), (500, 530, 5_000, 5_000)])
    def test_proportion_has_exactly_80_percent_power_in_statsmodels(
            self, control, treatment, n_control, n_treatment) -> None:
        comparison = compare_proportions(MeanStats(n_control, control, control),
                                         MeanStats(n_treatment, treatment, treatment))
        effect = detectable_effect(comparison)
        baseline = control / n_control
        assert effect.baseline == pytest.approx(baseline)
        h = proportion_effectsize(baseline + effect.mde, baseline)
        power = NormalIndPower().power(h, n_control, 0.05, ratio=n_treatment / n_control,
                                       alternative="two-sided")
        assert power == pytest.approx(0.8, abs=1e-9)
        # statsmodels' own solver, at its looser tolerance
        solved = NormalIndPower().solve_power(None, nobs1=n_control, alpha=0.05, power=0.8,
                                              ratio=n_treatment / n_control)
        assert h == pytest.approx(solved, rel=1e-4)
        assert effect.mde_relative == pytest.approx(effect.mde / baseline)

    def test_ratio_from_the_delta_method_standard_error(self) -> None:
        rng = np.random.default_rng(27)
        arms = []
        for n, rate in ((800, 0.30), (900, 0.34)):
            y = rng.poisson(3.0, n) + 1
            x = rng.binomial(y, rate)
            arms.append((x.astype(float), y.astype(float)))
        stats = [RatioStats(n=len(x), sum_x=x.sum(), sum_x2=(x * x).sum(), sum_y=y.sum(),
                            sum_y2=(y * y).sum(), sum_xy=(x * y).sum()) for x, y in arms]
        effect = detectable_effect(compare_ratios(*stats))
        # delta-method variance of each arm's ratio of means, computed directly
        variances = []
        for x, y in arms:
            r = x.mean() / y.mean()
            cov = np.cov(x, y, ddof=1)
            variances.append((cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1])
                             / (len(x) * y.mean() ** 2))
        se = float(np.sqrt(sum(variances)))
        assert effect.mde == pytest.approx(Z_SUM * se, rel=1e-6)
        # the power of a two-sided z test at that difference, in statsmodels
        assert normal_power(effect.mde, 1, 0.05, sigma=se) == pytest.approx(0.8, abs=1e-5)

    def test_mde_from_se_is_linear_and_checked(self) -> None:
        assert mde_from_se(0.01) == pytest.approx(Z_SUM * 0.01, rel=1e-12)
        assert mde_from_se(0.01, alpha=0.1, power=0.9) == pytest.approx(
            (sps.norm.ppf(0.95) + sps.norm.ppf(0.9)) * 0.01, rel=1e-12)
        with pytest.raises(ValueError, match="power"):
            mde_from_se(0.01, power=1.0)

    def test_an_arm_too_small_has_no_mde_and_says_why(self) -> None:
        comparison = compare_proportions(MeanStats(1, 0, 0), MeanStats(1, 1, 1))
        effect = detectable_effect(comparison)
        assert effect.mde is None and "at least 2 units" in (effect.reason or "")


class TestReportPower:
    def test_every_arm_and_primary_metric_with_its_banner(self, session: Session,
                                                          demo: DemoSummary) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        arms = [arm.name for arm in report.arms if not arm.is_control]
        assert {(row.arm, row.metric) for row in report.power} == {
            (arm, metric) for arm in arms for metric in ("adoption", "target_share")}
        target = report.campaign.target_uplift
        assert target == pytest.approx(0.05)  # the demo goal's +5 points
        for row in report.power:
            effect = row.effect
            if row.metric == "adoption":
                h = proportion_effectsize(effect.baseline + effect.mde, effect.baseline)
                assert NormalIndPower().power(
                    h, effect.n_control, 0.05, ratio=effect.n_treatment / effect.n_control
                ) == pytest.approx(0.8, abs=1e-9)
                assert row.target == target
                assert row.underpowered == (effect.mde > target)
            else:
                result = next(r for r in report.results
                              if r.arm == row.arm and r.metric == "target_share")
                assert effect.mde == pytest.approx(Z_SUM * result.comparison.diff_se,
                                                   rel=1e-12)
                assert row.target is None and not row.underpowered
        banners = [w for w in report.warnings if w.startswith("UNDERPOWERED")]
        assert len(banners) == sum(row.underpowered for row in report.power) > 0
        assert any("Power after the fact (adoption, target_share)" in m
                   for m in report.methods)

    def test_no_banner_when_the_goal_asks_for_a_large_effect(self, session: Session,
                                                             demo: DemoSummary) -> None:
        session.execute(update(MigrationGoal).values(target_uplift=Decimal("0.9")))
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        assert report.power and not any(row.underpowered for row in report.power)
        assert not any(w.startswith("UNDERPOWERED") for w in report.warnings)

    def test_tidy_rows(self, session: Session, demo: DemoSummary) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW)
        tidy = {(r["arm"], r["metric"], r["statistic"]): r["value"] for r in report.records()}
        for row in report.power:
            assert tidy[(row.arm, row.metric, "mde")] == row.effect.mde
            assert tidy[(row.arm, row.metric, "mde_power")] == 0.8


# --------------------------------------------------------------------------- caps


class TestParseCap:
    @pytest.mark.parametrize(("text", "rule"), [
        ("99p", CapRule(percentile=99.0)), (" 99.5P ", CapRule(percentile=99.5)),
        ("500.00", CapRule(amount=Decimal("500.00"))), ("12", CapRule(amount=Decimal(12)))])
    def test_valid(self, text: str, rule: CapRule) -> None:
        assert parse_cap(text) == rule

    @pytest.mark.parametrize(("text", "message"), [
        ("100p", "below 100p"), ("0p", "above 0p"), ("0", "above 0"), ("-5", "cannot read"),
        ("lots", "cannot read"), ("99%", "cannot read"), ("", "cannot read")])
    def test_invalid(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_cap(text)


class TestCaps:
    def test_percentile_of_the_positive_values_matches_numpy(
            self, session: Session, demo: DemoSummary, raw: pd.DataFrame) -> None:
        window = goal_window(session.connection(), demo.ended_campaign_id)
        for metric in ("revenue", "cost_to_serve", "incentive_cost"):
            positive = raw[metric][raw[metric] > 0].to_numpy(dtype=float)
            assert len(positive) > 20, metric
            for percentile in (50.0, 90.0, 99.0, 99.9):
                cap, n = positive_percentile(session.connection(), window, metric, percentile)
                assert n == len(positive)
                assert cap == pytest.approx(np.percentile(positive, percentile), rel=1e-12)
        # Why among the positive values: most customers buy nothing, so the plain median
        # (and a low percentile) of revenue is 0, a cap that would erase all revenue.
        assert np.percentile(raw.revenue, 50) == 0

    def test_capped_comparisons_match_scipy_and_statsmodels(
            self, session: Session, demo: DemoSummary, raw: pd.DataFrame) -> None:
        caps = {"revenue": parse_cap("90p"), "cost_to_serve": parse_cap("95p")}
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW,
                              caps=caps, segment="value_tier")
        plain = build_report(session.connection(), demo.ended_campaign_id, now=NOW,
                             segment="value_tier")
        applied = {cap.metric: cap for cap in report.caps}
        revenue_cap = np.percentile(raw.revenue[raw.revenue > 0], 90)
        cost_cap = np.percentile(raw.cost_to_serve[raw.cost_to_serve > 0], 95)
        assert applied["revenue"].cap_minor == pytest.approx(revenue_cap, rel=1e-12)
        assert applied["cost_to_serve"].cap_minor == pytest.approx(cost_cap, rel=1e-12)
        control = report.control.name
        for metric, cap in (("revenue", revenue_cap), ("cost_to_serve", cost_cap)):
            counts = applied[metric].capped_by_arm
            assert set(counts) == set(raw.arm)
            for arm, capped in counts.items():
                assert capped == int((arm_values(raw, arm, metric) > cap).sum())
            assert sum(counts.values()) > 0
        for result in report.results:
            if result.metric not in ("revenue", "cost_to_serve_cuped"):
                continue
            c = result.comparison
            if result.metric == "revenue":
                y_c = np.minimum(arm_values(raw, control, "revenue"), revenue_cap)
                y_t = np.minimum(arm_values(raw, result.arm, "revenue"), revenue_cap)
                welch = sps.ttest_ind(y_t, y_c, equal_var=False)
                assert c.control_mean == pytest.approx(y_c.mean(), rel=1e-12)
                assert c.diff == pytest.approx(y_t.mean() - y_c.mean(), rel=1e-9)
                assert c.p_value == pytest.approx(welch.pvalue, rel=1e-9)
                continue
            # CUPED on capped cost, its pre-period value capped at the same value: the
            # adjusted difference is the OLS treatment coefficient of y ~ 1 + t + x.
            y = [np.minimum(arm_values(raw, arm, "cost_to_serve"), cost_cap)
                 for arm in (control, result.arm)]
            x = [np.minimum(arm_values(raw, arm, "cost_to_serve_pre"), cost_cap)
                 for arm in (control, result.arm)]
            design = np.column_stack([np.ones(len(y[0]) + len(y[1])),
                                      np.r_[np.zeros(len(y[0])), np.ones(len(y[1]))],
                                      np.r_[x[0], x[1]]])
            ols = sm.OLS(np.r_[y[0], y[1]], design).fit()
            assert c.diff == pytest.approx(ols.params[1], rel=1e-9)
            pairs = list(zip(x, y, strict=True))
            theta = (sum(((xa - xa.mean()) * (ya - ya.mean())).sum() for xa, ya in pairs)
                     / sum(((xa - xa.mean()) ** 2).sum() for xa in x))
            mean_x = np.r_[x[0], x[1]].mean()
            adjusted = [ya - theta * (xa - mean_x) for xa, ya in zip(x, y, strict=True)]
            welch = sps.ttest_ind(adjusted[1], adjusted[0], equal_var=False)
            assert c.p_value == pytest.approx(welch.pvalue, rel=1e-9)
        # Capping changed the revenue comparison, left economics and guardrails alone.
        before = next(r for r in plain.results if r.metric == "revenue")
        after = next(r for r in report.results if r.metric == "revenue")
        assert before.comparison.treatment_mean != after.comparison.treatment_mean
        assert report.economics == plain.economics
        assert report.guardrails == plain.guardrails
        # Segment rows compare capped values too: they add up to the whole.
        assert [s.metric for s in report.segments] == [s.metric for s in plain.segments]
        text = " ".join(report.methods)
        assert "Outliers: per-customer values above a cap are replaced by the cap" in text
        assert "the 90th percentile of the" in text and "same value" in text

    def test_fixed_amount_in_the_campaigns_currency(self, session: Session,
                                                    demo: DemoSummary,
                                                    raw: pd.DataFrame) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW,
                              caps={"incentive_cost": parse_cap("5.00")})
        [cap] = report.caps
        assert report.campaign.currency == "EUR" and cap.cap_minor == 500
        total = sum(cap.capped_by_arm.values())
        assert total == int((raw.incentive_cost > 500).sum()) > 0
        for result in report.results:
            if result.metric == "incentive_cost":
                y = np.minimum(arm_values(raw, result.arm, "incentive_cost"), 500)
                assert result.comparison.treatment_mean == pytest.approx(y.mean(), rel=1e-12)

    def test_cuped_pre_period_length(self, session: Session, demo: DemoSummary) -> None:
        connection = session.connection()
        rows, _ = arm_statistics_and_adoption(connection, demo.ended_campaign_id,
                                              pre_period_days=7)
        short = independent(session, demo.ended_campaign_id, pre_days=7)
        for row in rows:
            group = short[short.arm_id == row["arm_id"]]
            assert row["cost_to_serve_pre_sum"] == group.cost_to_serve_pre.sum()
            assert row["cost_to_serve_cross"] == (group.cost_to_serve
                                                  * group.cost_to_serve_pre).sum()
            assert row["adoption_pre_sum"] == group.adoption_pre.sum()
        full = build_report(connection, demo.ended_campaign_id, now=NOW)
        week = build_report(connection, demo.ended_campaign_id, now=NOW, cuped_days=7)
        assert week.pre_period_days == 7
        assert any("(7 days before each customer's first exposure)" in m for m in week.methods)
        assert any("(30 days before each customer's first exposure)" in m for m in full.methods)
        cuped = [(r.comparison.diff, w.comparison.diff) for r, w in
                 zip(full.results, week.results, strict=True) if r.metric.endswith("_cuped")]
        assert cuped and all(a != b for a, b in cuped)

    def test_bad_options_name_themselves(self, session: Session, demo: DemoSummary) -> None:
        connection = session.connection()
        with pytest.raises(ReportOptionError, match="cuped_days: the CUPED pre-period") as error:
            build_report(connection, demo.ended_campaign_id, cuped_days=0)
        assert error.value.option == "cuped_days"
        with pytest.raises(ReportOptionError) as error:
            build_report(connection, demo.ended_campaign_id,
                         caps={"complaints": parse_cap("99p")})
        assert error.value.option == "cap_complaints"
