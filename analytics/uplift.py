"""Targeting by a score: uplift per score decile and the Qini curve, whatever the row order.

Would a score have picked the customers the incentive moves? :func:`qini` answers with
the uplift in each decile of the score and the Qini curve of targeting by it, for live
campaigns (a numeric customer attribute) and imported experiments (their ``--score``
column) alike.

Ties decide whether such figures can be trusted: a rounded model score, or an attribute
such as "purchases last year", gives thousands of customers the same value, and cutting
them by customer id or file row would make the figures depend on the order in which the
rows happened to be stored (sorting an imported file by arm flipped the sign of the
Qini coefficient). Here customers with the same score are never separated:

- the database returns one row per distinct score value and arm (customers, responders),
  and everything else is computed from those counts, which no ordering can change;
- deciles are ranges of score values: a score value goes, with all its customers, to the
  decile (SQL ``NTILE`` bucket) that holds the middle of its rank range, highest scores
  first; without ties this is ``NTILE`` (scikit-uplift's ``uplift_by_percentile``), with
  ties some of the ten groups merge and the table has fewer rows;
- the Qini curve has one point per distinct score value, as scikit-uplift's
  ``qini_curve`` does, and the coefficients are areas under that curve.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Float, and_, cast, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Subquery

from analytics.imported import imported_metrics, is_imported
from analytics.queries import BINARY_METRICS, customer_metrics, goal_window
from analytics.stats import MeanStats, compare_proportions
from campaigns.models import (
    Arm,
    Assignment,
    AuditLog,
    Customer,
    ExperimentMetricKind,
    ExperimentUnit,
    ExperimentValue,
)

__all__ = [
    "LIVE_QINI_METRIC",
    "MAX_CURVE_POINTS",
    "QINI_METHOD",
    "DecileRow",
    "QiniOptionError",
    "QiniPoint",
    "QiniResult",
    "imported_score_names",
    "qini",
    "qini_metric_names",
]

ARM = Arm.__table__  # type: ignore[attr-defined]
ASSIGNMENT = Assignment.__table__  # type: ignore[attr-defined]
AUDIT = AuditLog.__table__  # type: ignore[attr-defined]
CUSTOMER = Customer.__table__  # type: ignore[attr-defined]
UNIT = ExperimentUnit.__table__  # type: ignore[attr-defined]
VALUE = ExperimentValue.__table__  # type: ignore[attr-defined]

#: Customer attribute names a score may have: they become a JSON path in SQL.
SCORE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
#: The response a live campaign's Qini curve counts unless the analyst picks another.
LIVE_QINI_METRIC = "adoption"
#: Most points of one arm's curve a report carries; the coefficients always use them all.
MAX_CURVE_POINTS = 1_000

QINI_METHOD = (
    "Qini curve (Radcliffe 2007): customers ordered by score, highest first; at each "
    "distinct score value the incremental gain is treated responders - control responders "
    "x n_t / n_c (cumulative counts, customers with equal scores taken together, as "
    "scikit-uplift's qini_curve does). Qini coefficient: area between that curve and the "
    "random-targeting line, with the gain as a share of the arm's treated customers and "
    "the x axis the share targeted (the normalisation of qini() in the R package uplift), "
    "by the trapezoid rule over every distinct-score point. q0: that area divided by the "
    "same area of the zero-downlift optimum curve (Radcliffe & Surry 2011). Qini AUC "
    "score: the area divided by that of the optimum curve with negative effects "
    "(scikit-uplift's qini_auc_score)"
)


class QiniOptionError(ValueError):
    """A Qini option the campaign cannot honour; ``option`` names it (``qini_score`` or
    ``qini_metric``), so a caller can point at the parameter the user gave."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


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
    score: str  # the score used: the customer attribute, or the imported score column
    deciles: list[DecileRow]
    curve: list[QiniPoint]
    qini_coefficient: dict[str, float | None]  # per arm: area between curve and diagonal
    #: per arm: the coefficient divided by that of the zero-downlift optimum (<= 1 without harm)
    qini_q0: dict[str, float | None] | None = None
    #: customers with a score, all arms (those without one are left out of every figure)
    scored_n: int = 0
    method: str = QINI_METHOD
    #: per arm: area over that of the optimum with negative effects (sklift qini_auc_score)
    qini_auc_score: dict[str, float | None] | None = None
    #: distinct score values among the scored customers
    distinct_scores: int = 0
    #: how customers with equal scores were handled, in words (for Methods and exports)
    ties: str = ""


# ------------------------------------------------------------------------- options


def qini_metric_names(connection: Connection, campaign_id: int) -> list[str]:
    """The 0/1 metrics a Qini curve of this campaign can count, default first."""
    if not is_imported(connection, campaign_id):
        return [LIVE_QINI_METRIC, *sorted(set(BINARY_METRICS) - {LIVE_QINI_METRIC})]
    return [metric.name for metric in imported_metrics(connection, campaign_id)
            if metric.kind == ExperimentMetricKind.BINARY.value]


def imported_score_names(connection: Connection, campaign_id: int) -> list[str]:
    """The score an imported experiment was imported with ([] when it has none).

    The importer records the ``--score`` column's name in the import's audit entry (units
    keep only the values); an experiment written without that entry but with scores
    calls its score ``score``.
    """
    details = connection.execute(
        select(AUDIT.c.details).where(AUDIT.c.entity_type == "campaign",
                                      AUDIT.c.entity_id == campaign_id,
                                      AUDIT.c.action == "campaign.import")
        .order_by(AUDIT.c.id.desc()).limit(1)).scalar()
    if isinstance(details, dict) and "score_column" in details:
        column = details["score_column"]
        return [str(column)] if column else []
    scored = connection.execute(select(UNIT.c.id).where(UNIT.c.campaign_id == campaign_id,
                                                        UNIT.c.score.is_not(None))
                                .limit(1)).first()
    return ["score"] if scored is not None else []


def _check_metric(connection: Connection, campaign_id: int, metric: str) -> None:
    names = qini_metric_names(connection, campaign_id)
    if metric not in names:
        valid = ", ".join(names) or "none: this experiment has no binary (0/1) metric"
        raise QiniOptionError("qini_metric", f"unknown Qini metric '{metric}': the Qini "
                              f"curve counts responders of a 0/1 metric; use one of: {valid}")


def _check_imported_score(connection: Connection, campaign_id: int, score: str) -> None:
    names = imported_score_names(connection, campaign_id)
    if score not in names:
        valid = (", ".join(names) if names
                 else "none: it was imported without --score")
        raise QiniOptionError("qini_score", f"unknown score '{score}' for imported campaign "
                              f"{campaign_id}; the imported scores are: {valid}")


# ------------------------------------------------------------------------------ Qini


@dataclass(frozen=True)
class _ScoreTable:
    """Customers and responders per distinct score value (highest first) and arm."""

    scores: np.ndarray  # (k,) distinct score values, descending
    arm_ids: list[int]
    n: np.ndarray  # (k, arms)
    responders: np.ndarray  # (k, arms)

    def column(self, arm_id: int) -> int:
        return self.arm_ids.index(arm_id)


def qini(connection: Connection, campaign_id: int, score: str, *,
         metric: str = LIVE_QINI_METRIC, deciles: int = 10,
         alpha: float = 0.05) -> QiniResult | None:
    """Uplift by score decile and the Qini curve of targeting by ``score``.

    For a live campaign ``score`` is a numeric key of ``Customer.attributes``; for an
    imported experiment it must be the name of the column imported with ``--score``.
    ``metric`` must be one of :func:`qini_metric_names`. Raises :class:`QiniOptionError`
    naming the option otherwise. Returns None when no assigned customer has a score or
    the campaign has no control arm. No figure depends on the order of the rows (see the
    module docstring).
    """
    if not 1 <= deciles <= 1000:
        raise ValueError(f"deciles must be between 1 and 1000 (got {deciles})")
    _check_metric(connection, campaign_id, metric)
    if is_imported(connection, campaign_id):
        _check_imported_score(connection, campaign_id, score)
        scored = _imported_scored(connection, campaign_id, metric)
    else:
        scored = _live_scored(connection, campaign_id, score, metric)
    arms = connection.execute(select(ARM.c.id, ARM.c.name, ARM.c.is_control)
                              .where(ARM.c.campaign_id == campaign_id)
                              .order_by(ARM.c.position, ARM.c.id)).all()
    table = _score_table(connection, scored, [arm.id for arm in arms])
    control = next((arm for arm in arms if arm.is_control), None)
    if table is None or control is None:
        return None
    groups = decile_of_scores(table.n.sum(axis=1), deciles)
    decile_rows: list[DecileRow] = []
    curve: list[QiniPoint] = []
    coefficients: dict[str, float | None] = {}
    q0: dict[str, float | None] = {}
    auc_score: dict[str, float | None] = {}
    points_per_arm = 0
    for arm in arms:
        if arm.is_control:
            continue
        decile_rows += _decile_table(table, groups, control_id=control.id, arm_id=arm.id,
                                     arm_name=arm.name, alpha=alpha)
        counts = _pair_counts(table, control_id=control.id, arm_id=arm.id)
        points = _qini_curve(counts, arm_name=arm.name)
        points_per_arm = max(points_per_arm, len(points))
        curve += _thin(points)
        treated = int(counts[:, 0].sum())
        coefficients[arm.name], q0[arm.name] = _qini_coefficients(points, treated)
        auc_score[arm.name] = _qini_auc_score(counts)
    scored_n = int(table.n.sum())
    return QiniResult(metric=metric, score=score, deciles=decile_rows, curve=curve,
                      qini_coefficient=coefficients, qini_q0=q0, scored_n=scored_n,
                      qini_auc_score=auc_score, distinct_scores=len(table.scores),
                      ties=_ties_statement(scored_n, len(table.scores), int(groups.max()),
                                           deciles, points_per_arm))


def _ties_statement(scored_n: int, distinct: int, groups: int, deciles: int,
                    points: int) -> str:
    shared = ("every scored customer has a score of their own" if distinct == scored_n
              else f"{scored_n:,} scored customers share {distinct:,} distinct score values")
    merged = (f"; ties leave {groups} groups instead of {deciles}" if groups < deciles
              else "")
    drawn = (f" (drawn through {MAX_CURVE_POINTS:,} of them; the coefficients use all)"
             if points > MAX_CURVE_POINTS else "")
    return (f"Ties: {shared}. Customers with equal scores are never separated: a decile is "
            f"a range of score values, each value (with all its customers) in the decile "
            f"holding the middle of its rank range{merged}; the Qini curve has one point "
            f"per distinct score value{drawn}. No figure depends on the order of the rows")


def decile_of_scores(counts: np.ndarray, deciles: int) -> np.ndarray:
    """The group (1 = highest scores) of each distinct score value, given its customers.

    ``counts`` are the customers at each distinct score value, highest first. A value's
    customers occupy ranks ``start..end`` of the descending order; the value goes to the
    ``NTILE(deciles)`` bucket of rank ``(start + end) // 2``. Buckets left empty by ties
    are skipped, so groups are numbered 1, 2, ... without gaps.
    """
    end = np.cumsum(counts)
    start = end - counts + 1
    total = int(end[-1]) if len(end) else 0
    size, extra = divmod(total, deciles)
    middle = (start + end) // 2
    big = extra * (size + 1)  # the first `extra` buckets hold one customer more
    bucket = np.where(middle <= big, (middle - 1) // (size + 1),
                      extra + (middle - big - 1) // max(size, 1))
    _, group = np.unique(bucket, return_inverse=True)
    return np.asarray(group, dtype=int) + 1


def _json_type(connection: Connection, document: Any, key: str) -> ColumnElement[Any]:
    """The JSON type name of ``document[key]`` (NULL when the key is absent)."""
    if connection.dialect.name == "postgresql":
        return func.jsonb_typeof(document.op("->")(key))
    return func.json_type(document, f'$."{key}"')


def _live_scored(connection: Connection, campaign_id: int, score: str,
                 metric: str) -> Subquery:
    """(arm_id, outcome, score) per assigned customer of a live campaign."""
    if not SCORE_NAME.fullmatch(score):
        raise QiniOptionError("qini_score", f"score '{score}' is not a valid attribute name "
                              "(letters, digits and underscores, not starting with a digit)")
    _check_numeric_scores(connection, campaign_id, score)
    per = customer_metrics(connection, goal_window(connection, campaign_id))
    scored = CUSTOMER.alias("scored_customer")
    return (select(per.c.arm_id, per.c[metric].label("outcome"),
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
        raise QiniOptionError("qini_score", f"score attribute '{score}' of customer "
                              f"'{offender.external_id}' is not a number (JSON "
                              f"{offender.kind})")


def _imported_scored(connection: Connection, campaign_id: int, metric: str) -> Subquery:
    """(arm_id, outcome, score) per unit of an imported experiment."""
    chosen = next(m for m in imported_metrics(connection, campaign_id) if m.name == metric)
    return (select(UNIT.c.arm_id, VALUE.c.value.label("outcome"), UNIT.c.score)
            .select_from(UNIT.join(VALUE, and_(VALUE.c.unit_id == UNIT.c.id,
                                               VALUE.c.metric_id == chosen.id)))
            .where(UNIT.c.campaign_id == campaign_id)
            ).subquery("scored")


def _score_table(connection: Connection, scored: Subquery,
                 arm_ids: Sequence[int]) -> _ScoreTable | None:
    """One GROUP BY: customers and responders per distinct score and arm (None: no score)."""
    query = (select(scored.c.score, scored.c.arm_id, func.count().label("n"),
                    func.sum(cast(scored.c.outcome, Float)).label("responders"))
             .where(scored.c.score.is_not(None))
             .group_by(scored.c.score, scored.c.arm_id))
    rows = connection.execute(query).all()
    if not rows:
        return None
    values = np.array([float(row.score) for row in rows])
    scores, index = np.unique(values, return_inverse=True)
    position = len(scores) - 1 - index  # descending
    column = {arm_id: i for i, arm_id in enumerate(arm_ids)}
    n = np.zeros((len(scores), len(arm_ids)), dtype=np.int64)
    responders = np.zeros_like(n)
    for row, at in zip(rows, position, strict=True):
        n[at, column[row.arm_id]] += int(row.n)
        responders[at, column[row.arm_id]] += round(float(row.responders or 0))
    return _ScoreTable(scores=scores[::-1], arm_ids=list(arm_ids), n=n,
                       responders=responders)


def _decile_table(table: _ScoreTable, groups: np.ndarray, *, control_id: int, arm_id: int,
                  arm_name: str, alpha: float) -> list[DecileRow]:
    control, arm = table.column(control_id), table.column(arm_id)
    rows = []
    for decile in range(1, int(groups.max()) + 1):
        here = groups == decile
        n_c, n_t = int(table.n[here, control].sum()), int(table.n[here, arm].sum())
        r_c = int(table.responders[here, control].sum())
        r_t = int(table.responders[here, arm].sum())
        comparison = compare_proportions(MeanStats(n=n_c, sum=r_c, sum_sq=r_c),
                                         MeanStats(n=n_t, sum=r_t, sum_sq=r_t), alpha=alpha)
        rows.append(DecileRow(
            arm=arm_name, decile=decile, score_min=float(table.scores[here].min()),
            score_max=float(table.scores[here].max()), control_n=n_c, treatment_n=n_t,
            control_rate=comparison.control_mean, treatment_rate=comparison.treatment_mean,
            uplift=comparison.diff, uplift_ci_low=comparison.diff_ci_low,
            uplift_ci_high=comparison.diff_ci_high, p_value=comparison.p_value,
            reason=comparison.reason))
    return rows


def _pair_counts(table: _ScoreTable, *, control_id: int, arm_id: int) -> np.ndarray:
    """(n_t, r_t, n_c, r_c) per distinct score value where this arm or control has anyone.

    The comparison is this arm against control only, so score values only other arms
    hold are no point of its curve.
    """
    control, arm = table.column(control_id), table.column(arm_id)
    counts = np.column_stack([table.n[:, arm], table.responders[:, arm],
                              table.n[:, control], table.responders[:, control]])
    return counts[(counts[:, 0] + counts[:, 2]) > 0].astype(float)


def _gain_curve(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Customers targeted and Qini gain at 0 and after each row of (n_t, r_t, n_c, r_c).

    While no control customer has been reached yet the control term is 0, as in
    scikit-uplift's ``qini_curve``.
    """
    cumulative = np.vstack([np.zeros((1, 4)), np.cumsum(counts, axis=0)])
    n_t, r_t, n_c, r_c = cumulative.T
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    return n_t + n_c, r_t - r_c * ratio


def _qini_curve(counts: np.ndarray, *, arm_name: str) -> list[QiniPoint]:
    """The Qini curve at 0 and at every distinct score value, one arm against control."""
    targeted, gain = _gain_curve(counts)
    total = targeted[-1]
    fraction = targeted / total if total else np.zeros_like(targeted)
    return [QiniPoint(arm=arm_name, fraction_targeted=float(f), incremental_gain=float(g),
                      random_gain=float(f * gain[-1]))
            for f, g in zip(fraction, gain, strict=True)]


def _thin(points: list[QiniPoint]) -> list[QiniPoint]:
    """At most MAX_CURVE_POINTS of the curve's points, evenly spread, ends kept."""
    if len(points) <= MAX_CURVE_POINTS:
        return points
    keep = np.unique(np.round(np.linspace(0, len(points) - 1, MAX_CURVE_POINTS)).astype(int))
    return [points[i] for i in keep]


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


def _area_above_diagonal(targeted: np.ndarray, gain: np.ndarray) -> float:
    diagonal = targeted / targeted[-1] * gain[-1]
    above = gain - diagonal
    return float(np.sum((above[1:] + above[:-1]) / 2 * np.diff(targeted)))


def _qini_auc_score(counts: np.ndarray) -> float | None:
    """The curve's area above the diagonal over the optimum's (negative effects included).

    The optimum targets treated responders first, then everyone whose response the
    incentive cannot have changed, and control responders last: the curve of the score
    y t - y (1 - t) (scikit-uplift's ``perfect_qini_curve``).
    """
    n_t, r_t, n_c, r_c = counts.sum(axis=0)
    if n_t == 0 or n_c == 0:
        return None
    optimum = np.array([[r_t, r_t, 0, 0], [n_t - r_t, 0, n_c - r_c, 0], [0, 0, r_c, r_c]])
    optimum = optimum[optimum[:, 0] + optimum[:, 2] > 0]
    best = _area_above_diagonal(*_gain_curve(optimum))
    if best == 0:
        return None
    return _area_above_diagonal(*_gain_curve(counts)) / best
