"""Results of imported experiments (campaigns with origin 'imported').

An imported experiment has no goal, assignments or events: its units, arms, outcomes,
covariates and segment values live in the ``experiment_*`` tables written by
:mod:`seeds.experiments`. This module aggregates them **in SQL** into per-arm (and
per-segment) sufficient statistics, then runs the statistics of :mod:`analytics.stats` and
returns the :class:`~analytics.reports.CampaignResults` / ``MetricResult`` shapes of a live
campaign, so report and export code need no special case:

- binary metrics: two-proportion z test (:func:`~analytics.stats.compare_proportions`);
- continuous metrics: Welch's t test (:func:`~analytics.stats.compare_means`);
- a metric with a covariate also gets ``<metric>_cuped``
  (:func:`~analytics.stats.cuped`, ``variance_reduction`` set);
- Holm across arms x metrics, within each segment value: every imported metric is
  primary. The ``_cuped`` rows re-estimate the same hypotheses with less variance, so
  they are not counted again in the family and keep ``p_value_holm`` None, as in live
  reports;
- the sample ratio check on all units, against the planned split recorded with
  ``--weights`` (allocation period 1), or against equal allocation, stated as an
  assumption, when none was recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, case, distinct, func, literal, select
from sqlalchemy.engine import Connection

from analytics.reports import (
    CampaignResults,
    MetricResult,
    adjust_family,
    baseline_row,
    sample_ratio,
    with_views,
)
from analytics.stats import (
    Comparison,
    CovariateStats,
    MeanStats,
    SrmResult,
    compare_means,
    compare_proportions,
    cuped,
    cuped_estimates,
    mean_estimate,
    proportion_estimate,
)
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Arm,
    ArmAllocation,
    Campaign,
    CampaignOrigin,
    ExperimentMetric,
    ExperimentMetricKind,
    ExperimentSegment,
    ExperimentUnit,
    ExperimentValue,
)

__all__ = [
    "ALL_UNITS",
    "ImportedMetric",
    "imported_metrics",
    "imported_results",
    "imported_sample_ratio",
    "imported_segment_names",
    "imported_statistics",
    "is_imported",
]

ALL_UNITS = "all"
"""The ``segment_value`` of rows that are not broken down by a segment."""


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


U = _table(ExperimentUnit)
V = _table(ExperimentValue)
SEG = _table(ExperimentSegment)
M = _table(ExperimentMetric)
ARM = _table(Arm)
CAMPAIGN = _table(Campaign)
ALLOCATION = _table(ArmAllocation)


@dataclass(frozen=True)
class ImportedMetric:
    """A metric of an imported experiment, in import order."""

    id: int
    name: str
    kind: str  # an ExperimentMetricKind value
    covariate_column: str | None

    @property
    def is_binary(self) -> bool:
        return self.kind == ExperimentMetricKind.BINARY.value


def is_imported(connection: Connection, campaign_id: int) -> bool:
    """Whether the campaign is an imported experiment; CampaignNotFound if there is none."""
    origin = connection.execute(select(CAMPAIGN.c.origin)
                                .where(CAMPAIGN.c.id == campaign_id)).scalar_one_or_none()
    if origin is None:
        raise CampaignNotFound(campaign_id)
    return bool(origin == CampaignOrigin.IMPORTED.value)


def _require_imported(connection: Connection, campaign_id: int) -> None:
    if not is_imported(connection, campaign_id):
        raise ValueError(f"campaign {campaign_id} is not an imported experiment; its results "
                         "come from analytics.reports.campaign_results")


def imported_metrics(connection: Connection, campaign_id: int) -> list[ImportedMetric]:
    """The campaign's metrics in the order they were imported."""
    rows = connection.execute(
        select(M.c.id, M.c.name, M.c.kind, M.c.covariate_column)
        .where(M.c.campaign_id == campaign_id).order_by(M.c.position, M.c.id))
    return [ImportedMetric(id=row.id, name=row.name, kind=row.kind,
                           covariate_column=row.covariate_column) for row in rows]


def imported_segment_names(connection: Connection, campaign_id: int) -> list[str]:
    """The segment columns imported with the campaign, alphabetically."""
    return list(connection.execute(
        select(SEG.c.name).distinct().select_from(SEG.join(U, U.c.id == SEG.c.unit_id))
        .where(U.c.campaign_id == campaign_id).order_by(SEG.c.name)).scalars())


def _natural_key(value: str) -> tuple[int, float, str]:
    """Numeric segment values in numeric order ('2' before '10'), then text."""
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number, value) if math.isfinite(number) else (1, 0.0, value)


def _metric_columns(metric: ImportedMetric, index: int) -> list[Any]:
    """Aggregates of one metric over the value rows of a group (SQL labels by position).

    Labels are ``m<index>_*`` rather than the metric's name: a name is any CSV header
    and could exceed PostgreSQL's 63-character identifier limit.
    """
    belongs = V.c.metric_id == metric.id
    value = case((belongs, V.c.value))  # NULL on other metrics' rows: ignored by aggregates
    columns = [func.count(value).label(f"m{index}_n"),
               func.sum(value).label(f"m{index}_sum"),
               func.sum(value * value).label(f"m{index}_sum_sq")]
    if metric.covariate_column is not None:
        pre = case((belongs, V.c.pre_value))
        columns += [func.sum(pre).label(f"m{index}_pre_sum"),
                    func.sum(pre * pre).label(f"m{index}_pre_sum_sq"),
                    func.sum(value * pre).label(f"m{index}_cross")]
    return columns


def _keys(metric: ImportedMetric) -> list[tuple[str, str]]:
    """(SQL label suffix, result key suffix) of a metric's aggregates."""
    keys = [("n", "n"), ("sum", "sum"), ("sum_sq", "sum_sq")]
    if metric.covariate_column is not None:
        keys += [("pre_sum", "pre_sum"), ("pre_sum_sq", "pre_sum_sq"), ("cross", "cross")]
    return keys


def imported_statistics(connection: Connection, campaign_id: int, *,
                        segment: str | None = None) -> list[dict[str, Any]]:
    """Sufficient statistics per arm (and per value of the segment column ``segment``).

    One dict per arm x segment value, arms in position order (control first), segment
    values in natural order; an arm without units in a segment gets a row with n = 0.
    Keys, like :func:`analytics.queries.arm_statistics`: ``arm_id``, ``arm``,
    ``is_control``, ``segment_value`` (``"all"`` without a segment), ``n`` (units); for
    each metric ``m`` (its imported name): ``m_n``, ``m_sum``, ``m_sum_sq``, and with a
    covariate ``m_pre_sum``, ``m_pre_sum_sq``, ``m_cross`` (the sum of value x pre-value).
    Only one row per group leaves the database.
    """
    _require_imported(connection, campaign_id)
    if segment is not None:
        names = imported_segment_names(connection, campaign_id)
        if segment not in names:
            raise ValueError(f"unknown segment '{segment}' for campaign {campaign_id}; "
                             f"use one of: {', '.join(names) or '(none were imported)'}")
    metrics = imported_metrics(connection, campaign_id)
    source = U.join(V, V.c.unit_id == U.c.id)
    segment_value: Any = literal(ALL_UNITS)
    if segment is not None:
        source = source.join(SEG, and_(SEG.c.unit_id == U.c.id, SEG.c.name == segment))
        segment_value = SEG.c.value
    columns: list[Any] = [U.c.arm_id, segment_value.label("segment_value"),
                          func.count(distinct(U.c.id)).label("n")]
    for index, metric in enumerate(metrics):
        columns += _metric_columns(metric, index)
    group = [U.c.arm_id] + ([SEG.c.value] if segment is not None else [])
    query = (select(*columns).select_from(source).where(U.c.campaign_id == campaign_id)
             .group_by(*group))
    found = {(row.arm_id, row.segment_value): row._mapping
             for row in connection.execute(query)}
    arms = connection.execute(select(ARM.c.id, ARM.c.name, ARM.c.is_control)
                              .where(ARM.c.campaign_id == campaign_id)
                              .order_by(ARM.c.position, ARM.c.id)).all()
    values = sorted({value for _, value in found} or {ALL_UNITS}, key=_natural_key)
    return [_statistics_row(arm, value, found.get((arm.id, value)), metrics)
            for value in values for arm in arms]


def _statistics_row(arm: Any, segment_value: str, aggregates: Any,
                    metrics: Sequence[ImportedMetric]) -> dict[str, Any]:
    row: dict[str, Any] = {"arm_id": arm.id, "arm": arm.name, "is_control": bool(arm.is_control),
                           "segment_value": segment_value,
                           "n": int(aggregates["n"]) if aggregates is not None else 0}
    for index, metric in enumerate(metrics):
        for label, key in _keys(metric):
            value = aggregates[f"m{index}_{label}"] if aggregates is not None else None
            if label == "n":
                row[f"{metric.name}_{key}"] = int(value or 0)
            else:
                row[f"{metric.name}_{key}"] = float(value) if value is not None else 0.0
    return row


# --------------------------------------------------------------------------- results


def _mean(row: dict[str, Any], metric: ImportedMetric) -> MeanStats:
    name = metric.name
    return MeanStats(n=row[f"{name}_n"], sum=row[f"{name}_sum"], sum_sq=row[f"{name}_sum_sq"])


def _covariate(row: dict[str, Any], metric: ImportedMetric) -> CovariateStats:
    name = metric.name
    return CovariateStats(n=row[f"{name}_n"], sum_y=row[f"{name}_sum"],
                          sum_y2=row[f"{name}_sum_sq"], sum_x=row[f"{name}_pre_sum"],
                          sum_x2=row[f"{name}_pre_sum_sq"], sum_xy=row[f"{name}_cross"])


def _compare(metric: ImportedMetric, control: dict[str, Any], treatment: dict[str, Any],
             alpha: float) -> Comparison:
    compare = compare_proportions if metric.is_binary else compare_means
    return compare(_mean(control, metric), _mean(treatment, metric), alpha=alpha)


def _segment_results(rows: Sequence[dict[str, Any]], metrics: Sequence[ImportedMetric], *,
                     alpha: float, baseline: str | None = None) -> list[MetricResult]:
    """Every arm against the baseline (control) within one segment value, Holm-adjusted."""
    base = baseline_row(rows, baseline)
    if base is None:
        return []
    name = str(base["arm"])
    results: list[MetricResult] = []
    primary: list[int] = []
    for row in rows:
        if row is base:
            continue
        segment = str(row["segment_value"])
        for metric in metrics:
            primary.append(len(results))
            estimate = proportion_estimate if metric.is_binary else mean_estimate
            results.append(with_views(
                MetricResult(row["arm"], metric.name, segment,
                             _compare(metric, base, row, alpha), baseline=name),
                estimate(_mean(base, metric)), estimate(_mean(row, metric)), alpha=alpha))
            if metric.covariate_column is not None:
                pair = (_covariate(base, metric), _covariate(row, metric))
                adjusted = cuped(*pair, alpha=alpha)
                results.append(with_views(
                    MetricResult(row["arm"], f"{metric.name}_cuped", segment,
                                 adjusted.comparison, baseline=name,
                                 variance_reduction=adjusted.variance_reduction),
                    *(cuped_estimates(*pair) or (None, None)), alpha=alpha))
    return adjust_family(results, primary)


def imported_sample_ratio(connection: Connection, campaign_id: int,
                          rows: Sequence[dict[str, Any]]) -> SrmResult:
    """Units per arm (over all segment values) against the planned split.

    The planned split is the allocation period recorded by ``--weights``; an experiment
    imported without it is checked against equal allocation, an assumption the report
    states among its warnings (:func:`analytics.reports.planned_split`).
    """
    return sample_ratio(connection, campaign_id, rows)


def imported_results(connection: Connection, campaign_id: int, *, alpha: float = 0.05,
                     segment: str | None = None, baseline: str | None = None
                     ) -> CampaignResults:
    """An imported experiment's results, broken down by ``segment`` when given.

    With a segment every result's ``segment`` is the segment value and Holm runs within
    each value; the sample ratio check always covers all units.
    """
    rows = imported_statistics(connection, campaign_id, segment=segment)
    metrics = imported_metrics(connection, campaign_id)
    results: list[MetricResult] = []
    for value in dict.fromkeys(row["segment_value"] for row in rows):
        group = [row for row in rows if row["segment_value"] == value]
        results += _segment_results(group, metrics, alpha=alpha, baseline=baseline)
    return CampaignResults(campaign_id=campaign_id, arms=rows, results=results,
                           srm=imported_sample_ratio(connection, campaign_id, rows))
