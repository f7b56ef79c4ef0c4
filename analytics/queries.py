"""Per-arm sufficient statistics of a campaign's metrics, aggregated by the database.

Intention-to-treat over exposed customers: every assigned customer counts in their arm,
whatever they did. For each customer the window is ``[first exposure, first exposure +
goal window)``; the pre-period (for CUPED) is the window of the same length before
first exposure. Metrics, per customer:

- ``adoption`` (binary): at least one interaction on the goal's target channel at the
  goal's stage within the window;
- ``target_share`` (ratio): interactions on the target channel / all interactions at the
  goal's stage within the window (numerator and denominator summed separately, the
  delta method handles the ratio);
- ``source_interactions``: interactions at the stage on the goal's source channels;
- ``cost_to_serve``: the cost of every interaction within the window (minor units): the
  event's own ``cost_minor`` when it was recorded, otherwise the channel's configured cost
  at the event's stage (:class:`ChannelCost`), otherwise 0;
- ``conversion`` (binary) and ``revenue`` (minor units) from conversions in the window;
- ``incentive_cost``: the cost of the customer's applied redemptions in the campaign plus
  the value of the prizes they won in its lottery draws (a prize costs the business as
  much as a discount does, but it is paid through a draw, not a redemption);
- guardrails ``complaints`` (count) and ``churn`` (binary) in the window;
- for the economics: ``margin`` of the conversions in the window (``margin_minor``, or the
  revenue of a conversion that records no margin; ``margin_imputed`` counts those), and
  ``net_value`` = margin - cost to serve - incentive cost, one column so that its variance
  (and its covariance with the incentive cost) is exact rather than assembled from parts.

Each customer's values are computed in one grouped subquery per source table, and the
outer query groups by arm, returning counts, sums, sums of squares and the cross-products
ratio metrics and CUPED need. Only one row per arm (and segment) leaves the database;
:func:`arm_statistics_and_adoption` adds, from the same pass, one row per arm and day for
the adoption timeline.
"""

from __future__ import annotations

import os
import queue
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Subquery
from sqlalchemy.sql.elements import Cast
from sqlalchemy.sql.selectable import LateralFromClause

from analytics.metrics import METRICS
from analytics.metrics import keys as metric_keys
from campaigns.db import SQLITE_READ_ONLY, sqlite_unpooled
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    ChannelCost,
    ChannelEvent,
    Conversion,
    Customer,
    GoalSourceChannel,
    LotteryDraw,
    LotteryWinner,
    MigrationGoal,
    Redemption,
)
from campaigns.settings import get_settings

A = Assignment.__table__  # type: ignore[attr-defined]
E = ChannelEvent.__table__  # type: ignore[attr-defined]
CV = Conversion.__table__  # type: ignore[attr-defined]
R = Redemption.__table__  # type: ignore[attr-defined]
CU = Customer.__table__  # type: ignore[attr-defined]
CC = ChannelCost.__table__  # type: ignore[attr-defined]
LD = LotteryDraw.__table__  # type: ignore[attr-defined]
LW = LotteryWinner.__table__  # type: ignore[attr-defined]
_ARM = Arm.__table__  # type: ignore[attr-defined]

#: Metrics with one value per customer (mean metrics and binary metrics).
MEAN_METRICS = tuple(m.column for m in METRICS.values() if m.column is not None)
BINARY_METRICS = frozenset(metric_keys(kind="proportion"))
#: Per-customer money columns only the economics read (not compared in the report).
VALUE_METRICS = ("margin", "net_value")
#: Metrics with a pre-period value, so CUPED can adjust them.
PRE_PERIOD_METRICS = metric_keys(pre_period=True)
#: Customer attributes a breakdown may use.
SEGMENT_COLUMNS = ("segment", "value_tier", "loyalty_tier", "preferred_channel", "region",
                   "age_band", "is_new")
#: Money metrics (minor units) a report may cap per customer. The pre-period value CUPED
#: adjusts ``cost_to_serve`` by is capped at the same value.
CAPPABLE_METRICS = metric_keys(cappable=True)
_PERCENTILE_CAP = re.compile(r"(\d+(?:\.\d+)?)p")
_AMOUNT_CAP = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class CapRule:
    """How one money metric is capped per customer: at a fixed ``amount`` (major units of
    the campaign's currency) or at the ``percentile`` of the metric's positive values.

    The percentile is taken among customers with a positive value because money metrics
    are sparse: most customers buy nothing, so a plain 99th percentile of revenue is often
    0 and would cap everyone's revenue to nothing.
    """

    percentile: float | None = None
    amount: Decimal | None = None

    def __str__(self) -> str:
        return f"{self.percentile:g}p" if self.percentile is not None else f"{self.amount}"


def parse_cap(text: str) -> CapRule:
    """``"99p"`` (a percentile of the positive values, above 0 and below 100) or
    ``"500.00"`` (an amount in major units, above 0); ValueError saying which are valid."""
    cleaned = text.strip().lower()
    expected = ("a percentile of the positive values such as 99p or 99.5p, or an amount "
                "in the campaign's currency such as 500.00")
    percentile = _PERCENTILE_CAP.fullmatch(cleaned)
    if percentile is not None:
        value = float(percentile.group(1))
        if not 0.0 < value < 100.0:
            raise ValueError(f"a percentile cap must lie above 0p and below 100p (got {text!r})")
        return CapRule(percentile=value)
    if _AMOUNT_CAP.fullmatch(cleaned):
        amount = Decimal(cleaned)
        if amount <= 0:
            raise ValueError(f"a cap must be above 0 (got {text!r})")
        return CapRule(amount=amount)
    raise ValueError(f"cannot read {text!r} as a cap: give {expected}")




@dataclass(frozen=True)
class GoalWindow:
    campaign_id: int
    stage_id: int
    target_channel_id: int
    source_channel_ids: tuple[int, ...]
    window_days: int
    #: length of the CUPED pre-period before first exposure (None: the window's length)
    pre_period_days: int | None = None

    @property
    def pre_days(self) -> int:
        return self.window_days if self.pre_period_days is None else self.pre_period_days


#: Longest CUPED pre-period a report may ask for, in days.
MAX_PRE_PERIOD_DAYS = 730


def check_pre_period_days(days: int | None) -> int | None:
    """``days`` if it is a valid CUPED pre-period length (None: the default); else
    ValueError saying what is allowed."""
    if days is not None and not 1 <= days <= MAX_PRE_PERIOD_DAYS:
        raise ValueError(f"the CUPED pre-period must be 1 to {MAX_PRE_PERIOD_DAYS} days "
                         f"(got {days})")
    return days


def goal_window(connection: Connection, campaign_id: int, *,
                pre_period_days: int | None = None) -> GoalWindow:
    """The campaign's goal: stage, channels and window; ``pre_period_days`` sets the CUPED
    pre-period (default: as long as the window)."""
    goal = connection.execute(
        select(MigrationGoal.__table__.c.id, MigrationGoal.__table__.c.stage_id,  # type: ignore[attr-defined]
               MigrationGoal.__table__.c.target_channel_id,  # type: ignore[attr-defined]
               MigrationGoal.__table__.c.window_days)  # type: ignore[attr-defined]
        .join(Campaign.__table__,  # type: ignore[attr-defined]
              Campaign.__table__.c.goal_id == MigrationGoal.__table__.c.id)  # type: ignore[attr-defined]
        .where(Campaign.__table__.c.id == campaign_id)  # type: ignore[attr-defined]
    ).one()
    sources = connection.execute(
        select(GoalSourceChannel.__table__.c.channel_id)  # type: ignore[attr-defined]
        .where(GoalSourceChannel.__table__.c.goal_id == goal.id)  # type: ignore[attr-defined]
    ).scalars().all()
    return GoalWindow(campaign_id=campaign_id, stage_id=goal.stage_id,
                      target_channel_id=goal.target_channel_id,
                      source_channel_ids=tuple(sources), window_days=goal.window_days,
                      pre_period_days=check_pre_period_days(pre_period_days))


def shift_days(connection: Connection, column: Any, days: int) -> ColumnElement[Any]:
    """``column + days`` (days may be negative), a day being 24 hours on both databases.

    On PostgreSQL the interval is written in hours: ``timestamptz + interval 'N days'``
    goes through the session's calendar (a daylight-saving day is 23 or 25 hours, and
    every addition converts to local time and back, which is most of the cost of a join
    filter evaluated on every event), while ``N * 24 hours`` is one integer addition and
    matches SQLite's UTC arithmetic in every session time zone.
    """
    if connection.dialect.name == "postgresql":
        return column + literal_column(f"interval '{24 * int(days)} hours'")
    # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'; keep that shape so that text
    # comparison with stored times stays chronological.
    return func.strftime("%Y-%m-%d %H:%M:%f000", column, f"{int(days):+d} days")


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many joined rows satisfy ``condition`` (0, never NULL, for a group without any).

    ``count(*) FILTER (WHERE ...)``, standard SQL that PostgreSQL and SQLite (3.30+) share:
    the aggregate skips non-matching rows instead of summing a CASE for every row.
    """
    return func.count().filter(condition)


def _sum_where(value: ColumnElement[Any], condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """The sum of ``value`` over the joined rows satisfying ``condition`` (0 if none)."""
    return _money_sum(func.sum(value).filter(condition))


class _PostgresCast(Cast[Any]):
    """A CAST only PostgreSQL needs: SQLite's integers are 64-bit, its sums of integers
    integers, and a cast there is work for nothing."""

    inherit_cache = True


@compiles(_PostgresCast, "sqlite")
def _no_cast_on_sqlite(element: _PostgresCast, compiler: Any, **kwargs: Any) -> str:
    return str(compiler.process(element.clause, **kwargs))


def _money_sum(total: ColumnElement[Any]) -> ColumnElement[Any]:
    """A per-customer sum of amounts in minor units, as a 64-bit integer (0 for none).

    PostgreSQL's ``sum(bigint)`` is a ``numeric``; every product and sum of products built
    on it in :func:`_sums` would then be ``numeric`` arithmetic, several times slower than
    integer and float arithmetic over a million customers. One customer's amounts are far
    below 2**63.
    """
    return _PostgresCast(func.coalesce(total, 0), BigInteger)


def _product(left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[Any]:
    """``left * right`` in double precision on PostgreSQL, for sums of squares and
    cross-products.

    A product of two amounts can overflow 64 bits where their sums never would, and exact
    digits beyond a double's 15 to 16 do not change a variance or a covariance.
    """
    return _PostgresCast(left, Float) * _PostgresCast(right, Float)


def _at_most(connection: Connection, value: ColumnElement[Any],
             cap: float) -> ColumnElement[Any]:
    """``value`` capped at ``cap`` (``least`` on PostgreSQL, two-argument ``min`` on SQLite);
    a whole cap keeps integer arithmetic, a fractional one (an interpolated percentile) is
    a double."""
    bound = (literal(int(cap), BigInteger) if float(cap).is_integer()
             else literal(float(cap), Float))
    if connection.dialect.name == "postgresql":
        return func.least(value, bound)
    return func.min(value, bound)


#: A half-open range of customer ids, ``[low, high)``: one share of a partitioned report.
CustomerRange = tuple[int, int]


def exposures(connection: Connection, window: GoalWindow,
              customers: CustomerRange | None = None) -> Subquery:
    """The campaign's exposures, each with its window bounds computed once.

    Columns: ``assignment_id``, ``arm_id``, ``customer_id``, ``start`` (first exposure),
    ``end`` (start + window) and ``pre_start`` (start - the pre-period, by default as long
    as the window). The event join bounds
    each customer's events to ``[pre_start, end)`` with these columns, so the aggregates
    above the join tell the window from the pre-period with one comparison to ``start``.
    ``customers`` keeps only the exposures of customers in that id range.
    """
    start = A.c.first_exposed_at
    query = (
        select(A.c.id.label("assignment_id"), A.c.arm_id, A.c.customer_id,
               start.label("start"),
               shift_days(connection, start, window.window_days).label("end"),
               shift_days(connection, start, -window.pre_days).label("pre_start"))
        .where(A.c.campaign_id == window.campaign_id)
    )
    if customers is not None:
        query = query.where(A.c.customer_id >= customers[0], A.c.customer_id < customers[1])
    return query.subquery("exposure")


def _event_metrics(window: GoalWindow, exposure: Subquery, *,
                   lateral: bool) -> Subquery | LateralFromClause:
    """Per exposure: event counts and costs, and when the customer adopted.

    Every exposure gets one row (zeros without events), from its customer's events in
    ``[pre_start, end)``, which the events' index on ``(customer_id, occurred_at)``
    delivers as one range per exposure. The bounds already restrict events to the
    pre-period and the window, so ``occurred_at >= start`` alone says "in the window" and
    ``occurred_at < start`` "in the pre-period".

    With ``lateral`` (PostgreSQL) the aggregate is a ``LATERAL`` subquery evaluated once
    per exposure, with ``assignment_id`` and ``customer_id`` as keys: no sort or hash of
    the joined events at all, so the work grows with the campaign's own events and a
    range of customers costs its share (see :func:`_partitioned`). A hash join of every
    event followed by a grouping by exposure, the plan PostgreSQL picks otherwise, sorts
    or spills every joined event and ends in one process however many it started.
    Otherwise (SQLite, which has no LATERAL) a left join grouped by ``(customer_id,
    arm_id, start)``, which the exposures' index on ``(campaign_id, customer_id)``
    delivers in order, so the grouping streams.

    An event recorded without a cost is charged its channel's configured cost: a
    correlated subquery inside COALESCE, evaluated only for those events.
    ``adopted_at`` is the first interaction on the target channel at the goal's stage
    within the window (NULL if none): the day the adoption timeline counts it.
    """
    in_window = E.c.occurred_at >= exposure.c.start
    in_pre = E.c.occurred_at < exposure.c.start
    interaction = E.c.kind == "interaction"
    at_stage = and_(interaction, E.c.stage_id == window.stage_id)
    on_target = E.c.channel_id == window.target_channel_id
    on_source = E.c.channel_id.in_(window.source_channel_ids or (-1,))
    in_range = and_(E.c.customer_id == exposure.c.customer_id,
                    E.c.occurred_at >= exposure.c.pre_start,
                    E.c.occurred_at < exposure.c.end)
    configured_cost = (
        select(CC.c.cost_minor)
        .where(CC.c.channel_id == E.c.channel_id, CC.c.stage_id == E.c.stage_id)
        .scalar_subquery())
    cost = func.coalesce(E.c.cost_minor, configured_cost, 0)
    metrics = (
        _count_where(and_(at_stage, on_target, in_window)).label("target_n"),
        _count_where(and_(at_stage, in_window)).label("stage_n"),
        _count_where(and_(at_stage, on_source, in_window)).label("source_n"),
        _sum_where(cost, and_(interaction, in_window)).label("cost"),
        _count_where(and_(E.c.kind == "complaint", in_window)).label("complaints"),
        _count_where(and_(E.c.kind == "churn", in_window)).label("churn_n"),
        _count_where(and_(at_stage, on_target, in_pre)).label("target_pre_n"),
        _count_where(and_(at_stage, on_source, in_pre)).label("source_pre_n"),
        _sum_where(cost, and_(interaction, in_pre)).label("cost_pre"),
        func.min(E.c.occurred_at).filter(and_(at_stage, on_target, in_window))
        .label("adopted_at"),
    )
    if lateral:
        return select(*metrics).where(in_range).lateral("events")
    keys = (exposure.c.customer_id, exposure.c.arm_id, exposure.c.start)
    return (
        select(*keys, *metrics)
        .select_from(exposure.outerjoin(E, in_range))
        .group_by(*keys)
    ).subquery("events")


def _conversion_metrics(exposure: Subquery,
                        customers: CustomerRange | None = None) -> Subquery:
    """Per customer who converted within the window: conversions, revenue and margin.

    ``customers`` bounds the conversions too, so a range of customers reads only its
    own conversions (an index range) rather than every conversion to join them.
    """
    in_range = [CV.c.customer_id == exposure.c.customer_id,
                CV.c.occurred_at >= exposure.c.start, CV.c.occurred_at < exposure.c.end]
    if customers is not None:
        in_range += [CV.c.customer_id >= customers[0], CV.c.customer_id < customers[1]]
    return (
        select(exposure.c.customer_id, func.count().label("conversions"),
               _money_sum(func.sum(CV.c.revenue_minor)).label("revenue"),
               _money_sum(func.sum(func.coalesce(CV.c.margin_minor, CV.c.revenue_minor)))
               .label("margin"),
               _count_where(CV.c.margin_minor.is_(None)).label("margin_imputed"))
        .select_from(exposure.join(CV, and_(*in_range)))
        .group_by(exposure.c.customer_id)
    ).subquery("conversions")


def _per_customer(connection: Connection, window: GoalWindow, segments: Sequence[str],
                  customers: CustomerRange | None = None,
                  caps: Mapping[str, float] | None = None) -> Subquery:
    """One row per exposure with every metric and, of the customer's attributes, ``segments``.

    ``caps`` (metric -> cap in minor units, metrics of :data:`CAPPABLE_METRICS`) cap those
    metrics (and ``cost_to_serve_pre``) per customer; each capped metric ``m`` keeps its
    recorded value as ``m_uncapped``, and ``margin`` and ``net_value`` stay uncapped.

    Driven from the exposures (PostgreSQL, with the per-exposure event aggregate joined
    laterally) or from the per-exposure event rows (SQLite): the other per-customer
    aggregates (conversions, redemptions, prizes) are joined once on ``customer_id``,
    which is unique within a campaign. The customer table is joined only when an
    attribute is asked for. ``customers`` restricts every part to that id range.
    """
    exposure = exposures(connection, window, customers)
    lateral = connection.dialect.name == "postgresql"
    events = _event_metrics(window, exposure, lateral=lateral)
    conversions = _conversion_metrics(exposure, customers)

    def in_customers(column: ColumnElement[Any]) -> list[ColumnElement[bool]]:
        return [] if customers is None else [column >= customers[0], column < customers[1]]

    redemptions = (
        select(R.c.customer_id, _money_sum(func.sum(R.c.cost_minor)).label("incentive_cost"))
        .where(R.c.campaign_id == window.campaign_id, R.c.status == "applied",
               *in_customers(R.c.customer_id))
        .group_by(R.c.customer_id)
    ).subquery("redemptions")
    prizes = (
        select(LW.c.customer_id, _money_sum(func.sum(LW.c.value_minor)).label("prize_value"))
        .select_from(LW.join(LD, LD.c.id == LW.c.draw_id))
        .where(LD.c.campaign_id == window.campaign_id, *in_customers(LW.c.customer_id))
        .group_by(LW.c.customer_id)
    ).subquery("prizes")

    def zero_if_none(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.coalesce(column, 0)

    driver: Any = exposure if lateral else events
    customer_id, arm_id, start = driver.c.customer_id, driver.c.arm_id, driver.c.start
    # Both forms give every exposure a row with zero counts when it has no events.
    counts = {name: events.c[name] for name in ("target_n", "stage_n", "source_n", "cost",
                                                  "complaints", "target_pre_n",
                                                  "source_pre_n", "cost_pre")}
    cost = counts["cost"]
    margin = zero_if_none(conversions.c.margin)
    incentive_cost = (zero_if_none(redemptions.c.incentive_cost)
                      + zero_if_none(prizes.c.prize_value))
    joined = exposure.join(events, true()) if lateral else driver
    joined = (joined.outerjoin(conversions, conversions.c.customer_id == customer_id)
              .outerjoin(redemptions, redemptions.c.customer_id == customer_id)
              .outerjoin(prizes, prizes.c.customer_id == customer_id))
    if segments:
        joined = joined.join(CU, CU.c.id == customer_id)
    revenue = zero_if_none(conversions.c.revenue)
    recorded = {"revenue": revenue, "cost_to_serve": cost, "incentive_cost": incentive_cost}
    caps = caps or {}

    def capped(metric: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return value if metric not in caps else _at_most(connection, value, caps[metric])

    return (
        select(
            arm_id, customer_id, start.label("first_exposed_at"),
            *(CU.c[name] for name in segments),
            _flag(counts["target_n"] > 0).label("adoption"),
            counts["target_n"].label("target_n"), counts["stage_n"].label("stage_n"),
            counts["source_n"].label("source_interactions"),
            capped("cost_to_serve", cost).label("cost_to_serve"),
            _flag(conversions.c.conversions > 0).label("conversion"),
            capped("revenue", revenue).label("revenue"),
            capped("incentive_cost", incentive_cost).label("incentive_cost"),
            *(recorded[metric].label(f"{metric}_uncapped") for metric in CAPPABLE_METRICS
              if metric in caps),
            margin.label("margin"),
            zero_if_none(conversions.c.margin_imputed).label("margin_imputed"),
            (margin - cost - incentive_cost).label("net_value"),
            counts["complaints"].label("complaints"),
            _flag(events.c.churn_n > 0).label("churn"),
            _flag(counts["target_pre_n"] > 0).label("adoption_pre"),
            counts["source_pre_n"].label("source_interactions_pre"),
            capped("cost_to_serve", counts["cost_pre"]).label("cost_to_serve_pre"),
            events.c.adopted_at,
        )
        .select_from(joined)
    ).subquery("per_customer")


def customer_metrics(connection: Connection, window: GoalWindow) -> Subquery:
    """One row per assigned customer with every metric, its pre-period value and every
    segment attribute (:data:`SEGMENT_COLUMNS`)."""
    return _per_customer(connection, window, SEGMENT_COLUMNS)


def utc_day(connection: Connection, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp: a ``date`` on PostgreSQL, 'YYYY-MM-DD' on SQLite.

    Written without bound parameters, so the same expression can be grouped by.
    """
    if connection.dialect.name == "postgresql":
        # The session time zone must not move a timestamp across midnight.
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    return func.date(column)  # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS...'


def as_date(value: date | str) -> date:
    """A day as :func:`utc_day` returns it, as a ``date``."""
    return value if isinstance(value, date) else date.fromisoformat(value)


@dataclass(frozen=True)
class DailyAdoption:
    """Per (arm id, UTC day): customers first exposed that day, and customers who adopted
    that day (their first target-channel interaction at the goal's stage in their window)."""

    exposed: dict[tuple[int, date], int]
    adopted: dict[tuple[int, date], int]


def arm_statistics(connection: Connection, campaign_id: int, *,
                   segment: str | None = None) -> list[dict[str, Any]]:
    """Sufficient statistics per arm (and per value of ``segment``), one dict per group.

    Keys: ``arm_id``, ``arm``, ``is_control``, ``segment_value``, ``n``; for each mean
    metric ``m``: ``m_sum``, ``m_sum_sq``; for CUPED, for each pre-period metric:
    ``m_pre_sum``, ``m_pre_sum_sq``, ``m_cross`` (sum of m * m_pre); for the share ratio:
    ``target_n_sum``, ``target_n_sum_sq``, ``stage_n_sum``, ``stage_n_sum_sq``,
    ``target_stage_cross``; for the economics, for each value metric ``v`` (``margin``,
    ``net_value``): ``v_sum``, ``v_sum_sq``, and ``margin_imputed_sum`` (conversions valued
    at their revenue), ``incentive_adoption_cross`` (sum of incentive cost * adoption) and
    ``net_value_incentive_cross`` (sum of net value * incentive cost).
    """
    per, segment_value = _grouped_customers(connection, campaign_id, segment)
    stats = (select(per.c.arm_id, segment_value.label("segment_value"),
                    func.count().label("n"), *_sums(per))
             # Grouped by ids only (a few groups, hashed rather than sorted); the arm's
             # name and flag are joined to those few rows afterwards.
             .group_by(per.c.arm_id, *([per.c[segment]] if segment else []))
             ).subquery("stats")
    query = (select(stats.c.arm_id, _ARM.c.name.label("arm"), _ARM.c.is_control,
                    *(column for column in stats.c if column.name != "arm_id"))
             .select_from(stats.join(_ARM, _ARM.c.id == stats.c.arm_id))
             .order_by(_ARM.c.position, stats.c.segment_value))
    return [_plain(row._mapping) for row in connection.execute(query)]


def arm_statistics_and_adoption(connection: Connection, campaign_id: int, *,
                                segment: str | None = None,
                                pre_period_days: int | None = None,
                                caps: Mapping[str, float] | None = None
                                ) -> tuple[list[dict[str, Any]], DailyAdoption]:
    """:func:`arm_statistics` and the daily exposures and adoptions of each arm, from one
    pass over the campaign's exposures and events.

    The per-customer rows are first summed per (arm, segment value, day of adoption):
    a few cells per arm and segment value, whatever the number of customers. One
    statement then adds the cells up two ways (per arm and segment value: the
    statistics; per arm and adoption day) and counts the exposures per arm and day from
    the assignments, so only those rows reach Python and the figures are identical to
    :func:`arm_statistics`. A large campaign's customers are split into
    ranges summed on several connections at once (:func:`_partitioned`); every figure
    is a sum, so the ranges' rows add up to exactly the single statement's.

    ``pre_period_days`` sets the CUPED pre-period (default: the goal's window);
    ``caps`` caps money metrics per customer (see :func:`_per_customer`), adding for each
    capped metric ``m`` the keys ``m_uncapped_sum``, ``m_uncapped_sum_sq`` and
    ``m_capped_n`` (customers whose value was capped).
    """
    if segment is not None and segment not in SEGMENT_COLUMNS:
        raise ValueError(f"unknown segment column '{segment}'; use one of "
                         f"{', '.join(SEGMENT_COLUMNS)}")
    window = goal_window(connection, campaign_id, pre_period_days=pre_period_days)
    unknown = sorted(set(caps or {}) - set(CAPPABLE_METRICS))
    if unknown:
        raise ValueError(f"cannot cap {', '.join(unknown)}; use one of "
                         f"{', '.join(CAPPABLE_METRICS)}")
    names = ["n", *(column.name for column in
                    _sums(_per_customer(connection, window, (), caps=caps)))]

    def statement(on: Connection, customers: CustomerRange | None) -> Any:
        return _statistics_and_adoption(on, window, segment, names, customers, caps)

    rows: list[dict[str, Any]] = []
    daily = DailyAdoption(exposed={}, adopted={})
    for mapping in _partitioned(connection, campaign_id, statement, names):
        if mapping["part"] == 0:
            rows.append(_plain({"arm_id": mapping["arm_id"], "arm": mapping["arm"],
                                "is_control": mapping["is_control"],
                                "segment_value": mapping["segment_value"],
                                **{name: mapping[name] for name in names}}))
        else:
            counts = daily.exposed if mapping["part"] == 1 else daily.adopted
            counts[(mapping["arm_id"], as_date(mapping["day"]))] = int(mapping["n"])
    return rows, daily


def _statistics_and_adoption(connection: Connection, window: GoalWindow,
                             segment: str | None, names: Sequence[str],
                             customers: CustomerRange | None,
                             caps: Mapping[str, float] | None = None) -> Any:
    """The statement behind :func:`arm_statistics_and_adoption`, for every customer of the
    campaign or those in the id range ``customers``.

    Rows: ``part`` (0: statistics per arm and segment value; 1: exposures per arm and
    day; 2: adoptions per arm and day), ``arm_id``, ``position``, ``segment_value``,
    ``day``, then ``names`` (``n`` and the sums), then ``arm`` and ``is_control``.
    """
    per = _per_customer(connection, window, (segment,) if segment else (), customers, caps)
    segment_value = (cast(per.c[segment], Integer) if segment == "is_new"
                     else per.c[segment]) if segment else literal("all")
    days = select(per, segment_value.label("segment_value"),
                  utc_day(connection, per.c.adopted_at).label("adopted_day")
                  ).subquery("per_customer_days")
    sums = _sums(days)
    keys = (days.c.arm_id, days.c.segment_value, days.c.adopted_day)
    # A few cells per arm and segment value (one per adoption day), hashed.
    cells = (select(*keys, func.count().label("n"), *sums).group_by(*keys)).cte("cells")
    position = (select(_ARM.c.position).where(_ARM.c.id == cells.c.arm_id)
                .scalar_subquery())
    no_value = null()
    statistics = (select(literal(0).label("part"), cells.c.arm_id,
                         position.label("position"), cells.c.segment_value,
                         no_value.label("day"),
                         *(func.sum(cells.c[name]).label(name) for name in names))
                  .group_by(cells.c.arm_id, cells.c.segment_value))
    adopted = (select(literal(2), cells.c.arm_id, no_value, no_value, cells.c.adopted_day,
                      func.sum(cells.c.n), *(no_value for _ in names[1:]))
               .where(cells.c.adopted_day.is_not(None))
               .group_by(cells.c.arm_id, cells.c.adopted_day))
    # Exposures by day need no events: the assignments alone.
    exposed_day = utc_day(connection, A.c.first_exposed_at)
    in_range = ([] if customers is None
                else [A.c.customer_id >= customers[0], A.c.customer_id < customers[1]])
    exposed = (select(literal(1), A.c.arm_id, no_value, no_value, exposed_day,
                      func.count(), *(no_value for _ in names[1:]))
               .where(A.c.campaign_id == window.campaign_id, *in_range)
               .group_by(A.c.arm_id, exposed_day))
    union = union_all(statistics, exposed, adopted).subquery("parts")
    return (select(union, _ARM.c.name.label("arm"), _ARM.c.is_control)
            .select_from(union.join(_ARM, _ARM.c.id == union.c.arm_id))
            .order_by(union.c.part, union.c.position, union.c.segment_value, union.c.day))


#: Below this many exposures a report is one statement on the caller's connection.
PARTITION_MIN_EXPOSURES = 200_000
#: Customer ranges per connection: a range that happens to hold more customers (or more
#: events) than the others only delays the connection that drew it.
RANGES_PER_CONNECTION = 4
#: work_mem of a range's transaction: its per-exposure rows are grouped into cells.
RANGE_WORK_MEM = "64MB"
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


def report_parallelism(connection: Connection) -> int:
    """How many connections a large report on ``connection``'s database may use.

    ``CHANNELSHIFT_REPORT_PARALLELISM`` when set. Otherwise, on PostgreSQL as many
    processes as it lets one query use (``max_parallel_workers_per_gather`` + 1); on
    SQLite, which runs every statement on one core, as many as this process may use
    (at most 8).
    """
    configured = get_settings().report_parallelism
    if configured is not None:
        return configured
    if connection.dialect.name != "postgresql":
        return max(1, min(8, len(os.sched_getaffinity(0))))
    workers = connection.exec_driver_sql(
        "SELECT current_setting('max_parallel_workers_per_gather')::int").scalar_one()
    return max(1, min(8, int(workers) + 1))


#: ``Connection.info`` key: the read-only connections a :func:`report_view` on SQLite
#: opened beside its own, reading the same state of the database.
_PINNED_READERS = "channelshift.report_readers"


def _is_file_database(engine: Engine) -> bool:
    database = engine.url.database
    return bool(database) and database != ":memory:"


def _pin(connection: Connection) -> None:
    # A SQLite read transaction takes its snapshot at its first read, not at BEGIN.
    connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one()


@contextmanager
def report_view(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction for a whole report (or any long read): all of its
    statements, and every customer range :func:`_partitioned` cuts, read one state of the
    database, and no writer waits for it.

    PostgreSQL: ``REPEATABLE READ READ ONLY``; the ranges import its snapshot.

    SQLite: a deferred transaction, which in WAL mode takes no lock writers wait for
    (a transaction of ours that may write begins ``IMMEDIATE`` and holds the write lock
    to its end, so a report run in one kept offers, redemptions and events waiting for
    as long as it ran). The range connections must read exactly what it reads, so on a
    file database they are opened with it, as many as :func:`report_parallelism`
    allows, each taking its snapshot with a first read while a gate connection holds the
    write lock: nothing can commit between the snapshots, and writers wait only for
    those few reads. The range connections come from :func:`sqlite_unpooled`, so a
    report never waits for the pool its own requests draw from.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as view:
            view = view.execution_options(isolation_level="REPEATABLE READ",
                                          postgresql_readonly=True)
            with view.begin():
                yield view
        return
    with ExitStack() as stack:
        view = stack.enter_context(engine.connect()).execution_options(**SQLITE_READ_ONLY)
        readers: list[Connection] = []
        count = report_parallelism(view) if _is_file_database(engine) else 1
        if count > 1:
            with engine.connect() as gate, gate.begin():
                stack.enter_context(view.begin())
                _pin(view)
                for _ in range(count):
                    reader = stack.enter_context(sqlite_unpooled(engine).connect())
                    reader = reader.execution_options(**SQLITE_READ_ONLY)
                    stack.enter_context(reader.begin())
                    _pin(reader)
                    readers.append(reader)
        else:
            stack.enter_context(view.begin())
        view.info[_PINNED_READERS] = readers
        stack.callback(view.info.pop, _PINNED_READERS, None)
        yield view


def _pinned_readers(connection: Connection) -> list[Connection]:
    """The range connections of ``connection``'s :func:`report_view`, if any."""
    return list(connection.info.get(_PINNED_READERS) or ())


def _sqlite_can_share_view(connection: Connection) -> bool:
    """Whether new connections to ``connection``'s SQLite database read what it reads.

    They do while it holds the write lock: its transaction began IMMEDIATE (every
    transaction of :func:`campaigns.db.build_engine`'s engines but a read-only one), so
    nothing can commit until it ends, and a connection opened meanwhile reads the last
    commit, as it does. An in-memory database is private to its connection.
    """
    return (_is_file_database(connection.engine) and connection.in_transaction()
            and connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            == "IMMEDIATE")


@contextmanager
def _range_connection(connection: Connection, snapshot: str | None,
                      pinned: Connection | None) -> Iterator[Connection]:
    """A connection in a transaction that reads exactly what ``connection`` reads: one of
    its :func:`report_view`'s ``pinned`` readers; else a new connection of its engine,
    on PostgreSQL importing its ``snapshot``, on SQLite reading while ``connection``
    holds the write lock (:func:`_sqlite_can_share_view`)."""
    if pinned is not None:
        yield pinned
        return
    with connection.engine.connect() as own:
        if snapshot is None:
            own = own.execution_options(**SQLITE_READ_ONLY)
            with own.begin():
                yield own
            return
        own = own.execution_options(isolation_level="REPEATABLE READ")
        with own.begin():
            own.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            # The ranges are the parallelism: no parallel workers on top of them. And
            # no JIT: compiling the statement's expressions costs seconds per range
            # (its estimated cost crosses jit_optimize_above_cost), more than the
            # per-exposure work it would speed up.
            own.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
            own.exec_driver_sql("SET LOCAL jit = off")
            # Enough memory to hash a range's cells instead of sorting them on disk.
            own.exec_driver_sql(f"SET LOCAL work_mem = '{RANGE_WORK_MEM}'")
            yield own


def _partitioned(connection: Connection, campaign_id: int,
                 statement: Callable[[Connection, CustomerRange | None], Any],
                 names: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``statement`` for the whole campaign, in its order.

    A small campaign (under :data:`PARTITION_MIN_EXPOSURES`, or a
    :func:`report_parallelism` of 1) runs ``statement(connection, None)``, as does a
    SQLite connection that neither comes from :func:`report_view` nor holds the write
    lock (:func:`_sqlite_can_share_view`). Otherwise the campaign's customer ids are cut
    into equal ranges that that many connections take in turn, each in a transaction
    that reads exactly the database the caller reads, even while events keep arriving:
    on PostgreSQL new connections in REPEATABLE READ transactions that import the
    caller's snapshot (``pg_export_snapshot``, as ``pg_dump --jobs`` does); on SQLite
    the read-only connections :func:`report_view` opened with the caller, or else new
    read-only transactions begun while the caller keeps writers out. Like the imported
    snapshot, the ranges do not see the caller's own uncommitted writes. Rows with the
    same ``part``, ``arm_id``, ``segment_value`` and ``day`` are added up over
    ``names``.

    Why not PostgreSQL's own parallel query: the per-exposure aggregate is a LATERAL
    subquery, which PostgreSQL (to 17) runs in one process; and the plans it can run
    in parallel (a hash join of every event, then a grouping by exposure) end with
    every exposure's row funnelled through a single process before the joins and sums
    that follow. SQLite runs every statement on one core; its threads release the GIL
    while a statement runs.
    """
    postgresql = connection.dialect.name == "postgresql"
    pinned = [] if postgresql else _pinned_readers(connection)
    workers = len(pinned) or report_parallelism(connection)
    bounds = None
    if workers > 1 and (postgresql or pinned or _sqlite_can_share_view(connection)):
        bounds = connection.execute(
            select(func.count(), func.min(A.c.customer_id), func.max(A.c.customer_id))
            .where(A.c.campaign_id == campaign_id)).one()
    if bounds is None or bounds[0] < max(1, PARTITION_MIN_EXPOSURES):
        return [dict(row._mapping) for row in connection.execute(statement(connection, None))]
    snapshot = None
    if postgresql:
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
    low, high = int(bounds[1]), int(bounds[2]) + 1
    count = workers * RANGES_PER_CONNECTION
    step = -(-(high - low) // count)
    ranges: queue.SimpleQueue[CustomerRange] = queue.SimpleQueue()
    for first in range(low, high, step):
        ranges.put((first, min(first + step, high)))

    def work(reader: Connection | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with _range_connection(connection, snapshot, reader) as own:
            while True:
                try:
                    customers = ranges.get_nowait()
                except queue.Empty:
                    return found
                found.extend(dict(row._mapping)
                             for row in own.execute(statement(own, customers)))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="report") as pool:
        readers: list[Connection | None] = [*pinned] or [None] * workers
        parts = [future.result() for future in [pool.submit(work, reader)
                                                for reader in readers]]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in (row for part in parts for row in part):
        key = (row["part"], row["arm_id"], row["segment_value"], row["day"])
        total = merged.get(key)
        if total is None:
            merged[key] = row
            continue
        for name in names:
            if row[name] is not None:
                total[name] = row[name] if total[name] is None else total[name] + row[name]

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        # The statement's ORDER BY, NULLs last as PostgreSQL sorts them.
        return (row["part"], row["position"] is None, row["position"],
                row["segment_value"] is None, row["segment_value"],
                row["day"] is None, row["day"])

    return sorted(merged.values(), key=order)


def _grouped_customers(connection: Connection, campaign_id: int,
                       segment: str | None) -> tuple[Subquery, ColumnElement[Any]]:
    """The per-customer rows of the campaign with ``segment`` and its grouping value."""
    if segment is not None and segment not in SEGMENT_COLUMNS:
        raise ValueError(f"unknown segment column '{segment}'; use one of "
                         f"{', '.join(SEGMENT_COLUMNS)}")
    per = _per_customer(connection, goal_window(connection, campaign_id),
                        (segment,) if segment else ())
    segment_value = (cast(per.c[segment], Integer) if segment == "is_new"
                     else per.c[segment]) if segment else literal("all")
    return per, segment_value


def _sums(per: Any) -> list[Any]:
    """The sums :func:`arm_statistics` returns (every key but the group's and ``n``)."""
    columns: list[Any] = []
    for metric in MEAN_METRICS:
        value = per.c[metric]
        columns += [func.sum(value).label(f"{metric}_sum"),
                    func.sum(_product(value, value)).label(f"{metric}_sum_sq")]
    for metric in PRE_PERIOD_METRICS:
        value, pre = per.c[metric], per.c[f"{metric}_pre"]
        columns += [func.sum(pre).label(f"{metric}_pre_sum"),
                    func.sum(_product(pre, pre)).label(f"{metric}_pre_sum_sq"),
                    func.sum(_product(value, pre)).label(f"{metric}_cross")]
    columns += [func.sum(per.c.target_n).label("target_n_sum"),
                func.sum(_product(per.c.target_n, per.c.target_n)).label("target_n_sum_sq"),
                func.sum(per.c.stage_n).label("stage_n_sum"),
                func.sum(_product(per.c.stage_n, per.c.stage_n)).label("stage_n_sum_sq"),
                func.sum(_product(per.c.target_n, per.c.stage_n)).label("target_stage_cross")]
    for metric in VALUE_METRICS:
        value = per.c[metric]
        columns += [func.sum(value).label(f"{metric}_sum"),
                    func.sum(_product(value, value)).label(f"{metric}_sum_sq")]
    # The economics' cross-products use the incentive cost as recorded (never capped).
    incentive_cost = (per.c.incentive_cost_uncapped if "incentive_cost_uncapped" in per.c
                      else per.c.incentive_cost)
    columns += [func.sum(per.c.margin_imputed).label("margin_imputed_sum"),
                func.sum(_product(incentive_cost, per.c.adoption))
                .label("incentive_adoption_cross"),
                func.sum(_product(per.c.net_value, incentive_cost))
                .label("net_value_incentive_cross")]
    for metric in CAPPABLE_METRICS:
        if f"{metric}_uncapped" in per.c:
            value, recorded = per.c[metric], per.c[f"{metric}_uncapped"]
            columns += [func.sum(recorded).label(f"{metric}_uncapped_sum"),
                        func.sum(_product(recorded, recorded))
                        .label(f"{metric}_uncapped_sum_sq"),
                        func.sum(_flag(recorded > value)).label(f"{metric}_capped_n")]
    return columns


def uncapped_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each capped metric's sums replaced by the sums of the values as
    recorded: what the economics and the guardrails read."""
    out = []
    for row in rows:
        restored = dict(row)
        for metric in CAPPABLE_METRICS:
            if f"{metric}_uncapped_sum" in row:
                restored[f"{metric}_sum"] = row[f"{metric}_uncapped_sum"]
                restored[f"{metric}_sum_sq"] = row[f"{metric}_uncapped_sum_sq"]
        out.append(restored)
    return out


def positive_percentile(connection: Connection, window: GoalWindow, metric: str,
                        percentile: float) -> tuple[float | None, int]:
    """The ``percentile`` of ``metric``'s positive per-customer values over the campaign's
    exposed customers (every arm together), and how many values are positive.

    Linear interpolation between order statistics (numpy's default, PostgreSQL's
    ``percentile_cont``): the database ranks the positive values and returns the few
    around the percentile's position, so the figure is the same on both databases
    (SQLite has no percentile function). None when no value is positive.
    """
    if metric not in CAPPABLE_METRICS:
        raise ValueError(f"cannot cap '{metric}'; use one of {', '.join(CAPPABLE_METRICS)}")
    per = _per_customer(connection, window, ())
    value = per.c[metric]
    ranked = (select(value.label("value"), func.row_number().over(order_by=value).label("rank"),
                     func.count().over().label("total"))
              .where(value > 0)).subquery("ranked")
    # rank of the order statistic below the percentile (1-based), give or take the
    # database's rounding of the cast: the rows around it come back, Python picks.
    position = cast((ranked.c.total - 1) * literal(percentile / 100.0, Float), Integer) + 1
    rows = connection.execute(
        select(ranked.c.value, ranked.c.rank, ranked.c.total)
        .where(ranked.c.rank >= position - 1, ranked.c.rank <= position + 2)).all()
    if not rows:
        return None, 0
    total = int(rows[0].total)
    by_rank = {int(row.rank): float(row.value) for row in rows}
    index = (total - 1) * (percentile / 100.0)
    low = int(index)
    below = by_rank[low + 1]
    above = by_rank.get(low + 2, below)
    return below + (index - low) * (above - below), total


def complete_windows(connection: Connection, campaign_id: int, *, window_days: int,
                     as_of: datetime) -> dict[int, int]:
    """Per arm id: exposed customers whose whole window had passed at ``as_of`` (first
    exposure at least ``window_days`` days earlier)."""
    cutoff = as_of - timedelta(days=window_days)
    return {int(arm_id): int(n) for arm_id, n in connection.execute(
        select(A.c.arm_id, func.count())
        .where(A.c.campaign_id == campaign_id, A.c.first_exposed_at <= cutoff)
        .group_by(A.c.arm_id))}


def _plain(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    # Sums of integers come back as Decimal on PostgreSQL (numeric) and int on SQLite.
    return {key: (int(value) if isinstance(value, int | Decimal) and not isinstance(value, bool)
                  else value)
            for key, value in mapping.items()}
