"""A campaign's results: every treatment arm against control, for every metric.

Reads the per-arm sufficient statistics from :mod:`analytics.queries` and runs the
statistics of :mod:`analytics.stats` on them: two-proportion z tests for binary metrics,
Welch tests for the others, the delta method for the target-share ratio, CUPED where a
pre-period exists, Holm across arms x primary metrics, and the sample ratio check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from analytics.queries import BINARY_METRICS, MEAN_METRICS, PRE_PERIOD_METRICS, arm_statistics
from analytics.stats import (
    Comparison,
    CovariateStats,
    MeanStats,
    RatioStats,
    SrmResult,
    compare_means,
    compare_proportions,
    compare_ratios,
    cuped,
    holm,
    srm_check,
)
from campaigns.models import Arm, ArmAllocation, Assignment, Campaign, CampaignOrigin

#: The metrics the goal is judged on; Holm corrects across arms x these.
PRIMARY_METRICS = ("adoption", "target_share")


@dataclass(frozen=True)
class MetricResult:
    arm: str
    metric: str
    segment: str
    comparison: Comparison
    p_value_holm: float | None = None
    variance_reduction: float | None = None


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
                 alpha: float = 0.05) -> list[MetricResult]:
    """Every treatment arm against the control row, for every metric."""
    control = next((row for row in rows if row["is_control"]), None)
    if control is None:
        return []
    results: list[MetricResult] = []
    for row in rows:
        if row["is_control"]:
            continue
        for metric in MEAN_METRICS:
            compare = compare_proportions if metric in BINARY_METRICS else compare_means
            results.append(MetricResult(row["arm"], metric, segment, compare(
                _mean(control, metric), _mean(row, metric), alpha=alpha)))
        results.append(MetricResult(row["arm"], "target_share", segment, compare_ratios(
            _share(control), _share(row), alpha=alpha)))
        for metric in PRE_PERIOD_METRICS:
            adjusted = cuped(_covariate(control, metric), _covariate(row, metric), alpha=alpha)
            results.append(MetricResult(row["arm"], f"{metric}_cuped", segment,
                                        adjusted.comparison,
                                        variance_reduction=adjusted.variance_reduction))
    return with_holm(results)


def with_holm(results: list[MetricResult]) -> list[MetricResult]:
    """Holm-adjusted p-values across arms x primary metrics (others keep None)."""
    primary = [i for i, r in enumerate(results) if r.metric in PRIMARY_METRICS]
    adjusted = holm([results[i].comparison.p_value for i in primary])
    out = list(results)
    for index, p_value in zip(primary, adjusted, strict=True):
        out[index] = replace(out[index], p_value_holm=p_value)
    return out


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


def campaign_results(connection: Connection, campaign_id: int, *, alpha: float = 0.05
                     ) -> CampaignResults:
    # Imported experiments have their own metrics and tables (and no goal); imported
    # at call time because analytics.imported builds on this module's result shapes.
    from analytics.imported import imported_results, is_imported

    if is_imported(connection, campaign_id):
        return imported_results(connection, campaign_id, alpha=alpha)
    rows = arm_statistics(connection, campaign_id)
    return CampaignResults(campaign_id=campaign_id, arms=rows,
                           results=compare_arms(rows, alpha=alpha),
                           srm=sample_ratio(connection, campaign_id, rows))
