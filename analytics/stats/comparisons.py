"""Treatment against control on one metric: proportions, means, ratios, CUPED."""

from __future__ import annotations

import math
from dataclasses import dataclass

from analytics.stats.common import check_alpha, floor_p, join_reasons, small_arm_reason
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
    p_value, floored = floor_p(2.0 * float(sps.t.sf(abs(t_stat), df)))
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
    check_alpha(alpha)
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
    p_value, floored = floor_p(float(raw_p))
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
        reason=join_reasons(ci_reason, lift.reason),
    )


def compare_means(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> Comparison:
    """Difference of two means by Welch's t test (unequal variances), with relative lift.

    The difference's CI uses the t quantile at the Welch-Satterthwaite df, as
    ``scipy.stats.ttest_ind(equal_var=False)`` does; the relative lift's CI is
    a normal delta-method interval.
    """
    check_alpha(alpha)
    small = small_arm_reason(control.n, treatment.n, 2)
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
        control_variance=sum_sq_dev(control.n, control.sum, control.sum_sq) / (control.n - 1),
        control_n=control.n,
        treatment_mean=treatment.sum / treatment.n,
        treatment_variance=(
            sum_sq_dev(treatment.n, treatment.sum, treatment.sum_sq) / (treatment.n - 1)
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
            method=RATIOS_METHOD,
            alpha=alpha,
            control_n=control.n,
            treatment_n=treatment.n,
            control_mean=rc,
            treatment_mean=rt,
            reason=join_reasons(*reasons) or "ratio undefined",
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
    p_value, floored = floor_p(2.0 * float(sps.norm.sf(abs(z_stat))))
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
    check_alpha(alpha)
    small = small_arm_reason(control.n, treatment.n, 2)
    if small:
        unadjusted = compare_means(control.outcome, treatment.outcome, alpha=alpha)
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
    )
    return CupedResult(
        comparison=comparison,
        theta=theta,
        variance_reduction=variance_reduction,
        reason=join_reasons(reason, comparison.reason),
    )
