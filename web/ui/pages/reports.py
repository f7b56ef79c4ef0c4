"""The live campaign report: results with intervals, charts, a verdict per arm, and exports.

:func:`campaign_report` is :func:`analytics.report.build_report` with the sections it
leaves empty filled in from the same per-arm statistics: the economics, the guardrails
(as the guardrail check judges them) and the breakdown by one customer segment. One
aggregate serves all three (sufficient statistics are sums, so the whole-campaign rows
are the segment rows added up); the page, the htmx refresh and the CSV / XLSX / HTML
downloads all render that one :class:`~analytics.report.Report`, so what an analyst
downloads is what the page showed.

The page itself is rendered on the server (it works without script); while a campaign
can still change, a fragment with every number is fetched again every 30 seconds, and a
Refresh link fetches it on demand. Charts are drawn by chart.js from JSON blocks
(``<script type="application/json">``, never executed) by ``static/js/app.mjs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.exports import (
    MONEY_METRICS,
    ExportFormat,
    arm_colours,
    economics_rows,
    export_bytes,
    export_filename,
    format_count,
    format_money,
    format_number,
    format_p,
    format_percent,
    format_pp,
    interval_text,
)
from analytics.guardrails import GUARDRAILS, describe_harm
from analytics.queries import (
    BINARY_METRICS,
    CAPPABLE_METRICS,
    MAX_PRE_PERIOD_DAYS,
    CapRule,
    parse_cap,
)
from analytics.report import Report, ReportOptionError, build_report, srm_sentence
from analytics.reports import PRIMARY_METRICS, MetricResult
from analytics.segments import segment_names
from analytics.stats import PROPORTIONS_METHOD
from campaigns.models import Campaign, CampaignOrigin, CampaignStatus, GoalMetric, MigrationGoal
from web.deps import SessionDep, read_view
from web.ui.auth import SignedIn
from web.ui.pages.campaigns import CAMPAIGN, CampaignId, campaign_router, load_campaign
from web.ui.rendering import render

router = campaign_router()

DEFAULT_ALPHA = 0.05
#: The breakdown a report shows unless the reader picks another (value tiers matter most
#: to a business deciding whom to push).
DEFAULT_SEGMENT = "value_tier"
#: The query value that asks for no breakdown at all.
NO_SEGMENT = "none"
#: Seconds between refreshes of a campaign that can still change.
REFRESH_SECONDS = 30
#: Relative lifts are drawn within these bounds (a lift of +900% would squash the rest).
LIFT_CLIP = (-1.0, 3.0)

#: What each metric measures, in the words of the page.
METRIC_LABELS = {
    "adoption": "Adopted the target channel",
    "target_share": "Share of the stage's interactions on the target channel",
    "source_interactions": "Interactions on the source channels",
    "cost_to_serve": "Cost to serve per customer",
    "conversion": "Converted",
    "revenue": "Revenue per customer",
    "incentive_cost": "Incentive cost per customer",
    "complaints": "Complaints per customer",
    "churn": "Churned",
}
#: The goal's metric decides which result a verdict reads.
GOAL_PRIMARY = {GoalMetric.ADOPTION.value: "adoption", GoalMetric.SHARE.value: "target_share"}


class Download(StrEnum):
    """The report files the page offers (JSON is the API's business)."""

    CSV = "csv"
    XLSX = "xlsx"
    HTML = "html"


# --- assembling the report ------------------------------------------------------------------


def _guardrail_metrics(connection: Connection, campaign_id: int) -> list[str]:
    table = Campaign.__table__  # type: ignore[attr-defined]
    chosen = connection.execute(select(table.c.guardrails)
                                .where(table.c.id == campaign_id)).scalar() or []
    return [metric for metric in GUARDRAILS if metric in chosen]


def campaign_report(connection: Connection, campaign_id: int, *,
                    alpha: float = DEFAULT_ALPHA, segment: str | None = None,
                    options: ReportOptions | None = None) -> Report:
    """The full report (economics, guardrails and the ``segment`` breakdown included).

    ``segment`` must be one of :func:`analytics.segments.segment_names` (None: none);
    ``options`` are the reader's outlier caps and CUPED pre-period (their valid part).
    """
    options = options or ReportOptions()
    return build_report(connection, campaign_id, alpha=alpha, segment=segment,
                        caps=options.caps, cuped_days=options.cuped_days)


@dataclass(frozen=True)
class ReportOptions:
    """The report form's analysis options: outlier caps and the CUPED pre-period.

    ``given`` is what the reader typed (kept in the form and the download links);
    ``errors`` names each field that could not be used, and that option is left out.
    """

    caps: dict[str, CapRule] = field(default_factory=dict)
    cuped_days: int | None = None
    given: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def without(self, option: str, message: str) -> ReportOptions:
        """These options less ``option`` (``cap_<metric>`` or ``cuped_days``), with why."""
        caps = {m: c for m, c in self.caps.items() if f"cap_{m}" != option}
        return ReportOptions(caps=caps,
                             cuped_days=None if option == "cuped_days" else self.cuped_days,
                             given=self.given, errors={**self.errors, option: message})


def report_options(given: dict[str, str | None]) -> ReportOptions:
    """Parse the form's options (``cap_<metric>``, ``cuped_days``); blank means unset."""
    caps: dict[str, CapRule] = {}
    errors: dict[str, str] = {}
    kept = {name: value.strip() for name, value in given.items() if value and value.strip()}
    for metric in CAPPABLE_METRICS:
        text = kept.get(f"cap_{metric}")
        if text is not None:
            try:
                caps[metric] = parse_cap(text)
            except ValueError as error:
                errors[f"cap_{metric}"] = str(error)
    cuped_days: int | None = None
    if "cuped_days" in kept:
        text = kept["cuped_days"]
        if text.isdigit() and 1 <= int(text) <= MAX_PRE_PERIOD_DAYS:
            cuped_days = int(text)
        else:
            errors["cuped_days"] = (f"the CUPED pre-period must be a whole number of days "
                                    f"from 1 to {MAX_PRE_PERIOD_DAYS} (got {text!r})")
    return ReportOptions(caps=caps, cuped_days=cuped_days, given=kept, errors=errors)


def _built_report(connection: Connection, campaign_id: int, segment: str | None,
                  options: ReportOptions) -> tuple[Report, ReportOptions]:
    """The report with every usable option; one the report refuses is dropped, with why."""
    while True:
        try:
            return campaign_report(connection, campaign_id, segment=segment,
                                   options=options), options
        except ReportOptionError as error:
            if error.option in options.errors:
                raise
            options = options.without(error.option, error.detail)


def segment_choice(connection: Connection, campaign_id: int, requested: str | None
                   ) -> tuple[str | None, tuple[str, ...]]:
    """The segment to break down by (None: none) and the ones this campaign offers."""
    names = segment_names(connection, campaign_id)
    if requested == NO_SEGMENT:
        return None, names
    if requested in names:
        return requested, names
    default = DEFAULT_SEGMENT if DEFAULT_SEGMENT in names else (names[0] if names else None)
    return default, names


# --- units and words --------------------------------------------------------------------------


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
    rates = {r.metric for r in [*report.results, *report.segments]
             if r.comparison.method == PROPORTIONS_METHOD} | set(BINARY_METRICS) | {
        "target_share"}
    live = report.campaign.origin == CampaignOrigin.LIVE.value
    currency = report.campaign.currency
    rate = Units("rate", format_percent, format_pp, 100.0, "percentage points")
    money = Units("money", lambda v: format_money(v, currency),
                  lambda v: format_money(v, currency, signed=True), 0.01, currency)
    number = Units("number", format_number, lambda v: format_number(v, signed=True), 1.0, "")

    def units(metric: str) -> Units:
        base = metric.removesuffix("_cuped")
        if base in rates:
            return rate
        if live and base in MONEY_METRICS:
            return money
        return number

    return units


def metric_label(metric: str) -> str:
    base = metric.removesuffix("_cuped")
    label = METRIC_LABELS.get(base, base.replace("_", " "))
    return f"{label} (CUPED)" if metric.endswith("_cuped") else label


@dataclass(frozen=True)
class ArmVerdict:
    """What the primary metric says about one treatment arm, in plain words."""

    arm: str
    kind: str  # credible_lift, harm, not_significant, no_effect, too_early
    headline: str
    sentence: str


def interim_verdict(verdict: ArmVerdict) -> ArmVerdict:
    """``verdict`` labelled interim: the results can still change."""
    return ArmVerdict(verdict.arm, verdict.kind, f"interim: {verdict.headline}",
                      f"Interim, so far: {verdict.sentence}")


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
    wanted = GOAL_PRIMARY.get(goal_metric or "")
    if wanted in metrics:
        return wanted
    corrected = [r.metric for r in report.results if r.p_value_holm is not None]
    fallback = [m for m in PRIMARY_METRICS if m in metrics]
    candidates = corrected or fallback or metrics
    return candidates[0] if candidates else None


# --- charts --------------------------------------------------------------------------------


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def lift_chart(report: Report) -> dict[str, Any] | None:
    """Relative lift with its interval for every treatment arm and metric (in %)."""
    colours = arm_colours(report)
    rows = [r for r in report.results if r.comparison.rel_lift is not None
            and r.comparison.rel_lift_ci_low is not None
            and r.comparison.rel_lift_ci_high is not None]
    if not rows:
        return None
    return {
        "kind": "interval", "unit": "%", "axisTitle": "Relative lift against control (%)",
        "labels": [f"{r.arm} · {metric_label(r.metric)}" for r in rows],
        "estimate": [round(_clip(r.comparison.rel_lift or 0.0, LIFT_CLIP) * 100, 2)
                     for r in rows],
        "low": [round(_clip(r.comparison.rel_lift_ci_low or 0.0, LIFT_CLIP) * 100, 2)
                for r in rows],
        "high": [round(_clip(r.comparison.rel_lift_ci_high or 0.0, LIFT_CLIP) * 100, 2)
                 for r in rows],
        "colours": [colours.get(r.arm, "#2563eb") for r in rows],
    }


def adoption_chart(report: Report) -> dict[str, Any] | None:
    """Cumulative share of exposed customers who adopted the target channel, by day and arm."""
    if not report.timeline:
        return None
    colours = arm_colours(report)
    days = sorted({point.day for point in report.timeline})
    by_arm: dict[str, dict[str, float | None]] = {}
    for point in report.timeline:
        by_arm.setdefault(point.arm, {})[point.day.isoformat()] = (
            round(point.rate * 100, 2) if point.rate is not None else None)
    return {
        "kind": "lines", "unit": "%", "yTitle": "Adopted so far (% of exposed)",
        "labels": [day.isoformat() for day in days],
        "series": [{"label": arm, "colour": colours.get(arm, "#2563eb"),
                    "data": [values.get(day.isoformat()) for day in days]}
                   for arm, values in by_arm.items()],
    }


def spend_chart(report: Report) -> dict[str, Any] | None:
    """Cumulative incentive cost against the budget, in the campaign's major units."""
    if not report.spend:
        return None
    currency = report.campaign.currency
    labels = [point.day.isoformat() for point in report.spend]
    series: list[dict[str, Any]] = [{
        "label": "Spent", "colour": "#1d4ed8",
        "data": [point.spent_minor / 100 for point in report.spend]}]
    if report.campaign.budget_minor:
        series.append({"label": "Budget", "colour": "#b91c1c", "dashed": True,
                       "data": [report.campaign.budget_minor / 100] * len(labels)})
    return {"kind": "lines", "unit": currency, "yTitle": f"{currency}", "labels": labels,
            "series": series, "beginAtZero": True}


def segment_chart(report: Report, metric: str | None) -> dict[str, Any] | None:
    """Uplift (treatment - control) of the primary metric in each segment value."""
    rows = [s for s in report.segments if s.metric == metric
            and s.comparison.diff is not None and s.comparison.diff_ci_low is not None
            and s.comparison.diff_ci_high is not None]
    if metric is None or not rows:
        return None
    units = metric_units(report)(metric)
    colours = arm_colours(report)
    return {
        "kind": "interval", "unit": " pp" if units.kind == "rate" else f" {units.axis}",
        "axisTitle": f"Uplift of {metric_label(metric).lower()} ({units.axis or 'difference'})",
        "labels": [f"{s.segment.split('=', 1)[-1]} · {s.arm}" for s in rows],
        "estimate": [round((s.comparison.diff or 0.0) * units.scale, 3) for s in rows],
        "low": [round((s.comparison.diff_ci_low or 0.0) * units.scale, 3) for s in rows],
        "high": [round((s.comparison.diff_ci_high or 0.0) * units.scale, 3) for s in rows],
        "colours": [colours.get(s.arm, "#2563eb") for s in rows],
    }


# --- the page's view of a report ------------------------------------------------------------


def result_rows(report: Report, results: Sequence[MetricResult]) -> list[dict[str, Any]]:
    units = metric_units(report)
    rows = []
    for result in results:
        c = result.comparison
        unit = units(result.metric)
        rows.append({
            "arm": result.arm, "metric": metric_label(result.metric), "key": result.metric,
            "segment": result.segment.split("=", 1)[-1],
            "n": f"{format_count(c.treatment_n)} vs {format_count(c.control_n)}",
            "control": unit.level(c.control_mean), "treatment": unit.level(c.treatment_mean),
            "diff": unit.diff(c.diff),
            "diff_ci": interval_text(c.diff_ci_low, c.diff_ci_high, unit.diff),
            "rel_lift": format_percent(c.rel_lift, signed=True),
            "rel_ci": interval_text(c.rel_lift_ci_low, c.rel_lift_ci_high,
                                    lambda v: format_percent(v, signed=True)),
            "p": format_p(c.p_value, floored=c.p_value_floored),
            "holm": format_p(result.p_value_holm) if result.p_value_holm is not None else "",
            "significant": (c.diff_ci_low is not None and c.diff_ci_high is not None
                            and (c.diff_ci_low > 0 or c.diff_ci_high < 0)),
            "note": c.reason or ""})
    return rows


def guardrail_rows(report: Report) -> list[dict[str, Any]]:
    units = metric_units(report)
    currency = report.campaign.currency
    return [{"arm": g.arm, "metric": metric_label(g.metric),
             "harm": "an increase" if g.harm_direction > 0 else "a decrease",
             "control": units(g.metric).level(g.control_mean),
             "treatment": units(g.metric).level(g.treatment_mean),
             "interval": interval_text(g.ci_low, g.ci_high, units(g.metric).diff),
             "p": format_p(g.p_value_always_valid), "harm_detected": g.harm_detected,
             "words": describe_harm(g, currency=currency) if g.harm_detected else "",
             "note": g.reason or ""} for g in report.guardrails]


def report_context(report: Report, *, goal_metric: str | None) -> dict[str, Any]:
    """Everything the report templates print, formatted once here."""
    units = metric_units(report)
    primary = primary_metric(report, goal_metric)
    verdicts = [arm_verdict(r, alpha=report.alpha, units=units(r.metric))
                for r in report.results if r.metric == primary and r.segment == "all"]
    if report.interim is not None:
        verdicts = [interim_verdict(verdict) for verdict in verdicts]
    total = sum(arm.n for arm in report.arms)
    segments = [s for s in report.segments if s.metric == primary]
    charts = {"lift": lift_chart(report), "adoption": adoption_chart(report),
              "spend": spend_chart(report), "segments": segment_chart(report, primary)}
    return {
        "report": report, "verdicts": verdicts, "primary": primary,
        "primary_label": metric_label(primary) if primary else None,
        "confidence": f"{1 - report.alpha:.0%}", "total_exposed": total,
        "arms": [{"name": arm.name, "control": arm.is_control, "n": arm.n,
                  "share": arm.n / total if total else None, "weight": arm.planned_weight,
                  "incentive": arm.incentive_name, "type": arm.incentive_type}
                 for arm in report.arms],
        "srm_text": srm_sentence(report.srm),
        "results": result_rows(report, report.results),
        "segments": result_rows(report, segments),
        "economics": economics_rows(report), "guardrails": guardrail_rows(report),
        "charts": {name: spec for name, spec in charts.items() if spec is not None},
        "budget_share": (report.campaign.spent_minor / report.campaign.budget_minor
                         if report.campaign.budget_minor else None),
        "power": power_rows(report),
    }


def power_rows(report: Report) -> list[dict[str, Any]]:
    """Each treatment arm's minimum detectable effect on each primary metric."""
    units = metric_units(report)
    return [{"arm": row.arm, "metric": metric_label(row.metric),
             "n": f"{format_count(row.effect.n_treatment)} vs "
                  f"{format_count(row.effect.n_control)}",
             "mde": (units(row.metric).diff(row.effect.mde).lstrip("+")
                     if row.effect.mde is not None else ""),
             "mde_relative": (format_percent(row.effect.mde_relative)
                              if row.effect.mde_relative is not None else ""),
             "target": (units(row.metric).diff(row.target).lstrip("+")
                        if row.target is not None else ""),
             "underpowered": row.underpowered, "note": row.effect.reason or ""}
            for row in report.power]


# --- routes -------------------------------------------------------------------------------


def _goal_metric(session: Session, campaign: Campaign) -> str | None:
    goal = session.get(MigrationGoal, campaign.goal_id) if campaign.goal_id else None
    return goal.metric if goal else None


def _context(session: Session, campaign: Campaign, requested: str | None,
             options: ReportOptions) -> dict[str, Any]:
    assert campaign.id is not None
    goal_metric = _goal_metric(session, campaign)
    with read_view(session) as connection:
        segment, choices = segment_choice(connection, campaign.id, requested)
        report, options = _built_report(connection, campaign.id, segment, options)
    polls = (campaign.origin == CampaignOrigin.LIVE.value
             and campaign.status != CampaignStatus.ENDED.value)
    return {"title": f"Report: {campaign.name}", "campaign": campaign, "segment": segment,
            "segment_choices": choices, "no_segment": NO_SEGMENT,
            "refresh_seconds": REFRESH_SECONDS if polls else None,
            "query": {"segment": segment or NO_SEGMENT,
                      **{name: value for name, value in options.given.items()
                         if name not in options.errors}},
            "options": options, "max_pre_period_days": MAX_PRE_PERIOD_DAYS,
            **report_context(report, goal_metric=goal_metric)}


SegmentQuery = Annotated[str | None, Query(max_length=100, description="Segment column.")]
OptionQuery = Annotated[str | None, Query(max_length=40)]


def _options(cap_revenue: str | None, cap_cost_to_serve: str | None,
             cap_incentive_cost: str | None, cuped_days: str | None) -> ReportOptions:
    return report_options({"cap_revenue": cap_revenue, "cap_cost_to_serve": cap_cost_to_serve,
                           "cap_incentive_cost": cap_incentive_cost,
                           "cuped_days": cuped_days})


@router.get(f"{CAMPAIGN}/report", name="ui.campaigns.report")
def report_page(request: Request, session: SessionDep, user: SignedIn,
                campaign_id: CampaignId, segment: SegmentQuery = None,
                cap_revenue: OptionQuery = None, cap_cost_to_serve: OptionQuery = None,
                cap_incentive_cost: OptionQuery = None,
                cuped_days: OptionQuery = None) -> Response:
    campaign = load_campaign(session, campaign_id)
    context = _context(session, campaign, segment, _options(
        cap_revenue, cap_cost_to_serve, cap_incentive_cost, cuped_days))
    return render(request, "reports/show.html", context,
                  status_code=422 if context["options"].errors else 200)


@router.get(f"{CAMPAIGN}/report/live", name="ui.campaigns.report.live")
def report_fragment(request: Request, session: SessionDep, user: SignedIn,
                    campaign_id: CampaignId, segment: SegmentQuery = None,
                    cap_revenue: OptionQuery = None, cap_cost_to_serve: OptionQuery = None,
                    cap_incentive_cost: OptionQuery = None,
                    cuped_days: OptionQuery = None) -> Response:
    """The report's numbers and charts alone, for the htmx refresh."""
    campaign = load_campaign(session, campaign_id)
    return render(request, "reports/live.html", _context(
        session, campaign, segment,
        _options(cap_revenue, cap_cost_to_serve, cap_incentive_cost, cuped_days)))


def _download(session: Session, campaign_id: int, segment: str | None,
              download: Download, options: ReportOptions) -> Response:
    campaign = load_campaign(session, campaign_id)
    assert campaign.id is not None
    with read_view(session) as connection:
        chosen, _ = segment_choice(connection, campaign.id, segment)
        report, _ = _built_report(connection, campaign.id, chosen, options)
    export_format = ExportFormat(download.value)
    return Response(
        content=export_bytes(report, export_format), media_type=export_format.media_type,
        headers={"Content-Disposition":
                 f'attachment; filename="{export_filename(report, export_format)}"'})


@router.get(f"{CAMPAIGN}/report.csv", name="ui.campaigns.report.csv")
def report_csv(session: SessionDep, user: SignedIn, campaign_id: CampaignId,
               segment: SegmentQuery = None, cap_revenue: OptionQuery = None,
               cap_cost_to_serve: OptionQuery = None,
               cap_incentive_cost: OptionQuery = None,
               cuped_days: OptionQuery = None) -> Response:
    """The tidy long format: one number per row (campaign, arm, segment, metric, ...)."""
    return _download(session, campaign_id, segment, Download.CSV, _options(
        cap_revenue, cap_cost_to_serve, cap_incentive_cost, cuped_days))


@router.get(f"{CAMPAIGN}/report.xlsx", name="ui.campaigns.report.xlsx")
def report_xlsx(session: SessionDep, user: SignedIn, campaign_id: CampaignId,
                segment: SegmentQuery = None, cap_revenue: OptionQuery = None,
                cap_cost_to_serve: OptionQuery = None,
                cap_incentive_cost: OptionQuery = None,
                cuped_days: OptionQuery = None) -> Response:
    """A workbook: summary, metrics, segments, economics and diagnostics sheets."""
    return _download(session, campaign_id, segment, Download.XLSX, _options(
        cap_revenue, cap_cost_to_serve, cap_incentive_cost, cuped_days))


@router.get(f"{CAMPAIGN}/report.html", name="ui.campaigns.report.html")
def report_html(session: SessionDep, user: SignedIn, campaign_id: CampaignId,
                segment: SegmentQuery = None, cap_revenue: OptionQuery = None,
                cap_cost_to_serve: OptionQuery = None,
                cap_incentive_cost: OptionQuery = None,
                cuped_days: OptionQuery = None) -> Response:
    """One self-contained HTML file with SVG charts, to read offline or send."""
    return _download(session, campaign_id, segment, Download.HTML, _options(
        cap_revenue, cap_cost_to_serve, cap_incentive_cost, cuped_days))
