"""Power: the minimum detectable effect of a sample, the sample an effect needs."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from analytics.stats.common import check_alpha


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
