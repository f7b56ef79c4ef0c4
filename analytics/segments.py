"""Targeting: uplift by segment.

The question a marketer asks once a campaign has shown an average effect: *for whom* did
it work (:func:`segment_results`: every arm against control within each value of a
customer attribute, Holm-corrected across the whole table). Whether a score would have
picked the customers who respond (the uplift-by-decile table and Qini curve) is
:mod:`analytics.uplift`'s business; its names are re-exported here.

Results read sufficient statistics aggregated by the database — one row per segment value
and arm leaves it whatever the number of customers — and work alike for live campaigns
and imported experiments. A report that shows both the campaign
and a breakdown should call :func:`campaign_and_segment_results`, which derives both from
one aggregation pass instead of two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from analytics.imported import imported_results, imported_segment_names
from analytics.queries import SEGMENT_COLUMNS, arm_statistics
from analytics.reports import (
    CampaignResults,
    MetricResult,
    adjust_family,
    campaign_results,
    compare_arms,
    sample_ratio,
)

# The Qini curve and decile table moved to analytics.uplift; these names stay importable.
from analytics.uplift import QINI_METHOD, DecileRow, QiniPoint, QiniResult, qini
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Campaign,
    CampaignOrigin,
)

CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]

#: How a missing segment value (NULL) is labelled in ``MetricResult.segment``.
MISSING_VALUE = "(missing)"

# ------------------------------------------------------------------------- campaign


def campaign_origin(connection: Connection, campaign_id: int) -> str:
    """'live' or 'imported'; :class:`CampaignNotFound` for an unknown id."""
    origin = connection.execute(select(CAMPAIGN.c.origin)
                                .where(CAMPAIGN.c.id == campaign_id)).scalar_one_or_none()
    if origin is None:
        raise CampaignNotFound(campaign_id)
    return str(origin)


def _is_imported(connection: Connection, campaign_id: int) -> bool:
    return campaign_origin(connection, campaign_id) == CampaignOrigin.IMPORTED.value


# -------------------------------------------------------------------------- segments


def segment_names(connection: Connection, campaign_id: int) -> tuple[str, ...]:
    """The segment columns a breakdown of this campaign may use."""
    if _is_imported(connection, campaign_id):
        return tuple(imported_segment_names(connection, campaign_id))
    return SEGMENT_COLUMNS


def segment_results(connection: Connection, campaign_id: int, segment: str, *,
                    alpha: float = 0.05, baseline: str | None = None) -> list[MetricResult]:
    """Every treatment arm against control within each value of ``segment``.

    ``MetricResult.segment`` is ``"<segment>=<value>"`` (``(missing)`` for customers
    without a value). Every arm appears in every segment value — with an explanatory
    ``reason`` when it has no customers there — so the table is rectangular. Holm is
    applied across segment values x arms x primary metrics, the whole family a reader
    scans for a significant cell; ``p_value_holm`` is None for the other metrics.
    """
    imported = _check_segment(connection, campaign_id, segment)
    if imported:
        # analytics.imported labels a cell with the bare segment value.
        return holm_across([replace(result, segment=f"{segment}={result.segment}")
                            for result in imported_results(connection, campaign_id,
                                                           alpha=alpha, segment=segment,
                                                           baseline=baseline).results])
    rows = arm_statistics(connection, campaign_id, segment=segment)
    return _breakdown(segment, rows, alpha=alpha, baseline=baseline)


def campaign_and_segment_results(connection: Connection, campaign_id: int, segment: str, *,
                                 alpha: float = 0.05,
                                 rows: Sequence[dict[str, Any]] | None = None,
                                 baseline: str | None = None
                                 ) -> tuple[CampaignResults, list[MetricResult]]:
    """``campaign_results`` and ``segment_results`` together, from one pass over the data.

    Sufficient statistics are sums, so an arm's whole-campaign row is the sum of its rows
    per segment value: one aggregation — the expensive part of a report, every exposure
    joined with its events — serves both, and a report with a breakdown costs what one
    without it does. The figures are identical to the two separate calls. ``rows``, for
    a live campaign, are that aggregation's rows when the caller already has them
    (:func:`analytics.queries.arm_statistics_and_adoption` with the same ``segment``).
    """
    if _check_segment(connection, campaign_id, segment):
        return (campaign_results(connection, campaign_id, alpha=alpha, baseline=baseline),
                segment_results(connection, campaign_id, segment, alpha=alpha,
                                baseline=baseline))
    if rows is None:
        rows = arm_statistics(connection, campaign_id, segment=segment)
    overall = collapse_segments(rows)
    whole = CampaignResults(campaign_id=campaign_id, arms=overall,
                            results=compare_arms(overall, alpha=alpha, baseline=baseline),
                            srm=sample_ratio(connection, campaign_id, overall))
    return whole, _breakdown(segment, rows, alpha=alpha, baseline=baseline)


def collapse_segments(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm (segment value "all") summing that arm's rows over segment values."""
    identity = ("arm_id", "arm", "is_control", "segment_value")
    totals: dict[int, dict[str, Any]] = {}
    for row in rows:
        total = totals.get(row["arm_id"])
        if total is None:
            totals[row["arm_id"]] = dict(row) | {"segment_value": "all"}
            continue
        for key, value in row.items():
            if key not in identity:
                total[key] += value
    return list(totals.values())


def _check_segment(connection: Connection, campaign_id: int, segment: str) -> bool:
    """Whether the campaign is imported; ValueError naming the valid segments if unknown."""
    imported = _is_imported(connection, campaign_id)
    names = (tuple(imported_segment_names(connection, campaign_id)) if imported
             else SEGMENT_COLUMNS)
    if segment not in names:
        valid = ", ".join(names) if names else "none: this campaign has no segment columns"
        raise ValueError(f"unknown segment '{segment}' for campaign {campaign_id}; "
                         f"valid segments: {valid}")
    return imported


def _breakdown(segment: str, rows: Sequence[dict[str, Any]], *,
               alpha: float, baseline: str | None = None) -> list[MetricResult]:
    return holm_across([result
                        for label, group in _segment_groups(segment, rows)
                        for result in compare_arms(group, segment=label, alpha=alpha,
                                                   baseline=baseline)])


def _segment_groups(segment: str, rows: Sequence[dict[str, Any]]
                    ) -> Iterable[tuple[str, list[dict[str, Any]]]]:
    """(label, one row per arm) per segment value, values sorted with missing last.

    An arm without customers in a value gets an all-zero row, so the comparisons report
    "an arm has no units" instead of the cell silently disappearing.
    """
    arms: dict[int, dict[str, Any]] = {}
    by_value: dict[Any, dict[int, dict[str, Any]]] = {}
    for row in rows:
        arms.setdefault(row["arm_id"], row)
        by_value.setdefault(row["segment_value"], {})[row["arm_id"]] = row
    for value in sorted(by_value, key=lambda v: (v is None, str(v))):
        present = by_value[value]
        group = [present.get(arm_id) or _empty_row(template, value)
                 for arm_id, template in arms.items()]
        label = MISSING_VALUE if value is None else str(value)
        yield f"{segment}={label}", group


def _empty_row(template: dict[str, Any], segment_value: Any) -> dict[str, Any]:
    identity = ("arm_id", "arm", "is_control")
    return {key: (value if key in identity else 0) for key, value in template.items()
            } | {"segment_value": segment_value}


def holm_across(results: list[MetricResult]) -> list[MetricResult]:
    """Holm across every result a per-group analysis marked primary (``p_value_holm`` set).

    The per-segment comparisons each correct within their own segment; what a reader of
    the breakdown needs is one family over all cells, so the family is re-formed here.
    """
    return adjust_family(results, [i for i, result in enumerate(results)
                                   if result.p_value_holm is not None])


__all__ = [
    "MISSING_VALUE",
    "QINI_METHOD",
    "DecileRow",
    "QiniPoint",
    "QiniResult",
    "campaign_and_segment_results",
    "campaign_origin",
    "collapse_segments",
    "holm_across",
    "qini",
    "segment_names",
    "segment_results",
]
