"""Always-valid confidence sequences, safe under continuous peeking.

:func:`sequential_test` watches a guardrail for harm (one-sided use of a two-sided
sequence); :func:`confidence_sequence` is the same sequence on any effect with its
variance, for the sequential view of every report row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from analytics.stats.common import check_alpha, floor_p, small_arm_reason
from analytics.stats.effects import Effect, EffectType
from analytics.stats.sufficient import MeanStats, sum_sq_dev


@dataclass(frozen=True, kw_only=True)
class SequentialResult:
    """An always-valid confidence sequence on treatment - control at the current look."""

    p_value_always_valid: float | None
    ci_low: float | None
    ci_high: float | None
    harm_detected: bool
    diff: float | None
    n: int
    rho: float
    alpha: float
    p_value_floored: bool = False
    reason: str | None = None


def sequential_rho(*, alpha: float, tuning_n: float) -> float:
    """Mixture parameter rho that makes the confidence sequence tightest at n = ``tuning_n``.

    rho² = (-2 ln alpha + ln(-2 ln alpha + 1)) / tuning_n  (Howard et al. 2021,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", and
    Waudby-Smith et al. 2024, "Time-uniform central limit theory and asymptotic
    confidence sequences"; the choice GrowthBook makes).
    """
    check_alpha(alpha)
    if not tuning_n > 0:
        raise ValueError("tuning_n must be positive")
    log_alpha = math.log(alpha)
    return math.sqrt((-2 * log_alpha + math.log(-2 * log_alpha + 1)) / tuning_n)


def _mixture(*, diff: float, var_diff: float, n: int, rho: float, alpha: float
             ) -> tuple[float, float, bool]:
    """Half-width, always-valid p-value and whether it was floored (formulas below)."""
    n_rho2 = n * rho * rho
    half = math.sqrt(n * var_diff) * math.sqrt(
        2 * (n_rho2 + 1) / (n * n_rho2) * math.log(math.sqrt(n_rho2 + 1) / alpha)
    )
    z2 = diff * diff / var_diff
    log_p = 0.5 * math.log(n_rho2 + 1) - z2 * n_rho2 / (2 * (n_rho2 + 1))
    p_value, floored = floor_p(math.exp(min(log_p, 0.0)))
    return half, p_value, floored


def sequential_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alpha: float = 0.05,
    tuning_n: float,
    harm_direction: Literal[1, -1],
) -> SequentialResult:
    """Always-valid test of treatment - control for a guardrail, safe under continuous peeking.

    Normal-mixture asymptotic confidence sequence (Waudby-Smith et al. 2024,
    as GrowthBook and Eppo use it), with n = nc + nt the total sample size and
    s² = n · Var(diff), Var(diff) = vc/nc + vt/nt (sample variances):

        half-width = s · sqrt( 2 (n rho² + 1) / (n² rho²) · ln( sqrt(n rho² + 1) / alpha ) )

    with rho from :func:`sequential_rho` (``tuning_n`` = the total sample size
    at which the sequence should be tightest, e.g. the planned exposure).
    The always-valid p-value is the smallest alpha at which that sequence
    (same rho) excludes 0, in closed form with z = diff / sqrt(Var(diff)):

        p = min(1, sqrt(n rho² + 1) · exp( -z² n rho² / (2 (n rho² + 1)) ))

    (the inverse of the mixture likelihood ratio of the mSPRT). Each call is
    one look; the guarantee holds over all looks, so a caller may stop at the
    first look where ``harm_detected``. ``harm_direction`` = +1 when an
    increase is harmful (complaints, churn), -1 when a decrease is (revenue);
    harm is detected when the whole interval lies on the harmful side of 0,
    so the false-alarm rate of ``harm_detected`` is at most alpha / 2.
    """
    if harm_direction not in (1, -1):
        raise ValueError("harm_direction must be +1 (increase is harmful) or -1")
    rho = sequential_rho(alpha=alpha, tuning_n=tuning_n)
    n = control.n + treatment.n
    small = small_arm_reason(control.n, treatment.n, 2)
    mean_c, mean_t = control.mean, treatment.mean
    diff = mean_t - mean_c if mean_c is not None and mean_t is not None else None
    undefined = SequentialResult(
        p_value_always_valid=None,
        ci_low=None,
        ci_high=None,
        harm_detected=False,
        diff=diff,
        n=n,
        rho=rho,
        alpha=alpha,
    )
    if small or diff is None:
        return replace(undefined, reason=small or "an arm has no units")
    var_diff = sum(
        sum_sq_dev(arm.n, arm.sum, arm.sum_sq) / (arm.n - 1) / arm.n
        for arm in (control, treatment)
    )
    if var_diff <= 0:
        return replace(undefined, reason="no variance in either arm: the sequence is undefined")
    half, p_value, floored = _mixture(diff=diff, var_diff=var_diff, n=n, rho=rho, alpha=alpha)
    ci_low, ci_high = diff - half, diff + half
    harm = ci_low > 0 if harm_direction == 1 else ci_high < 0
    return SequentialResult(
        p_value_always_valid=p_value,
        ci_low=ci_low,
        ci_high=ci_high,
        harm_detected=harm,
        diff=diff,
        n=n,
        rho=rho,
        alpha=alpha,
        p_value_floored=floored,
    )


@dataclass(frozen=True, kw_only=True)
class ConfidenceSequence:
    """A two-sided always-valid confidence sequence on an effect, at the current look."""

    effect_type: EffectType
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value_always_valid: float | None
    n: int
    tuning_n: float
    alpha: float
    p_value_floored: bool = False
    reason: str | None = None

    @property
    def significant(self) -> bool:
        """Whether the sequence excludes 0 (equivalently, the always-valid p < alpha)."""
        return (self.ci_low is not None and self.ci_high is not None
                and (self.ci_low > 0 or self.ci_high < 0))


def confidence_sequence(observed: Effect | None, *, alpha: float = 0.05, tuning_n: float,
                        effect_type: EffectType = "absolute") -> ConfidenceSequence:
    """The normal-mixture confidence sequence of :func:`sequential_test` on any effect.

    ``observed`` is an effect (a difference of rates, means or ratios, a CUPED-adjusted
    difference or a relative lift) with the variance of its estimate; n is the units in
    both arms. The interval and p-value hold simultaneously over every look, so a reader
    may look daily and stop when the interval excludes 0. None (an undefined effect) or
    no variance gives a sequence with only ``reason`` set.
    """
    rho = sequential_rho(alpha=alpha, tuning_n=tuning_n)
    if observed is None:
        return ConfidenceSequence(
            effect_type=effect_type, estimate=None, ci_low=None, ci_high=None,
            p_value_always_valid=None, n=0, tuning_n=tuning_n, alpha=alpha,
            reason="the effect is undefined (an arm without units, or a zero baseline)")
    if not observed.variance > 0:
        return ConfidenceSequence(
            effect_type=observed.effect_type, estimate=observed.estimate, ci_low=None,
            ci_high=None, p_value_always_valid=None, n=observed.n, tuning_n=tuning_n,
            alpha=alpha, reason="no variance: the sequence is undefined")
    half, p_value, floored = _mixture(diff=observed.estimate, var_diff=observed.variance,
                                      n=observed.n, rho=rho, alpha=alpha)
    return ConfidenceSequence(
        effect_type=observed.effect_type, estimate=observed.estimate,
        ci_low=observed.estimate - half, ci_high=observed.estimate + half,
        p_value_always_valid=p_value, n=observed.n, tuning_n=tuning_n, alpha=alpha,
        p_value_floored=floored)
