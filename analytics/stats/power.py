"""Power: the minimum detectable effect of a sample, the sample an effect needs, and what a
finished (or running) comparison could detect with the sample it achieved."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analytics.stats.common import check_alpha
from analytics.stats.comparisons import PROPORTIONS_METHOD, Comparison

#: The power a report's minimum detectable effects are computed at (the wizard's too).
REPORT_POWER = 0.8
#: How a proportion's detectable effect is computed, in a report's words.
MDE_PROPORTION_METHOD = ("two-sided two-sample z test on Cohen's arcsine effect size h at "
                         "the control rate (statsmodels NormalIndPower), as the launch "
                         "wizard plans")
#: How any other metric's detectable effect is computed.
MDE_SE_METHOD = ("(z[1 - alpha/2] + z[power]) x the standard error of the difference "
                 "(delta method for ratios, Welch for means)")


def _check_rate(rate: float, name: str) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (got {rate})")


def _power(*, effect_size: float, n_control: float, ratio: float, alpha: float) -> float:
    """Power of the two-sided two-sample z test on Cohen's h (statsmodels ``NormalIndPower``)."""
    from statsmodels.stats.power import NormalIndPower
    return float(
        NormalIndPower().power(effect_size, n_control, alpha, ratio=ratio, alternative="two-sided")
    )


def _solve_increasing(function: Callable[[float], float], *, low: float, high: float) -> float:
    """Root of an increasing function by Brent's method, to near machine precision.

    statsmodels' own ``solve_power`` stops at a loose tolerance (power off by
    ~1e-5), which breaks the exact round trip between MDE and sample size.
    """
    from scipy.optimize import brentq
    if function(low) >= 0:
        return low
    if function(high) < 0:
        raise ValueError("the requested power cannot be reached with this plan")
    return float(brentq(function, low, high, xtol=1e-13, rtol=4 * np.finfo(float).eps))


def minimum_detectable_effect(
    *,
    baseline_rate: float,
    n_per_arm: int | None = None,
    n_control: int | None = None,
    n_treatment: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest absolute increase of a proportion detectable with the given power.

    Two-sided test at ``alpha`` on Cohen's arcsine effect size h
    (statsmodels ``NormalIndPower`` with ``proportion_effectsize``); the
    returned value is p1 - baseline where h(p1, baseline) is the detectable h.
    Give ``n_per_arm`` or both ``n_control`` and ``n_treatment``. Raises
    ``ValueError`` for invalid plans, including one whose sample is too small
    to detect any increase from this baseline.
    """
    check_alpha(alpha)
    check_alpha(power, "power")
    _check_rate(baseline_rate, "baseline_rate")
    if n_per_arm is not None:
        if n_control is not None or n_treatment is not None:
            raise ValueError("give either n_per_arm or n_control and n_treatment, not both")
        n_control = n_treatment = n_per_arm
    if n_control is None or n_treatment is None:
        raise ValueError("give n_per_arm, or both n_control and n_treatment")
    if n_control < 2 or n_treatment < 2:
        raise ValueError("each arm needs at least 2 units")
    ratio = n_treatment / n_control
    effect_size = _solve_increasing(
        lambda h: _power(effect_size=h, n_control=n_control, ratio=ratio, alpha=alpha) - power,
        low=1e-9,
        high=math.pi,
    )
    angle = math.asin(math.sqrt(baseline_rate)) + effect_size / 2
    if angle > math.pi / 2:
        raise ValueError("the sample is too small to detect any increase from this baseline")
    return math.sin(angle) ** 2 - baseline_rate


def required_sample_size(
    *,
    baseline_rate: float,
    mde_abs: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> int:
    """Control-arm size to detect an absolute change ``mde_abs`` of a proportion.

    The treatment arm needs ``ceil(ratio * n)`` units. Same test as
    :func:`minimum_detectable_effect` (two-sided, arcsine effect size), of
    which this is the inverse.
    """
    from statsmodels.stats.proportion import proportion_effectsize
    check_alpha(alpha)
    check_alpha(power, "power")
    _check_rate(baseline_rate, "baseline_rate")
    _check_rate(baseline_rate + mde_abs, "baseline_rate + mde_abs")
    if mde_abs == 0:
        raise ValueError("mde_abs must not be zero")
    if not ratio > 0:
        raise ValueError("ratio (treatment / control size) must be positive")
    effect_size = abs(float(proportion_effectsize(baseline_rate + mde_abs, baseline_rate)))

    def shortfall(n: float) -> float:
        return _power(effect_size=effect_size, n_control=n, ratio=ratio, alpha=alpha) - power

    high = 2.0
    while shortfall(high) < 0:
        high *= 2
    n_control = _solve_increasing(shortfall, low=1.0, high=high)
    # The tolerance absorbs the root finder's noise so MDE(n) -> n round-trips.
    return max(math.ceil(n_control - 1e-6), 2)


def mde_from_se(diff_se: float, *, alpha: float = 0.05, power: float = REPORT_POWER) -> float:
    """The absolute difference a two-sided z test at ``alpha`` detects with ``power`` when
    the difference's standard error is ``diff_se``: (z[1 - alpha/2] + z[power]) x se."""
    from scipy.stats import norm
    check_alpha(alpha)
    check_alpha(power, "power")
    if not diff_se >= 0:
        raise ValueError(f"diff_se must be non-negative (got {diff_se})")
    return float((norm.isf(alpha / 2) + norm.ppf(power)) * diff_se)


@dataclass(frozen=True)
class DetectableEffect:
    """What one comparison could detect with the sample it achieved (power after the fact).

    ``mde`` is the smallest absolute difference (in the metric's units: a rate's fraction,
    a ratio, a mean) a two-sided test at ``alpha`` would find with probability ``power``;
    ``mde_relative`` is that over the control's level. None, with ``reason``, when the
    sample cannot tell (an arm too small, no variance yet).
    """

    n_control: int
    n_treatment: int
    baseline: float | None
    mde: float | None
    mde_relative: float | None
    alpha: float
    power: float
    method: str
    reason: str | None = None


def detectable_effect(comparison: Comparison, *, alpha: float | None = None,
                      power: float = REPORT_POWER) -> DetectableEffect:
    """The minimum detectable effect of ``comparison`` at the sample it achieved.

    Proportions as the launch wizard plans them (:func:`minimum_detectable_effect` at the
    control's rate and the achieved arm sizes); every other comparison (ratios by the delta
    method, means, CUPED-adjusted means) from its own standard error (:func:`mde_from_se`).
    ``alpha`` defaults to the comparison's.
    """
    alpha = comparison.alpha if alpha is None else alpha
    baseline = comparison.control_mean
    n_control, n_treatment = comparison.control_n, comparison.treatment_n
    proportion = comparison.method == PROPORTIONS_METHOD
    method = MDE_PROPORTION_METHOD if proportion else MDE_SE_METHOD

    def result(mde: float | None, reason: str | None = None) -> DetectableEffect:
        relative = (mde / abs(baseline) if mde is not None and baseline not in (None, 0.0)
                    else None)
        return DetectableEffect(n_control=n_control, n_treatment=n_treatment,
                                baseline=baseline, mde=mde, mde_relative=relative,
                                alpha=alpha, power=power, method=method, reason=reason)

    if proportion:
        if baseline is None:
            return result(None, comparison.reason or "the control arm has no units")
        try:
            return result(minimum_detectable_effect(
                baseline_rate=baseline, n_control=n_control, n_treatment=n_treatment,
                alpha=alpha, power=power))
        except ValueError as error:
            return result(None, str(error))
    if comparison.diff_se is None or comparison.diff_se == 0.0:
        return result(None, comparison.reason or "no standard error: the arms have no "
                      "variance yet")
    return result(mde_from_se(comparison.diff_se, alpha=alpha, power=power))


def underpowered(effect: DetectableEffect, target: float) -> bool:
    """Whether the comparison could not reliably detect an absolute effect of ``target``
    (its minimum detectable effect is larger, or nothing is detectable)."""
    return effect.mde is None or effect.mde > target
