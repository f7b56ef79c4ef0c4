"""What a campaign's results say first: the dashboard headline and the report's decision.

:func:`campaign_headline` reads the campaign's results (every treatment arm against
control) and keeps the adoption comparison of each arm with its confidence interval, a
verdict in plain words and the sample-ratio warning, for the dashboard.

:func:`decision_summary` is what the report page opens with: per treatment arm the verdict
on the primary metric, the lift with its interval, cost per incremental migration and net
benefit, and the health checks (sample ratio, interim, guardrails) a reader must see first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.engine import Connection

from analytics.economics import EconomicsResult
from analytics.exports import (
    MISSING,
    MONEY,
    NUMBER,
    RATE,
    currency_exponent,
    format_money,
    format_number,
    format_p,
    format_percent,
    format_pp,
    interval_text,
    metric_kinds,
)
from analytics.guardrails import GUARDRAILS, assess_guardrails, describe_harm
from analytics.metrics import GOAL_METRICS, metric_label
from analytics.report import Report, srm_sentence
from analytics.reports import PRIMARY_METRICS, MetricResult, campaign_results
from analytics.stats import Comparison
from campaigns.models import Campaign

HEADLINE_METRIC = "adoption"


class Verdict(StrEnum):
    CREDIBLE_LIFT = "credible lift"
    NO_EFFECT = "no detectable effect"
    HARM = "harm"
    TOO_EARLY = "not enough data yet"


def verdict(comparison: Comparison) -> Verdict:
    """What the interval says: above zero is a lift, below zero harm, across zero nothing.

    The verdict reads the same interval the page shows, so the words never disagree with
    the picture; an interval that cannot be computed yet (no variance, empty arm) says so.
    """
    low, high = comparison.diff_ci_low, comparison.diff_ci_high
    if low is None or high is None:
        return Verdict.TOO_EARLY
    if low > 0:
        return Verdict.CREDIBLE_LIFT
    if high < 0:
        return Verdict.HARM
    return Verdict.NO_EFFECT


@dataclass(frozen=True)
class ArmHeadline:
    arm: str
    control_n: int
    treatment_n: int
    control_rate: float | None
    treatment_rate: float | None
    #: treatment - control, as a fraction (0.05 = +5 percentage points), with its interval
    lift: float | None
    ci_low: float | None
    ci_high: float | None
    p_value_holm: float | None
    verdict: Verdict


@dataclass(frozen=True)
class CampaignHeadline:
    campaign_id: int
    confidence: float
    arms: tuple[ArmHeadline, ...]
    srm_flagged: bool
    srm_p_value: float | None
    #: guardrails showing significant harm now (the monitor pauses a running campaign)
    harmed: tuple[str, ...] = ()

    @property
    def exposures(self) -> int:
        if not self.arms:
            return 0
        return self.arms[0].control_n + sum(arm.treatment_n for arm in self.arms)


def campaign_headline(connection: Connection, campaign_id: int, *, alpha: float = 0.05
                      ) -> CampaignHeadline:
    """Adoption lift of every treatment arm over control, with the SRM check."""
    report = campaign_results(connection, campaign_id, alpha=alpha)
    arms = tuple(
        ArmHeadline(
            arm=result.arm, control_n=result.comparison.control_n,
            treatment_n=result.comparison.treatment_n,
            control_rate=result.comparison.control_mean,
            treatment_rate=result.comparison.treatment_mean,
            lift=result.comparison.diff, ci_low=result.comparison.diff_ci_low,
            ci_high=result.comparison.diff_ci_high, p_value_holm=result.p_value_holm,
            verdict=verdict(result.comparison))
        for result in report.results if result.metric == HEADLINE_METRIC)
    table = Campaign.__table__  # type: ignore[attr-defined]
    watched, currency = connection.execute(
        select(table.c.guardrails, table.c.currency).where(table.c.id == campaign_id)).one()
    harmed = tuple(
        describe_harm(result, currency=currency) for result in assess_guardrails(
            report.arms, metrics=[m for m in GUARDRAILS if m in (watched or [])], alpha=alpha)
        if result.harm_detected)
    return CampaignHeadline(campaign_id=campaign_id, confidence=1 - alpha, arms=arms,
                            srm_flagged=report.srm.flagged, srm_p_value=report.srm.p_value,
                            harmed=harmed)


# =========================================================================================
# The report's decision summary: what the report page shows first.
#
# A presenter, not template logic: :func:`decision_summary` turns a
# :class:`~analytics.report.Report` into the columns, rows and health items the template
# prints as they are. A new number in the summary is one entry of ``DECISION_COLUMNS`` (a
# function of an arm's facts returning a :class:`Cell`, or None where it does not apply); a
# new health check is one entry of ``HEALTH_CHECKS``. A column whose cells are all None
# (economics of an imported experiment, say) is left out.
# =========================================================================================

@dataclass(frozen=True)
class Units:
    """How one metric's levels and differences are printed and charted."""

    kind: str  # "rate", "money" or "number"
    level: Callable[[float | None], str]
    diff: Callable[[float | None], str]
    #: factor from the raw value to the chart's axis (rates in points, money in major units)
    scale: float
    axis: str


def metric_units(report: Report) -> Callable[[str], Units]:
    """The printer of each metric of ``report``; money in the campaign currency's digits."""
    kind_of = metric_kinds(report)
    currency = report.campaign.currency
    rate = Units("rate", format_percent, format_pp, 100.0, "percentage points")
    money = Units("money", lambda v: format_money(v, currency),
                  lambda v: format_money(v, currency, signed=True),
                  10.0 ** -currency_exponent(currency), currency)
    number = Units("number", format_number, lambda v: format_number(v, signed=True), 1.0, "")
    by_kind = {RATE: rate, MONEY: money, NUMBER: number}
    return lambda metric: by_kind[kind_of(metric)]


@dataclass(frozen=True)
class ArmVerdict:
    """What the primary metric says about one treatment arm, in plain words."""

    arm: str
    kind: str  # credible_lift, harm, not_significant, no_effect, too_early
    headline: str
    sentence: str


def arm_verdict(result: MetricResult, *, alpha: float, units: Units) -> ArmVerdict:
    """Read the interval and the Holm-corrected p-value together.

    An interval that excludes zero while the corrected p-value does not pass alpha is
    called what it is (not significant once every arm and metric is accounted for), so
    the words never claim more than the multiple-testing correction allows.
    """
    c = result.comparison
    level = f"{1 - alpha:.0%}"
    measured = (f"{metric_label(result.metric).lower()}: {units.level(c.treatment_mean)} "
                f"against {units.level(c.control_mean)} in control, a difference of "
                f"{units.diff(c.diff)} ({level} interval "
                f"{interval_text(c.diff_ci_low, c.diff_ci_high, units.diff)})")
    holm = result.p_value_holm
    holm_text = f", Holm-corrected p {format_p(holm)}" if holm is not None else ""
    low, high = c.diff_ci_low, c.diff_ci_high
    if low is None or high is None:
        reason = c.reason or "an arm has too few customers or no variance yet"
        return ArmVerdict(result.arm, "too_early", "not enough data yet",
                          f"Too early to tell: {reason}.")
    passes = holm is None or holm < alpha
    if low > 0 and passes:
        return ArmVerdict(result.arm, "credible_lift", "credible lift",
                          f"It moved customers: {measured}{holm_text}.")
    if high < 0 and passes:
        return ArmVerdict(result.arm, "harm", "fewer than control",
                          f"It did worse than no incentive: {measured}{holm_text}.")
    if low > 0 or high < 0:
        return ArmVerdict(result.arm, "not_significant", "not significant after correction",
                          f"Suggestive only: {measured}, but with every arm and primary "
                          f"metric accounted for the evidence is too weak{holm_text}.")
    reach = max(abs(low), abs(high))
    return ArmVerdict(result.arm, "no_effect", "no detectable effect",
                      f"The data cannot tell it from control: {measured}{holm_text}. "
                      f"A true effect of up to {units.diff(reach).lstrip('+')} either way "
                      "is still possible.")


def primary_metric(report: Report, goal_metric: str | None) -> str | None:
    """The metric the verdicts read: the goal's, else the first Holm-corrected one."""
    metrics = [result.metric for result in report.results]
    wanted = GOAL_METRICS.get(goal_metric or "")
    if wanted in metrics:
        return wanted
    corrected = [r.metric for r in report.results if r.p_value_holm is not None]
    fallback = [m for m in PRIMARY_METRICS if m in metrics]
    candidates = corrected or fallback or metrics
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class Cell:
    """One figure of the decision table: the number, a second line, a tone for colour."""

    text: str
    detail: str = ""
    #: "good", "bad", "warn", "muted" or "" (a CSS class suffix), or a verdict kind
    tone: str = ""


@dataclass(frozen=True)
class ArmFacts:
    """What the decision columns read about one treatment arm."""

    report: Report
    result: MetricResult  # the primary metric's comparison
    verdict: ArmVerdict
    units: Units
    economics: Mapping[str, EconomicsResult]

    @property
    def arm(self) -> str:
        return self.result.arm

    @property
    def currency(self) -> str:
        return self.report.campaign.currency


@dataclass(frozen=True)
class DecisionColumn:
    key: str
    title: str
    cell: Callable[[ArmFacts], Cell | None]


@dataclass(frozen=True)
class HealthItem:
    """One check a reader must see before trusting the table."""

    key: str
    label: str
    state: str  # "ok", "warn", "bad" or "info"
    text: str


@dataclass(frozen=True)
class DecisionRow:
    arm: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class DecisionSummary:
    metric: str | None
    metric_label: str | None
    columns: tuple[DecisionColumn, ...]
    rows: tuple[DecisionRow, ...]
    health: tuple[HealthItem, ...]
    verdicts: tuple[ArmVerdict, ...]


def _verdict_cell(facts: ArmFacts) -> Cell:
    return Cell(facts.verdict.headline, tone=facts.verdict.kind)


def _lift_cell(facts: ArmFacts) -> Cell:
    c = facts.result.comparison
    return Cell(facts.units.diff(c.diff),
                interval_text(c.diff_ci_low, c.diff_ci_high, facts.units.diff))


def _relative_lift_cell(facts: ArmFacts) -> Cell:
    c = facts.result.comparison

    def signed(value: float | None) -> str:
        return format_percent(value, signed=True)

    return Cell(signed(c.rel_lift), interval_text(c.rel_lift_ci_low, c.rel_lift_ci_high,
                                                  signed))


def _economics_cell(metric: str, *, good_when_positive: bool) -> Callable[[ArmFacts],
                                                                           Cell | None]:
    def cell(facts: ArmFacts) -> Cell | None:
        result = facts.economics.get(metric)
        if result is None:
            return None

        def money(value: float | None) -> str:
            return format_money(value, facts.currency)

        if result.estimate is None:  # the reason is long: the Economics section has it
            return Cell(MISSING, "undefined (see Economics)" if result.reason else "",
                        tone="muted")
        tone = ""
        if result.ci_low is not None and result.ci_high is not None and good_when_positive:
            tone = "good" if result.ci_low > 0 else "bad" if result.ci_high < 0 else ""
        return Cell(money(result.estimate), interval_text(result.ci_low, result.ci_high,
                                                          money), tone=tone)

    return cell


def _power_cell(facts: ArmFacts) -> Cell | None:
    """The smallest difference the arm could detect with the customers it has (80% power),
    flagged when that is more than the goal's target uplift."""
    power = next((p for p in facts.report.power
                  if p.arm == facts.arm and p.metric == facts.result.metric), None)
    if power is None or power.effect.mde is None:
        return None
    text = facts.units.diff(power.effect.mde).lstrip("+")
    if power.underpowered:
        return Cell(text, "underpowered for the goal's target "
                    + facts.units.diff(power.target).lstrip("+"), tone="warn")
    return Cell(text, "enough for the goal's target" if power.target is not None else "")


def _chance_cell(facts: ArmFacts) -> Cell | None:
    """The Bayesian chance that the arm beats the baseline (flat prior)."""
    view = facts.result.bayesian
    if view is None or view.chance_to_beat_baseline is None:
        return None
    chance = view.chance_to_beat_baseline
    return Cell(format_percent(chance), f"expected loss {facts.units.diff(view.expected_loss)}"
                if view.expected_loss is not None else "",
                tone="good" if chance >= 0.95 else "bad" if chance <= 0.05 else "")


DECISION_COLUMNS: tuple[DecisionColumn, ...] = (
    DecisionColumn("verdict", "Verdict", _verdict_cell),
    DecisionColumn("lift", "Lift (interval)", _lift_cell),
    DecisionColumn("relative_lift", "Relative lift", _relative_lift_cell),
    DecisionColumn("cost_per_migration", "Cost per incremental migration",
                   _economics_cell("incentive_cost_per_incremental_migration",
                                   good_when_positive=False)),
    DecisionColumn("net_benefit", "Net benefit", _economics_cell("net_benefit",
                                                                 good_when_positive=True)),
    DecisionColumn("chance", "Chance to beat", _chance_cell),
    DecisionColumn("power", "Detectable (80% power)", _power_cell),
)


def srm_health(report: Report) -> HealthItem | None:
    srm = report.srm
    if srm.p_value is None:
        return HealthItem("srm", "Sample ratio", "bad" if srm.flagged else "info",
                          srm_sentence(srm))
    return HealthItem("srm", "Sample ratio", "bad" if srm.flagged else "ok",
                      srm_sentence(srm))


def interim_health(report: Report) -> HealthItem | None:
    """Whether the figures can still change, and how many customers were observed whole."""
    interim = report.interim
    if interim is None:
        return None
    running = (f"The campaign is {report.campaign.status}: more customers may still be "
               "exposed. " if interim.still_running else "")
    return HealthItem("interim", "Interim", "warn",
                      f"{running}{interim.complete:,} of {interim.exposed:,} exposed customers "
                      f"have had their whole {interim.window_days}-day window; every figure "
                      "can still change.")


def small_sample_health(report: Report) -> HealthItem | None:
    """Comparisons a normal approximation serves poorly, and what was used instead."""
    small = [r for r in report.results if r.comparison.small_sample]
    if not small:
        return None
    metrics = ", ".join(dict.fromkeys(metric_label(r.metric).lower() for r in small))
    return HealthItem("small_sample", "Small samples", "warn",
                      f"{len(small)} comparison{'s' * (len(small) != 1)} ({metrics}) "
                      "had too few customers for the normal approximation: score or "
                      "Fieller intervals are used and marked in their rows.")


def power_health(report: Report) -> HealthItem | None:
    """Whether an arm cannot detect the goal's target uplift with the customers it has."""
    short = [p for p in report.power if p.underpowered]
    if not short:
        return None
    arms = ", ".join(dict.fromkeys(p.arm for p in short))
    return HealthItem("power", "Underpowered", "warn",
                      f"{arms} cannot detect the goal's target uplift yet: a null result "
                      "here is not evidence of no effect.")


def guardrail_health(report: Report) -> HealthItem | None:
    if not report.guardrails:
        return None
    harmed = [f"{g.metric} in {g.arm}" for g in report.guardrails if g.harm_detected]
    if harmed:
        return HealthItem("guardrails", "Guardrails", "bad", "Harm detected: "
                          + ", ".join(harmed) + " (always-valid sequential test).")
    return HealthItem("guardrails", "Guardrails", "ok",
                      f"No harm detected on {len(report.guardrails)} checks.")


HEALTH_CHECKS: tuple[Callable[[Report], HealthItem | None], ...] = (
    srm_health, interim_health, power_health, small_sample_health, guardrail_health,
)


def interim_verdict(verdict: ArmVerdict) -> ArmVerdict:
    """``verdict`` labelled interim: the results can still change."""
    return ArmVerdict(verdict.arm, verdict.kind, f"interim: {verdict.headline}",
                      f"Interim, so far: {verdict.sentence}")


def _labelled(report: Report, verdict: ArmVerdict) -> ArmVerdict:
    return interim_verdict(verdict) if report.interim is not None else verdict


def decision_summary(report: Report, *, goal_metric: str | None) -> DecisionSummary:
    """Per treatment arm: the verdict on the primary metric and the figures beside it."""
    units = metric_units(report)
    metric = primary_metric(report, goal_metric)
    results = [r for r in report.results if r.metric == metric and r.segment == "all"]
    economics: dict[str, dict[str, EconomicsResult]] = {}
    for result in report.economics:
        economics.setdefault(result.arm, {})[result.metric] = result
    facts = [ArmFacts(report=report, result=r, units=units(r.metric),
                      verdict=_labelled(report, arm_verdict(r, alpha=report.alpha,
                                                             units=units(r.metric))),
                      economics=economics.get(r.arm, {})) for r in results]
    cells = {column.key: [column.cell(f) for f in facts] for column in DECISION_COLUMNS}
    columns = tuple(column for column in DECISION_COLUMNS
                    if any(cell is not None for cell in cells[column.key]))
    rows = tuple(DecisionRow(f.arm, tuple(cells[column.key][i] or Cell(MISSING)
                                          for column in columns))
                 for i, f in enumerate(facts))
    health = tuple(item for check in HEALTH_CHECKS if (item := check(report)) is not None)
    return DecisionSummary(metric=metric, metric_label=metric_label(metric) if metric else None,
                           columns=columns, rows=rows, health=health,
                           verdicts=tuple(f.verdict for f in facts))
