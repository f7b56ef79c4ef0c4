"""The live campaign's metrics, each defined once.

A :class:`Metric` says what the per-customer query produces for it, how the report compares
it (a proportion, a mean or a ratio of sums), which way is better, whether it is primary,
CUPED-adjusted or cappable, and what a reader calls it. The queries, the comparisons, the
exports, the UI and the guardrails derive their sets and words from :data:`METRICS`.

Imported experiments define their metrics at import (``ExperimentMetric`` rows): a key
not in :data:`METRICS` is theirs, and callers fall back to the imported metric's kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CUPED_SUFFIX",
    "GOAL_METRICS",
    "METRICS",
    "Metric",
    "base_key",
    "keys",
    "lookup",
    "metric_label",
]

Unit = Literal["rate", "money", "count", "share"]
Kind = Literal["proportion", "mean", "ratio"]
Direction = Literal["higher", "lower"]

#: What a CUPED-adjusted result's metric key ends with (``adoption_cuped``).
CUPED_SUFFIX = "_cuped"


@dataclass(frozen=True)
class Metric:
    """One live metric: what it measures, how it is aggregated, compared and printed."""

    key: str
    #: what the report page and the workbook call it
    label: str
    #: what it is called inside a sentence ("churn rate in arm 'ten percent': ...")
    noun: str
    #: rate: a 0/1 per customer; share: a ratio of two counts; money: minor units of the
    #: campaign's currency; count: events per customer
    unit: Unit
    #: proportion: two-proportion test; mean: Welch test; ratio: delta method on two sums
    kind: Kind
    #: which way of the difference is good (the Bayesian view's "beat" and "loss")
    better: Direction = "higher"
    #: judged on by the goal; Holm and BH correct across arms x the primary metrics
    primary: bool = False
    #: the queries produce ``<column>_pre`` for it, so CUPED adjusts it
    pre_period: bool = False
    #: a report may cap it per customer (money metrics)
    cappable: bool = False
    #: the per-customer column of :func:`analytics.queries.customer_metrics` (mean and
    #: proportion metrics; the report's row keys are ``<column>_sum`` and ``_sum_sq``)
    column: str | None = None
    #: a ratio's per-customer numerator and denominator columns (Σ numerator / Σ denominator)
    numerator: str | None = None
    denominator: str | None = None
    #: the campaign goal's metric (``MigrationGoal.metric``) this one answers, if any
    goal: str | None = None

    @property
    def lower_is_better(self) -> bool:
        return self.better == "lower"

    @property
    def is_money(self) -> bool:
        return self.unit == "money"

    @property
    def is_rate(self) -> bool:
        """Printed as a percentage and its differences in percentage points."""
        return self.unit in ("rate", "share")


def _mean(key: str, label: str, noun: str, unit: Unit, **facts: object) -> Metric:
    kind: Kind = "proportion" if unit == "rate" else "mean"
    return Metric(key=key, label=label, noun=noun, unit=unit, kind=kind, column=key,
                  **facts)  # type: ignore[arg-type]


#: Every live metric, in the order a report lists them.
METRICS: Mapping[str, Metric] = {m.key: m for m in (
    _mean("adoption", "Adopted the target channel", "adoption rate", "rate",
          primary=True, pre_period=True, goal="adoption"),
    Metric(key="target_share", label="Share of the stage's interactions on the target channel",
           noun="target-channel share of the stage's interactions", unit="share",
           kind="ratio", primary=True, numerator="target_n", denominator="stage_n",
           goal="share"),
    _mean("source_interactions", "Interactions on the source channels",
          "source-channel interactions per customer", "count", better="lower",
          pre_period=True),
    _mean("cost_to_serve", "Cost to serve per customer", "cost to serve per customer",
          "money", better="lower", pre_period=True, cappable=True),
    _mean("conversion", "Converted", "conversion rate", "rate"),
    _mean("revenue", "Revenue per customer", "revenue per customer", "money", cappable=True),
    _mean("incentive_cost", "Incentive cost per customer", "incentive cost per customer",
          "money", better="lower", cappable=True),
    _mean("complaints", "Complaints per customer", "complaints per customer", "count",
          better="lower"),
    _mean("churn", "Churned", "churn rate", "rate", better="lower"),
)}

#: The goal's metric (``MigrationGoal.metric``) -> the live metric a verdict reads.
GOAL_METRICS: Mapping[str, str] = {m.goal: m.key for m in METRICS.values() if m.goal}


def base_key(key: str) -> str:
    """The metric a result's key is about (``adoption_cuped`` -> ``adoption``)."""
    return key.removesuffix(CUPED_SUFFIX)


def lookup(key: str) -> Metric | None:
    """The live metric a result's key is about (CUPED included); None for any other key,
    such as an imported experiment's metric."""
    return METRICS.get(base_key(key))


def metric_label(key: str) -> str:
    """What a reader sees for a result's metric: the registry's label (with "(CUPED)" for
    an adjusted result), else the key in words (an imported experiment's metric)."""
    metric = lookup(key)
    base = base_key(key)
    label = metric.label if metric is not None else base.replace("_", " ")
    return f"{label} (CUPED)" if key.endswith(CUPED_SUFFIX) else label


def keys(*, kind: Kind | None = None, primary: bool | None = None,
         pre_period: bool | None = None, cappable: bool | None = None,
         better: Direction | None = None, unit: Unit | None = None) -> tuple[str, ...]:
    """The keys of the metrics with every fact given, in display order."""
    wanted = {"kind": kind, "primary": primary, "pre_period": pre_period,
              "cappable": cappable, "better": better, "unit": unit}
    return tuple(m.key for m in METRICS.values()
                 if all(getattr(m, name) == value for name, value in wanted.items()
                        if value is not None))
