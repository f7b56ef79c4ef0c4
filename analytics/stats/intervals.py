"""Intervals that invert a test: score intervals for two proportions, Fieller for ratios.

Each interval here is the set of parameter values a two-sided test does not reject, so a
row that reports the interval beside the same test's p-value can never contradict
itself: the interval excludes the null value exactly when p < alpha.

- :func:`score_test_diff` / :func:`score_interval_diff`: the Miettinen-Nurminen score
  test of p_t - p_c = delta (variance at the maximum-likelihood estimates restricted to
  the hypothesis, with their n / (n - 1) correction) and the interval inverting it.
  Unlike the Wald interval it stays inside [-1, 1] and keeps its coverage with small
  counts or an arm at 0% or 100%.
- :func:`score_interval_ratio`: the same for the risk ratio p_t / p_c (Koopman's
  restricted estimates); at ratio 1 its statistic equals the difference's at 0.
- :func:`fieller`: Fieller's interval for a ratio of two (possibly correlated) normal
  estimates N / D, the set of rho with |N - rho D| / sd(N - rho D) <= q. It is bounded
  only when D is itself clearly nonzero (|D| / sd(D) > q); otherwise it is a whole line
  or two rays, reported as undefined with the reason.

The score interval of a difference is computed here rather than by statsmodels, whose
constrained estimate for a nonzero hypothesised difference has ``count0`` where ``nobs0``
belongs in the cubic (statsmodels issue #10269); its test at equality and its risk-ratio
interval are right and serve as references in the tests.

Pure functions on counts and moments; no database, web or pandas imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from analytics.stats.sufficient import MeanStats

#: A 2x2 table with an expected count below this in some cell is a small sample.
MIN_EXPECTED_COUNT = 10

#: Root-finding tolerance of the inverted intervals (absolute, on the parameter's scale).
ROOT_TOLERANCE = 1e-15

#: The range of risk ratios the score interval is searched over.
_MAX_RATIO = 1e12
_TINY_RATIO = 1e-12


def _mn_correction(n_total: int) -> float:
    return n_total / (n_total - 1)


def _restricted_diff(count_t: int, n_t: int, count_c: int, n_c: int,
                     delta: float) -> tuple[float, float]:
    """Maximum-likelihood (p_t, p_c) under p_t - p_c = delta (Farrington-Manning cubic)."""
    n_total, count = n_t + n_c, count_t + count_c
    if delta == 0:
        pooled = count / n_total
        return pooled, pooled
    l3 = n_total
    l2 = (n_t + 2 * n_c) * delta - n_total - count
    l1 = (n_c * delta - n_total - 2 * count_c) * delta + count
    l0 = count_c * delta * (1 - delta)
    q = (l2 / (3 * l3)) ** 3 - l1 * l2 / (6 * l3 * l3) + l0 / (2 * l3)
    radicand = max((l2 / (3 * l3)) ** 2 - l1 / (3 * l3), 0.0)
    p = math.copysign(math.sqrt(radicand), q)
    if p == 0:
        p_c = -l2 / (3 * l3)
    else:
        cosine = max(-1.0, min(1.0, q / p**3))
        p_c = 2 * p * math.cos((math.pi + math.acos(cosine)) / 3) - l2 / (3 * l3)
    # Rounding can leave the estimate a hair outside the parameter space.
    p_c = min(max(p_c, max(0.0, -delta)), min(1.0, 1.0 - delta))
    return p_c + delta, p_c


def score_statistic_diff(count_t: int, n_t: int, count_c: int, n_c: int,
                         delta: float = 0.0) -> float:
    """Miettinen-Nurminen score statistic of H0: p_t - p_c = delta (needs n_t, n_c >= 1).

    Returns +-inf when the restricted variance is 0 and the estimate differs from delta,
    0.0 when it does not (the data cannot reject delta then).
    """
    diff = count_t / n_t - count_c / n_c - delta
    p_t, p_c = _restricted_diff(count_t, n_t, count_c, n_c, delta)
    variance = (p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c) * _mn_correction(n_t + n_c)
    if variance <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(variance)


def _bound(statistic: Callable[[float], float], estimate: float, search_limit: float,
           target: float, limit: float | None) -> float | None:
    """Where the decreasing ``statistic`` (0 at ``estimate``) crosses ``target``.

    The search runs from ``estimate`` towards ``search_limit``; when the statistic does not
    reach ``target`` there (or the estimate is already at the parameter's edge), the bound
    is the parameter's own ``limit`` (None: unbounded).
    """
    from scipy.optimize import brentq
    if (search_limit - estimate) * target >= 0:
        return limit
    if abs(statistic(search_limit)) <= abs(target):
        return limit
    low, high = sorted((estimate, search_limit))
    return float(brentq(lambda v: statistic(v) - target, low, high,
                        xtol=ROOT_TOLERANCE, rtol=4 * 2.0**-52))


#: The score statistics are evaluated a hair inside the open parameter space.
_EDGE = 1.0 - 1e-13


def score_interval_diff(count_t: int, n_t: int, count_c: int, n_c: int, *,
                        quantile: float) -> tuple[float, float]:
    """Miettinen-Nurminen interval of p_t - p_c: every delta the score test keeps.

    ``quantile`` is the normal quantile z_{1-alpha/2}. Always inside [-1, 1].
    """
    estimate = count_t / n_t - count_c / n_c

    def statistic(delta: float) -> float:
        return score_statistic_diff(count_t, n_t, count_c, n_c, delta)

    low = _bound(statistic, estimate, -_EDGE, quantile, -1.0)
    high = _bound(statistic, estimate, _EDGE, -quantile, 1.0)
    assert low is not None and high is not None
    return low, high


def _restricted_ratio(count_t: int, n_t: int, count_c: int, n_c: int,
                      ratio: float) -> tuple[float, float]:
    """Maximum-likelihood (p_t, p_c) under p_t = ratio x p_c (Koopman's quadratic)."""
    n_total, count = n_t + n_c, count_t + count_c
    if ratio == 1:
        pooled = count / n_total
        return pooled, pooled
    a = n_total * ratio
    b = -(n_t * ratio + count_t + n_c + count_c * ratio)
    # The smaller root of a x^2 + b x + count, in the form that does not cancel (b < 0).
    p_c = 2 * count / (-b + math.sqrt(max(b * b - 4 * a * count, 0.0)))
    p_c = min(max(p_c, 0.0), min(1.0, 1.0 / ratio))
    return min(ratio * p_c, 1.0), p_c


def score_statistic_ratio(count_t: int, n_t: int, count_c: int, n_c: int,
                          ratio: float = 1.0) -> float:
    """Miettinen-Nurminen score statistic of H0: p_t / p_c = ratio (ratio > 0)."""
    numerator = count_t / n_t - ratio * count_c / n_c
    p_t, p_c = _restricted_ratio(count_t, n_t, count_c, n_c, ratio)
    variance = ((p_t * (1 - p_t) / n_t + ratio * ratio * p_c * (1 - p_c) / n_c)
                * _mn_correction(n_t + n_c))
    if variance <= 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def score_interval_ratio(count_t: int, n_t: int, count_c: int, n_c: int, *,
                         quantile: float) -> tuple[float, float | None]:
    """Miettinen-Nurminen (Koopman) interval of the risk ratio p_t / p_c.

    The lower bound is 0 when the treatment arm has no successes; the upper bound is
    None (unbounded) when the control arm has none. Needs count_t + count_c > 0.
    """
    def statistic(ratio: float) -> float:
        return score_statistic_ratio(count_t, n_t, count_c, n_c, ratio)

    estimate = (_MAX_RATIO if count_c == 0 else
                max((count_t / n_t) / (count_c / n_c), _TINY_RATIO))
    low = _bound(statistic, estimate, _TINY_RATIO, quantile, 0.0)
    high = None if count_c == 0 else _bound(statistic, estimate, _MAX_RATIO, -quantile, None)
    assert low is not None
    return low, high


@dataclass(frozen=True)
class RatioInterval:
    """A ratio's interval, or None bounds with the reason it is unbounded."""

    low: float | None
    high: float | None
    reason: str | None = None


def fieller(*, numerator: float, denominator: float, numerator_var: float,
            denominator_var: float, covariance: float = 0.0, quantile: float,
            denominator_name: str = "the denominator") -> RatioInterval:
    """Fieller's interval of numerator / denominator: {rho : |N - rho D| <= q sd(N - rho D)}.

    Solves rho^2 (D^2 - q^2 Var D) - 2 rho (N D - q^2 Cov) + (N^2 - q^2 Var N) <= 0. The
    set is a bounded interval only when D^2 > q^2 Var D, i.e. the denominator is itself
    significantly nonzero at the same level; otherwise the bounds are None.
    """
    q2 = quantile * quantile
    a = denominator * denominator - q2 * denominator_var
    b = numerator * denominator - q2 * covariance
    c = numerator * numerator - q2 * numerator_var
    if a <= 0:
        return RatioInterval(None, None, reason=(
            f"{denominator_name} is not clearly nonzero (|estimate| / standard error "
            f"= {_signal(denominator, denominator_var)} <= {quantile:.3g}): Fieller's "
            "interval is unbounded"))
    discriminant = b * b - a * c
    if discriminant < 0:
        # Only possible through rounding when a > 0 (then b^2 - ac >= 0 in exact terms).
        discriminant = 0.0
    root = math.sqrt(discriminant)
    # The numerically stable pair of roots of a rho^2 - 2 b rho + c.
    if b >= 0:
        far = (b + root) / a
        near = c / (b + root) if b + root != 0 else far
    else:
        far = (b - root) / a
        near = c / (b - root)
    low, high = sorted((near, far))
    return RatioInterval(low, high)


def _signal(estimate: float, variance: float) -> str:
    if variance <= 0:
        return "inf"
    return f"{abs(estimate) / math.sqrt(variance):.3g}"


def finney_g(denominator: float, denominator_var: float, quantile: float) -> float:
    """Finney's g = q^2 Var D / D^2: the delta method is adequate for N / D when g is small."""
    if denominator == 0:
        return math.inf
    return quantile * quantile * denominator_var / (denominator * denominator)


#: Finney's g above which the delta method's symmetric interval for a ratio is replaced by
#: Fieller's (the denominator's own uncertainty then skews the ratio noticeably).
FINNEY_G_LIMIT = 0.05

LIFT_DELTA = "delta method"
LIFT_FIELLER = "Fieller"
LIFT_SCORE = "Miettinen-Nurminen score (risk ratio)"


@dataclass(frozen=True)
class Lift:
    """A relative lift treatment / control - 1 with its interval and how it was made."""

    value: float | None = None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    method: str | None = None
    reason: str | None = None


def relative_lift(*, control_mean: float, control_var: float, treatment_mean: float,
                  treatment_var: float, alpha: float, quantile: float,
                  nonnegative: bool) -> Lift:
    """treatment / control - 1 from two independent arm estimates and their variances.

    The delta-method normal interval (Var ≈ Var(t)/c² + t² Var(c)/c⁴) when it is adequate;
    Fieller's interval, which inverts the row's own test at every ratio with the row's
    ``quantile`` (z, or Welch's t), when the control mean is imprecise (Finney's g >=
    :data:`FINNEY_G_LIMIT`) or the delta interval leaves the possible range. For a
    ``nonnegative`` metric the lift cannot be below -100%, and the interval is cut there.
    """
    from scipy import stats as sps
    ratio = treatment_mean / control_mean if control_mean != 0 else math.inf
    if not math.isfinite(ratio):
        return Lift(reason="control mean is zero: relative lift is undefined")
    lift = ratio - 1.0
    # Var(t/c) ≈ (Var t + (t/c)² Var c) / c², in an order that cannot underflow to 0 / 0.
    variance = (treatment_var + ratio * ratio * control_var) / control_mean / control_mean
    if not math.isfinite(variance):
        return Lift(value=lift, reason="control mean is too close to zero: the relative "
                                       "lift interval is undefined")
    if variance <= 0:
        return Lift(value=lift, reason="no variance: relative lift interval is undefined")
    se = math.sqrt(variance)
    half = float(sps.norm.isf(alpha / 2)) * se
    floor = -1.0 if nonnegative else -math.inf
    if finney_g(control_mean, control_var, quantile) < FINNEY_G_LIMIT and lift - half >= floor:
        return Lift(value=lift, se=se, ci_low=lift - half, ci_high=lift + half,
                    method=LIFT_DELTA)
    interval = fieller(numerator=treatment_mean, denominator=control_mean,
                       numerator_var=treatment_var, denominator_var=control_var,
                       quantile=quantile, denominator_name="the control mean")
    if interval.low is None or interval.high is None:
        return Lift(value=lift, se=se, method=LIFT_FIELLER,
                    reason=f"no relative lift interval: {interval.reason}")
    return Lift(value=lift, se=se, ci_low=max(interval.low - 1.0, floor),
                ci_high=interval.high - 1.0, method=LIFT_FIELLER)


def small_table_note(control: MeanStats, treatment: MeanStats) -> str | None:
    """Why the 2x2 table (arm x outcome) is too small for the Wald interval, or None.

    Small: an expected count (under no difference) below :data:`MIN_EXPECTED_COUNT` in a
    cell, or an empty cell (an arm at 0% or 100%, whose Wald variance is then 0).
    """
    n = control.n + treatment.n
    successes = control.sum + treatment.sum
    expected = min(arm.n * share for arm in (control, treatment)
                   for share in (successes / n, 1 - successes / n))
    empty = min(control.sum, control.n - control.sum, treatment.sum,
                treatment.n - treatment.sum) == 0
    if expected >= MIN_EXPECTED_COUNT and not empty:
        return None
    why = (f"a cell of the 2x2 table expects {expected:.3g} units (< {MIN_EXPECTED_COUNT})"
           if expected < MIN_EXPECTED_COUNT else "a cell of the 2x2 table is empty")
    return (f"small sample: {why}, so the Wald interval is unreliable; the "
            "Miettinen-Nurminen score test and the score interval inverting it are used")


def score_lift(counts: tuple[int, int, int, int], *, pc: float, pt: float, var_c: float,
                var_t: float, quantile: float) -> Lift:
    """The relative lift of a small table: the score interval of the risk ratio, minus 1.

    At ratio 1 its statistic equals the difference's score statistic at 0, so this
    interval excludes 0 exactly when the row's p < alpha too. ``rel_lift_se`` stays the
    delta-method standard error (descriptive; the interval does not use it).
    """
    if pc == 0:
        return Lift(reason="control mean is zero: relative lift is undefined")
    variance = var_t / pc**2 + pt**2 * var_c / pc**4
    se = math.sqrt(variance) if variance > 0 else None
    low, high = score_interval_ratio(*counts, quantile=quantile)
    if high is None:
        return Lift(value=pt / pc - 1.0, se=se, method=LIFT_SCORE,
                    reason="the relative lift's score interval has no upper bound")
    return Lift(value=pt / pc - 1.0, se=se, ci_low=low - 1.0, ci_high=high - 1.0,
                method=LIFT_SCORE)
