"""Score and Fieller intervals, small-sample rows, and one test per row.

Every reference here is computed another way than ``analytics.stats.intervals`` does:
the restricted maximum-likelihood estimates by numerical maximisation of the binomial
likelihood (not the closed-form cubic), intervals by scanning and bisecting the test
statistic, statsmodels where it is right (the score test at equality, the risk-ratio
score interval, Wald), exact binomial coverage, and seeded simulations.

statsmodels' score interval of a *difference* is not used as a reference: its constrained
estimate has ``count0`` where ``nobs0`` belongs in the cubic's linear coefficient
(statsmodels issue #10269), so it is off whenever the hypothesised difference is not 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.optimize import brentq, minimize_scalar
from statsmodels.stats import proportion as sm_proportion

from analytics.economics import economics_from_rows
from analytics.stats import (
    Comparison,
    CovariateStats,
    MeanStats,
    RatioStats,
    compare_means,
    compare_proportions,
    compare_ratios,
    cuped,
    fieller,
    score_interval_diff,
    score_interval_ratio,
    score_statistic_diff,
)
from analytics.stats.intervals import relative_lift

Z = float(sps.norm.isf(0.025))
#: "The interval excludes 0" and "p < alpha" may differ only at an exact tie.
TIE = 1e-12

PROPERTIES = settings(derandomize=True, deadline=None, database=None, max_examples=400,
                      suppress_health_check=[HealthCheck.too_slow])


def rate(n: int, successes: int) -> MeanStats:
    return MeanStats(n=n, sum=float(successes), sum_sq=float(successes))


# ------------------------------------------------------------- independent references


def restricted_mle(xt: int, nt: int, xc: int, nc: int, delta: float) -> tuple[float, float]:
    """(p_t, p_c) maximising the binomial likelihood subject to p_t - p_c = delta."""
    def negative_log_likelihood(pc: float) -> float:
        pt = pc + delta
        terms = ((xt, pt), (nt - xt, 1 - pt), (xc, pc), (nc - xc, 1 - pc))
        return -sum(k * math.log(p) for k, p in terms if k > 0)

    low, high = max(0.0, -delta), min(1.0, 1.0 - delta)
    tiny = 1e-15
    best = minimize_scalar(negative_log_likelihood, bounds=(low + tiny, high - tiny),
                           method="bounded", options={"xatol": 1e-13})
    return best.x + delta, best.x


def reference_score(xt: int, nt: int, xc: int, nc: int, delta: float) -> float:
    pt, pc = restricted_mle(xt, nt, xc, nc, delta)
    variance = (pt * (1 - pt) / nt + pc * (1 - pc) / nc) * (nt + nc) / (nt + nc - 1)
    return (xt / nt - xc / nc - delta) / math.sqrt(variance)


def inverted(statistic: Callable[[float], float], low: float, high: float, *,
             quantile: float = Z, points: int = 400) -> tuple[float, float]:
    """The ends of {v in [low, high] : |statistic(v)| <= quantile}, by scan and bisection."""
    grid = np.linspace(low, high, points)
    inside = [abs(statistic(v)) <= quantile for v in grid]
    first, last = inside.index(True), len(inside) - 1 - inside[::-1].index(True)

    def edge(a: float, b: float) -> float:
        return float(brentq(lambda v: abs(statistic(v)) - quantile, a, b, xtol=1e-12))

    lower = grid[0] if first == 0 else edge(grid[first - 1], grid[first])
    upper = grid[-1] if last == points - 1 else edge(grid[last], grid[last + 1])
    return float(lower), float(upper)


def fieller_pivot(numerator: float, denominator: float, var_n: float, var_d: float,
                  cov: float) -> Callable[[float], float]:
    return lambda rho: (numerator - rho * denominator) / math.sqrt(
        var_n - 2 * rho * cov + rho * rho * var_d)


# ------------------------------------------------------------------- score intervals

TABLES = [  # (successes, n) treatment, then control: small, empty cells, extremes, large
    (3, 29, 2, 3), (7, 34, 1, 34), (32, 42, 0, 14), (0, 12, 3, 10), (5, 5, 0, 5),
    (0, 5, 5, 5), (1, 1, 0, 1), (4, 7, 2, 9), (1, 2000, 0, 2000), (180, 1500, 150, 1600),
]


class TestScoreDifference:
    @pytest.mark.parametrize("table", TABLES)
    def test_statistic_matches_numerical_maximum_likelihood(self, table) -> None:
        xt, nt, xc, nc = table
        for delta in (-0.6, -0.2, 0.05, 0.3, 0.7):
            if abs(xt / nt - xc / nc - delta) < 1e-9:
                continue
            assert score_statistic_diff(xt, nt, xc, nc, delta) == pytest.approx(
                reference_score(xt, nt, xc, nc, delta), rel=1e-6, abs=1e-9), delta

    @pytest.mark.parametrize("table", TABLES)
    def test_statistic_at_equality_matches_statsmodels(self, table) -> None:
        reference = sm_proportion.score_test_proportions_2indep(*table, value=0)
        assert score_statistic_diff(*table) == pytest.approx(reference.statistic, rel=1e-12)

    @pytest.mark.parametrize("table", TABLES)
    def test_interval_inverts_the_independent_statistic(self, table) -> None:
        xt, nt, xc, nc = table
        low, high = score_interval_diff(*table, quantile=Z)
        edge = 1 - 1e-9
        expected = inverted(lambda d: reference_score(xt, nt, xc, nc, d), -edge, edge)
        expected = tuple(-1.0 if v <= -edge else 1.0 if v >= edge else v for v in expected)
        assert (low, high) == pytest.approx(expected, abs=2e-7)
        assert -1.0 <= low <= xt / nt - xc / nc <= high <= 1.0

    def test_exact_coverage_where_wald_falls_short(self) -> None:
        """Exact coverage over every outcome of 15 + 15 units, by binomial probabilities."""
        n = 15
        outcomes = range(n + 1)
        score = {(a, b): score_interval_diff(a, n, b, n, quantile=Z)
                 for a in outcomes for b in outcomes}

        def wald(a: int, b: int) -> tuple[float, float]:
            pt, pc = a / n, b / n
            half = Z * math.sqrt(pt * (1 - pt) / n + pc * (1 - pc) / n)
            return pt - pc - half, pt - pc + half

        def coverage(interval: Callable[[int, int], tuple[float, float]], pt: float,
                     pc: float) -> float:
            weights = np.outer(sps.binom.pmf(list(outcomes), n, pt),
                               sps.binom.pmf(list(outcomes), n, pc))
            return float(sum(weights[a, b] for a in outcomes for b in outcomes
                             if interval(a, b)[0] <= pt - pc <= interval(a, b)[1]))

        grid = [(pt, pc) for pt in (0.05, 0.1, 0.2, 0.3, 0.5) for pc in (0.05, 0.1, 0.3, 0.5)]
        score_coverage = [coverage(lambda a, b: score[(a, b)], *p) for p in grid]
        wald_coverage = [coverage(wald, *p) for p in grid]
        assert min(score_coverage) >= 0.93
        assert 0.94 <= float(np.mean(score_coverage)) <= 0.98
        assert min(wald_coverage) < 0.90  # why small tables do not get the Wald interval


class TestScoreRatio:
    @pytest.mark.parametrize("table", [t for t in TABLES if min(t[0], t[2]) > 0
                                       and t[0] < t[1] and t[2] < t[3]])
    def test_matches_statsmodels(self, table) -> None:
        low, high = score_interval_ratio(*table, quantile=Z)
        expected = sm_proportion.confint_proportions_2indep(*table, method="score",
                                                            compare="ratio")
        assert (low, high) == pytest.approx(tuple(map(float, expected)), rel=1e-6)

    def test_no_treatment_success_has_lower_bound_zero(self) -> None:
        low, high = score_interval_ratio(0, 12, 3, 10, quantile=Z)
        assert low == 0.0 and high is not None and high > 0

    def test_no_control_success_is_unbounded_above(self) -> None:
        low, high = score_interval_ratio(5, 12, 0, 10, quantile=Z)
        assert high is None and low > 0


# ------------------------------------------------------------------------- Fieller


class TestFieller:
    @pytest.mark.parametrize(("numerator", "denominator", "var_n", "var_d", "cov"), [
        (1.2, 1.0, 0.01, 0.02, 0.0), (30.0, 0.08, 16.0, 0.0004, 0.02),
        (-0.5, 2.0, 0.3, 0.5, -0.1), (0.02, 0.4, 0.0004, 0.01, 0.0008)])
    def test_matches_numerical_inversion(self, numerator, denominator, var_n, var_d,
                                         cov) -> None:
        interval = fieller(numerator=numerator, denominator=denominator,
                           numerator_var=var_n, denominator_var=var_d, covariance=cov,
                           quantile=Z)
        assert interval.low is not None and interval.high is not None
        estimate = numerator / denominator
        span = 50 * abs(estimate) + 50
        expected = inverted(fieller_pivot(numerator, denominator, var_n, var_d, cov),
                            estimate - span, estimate + span, points=20_001)
        assert (interval.low, interval.high) == pytest.approx(expected, rel=1e-7, abs=1e-9)

    def test_unbounded_when_the_denominator_is_not_clearly_nonzero(self) -> None:
        interval = fieller(numerator=1.0, denominator=0.1, numerator_var=0.01,
                           denominator_var=0.01, quantile=Z,
                           denominator_name="the control mean")
        assert interval.low is None and interval.high is None
        assert interval.reason is not None
        assert interval.reason.startswith("the control mean is not clearly nonzero")

    def test_relative_lift_coverage_on_small_skewed_arms(self) -> None:
        """12 + 12 lognormal units, 3,000 experiments: Fieller's interval (inverting Welch's t
        test) covers the true lift about as often as promised; the delta method does not."""
        rng = np.random.default_rng(31)
        n, experiments, true_lift = 12, 3000, 0.3
        control = rng.lognormal(0.0, 0.6, size=(experiments, n))
        treatment = rng.lognormal(math.log(1 + true_lift), 0.6, size=(experiments, n))
        covered = delta_covered = fieller_rows = 0
        for c, t in zip(control, treatment, strict=True):
            result = compare_means(MeanStats.from_values(c), MeanStats.from_values(t),
                                   nonnegative=True)
            assert result.small_sample and result.interval_method == "Welch t"
            if result.rel_lift_interval_method == "Fieller":
                fieller_rows += 1
            low, high = result.rel_lift_ci_low, result.rel_lift_ci_high
            covered += low is not None and high is not None and low <= true_lift <= high
            lift, se = t.mean() / c.mean() - 1, result.rel_lift_se
            assert se is not None
            delta_covered += abs(lift - true_lift) <= Z * se
        assert fieller_rows > 0.9 * experiments
        assert 0.935 <= covered / experiments <= 0.965
        assert delta_covered / experiments < covered / experiments - 0.01

    def test_lift_of_a_nonnegative_metric_is_never_below_minus_100_percent(self) -> None:
        lift = relative_lift(control_mean=10.0, control_var=4.0, treatment_mean=0.5,
                             treatment_var=1.0, alpha=0.05, quantile=Z, nonnegative=True)
        unbounded = relative_lift(control_mean=10.0, control_var=4.0, treatment_mean=0.5,
                                  treatment_var=1.0, alpha=0.05, quantile=Z,
                                  nonnegative=False)
        assert unbounded.ci_low is not None and unbounded.ci_low < -1
        assert lift.ci_low == -1.0 and lift.ci_high == unbounded.ci_high
        assert lift.method == "Fieller"

    def test_large_precise_samples_keep_the_delta_method(self) -> None:
        rng = np.random.default_rng(32)
        c, t = rng.lognormal(3.0, 1.0, 2500), rng.lognormal(3.05, 1.2, 1500)
        result = compare_means(MeanStats.from_values(c), MeanStats.from_values(t))
        var_c, var_t = c.var(ddof=1) / c.size, t.var(ddof=1) / t.size
        lift = t.mean() / c.mean() - 1
        se = math.sqrt(var_t / c.mean() ** 2 + t.mean() ** 2 * var_c / c.mean() ** 4)
        assert result.rel_lift_interval_method == "delta method"
        assert (result.rel_lift_ci_low, result.rel_lift_ci_high) == pytest.approx(
            (lift - Z * se, lift + Z * se), rel=1e-9)
        assert not result.small_sample and result.reason is None


# --------------------------------------------------------------- small-sample rows


class TestSmallSampleRows:
    def test_small_table_uses_the_score_test_and_says_so(self) -> None:
        result = compare_proportions(rate(12, 3), rate(15, 9))
        assert result.small_sample and result.interval_method == "Miettinen-Nurminen score"
        assert result.reason is not None and result.reason.startswith("small sample:")
        reference = sm_proportion.score_test_proportions_2indep(9, 15, 3, 12)
        assert result.p_value == pytest.approx(reference.pvalue, rel=1e-12)
        assert (result.diff_ci_low, result.diff_ci_high) == pytest.approx(
            score_interval_diff(9, 15, 3, 12, quantile=Z), abs=0)
        expected = inverted(lambda d: reference_score(9, 15, 3, 12, d), -0.999, 0.999)
        assert (result.diff_ci_low, result.diff_ci_high) == pytest.approx(expected, abs=2e-7)
        low, high = sm_proportion.confint_proportions_2indep(9, 15, 3, 12, method="score",
                                                             compare="ratio")
        assert result.rel_lift_interval_method == "Miettinen-Nurminen score (risk ratio)"
        assert (result.rel_lift_ci_low, result.rel_lift_ci_high) == pytest.approx(
            (low - 1, high - 1), rel=1e-6)

    def test_large_table_stays_wald(self) -> None:
        result = compare_proportions(rate(400, 40), rate(400, 60))
        assert not result.small_sample and result.interval_method == "Wald z"

    @pytest.mark.parametrize(("control", "treatment"), [
        (rate(5, 0), rate(5, 5)), (rate(5, 5), rate(5, 0)), (rate(40, 40), rate(3, 0)),
        (rate(3, 3), rate(40, 0)), (rate(20, 1), rate(20, 20))])
    def test_no_interval_leaves_the_possible_range(self, control, treatment) -> None:
        result = compare_proportions(control, treatment)
        assert result.small_sample
        assert result.diff_ci_low is not None and result.diff_ci_high is not None
        assert -1.0 <= result.diff_ci_low <= result.diff_ci_high <= 1.0
        assert result.rel_lift_ci_low is None or result.rel_lift_ci_low >= -1.0

    @pytest.mark.parametrize("n", [5, 29])
    def test_small_arms_of_a_mean_are_flagged(self, n: int) -> None:
        rng = np.random.default_rng(n)
        result = compare_means(MeanStats.from_values(rng.exponential(1.0, n)),
                               MeanStats.from_values(rng.exponential(1.0, 40)))
        assert result.small_sample and result.interval_method == "Welch t"
        assert result.reason is not None and f"control n={n}" in result.reason
        assert not compare_means(MeanStats.from_values(rng.exponential(1.0, 30)),
                                 MeanStats.from_values(rng.exponential(1.0, 30))).small_sample


# ----------------------------------------------------------- one test per row (property)


def assert_one_test(result: Comparison) -> None:
    """The interval excludes 0 exactly when p < alpha (and so does a lift's Fieller or
    score interval, which inverts the same test), up to an exact tie."""
    if result.p_value is None:
        return
    significant = result.p_value < result.alpha
    tie = abs(result.p_value - result.alpha) <= TIE
    scale = max(1.0, abs(result.diff or 0.0))
    for low, high, origin in (
            (result.diff_ci_low, result.diff_ci_high, 0.0),
            *([(result.rel_lift_ci_low, result.rel_lift_ci_high, 0.0)]
              if result.rel_lift_interval_method in ("Fieller",
                                                     "Miettinen-Nurminen score (risk ratio)")
              else [])):
        if low is None or high is None:
            continue
        excludes = low > origin or high < origin
        at_edge = min(abs(low - origin), abs(high - origin)) <= TIE * scale
        assert excludes == significant or tie or at_edge, result


@st.composite
def tables(draw: st.DrawFn) -> tuple[MeanStats, MeanStats]:
    nc, nt = draw(st.integers(1, 4000)), draw(st.integers(1, 4000))
    return rate(nc, draw(st.integers(0, nc))), rate(nt, draw(st.integers(0, nt)))


def mean_stats(n: int, mean: float, sd: float) -> MeanStats:
    return MeanStats(n=n, sum=n * mean, sum_sq=(n - 1) * sd * sd + n * mean * mean)


SIZES = st.integers(2, 3000)
MEANS = st.floats(-50, 200, allow_nan=False)
SDS = st.floats(0.0, 100, allow_nan=False)
ALPHAS = st.sampled_from([0.05, 0.1, 0.01])


class TestOneTestPerRow:
    @PROPERTIES
    @given(tables(), ALPHAS)
    def test_proportions(self, table: tuple[MeanStats, MeanStats], alpha: float) -> None:
        result = compare_proportions(*table, alpha=alpha)
        assert_one_test(result)
        if result.diff_ci_low is not None and result.diff_ci_high is not None:
            assert -1.0 <= result.diff_ci_low <= result.diff_ci_high <= 1.0
        assert result.rel_lift_ci_low is None or result.rel_lift_ci_low >= -1.0

    @PROPERTIES
    @given(SIZES, MEANS, SDS, SIZES, MEANS, SDS, ALPHAS, st.booleans())
    def test_means(self, nc: int, mc: float, sc: float, nt: int, mt: float, s_t: float,
                   alpha: float, nonnegative: bool) -> None:
        if nonnegative:
            mc, mt = abs(mc), abs(mt)
        result = compare_means(mean_stats(nc, mc, sc), mean_stats(nt, mt, s_t), alpha=alpha,
                               nonnegative=nonnegative)
        assert_one_test(result)
        if nonnegative:
            assert result.rel_lift_ci_low is None or result.rel_lift_ci_low >= -1.0

    @PROPERTIES
    @given(SIZES, SIZES, st.lists(st.floats(0.05, 50), min_size=8, max_size=8),
           st.floats(-0.95, 0.95), ALPHAS)
    def test_ratios(self, nc: int, nt: int, moments: list[float], rho: float,
                    alpha: float) -> None:
        def arm(n: int, mx: float, my: float, sx: float, sy: float) -> RatioStats:
            cov = rho * sx * sy
            return RatioStats(n=n, sum_x=n * mx, sum_x2=(n - 1) * sx * sx + n * mx * mx,
                              sum_y=n * my, sum_y2=(n - 1) * sy * sy + n * my * my,
                              sum_xy=(n - 1) * cov + n * mx * my)

        result = compare_ratios(arm(nc, *moments[:4]), arm(nt, *moments[4:]), alpha=alpha,
                                nonnegative=True)
        assert_one_test(result)
        assert result.rel_lift_ci_low is None or result.rel_lift_ci_low >= -1.0

    @PROPERTIES
    @given(SIZES, SIZES, st.lists(st.floats(0.05, 50), min_size=8, max_size=8),
           st.floats(-0.95, 0.95), ALPHAS)
    def test_cuped(self, nc: int, nt: int, moments: list[float], rho: float,
                   alpha: float) -> None:
        def arm(n: int, my: float, mx: float, sy: float, sx: float) -> CovariateStats:
            cov = rho * sx * sy
            return CovariateStats(n=n, sum_y=n * my, sum_y2=(n - 1) * sy * sy + n * my * my,
                                  sum_x=n * mx, sum_x2=(n - 1) * sx * sx + n * mx * mx,
                                  sum_xy=(n - 1) * cov + n * mx * my)

        result = cuped(arm(nc, *moments[:4]), arm(nt, *moments[4:]), alpha=alpha)
        assert result.comparison.interval_method == "Welch t"
        assert_one_test(result.comparison)


# ------------------------------------------------------------------------ economics


def economics_row(arm: str, is_control: bool, adoption: np.ndarray, incentive: np.ndarray,
                  net_value: np.ndarray) -> dict[str, object]:
    """One arm's aggregate row as analytics.queries.arm_statistics returns it."""
    zeros = np.zeros_like(adoption)
    row: dict[str, object] = {"arm": arm, "is_control": is_control, "n": adoption.size,
                              "incentive_adoption_cross": float(incentive @ adoption),
                              "net_value_incentive_cross": float(net_value @ incentive),
                              "margin_imputed_sum": 0}
    for name, values in (("adoption", adoption), ("cost_to_serve", zeros),
                         ("revenue", zeros), ("margin", zeros),
                         ("incentive_cost", incentive), ("net_value", net_value)):
        row[f"{name}_sum"], row[f"{name}_sum_sq"] = float(values.sum()), float(values @ values)
    return row


class TestEconomicsRatios:
    """Cost per incremental migration and ROI: Fieller's interval on raw rows."""

    @staticmethod
    def arms(paid_share: float) -> dict[str, np.ndarray]:
        """300 customers per arm; ``paid_share`` of the adopters got a large incentive."""
        rng = np.random.default_rng(41)
        n = 300
        adopted = (rng.random(n) < 0.22).astype(float)
        incentive = np.where(rng.random(n) < paid_share, 4000.0, 0.0) * adopted
        return {"control": (rng.random(n) < 0.10).astype(float), "adopted": adopted,
                "incentive": incentive, "net_control": rng.normal(500, 300, n),
                "net": rng.normal(800, 300, n) - incentive}

    def results(self, arms: dict[str, np.ndarray]) -> dict[str, object]:
        n = arms["control"].size
        rows = [economics_row("control", True, arms["control"], np.zeros(n),
                              arms["net_control"]),
                economics_row("coupon", False, arms["adopted"], arms["incentive"],
                              arms["net"])]
        return {r.metric: r for r in economics_from_rows(rows)}

    def test_cost_per_migration_is_never_below_zero(self) -> None:
        arms = self.arms(0.02)  # a handful of paid customers: the mean cost is imprecise
        adopted, control, incentive = arms["adopted"], arms["control"], arms["incentive"]
        n = adopted.size
        cost = self.results(arms)["incentive_cost_per_incremental_migration"]
        lift = adopted.mean() - control.mean()
        var_lift = adopted.var() / n + control.var() / n  # Wald: ddof 0
        cov = np.cov(incentive, adopted, ddof=1)[0, 1] / n
        pivot = fieller_pivot(incentive.mean(), lift, incentive.var(ddof=1) / n, var_lift, cov)
        estimate = incentive.mean() / lift
        _, high = inverted(pivot, 0.0, 20 * estimate, points=20_001)
        uncut_low = float(brentq(lambda r: pivot(r) - Z, -20 * estimate, estimate))
        assert cost.estimate == pytest.approx(estimate, rel=1e-12)
        assert uncut_low < 0  # the uncut interval would promise a negative cost
        assert cost.ci_low == 0.0
        assert cost.ci_high == pytest.approx(high, rel=1e-7)
        assert "Fieller" in cost.method

    def test_roi_matches_numerical_inversion(self) -> None:
        arms = self.arms(0.15)
        net, net_control, incentive = arms["net"], arms["net_control"], arms["incentive"]
        n = net.size
        roi = self.results(arms)["roi"]
        lift = net.mean() - net_control.mean()
        pivot = fieller_pivot(lift, incentive.mean(),
                              net.var(ddof=1) / n + net_control.var(ddof=1) / n,
                              incentive.var(ddof=1) / n, np.cov(net, incentive)[0, 1] / n)
        estimate = lift / incentive.mean()
        low, high = inverted(pivot, estimate - 20 * abs(estimate), estimate + 20 * abs(estimate),
                             points=20_001)
        assert roi.estimate == pytest.approx(estimate, rel=1e-12)
        assert (roi.ci_low, roi.ci_high) == pytest.approx((low, high), rel=1e-7)
        # The mean cost is imprecise, so the interval is visibly asymmetric.
        assert abs((roi.ci_high - estimate) - (estimate - roi.ci_low)) > 0.05 * (high - low)
