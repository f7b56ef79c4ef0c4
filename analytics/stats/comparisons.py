"""Treatment against control on one metric: proportions, means, ratios, CUPED."""

from __future__ import annotations

import math
from dataclasses import dataclass

from analytics.stats.common import check_alpha, floor_p, join_reasons, small_arm_reason
from analytics.stats.intervals import (
    Lift,
    relative_lift,
    score_interval_diff,
    score_lift,
    score_statistic_diff,
    small_table_note,
)
from analytics.stats.sufficient import (
    CovariateStats,
    MeanStats,
    RatioStats,
    cross_dev,
    residual_ss,
    sum_sq_dev,
)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Treatment versus control on one metric.

    ``control_mean`` / ``treatment_mean`` are the per-arm estimates (a rate, a
    mean, a ratio Σx/Σy, or a CUPED-adjusted mean). ``statistic`` is the z or
    t statistic of ``diff`` and ``df`` its degrees of freedom (None for z).
    ``p_value`` and the ``diff`` interval come from one test (``interval_method``), so
    the interval excludes 0 exactly when p < alpha. ``rel_lift_interval_method`` says how
    the relative lift's interval was made (delta method, Fieller, or a score interval).
    ``small_sample`` marks a comparison whose normal approximation is doubtful at its
    size; ``reason`` then says so and which interval was used instead.
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
    interval_method: str | None = None
    rel_lift_interval_method: str | None = None
    small_sample: bool = False


@dataclass(frozen=True, kw_only=True)
class CupedResult:
    """A CUPED-adjusted comparison and how much variance the covariate removed."""

    comparison: Comparison
    theta: float | None = None
    variance_reduction: float | None = None
    reason: str | None = None


NO_VARIANCE = "no variance in either arm: test and intervals are undefined"

#: Interval (and test) names a comparison reports in ``interval_method``.
WALD_Z = "Wald z"
SCORE_MN = "Miettinen-Nurminen score"
WELCH_T = "Welch t"
DELTA_Z = "delta-method z"

#: An arm with fewer units than this makes a mean's (or ratio's) comparison a small sample.
MIN_ARM_UNITS = 30


def _lift_fields(lift: Lift) -> dict[str, float | str | None]:
    """The :class:`Comparison` fields of a relative lift."""
    return {"rel_lift": lift.value, "rel_lift_se": lift.se, "rel_lift_ci_low": lift.ci_low,
            "rel_lift_ci_high": lift.ci_high, "rel_lift_interval_method": lift.method}


def _small_arms_note(control_n: int, treatment_n: int, approximation: str) -> str | None:
    if min(control_n, treatment_n) >= MIN_ARM_UNITS:
        return None
    return (f"small sample: an arm has fewer than {MIN_ARM_UNITS} units (control "
            f"n={control_n}, treatment n={treatment_n}), so the {approximation} relies on "
            "the metric being roughly normal, which a skewed metric is not at this size")


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
    nonnegative: bool = False,
) -> Comparison:
    """Welch t comparison from each arm's mean, sample variance and n (both n >= 2).

    The relative lift's Fieller interval (when used) inverts the same Welch t test.
    """
    from scipy import stats as sps
    var_c = control_variance / control_n
    var_t = treatment_variance / treatment_n
    diff = treatment_mean - control_mean
    var_diff = var_c + var_t
    if var_diff <= 0:
        return _too_small(
            method=method, alpha=alpha, control_n=control_n, treatment_n=treatment_n,
            control_mean=control_mean, treatment_mean=treatment_mean, reason=NO_VARIANCE)
    se = math.sqrt(var_diff)
    # Welch-Satterthwaite degrees of freedom, with the variances as shares of their sum
    # so that tiny variances cannot underflow to 0 / 0.
    share_c, share_t = var_c / var_diff, var_t / var_diff
    df = 1.0 / (share_c**2 / (control_n - 1) + share_t**2 / (treatment_n - 1))
    t_stat = diff / se
    p_value, floored = floor_p(2.0 * float(sps.t.sf(abs(t_stat), df)))
    quantile = float(sps.t.isf(alpha / 2, df))
    half = quantile * se
    lift = relative_lift(
        control_mean=control_mean,
        control_var=var_c,
        treatment_mean=treatment_mean,
        treatment_var=var_t,
        alpha=alpha,
        quantile=quantile,
        nonnegative=nonnegative,
    )
    small = _small_arms_note(control_n, treatment_n, "Welch t interval")
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
        **_lift_fields(lift),  # type: ignore[arg-type]
        reason=join_reasons(small, lift.reason),
        interval_method=WELCH_T,
        small_sample=small is not None,
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


PROPORTIONS_METHOD = ("difference of proportions: unpooled Wald z test and interval "
                      "(Miettinen-Nurminen score test and interval for small counts)")


MEANS_METHOD = "Welch t test and interval (Welch-Satterthwaite df)"


RATIOS_METHOD = "ratio metric Σx/Σy, delta-method variance, z test and interval"


CUPED_METHOD = "CUPED (pooled within-arm theta) then Welch t test and interval"


def compare_proportions(
    control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05
) -> Comparison:
    """Difference of two proportions (``sum`` = successes) with CI, p-value and relative lift.

    One test per row. Normally the unpooled Wald z test: z = diff / SE with
    SE = sqrt(pc(1-pc)/nc + pt(1-pt)/nt), and the interval diff ± z_{1-alpha/2} SE
    (statsmodels ``test_proportions_2indep`` / ``confint_proportions_2indep``, method
    "wald"). When :func:`small_table_note` finds the table small, the
    Miettinen-Nurminen score test and the interval inverting it (bounded to [-1, 1]),
    with the score interval of the risk ratio for the relative lift. Either way the
    interval excludes 0 exactly when p < alpha.
    """
    from scipy import stats as sps
    check_alpha(alpha)
    for arm in (control, treatment):
        if not 0 <= arm.sum <= arm.n:
            raise ValueError(f"successes must lie in [0, n] for a proportion (got {arm})")
    nc, nt = control.n, treatment.n
    if nc == 0 or nt == 0:
        return _too_small(
            method=PROPORTIONS_METHOD, alpha=alpha, control_n=nc, treatment_n=nt,
            control_mean=control.mean, treatment_mean=treatment.mean,
            reason="an arm has no units: nothing to compare")
    pc, pt = control.sum / nc, treatment.sum / nt
    pooled = (control.sum + treatment.sum) / (nc + nt)
    if pooled in (0.0, 1.0):
        return _too_small(
            method=PROPORTIONS_METHOD, alpha=alpha, control_n=nc, treatment_n=nt, control_mean=pc,
            treatment_mean=pt,
            reason="every unit has the same outcome: test and intervals are undefined")
    quantile = float(sps.norm.isf(alpha / 2))
    var_c, var_t = pc * (1 - pc) / nc, pt * (1 - pt) / nt
    small = small_table_note(control, treatment)
    if small is None:
        se = math.sqrt(var_c + var_t)
        z_stat = (pt - pc) / se
        ci_low, ci_high = max(pt - pc - quantile * se, -1.0), min(pt - pc + quantile * se, 1.0)
        lift = relative_lift(control_mean=pc, control_var=var_c, treatment_mean=pt,
                             treatment_var=var_t, alpha=alpha, quantile=quantile,
                             nonnegative=True)
    else:
        counts = (round(treatment.sum), nt, round(control.sum), nc)
        z_stat = score_statistic_diff(*counts)
        # The standard error under the null that the score statistic divides by.
        se = (pt - pc) / z_stat if z_stat else math.sqrt(
            pooled * (1 - pooled) * (1 / nc + 1 / nt) * (nc + nt) / (nc + nt - 1))
        ci_low, ci_high = score_interval_diff(*counts, quantile=quantile)
        lift = score_lift(counts, pc=pc, pt=pt, var_c=var_c, var_t=var_t,
                           quantile=quantile)
    p_value, floored = floor_p(2.0 * float(sps.norm.sf(abs(z_stat))))
    return Comparison(
        method=PROPORTIONS_METHOD,
        alpha=alpha,
        control_n=nc,
        treatment_n=nt,
        control_mean=pc,
        treatment_mean=pt,
        diff=pt - pc,
        diff_se=se,
        diff_ci_low=ci_low,
        diff_ci_high=ci_high,
        statistic=z_stat,
        p_value=p_value,
        p_value_floored=floored,
        **_lift_fields(lift),  # type: ignore[arg-type]
        reason=join_reasons(small, lift.reason),
        interval_method=WALD_Z if small is None else SCORE_MN,
        small_sample=small is not None,
    )


def compare_means(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05,
                  nonnegative: bool = False) -> Comparison:
    """Difference of two means by Welch's t test (unequal variances), with relative lift.

    The difference's CI uses the t quantile at the Welch-Satterthwaite df, as
    ``scipy.stats.ttest_ind(equal_var=False)`` does; the relative lift's CI is a
    delta-method interval, or Fieller's (see :func:`~analytics.stats.intervals.relative_lift`).
    ``nonnegative``: the metric cannot be negative, so the lift is at least -100%.
    """
    check_alpha(alpha)
    small = small_arm_reason(control.n, treatment.n, 2)
    if small:
        return _too_small(
            method=MEANS_METHOD, alpha=alpha, control_n=control.n, treatment_n=treatment.n,
            control_mean=control.mean, treatment_mean=treatment.mean, reason=small)
    return _welch(
        control_mean=control.sum / control.n,
        control_variance=sum_sq_dev(control.n, control.sum, control.sum_sq) / (control.n - 1),
        control_n=control.n,
        treatment_mean=treatment.sum / treatment.n,
        treatment_variance=(
            sum_sq_dev(treatment.n, treatment.sum, treatment.sum_sq) / (treatment.n - 1)
        ),
        treatment_n=treatment.n,
        alpha=alpha,
        method=MEANS_METHOD,
        nonnegative=nonnegative,
    )


def compare_ratios(
    control: RatioStats, treatment: RatioStats, *, alpha: float = 0.05,
    nonnegative: bool = False
) -> Comparison:
    """Difference and relative lift of a ratio metric Σx/Σy, delta method, z test.

    Each arm's ratio R = Σx/Σy has Var(R) ≈ (Var(x) - 2R Cov(x,y) + R² Var(y)) / (n ȳ²)
    (units are the randomisation units, so x and y are correlated within a unit).
    """
    from scipy import stats as sps
    check_alpha(alpha)
    reasons = [small_arm_reason(control.n, treatment.n, 2)]
    reasons += [
        f"{arm} denominator sums to zero: its ratio is undefined"
        for arm, stats in (("control", control), ("treatment", treatment))
        if stats.n > 0 and stats.sum_y == 0
    ]
    rc, rt = control.ratio, treatment.ratio
    var_rc, var_rt = control.ratio_variance, treatment.ratio_variance
    if rc is None or rt is None or var_rc is None or var_rt is None:
        return _too_small(
            method=RATIOS_METHOD, alpha=alpha, control_n=control.n, treatment_n=treatment.n,
            control_mean=rc, treatment_mean=rt, reason=join_reasons(*reasons) or "ratio undefined")
    diff = rt - rc
    var_diff = var_rc + var_rt
    if var_diff <= 0:
        return _too_small(
            method=RATIOS_METHOD, alpha=alpha, control_n=control.n, treatment_n=treatment.n,
            control_mean=rc, treatment_mean=rt, reason=NO_VARIANCE)
    se = math.sqrt(var_diff)
    z_stat = diff / se
    p_value, floored = floor_p(2.0 * float(sps.norm.sf(abs(z_stat))))
    quantile = float(sps.norm.isf(alpha / 2))
    half = quantile * se
    lift = relative_lift(control_mean=rc, control_var=var_rc, treatment_mean=rt,
                         treatment_var=var_rt, alpha=alpha, quantile=quantile,
                         nonnegative=nonnegative)
    small = _small_arms_note(control.n, treatment.n, "delta-method z interval")
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
        **_lift_fields(lift),  # type: ignore[arg-type]
        reason=join_reasons(small, lift.reason),
        interval_method=DELTA_Z,
        small_sample=small is not None,
    )


def cuped(
    control: CovariateStats, treatment: CovariateStats, *, alpha: float = 0.05,
    nonnegative: bool = False
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
    correlation of x and y. ``nonnegative`` as for :func:`compare_means`.
    """
    check_alpha(alpha)
    small = small_arm_reason(control.n, treatment.n, 2)
    if small:
        unadjusted = compare_means(control.outcome, treatment.outcome, alpha=alpha,
                                   nonnegative=nonnegative)
        return CupedResult(comparison=unadjusted, reason=small)
    arms = (control, treatment)
    s_xx = [sum_sq_dev(a.n, a.sum_x, a.sum_x2) for a in arms]
    s_yy = [sum_sq_dev(a.n, a.sum_y, a.sum_y2) for a in arms]
    s_xy = [cross_dev(a.n, a.sum_x, a.sum_y, a.sum_xy) for a in arms]
    reason = None
    if sum(s_xx) > 0:
        theta = sum(s_xy) / sum(s_xx)
    else:
        theta = 0.0
        reason = "the covariate does not vary within arms: no adjustment made"
    mean_x_all = (control.sum_x + treatment.sum_x) / (control.n + treatment.n)
    adjusted_means = [a.sum_y / a.n - theta * (a.sum_x / a.n - mean_x_all) for a in arms]
    adjusted_s_yy = [
        residual_ss(yy - 2 * theta * xy + theta * theta * xx, scale=yy + theta * theta * xx)
        for yy, xy, xx in zip(s_yy, s_xy, s_xx, strict=True)
    ]
    variance_reduction = None
    if sum(s_yy) > 0:
        variance_reduction = 1.0 - sum(adjusted_s_yy) / sum(s_yy)
    else:
        reason = join_reasons(reason, "the outcome does not vary within arms")
    comparison = _welch(
        control_mean=adjusted_means[0],
        control_variance=adjusted_s_yy[0] / (control.n - 1),
        control_n=control.n,
        treatment_mean=adjusted_means[1],
        treatment_variance=adjusted_s_yy[1] / (treatment.n - 1),
        treatment_n=treatment.n,
        alpha=alpha,
        method=CUPED_METHOD,
        nonnegative=nonnegative,
    )
    return CupedResult(
        comparison=comparison,
        theta=theta,
        variance_reduction=variance_reduction,
        reason=join_reasons(reason, comparison.reason),
    )
