"""A campaign's results: every arm against the baseline arm, for every metric.

Reads the per-arm sufficient statistics from :mod:`analytics.queries` and runs the
statistics of :mod:`analytics.stats` on them: two-proportion Wald z tests (score tests for
small tables) for binary metrics, Welch tests for the others, the delta method for the
target-share ratio, CUPED where a pre-period exists, Holm (and Benjamini-Hochberg) across
arms x primary metrics, and the sample ratio check. Each comparison also carries the
Bayesian view (chance to beat the baseline, expected loss) and an always-valid confidence
sequence on the same effect.

The baseline is the control arm unless a report names another arm: then every other arm,
control included, is compared with that one, with the same tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from analytics.queries import BINARY_METRICS, MEAN_METRICS, PRE_PERIOD_METRICS, arm_statistics
from analytics.stats import (
    ArmEstimate,
    BayesianResult,
    Comparison,
    ConfidenceSequence,
    CovariateStats,
    Effect,
    HeterogeneityResult,
    MeanStats,
    RatioStats,
    SrmResult,
    bayesian_effect,
    benjamini_hochberg,
    cochran_q,
    compare_means,
    compare_proportions,
    compare_ratios,
    confidence_sequence,
    cuped,
    cuped_estimates,
    effect,
    holm,
    mean_estimate,
    proportion_estimate,
    ratio_estimate,
    srm_check,
)
from campaigns.models import ArmAllocation, Campaign

#: The metrics the goal is judged on; Holm corrects across arms x these.
PRIMARY_METRICS = ("adoption", "target_share")
#: Live metrics where a decrease is the good direction (the Bayesian view's "beat" and
#: "loss" follow it); every other metric, imported ones included, is better when higher.
LOWER_IS_BETTER = frozenset({"source_interactions", "cost_to_serve", "incentive_cost",
                             "complaints", "churn"})
#: Units (both arms of a comparison) at which a report row's confidence sequence is
#: tightest. Fixed before any data is seen, as the guardrails' DEFAULT_TUNING_N is:
#: a value that followed the sample would void the always-valid guarantee.
REPORT_TUNING_N = 10_000


@dataclass(frozen=True)
class MetricResult:
    """One arm against the baseline arm on one metric (within one segment value)."""

    arm: str
    metric: str
    segment: str
    comparison: Comparison
    p_value_holm: float | None = None
    variance_reduction: float | None = None
    #: Benjamini-Hochberg adjusted p-value over the same family as ``p_value_holm``
    p_value_bh: float | None = None
    #: the arm this one is compared with (the control arm unless a report names another)
    baseline: str | None = None
    #: the absolute effect (treatment - baseline) and the variance of its estimate
    effect: Effect | None = None
    #: the Bayesian view of the absolute effect (flat prior, as gbstats) ...
    bayesian: BayesianResult | None = None
    #: ... and of the relative effect (treatment / baseline - 1)
    bayesian_relative: BayesianResult | None = None
    #: the always-valid confidence sequence on the absolute effect
    sequential: ConfidenceSequence | None = None

    def p_value_adjusted(self, correction: str) -> float | None:
        """The p-value adjusted by ``correction`` ('holm' or 'bh'); None if not corrected."""
        return self.p_value_bh if correction == "bh" else self.p_value_holm


@dataclass(frozen=True)
class SegmentHeterogeneity:
    """Cochran's Q across the values of one breakdown, for one arm and metric."""

    arm: str
    metric: str
    breakdown: str  # the segment column
    test: HeterogeneityResult
    baseline: str | None = None


def with_views(result: MetricResult, baseline: ArmEstimate | None,
               treatment: ArmEstimate | None, *, alpha: float) -> MetricResult:
    """``result`` with its effect, Bayesian view and confidence sequence filled in."""
    lower = result.metric.removesuffix("_cuped") in LOWER_IS_BETTER
    absolute = effect(baseline, treatment)
    relative = effect(baseline, treatment, effect_type="relative")
    return replace(
        result, effect=absolute,
        bayesian=bayesian_effect(absolute, alpha=alpha, lower_is_better=lower),
        bayesian_relative=bayesian_effect(relative, alpha=alpha, lower_is_better=lower,
                                          effect_type="relative"),
        sequential=confidence_sequence(absolute, alpha=alpha, tuning_n=REPORT_TUNING_N))


def choose_baseline(arms: Sequence[str], requested: str | None) -> str | None:
    """``requested`` if it names one of ``arms`` (None: the control arm).

    Raises ValueError naming the arms when it does not.
    """
    if requested is None or requested in arms:
        return requested
    raise ValueError(f"unknown arm '{requested}'; use one of {', '.join(arms)}")


def baseline_row(rows: Sequence[dict[str, Any]], baseline: str | None
                 ) -> dict[str, Any] | None:
    """The row every other arm is compared with: the named arm, else the control arm."""
    if baseline is None:
        return next((row for row in rows if row["is_control"]), None)
    found = next((row for row in rows if row["arm"] == baseline), None)
    if found is None:
        choose_baseline([str(row["arm"]) for row in rows], baseline)
    return found


def _mean(row: dict[str, Any], metric: str) -> MeanStats:
    return MeanStats(n=row["n"], sum=row[f"{metric}_sum"], sum_sq=row[f"{metric}_sum_sq"])


def _share(row: dict[str, Any]) -> RatioStats:
    return RatioStats(n=row["n"], sum_x=row["target_n_sum"], sum_x2=row["target_n_sum_sq"],
                      sum_y=row["stage_n_sum"], sum_y2=row["stage_n_sum_sq"],
                      sum_xy=row["target_stage_cross"])


def _covariate(row: dict[str, Any], metric: str) -> CovariateStats:
    return CovariateStats(n=row["n"], sum_y=row[f"{metric}_sum"],
                          sum_y2=row[f"{metric}_sum_sq"], sum_x=row[f"{metric}_pre_sum"],
                          sum_x2=row[f"{metric}_pre_sum_sq"], sum_xy=row[f"{metric}_cross"])


def compare_arms(rows: Sequence[dict[str, Any]], *, segment: str = "all",
                 alpha: float = 0.05, baseline: str | None = None) -> list[MetricResult]:
    """Every arm against the baseline row (the control arm by default), for every metric.

    ``baseline`` names the arm the others are compared with; ValueError naming the arms
    when no row has that name.
    """
    base = baseline_row(rows, baseline)
    if base is None:
        return []
    results: list[MetricResult] = []
    name = str(base["arm"])
    for row in rows:
        if row is base:
            continue
        arm = row["arm"]
        for metric in MEAN_METRICS:
            binary = metric in BINARY_METRICS
            control_stats, treatment_stats = _mean(base, metric), _mean(row, metric)
            # Every live metric is a count, a 0/1 or an amount of money: never negative.
            comparison = (compare_proportions(control_stats, treatment_stats, alpha=alpha)
                          if binary else
                          compare_means(control_stats, treatment_stats, alpha=alpha,
                                        nonnegative=True))
            estimate = proportion_estimate if binary else mean_estimate
            results.append(with_views(
                MetricResult(arm, metric, segment, comparison, baseline=name),
                estimate(control_stats), estimate(treatment_stats), alpha=alpha))
        results.append(with_views(
            MetricResult(arm, "target_share", segment,
                         compare_ratios(_share(base), _share(row), alpha=alpha,
                                        nonnegative=True),
                         baseline=name),
            ratio_estimate(_share(base)), ratio_estimate(_share(row)), alpha=alpha))
        for metric in PRE_PERIOD_METRICS:
            pair = (_covariate(base, metric), _covariate(row, metric))
            adjusted = cuped(*pair, alpha=alpha, nonnegative=True)
            estimates = cuped_estimates(*pair) or (None, None)
            results.append(with_views(
                MetricResult(arm, f"{metric}_cuped", segment, adjusted.comparison,
                             variance_reduction=adjusted.variance_reduction, baseline=name),
                *estimates, alpha=alpha))
    return with_holm(results)


def with_holm(results: list[MetricResult]) -> list[MetricResult]:
    """Holm- and BH-adjusted p-values across arms x primary metrics (others keep None)."""
    return adjust_family(results, [i for i, r in enumerate(results)
                                   if r.metric in PRIMARY_METRICS])


def adjust_family(results: Sequence[MetricResult], family: Sequence[int]
                  ) -> list[MetricResult]:
    """``results`` with Holm and Benjamini-Hochberg p-values over the ``family`` indices."""
    p_values = [results[i].comparison.p_value for i in family]
    out = list(results)
    for index, by_holm, by_bh in zip(family, holm(p_values), benjamini_hochberg(p_values),
                                     strict=True):
        out[index] = replace(out[index], p_value_holm=by_holm, p_value_bh=by_bh)
    return out


def segment_heterogeneity(segments: Sequence[MetricResult]) -> list[SegmentHeterogeneity]:
    """Cochran's Q per breakdown, arm and metric across the segment values' effects.

    ``segments`` are breakdown rows (``segment`` = "<column>=<value>"); the test uses each
    row's absolute effect and its variance.
    """
    groups: dict[tuple[str, str, str], list[MetricResult]] = {}
    for result in segments:
        breakdown = result.segment.split("=", 1)[0]
        groups.setdefault((breakdown, result.arm, result.metric), []).append(result)
    return [SegmentHeterogeneity(arm=arm, metric=metric, breakdown=breakdown,
                                 baseline=rows[0].baseline,
                                 test=cochran_q([row.effect for row in rows]))
            for (breakdown, arm, metric), rows in groups.items()]


def sample_ratio(connection: Connection, campaign_id: int,
                 rows: Sequence[dict[str, Any]]) -> SrmResult:
    """Observed exposures per arm against the weights of the first allocation period."""
    allocation = ArmAllocation.__table__  # type: ignore[attr-defined]
    campaign = Campaign.__table__  # type: ignore[attr-defined]
    period = connection.execute(select(campaign.c.allocation_period)
                                .where(campaign.c.id == campaign_id)).scalar_one()
    weights: dict[int, int] = {
        arm_id: weight for arm_id, weight in connection.execute(
            select(allocation.c.arm_id, allocation.c.weight)
            .where(allocation.c.campaign_id == campaign_id, allocation.c.period == 1))}
    if period != 1:
        # Later periods change the split; only a one-period campaign has one expectation.
        return srm_check([row["n"] for row in rows], [1.0 for _ in rows])
    return srm_check([row["n"] for row in rows],
                     [float(weights.get(row["arm_id"], 0)) for row in rows])


@dataclass(frozen=True)
class CampaignResults:
    campaign_id: int
    arms: list[dict[str, Any]]
    results: list[MetricResult]
    srm: SrmResult


def campaign_results(connection: Connection, campaign_id: int, *, alpha: float = 0.05,
                     baseline: str | None = None) -> CampaignResults:
    # Imported experiments have their own metrics and tables (and no goal); imported
    # at call time because analytics.imported builds on this module's result shapes.
    from analytics.imported import imported_results, is_imported

    if is_imported(connection, campaign_id):
        return imported_results(connection, campaign_id, alpha=alpha, baseline=baseline)
    rows = arm_statistics(connection, campaign_id)
    return CampaignResults(campaign_id=campaign_id, arms=rows,
                           results=compare_arms(rows, alpha=alpha, baseline=baseline),
                           srm=sample_ratio(connection, campaign_id, rows))
