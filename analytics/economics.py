"""Channel economics: what each arm's migration is worth, and what each channel costs.

Owned by the economics work; the report renders :class:`EconomicsResult` rows and the
overview renders :class:`ChannelStageEconomics` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class ChannelStageEconomics:
    """One channel x stage of the channel economics overview."""

    channel: str
    channel_name: str
    stage: str
    interactions: int
    customers: int
    cost_per_interaction_minor: int | None
    cost_to_serve_minor: int
    cost_to_serve_per_customer_minor: float | None
    revenue_minor: int
    margin_minor: int
