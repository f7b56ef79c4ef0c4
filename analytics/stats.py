"""Experiment statistics on sufficient statistics: pure functions, frozen results.

Every function takes per-arm aggregates (counts, sums, sums of squares and
cross-products) that the SQL layer computes in the database, so no raw rows are
ever needed here. The module imports no database, web or pandas code.

Conventions shared by every result:

- ``diff`` is treatment minus control; ``rel_lift`` is treatment / control - 1.
- Degenerate data (an empty arm, n < 2, zero variance, a zero control mean)
  never raises and never yields NaN or infinity: the undefined fields are
  ``None`` and ``reason`` says why in words a report can print. Invalid
  *parameters* (alpha outside (0, 1), negative counts, mismatched lengths) are
  programming or configuration errors and raise ``ValueError``.
- p-values come from survival functions (``sf``), never ``1 - cdf``, so a
  p-value of 1e-200 keeps its magnitude. When even ``sf`` underflows to 0.0
  the p-value is reported as the smallest positive float
  (``SMALLEST_P_VALUE``, about 5e-324) with ``p_value_floored=True``; a
  p-value is therefore never 0.
- Sample variances use ddof = 1. Sums of squared deviations are computed as
  ``sum_sq - sum**2 / n`` and treated as exactly zero below a relative
  rounding tolerance, so constant data is recognised as zero-variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, overload

import numpy as np

# SciPy and statsmodels are imported inside the functions that use them: loading them takes
# about a second of every server and CLI start, and most starts never compute a statistic.

__all__ = [
    "SMALLEST_P_VALUE",
    "SRM_THRESHOLD",
    "Comparison",
    "CovariateStats",
    "CupedResult",
    "MeanStats",
    "RatioStats",
    "SequentialResult",
    "SrmResult",
    "compare_means",
    "compare_proportions",
    "compare_ratios",
    "cuped",
    "holm",
    "minimum_detectable_effect",
    "required_sample_size",
    "sequential_rho",
    "sequential_test",
    "srm_check",
]

SMALLEST_P_VALUE = math.ulp(0.0)
"""Reported instead of a p-value that underflows to 0.0 (with ``p_value_floored``)."""

SRM_THRESHOLD = 0.001
"""Sample ratio mismatch is flagged when the chi-square p-value is below this."""

# Relative size below which `sum_sq - sum**2 / n` is rounding noise, not variance.
_ROUNDING_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- inputs


def _sum_sq_dev(n: int, total: float, total_sq: float) -> float:
    """Sum of squared deviations from the mean, from Σv and Σv²."""
    return _residual_ss(total_sq - total * total / n, scale=abs(total_sq))


def _cross_dev(n: int, sum_a: float, sum_b: float, sum_ab: float) -> float:
    """Sum of cross-products of deviations from the means, from Σa, Σb and Σab."""
    return sum_ab - sum_a * sum_b / n


def _residual_ss(residual: float, scale: float) -> float:
    """A sum of squares computed as a difference; rounding noise below ``scale`` is zero."""
    if residual <= _ROUNDING_TOLERANCE * scale:
        return 0.0
    return residual


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"a count cannot be negative (got n={n})")


@dataclass(frozen=True)
class MeanStats:
    """One arm's aggregates of a per-unit metric: n, Σv and Σv².

    For a binary metric (a proportion) ``sum`` is the number of successes and
    ``sum_sq`` equals ``sum``.
    """

    n: int
    sum: float
    sum_sq: float

    def __post_init__(self) -> None:
        _check_count(self.n)

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> MeanStats:
        """Aggregate raw per-unit values (for tests and small imports)."""
        array = np.asarray(values, dtype=float)
        return cls(n=int(array.size), sum=float(array.sum()), sum_sq=float(np.dot(array, array)))

    @property
    def mean(self) -> float | None:
        return self.sum / self.n if self.n > 0 else None

    @property
    def variance(self) -> float | None:
        """Sample variance (ddof = 1); None when n < 2."""
        if self.n < 2:
            return None
        return _sum_sq_dev(self.n, self.sum, self.sum_sq) / (self.n - 1)


def _pair_moments(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> tuple[int, float, float, float, float, float]:
    """(n, Σa, Σa², Σb, Σb², Σab) of paired per-unit values."""
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape:
        raise ValueError("the two series must have one value per unit")
    return (int(first.size), float(first.sum()), float(np.dot(first, first)),
            float(second.sum()), float(np.dot(second, second)), float(np.dot(first, second)))


@dataclass(frozen=True)
class RatioStats:
    """One arm's aggregates of a ratio metric Σx / Σy with per-unit numerator x, denominator y.

    Example: x = a customer's interactions on the target channel, y = all of
    their interactions in the stage; the metric is the target channel's share.
    """

    n: int
    sum_x: float
    sum_x2: float
    sum_y: float
    sum_y2: float
    sum_xy: float

    def __post_init__(self) -> None:
        _check_count(self.n)

    @classmethod
    def from_values(
        cls, *, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
    ) -> RatioStats:
        """Aggregate raw per-unit numerators ``x`` and denominators ``y``."""
        n, sum_x, sum_x2, sum_y, sum_y2, sum_xy = _pair_moments(x, y)
        return cls(n=n, sum_x=sum_x, sum_x2=sum_x2, sum_y=sum_y, sum_y2=sum_y2, sum_xy=sum_xy)

    @property
    def ratio(self) -> float | None:
        """Σx / Σy; None when there are no units or Σy = 0."""
        if self.n == 0 or self.sum_y == 0:
            return None
        return self.sum_x / self.sum_y

    @property
    def ratio_variance(self) -> float | None:
        """Delta-method variance of the ratio estimate.

        Var(R) ≈ (Var(x) - 2 R Cov(x, y) + R² Var(y)) / (n ȳ²), sample moments with ddof = 1.
        """
        ratio = self.ratio
        if ratio is None or self.n < 2:
            return None
        s_xx = _sum_sq_dev(self.n, self.sum_x, self.sum_x2)
        s_yy = _sum_sq_dev(self.n, self.sum_y, self.sum_y2)
        s_xy = _cross_dev(self.n, self.sum_x, self.sum_y, self.sum_xy)
        residual_ss = _residual_ss(
            s_xx - 2 * ratio * s_xy + ratio * ratio * s_yy, scale=s_xx + ratio * ratio * s_yy
        )
        unit_variance = residual_ss / (self.n - 1)
        mean_y = self.sum_y / self.n
        return unit_variance / (self.n * mean_y * mean_y)


@dataclass(frozen=True)
class CovariateStats:
    """One arm's aggregates of an outcome y and its pre-period covariate x (for CUPED)."""

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float
    sum_x2: float
    sum_xy: float

    def __post_init__(self) -> None:
        _check_count(self.n)

    @classmethod
    def from_values(
        cls, *, y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray
    ) -> CovariateStats:
        """Aggregate raw per-unit outcomes ``y`` and covariates ``x``."""
        n, sum_y, sum_y2, sum_x, sum_x2, sum_xy = _pair_moments(y, x)
        return cls(n=n, sum_y=sum_y, sum_y2=sum_y2, sum_x=sum_x, sum_x2=sum_x2, sum_xy=sum_xy)

    @property
    def outcome(self) -> MeanStats:
        """The outcome alone, for the unadjusted comparison."""
        return MeanStats(n=self.n, sum=self.sum_y, sum_sq=self.sum_y2)


# -------------------------------------------------------------------------- results


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Treatment versus control on one metric.

    ``control_mean`` / ``treatment_mean`` are the per-arm estimates (a rate, a
    mean, a ratio Σx/Σy, or a CUPED-adjusted mean). ``statistic`` is the z or
    t statistic of ``diff`` and ``df`` its degrees of freedom (None for z).
    The relative lift interval is always a normal (delta-method) interval.
    """

    method: str
    alpha: float
    control_n: int
    treatment_n: int
    control_mean: float | None = None
    treatment_mean: float | None = None
    diff: float | None = None
    diff_se: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    statistic: float | None = None
    df: float | None = None
    p_value: float | None = None
    p_value_floored: bool = False
    rel_lift: float | None = None
    rel_lift_se: float | None = None
    rel_lift_ci_low: float | None = None
    rel_lift_ci_high: float | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class CupedResult:
    """A CUPED-adjusted comparison and how much variance the covariate removed."""

    comparison: Comparison
    theta: float | None = None
    variance_reduction: float | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class SrmResult:
    """Sample ratio mismatch check of assignment counts against the planned weights."""

    p_value: float | None
    chi2: float | None
    flagged: bool
    threshold: float = SRM_THRESHOLD
    p_value_floored: bool = False
    reason: str | None = None


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


# -------------------------------------------------------------------------- helpers


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1 (got {alpha})")


def _floor_p(p: float) -> tuple[float, bool]:
    """Cap a p-value at 1 and replace an underflowed 0.0 by the smallest positive float."""
    p = min(float(p), 1.0)
    if p > 0.0:
        return p, False
    return SMALLEST_P_VALUE, True


def _join(*reasons: str | None) -> str | None:
    present = [reason for reason in reasons if reason]
    return "; ".join(present) if present else None


@dataclass(frozen=True)
class _Lift:
    value: float | None = None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str | None = None

    def fields(self) -> dict[str, float | None]:
        """The :class:`Comparison` fields of the relative lift."""
        return {
            "rel_lift": self.value,
            "rel_lift_se": self.se,
            "rel_lift_ci_low": self.ci_low,
            "rel_lift_ci_high": self.ci_high,
        }


NO_VARIANCE = "no variance in either arm: test and intervals are undefined"


def _relative_lift(
    *,
    control_mean: float,
    control_var: float,
    treatment_mean: float,
    treatment_var: float,
    alpha: float,
) -> _Lift:
    """treatment / control - 1 with a delta-method normal interval.

    ``control_var`` and ``treatment_var`` are variances of the arm *estimates*
    (e.g. v / n for a mean): Var(mt/mc) ≈ Var(mt)/mc² + mt² Var(mc)/mc⁴.
    """
    from scipy import stats as sps
    if control_mean == 0:
        return _Lift(reason="control mean is zero: relative lift is undefined")
    lift = treatment_mean / control_mean - 1.0
    variance = treatment_var / control_mean**2 + treatment_mean**2 * control_var / control_mean**4
    if variance <= 0:
        return _Lift(value=lift, reason="no variance: relative lift interval is undefined")
    se = math.sqrt(variance)
    half = float(sps.norm.isf(alpha / 2)) * se
    return _Lift(value=lift, se=se, ci_low=lift - half, ci_high=lift + half)


def _welch(
    *,
    control_mean: float,
    control_variance: float,
    control_n: int,
    treatment_mean: float,
    treatment_variance: float,
    treatment_n: int,
    alpha: float,
    method: str,
) -> Comparison:
    """Welch t comparison from each arm's mean, sample variance and n (both n >= 2)."""
    from scipy import stats as sps
    var_c = control_variance / control_n
    var_t = treatment_variance / treatment_n
    diff = treatment_mean - control_mean
    var_diff = var_c + var_t
    if var_diff <= 0:
        return _too_small(
            method=method,
            alpha=alpha,
            control_n=control_n,
            treatment_n=treatment_n,
            control_mean=control_mean,
            treatment_mean=treatment_mean,
            reason=NO_VARIANCE,
        )
    se = math.sqrt(var_diff)
    # Welch-Satterthwaite degrees of freedom.
    df = var_diff**2 / (var_c**2 / (control_n - 1) + var_t**2 / (treatment_n - 1))
    t_stat = diff / se
    p_value, floored = _floor_p(2.0 * float(sps.t.sf(abs(t_stat), df)))
    half = float(sps.t.isf(alpha / 2, df)) * se
    lift = _relative_lift(
        control_mean=control_mean,
        control_var=var_c,
        treatment_mean=treatment_mean,
        treatment_var=var_t,
        alpha=alpha,
    )
    return Comparison(
        method=method,
        alpha=alpha,
        control_n=control_n,
        treatment_n=treatment_n,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        diff=diff,
        diff_se=se,
        diff_ci_low=diff - half,
        diff_ci_high=diff + half,
        statistic=t_stat,
        df=df,
        p_value=p_value,
        p_value_floored=floored,
        **lift.fields(),
        reason=lift.reason,
    )


def _too_small(
    *,
    method: str,
    alpha: float,
    control_n: int,
    treatment_n: int,
    control_mean: float | None,
    treatment_mean: float | None,
    reason: str,
) -> Comparison:
    """A comparison that can only report the arm estimates (and their difference)."""
    diff = (
        treatment_mean - control_mean
        if control_mean is not None and treatment_mean is not None
        else None
    )
    return Comparison(
        method=method,
        alpha=alpha,
        control_n=control_n,
        treatment_n=treatment_n,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        diff=diff,
        reason=reason,
    )


def _small_arm_reason(control_n: int, treatment_n: int, minimum: int) -> str | None:
    small = [
        f"{arm} has n={n}"
        for arm, n in (("control", control_n), ("treatment", treatment_n))
        if n < minimum
    ]
    if not small:
        return None
    return f"too few units (need at least {minimum} per arm): " + ", ".join(small)


# ----------------------------------------------------------------------- comparisons

PROPORTIONS_METHOD = "two-sample z test (pooled SE), unpooled Wald CI, delta-method relative lift"
MEANS_METHOD = "Welch t test (Welch-Satterthwaite df), delta-method relative lift"
RATIOS_METHOD = "ratio metric Σx/Σy, delta-method variance, z test"
CUPED_METHOD = "CUPED (pooled within-arm theta) then Welch t test"


def compare_proportions(
    control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05
) -> Comparison:
    """Difference of two proportions (``sum`` = successes) with CI, p-value and relative lift.

    The test statistic uses the pooled standard error sqrt(p̂(1-p̂)(1/nc + 1/nt))
    (the null hypothesis says both arms share p̂; statsmodels ``proportions_ztest``);
    the interval uses the unpooled Wald standard error
    sqrt(pc(1-pc)/nc + pt(1-pt)/nt) (statsmodels ``confint_proportions_2indep``,
    method "wald"). The two can disagree at the margin: a CI that just
    touches 0 with p slightly under alpha, or vice versa.
    """
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
    _check_alpha(alpha)
    for arm in (control, treatment):
        if not 0 <= arm.sum <= arm.n:
            raise ValueError(f"successes must lie in [0, n] for a proportion (got {arm})")
    nc, nt = control.n, treatment.n
    if nc == 0 or nt == 0:
        return _too_small(
            method=PROPORTIONS_METHOD,
            alpha=alpha,
            control_n=nc,
            treatment_n=nt,
            control_mean=control.mean,
            treatment_mean=treatment.mean,
            reason="an arm has no units: nothing to compare",
        )
    pc, pt = control.sum / nc, treatment.sum / nt
    pooled = (control.sum + treatment.sum) / (nc + nt)
    if pooled in (0.0, 1.0):
        return _too_small(
            method=PROPORTIONS_METHOD,
            alpha=alpha,
            control_n=nc,
            treatment_n=nt,
            control_mean=pc,
            treatment_mean=pt,
            reason="every unit has the same outcome: test and intervals are undefined",
        )
    z_stat, raw_p = proportions_ztest(
        count=[treatment.sum, control.sum], nobs=[nt, nc], alternative="two-sided"
    )
    p_value, floored = _floor_p(float(raw_p))
    var_c, var_t = pc * (1 - pc) / nc, pt * (1 - pt) / nt
    se = math.sqrt(var_c + var_t)
    ci_low: float | None = None
    ci_high: float | None = None
    ci_reason = None
    if se > 0:
        low, high = confint_proportions_2indep(
            treatment.sum, nt, control.sum, nc, method="wald", compare="diff", alpha=alpha
        )
        ci_low, ci_high = float(low), float(high)
    else:
        ci_reason = "both arms are at 0% or 100%: the Wald interval is undefined"
    lift = _relative_lift(
        control_mean=pc, control_var=var_c, treatment_mean=pt, treatment_var=var_t, alpha=alpha
    )
    return Comparison(
        method=PROPORTIONS_METHOD,
        alpha=alpha,
        control_n=nc,
        treatment_n=nt,
        control_mean=pc,
        treatment_mean=pt,
        diff=pt - pc,
        diff_se=se if se > 0 else None,
        diff_ci_low=ci_low,
        diff_ci_high=ci_high,
        statistic=float(z_stat),
        p_value=p_value,
        p_value_floored=floored,
        **lift.fields(),
        reason=_join(ci_reason, lift.reason),
    )


def compare_means(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> Comparison:
    """Difference of two means by Welch's t test (unequal variances), with relative lift.

    The difference's CI uses the t quantile at the Welch-Satterthwaite df, as
    ``scipy.stats.ttest_ind(equal_var=False)`` does; the relative lift's CI is
    a normal delta-method interval.
    """
    _check_alpha(alpha)
    small = _small_arm_reason(control.n, treatment.n, 2)
    if small:
        return _too_small(
            method=MEANS_METHOD,
            alpha=alpha,
            control_n=control.n,
            treatment_n=treatment.n,
            control_mean=control.mean,
            treatment_mean=treatment.mean,
            reason=small,
        )
    return _welch(
        control_mean=control.sum / control.n,
        control_variance=_sum_sq_dev(control.n, control.sum, control.sum_sq) / (control.n - 1),
        control_n=control.n,
        treatment_mean=treatment.sum / treatment.n,
        treatment_variance=(
            _sum_sq_dev(treatment.n, treatment.sum, treatment.sum_sq) / (treatment.n - 1)
        ),
        treatment_n=treatment.n,
        alpha=alpha,
        method=MEANS_METHOD,
    )


def compare_ratios(
    control: RatioStats, treatment: RatioStats, *, alpha: float = 0.05
) -> Comparison:
    """Difference and relative lift of a ratio metric Σx/Σy, delta method, z test.

    Each arm's ratio R = Σx/Σy has Var(R) ≈ (Var(x) - 2R Cov(x,y) + R² Var(y)) / (n ȳ²)
    (units are the randomisation units, so x and y are correlated within a unit).
    """
    from scipy import stats as sps
    _check_alpha(alpha)
    reasons = [_small_arm_reason(control.n, treatment.n, 2)]
    reasons += [
        f"{arm} denominator sums to zero: its ratio is undefined"
        for arm, stats in (("control", control), ("treatment", treatment))
        if stats.n > 0 and stats.sum_y == 0
    ]
    rc, rt = control.ratio, treatment.ratio
    var_rc, var_rt = control.ratio_variance, treatment.ratio_variance
    if rc is None or rt is None or var_rc is None or var_rt is None:
        return _too_small(
            method=RATIOS_METHOD,
            alpha=alpha,
            control_n=control.n,
            treatment_n=treatment.n,
            control_mean=rc,
            treatment_mean=rt,
            reason=_join(*reasons) or "ratio undefined",
        )
    diff = rt - rc
    var_diff = var_rc + var_rt
    if var_diff <= 0:
        return _too_small(
            method=RATIOS_METHOD,
            alpha=alpha,
            control_n=control.n,
            treatment_n=treatment.n,
            control_mean=rc,
            treatment_mean=rt,
            reason=NO_VARIANCE,
        )
    se = math.sqrt(var_diff)
    z_stat = diff / se
    p_value, floored = _floor_p(2.0 * float(sps.norm.sf(abs(z_stat))))
    half = float(sps.norm.isf(alpha / 2)) * se
    lift = _relative_lift(
        control_mean=rc, control_var=var_rc, treatment_mean=rt, treatment_var=var_rt, alpha=alpha
    )
    return Comparison(
        method=RATIOS_METHOD,
        alpha=alpha,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=rc,
        treatment_mean=rt,
        diff=diff,
        diff_se=se,
        diff_ci_low=diff - half,
        diff_ci_high=diff + half,
        statistic=z_stat,
        p_value=p_value,
        p_value_floored=floored,
        **lift.fields(),
        reason=lift.reason,
    )


def cuped(
    control: CovariateStats, treatment: CovariateStats, *, alpha: float = 0.05
) -> CupedResult:
    """CUPED: adjust the outcome by a pre-period covariate, then compare by Welch's t test.

    theta = Σ_arms S_xy / Σ_arms S_xx, the pooled *within-arm* regression slope of
    y on x (S = sums of deviations from each arm's own means). With this theta
    the adjusted difference equals the treatment coefficient of the OLS
    regression y ~ 1 + treatment + x exactly. Each arm's adjusted mean is
    ȳ - theta (x̄ - x̄_all) and its variance Var(y) + theta² Var(x) - 2 theta Cov(x, y);
    theta is treated as known (the usual CUPED approximation, negligible at
    experiment sizes). ``variance_reduction`` = 1 - pooled adjusted variance /
    pooled unadjusted variance, which equals the squared pooled within-arm
    correlation of x and y.
    """
    _check_alpha(alpha)
    small = _small_arm_reason(control.n, treatment.n, 2)
    if small:
        unadjusted = compare_means(control.outcome, treatment.outcome, alpha=alpha)
        return CupedResult(comparison=unadjusted, reason=small)
    arms = (control, treatment)
    s_xx = [_sum_sq_dev(a.n, a.sum_x, a.sum_x2) for a in arms]
    s_yy = [_sum_sq_dev(a.n, a.sum_y, a.sum_y2) for a in arms]
    s_xy = [_cross_dev(a.n, a.sum_x, a.sum_y, a.sum_xy) for a in arms]
    reason = None
    if sum(s_xx) > 0:
        theta = sum(s_xy) / sum(s_xx)
    else:
        theta = 0.0
        reason = "the covariate does not vary within arms: no adjustment made"
    mean_x_all = (control.sum_x + treatment.sum_x) / (control.n + treatment.n)
    adjusted_means = [a.sum_y / a.n - theta * (a.sum_x / a.n - mean_x_all) for a in arms]
    adjusted_s_yy = [
        _residual_ss(yy - 2 * theta * xy + theta * theta * xx, scale=yy + theta * theta * xx)
        for yy, xy, xx in zip(s_yy, s_xy, s_xx, strict=True)
    ]
    variance_reduction = None
    if sum(s_yy) > 0:
        variance_reduction = 1.0 - sum(adjusted_s_yy) / sum(s_yy)
    else:
        reason = _join(reason, "the outcome does not vary within arms")
    comparison = _welch(
        control_mean=adjusted_means[0],
        control_variance=adjusted_s_yy[0] / (control.n - 1),
        control_n=control.n,
        treatment_mean=adjusted_means[1],
        treatment_variance=adjusted_s_yy[1] / (treatment.n - 1),
        treatment_n=treatment.n,
        alpha=alpha,
        method=CUPED_METHOD,
    )
    return CupedResult(
        comparison=comparison,
        theta=theta,
        variance_reduction=variance_reduction,
        reason=_join(reason, comparison.reason),
    )


# ------------------------------------------------------------- multiplicity and SRM


@overload
def holm(p_values: Sequence[float]) -> list[float]: ...
@overload
def holm(p_values: Sequence[float | None]) -> list[float | None]: ...
def holm(p_values: Sequence[float | None]) -> list[float | None] | list[float]:
    """Holm step-down adjusted p-values, in the input order.

    ``None`` entries (comparisons whose p-value is undefined) stay ``None`` and
    do not count towards the family size: an undefined test cannot reject.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    values = [float(p) for p in p_values if p is not None]
    if any(not 0.0 <= p <= 1.0 for p in values):  # also rejects NaN
        raise ValueError(f"p-values must lie in [0, 1] (got {list(p_values)})")
    adjusted: list[float | None] = [None] * len(p_values)
    if values:
        # Step-down: the i-th smallest p (0-based) is multiplied by m - i, then made
        # monotone with a running maximum and capped at 1. (statsmodels' multipletests
        # gives the same numbers, tests check it, but runs gc.collect() on every call,
        # which costs up to a second per report with segment breakdowns.)
        m = len(values)
        order = np.argsort(values, kind="stable")
        scaled = np.array(values)[order] * (m - np.arange(m))
        corrected = np.empty(m)
        corrected[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
        for index, p in zip(present, corrected, strict=True):
            adjusted[index] = float(p)
    return adjusted


def srm_check(observed_counts: Sequence[int], expected_weights: Sequence[float]) -> SrmResult:
    """Chi-square goodness-of-fit of assignment counts to the planned arm weights.

    Flagged when p < ``SRM_THRESHOLD`` (0.001). Units found in an arm whose
    planned weight is zero are flagged outright (no p-value).
    """
    from scipy import stats as sps
    if len(observed_counts) != len(expected_weights):
        raise ValueError("one expected weight per observed count is required")
    if any(c < 0 for c in observed_counts) or any(
        not (math.isfinite(w) and w >= 0) for w in expected_weights
    ):
        raise ValueError("counts and weights must be non-negative and finite")
    total = sum(observed_counts)
    if total == 0:
        return SrmResult(p_value=None, chi2=None, flagged=False, reason="no units assigned yet")
    if sum(expected_weights) <= 0:
        raise ValueError("expected weights must not all be zero")
    if any(c > 0 for c, w in zip(observed_counts, expected_weights, strict=True) if w == 0):
        return SrmResult(
            p_value=None,
            chi2=None,
            flagged=True,
            reason="units were assigned to an arm whose planned weight is zero",
        )
    kept = [(c, w) for c, w in zip(observed_counts, expected_weights, strict=True) if w > 0]
    if len(kept) < 2:
        return SrmResult(
            p_value=None, chi2=None, flagged=False, reason="a single arm: nothing to compare"
        )
    observed = np.array([c for c, _ in kept], dtype=float)
    weights = np.array([w for _, w in kept], dtype=float)
    expected = total * weights / weights.sum()
    chi2, raw_p = sps.chisquare(observed, f_exp=expected)
    p_value, floored = _floor_p(float(raw_p))
    return SrmResult(
        p_value=p_value,
        chi2=float(chi2),
        flagged=p_value < SRM_THRESHOLD,
        p_value_floored=floored,
    )


# ------------------------------------------------------------------------------ power


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
    _check_alpha(alpha)
    _check_alpha(power, "power")
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
    _check_alpha(alpha)
    _check_alpha(power, "power")
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


# ------------------------------------------------------------------------- sequential


def sequential_rho(*, alpha: float, tuning_n: float) -> float:
    """Mixture parameter rho that makes the confidence sequence tightest at n = ``tuning_n``.

    rho² = (-2 ln alpha + ln(-2 ln alpha + 1)) / tuning_n  (Howard et al. 2021,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", and
    Waudby-Smith et al. 2024, "Time-uniform central limit theory and asymptotic
    confidence sequences"; the choice GrowthBook makes).
    """
    _check_alpha(alpha)
    if not tuning_n > 0:
        raise ValueError("tuning_n must be positive")
    log_alpha = math.log(alpha)
    return math.sqrt((-2 * log_alpha + math.log(-2 * log_alpha + 1)) / tuning_n)


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
    small = _small_arm_reason(control.n, treatment.n, 2)
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
        _sum_sq_dev(arm.n, arm.sum, arm.sum_sq) / (arm.n - 1) / arm.n
        for arm in (control, treatment)
    )
    if var_diff <= 0:
        return replace(undefined, reason="no variance in either arm: the sequence is undefined")
    n_rho2 = n * rho * rho
    half = math.sqrt(n * var_diff) * math.sqrt(
        2 * (n_rho2 + 1) / (n * n_rho2) * math.log(math.sqrt(n_rho2 + 1) / alpha)
    )
    z2 = diff * diff / var_diff
    log_p = 0.5 * math.log(n_rho2 + 1) - z2 * n_rho2 / (2 * (n_rho2 + 1))
    p_value, floored = _floor_p(math.exp(min(log_p, 0.0)))
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
