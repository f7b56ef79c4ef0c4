"""The Bayesian view against gbstats 0.8's EffectBayesianABTest (flat prior).

Every reference number comes from ``tests.analytics.gbstats_reference`` (gbstats 0.8.0's
formulas, its expected loss through scipy's truncated normal) fed with gbstats'
own statistic classes built from the same raw rows, on the Artea experiment and on
generated data: proportions, means and ratio metrics, absolute and relative effects,
higher-is-better and lower-is-better metrics.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analytics.stats import (
    ArmEstimate,
    BayesianResult,
    CovariateStats,
    MeanStats,
    RatioStats,
    bayesian_effect,
    cuped,
    cuped_estimates,
    effect,
    mean_estimate,
    proportion_estimate,
    ratio_estimate,
)
from tests.analytics import gbstats_reference as gb
from tests.datafiles import shared_data

TOLERANCE = 1e-9
ARTEA = shared_data("artea-a_b-experiment.csv")


def ours(control: ArmEstimate | None, treatment: ArmEstimate | None, *, relative: bool,
         inverse: bool, alpha: float = 0.05) -> BayesianResult:
    kind = "relative" if relative else "absolute"
    return bayesian_effect(effect(control, treatment, effect_type=kind), alpha=alpha,
                           lower_is_better=inverse, effect_type=kind)


def assert_matches(result: BayesianResult, reference: gb.BayesianTestResult | None) -> None:
    assert reference is not None
    assert result.chance_to_beat_baseline == pytest.approx(reference.chance_to_win,
                                                           abs=TOLERANCE)
    assert result.posterior_mean == pytest.approx(reference.expected, rel=TOLERANCE)
    assert result.ci_low == pytest.approx(reference.ci[0], rel=TOLERANCE, abs=1e-12)
    assert result.ci_high == pytest.approx(reference.ci[1], rel=TOLERANCE, abs=1e-12)
    # gbstats' risk = [keeping control, shipping the treatment]
    assert result.expected_loss_baseline == pytest.approx(reference.risk[0], rel=1e-7,
                                                          abs=1e-12)
    assert result.expected_loss == pytest.approx(reference.risk[1], rel=1e-7, abs=1e-12)


def proportion_pair(rng: np.random.Generator, n: int, rate: float, lift: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    return ((rng.random(n) < rate).astype(float),
            (rng.random(int(n * 1.1)) < rate * (1 + lift)).astype(float))


def gb_proportion(values: np.ndarray) -> gb.ProportionStatistic:
    return gb.ProportionStatistic(n=values.size, sum=float(values.sum()))


def gb_mean(values: np.ndarray) -> gb.SampleMeanStatistic:
    return gb.SampleMeanStatistic(n=values.size, sum=float(values.sum()),
                                  sum_squares=float(np.dot(values, values)))


def gb_ratio(x: np.ndarray, y: np.ndarray) -> gb.RatioStatistic:
    return gb.RatioStatistic(n=x.size, m_statistic=gb_mean(x), d_statistic=gb_mean(y),
                             m_d_sum_of_products=float(np.dot(x, y)))


CASES = [(relative, inverse) for relative in (False, True) for inverse in (False, True)]


class TestGeneratedData:
    @pytest.mark.parametrize(("relative", "inverse"), CASES)
    @pytest.mark.parametrize("seed", range(4))
    def test_proportions(self, seed: int, relative: bool, inverse: bool) -> None:
        rng = np.random.default_rng(seed)
        control, treatment = proportion_pair(rng, 400 + 900 * seed, 0.05 + 0.1 * seed, 0.1)
        result = ours(proportion_estimate(MeanStats.from_values(control)),
                      proportion_estimate(MeanStats.from_values(treatment)),
                      relative=relative, inverse=inverse)
        assert_matches(result, gb.effect_bayesian(gb_proportion(control),
                                                  gb_proportion(treatment),
                                                  relative=relative, inverse=inverse))

    @pytest.mark.parametrize(("relative", "inverse"), CASES)
    @pytest.mark.parametrize("seed", range(4))
    def test_means(self, seed: int, relative: bool, inverse: bool) -> None:
        rng = np.random.default_rng(100 + seed)
        control = rng.lognormal(1.0, 1.0, 500 + 700 * seed)
        treatment = rng.lognormal(1.0 + 0.05 * seed, 1.0, 600 + 500 * seed)
        result = ours(mean_estimate(MeanStats.from_values(control)),
                      mean_estimate(MeanStats.from_values(treatment)),
                      relative=relative, inverse=inverse)
        assert_matches(result, gb.effect_bayesian(gb_mean(control), gb_mean(treatment),
                                                  relative=relative, inverse=inverse))

    @pytest.mark.parametrize(("relative", "inverse"), CASES)
    @pytest.mark.parametrize("seed", range(4))
    def test_ratios(self, seed: int, relative: bool, inverse: bool) -> None:
        rng = np.random.default_rng(200 + seed)

        def arm(n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
            y = rng.poisson(4.0, n).astype(float) + 1
            return rng.binomial(y.astype(int), share).astype(float), y

        (xc, yc), (xt, yt) = arm(800 + 300 * seed, 0.3), arm(900, 0.3 + 0.01 * seed)
        result = ours(ratio_estimate(RatioStats.from_values(x=xc, y=yc)),
                      ratio_estimate(RatioStats.from_values(x=xt, y=yt)),
                      relative=relative, inverse=inverse)
        assert_matches(result, gb.effect_bayesian(gb_ratio(xc, yc), gb_ratio(xt, yt),
                                                  relative=relative, inverse=inverse))

    def test_other_alpha(self) -> None:
        rng = np.random.default_rng(7)
        control, treatment = proportion_pair(rng, 3000, 0.2, 0.05)
        result = ours(proportion_estimate(MeanStats.from_values(control)),
                      proportion_estimate(MeanStats.from_values(treatment)),
                      relative=False, inverse=False, alpha=0.1)
        assert_matches(result, gb.effect_bayesian(gb_proportion(control),
                                                  gb_proportion(treatment), relative=False,
                                                  alpha=0.1))

    def test_a_clear_winner_and_a_clear_loser(self) -> None:
        strong = ours(ArmEstimate(n=1000, mean=0.10, variance=1e-6),
                      ArmEstimate(n=1000, mean=0.20, variance=1e-6),
                      relative=False, inverse=False)
        assert strong.chance_to_beat_baseline is not None
        assert strong.chance_to_beat_baseline > 0.999999
        assert strong.expected_loss == pytest.approx(0.0, abs=1e-12)
        assert strong.expected_loss_baseline == pytest.approx(0.10, rel=1e-9)
        # A cost that went up is a loss when lower is better.
        cost = ours(ArmEstimate(n=1000, mean=10.0, variance=0.01),
                    ArmEstimate(n=1000, mean=12.0, variance=0.01),
                    relative=False, inverse=True)
        assert cost.chance_to_beat_baseline is not None
        assert cost.chance_to_beat_baseline < 1e-6
        assert cost.expected_loss == pytest.approx(2.0, rel=1e-6)


@pytest.fixture(scope="module")
def arms() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Artea's control and coupon arms, raw rows."""
    raw = pd.read_csv(ARTEA, encoding="utf-8-sig")
    return raw[raw.test_coupon == 0], raw[raw.test_coupon == 1]


class TestArtea:
    """Artea's coupon experiment: 'bought' (proportion), revenue (mean), revenue per
    transaction (ratio)."""

    @pytest.mark.parametrize(("relative", "inverse"), CASES)
    def test_bought(self, arms: tuple[pd.DataFrame, pd.DataFrame], relative: bool,
                    inverse: bool) -> None:
        control, treatment = ((arm.trans_after > 0).to_numpy(float) for arm in arms)
        result = ours(proportion_estimate(MeanStats.from_values(control)),
                      proportion_estimate(MeanStats.from_values(treatment)),
                      relative=relative, inverse=inverse)
        assert_matches(result, gb.effect_bayesian(gb_proportion(control),
                                                  gb_proportion(treatment),
                                                  relative=relative, inverse=inverse))

    @pytest.mark.parametrize(("relative", "inverse"), CASES)
    def test_revenue(self, arms: tuple[pd.DataFrame, pd.DataFrame], relative: bool,
                     inverse: bool) -> None:
        control, treatment = (arm.revenue_after.to_numpy(float) for arm in arms)
        result = ours(mean_estimate(MeanStats.from_values(control)),
                      mean_estimate(MeanStats.from_values(treatment)),
                      relative=relative, inverse=inverse)
        assert_matches(result, gb.effect_bayesian(gb_mean(control), gb_mean(treatment),
                                                  relative=relative, inverse=inverse))

    @pytest.mark.parametrize(("relative", "inverse"), CASES)
    def test_revenue_per_transaction(self, arms: tuple[pd.DataFrame, pd.DataFrame],
                                     relative: bool, inverse: bool) -> None:
        (xc, yc), (xt, yt) = ((arm.revenue_after.to_numpy(float),
                               arm.trans_after.to_numpy(float)) for arm in arms)
        result = ours(ratio_estimate(RatioStats.from_values(x=xc, y=yc)),
                      ratio_estimate(RatioStats.from_values(x=xt, y=yt)),
                      relative=relative, inverse=inverse)
        assert_matches(result, gb.effect_bayesian(gb_ratio(xc, yc), gb_ratio(xt, yt),
                                                  relative=relative, inverse=inverse))


class TestCupedEstimates:
    def test_same_adjusted_difference_and_interval_as_cuped(self) -> None:
        rng = np.random.default_rng(31)
        pre = rng.normal(10, 3, 3000)
        post = pre * 0.8 + rng.normal(0, 1, 3000) + np.r_[np.zeros(1500), np.full(1500, 0.2)]
        control = CovariateStats.from_values(y=post[:1500], x=pre[:1500])
        treatment = CovariateStats.from_values(y=post[1500:], x=pre[1500:])
        estimates = cuped_estimates(control, treatment)
        assert estimates is not None
        absolute = effect(*estimates)
        comparison = cuped(control, treatment).comparison
        assert absolute is not None and comparison.diff_se is not None
        assert absolute.estimate == pytest.approx(comparison.diff, rel=1e-12)
        assert math.sqrt(absolute.variance) == pytest.approx(comparison.diff_se, rel=1e-12)
        # The posterior's credible interval is the normal interval of the same estimate.
        view = bayesian_effect(absolute)
        assert view.ci_low is not None and view.ci_high is not None
        assert (view.ci_high - view.ci_low) / 2 == pytest.approx(
            1.959963984540054 * comparison.diff_se, rel=1e-12)


class TestUndefined:
    def test_empty_arm_zero_baseline_and_no_variance(self) -> None:
        empty = proportion_estimate(MeanStats(n=0, sum=0.0, sum_sq=0.0))
        some = proportion_estimate(MeanStats(n=100, sum=10.0, sum_sq=10.0))
        for result in (ours(empty, some, relative=False, inverse=False),
                       ours(proportion_estimate(MeanStats(n=100, sum=0.0, sum_sq=0.0)), some,
                            relative=True, inverse=False)):
            assert result.chance_to_beat_baseline is None and result.reason
        flat = ours(ArmEstimate(n=10, mean=1.0, variance=0.0),
                    ArmEstimate(n=10, mean=2.0, variance=0.0), relative=False, inverse=False)
        assert flat.chance_to_beat_baseline is None and flat.posterior_mean == 1.0
        assert flat.reason == "no variance: the posterior is undefined"


class TestTranscription:
    """The transcription against the real gbstats 0.8.0, wherever it can be imported."""

    def test_matches_gbstats(self) -> None:
        bayesian = pytest.importorskip("gbstats.bayesian.tests")
        statistics = pytest.importorskip("gbstats.models.statistics")
        rng = np.random.default_rng(5)
        control, treatment = rng.lognormal(1, 1, 800), rng.lognormal(1.1, 1, 900)
        for relative, inverse in CASES:
            config = bayesian.EffectBayesianConfig(
                difference_type="relative" if relative else "absolute", inverse=inverse)
            real = bayesian.EffectBayesianABTest(
                statistics.SampleMeanStatistic(n=800, sum=control.sum(),
                                               sum_squares=np.dot(control, control)),
                statistics.SampleMeanStatistic(n=900, sum=treatment.sum(),
                                               sum_squares=np.dot(treatment, treatment)),
                config).compute_result()
            copy = gb.effect_bayesian(gb_mean(control), gb_mean(treatment),
                                      relative=relative, inverse=inverse)
            assert copy is not None
            assert copy.chance_to_win == pytest.approx(real.chance_to_win, rel=1e-12)
            assert copy.ci == pytest.approx(real.ci, rel=1e-12)
            assert copy.risk == pytest.approx(real.risk, rel=1e-12)
