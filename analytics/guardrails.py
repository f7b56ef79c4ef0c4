"""Guardrails: always-valid (sequential) monitoring of harm, and the budget.

A running campaign is looked at again and again (every few minutes by the server's
scheduler, or by cron), so a fixed-horizon test would cry wolf far more often than its
alpha: with 30 daily looks a 5% two-sided test flags about a quarter of harmless
campaigns at least once. Each guardrail therefore uses the always-valid confidence
sequence of :func:`analytics.stats.sequential_test`, whose false-alarm guarantee holds
over every look, however often and whenever the caller looks.

What is watched (per treatment arm against control, per metric in
``Campaign.guardrails``), from the per-customer values of :mod:`analytics.queries`:

- ``complaints``: complaints per customer; an increase harms;
- ``churn``: the share of customers who churned; an increase harms;
- ``revenue``: revenue per customer (minor units); a decrease harms.

This module only reads. Pausing a campaign is a write and lives in ``web/guardrails.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from analytics.metrics import METRICS
from analytics.queries import arm_statistics
from analytics.stats import MeanStats, sequential_test
from campaigns.errors import CampaignNotFound
from campaigns.models import Arm, Campaign, CampaignOrigin, GuardrailMetric

__all__ = [
    "DEFAULT_TUNING_N",
    "GUARDRAILS",
    "MIN_ARM_SIZE",
    "Guardrail",
    "GuardrailResult",
    "assess_guardrails",
    "comparison_alpha",
    "describe_harm",
    "evaluate_guardrails",
    "format_money",
]

DEFAULT_TUNING_N = 10_000
"""Customers (control + one treatment arm) at which the confidence sequence is tightest.

A constant, fixed before any data is seen: see :func:`evaluate_guardrails` for why it
must not follow the exposure count.
"""

MIN_ARM_SIZE = 100
"""Customers each arm needs before harm can be declared.

The confidence sequence rests on the central limit theorem; with a handful of
customers and a rare event (complaints, churn) a few chance events would swing the
variance estimate and the normal approximation both. Below this size the interval
is still reported, but nothing is flagged.
"""


@dataclass(frozen=True)
class Guardrail:
    """How one guardrail metric is read and which direction of change harms."""

    metric: GuardrailMetric
    harm_direction: Literal[1, -1]  # +1: an increase harms; -1: a decrease harms
    label: str  # what the per-customer mean is called in a sentence
    unit: Literal["count", "rate", "money"]


def _guardrail_of(metric: GuardrailMetric) -> Guardrail:
    """The guardrail on a live metric: harm is a move the bad way of its direction."""
    known = METRICS[metric.value]
    if known.unit not in ("count", "rate", "money"):
        raise ValueError(f"a guardrail watches a per-customer mean, not {known.unit}")
    return Guardrail(metric, 1 if known.lower_is_better else -1, known.noun,
                     known.unit)


GUARDRAILS: Mapping[str, Guardrail] = {
    metric.value: _guardrail_of(metric) for metric in GuardrailMetric}


@dataclass(frozen=True)
class GuardrailResult:
    arm: str
    metric: str  # a campaigns.models.GuardrailMetric value
    harm_direction: int  # +1: an increase harms (complaints, churn); -1: a drop (revenue)
    control_mean: float | None
    treatment_mean: float | None
    diff: float | None
    ci_low: float | None  # always-valid confidence sequence at this look
    ci_high: float | None
    p_value_always_valid: float | None
    harm_detected: bool
    reason: str | None = None  # why the comparison is undefined or cannot flag harm yet
    control_n: int = 0
    treatment_n: int = 0
    #: confidence level of [ci_low, ci_high]: 1 - comparison_alpha(alpha, comparisons)
    level: float | None = None
    tuning_n: float | None = None


def comparison_alpha(alpha: float, comparisons: int) -> float:
    """The two-sided level each of ``comparisons`` sequences runs at, so a campaign's
    chance of ever being paused without real harm stays below ``alpha``.

    Harm is one-sided (the interval lies wholly on the harmful side of 0), so a
    two-sided sequence at level a flags a harmless comparison with probability at most
    a / 2. Bonferroni over the family of treatment arms x guardrail metrics, which
    the campaign's configuration fixes before any data arrives, gives
    a = 2 alpha / comparisons.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be strictly between 0 and 0.5 (got {alpha})")
    if comparisons < 1:
        raise ValueError(f"comparisons must be at least 1 (got {comparisons})")
    return 2.0 * alpha / comparisons


def _mean_stats(row: Mapping[str, Any] | None, metric: str) -> MeanStats:
    if row is None or not row["n"]:
        return MeanStats(n=0, sum=0.0, sum_sq=0.0)
    return MeanStats(n=int(row["n"]), sum=float(row[f"{metric}_sum"]),
                     sum_sq=float(row[f"{metric}_sum_sq"]))


def _guardrail(metric: str) -> Guardrail:
    try:
        return GUARDRAILS[metric]
    except KeyError:
        raise ValueError(f"unknown guardrail metric '{metric}'; use one of "
                         f"{', '.join(GUARDRAILS)}") from None


def assess_guardrails(
    rows: Sequence[Mapping[str, Any]],
    *,
    metrics: Sequence[str],
    alpha: float = 0.05,
    tuning_n: float = DEFAULT_TUNING_N,
) -> list[GuardrailResult]:
    """Every treatment arm x every guardrail metric, from per-arm sufficient statistics.

    ``rows`` have the shape of :func:`analytics.queries.arm_statistics` (``arm``,
    ``is_control``, ``n``, ``<metric>_sum``, ``<metric>_sum_sq``), one per arm; an arm
    nobody has been exposed to yet may be given with ``n`` = 0. ``alpha`` bounds the
    chance that a harmless campaign is *ever* flagged on any of its comparisons (see
    :func:`comparison_alpha`). Without a control row every comparison is undefined.
    """
    guardrails = [_guardrail(metric) for metric in metrics]
    control = next((row for row in rows if row["is_control"]), None)
    treatments = [row for row in rows if not row["is_control"]]
    if not guardrails or not treatments:
        return []
    level_alpha = comparison_alpha(alpha, len(guardrails) * len(treatments))
    results: list[GuardrailResult] = []
    for row in treatments:
        for guardrail in guardrails:
            results.append(_assess_one(control, row, guardrail, alpha=level_alpha,
                                       tuning_n=tuning_n))
    return results


def _assess_one(control: Mapping[str, Any] | None, treatment: Mapping[str, Any],
                guardrail: Guardrail, *, alpha: float, tuning_n: float) -> GuardrailResult:
    metric = guardrail.metric.value
    control_stats, treatment_stats = _mean_stats(control, metric), _mean_stats(treatment, metric)
    sequential = sequential_test(control_stats, treatment_stats, alpha=alpha, tuning_n=tuning_n,
                                 harm_direction=guardrail.harm_direction)
    reason = sequential.reason
    harm = sequential.harm_detected
    if control is None:
        reason = "no control arm: harm needs a randomized holdout to compare against"
    elif reason is None and min(control_stats.n, treatment_stats.n) < MIN_ARM_SIZE:
        reason = (f"too early: each arm needs {MIN_ARM_SIZE} customers before harm is judged "
                  f"(control has {control_stats.n}, '{treatment['arm']}' {treatment_stats.n})")
        harm = False
    return GuardrailResult(
        arm=str(treatment["arm"]),
        metric=metric,
        harm_direction=guardrail.harm_direction,
        control_mean=control_stats.mean,
        treatment_mean=treatment_stats.mean,
        diff=sequential.diff,
        ci_low=sequential.ci_low,
        ci_high=sequential.ci_high,
        p_value_always_valid=sequential.p_value_always_valid,
        harm_detected=harm,
        reason=reason,
        control_n=control_stats.n,
        treatment_n=treatment_stats.n,
        level=1.0 - alpha,
        tuning_n=tuning_n,
    )


def evaluate_guardrails(
    connection: Connection, campaign_id: int, *, alpha: float = 0.05,
    tuning_n: float | None = None,
) -> list[GuardrailResult]:
    """The campaign's guardrails at this moment: every treatment arm x ``Campaign.guardrails``.

    ``alpha`` bounds the chance that a campaign with no real harm is ever flagged, over
    all its looks, arms and metrics together (each comparison runs at
    :func:`comparison_alpha`).

    ``tuning_n`` is the planned exposure of one comparison (control + one treatment arm):
    the confidence sequence is tightest there. Default: :data:`DEFAULT_TUNING_N`
    (10,000), a constant. The guarantee holds for *any* tuning_n fixed before looking,
    because the sequence is one mixture martingale whose crossing probability Ville's
    inequality bounds over all times at once. A tuning_n that follows the data, such as
    ``max(current n, 10,000)``, would not do: every look past 10,000 customers would use
    a different mixture, each tightest at exactly that look, which is repeated
    fixed-horizon-like testing again, and the false-alarm rate would grow with the
    number of looks. Too small or too large a fixed value only costs power (a wider
    interval far from tuning_n), never validity. A caller who knows the planned exposure
    (from a power calculation made when the campaign was designed) should pass it.

    Raises :class:`campaigns.errors.CampaignNotFound` for an unknown campaign and
    ``ValueError`` for an imported experiment, which has no live exposures to watch.
    """
    campaign_table = Campaign.__table__  # type: ignore[attr-defined]
    campaign = connection.execute(
        select(campaign_table.c.origin, campaign_table.c.guardrails)
        .where(campaign_table.c.id == campaign_id)).one_or_none()
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    if campaign.origin == CampaignOrigin.IMPORTED.value:
        raise ValueError(f"campaign {campaign_id} is an imported experiment: guardrails watch "
                         "live campaigns only")
    metrics = [metric for metric in GUARDRAILS if metric in (campaign.guardrails or [])]
    if not metrics:
        return []
    statistics = {row["arm_id"]: row for row in arm_statistics(connection, campaign_id)}
    return assess_guardrails(_every_arm(connection, campaign_id, statistics), metrics=metrics,
                             alpha=alpha,
                             tuning_n=DEFAULT_TUNING_N if tuning_n is None else tuning_n)


def _every_arm(connection: Connection, campaign_id: int,
               statistics: Mapping[int, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each arm's statistics row; an arm nobody was exposed to yet gets n = 0.

    The family of comparisons is the configured arms, not the arms that happen to have
    data, so the per-comparison level does not move as exposures arrive.
    """
    arms = Arm.__table__  # type: ignore[attr-defined]
    rows: list[Mapping[str, Any]] = []
    for arm in connection.execute(
        select(arms.c.id, arms.c.name, arms.c.is_control)
        .where(arms.c.campaign_id == campaign_id).order_by(arms.c.position, arms.c.id)
    ):
        rows.append(statistics.get(arm.id)
                    or {"arm_id": arm.id, "arm": arm.name, "is_control": arm.is_control, "n": 0})
    return rows


# ------------------------------------------------------------------------- sentences

#: ISO 4217 currencies whose minor unit is not a hundredth.
_MINOR_DIGITS = {"BHD": 3, "CLP": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0,
                 "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "TND": 3, "UGX": 0, "VND": 0,
                 "XAF": 0, "XOF": 0}


def format_money(minor: float, currency: str, *, signed: bool = False) -> str:
    """An amount in minor units as a person reads it: ``EUR 1,234.50``, ``-EUR 3.20``."""
    digits = _MINOR_DIGITS.get(currency.upper(), 2)
    sign = "-" if minor < 0 else ("+" if signed else "")
    return f"{sign}{currency.upper()} {abs(minor) / 10**digits:,.{digits}f}"


def _value(result: GuardrailResult, value: float, *, currency: str,
           signed: bool = False) -> str:
    unit = GUARDRAILS[result.metric].unit
    if unit == "money":
        return format_money(value, currency, signed=signed)
    if unit == "rate":
        return f"{value * 100:+.1f} points" if signed else f"{value:.1%}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _percent(level: float) -> str:
    text = f"{level * 100:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def describe_harm(result: GuardrailResult, *, currency: str = "EUR") -> str:
    """One sentence a marketer can act on: which metric, which arm, how much, how sure.

    Example: ``complaints per customer in arm 'ten percent': 0.200 against 0.050 in
    control (+0.150; always-valid 96.7% interval +0.087 to +0.213; 400 and 400
    customers)``.
    """
    guardrail = GUARDRAILS[result.metric]
    if (result.treatment_mean is None or result.control_mean is None or result.diff is None
            or result.ci_low is None or result.ci_high is None or result.level is None):
        return f"{guardrail.label} in arm '{result.arm}': {result.reason or 'no estimate yet'}"

    def value(v: float, signed: bool = False) -> str:
        return _value(result, v, currency=currency, signed=signed)

    return (f"{guardrail.label} in arm '{result.arm}': {value(result.treatment_mean)} against "
            f"{value(result.control_mean)} in control ({value(result.diff, True)}; always-valid "
            f"{_percent(result.level)} interval {value(result.ci_low, True)} to "
            f"{value(result.ci_high, True)}; {result.treatment_n:,} and {result.control_n:,} "
            "customers)")
