"""Channel economics: what each arm's migration is worth, and what each channel costs.

Two questions a marketer asks, answered from aggregates the database computes:

- **Did the campaign pay?** :func:`arm_economics` turns each treatment arm's difference
  from control (intention-to-treat over exposed customers, per-customer window as in
  :mod:`analytics.queries`) into money: incremental migrations, incentive cost per
  incremental migration, cost to serve saved, incremental revenue and margin, incentive
  cost, net benefit and ROI, each with an interval at the caller's ``alpha``.
- **Which channel is expensive for which stage, and which customers does it keep?**
  :func:`channel_overview` summarises cost to serve per channel x stage, revenue and margin
  per channel, customer quality per preferred channel and acquisition cost per channel,
  with a tidy :meth:`ChannelOverview.records` export and CSV / XLSX / JSON writers.

The report renders :class:`EconomicsResult` rows and the overview renders
:class:`ChannelStageEconomics` rows.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, distinct, func, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from analytics.queries import arm_statistics
from analytics.stats import Comparison, MeanStats, compare_means, compare_proportions
from analytics.stats.intervals import fieller
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Campaign,
    CampaignOrigin,
    Channel,
    ChannelCost,
    ChannelEvent,
    Conversion,
    Customer,
    EventKind,
    Stage,
)
from campaigns.types import in_utc

if TYPE_CHECKING:
    # pandas (and SciPy) load on first use, inside the functions: a second of every
    # server and CLI start that most never need.
    import pandas as pd

__all__ = [
    "ECONOMICS_METRICS",
    "MEDIA_TYPES",
    "AcquisitionEconomics",
    "ChannelEconomics",
    "ChannelOverview",
    "ChannelStageEconomics",
    "EconomicsResult",
    "ExportFormat",
    "PeriodError",
    "PreferredChannelEconomics",
    "arm_economics",
    "channel_overview",
    "check_period",
    "export_overview",
    "overview_frames",
    "parse_time_bound",
    "write_overview",
]

#: Economics metrics per treatment arm vs control, in report order.
ECONOMICS_METRICS = (
    "incremental_migrations",  # customers (arm size x adoption lift)
    "incentive_cost_per_incremental_migration",  # minor units
    "cost_to_serve_saved_per_customer",  # minor units (control - treatment)
    "incremental_revenue",  # minor units (arm size x revenue lift)
    "incremental_margin",  # minor units
    "incentive_cost",  # minor units (total of the arm)
    "net_benefit",  # minor units: savings + incremental margin - incentive cost
    "roi",  # ratio: net benefit / incentive cost
)


@dataclass(frozen=True)
class EconomicsResult:
    arm: str
    metric: str  # one of ECONOMICS_METRICS
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    unit: str  # "customers", "minor", "ratio"
    reason: str | None = None  # why an estimate or interval is missing
    method: str = ""  # how the estimate and its interval were computed, for the report


# =========================================================================== per arm

MIGRATIONS_METHOD = ("arm size x (adoption rate treatment - control); interval: arm size x "
                     "the adoption comparison's interval (unpooled Wald, or the "
                     "Miettinen-Nurminen score interval when counts are small)")
COST_PER_MIGRATION_METHOD = (
    "incentive cost of the arm / incremental migrations = mean incentive cost per exposed "
    "customer / adoption lift; Fieller's interval (the costs per migration the Wald z test "
    "does not reject, with the within-arm covariance of incentive cost and adoption), cut "
    "at 0 since a cost cannot be negative")
COST_SAVED_METHOD = (
    "mean cost to serve per customer, control - treatment, Welch t interval; an interaction's "
    "cost is its recorded cost_minor, else the channel's configured cost at its stage")
REVENUE_METHOD = ("arm size x (mean conversion revenue per customer, treatment - control); "
                  "interval: arm size x the Welch t interval")
INCENTIVE_COST_METHOD = (
    "total cost of the arm's applied redemptions; interval: arm size x the t interval of the "
    "mean incentive cost per exposed customer (what the arm would cost again)")
NET_BENEFIT_METHOD = (
    "arm size x (mean net value per customer, treatment - control), Welch t interval x arm "
    "size; net value = margin - cost to serve - incentive cost, one per-customer column")
ROI_METHOD = ("net benefit / incentive cost of the arm = net value lift / mean incentive cost "
              "per exposed customer; Fieller's interval with their within-arm covariance")


@dataclass(frozen=True)
class _Arm:
    """One arm's per-customer aggregates, as :func:`arm_statistics` returns them."""

    name: str
    adoption: MeanStats
    cost_to_serve: MeanStats
    revenue: MeanStats
    margin: MeanStats
    incentive_cost: MeanStats
    net_value: MeanStats
    incentive_adoption_cross: float
    net_value_incentive_cross: float
    margin_imputed: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> _Arm:
        def stats(metric: str) -> MeanStats:
            return MeanStats(n=row["n"], sum=float(row[f"{metric}_sum"]),
                             sum_sq=float(row[f"{metric}_sum_sq"]))

        return cls(name=row["arm"], adoption=stats("adoption"),
                   cost_to_serve=stats("cost_to_serve"), revenue=stats("revenue"),
                   margin=stats("margin"), incentive_cost=stats("incentive_cost"),
                   net_value=stats("net_value"),
                   incentive_adoption_cross=float(row["incentive_adoption_cross"]),
                   net_value_incentive_cross=float(row["net_value_incentive_cross"]),
                   margin_imputed=int(row["margin_imputed_sum"]))


def arm_economics(connection: Connection, campaign_id: int, *,
                  alpha: float = 0.05) -> list[EconomicsResult]:
    """Every treatment arm of a live campaign against its control, for every economics metric.

    Returns ``[]`` for an imported campaign (it has no channel events or incentive costs)
    and for a campaign without a control arm (there is nothing to be incremental to).
    Raises :class:`CampaignNotFound` for an unknown campaign id.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1 (got {alpha})")
    if _campaign_origin(connection, campaign_id) != CampaignOrigin.LIVE:
        return []
    return economics_from_rows(arm_statistics(connection, campaign_id), alpha=alpha)


def economics_from_rows(rows: Sequence[Mapping[str, Any]], *,
                        alpha: float = 0.05) -> list[EconomicsResult]:
    """:func:`arm_economics` on per-arm statistics already read (one aggregate per report)."""
    control = next((row for row in rows if row["is_control"]), None)
    if control is None:
        return []
    results: list[EconomicsResult] = []
    for row in rows:
        if not row["is_control"]:
            results += _arm_results(_Arm.from_row(control), _Arm.from_row(row), alpha=alpha)
    return results


def _campaign_origin(connection: Connection, campaign_id: int) -> str:
    campaign = Campaign.__table__  # type: ignore[attr-defined]
    origin = connection.execute(select(campaign.c.origin)
                                .where(campaign.c.id == campaign_id)).scalar_one_or_none()
    if origin is None:
        raise CampaignNotFound(campaign_id)
    return str(origin)


def _arm_results(control: _Arm, treatment: _Arm, *, alpha: float) -> list[EconomicsResult]:
    """The eight :data:`ECONOMICS_METRICS` of one treatment arm, in that order."""
    n_t = treatment.adoption.n
    adoption = compare_proportions(control.adoption, treatment.adoption, alpha=alpha)
    net_value = compare_means(control.net_value, treatment.net_value, alpha=alpha)
    margin_note = _margin_note(control.margin_imputed + treatment.margin_imputed)
    arm = treatment.name
    return [
        _scaled(arm, "incremental_migrations", adoption, factor=n_t, unit="customers",
                method=MIGRATIONS_METHOD),
        _cost_per_migration(arm, adoption, treatment, alpha=alpha),
        _scaled(arm, "cost_to_serve_saved_per_customer",
                compare_means(control.cost_to_serve, treatment.cost_to_serve, alpha=alpha),
                factor=-1, unit="minor", method=COST_SAVED_METHOD),
        _scaled(arm, "incremental_revenue",
                compare_means(control.revenue, treatment.revenue, alpha=alpha), factor=n_t,
                unit="minor", method=REVENUE_METHOD),
        _scaled(arm, "incremental_margin",
                compare_means(control.margin, treatment.margin, alpha=alpha), factor=n_t,
                unit="minor",
                method="arm size x (mean conversion margin per customer, treatment - "
                       f"control); interval: arm size x the Welch t interval; {margin_note}"),
        _incentive_cost(arm, treatment.incentive_cost, alpha=alpha),
        _scaled(arm, "net_benefit", net_value, factor=n_t, unit="minor",
                method=f"{NET_BENEFIT_METHOD}; {margin_note}"),
        _roi(arm, net_value, treatment, alpha=alpha, margin_note=margin_note),
    ]


def _margin_note(imputed: int) -> str:
    if imputed == 0:
        return "margin = each conversion's margin_minor (every conversion recorded one)"
    return (f"margin = each conversion's margin_minor; {imputed} conversion(s) without a "
            "margin are valued at their revenue, which overstates their margin")


def _scaled(arm: str, metric: str, comparison: Comparison, *, factor: float, unit: str,
            method: str) -> EconomicsResult:
    """``factor`` x the comparison's difference and interval (a negative factor flips it)."""
    estimate = None if comparison.diff is None else factor * comparison.diff
    low, high = comparison.diff_ci_low, comparison.diff_ci_high
    if low is None or high is None:
        return EconomicsResult(arm, metric, estimate, None, None, unit,
                               reason=comparison.reason or "the interval is undefined",
                               method=method)
    bounds = sorted((factor * low, factor * high))
    return EconomicsResult(arm, metric, estimate, bounds[0], bounds[1], unit, method=method)


def _mean_covariance(n: int, sum_a: float, sum_b: float, sum_ab: float) -> float:
    """Cov(mean a, mean b) of paired per-customer values = sample covariance / n."""
    return (sum_ab - sum_a * sum_b / n) / (n - 1) / n


def _ratio_interval(*, numerator: float, denominator: float, numerator_var: float,
                    denominator_var: float, covariance: float, alpha: float,
                    denominator_name: str, floor: float = -math.inf,
                    ) -> tuple[float, float | None, float | None, str | None]:
    """numerator / denominator with Fieller's interval (denominator != 0), cut at ``floor``.

    Fieller's interval is the set of ratios R with |N - R D| <= z sd(N - R D), Var(N - R D)
    = Var N - 2 R Cov(N, D) + R^2 Var D; it is bounded only when D is clearly nonzero, and
    unlike the delta method it is not forced to be symmetric. Returns (estimate, low,
    high, reason the interval is missing).
    """
    from scipy import stats as sps
    ratio = numerator / denominator
    if not numerator_var - 2 * ratio * covariance + ratio * ratio * denominator_var > 0:
        return ratio, None, None, "no variance: the interval is undefined"
    interval = fieller(numerator=numerator, denominator=denominator,
                       numerator_var=numerator_var, denominator_var=denominator_var,
                       covariance=covariance, quantile=float(sps.norm.isf(alpha / 2)),
                       denominator_name=denominator_name)
    if interval.low is None or interval.high is None:
        return ratio, None, None, interval.reason
    return ratio, max(interval.low, floor), interval.high, None


def _cost_per_migration(arm: str, adoption: Comparison, treatment: _Arm, *,
                        alpha: float) -> EconomicsResult:
    """Incentive cost per incremental migration; undefined unless the lift is established."""
    metric, unit = "incentive_cost_per_incremental_migration", "minor"

    def undefined(reason: str) -> EconomicsResult:
        return EconomicsResult(arm, metric, None, None, None, unit, reason=reason,
                               method=COST_PER_MIGRATION_METHOD)

    low, high, lift = adoption.diff_ci_low, adoption.diff_ci_high, adoption.diff
    pc, pt = adoption.control_mean, adoption.treatment_mean
    if low is None or high is None or lift is None or pc is None or pt is None:
        return undefined(f"the adoption lift has no interval ({adoption.reason}): "
                         "no incremental migration is established")
    level = f"{1 - alpha:.0%}"
    if low <= 0 <= high:
        return undefined(f"the adoption lift's {level} interval [{low:.4f}, {high:.4f}] "
                         "includes 0: no incremental migration is established, so its "
                         "cost is undefined")
    if high < 0:
        return undefined(f"adoption fell (lift {lift:.4f}, {level} interval [{low:.4f}, "
                         f"{high:.4f}]): there are no incremental migrations to price")
    cost, adopted = treatment.incentive_cost, treatment.adoption
    if cost.sum == 0:
        return EconomicsResult(arm, metric, 0.0, 0.0, 0.0, unit,
                               reason="the arm recorded no incentive cost",
                               method=COST_PER_MIGRATION_METHOD)
    if cost.variance is None or cost.mean is None:
        return undefined("too few customers in the arm for an interval")
    # The Wald variance of the lift: Fieller's interval then inverts the Wald z test.
    lift_variance = pc * (1 - pc) / adoption.control_n + pt * (1 - pt) / adoption.treatment_n
    estimate, ci_low, ci_high, reason = _ratio_interval(
        numerator=cost.mean, denominator=lift, numerator_var=cost.variance / cost.n,
        denominator_var=lift_variance,
        covariance=_mean_covariance(cost.n, cost.sum, adopted.sum,
                                    treatment.incentive_adoption_cross),
        alpha=alpha, denominator_name="the adoption lift (by the Wald z test)", floor=0.0)
    return EconomicsResult(arm, metric, estimate, ci_low, ci_high, unit, reason=reason,
                           method=COST_PER_MIGRATION_METHOD)


def _incentive_cost(arm: str, cost: MeanStats, *, alpha: float) -> EconomicsResult:
    """The arm's total incentive cost, with arm size x the t interval of the mean."""
    from scipy import stats as sps
    metric, unit = "incentive_cost", "minor"
    variance = cost.variance
    if variance is None:
        return EconomicsResult(arm, metric, cost.sum, None, None, unit,
                               reason="too few customers in the arm for an interval",
                               method=INCENTIVE_COST_METHOD)
    half = float(sps.t.isf(alpha / 2, cost.n - 1)) * math.sqrt(variance / cost.n) * cost.n
    return EconomicsResult(arm, metric, cost.sum, cost.sum - half, cost.sum + half, unit,
                           method=INCENTIVE_COST_METHOD)


def _roi(arm: str, net_value: Comparison, treatment: _Arm, *, alpha: float,
         margin_note: str) -> EconomicsResult:
    """Net benefit / incentive cost; the arm size cancels, so it is a ratio of means."""
    metric, unit = "roi", "ratio"
    method = f"{ROI_METHOD}; {margin_note}"
    cost = treatment.incentive_cost
    lift, se = net_value.diff, net_value.diff_se
    if cost.sum == 0 or cost.mean is None:
        return EconomicsResult(arm, metric, None, None, None, unit, method=method,
                               reason="the arm spent nothing on incentives: ROI is undefined")
    if lift is None or se is None or cost.variance is None:
        return EconomicsResult(arm, metric, None, None, None, unit, method=method,
                               reason=net_value.reason or "the net value lift is undefined")
    estimate, ci_low, ci_high, reason = _ratio_interval(
        numerator=lift, denominator=cost.mean, numerator_var=se * se,
        denominator_var=cost.variance / cost.n,
        covariance=_mean_covariance(cost.n, treatment.net_value.sum, cost.sum,
                                    treatment.net_value_incentive_cross),
        alpha=alpha, denominator_name="the mean incentive cost")
    return EconomicsResult(arm, metric, estimate, ci_low, ci_high, unit, reason=reason,
                           method=method)


# =========================================================================== overview


@dataclass(frozen=True)
class ChannelStageEconomics:
    """One channel x stage of the channel economics overview.

    Interactions, customers and cost to serve count ``interaction`` events in the period; an
    event without a recorded cost is charged the configured cost of its channel and stage.
    ``revenue_minor`` and ``margin_minor`` are None on these rows: a conversion records its
    channel but not a stage, so revenue and margin are reported per channel
    (:class:`ChannelEconomics`) rather than split across stages by a guess.
    """

    channel: str
    channel_name: str
    stage: str
    interactions: int
    customers: int
    cost_per_interaction_minor: int | None  # configured ChannelCost; None when not set
    cost_to_serve_minor: int
    cost_to_serve_per_customer_minor: float | None
    revenue_minor: int | None = None
    margin_minor: int | None = None


@dataclass(frozen=True)
class ChannelEconomics:
    """One channel over all stages: what it costs to serve and what its conversions bring.

    ``channel`` is None for conversions recorded without a channel.
    """

    channel: str | None
    channel_name: str | None
    interactions: int
    customers: int  # distinct customers with an interaction on the channel
    cost_to_serve_minor: int
    cost_to_serve_per_customer_minor: float | None
    conversions: int
    converting_customers: int
    revenue_minor: int
    margin_minor: int  # margin_minor, or the revenue of a conversion that records no margin
    margin_imputed_conversions: int  # conversions valued at their revenue for the margin


@dataclass(frozen=True)
class PreferredChannelEconomics:
    """The customers who prefer one channel: how many, how valuable, how loyal.

    ``channel`` is the customer's ``preferred_channel`` (None when it is not recorded);
    ``value_tiers`` counts customers per ``value_tier`` (``"unknown"`` when not recorded).
    """

    channel: str | None
    channel_name: str | None
    customers: int
    value_tiers: dict[str, int]
    churned_customers: int  # customers with a churn event in the period
    churn_rate: float | None
    average_lifetime_value_minor: float | None


@dataclass(frozen=True)
class AcquisitionEconomics:
    """What it cost to acquire customers on one channel (``acquisition`` events)."""

    channel: str
    channel_name: str
    acquisitions: int  # acquisition events
    customers: int  # distinct customers acquired
    cost_minor: int
    cost_per_customer_minor: float | None


@dataclass(frozen=True)
class ChannelOverview:
    """The channel economics overview of ``[since, until)`` (None: unbounded)."""

    since: datetime | None
    until: datetime | None
    channel_stages: list[ChannelStageEconomics] = field(default_factory=list)
    channels: list[ChannelEconomics] = field(default_factory=list)
    preferred_channels: list[PreferredChannelEconomics] = field(default_factory=list)
    acquisition: list[AcquisitionEconomics] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """Tidy rows ``{section, channel, stage, metric, value}``, one per figure.

        Undefined figures (None) are left out rather than written as empty values.
        """
        rows: list[dict[str, Any]] = []

        def add(section: str, channel: str | None, stage: str | None,
                figures: Iterable[tuple[str, Any]]) -> None:
            rows.extend({"section": section, "channel": channel, "stage": stage,
                         "metric": metric, "value": value}
                        for metric, value in figures if value is not None)

        for row in self.channel_stages:
            add("channel_stage", row.channel, row.stage, _figures(
                row, ("interactions", "customers", "cost_per_interaction_minor",
                      "cost_to_serve_minor", "cost_to_serve_per_customer_minor",
                      "revenue_minor", "margin_minor")))
        for channel in self.channels:
            add("channel", channel.channel, None, _figures(
                channel, ("interactions", "customers", "cost_to_serve_minor",
                          "cost_to_serve_per_customer_minor", "conversions",
                          "converting_customers", "revenue_minor", "margin_minor",
                          "margin_imputed_conversions")))
        for preferred in self.preferred_channels:
            add("preferred_channel", preferred.channel, None, [
                *_figures(preferred, ("customers", "churned_customers", "churn_rate",
                                      "average_lifetime_value_minor")),
                *((f"customers_value_tier_{tier}", count)
                  for tier, count in preferred.value_tiers.items())])
        for acquired in self.acquisition:
            add("acquisition", acquired.channel, None, _figures(
                acquired, ("acquisitions", "customers", "cost_minor",
                           "cost_per_customer_minor")))
        return rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 UTC strings, sections as lists of objects."""
        return {"since": _iso(self.since), "until": _iso(self.until),
                "channel_stages": [asdict(row) for row in self.channel_stages],
                "channels": [asdict(row) for row in self.channels],
                "preferred_channels": [asdict(row) for row in self.preferred_channels],
                "acquisition": [asdict(row) for row in self.acquisition]}


def _figures(row: Any, names: Sequence[str]) -> list[tuple[str, Any]]:
    return [(name, getattr(row, name)) for name in names]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00",
                                                                                  "Z")


# --------------------------------------------------------------------------- the period


class PeriodError(ValueError):
    """A bad ``since`` / ``until``; ``field`` names the one to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def parse_time_bound(value: str, *, field_name: str) -> datetime:
    """A date (``2026-01-31``: its midnight UTC) or an ISO 8601 time with a timezone."""
    text = value.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PeriodError(field_name, f"{field_name} must be a date (2026-01-31) or a time "
                          f"with a timezone (2026-01-31T09:00:00Z); got {value!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PeriodError(field_name, f"{field_name} needs a timezone, e.g. "
                          f"{text}Z for UTC; got {value!r}")
    try:
        return in_utc(moment)
    except ValueError as error:
        raise PeriodError(field_name, f"{field_name} {error}; got {value!r}") from None


def check_period(since: datetime | None, until: datetime | None) -> None:
    """Refuse naive bounds and an empty or reversed period."""
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and (bound.tzinfo is None or bound.utcoffset() is None):
            raise PeriodError(name, f"{name} must be timezone-aware (got {bound!r})")
    if since is not None and until is not None and until <= since:
        raise PeriodError("until", f"until ({_iso(until)}) must be later than since "
                          f"({_iso(since)})")


# --------------------------------------------------------------------------- the queries

E = ChannelEvent.__table__  # type: ignore[attr-defined]
CC = ChannelCost.__table__  # type: ignore[attr-defined]
CV = Conversion.__table__  # type: ignore[attr-defined]
CU = Customer.__table__  # type: ignore[attr-defined]
CH = Channel.__table__  # type: ignore[attr-defined]
ST = Stage.__table__  # type: ignore[attr-defined]

#: Value tier label for customers whose tier is not recorded.
UNKNOWN_TIER = "unknown"


def channel_overview(connection: Connection, *, since: datetime | None = None,
                     until: datetime | None = None) -> ChannelOverview:
    """The channel economics of events and conversions in ``[since, until)``.

    Every section is aggregated by the database; only one row per channel (x stage, x value
    tier) comes back. The preferred-channel section describes customers created before
    ``until`` and counts churn events within the period.
    """
    check_period(since, until)
    return ChannelOverview(
        since=since, until=until,
        channel_stages=_channel_stages(connection, since=since, until=until),
        channels=_channels(connection, since=since, until=until),
        preferred_channels=_preferred_channels(connection, since=since, until=until),
        acquisition=_acquisition(connection, since=since, until=until))


def _in_period(column: Any, since: datetime | None,
               until: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def _event_cost() -> ColumnElement[Any]:
    """An event's recorded cost, else its channel's configured cost at its stage (needs CC)."""
    return func.coalesce(E.c.cost_minor, CC.c.cost_minor, 0)


def _events_with_costs() -> Any:
    return E.outerjoin(CC, and_(CC.c.channel_id == E.c.channel_id,
                                CC.c.stage_id == E.c.stage_id))


def _int(value: Any) -> int:
    """Sums come back as Decimal on PostgreSQL, int on SQLite, None over no rows."""
    return 0 if value is None else int(value)


def _per(total: int, count: int) -> float | None:
    return total / count if count else None


def _channel_stages(connection: Connection, *, since: datetime | None,
                    until: datetime | None) -> list[ChannelStageEconomics]:
    """Every channel x stage with interactions in the period or a configured cost."""
    events = (
        select(E.c.channel_id, E.c.stage_id, func.count().label("interactions"),
               func.count(distinct(E.c.customer_id)).label("customers"),
               func.sum(_event_cost()).label("cost"))
        .select_from(_events_with_costs())
        .where(E.c.kind == EventKind.INTERACTION.value, *_in_period(E.c.occurred_at, since,
                                                                    until))
        .group_by(E.c.channel_id, E.c.stage_id)
    ).subquery("events")
    query = (
        select(CH.c.key, CH.c.name, ST.c.key.label("stage"),
               CC.c.cost_minor.label("configured"), events.c.interactions,
               events.c.customers, events.c.cost)
        .select_from(
            CH.join(ST, true())
            .outerjoin(events, and_(events.c.channel_id == CH.c.id,
                                    events.c.stage_id == ST.c.id))
            .outerjoin(CC, and_(CC.c.channel_id == CH.c.id, CC.c.stage_id == ST.c.id)))
        .where(or_(events.c.interactions.is_not(None), CC.c.id.is_not(None)))
        .order_by(CH.c.key, ST.c.position, ST.c.key)
    )
    rows = []
    for row in connection.execute(query):
        customers, cost = _int(row.customers), _int(row.cost)
        rows.append(ChannelStageEconomics(
            channel=row.key, channel_name=row.name, stage=row.stage,
            interactions=_int(row.interactions), customers=customers,
            cost_per_interaction_minor=None if row.configured is None else int(row.configured),
            cost_to_serve_minor=cost, cost_to_serve_per_customer_minor=_per(cost, customers)))
    return rows


def _channels(connection: Connection, *, since: datetime | None,
              until: datetime | None) -> list[ChannelEconomics]:
    """Per channel: interactions over all stages, and the conversions recorded on it."""
    served = {row.channel_id: row for row in connection.execute(
        select(E.c.channel_id, func.count().label("interactions"),
               func.count(distinct(E.c.customer_id)).label("customers"),
               func.sum(_event_cost()).label("cost"))
        .select_from(_events_with_costs())
        .where(E.c.kind == EventKind.INTERACTION.value,
               *_in_period(E.c.occurred_at, since, until))
        .group_by(E.c.channel_id))}
    converted = {row.channel_id: row for row in connection.execute(
        select(CV.c.channel_id, func.count().label("conversions"),
               func.count(distinct(CV.c.customer_id)).label("customers"),
               func.sum(CV.c.revenue_minor).label("revenue"),
               func.sum(func.coalesce(CV.c.margin_minor, CV.c.revenue_minor)).label("margin"),
               func.sum(case((CV.c.margin_minor.is_(None), 1), else_=0)).label("imputed"))
        .where(*_in_period(CV.c.occurred_at, since, until))
        .group_by(CV.c.channel_id))}
    names = _channel_names(connection)
    ids = sorted(set(served) | set(converted),
                 key=lambda channel_id: (channel_id is None, names.get(channel_id, ("", ""))))
    rows = []
    for channel_id in ids:
        key, name = names.get(channel_id, (None, None))
        serving, conversions = served.get(channel_id), converted.get(channel_id)
        customers = _int(serving.customers) if serving else 0
        cost = _int(serving.cost) if serving else 0
        rows.append(ChannelEconomics(
            channel=key, channel_name=name,
            interactions=_int(serving.interactions) if serving else 0, customers=customers,
            cost_to_serve_minor=cost, cost_to_serve_per_customer_minor=_per(cost, customers),
            conversions=_int(conversions.conversions) if conversions else 0,
            converting_customers=_int(conversions.customers) if conversions else 0,
            revenue_minor=_int(conversions.revenue) if conversions else 0,
            margin_minor=_int(conversions.margin) if conversions else 0,
            margin_imputed_conversions=_int(conversions.imputed) if conversions else 0))
    return rows


def _channel_names(connection: Connection) -> dict[int, tuple[str, str]]:
    return {row.id: (row.key, row.name)
            for row in connection.execute(select(CH.c.id, CH.c.key, CH.c.name))}


def _preferred_channels(connection: Connection, *, since: datetime | None,
                        until: datetime | None) -> list[PreferredChannelEconomics]:
    """Customers per preferred channel and value tier, with churn and lifetime value."""
    churned = (
        select(E.c.customer_id)
        .where(E.c.kind == EventKind.CHURN.value, *_in_period(E.c.occurred_at, since, until))
        .distinct()
    ).subquery("churned")
    query = (
        select(CU.c.preferred_channel, CU.c.value_tier, CH.c.name,
               func.count().label("customers"),
               func.count(churned.c.customer_id).label("churned"),
               func.sum(CU.c.lifetime_value_minor).label("lifetime_value"))
        .select_from(CU.outerjoin(churned, churned.c.customer_id == CU.c.id)
                     .outerjoin(CH, CH.c.key == CU.c.preferred_channel))
        .where(*_in_period(CU.c.created_at, None, until))
        .group_by(CU.c.preferred_channel, CU.c.value_tier, CH.c.name)
    )
    groups: dict[str | None, dict[str, Any]] = {}
    for row in connection.execute(query):
        group = groups.setdefault(row.preferred_channel, {
            "name": row.name, "customers": 0, "churned": 0, "lifetime_value": 0, "tiers": {}})
        customers = _int(row.customers)
        group["customers"] += customers
        group["churned"] += _int(row.churned)
        group["lifetime_value"] += _int(row.lifetime_value)
        tier = row.value_tier if row.value_tier is not None else UNKNOWN_TIER
        group["tiers"][tier] = group["tiers"].get(tier, 0) + customers
    return [
        PreferredChannelEconomics(
            channel=channel, channel_name=group["name"], customers=group["customers"],
            value_tiers=dict(sorted(group["tiers"].items())),
            churned_customers=group["churned"],
            churn_rate=_per(group["churned"], group["customers"]),
            average_lifetime_value_minor=_per(group["lifetime_value"], group["customers"]))
        for channel, group in sorted(groups.items(),
                                     key=lambda item: (item[0] is None, item[0] or ""))
    ]


def _acquisition(connection: Connection, *, since: datetime | None,
                 until: datetime | None) -> list[AcquisitionEconomics]:
    """Acquisition cost per new customer, on channels with acquisition events."""
    query = (
        select(CH.c.key, CH.c.name, func.count().label("acquisitions"),
               func.count(distinct(E.c.customer_id)).label("customers"),
               func.sum(_event_cost()).label("cost"))
        .select_from(_events_with_costs().join(CH, CH.c.id == E.c.channel_id))
        .where(E.c.kind == EventKind.ACQUISITION.value,
               *_in_period(E.c.occurred_at, since, until))
        .group_by(CH.c.key, CH.c.name)
        .order_by(CH.c.key)
    )
    rows = []
    for row in connection.execute(query):
        customers, cost = _int(row.customers), _int(row.cost)
        rows.append(AcquisitionEconomics(
            channel=row.key, channel_name=row.name, acquisitions=_int(row.acquisitions),
            customers=customers, cost_minor=cost,
            cost_per_customer_minor=_per(cost, customers)))
    return rows


# --------------------------------------------------------------------------- export


class ExportFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"
    JSON = "json"


MEDIA_TYPES: Mapping[ExportFormat, str] = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.JSON: "application/json",
}

#: Text a spreadsheet would run as a formula; such cells get a leading quote.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _safe_text(value: Any) -> Any:
    """Neutralise text that CSV readers and openpyxl would treat as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd
    # object dtype keeps counts as integers next to averages in the same column
    return pd.DataFrame([{name: _safe_text(row.get(name)) for name in columns} for row in rows],
                        columns=list(columns), dtype=object)


def _columns(cls: Any) -> list[str]:
    return [column.name for column in fields(cls)]


def overview_frames(overview: ChannelOverview) -> dict[str, pd.DataFrame]:
    """One wide table per section, plus the tidy ``records``: the sheets of the workbook."""
    preferred = [{**{key: value for key, value in asdict(row).items() if key != "value_tiers"},
                  **{f"value_tier_{tier}": count for tier, count in row.value_tiers.items()}}
                 for row in overview.preferred_channels]
    tiers = sorted({key for row in preferred for key in row if key.startswith("value_tier_")})

    return {
        "channel_stage": _frame([asdict(r) for r in overview.channel_stages],
                                _columns(ChannelStageEconomics)),
        "channel": _frame([asdict(r) for r in overview.channels], _columns(ChannelEconomics)),
        "preferred_channel": _frame(preferred, [
            c for c in _columns(PreferredChannelEconomics) if c != "value_tiers"] + tiers),
        "acquisition": _frame([asdict(r) for r in overview.acquisition],
                              _columns(AcquisitionEconomics)),
        "records": _frame(overview.records(), ("section", "channel", "stage", "metric",
                                               "value")),
    }


def export_overview(overview: ChannelOverview, export_format: ExportFormat | str) -> bytes:
    """The overview as bytes: CSV (tidy records), XLSX (a sheet per section) or JSON."""
    import pandas as pd
    export_format = ExportFormat(export_format)
    if export_format is ExportFormat.JSON:
        return json.dumps(overview.as_dict(), indent=2).encode()
    frames = overview_frames(overview)
    if export_format is ExportFormat.CSV:
        return frames["records"].to_csv(index=False, lineterminator="\n").encode()
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as workbook:
        for sheet, frame in frames.items():
            frame.to_excel(workbook, sheet_name=sheet, index=False)
    return buffer.getvalue()


def write_overview(overview: ChannelOverview, path: Path,
                   export_format: ExportFormat | str) -> None:
    path.write_bytes(export_overview(overview, export_format))
