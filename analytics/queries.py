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
ratio metrics and CUPED need. Only one row per arm (and segment) leaves the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

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

A = Assignment.__table__  # type: ignore[attr-defined]
E = ChannelEvent.__table__  # type: ignore[attr-defined]
CV = Conversion.__table__  # type: ignore[attr-defined]
R = Redemption.__table__  # type: ignore[attr-defined]
CU = Customer.__table__  # type: ignore[attr-defined]
CC = ChannelCost.__table__  # type: ignore[attr-defined]
LD = LotteryDraw.__table__  # type: ignore[attr-defined]
LW = LotteryWinner.__table__  # type: ignore[attr-defined]

#: Metrics with one value per customer (mean metrics and binary metrics).
MEAN_METRICS = ("adoption", "source_interactions", "cost_to_serve", "conversion", "revenue",
                "incentive_cost", "complaints", "churn")
BINARY_METRICS = frozenset({"adoption", "conversion", "churn"})
#: Per-customer money columns only the economics read (not compared in the report).
VALUE_METRICS = ("margin", "net_value")
#: Metrics with a pre-period value, so CUPED can adjust them.
PRE_PERIOD_METRICS = ("adoption", "source_interactions", "cost_to_serve")
#: Customer attributes a breakdown may use.
SEGMENT_COLUMNS = ("segment", "value_tier", "loyalty_tier", "preferred_channel", "region",
                   "age_band", "is_new")


@dataclass(frozen=True)
class GoalWindow:
    campaign_id: int
    stage_id: int
    target_channel_id: int
    source_channel_ids: tuple[int, ...]
    window_days: int


def goal_window(connection: Connection, campaign_id: int) -> GoalWindow:
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
                      source_channel_ids=tuple(sources), window_days=goal.window_days)


def shift_days(connection: Connection, column: Any, days: int) -> ColumnElement[Any]:
    """``column + days`` in the dialect's own date arithmetic (days may be negative)."""
    if connection.dialect.name == "postgresql":
        return column + literal_column(f"interval '{int(days)} days'")
    # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'; keep that shape so that text
    # comparison with stored times stays chronological.
    return func.strftime("%Y-%m-%d %H:%M:%f000", column, f"{int(days):+d} days")


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def customer_metrics(connection: Connection, window: GoalWindow) -> Any:
    """One row per assigned customer with every metric and its pre-period value."""
    start = A.c.first_exposed_at
    end = shift_days(connection, start, window.window_days)
    pre_start = shift_days(connection, start, -window.window_days)
    in_window = and_(E.c.occurred_at >= start, E.c.occurred_at < end)
    in_pre = and_(E.c.occurred_at >= pre_start, E.c.occurred_at < start)
    at_stage = and_(E.c.stage_id == window.stage_id, E.c.kind == "interaction")
    on_target = E.c.channel_id == window.target_channel_id
    on_source = E.c.channel_id.in_(window.source_channel_ids or (-1,))

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(_flag(condition)), 0)

    # An event sent without a cost is charged what its channel costs at its stage.
    cost = func.coalesce(E.c.cost_minor, CC.c.cost_minor, 0)

    events = (
        select(
            A.c.id.label("assignment_id"),
            count(and_(at_stage, on_target, in_window)).label("target_n"),
            count(and_(at_stage, in_window)).label("stage_n"),
            count(and_(at_stage, on_source, in_window)).label("source_n"),
            func.coalesce(func.sum(case((and_(E.c.kind == "interaction", in_window), cost),
                                        else_=0)), 0).label("cost"),
            count(and_(E.c.kind == "complaint", in_window)).label("complaints"),
            count(and_(E.c.kind == "churn", in_window)).label("churn_n"),
            count(and_(at_stage, on_target, in_pre)).label("target_pre_n"),
            count(and_(at_stage, on_source, in_pre)).label("source_pre_n"),
            func.coalesce(func.sum(case((and_(E.c.kind == "interaction", in_pre), cost),
                                        else_=0)), 0).label("cost_pre"),
        )
        .select_from(A.outerjoin(E, and_(E.c.customer_id == A.c.customer_id,
                                         E.c.occurred_at >= pre_start,
                                         E.c.occurred_at < end))
                     .outerjoin(CC, and_(CC.c.channel_id == E.c.channel_id,
                                         CC.c.stage_id == E.c.stage_id)))
        .where(A.c.campaign_id == window.campaign_id)
        .group_by(A.c.id)
    ).subquery("events")
    conversions = (
        select(A.c.id.label("assignment_id"), func.count(CV.c.id).label("conversions"),
               func.coalesce(func.sum(CV.c.revenue_minor), 0).label("revenue"),
               func.coalesce(func.sum(func.coalesce(CV.c.margin_minor, CV.c.revenue_minor)),
                             0).label("margin"),
               func.coalesce(func.sum(_flag(CV.c.margin_minor.is_(None))), 0)
               .label("margin_imputed"))
        .select_from(A.join(CV, and_(CV.c.customer_id == A.c.customer_id,
                                     CV.c.occurred_at >= start, CV.c.occurred_at < end)))
        .where(A.c.campaign_id == window.campaign_id)
        .group_by(A.c.id)
    ).subquery("conversions")
    redemptions = (
        select(R.c.customer_id, func.sum(R.c.cost_minor).label("incentive_cost"))
        .where(R.c.campaign_id == window.campaign_id, R.c.status == "applied")
        .group_by(R.c.customer_id)
    ).subquery("redemptions")
    prizes = (
        select(LW.c.customer_id, func.sum(LW.c.value_minor).label("prize_value"))
        .select_from(LW.join(LD, LD.c.id == LW.c.draw_id))
        .where(LD.c.campaign_id == window.campaign_id)
        .group_by(LW.c.customer_id)
    ).subquery("prizes")
    margin = func.coalesce(conversions.c.margin, 0)
    incentive_cost = (func.coalesce(redemptions.c.incentive_cost, 0)
                      + func.coalesce(prizes.c.prize_value, 0))
    return (
        select(
            A.c.arm_id, A.c.customer_id, A.c.first_exposed_at,
            *(CU.c[name] for name in SEGMENT_COLUMNS),
            _flag(events.c.target_n > 0).label("adoption"),
            events.c.target_n, events.c.stage_n,
            events.c.source_n.label("source_interactions"),
            events.c.cost.label("cost_to_serve"),
            _flag(func.coalesce(conversions.c.conversions, 0) > 0).label("conversion"),
            func.coalesce(conversions.c.revenue, 0).label("revenue"),
            incentive_cost.label("incentive_cost"),
            margin.label("margin"),
            func.coalesce(conversions.c.margin_imputed, 0).label("margin_imputed"),
            (margin - events.c.cost - incentive_cost).label("net_value"),
            events.c.complaints,
            _flag(events.c.churn_n > 0).label("churn"),
            _flag(events.c.target_pre_n > 0).label("adoption_pre"),
            events.c.source_pre_n.label("source_interactions_pre"),
            events.c.cost_pre.label("cost_to_serve_pre"),
        )
        .select_from(
            A.join(events, events.c.assignment_id == A.c.id)
            .join(CU, CU.c.id == A.c.customer_id)
            .outerjoin(conversions, conversions.c.assignment_id == A.c.id)
            .outerjoin(redemptions, redemptions.c.customer_id == A.c.customer_id)
            .outerjoin(prizes, prizes.c.customer_id == A.c.customer_id))
        .where(A.c.campaign_id == window.campaign_id)
    ).subquery("per_customer")


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
    if segment is not None and segment not in SEGMENT_COLUMNS:
        raise ValueError(f"unknown segment column '{segment}'; use one of "
                         f"{', '.join(SEGMENT_COLUMNS)}")
    per = customer_metrics(connection, goal_window(connection, campaign_id))
    arms = Arm.__table__  # type: ignore[attr-defined]
    segment_value = (cast(per.c[segment], Integer) if segment == "is_new"
                     else per.c[segment]) if segment else literal("all")
    columns: list[Any] = [per.c.arm_id, arms.c.name.label("arm"), arms.c.is_control,
                          segment_value.label("segment_value"), func.count().label("n")]
    for metric in MEAN_METRICS:
        value = per.c[metric]
        columns += [func.sum(value).label(f"{metric}_sum"),
                    func.sum(value * value).label(f"{metric}_sum_sq")]
    for metric in PRE_PERIOD_METRICS:
        value, pre = per.c[metric], per.c[f"{metric}_pre"]
        columns += [func.sum(pre).label(f"{metric}_pre_sum"),
                    func.sum(pre * pre).label(f"{metric}_pre_sum_sq"),
                    func.sum(value * pre).label(f"{metric}_cross")]
    columns += [func.sum(per.c.target_n).label("target_n_sum"),
                func.sum(per.c.target_n * per.c.target_n).label("target_n_sum_sq"),
                func.sum(per.c.stage_n).label("stage_n_sum"),
                func.sum(per.c.stage_n * per.c.stage_n).label("stage_n_sum_sq"),
                func.sum(per.c.target_n * per.c.stage_n).label("target_stage_cross")]
    for metric in VALUE_METRICS:
        value = per.c[metric]
        columns += [func.sum(value).label(f"{metric}_sum"),
                    func.sum(value * value).label(f"{metric}_sum_sq")]
    columns += [func.sum(per.c.margin_imputed).label("margin_imputed_sum"),
                func.sum(per.c.incentive_cost * per.c.adoption).label("incentive_adoption_cross"),
                func.sum(per.c.net_value * per.c.incentive_cost)
                .label("net_value_incentive_cross")]
    group = [per.c.arm_id, arms.c.name, arms.c.is_control, arms.c.position]
    if segment:
        group.append(per.c[segment])
    query = (select(*columns).select_from(per.join(arms, arms.c.id == per.c.arm_id))
             .group_by(*group).order_by(arms.c.position, text("segment_value")))
    # Sums of integers come back as Decimal on PostgreSQL (numeric) and int on SQLite.
    return [{key: (int(value) if isinstance(value, int | Decimal) and not isinstance(value, bool)
                   else value)
             for key, value in row._mapping.items()}
            for row in connection.execute(query)]
