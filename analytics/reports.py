"""A campaign's results: every treatment arm against control, for every metric.

Reads the per-arm sufficient statistics from :mod:`analytics.queries` and runs the
statistics of :mod:`analytics.stats` on them: two-proportion Wald z tests (score tests for
small tables) for binary metrics, Welch tests for the others, the delta method for the
target-share ratio, CUPED where a
pre-period exists, Holm across arms x primary metrics, and the sample ratio check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
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
from campaigns.models import ArmAllocation, Campaign

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
            # Every live metric is a count, a 0/1 or an amount of money: never negative.
            comparison = (compare_proportions(_mean(control, metric), _mean(row, metric),
                                              alpha=alpha)
                          if metric in BINARY_METRICS else
                          compare_means(_mean(control, metric), _mean(row, metric),
                                        alpha=alpha, nonnegative=True))
            results.append(MetricResult(row["arm"], metric, segment, comparison))
        results.append(MetricResult(row["arm"], "target_share", segment, compare_ratios(
            _share(control), _share(row), alpha=alpha, nonnegative=True)))
        for metric in PRE_PERIOD_METRICS:
            adjusted = cuped(_covariate(control, metric), _covariate(row, metric), alpha=alpha,
                             nonnegative=True)
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
