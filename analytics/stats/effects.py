"""Each arm's estimate and its variance, and the effect of one arm against another.

The Bayesian view, the confidence sequences and the heterogeneity test all start from the
same two numbers per comparison: an effect (treatment - baseline, or treatment / baseline
- 1) and the variance of its estimate. This module derives them from the sufficient
statistics, with the variances the row's frequentist test uses (gbstats 0.8 uses the same
ones: p(1 - p) / n for a rate, the sample variance / n for a mean, the delta method for a
ratio Σx / Σy and for the relative effect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from analytics.stats.sufficient import (
    CovariateStats,
    MeanStats,
    RatioStats,
    cross_dev,
    residual_ss,
    sum_sq_dev,
)

EffectType = Literal["absolute", "relative"]


@dataclass(frozen=True, kw_only=True)
class ArmEstimate:
    """One arm's estimate (a rate, a mean, a ratio, a CUPED-adjusted mean) and its variance."""

    n: int
    mean: float
    variance: float  # of the estimate, not of a unit: e.g. s² / n


@dataclass(frozen=True, kw_only=True)
class Effect:
    """An effect estimate and the variance of that estimate (normal approximation)."""

    effect_type: EffectType
    estimate: float
    variance: float
    n: int  # units in both arms


def proportion_estimate(stats: MeanStats) -> ArmEstimate | None:
    """A rate (``sum`` = successes) with variance p(1 - p) / n; None without units."""
    if stats.n == 0:
        return None
    rate = stats.sum / stats.n
    return ArmEstimate(n=stats.n, mean=rate, variance=rate * (1 - rate) / stats.n)


def mean_estimate(stats: MeanStats) -> ArmEstimate | None:
    """A mean with variance s² / n (sample variance, ddof 1); None below two units."""
    if stats.n < 2:
        return None
    variance = sum_sq_dev(stats.n, stats.sum, stats.sum_sq) / (stats.n - 1)
    return ArmEstimate(n=stats.n, mean=stats.sum / stats.n, variance=variance / stats.n)


def ratio_estimate(stats: RatioStats) -> ArmEstimate | None:
    """Σx / Σy with its delta-method variance; None when undefined."""
    ratio, variance = stats.ratio, stats.ratio_variance
    if ratio is None or variance is None:
        return None
    return ArmEstimate(n=stats.n, mean=ratio, variance=variance)


def cuped_estimates(control: CovariateStats, treatment: CovariateStats
                    ) -> tuple[ArmEstimate, ArmEstimate] | None:
    """Both arms' CUPED-adjusted means and their variances, as :func:`cuped` adjusts them.

    theta is the pooled within-arm slope; each arm's adjusted mean is
    ȳ - theta (x̄ - x̄_all) with variance (Var(y) + theta² Var(x) - 2 theta Cov(x, y)) / n.
    None below two units in an arm.
    """
    arms = (control, treatment)
    if min(arm.n for arm in arms) < 2:
        return None
    s_xx = [sum_sq_dev(a.n, a.sum_x, a.sum_x2) for a in arms]
    s_yy = [sum_sq_dev(a.n, a.sum_y, a.sum_y2) for a in arms]
    s_xy = [cross_dev(a.n, a.sum_x, a.sum_y, a.sum_xy) for a in arms]
    theta = sum(s_xy) / sum(s_xx) if sum(s_xx) > 0 else 0.0
    mean_x_all = (control.sum_x + treatment.sum_x) / (control.n + treatment.n)
    estimates = []
    for arm, yy, xy, xx in zip(arms, s_yy, s_xy, s_xx, strict=True):
        adjusted_ss = residual_ss(yy - 2 * theta * xy + theta * theta * xx,
                                  scale=yy + theta * theta * xx)
        estimates.append(ArmEstimate(
            n=arm.n, mean=arm.sum_y / arm.n - theta * (arm.sum_x / arm.n - mean_x_all),
            variance=adjusted_ss / (arm.n - 1) / arm.n))
    return estimates[0], estimates[1]


def effect(baseline: ArmEstimate | None, treatment: ArmEstimate | None, *,
           effect_type: EffectType = "absolute") -> Effect | None:
    """treatment - baseline, or treatment / baseline - 1 (delta method), with its variance.

    None when an arm is undefined or, for the relative effect, the baseline is zero.
    The relative variance is Var(t) / b² + t² Var(b) / b⁴ (gbstats ``frequentist_variance``).
    """
    if baseline is None or treatment is None:
        return None
    n = baseline.n + treatment.n
    if effect_type == "absolute":
        return Effect(effect_type=effect_type, estimate=treatment.mean - baseline.mean,
                      variance=treatment.variance + baseline.variance, n=n)
    b, t = baseline.mean, treatment.mean
    if b == 0:
        return None
    return Effect(effect_type=effect_type, estimate=t / b - 1.0,
                  variance=treatment.variance / b**2 + t**2 * baseline.variance / b**4, n=n)
