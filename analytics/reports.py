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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from analytics.metrics import keys as metric_keys
from analytics.metrics import lookup as metric_lookup
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
from campaigns.models import Arm, ArmAllocation, Assignment, Campaign, CampaignOrigin

#: The metrics the goal is judged on; Holm corrects across arms x these.
PRIMARY_METRICS = metric_keys(primary=True)
#: Live metrics where a decrease is the good direction (the Bayesian view's "beat" and
#: "loss" follow it); every other metric, imported ones included, is better when higher.
LOWER_IS_BETTER = frozenset(metric_keys(better="lower"))
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
    metric = metric_lookup(result.metric)
    lower = metric is not None and metric.lower_is_better
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


@dataclass(frozen=True)
class PlannedSplit:
    """The split the sample ratio check tests the arm sizes against, and where it is from.

    ``weights`` are per arm id on any scale (a share is a weight over their total).
    ``assumed`` is True when nothing recorded what was planned and the check assumes
    equal allocation: a report must say so where a reader sees it.
    """

    weights: Mapping[int, float]
    source: str
    assumed: bool = False

    def share(self, arm_id: int) -> float | None:
        total = sum(self.weights.values())
        return self.weights.get(arm_id, 0.0) / total if total > 0 else None


def planned_split(connection: Connection, campaign_id: int) -> PlannedSplit:
    """The planned split of a live or imported campaign (see :class:`PlannedSplit`).

    A live campaign's split is its first allocation period's weights; when its weights were
    edited after exposure (more allocation periods), each period's weights count in
    proportion to the customers assigned during it. An imported experiment's split is the
    one given with ``--weights``; without it equal allocation is assumed.
    """
    allocation = ArmAllocation.__table__  # type: ignore[attr-defined]
    campaign = Campaign.__table__  # type: ignore[attr-defined]
    arm = Arm.__table__  # type: ignore[attr-defined]
    origin = connection.execute(select(campaign.c.origin)
                                .where(campaign.c.id == campaign_id)).scalar_one()
    imported = origin == CampaignOrigin.IMPORTED.value
    periods: dict[int, dict[int, float]] = {}
    for period, arm_id, weight in connection.execute(
            select(allocation.c.period, allocation.c.arm_id, allocation.c.weight)
            .where(allocation.c.campaign_id == campaign_id)):
        periods.setdefault(period, {})[arm_id] = float(weight)
    if not periods:
        arms = connection.execute(select(arm.c.id, arm.c.weight)
                                  .where(arm.c.campaign_id == campaign_id)).all()
        if imported:
            return PlannedSplit({arm_id: 1.0 for arm_id, _ in arms},
                                "equal allocation, ASSUMED: the import did not record a "
                                "planned split (--weights)", assumed=True)
        return PlannedSplit({arm_id: float(weight) for arm_id, weight in arms},
                            "the arms' weights")
    assigned = _assigned_per_period(connection, campaign_id) if len(periods) > 1 else {}
    if len(assigned) <= 1:
        period = next(iter(assigned), min(periods))
        source = ("the planned split given with --weights at import" if imported
                  else f"the arms' planned weights (allocation period {period})")
        return PlannedSplit(periods.get(period, periods[min(periods)]), source)
    weights: dict[int, float] = {}
    for period, customers in assigned.items():
        planned = periods.get(period, {})
        total = sum(planned.values())
        for arm_id, weight in planned.items():
            weights[arm_id] = weights.get(arm_id, 0.0) + customers * weight / total
    return PlannedSplit(weights, f"the planned weights of each of {len(assigned)} "
                        "allocation periods, in proportion to the customers assigned during "
                        "each (the weights were edited during the campaign)")


def _assigned_per_period(connection: Connection, campaign_id: int) -> dict[int, int]:
    assignment = Assignment.__table__  # type: ignore[attr-defined]
    return {int(period): int(count) for period, count in connection.execute(
        select(assignment.c.allocation_period, func.count())
        .where(assignment.c.campaign_id == campaign_id)
        .group_by(assignment.c.allocation_period))}


def srm_against(split: PlannedSplit, units: Mapping[int, int]) -> SrmResult:
    """The sample ratio check of units per arm id against ``split`` (every planned arm)."""
    arm_ids = list(dict.fromkeys([*split.weights, *units]))
    return srm_check([units.get(arm_id, 0) for arm_id in arm_ids],
                     [split.weights.get(arm_id, 0.0) for arm_id in arm_ids])


def sample_ratio(connection: Connection, campaign_id: int,
                 rows: Sequence[dict[str, Any]]) -> SrmResult:
    """Observed units per arm (rows: one or more per arm) against the planned split."""
    units: dict[int, int] = {}
    for row in rows:
        units[row["arm_id"]] = units.get(row["arm_id"], 0) + row["n"]
    return srm_against(planned_split(connection, campaign_id), units)


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
