"""Confidence sequences on any effect, Cochran's Q and Benjamini-Hochberg, checked
independently: the guardrails' sequential test, statsmodels' ``combine_effects`` and
``multipletests``, scipy's chi-square, and seeded A/A simulations under daily peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from analytics.reports import REPORT_TUNING_N
from analytics.stats import (
    ArmEstimate,
    Effect,
    MeanStats,
    benjamini_hochberg,
    check_correction,
    cochran_q,
    compare_means,
    compare_proportions,
    confidence_sequence,
    effect,
    mean_estimate,
    proportion_estimate,
    sequential_test,
)


class TestConfidenceSequence:
    def test_same_numbers_as_the_guardrail_sequence(self) -> None:
        rng = np.random.default_rng(3)
        control = MeanStats.from_values(rng.normal(5, 2, 1200))
        treatment = MeanStats.from_values(rng.normal(5.2, 2, 900))
        guardrail = sequential_test(control, treatment, tuning_n=5000, harm_direction=1)
        sequence = confidence_sequence(effect(mean_estimate(control), mean_estimate(treatment)),
                                       tuning_n=5000)
        assert sequence.estimate == pytest.approx(guardrail.diff, rel=1e-12)
        assert sequence.ci_low == pytest.approx(guardrail.ci_low, rel=1e-12)
        assert sequence.ci_high == pytest.approx(guardrail.ci_high, rel=1e-12)
        assert sequence.p_value_always_valid == pytest.approx(guardrail.p_value_always_valid,
                                                              rel=1e-12)

    def test_hand_computed_relative_effect(self) -> None:
        observed = Effect(effect_type="relative", estimate=0.08, variance=0.0009, n=4000)
        sequence = confidence_sequence(observed, alpha=0.05, tuning_n=10_000)
        rho2 = (-2 * math.log(0.05) + math.log(1 - 2 * math.log(0.05))) / 10_000
        n = 4000
        half = math.sqrt(n * 0.0009) * math.sqrt(
            2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / 0.05))
        assert sequence.ci_low == pytest.approx(0.08 - half, rel=1e-12)
        assert sequence.ci_high == pytest.approx(0.08 + half, rel=1e-12)
        p = math.sqrt(n * rho2 + 1) * math.exp(-(0.08**2 / 0.0009) * n * rho2
                                               / (2 * (n * rho2 + 1)))
        assert sequence.p_value_always_valid == pytest.approx(min(p, 1.0), rel=1e-12)
        assert sequence.effect_type == "relative"

    def test_significant_exactly_when_p_below_alpha(self) -> None:
        for estimate in np.linspace(0.0, 0.2, 41):
            sequence = confidence_sequence(
                Effect(effect_type="absolute", estimate=float(estimate), variance=0.001,
                       n=3000), tuning_n=REPORT_TUNING_N)
            assert sequence.p_value_always_valid is not None
            assert sequence.significant == (sequence.p_value_always_valid < 0.05)

    def test_undefined(self) -> None:
        assert confidence_sequence(None, tuning_n=100).reason
        flat = confidence_sequence(Effect(effect_type="absolute", estimate=1.0, variance=0.0,
                                          n=20), tuning_n=100)
        assert flat.ci_low is None and not flat.significant and flat.reason


# ----------------------------------------------------------------- A/A simulations

EXPERIMENTS = 400
N_PER_ARM = 2000
DAYS = 20


def peeking_rates(values: np.ndarray, *, binary: bool) -> tuple[float, float]:
    """(share ever significant by the sequential view over daily looks, share significant
    by the fixed-horizon test at the planned end) over A/A experiments.

    ``values`` has shape (2, experiments, units per arm); day d sees the first d/DAYS of
    each arm's units, as a report read every day would.
    """
    looks = np.linspace(N_PER_ARM / DAYS, N_PER_ARM, DAYS).astype(int)
    sums = np.cumsum(values, axis=2)[:, :, looks - 1]
    sums_sq = np.cumsum(values**2, axis=2)[:, :, looks - 1]
    estimate = proportion_estimate if binary else mean_estimate
    compare = compare_proportions if binary else compare_means
    ever = 0
    fixed = 0
    for i in range(values.shape[1]):
        for day, n in enumerate(looks):
            arms = [MeanStats(n=int(n), sum=float(sums[a, i, day]),
                              sum_sq=float(sums_sq[a, i, day])) for a in (0, 1)]
            if confidence_sequence(effect(estimate(arms[0]), estimate(arms[1])),
                                   tuning_n=REPORT_TUNING_N).significant:
                ever += 1
                break
        final = [MeanStats(n=N_PER_ARM, sum=float(sums[a, i, -1]),
                           sum_sq=float(sums_sq[a, i, -1])) for a in (0, 1)]
        p_value = compare(final[0], final[1]).p_value
        fixed += p_value is not None and p_value < 0.05
    return ever / values.shape[1], fixed / values.shape[1]


class TestAAUnderDailyPeeking:
    """400 seeded A/A experiments read every day for 20 days, as report rows."""

    def test_proportions(self) -> None:
        rng = np.random.default_rng(41)
        values = (rng.random((2, EXPERIMENTS, N_PER_ARM)) < 0.2).astype(float)
        sequential, fixed = peeking_rates(values, binary=True)
        assert sequential <= 0.05
        assert 0.03 <= fixed <= 0.07

    def test_means(self) -> None:
        rng = np.random.default_rng(42)
        values = rng.lognormal(2.0, 1.0, size=(2, EXPERIMENTS, N_PER_ARM))
        sequential, fixed = peeking_rates(values, binary=False)
        assert sequential <= 0.05
        assert 0.03 <= fixed <= 0.07

    def test_the_simulation_can_tell_peeking_from_not(self) -> None:
        """The fixed-horizon test read daily does cry wolf: the sequential one is needed."""
        rng = np.random.default_rng(41)
        values = (rng.random((2, EXPERIMENTS, N_PER_ARM)) < 0.2).astype(float)
        looks = np.linspace(N_PER_ARM / DAYS, N_PER_ARM, DAYS).astype(int)
        rates = np.cumsum(values, axis=2)[:, :, looks - 1] / looks
        se = np.sqrt((rates[0] * (1 - rates[0]) + rates[1] * (1 - rates[1])) / looks)
        naive = np.mean((np.abs(rates[1] - rates[0]) / se > sps.norm.isf(0.025)).any(axis=1))
        assert naive > 0.12


# ----------------------------------------------------------------- heterogeneity


def segment_effects(rng: np.random.Generator, lifts: list[float]) -> list[Effect | None]:
    out = []
    for index, lift in enumerate(lifts):
        n = 300 + 200 * index
        control = MeanStats.from_values((rng.random(n) < 0.2).astype(float))
        treatment = MeanStats.from_values((rng.random(n) < 0.2 + lift).astype(float))
        out.append(effect(proportion_estimate(control), proportion_estimate(treatment)))
    return out


class TestCochranQ:
    @pytest.mark.parametrize("lifts", [[0.0, 0.0, 0.0, 0.0], [0.0, 0.05, 0.10],
                                       [0.02, 0.02, -0.05, 0.08, 0.0]])
    def test_matches_statsmodels_and_scipy(self, lifts: list[float]) -> None:
        effects = [e for e in segment_effects(np.random.default_rng(len(lifts)), lifts)
                   if e is not None]
        result = cochran_q(effects)
        reference = combine_effects(np.array([e.estimate for e in effects]),
                                    np.array([e.variance for e in effects]))
        assert result.q == pytest.approx(reference.q, rel=1e-10)
        assert result.df == len(effects) - 1
        assert result.p_value == pytest.approx(sps.chi2.sf(reference.q, len(effects) - 1),
                                               rel=1e-10)
        assert result.i_squared == pytest.approx(max(0.0, reference.i2), rel=1e-10, abs=1e-12)
        assert result.pooled == pytest.approx(reference.mean_effect_fe, rel=1e-10)

    def test_detects_a_real_difference_and_not_a_chance_one(self) -> None:
        rng = np.random.default_rng(9)
        same = cochran_q(segment_effects(rng, [0.03, 0.03, 0.03]))
        different = cochran_q(segment_effects(rng, [0.0, 0.15, 0.0]))
        assert same.p_value is not None and same.p_value > 0.05
        assert different.p_value is not None and different.p_value < 0.001

    def test_false_positive_rate_under_equal_effects(self) -> None:
        rng = np.random.default_rng(10)
        p_values = [cochran_q(segment_effects(rng, [0.02] * 4)).p_value for _ in range(300)]
        rate = np.mean([p is not None and p < 0.05 for p in p_values])
        assert 0.02 <= rate <= 0.08

    def test_undefined_segments_are_left_out(self) -> None:
        effects: list[Effect | None] = [
            None, Effect(effect_type="absolute", estimate=0.1, variance=0.0, n=10),
            Effect(effect_type="absolute", estimate=0.1, variance=0.01, n=100)]
        result = cochran_q(effects)
        assert result.q is None and result.excluded == 2 and result.reason
        effects.append(Effect(effect_type="absolute", estimate=0.3, variance=0.01, n=100))
        result = cochran_q(effects)
        assert result.segments == 2 and result.excluded == 2
        assert result.q == pytest.approx(0.2**2 / 0.02, rel=1e-12)

    def test_identical_effects_have_no_heterogeneity(self) -> None:
        result = cochran_q([Effect(effect_type="absolute", estimate=0.1, variance=v, n=100)
                            for v in (0.01, 0.02)])
        assert result.q == 0.0 and result.i_squared == 0.0 and result.p_value == 1.0


# ----------------------------------------------------------------- Benjamini-Hochberg


class TestBenjaminiHochberg:
    @pytest.mark.parametrize("seed", range(6))
    def test_matches_statsmodels(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        p_values = np.r_[rng.uniform(0, 1, 8), rng.uniform(0, 0.01, 4)]
        rng.shuffle(p_values)
        expected = multipletests(p_values, method="fdr_bh")[1]
        assert benjamini_hochberg(list(p_values)) == pytest.approx(list(expected), rel=1e-12)

    def test_hand_computed_example(self) -> None:
        assert benjamini_hochberg([0.01, 0.04, 0.03, 0.5]) == pytest.approx(
            [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])

    def test_undefined_p_values_stay_undefined_and_leave_the_family(self) -> None:
        adjusted = benjamini_hochberg([0.01, None, 0.04])
        assert adjusted == pytest.approx([0.02, None, 0.04])

    def test_rejects_values_that_are_not_p_values(self) -> None:
        with pytest.raises(ValueError):
            benjamini_hochberg([0.1, 1.5])
        with pytest.raises(ValueError, match="use one of holm, bh"):
            check_correction("bonferroni")


def test_arm_estimates_of_a_proportion_use_the_bernoulli_variance() -> None:
    estimate = proportion_estimate(MeanStats(n=400, sum=100.0, sum_sq=100.0))
    assert estimate == ArmEstimate(n=400, mean=0.25, variance=0.25 * 0.75 / 400)
