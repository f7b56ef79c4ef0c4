"""Targeting: uplift by segment, and the uplift-by-decile table and Qini curve of a score.

Two questions a marketer asks once a campaign has shown an average effect: *for whom* did
it work (:func:`segment_results`: every arm against control within each value of a
customer attribute, Holm-corrected across the whole table), and would a score have picked
the customers who respond to the incentive (:func:`qini`: uplift per score decile and the
Qini curve of targeting by that score).

Both read sufficient statistics aggregated by the database — one row per segment value
and arm, or per decile and arm, leaves it whatever the number of customers — and work
alike for live campaigns and imported experiments. A report that shows both the campaign
and a breakdown should call :func:`campaign_and_segment_results`, which derives both from
one aggregation pass instead of two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import Float, and_, cast, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Subquery

from analytics.imported import imported_results, imported_segment_names
from analytics.queries import (
    BINARY_METRICS,
    SEGMENT_COLUMNS,
    arm_statistics,
    customer_metrics,
    goal_window,
)
from analytics.reports import (
    CampaignResults,
    MetricResult,
    adjust_family,
    campaign_results,
    compare_arms,
    sample_ratio,
)
from analytics.stats import MeanStats, compare_proportions
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    CampaignOrigin,
    Customer,
    ExperimentMetric,
    ExperimentMetricKind,
    ExperimentUnit,
    ExperimentValue,
)

ARM = Arm.__table__  # type: ignore[attr-defined]
ASSIGNMENT = Assignment.__table__  # type: ignore[attr-defined]
CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
CUSTOMER = Customer.__table__  # type: ignore[attr-defined]
UNIT = ExperimentUnit.__table__  # type: ignore[attr-defined]
VALUE = ExperimentValue.__table__  # type: ignore[attr-defined]
METRIC = ExperimentMetric.__table__  # type: ignore[attr-defined]

#: How a missing segment value (NULL) is labelled in ``MetricResult.segment``.
MISSING_VALUE = "(missing)"
#: Customer attribute names a score may have: they become a JSON path in SQL.
SCORE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")

QINI_METHOD = (
    "Qini curve (Radcliffe 2007): customers ordered by score, highest first, cut into "
    "deciles; at each decile boundary the incremental gain is treated responders - control "
    "responders x n_t / n_c (cumulative counts). Qini coefficient: area between that curve "
    "and the random-targeting line, with the gain as a share of the arm's treated customers "
    "and the x axis the share targeted (the normalisation of qini() in the R package "
    "uplift), by the trapezoid rule over the decile points. q0: that area divided by the "
    "same area of the zero-downlift optimum curve (Radcliffe & Surry 2011)"
)


@dataclass(frozen=True)
class DecileRow:
    arm: str
    decile: int  # 1 = highest score
    score_min: float
    score_max: float
    control_n: int
    treatment_n: int
    control_rate: float | None
    treatment_rate: float | None
    uplift: float | None
    uplift_ci_low: float | None
    uplift_ci_high: float | None
    p_value: float | None = None
    reason: str | None = None  # why the uplift or its interval is missing


@dataclass(frozen=True)
class QiniPoint:
    arm: str
    fraction_targeted: float  # 0..1, customers ordered by score, highest first
    incremental_gain: float  # Qini: treated responders - control responders x (n_t / n_c)
    random_gain: float  # the diagonal of random targeting at the same fraction


@dataclass(frozen=True)
class QiniResult:
    metric: str
    score: str  # where the score came from (attribute or column name)
    deciles: list[DecileRow]
    curve: list[QiniPoint]
    qini_coefficient: dict[str, float | None]  # per arm: area between curve and diagonal
    #: per arm: the coefficient divided by that of the zero-downlift optimum (<= 1 without harm)
    qini_q0: dict[str, float | None] | None = None
    #: customers with a score, all arms (those without one are left out of every figure)
    scored_n: int = 0
    method: str = QINI_METHOD


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


# ------------------------------------------------------------------------------ Qini


@dataclass(frozen=True)
class _Cell:
    """One decile x arm: customers, responders and the score range."""

    decile: int
    arm_id: int
    n: int
    responders: int
    score_min: float
    score_max: float


def qini(connection: Connection, campaign_id: int, score: str, *, metric: str = "adoption",
         deciles: int = 10, alpha: float = 0.05) -> QiniResult | None:
    """Uplift by score decile and the Qini curve of targeting by ``score``.

    For a live campaign ``score`` is a numeric key of ``Customer.attributes``; for an
    imported experiment the score is ``ExperimentUnit.score`` and ``score`` only labels it.
    ``metric`` must be binary. Deciles are ``NTILE(deciles)`` over all scored customers of
    every arm, highest score first (ties broken by customer), computed in SQL. Returns None
    when no assigned customer has a score or the campaign has no control arm.
    """
    if not 1 <= deciles <= 1000:
        raise ValueError(f"deciles must be between 1 and 1000 (got {deciles})")
    if _is_imported(connection, campaign_id):
        scored = _imported_scored(connection, campaign_id, metric)
    else:
        scored = _live_scored(connection, campaign_id, score, metric)
    cells = _decile_cells(connection, scored, deciles)
    arms = connection.execute(select(ARM.c.id, ARM.c.name, ARM.c.is_control)
                              .where(ARM.c.campaign_id == campaign_id)
                              .order_by(ARM.c.position, ARM.c.id)).all()
    control = next((arm for arm in arms if arm.is_control), None)
    if not cells or control is None:
        return None
    decile_rows: list[DecileRow] = []
    curve: list[QiniPoint] = []
    coefficients: dict[str, float | None] = {}
    q0: dict[str, float | None] = {}
    for arm in arms:
        if arm.is_control:
            continue
        decile_rows += _decile_table(cells, control_id=control.id, arm_id=arm.id,
                                     arm_name=arm.name, alpha=alpha)
        points = _qini_curve(cells, control_id=control.id, arm_id=arm.id, arm_name=arm.name)
        curve += points
        treated = sum(cell.n for cell in cells if cell.arm_id == arm.id)
        coefficients[arm.name], q0[arm.name] = _qini_coefficients(points, treated)
    return QiniResult(metric=metric, score=score, deciles=decile_rows, curve=curve,
                      qini_coefficient=coefficients, qini_q0=q0,
                      scored_n=sum(cell.n for cell in cells))


def _json_type(connection: Connection, document: Any, key: str) -> ColumnElement[Any]:
    """The JSON type name of ``document[key]`` (NULL when the key is absent)."""
    if connection.dialect.name == "postgresql":
        return func.jsonb_typeof(document.op("->")(key))
    return func.json_type(document, f'$."{key}"')


def _live_scored(connection: Connection, campaign_id: int, score: str,
                 metric: str) -> Subquery:
    """(unit_id, arm_id, outcome, score) per assigned customer of a live campaign."""
    if metric not in BINARY_METRICS:
        raise ValueError(f"metric '{metric}' is not binary; the Qini curve needs one of "
                         f"{', '.join(sorted(BINARY_METRICS))}")
    if not SCORE_NAME.fullmatch(score):
        raise ValueError(f"score '{score}' is not a valid attribute name (letters, digits "
                         "and underscores, not starting with a digit)")
    _check_numeric_scores(connection, campaign_id, score)
    per = customer_metrics(connection, goal_window(connection, campaign_id))
    scored = CUSTOMER.alias("scored_customer")
    return (select(per.c.customer_id.label("unit_id"), per.c.arm_id,
                   per.c[metric].label("outcome"),
                   scored.c.attributes[score].as_float().label("score"))
            .select_from(per.join(scored, scored.c.id == per.c.customer_id))
            ).subquery("scored")


def _check_numeric_scores(connection: Connection, campaign_id: int, score: str) -> None:
    """Refuse a score attribute that is not a number for some customer (JSON null is missing).

    Checked first because casting a non-numeric JSON value fails on PostgreSQL with an
    error that names neither the attribute nor the customer.
    """
    kind = _json_type(connection, CUSTOMER.c.attributes, score)
    numeric = ("number",) if connection.dialect.name == "postgresql" else ("integer", "real")
    offender = connection.execute(
        select(CUSTOMER.c.external_id, kind.label("kind"))
        .select_from(ASSIGNMENT.join(CUSTOMER, CUSTOMER.c.id == ASSIGNMENT.c.customer_id))
        .where(ASSIGNMENT.c.campaign_id == campaign_id, kind.is_not(None),
               kind.not_in((*numeric, "null")))
        .limit(1)).first()
    if offender is not None:
        raise ValueError(f"score attribute '{score}' of customer '{offender.external_id}' is "
                         f"not a number (JSON {offender.kind})")


def _imported_scored(connection: Connection, campaign_id: int, metric: str) -> Subquery:
    """(unit_id, arm_id, outcome, score) per unit of an imported experiment."""
    metrics = connection.execute(select(METRIC.c.id, METRIC.c.name, METRIC.c.kind)
                                 .where(METRIC.c.campaign_id == campaign_id)
                                 .order_by(METRIC.c.position, METRIC.c.id)).all()
    binary = [m for m in metrics if m.kind == ExperimentMetricKind.BINARY.value]
    chosen = next((m for m in binary if m.name == metric), None)
    if chosen is None:
        valid = ", ".join(m.name for m in binary) or "none: it has no binary metric"
        raise ValueError(f"metric '{metric}' is not a binary metric of imported campaign "
                         f"{campaign_id}; the Qini curve needs one of: {valid}")
    return (select(UNIT.c.id.label("unit_id"), UNIT.c.arm_id,
                   VALUE.c.value.label("outcome"), UNIT.c.score)
            .select_from(UNIT.join(VALUE, and_(VALUE.c.unit_id == UNIT.c.id,
                                               VALUE.c.metric_id == chosen.id)))
            .where(UNIT.c.campaign_id == campaign_id)
            ).subquery("scored")


def _decile_cells(connection: Connection, scored: Subquery, deciles: int) -> list[_Cell]:
    """Per decile and arm: n, responders, score range. One NTILE window, one GROUP BY."""
    ranked = (select(scored.c.arm_id, scored.c.outcome, scored.c.score,
                     func.ntile(deciles).over(order_by=(scored.c.score.desc(),
                                                        scored.c.unit_id)).label("decile"))
              .where(scored.c.score.is_not(None))).subquery("ranked")
    query = (select(ranked.c.decile, ranked.c.arm_id, func.count().label("n"),
                    func.sum(cast(ranked.c.outcome, Float)).label("responders"),
                    func.min(ranked.c.score).label("score_min"),
                    func.max(ranked.c.score).label("score_max"))
             .group_by(ranked.c.decile, ranked.c.arm_id)
             .order_by(ranked.c.decile, ranked.c.arm_id))
    return [_Cell(decile=int(row.decile), arm_id=int(row.arm_id), n=int(row.n),
                  responders=round(float(row.responders or 0)),
                  score_min=float(row.score_min), score_max=float(row.score_max))
            for row in connection.execute(query)]


def _decile_table(cells: Sequence[_Cell], *, control_id: int, arm_id: int, arm_name: str,
                  alpha: float) -> list[DecileRow]:
    rows = []
    for decile in sorted({cell.decile for cell in cells}):
        here = [cell for cell in cells if cell.decile == decile]
        control = _totals(here, control_id)
        treatment = _totals(here, arm_id)
        comparison = compare_proportions(control, treatment, alpha=alpha)
        rows.append(DecileRow(
            arm=arm_name, decile=decile, score_min=min(cell.score_min for cell in here),
            score_max=max(cell.score_max for cell in here), control_n=control.n,
            treatment_n=treatment.n, control_rate=comparison.control_mean,
            treatment_rate=comparison.treatment_mean, uplift=comparison.diff,
            uplift_ci_low=comparison.diff_ci_low, uplift_ci_high=comparison.diff_ci_high,
            p_value=comparison.p_value, reason=comparison.reason))
    return rows


def _totals(cells: Iterable[_Cell], arm_id: int) -> MeanStats:
    mine = [cell for cell in cells if cell.arm_id == arm_id]
    responders = sum(cell.responders for cell in mine)
    return MeanStats(n=sum(cell.n for cell in mine), sum=responders, sum_sq=responders)


def _qini_curve(cells: Sequence[_Cell], *, control_id: int, arm_id: int,
                arm_name: str) -> list[QiniPoint]:
    """The Qini curve at 0 and at every decile boundary, for one arm against control.

    The x axis counts the customers of this arm and control only (other arms are not part
    of this comparison). While no control customer has been reached yet the control
    term is 0, as scikit-uplift's ``qini_curve`` does.
    """
    deciles = sorted({cell.decile for cell in cells})
    pair = [cell for cell in cells if cell.arm_id in (control_id, arm_id)]
    total = sum(cell.n for cell in pair)
    counts = np.zeros((len(deciles) + 1, 4))  # cumulative n_t, r_t, n_c, r_c
    for index, decile in enumerate(deciles, start=1):
        counts[index] = counts[index - 1]
        for cell in pair:
            if cell.decile == decile:
                offset = 0 if cell.arm_id == arm_id else 2
                counts[index, offset] += cell.n
                counts[index, offset + 1] += cell.responders
    n_t, r_t, n_c, r_c = counts.T
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    gain = r_t - r_c * ratio
    fraction = (n_t + n_c) / total if total else np.zeros_like(n_t)
    return [QiniPoint(arm=arm_name, fraction_targeted=float(f), incremental_gain=float(g),
                      random_gain=float(f * gain[-1]))
            for f, g in zip(fraction, gain, strict=True)]


def _qini_coefficients(points: Sequence[QiniPoint], treated: int
                       ) -> tuple[float | None, float | None]:
    """(Q, q0) of one arm's curve; None where undefined (no treated customers, no gain).

    Q is the trapezoid area between the curve and the random line, gains divided by the
    arm's treated customers. The zero-downlift optimum reaches the total gain G (as a share
    of the treated arm) by targeting only responders it moves, min(x, G), so its area above
    the diagonal is G (1 - G) / 2, and q0 = Q / that.
    """
    if treated == 0 or not points:
        return None, None
    x = np.array([p.fraction_targeted for p in points])
    above = np.array([p.incremental_gain - p.random_gain for p in points]) / treated
    area = float(np.sum((above[1:] + above[:-1]) / 2 * np.diff(x)))
    total_gain = points[-1].incremental_gain / treated
    if not 0 < total_gain < 1:
        return area, None
    return area, area / (total_gain * (1 - total_gain) / 2)


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
