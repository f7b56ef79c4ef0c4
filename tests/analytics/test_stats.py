"""The statistics core against independent computations on raw rows.

Every reference number here comes from something other than ``analytics.stats``:
scipy or statsmodels called directly on raw arrays, a hand formula on those
arrays, an OLS fit, a percentile bootstrap, or a seeded simulation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from analytics.stats import (
    SMALLEST_P_VALUE,
    Comparison,
    CovariateStats,
    CupedResult,
    MeanStats,
    RatioStats,
    SequentialResult,
    SrmResult,
    compare_means,
    compare_proportions,
    compare_ratios,
    cuped,
    holm,
    minimum_detectable_effect,
    required_sample_size,
    sequential_rho,
    sequential_test,
    srm_check,
)

CLOSED_FORM_TOLERANCE = 1e-6
# (imported under another name: pytest would collect a module-level test_* function)
wald_test = functools.partial(sm_proportion.test_proportions_2indep, method="wald")
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_RELATIVE_TOLERANCE = 0.10
Z_975 = sps.norm.isf(0.025)


# ---------------------------------------------------------------------- test helpers


def bootstrap_interval(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    control_rows: np.ndarray,
    treatment_rows: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    alpha: float = 0.05,
    seed: int = 7,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a two-arm statistic, each arm resampled on its own.

    ``*_rows`` are (n, k) arrays, one row per unit; ``statistic`` receives the
    column means of each resample as (resamples, k) arrays, control first.
    """
    rng = np.random.default_rng(seed)

    def resampled_means(rows: np.ndarray) -> np.ndarray:
        means = np.empty((resamples, rows.shape[1]))
        for start in range(0, resamples, 500):
            stop = min(start + 500, resamples)
            picks = rng.integers(0, rows.shape[0], size=(stop - start, rows.shape[0]))
            means[start:stop] = rows[picks].mean(axis=1)
        return means

    values = statistic(resampled_means(control_rows), resampled_means(treatment_rows))
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def half_width(low: float | None, high: float | None) -> float:
    assert low is not None and high is not None
    return (high - low) / 2


def float_fields(result: object) -> list[tuple[str, object]]:
    """Every field of a result dataclass, nested results flattened."""
    fields: list[tuple[str, object]] = []
    for field in dataclasses.fields(result):  # type: ignore[arg-type]
        value = getattr(result, field.name)
        if dataclasses.is_dataclass(value):
            fields += [(f"{field.name}.{n}", v) for n, v in float_fields(value)]
        else:
            fields.append((field.name, value))
    return fields


def assert_finite_or_none(result: object) -> None:
    for name, value in float_fields(result):
        if isinstance(value, float):
            assert math.isfinite(value), f"{name} is {value}"


def binary_arm(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return (rng.random(n) < rate).astype(float)


# ---------------------------------------------------------------------------- inputs


class TestMeanStats:
    def test_moments_match_numpy(self) -> None:
        values = np.random.default_rng(1).lognormal(3.0, 1.0, size=5000)
        stats = MeanStats.from_values(values)
        assert stats.n == 5000
        assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
        assert stats.variance == pytest.approx(values.var(ddof=1), rel=1e-9)

    def test_constant_values_have_exactly_zero_variance(self) -> None:
        assert MeanStats.from_values([3.7] * 1001).variance == 0.0

    def test_undefined_moments_are_none(self) -> None:
        assert MeanStats(n=0, sum=0.0, sum_sq=0.0).mean is None
        assert MeanStats.from_values([2.0]).variance is None

    def test_negative_count_rejected(self) -> None:
        with pytest.raises(ValueError):
            MeanStats(n=-1, sum=0.0, sum_sq=0.0)


class TestRatioStats:
    def test_variance_matches_linearised_residuals(self) -> None:
        rng = np.random.default_rng(2)
        y = rng.poisson(4.0, size=3000) + 1.0
        x = rng.binomial(y.astype(int), 0.3).astype(float)
        stats = RatioStats.from_values(x=x, y=y)
        ratio = x.sum() / y.sum()
        # Independent form of the delta method: the variance of the influence values.
        influence = (x - ratio * y) / y.mean()
        assert stats.ratio == pytest.approx(ratio, rel=1e-12)
        assert stats.ratio_variance == pytest.approx(influence.var(ddof=1) / y.size, rel=1e-9)


# ----------------------------------------------------------------------- comparisons


class TestCompareProportions:
    @pytest.fixture
    def arms(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(3)
        return binary_arm(rng, 4000, 0.12), binary_arm(rng, 3500, 0.14)

    @pytest.mark.parametrize("alpha", [0.05, 0.10])
    def test_wald_test_and_interval_match_statsmodels_on_rows(
        self, arms: tuple[np.ndarray, np.ndarray], alpha: float
    ) -> None:
        control, treatment = arms
        result = compare_proportions(
            MeanStats.from_values(control), MeanStats.from_values(treatment), alpha=alpha
        )
        counts = (treatment.sum(), treatment.size, control.sum(), control.size)
        reference = wald_test(*counts, compare="diff")
        low, high = confint_proportions_2indep(*counts, method="wald", compare="diff",
                                               alpha=alpha)
        assert result.statistic == pytest.approx(reference.statistic, abs=CLOSED_FORM_TOLERANCE)
        assert result.p_value == pytest.approx(reference.pvalue, abs=CLOSED_FORM_TOLERANCE)
        assert result.diff_ci_low == pytest.approx(low, abs=CLOSED_FORM_TOLERANCE)
        assert result.diff_ci_high == pytest.approx(high, abs=CLOSED_FORM_TOLERANCE)
        assert result.diff == pytest.approx(treatment.mean() - control.mean(), abs=1e-12)
        assert result.interval_method == "Wald z" and not result.small_sample
        assert result.reason is None

    @pytest.mark.parametrize("alpha", [0.05, 0.10])
    def test_interval_is_unpooled_wald(
        self, arms: tuple[np.ndarray, np.ndarray], alpha: float
    ) -> None:
        control, treatment = arms
        result = compare_proportions(
            MeanStats.from_values(control), MeanStats.from_values(treatment), alpha=alpha
        )
        diff = treatment.mean() - control.mean()
        se = math.sqrt(control.var() / control.size + treatment.var() / treatment.size)
        z = sps.norm.ppf(1 - alpha / 2)
        assert result.diff_se == pytest.approx(se, rel=1e-12)
        assert result.statistic == pytest.approx(diff / se, rel=1e-12)
        assert result.diff_ci_low == pytest.approx(diff - z * se, abs=CLOSED_FORM_TOLERANCE)
        assert result.diff_ci_high == pytest.approx(diff + z * se, abs=CLOSED_FORM_TOLERANCE)

    def test_the_pooled_test_beside_the_wald_interval_no_longer_contradicts_it(self) -> None:
        """8.7% of 3,000 against 5.0% of 200: the pooled z test said p = 0.069 while the
        Wald interval excluded 0; one test per row makes both say "significant"."""
        control = MeanStats(n=3000, sum=261.0, sum_sq=261.0)
        treatment = MeanStats(n=200, sum=10.0, sum_sq=10.0)
        _, pooled_p = proportions_ztest([10, 261], [200, 3000])
        _, high = confint_proportions_2indep(10, 200, 261, 3000, method="wald")
        assert pooled_p > 0.05 and high < 0  # the old pair disagreed
        result = compare_proportions(control, treatment)
        assert not result.small_sample
        assert result.diff_ci_high == pytest.approx(high, abs=1e-12)
        assert result.p_value == pytest.approx(
            wald_test(10, 200, 261, 3000).pvalue, rel=1e-9)
        assert result.p_value < 0.05

    def test_relative_lift_interval_matches_bootstrap(
        self, arms: tuple[np.ndarray, np.ndarray]
    ) -> None:
        control, treatment = arms
        result = compare_proportions(
            MeanStats.from_values(control), MeanStats.from_values(treatment)
        )
        assert result.rel_lift == pytest.approx(treatment.mean() / control.mean() - 1, rel=1e-12)
        low, high = bootstrap_interval(
            lambda c, t: t[:, 0] / c[:, 0] - 1, control[:, None], treatment[:, None]
        )
        assert half_width(result.rel_lift_ci_low, result.rel_lift_ci_high) == pytest.approx(
            half_width(low, high), rel=BOOTSTRAP_RELATIVE_TOLERANCE
        )

    def test_tiny_p_value_keeps_its_magnitude(self) -> None:
        control = MeanStats(n=10_000, sum=1000.0, sum_sq=1000.0)
        treatment = MeanStats(n=10_000, sum=3000.0, sum_sq=3000.0)
        result = compare_proportions(control, treatment)
        reference = wald_test(3000, 10_000, 1000, 10_000).pvalue
        assert 0 < reference < 1e-200
        assert result.p_value == pytest.approx(reference, rel=1e-9)
        assert not result.p_value_floored


class TestCompareMeans:
    @pytest.fixture
    def arms(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(4)
        return rng.lognormal(3.0, 1.0, size=2500), rng.lognormal(3.05, 1.2, size=1500)

    def test_matches_scipy_welch_on_rows(self, arms: tuple[np.ndarray, np.ndarray]) -> None:
        control, treatment = arms
        result = compare_means(MeanStats.from_values(control), MeanStats.from_values(treatment))
        reference = sps.ttest_ind(treatment, control, equal_var=False)
        ci = reference.confidence_interval(0.95)
        assert result.statistic == pytest.approx(reference.statistic, abs=CLOSED_FORM_TOLERANCE)
        assert result.p_value == pytest.approx(reference.pvalue, abs=CLOSED_FORM_TOLERANCE)
        assert result.df == pytest.approx(reference.df, abs=CLOSED_FORM_TOLERANCE)
        assert result.diff_ci_low == pytest.approx(ci.low, abs=CLOSED_FORM_TOLERANCE)
        assert result.diff_ci_high == pytest.approx(ci.high, abs=CLOSED_FORM_TOLERANCE)
        assert result.reason is None

    def test_relative_lift_interval_matches_bootstrap(
        self, arms: tuple[np.ndarray, np.ndarray]
    ) -> None:
        control, treatment = arms
        result = compare_means(MeanStats.from_values(control), MeanStats.from_values(treatment))
        low, high = bootstrap_interval(
            lambda c, t: t[:, 0] / c[:, 0] - 1, control[:, None], treatment[:, None]
        )
        assert half_width(result.rel_lift_ci_low, result.rel_lift_ci_high) == pytest.approx(
            half_width(low, high), rel=BOOTSTRAP_RELATIVE_TOLERANCE
        )

    def test_small_p_value_matches_scipy(self) -> None:
        rng = np.random.default_rng(5)
        control, treatment = rng.normal(0, 1, 2000), rng.normal(1.2, 1, 2000)
        result = compare_means(MeanStats.from_values(control), MeanStats.from_values(treatment))
        reference = sps.ttest_ind(treatment, control, equal_var=False).pvalue
        assert 0 < reference < 1e-100
        assert result.p_value == pytest.approx(reference, rel=1e-6)

    def test_huge_effect_p_value_is_tiny_but_positive(self) -> None:
        rng = np.random.default_rng(6)
        control = MeanStats.from_values(rng.normal(0, 0.1, 1000))
        treatment = MeanStats.from_values(rng.normal(1, 0.1, 1000))
        result = compare_means(control, treatment)
        assert result.p_value is not None
        assert 0 < result.p_value < 1e-300
        assert result.p_value_floored
        assert result.p_value == SMALLEST_P_VALUE


class TestCompareRatios:
    @pytest.fixture
    def arms(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2) rows of (target-channel interactions, all interactions) per customer."""
        rng = np.random.default_rng(8)

        def arm(n: int, share: float) -> np.ndarray:
            y = rng.poisson(3.0, size=n) + 1
            x = rng.binomial(y, rng.beta(share * 4, (1 - share) * 4, size=n))
            return np.column_stack([x, y]).astype(float)

        return arm(3000, 0.30), arm(3000, 0.33)

    @staticmethod
    def ratio_stats(rows: np.ndarray) -> RatioStats:
        return RatioStats.from_values(x=rows[:, 0], y=rows[:, 1])

    def test_matches_linearised_z_test(self, arms: tuple[np.ndarray, np.ndarray]) -> None:
        control, treatment = arms

        def ratio_and_variance(rows: np.ndarray) -> tuple[float, float]:
            x, y = rows[:, 0], rows[:, 1]
            ratio = x.sum() / y.sum()
            return ratio, ((x - ratio * y) / y.mean()).var(ddof=1) / len(rows)

        (rc, vc), (rt, vt) = ratio_and_variance(control), ratio_and_variance(treatment)
        z = (rt - rc) / math.sqrt(vc + vt)
        result = compare_ratios(self.ratio_stats(control), self.ratio_stats(treatment))
        assert result.diff == pytest.approx(rt - rc, abs=1e-12)
        assert result.statistic == pytest.approx(z, abs=CLOSED_FORM_TOLERANCE)
        assert result.p_value == pytest.approx(2 * sps.norm.sf(abs(z)), abs=CLOSED_FORM_TOLERANCE)
        assert result.diff_ci_low == pytest.approx(
            rt - rc - Z_975 * math.sqrt(vc + vt), abs=CLOSED_FORM_TOLERANCE
        )

    def test_intervals_match_bootstrap(self, arms: tuple[np.ndarray, np.ndarray]) -> None:
        control, treatment = arms
        result = compare_ratios(self.ratio_stats(control), self.ratio_stats(treatment))
        diff_low, diff_high = bootstrap_interval(
            lambda c, t: t[:, 0] / t[:, 1] - c[:, 0] / c[:, 1], control, treatment
        )
        lift_low, lift_high = bootstrap_interval(
            lambda c, t: (t[:, 0] / t[:, 1]) / (c[:, 0] / c[:, 1]) - 1, control, treatment
        )
        assert half_width(result.diff_ci_low, result.diff_ci_high) == pytest.approx(
            half_width(diff_low, diff_high), rel=BOOTSTRAP_RELATIVE_TOLERANCE
        )
        assert half_width(result.rel_lift_ci_low, result.rel_lift_ci_high) == pytest.approx(
            half_width(lift_low, lift_high), rel=BOOTSTRAP_RELATIVE_TOLERANCE
        )


class TestCuped:
    @pytest.fixture
    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y, x, treated) for 2 x 2000 customers; x is the same metric before exposure."""
        rng = np.random.default_rng(9)
        treated = np.repeat([0.0, 1.0], [2200, 1800])
        x = rng.gamma(2.0, 10.0, size=treated.size)
        y = 5 + 0.8 * x + 1.5 * treated + rng.normal(0, 8, size=treated.size)
        return y, x, treated

    @staticmethod
    def result(rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> CupedResult:
        y, x, treated = rows
        control, treatment = treated == 0, treated == 1
        return cuped(
            CovariateStats.from_values(y=y[control], x=x[control]),
            CovariateStats.from_values(y=y[treatment], x=x[treatment]),
        )

    def test_difference_equals_ols_treatment_coefficient(
        self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        y, x, treated = rows
        design = sm.add_constant(np.column_stack([treated, x - x.mean()]))
        fit = sm.OLS(y, design).fit()
        result = self.result(rows)
        assert result.comparison.diff == pytest.approx(fit.params[1], abs=CLOSED_FORM_TOLERANCE)
        assert result.theta == pytest.approx(fit.params[2], abs=CLOSED_FORM_TOLERANCE)

    def test_matches_welch_on_adjusted_rows(
        self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        y, x, treated = rows
        theta = sm.OLS(y, sm.add_constant(np.column_stack([treated, x]))).fit().params[2]
        adjusted = y - theta * (x - x.mean())
        reference = sps.ttest_ind(adjusted[treated == 1], adjusted[treated == 0], equal_var=False)
        ci = reference.confidence_interval(0.95)
        comparison = self.result(rows).comparison
        assert comparison.control_mean == pytest.approx(adjusted[treated == 0].mean(), rel=1e-9)
        assert comparison.statistic == pytest.approx(reference.statistic, abs=CLOSED_FORM_TOLERANCE)
        assert comparison.p_value == pytest.approx(reference.pvalue, abs=CLOSED_FORM_TOLERANCE)
        assert comparison.diff_ci_low == pytest.approx(ci.low, abs=CLOSED_FORM_TOLERANCE)
        assert comparison.diff_ci_high == pytest.approx(ci.high, abs=CLOSED_FORM_TOLERANCE)

    def test_variance_reduction_is_squared_correlation(
        self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        y, x, treated = rows
        result = self.result(rows)
        within_x, within_y = x.copy(), y.copy()
        for arm in (0, 1):
            mask = treated == arm
            within_x[mask] -= x[mask].mean()
            within_y[mask] -= y[mask].mean()
        within_corr = np.corrcoef(within_x, within_y)[0, 1]
        assert result.variance_reduction == pytest.approx(within_corr**2, abs=1e-9)
        assert result.variance_reduction == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, abs=0.02)
        assert result.variance_reduction is not None and result.variance_reduction > 0.5

    def test_narrows_the_interval_of_the_unadjusted_comparison(
        self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        y, _, treated = rows
        unadjusted = sps.ttest_ind(y[treated == 1], y[treated == 0], equal_var=False)
        ci = unadjusted.confidence_interval(0.95)
        comparison = self.result(rows).comparison
        assert half_width(comparison.diff_ci_low, comparison.diff_ci_high) < 0.6 * half_width(
            ci.low, ci.high
        )

    def test_constant_covariate_leaves_the_comparison_unadjusted(self) -> None:
        rng = np.random.default_rng(10)
        control = CovariateStats.from_values(y=rng.normal(0, 1, 500), x=np.full(500, 2.0))
        treatment = CovariateStats.from_values(y=rng.normal(0.2, 1, 500), x=np.full(500, 2.0))
        result = cuped(control, treatment)
        plain = compare_means(control.outcome, treatment.outcome)
        assert result.theta == 0.0
        assert result.variance_reduction == 0.0
        assert result.comparison.p_value == pytest.approx(plain.p_value, rel=1e-12)
        assert result.reason is not None and "covariate" in result.reason


# ------------------------------------------------------------- multiplicity and SRM


class TestHolm:
    def test_hand_computed_example(self) -> None:
        # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.04, 0.06).
        assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])

    def test_capped_at_one(self) -> None:
        assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])

    def test_undefined_p_values_stay_undefined_and_leave_the_family(self) -> None:
        adjusted = holm([0.01, None, 0.04])
        assert adjusted[1] is None
        assert adjusted[0] == pytest.approx(0.02)
        assert adjusted[2] == pytest.approx(0.04)

    def test_empty_family(self) -> None:
        assert holm([]) == []

    @pytest.mark.parametrize("seed", range(20))
    def test_matches_statsmodels(self, seed: int) -> None:
        from statsmodels.stats.multitest import multipletests

        rng = np.random.default_rng(seed)
        p_values = list(rng.uniform(0, 0.2, size=int(rng.integers(1, 30))))
        p_values[0] = p_values[-1]  # ties too
        expected = multipletests(p_values, method="holm")[1]
        assert holm(p_values) == pytest.approx(list(expected), abs=1e-12)

    def test_rejects_values_that_are_not_p_values(self) -> None:
        with pytest.raises(ValueError):
            holm([0.1, float("nan")])


class TestSrmCheck:
    def test_flags_a_half_percent_skew_at_one_million(self) -> None:
        result = srm_check([505_000, 495_000], [0.5, 0.5])
        assert result.flagged
        assert result.chi2 == pytest.approx(100.0)
        assert result.p_value == pytest.approx(sps.chi2.sf(100.0, df=1), rel=1e-9)

    def test_exact_split_is_not_flagged(self) -> None:
        result = srm_check([500_000, 500_000], [0.5, 0.5])
        assert not result.flagged
        assert result.p_value == pytest.approx(1.0)

    def test_uneven_weights_three_arms(self) -> None:
        observed = [5100, 2400, 2500]
        result = srm_check(observed, [2, 1, 1])
        chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, [5000, 2500, 2500], strict=True))
        assert result.chi2 == pytest.approx(chi2)
        assert result.p_value == pytest.approx(sps.chi2.sf(chi2, df=2), rel=1e-9)
        assert not result.flagged

    def test_extreme_mismatch_p_value_is_positive(self) -> None:
        result = srm_check([600_000, 400_000], [1, 1])
        assert result.flagged
        assert result.p_value is not None and result.p_value > 0
        assert result.p_value_floored

    def test_units_in_an_arm_planned_at_zero_are_flagged(self) -> None:
        result = srm_check([100, 100, 3], [1, 1, 0])
        assert result.flagged
        assert result.reason is not None

    def test_no_units_yet(self) -> None:
        result = srm_check([0, 0], [1, 1])
        assert not result.flagged
        assert result.p_value is None
        assert result.reason is not None


# ------------------------------------------------------------------------------ power


class TestPowerPlanning:
    @pytest.mark.parametrize("baseline_rate", [0.01, 0.1, 0.5])
    @pytest.mark.parametrize("n_per_arm", [200, 5000, 123_457])
    def test_mde_and_sample_size_invert_each_other(
        self, baseline_rate: float, n_per_arm: int
    ) -> None:
        mde = minimum_detectable_effect(baseline_rate=baseline_rate, n_per_arm=n_per_arm)
        assert required_sample_size(baseline_rate=baseline_rate, mde_abs=mde) == n_per_arm

    def test_unequal_arms_invert_each_other(self) -> None:
        mde = minimum_detectable_effect(baseline_rate=0.2, n_control=1000, n_treatment=3000)
        assert required_sample_size(baseline_rate=0.2, mde_abs=mde, ratio=3.0) == 1000

    def test_sample_size_matches_textbook_formula(self) -> None:
        baseline, mde, ratio = 0.1, 0.01, 2.0
        h = 2 * math.asin(math.sqrt(baseline + mde)) - 2 * math.asin(math.sqrt(baseline))
        textbook = (sps.norm.isf(0.025) + sps.norm.isf(0.2)) ** 2 * (1 + 1 / ratio) / h**2
        n = required_sample_size(baseline_rate=baseline, mde_abs=mde, ratio=ratio)
        assert n == math.ceil(textbook)

    def test_mde_has_the_requested_power_in_simulation(self) -> None:
        n, baseline = 5000, 0.1
        mde = minimum_detectable_effect(baseline_rate=baseline, n_per_arm=n)
        rng = np.random.default_rng(11)
        control = rng.binomial(n, baseline, size=20_000) / n
        treatment = rng.binomial(n, baseline + mde, size=20_000) / n
        pooled = (control + treatment) / 2
        z = (treatment - control) / np.sqrt(pooled * (1 - pooled) * 2 / n)
        assert np.mean(np.abs(z) > Z_975) == pytest.approx(0.8, abs=0.02)

    def test_invalid_plans_raise(self) -> None:
        with pytest.raises(ValueError):
            minimum_detectable_effect(baseline_rate=1.5, n_per_arm=100)
        with pytest.raises(ValueError):
            minimum_detectable_effect(baseline_rate=0.1, n_per_arm=100, n_control=100)
        with pytest.raises(ValueError):
            required_sample_size(baseline_rate=0.1, mde_abs=0.0)


# ------------------------------------------------------------------------- sequential


class TestSequentialTest:
    def test_pinned_reference_numbers(self) -> None:
        control = MeanStats.from_values([1.0, 2.0, 3.0, 4.0] * 250)
        treatment = MeanStats.from_values([1.5, 2.5, 3.5, 4.5, 2.0] * 200)
        result = sequential_test(control, treatment, alpha=0.05, tuning_n=5000, harm_direction=1)
        # Waudby-Smith et al.'s asymptotic CS worked by hand, n = 2000 and tuning_n = 5000.
        rho2 = (-2 * math.log(0.05) + math.log(1 - 2 * math.log(0.05))) / 5000
        var_diff = (
            np.var([1.0, 2.0, 3.0, 4.0] * 250, ddof=1) / 1000
            + np.var([1.5, 2.5, 3.5, 4.5, 2.0] * 200, ddof=1) / 1000
        )
        n = 2000
        half = math.sqrt(n * var_diff) * math.sqrt(
            2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / 0.05)
        )
        diff = 2.8 - 2.5
        assert result.diff == pytest.approx(diff)
        assert result.ci_low == pytest.approx(diff - half, abs=1e-9)
        assert result.ci_high == pytest.approx(diff + half, abs=1e-9)
        assert result.rho == pytest.approx(math.sqrt(rho2))
        p = math.sqrt(n * rho2 + 1) * math.exp(
            -(diff**2 / var_diff) * n * rho2 / (2 * (n * rho2 + 1))
        )
        assert result.p_value_always_valid == pytest.approx(min(p, 1.0), rel=1e-9)

    def test_p_value_below_alpha_exactly_when_interval_excludes_zero(self) -> None:
        rng = np.random.default_rng(12)
        control = MeanStats.from_values(rng.normal(0, 1, 800))
        for effect in np.linspace(0, 0.4, 41):
            treatment = MeanStats.from_values(rng.normal(effect, 1, 800))
            result = sequential_test(control, treatment, tuning_n=1600, harm_direction=1)
            assert result.ci_low is not None and result.ci_high is not None
            excludes_zero = result.ci_low > 0 or result.ci_high < 0
            assert result.p_value_always_valid is not None
            assert (result.p_value_always_valid < 0.05) == excludes_zero

    def test_always_valid_interval_is_wider_than_fixed_horizon(self) -> None:
        rng = np.random.default_rng(13)
        control, treatment = rng.normal(0, 1, 1000), rng.normal(0.1, 1, 1000)
        result = sequential_test(
            MeanStats.from_values(control),
            MeanStats.from_values(treatment),
            tuning_n=2000,
            harm_direction=1,
        )
        welch = sps.ttest_ind(treatment, control, equal_var=False)
        ci = welch.confidence_interval(0.95)
        assert result.ci_low is not None and result.ci_high is not None
        assert result.ci_low < ci.low and ci.high < result.ci_high
        assert result.p_value_always_valid is not None
        assert result.p_value_always_valid > welch.pvalue

    def test_tightest_near_tuning_n(self) -> None:
        rng = np.random.default_rng(14)
        control = MeanStats.from_values(rng.normal(0, 1, 5000))
        treatment = MeanStats.from_values(rng.normal(0, 1, 5000))

        def width(tuning_n: float) -> float:
            result = sequential_test(control, treatment, tuning_n=tuning_n, harm_direction=1)
            return half_width(result.ci_low, result.ci_high)

        assert width(10_000) < width(1_000)
        assert width(10_000) < width(100_000)

    @pytest.mark.parametrize(
        ("harm_direction", "effect", "harmful"),
        [(1, 0.3, True), (-1, 0.3, False), (-1, -0.3, True), (1, -0.3, False)],
    )
    def test_harm_detected_only_on_the_harmful_side(
        self, harm_direction: int, effect: float, harmful: bool
    ) -> None:
        rng = np.random.default_rng(15)
        control = MeanStats.from_values(rng.normal(0, 1, 2000))
        treatment = MeanStats.from_values(rng.normal(effect, 1, 2000))
        result = sequential_test(
            control,
            treatment,
            tuning_n=4000,
            harm_direction=harm_direction,  # type: ignore[arg-type]
        )
        assert result.harm_detected is harmful

    def test_huge_effect_p_value_is_positive(self) -> None:
        rng = np.random.default_rng(16)
        control = MeanStats.from_values(rng.normal(0, 0.1, 2000))
        treatment = MeanStats.from_values(rng.normal(1, 0.1, 2000))
        result = sequential_test(control, treatment, tuning_n=4000, harm_direction=1)
        assert result.p_value_always_valid == SMALLEST_P_VALUE
        assert result.p_value_floored
        assert result.harm_detected

    def test_rho_follows_the_published_formula(self) -> None:
        alpha, tuning_n = 0.01, 2500.0
        expected = math.sqrt((-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning_n)
        assert sequential_rho(alpha=alpha, tuning_n=tuning_n) == pytest.approx(expected)


# ----------------------------------------------------------------- A/A simulations

AA_EXPERIMENTS = 400
AA_N_PER_ARM = 2000
AA_LOOKS = 20


class TestAASimulation:
    """400 seeded A/A experiments: how often does each test cry wolf at alpha = 5%?"""

    def test_fixed_horizon_proportions(self) -> None:
        rng = np.random.default_rng(21)
        counts = rng.binomial(AA_N_PER_ARM, 0.2, size=(AA_EXPERIMENTS, 2))
        p_values = [
            compare_proportions(
                MeanStats(n=AA_N_PER_ARM, sum=float(c), sum_sq=float(c)),
                MeanStats(n=AA_N_PER_ARM, sum=float(t), sum_sq=float(t)),
            ).p_value
            for c, t in counts
        ]
        false_positive_rate = np.mean([p is not None and p < 0.05 for p in p_values])
        assert 0.02 <= false_positive_rate <= 0.08

    def test_fixed_horizon_means(self) -> None:
        rng = np.random.default_rng(22)
        values = rng.lognormal(2.0, 1.0, size=(2, AA_EXPERIMENTS, AA_N_PER_ARM))
        sums, sums_sq = values.sum(axis=2), (values**2).sum(axis=2)
        p_values = [
            compare_means(
                MeanStats(n=AA_N_PER_ARM, sum=sums[0, i], sum_sq=sums_sq[0, i]),
                MeanStats(n=AA_N_PER_ARM, sum=sums[1, i], sum_sq=sums_sq[1, i]),
            ).p_value
            for i in range(AA_EXPERIMENTS)
        ]
        false_positive_rate = np.mean([p is not None and p < 0.05 for p in p_values])
        assert 0.02 <= false_positive_rate <= 0.08

    def test_sequential_guardrail_under_daily_peeking(self) -> None:
        rng = np.random.default_rng(23)
        values = rng.normal(10.0, 3.0, size=(2, AA_EXPERIMENTS, AA_N_PER_ARM))
        looks = np.linspace(AA_N_PER_ARM / AA_LOOKS, AA_N_PER_ARM, AA_LOOKS).astype(int)
        sums = np.cumsum(values, axis=2)[:, :, looks - 1]
        sums_sq = np.cumsum(values**2, axis=2)[:, :, looks - 1]

        def any_alarm(i: int) -> bool:
            for look, n in enumerate(looks):
                result = sequential_test(
                    MeanStats(n=int(n), sum=sums[0, i, look], sum_sq=sums_sq[0, i, look]),
                    MeanStats(n=int(n), sum=sums[1, i, look], sum_sq=sums_sq[1, i, look]),
                    tuning_n=2 * AA_N_PER_ARM,
                    harm_direction=1,
                )
                assert result.p_value_always_valid is not None
                if result.p_value_always_valid < 0.05:
                    return True
            return False

        sequential_rate = np.mean([any_alarm(i) for i in range(AA_EXPERIMENTS)])
        assert sequential_rate <= 0.08

        # The same peeking with the fixed-horizon test does inflate false alarms,
        # so this simulation can tell a valid sequential test from an invalid one.
        n = looks.astype(float)
        variances = (sums_sq - sums**2 / n) / (n - 1)
        z = (sums[1] - sums[0]) / n / np.sqrt((variances[0] + variances[1]) / n)
        naive_rate = np.mean((np.abs(z) > Z_975).any(axis=1))
        assert naive_rate > 0.12


# ------------------------------------------------------------------- degenerate input


def _prop(n: int, successes: float) -> MeanStats:
    return MeanStats(n=n, sum=successes, sum_sq=successes)


DEGENERATE_CASES: dict[
    str, Callable[[], Comparison | CupedResult | SequentialResult | SrmResult]
] = {
    "proportions_empty_control": lambda: compare_proportions(_prop(0, 0), _prop(100, 10)),
    "proportions_no_successes_anywhere": lambda: compare_proportions(_prop(100, 0), _prop(100, 0)),
    "proportions_zero_and_hundred_percent": lambda: compare_proportions(
        _prop(100, 0), _prop(100, 100)
    ),
    "proportions_zero_control_rate": lambda: compare_proportions(_prop(100, 0), _prop(100, 5)),
    "means_single_unit": lambda: compare_means(
        MeanStats.from_values([1.0]), MeanStats.from_values([1.0, 2.0])
    ),
    "means_empty_arm": lambda: compare_means(
        MeanStats(n=0, sum=0.0, sum_sq=0.0), MeanStats.from_values([1.0, 2.0])
    ),
    "means_zero_variance": lambda: compare_means(
        MeanStats.from_values([3.7] * 50), MeanStats.from_values([4.1] * 50)
    ),
    "means_zero_control_mean": lambda: compare_means(
        MeanStats.from_values([-1.0, 1.0] * 20), MeanStats.from_values([0.0, 2.0] * 20)
    ),
    "ratios_zero_denominator": lambda: compare_ratios(
        RatioStats.from_values(x=[0.0] * 10, y=[0.0] * 10),
        RatioStats.from_values(x=[1.0, 2.0] * 5, y=[3.0, 3.0] * 5),
    ),
    "ratios_single_unit": lambda: compare_ratios(
        RatioStats.from_values(x=[1.0], y=[2.0]),
        RatioStats.from_values(x=[1.0, 2.0], y=[3.0, 3.0]),
    ),
    "ratios_constant_share": lambda: compare_ratios(
        RatioStats.from_values(x=[1.0, 2.0, 3.0], y=[2.0, 4.0, 6.0]),
        RatioStats.from_values(x=[1.0, 3.0], y=[2.0, 6.0]),
    ),
    "cuped_single_unit": lambda: cuped(
        CovariateStats.from_values(y=[1.0], x=[1.0]),
        CovariateStats.from_values(y=[1.0, 2.0], x=[1.0, 3.0]),
    ),
    "cuped_constant_outcome": lambda: cuped(
        CovariateStats.from_values(y=[5.0] * 20, x=list(range(20))),
        CovariateStats.from_values(y=[5.0] * 20, x=list(range(20))),
    ),
    "sequential_single_unit": lambda: sequential_test(
        MeanStats.from_values([1.0]),
        MeanStats.from_values([1.0, 2.0]),
        tuning_n=100,
        harm_direction=1,
    ),
    "sequential_zero_variance": lambda: sequential_test(
        MeanStats.from_values([1.0] * 10),
        MeanStats.from_values([2.0] * 10),
        tuning_n=100,
        harm_direction=1,
    ),
    "srm_single_planned_arm": lambda: srm_check([10, 0], [1, 0]),
}


@pytest.mark.filterwarnings("error")
class TestDegenerateInputs:
    @pytest.mark.parametrize("case", DEGENERATE_CASES)
    def test_returns_a_reason_and_no_nan(self, case: str) -> None:
        result = DEGENERATE_CASES[case]()
        assert result.reason
        assert_finite_or_none(result)

    def test_zero_control_rate_keeps_the_difference_and_p_value(self) -> None:
        result = compare_proportions(_prop(1000, 0), _prop(1000, 12))
        assert result.rel_lift is None
        assert result.diff == pytest.approx(0.012)
        assert result.p_value is not None and result.p_value < 0.01

    def test_sequential_undefined_never_detects_harm(self) -> None:
        result = DEGENERATE_CASES["sequential_zero_variance"]()
        assert isinstance(result, SequentialResult)
        assert not result.harm_detected
        assert result.p_value_always_valid is None

    def test_invalid_alpha_raises(self) -> None:
        with pytest.raises(ValueError):
            compare_means(MeanStats.from_values([1, 2]), MeanStats.from_values([1, 2]), alpha=0)
