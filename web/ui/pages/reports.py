"""The live campaign report: results with intervals, charts, a verdict per arm, and exports.

:func:`campaign_report` is :func:`analytics.report.build_report` with the sections it
leaves empty filled in from the same per-arm statistics: the economics, the guardrails
(as the guardrail check judges them) and the breakdown by one customer segment. One
aggregate serves all three (sufficient statistics are sums, so the whole-campaign rows
are the segment rows added up); the page, the htmx refresh and the CSV / XLSX / HTML
downloads all render that one :class:`~analytics.report.Report`, so what an analyst
downloads is what the page showed.

The page opens with the decision (:func:`web.ui.headline.decision_summary`) and folds
every detail into a collapsible section (:func:`report_sections`, one template each under
``reports/sections/``). It is rendered on the server (it works without script); while a
campaign can still change, a fragment with every number is fetched again every 30
seconds, and a Refresh link fetches it on demand (the sections a reader opened stay
open). Charts are drawn by chart.js from JSON in a ``data-report-chart`` attribute by
``static/js/app.mjs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select, true
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.exports import (
    MISSING,
    ExportFormat,
    arm_colours,
    currency_exponent,
    economics_rows,
    export_bytes,
    export_filename,
    format_count,
    format_number,
    format_p,
    format_percent,
    heterogeneity_rows,
    interval_text,
)
from analytics.guardrails import GUARDRAILS, describe_harm
from analytics.queries import (
    CAPPABLE_METRICS,
    MAX_PRE_PERIOD_DAYS,
    CapRule,
)
from analytics.report import Report, ReportOptionError, arm_names, build_report, srm_sentence
from analytics.reports import MetricResult, choose_baseline
from analytics.segments import segment_names
from analytics.stats import CORRECTION_NAMES, CORRECTIONS
from campaigns.models import (
    Assignment,
    AuditLog,
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    Customer,
    ExperimentUnit,
    MigrationGoal,
)
from web.deps import SessionDep, read_view
from web.ui.auth import SignedIn
from web.ui.headline import (  # noqa: F401  (the page's words, re-exported for callers)
    ArmVerdict,
    Units,
    arm_verdict,
    decision_summary,
    metric_label,
    metric_units,
    primary_metric,
)
from web.ui.pages.campaigns import CAMPAIGN, CampaignId, campaign_router, load_campaign
from web.ui.problems import UiProblem
from web.ui.rendering import render

router = campaign_router()

_CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
_CUSTOMER = Customer.__table__  # type: ignore[attr-defined]
_ASSIGNMENT = Assignment.__table__  # type: ignore[attr-defined]
_UNIT = ExperimentUnit.__table__  # type: ignore[attr-defined]
_AUDIT = AuditLog.__table__  # type: ignore[attr-defined]

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
                    qini_score: str | None = None, options: ReportOptions | None = None
                    ) -> Report:
    """The full report (economics, guardrails and the ``segment`` breakdown included).

    ``segment`` must be one of :func:`analytics.segments.segment_names` (None: none);
    ``qini_score`` one of :func:`qini_score_choices` (None: no Qini section); ``options``
    the reader's correction and baseline (checked here, so a bad value is a 400 page naming
    the query parameter), outlier caps and CUPED pre-period (their valid part).
    """
    options = options or ReportOptions()
    if options.correction not in CORRECTIONS:
        raise _bad_query("correction", f"unknown correction '{options.correction}'; use "
                         f"one of {', '.join(CORRECTIONS)}")
    try:
        choose_baseline(arm_names(connection, campaign_id), options.baseline)
    except ValueError as error:
        raise _bad_query("baseline", str(error)) from None
    return build_report(connection, campaign_id, alpha=alpha, segment=segment,
                        qini_score=qini_score, correction=options.correction,
                        baseline=options.baseline, caps=options.caps,
                        cuped_days=options.cuped_days)


def _bad_query(name: str, message: str) -> UiProblem:
    """A bad option in the address: a 400 page naming the query parameter."""
    return UiProblem(f"The report option '{name}' is not valid: {message}.")


@dataclass(frozen=True)
class ReportOptions:
    """What a reader picked: the multiplicity correction, the baseline arm, the Qini score,
    outlier caps and the CUPED pre-period.

    ``given`` is what the reader typed for the caps and the pre-period (kept in the form
    and the download links); ``errors`` names each of those that could not be used, and
    that option is left out.
    """

    correction: str = "holm"
    baseline: str | None = None
    qini: str | None = None
    caps: dict[str, CapRule | str] = field(default_factory=dict)
    cuped_days: int | None = None
    given: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def without(self, option: str, message: str) -> ReportOptions:
        """These options less ``option`` (``cap_<metric>`` or ``cuped_days``), with why."""
        caps = {m: c for m, c in self.caps.items() if f"cap_{m}" != option}
        return replace(self, caps=caps,
                       cuped_days=None if option == "cuped_days" else self.cuped_days,
                       errors={**self.errors, option: message})

    def query(self) -> dict[str, str]:
        """The options as query parameters, so refreshes and downloads keep them."""
        query = {"correction": self.correction} if self.correction != "holm" else {}
        if self.baseline is not None:
            query["baseline"] = self.baseline
        if self.qini is not None:
            query["qini"] = self.qini
        query.update({name: value for name, value in self.given.items()
                      if name not in self.errors})
        return query


def report_options(given: Mapping[str, str | None], *, correction: str = "holm",
                   baseline: str | None = None, qini: str | None = None) -> ReportOptions:
    """The form's options; for caps (``cap_<metric>``) and ``cuped_days`` blank means
    unset and a bad value ends in ``errors`` and is left out."""
    errors: dict[str, str] = {}
    kept = {name: value.strip() for name, value in given.items() if value and value.strip()}
    # Read by the report itself (analytics.report.parse_caps); one it cannot read is
    # dropped by _built_report with its reason.
    caps = {metric: kept[f"cap_{metric}"] for metric in CAPPABLE_METRICS
            if f"cap_{metric}" in kept}
    cuped_days: int | None = None
    if "cuped_days" in kept:
        text = kept["cuped_days"]
        if text.isdigit() and 1 <= int(text) <= MAX_PRE_PERIOD_DAYS:
            cuped_days = int(text)
        else:
            errors["cuped_days"] = (f"the CUPED pre-period must be a whole number of days "
                                    f"from 1 to {MAX_PRE_PERIOD_DAYS} (got {text!r})")
    return ReportOptions(correction=correction, baseline=baseline or None, qini=qini or None,
                         caps=caps, cuped_days=cuped_days, given=kept, errors=errors)


def _built_report(connection: Connection, campaign_id: int, segment: str | None,
                  options: ReportOptions) -> tuple[Report, ReportOptions]:
    """The report with every usable option; one the report refuses is dropped, with why.

    ``options.qini`` must already be one of :func:`qini_score_choices` (or None).
    """
    while True:
        try:
            return campaign_report(connection, campaign_id, segment=segment,
                                   qini_score=options.qini, options=options), options
        except ReportOptionError as error:
            if error.option in options.errors:
                raise
            options = options.without(error.option, error.detail)


def qini_score_choices(connection: Connection, campaign_id: int) -> tuple[str, ...]:
    """The scores a Qini curve can rank this campaign's customers by.

    Live campaigns: every customer attribute that is a number for some exposed customer
    (JSON keys enumerated in SQL, so no customer row leaves the database). Imported
    experiments: the score column named at import, if any unit has a score.
    """
    if connection.execute(select(_CAMPAIGN.c.origin).where(_CAMPAIGN.c.id == campaign_id)
                          ).scalar() == CampaignOrigin.IMPORTED.value:
        return _imported_score(connection, campaign_id)
    if connection.dialect.name == "postgresql":
        entries = func.jsonb_each(_CUSTOMER.c.attributes).table_valued(
            "key", "value").alias("entry")
        numeric = func.jsonb_typeof(entries.c.value) == "number"
    else:
        entries = func.json_each(_CUSTOMER.c.attributes).table_valued(
            "key", "type").alias("entry")
        numeric = entries.c.type.in_(("integer", "real"))
    keys = connection.execute(
        select(entries.c.key).distinct()
        .select_from(_ASSIGNMENT.join(_CUSTOMER, _CUSTOMER.c.id == _ASSIGNMENT.c.customer_id)
                     .join(entries, true()))
        .where(_ASSIGNMENT.c.campaign_id == campaign_id, numeric)
        .order_by(entries.c.key)).scalars()
    return tuple(str(key) for key in keys)


def _imported_score(connection: Connection, campaign_id: int) -> tuple[str, ...]:
    scored = connection.execute(select(_UNIT.c.id).where(_UNIT.c.campaign_id == campaign_id,
                                                         _UNIT.c.score.is_not(None))
                                .limit(1)).first()
    if scored is None:
        return ()
    details = connection.execute(
        select(_AUDIT.c.details).where(_AUDIT.c.entity_type == "campaign",
                                       _AUDIT.c.entity_id == campaign_id,
                                       _AUDIT.c.action == "campaign.import")
        .order_by(_AUDIT.c.id.desc()).limit(1)).scalar()
    name = (details or {}).get("score_column") if isinstance(details, dict) else None
    return (str(name or "score"),)


def qini_choice(choices: Sequence[str], requested: str | None) -> str | None:
    """The score the page ranks by: the requested one if the campaign has it, else none."""
    return requested if requested in choices else None


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


# --- charts --------------------------------------------------------------------------------


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def lift_chart(report: Report, primary: str | None = None) -> dict[str, Any] | None:
    """Relative lift with its interval for every treatment arm and metric (in %).

    Values beyond :data:`LIFT_CLIP` are drawn at the axis's edge and flagged in
    ``clipped`` ("estimate", "low", "high" per row), with the true values in ``value``,
    ``valueLow`` and ``valueHigh`` for the marks and tooltips. ``primary`` flags the rows
    of the metric the verdict reads (and every Holm-corrected one): the chart shows those
    unless the reader asks for every metric.
    """
    colours = arm_colours(report)
    rows = [r for r in report.results if r.comparison.rel_lift is not None
            and r.comparison.rel_lift_ci_low is not None
            and r.comparison.rel_lift_ci_high is not None]
    if not rows:
        return None

    def values(result: MetricResult) -> tuple[float, float, float]:
        c = result.comparison
        return (c.rel_lift or 0.0, c.rel_lift_ci_low or 0.0, c.rel_lift_ci_high or 0.0)

    def clipped(value: float) -> bool:
        return not LIFT_CLIP[0] <= value <= LIFT_CLIP[1]

    return {
        "kind": "interval", "unit": "%", "axisTitle": "Relative lift against control (%)",
        "labels": [f"{r.arm} · {metric_label(r.metric)}" for r in rows],
        "estimate": [round(_clip(values(r)[0], LIFT_CLIP) * 100, 2) for r in rows],
        "low": [round(_clip(values(r)[1], LIFT_CLIP) * 100, 2) for r in rows],
        "high": [round(_clip(values(r)[2], LIFT_CLIP) * 100, 2) for r in rows],
        "value": [round(values(r)[0] * 100, 2) for r in rows],
        "valueLow": [round(values(r)[1] * 100, 2) for r in rows],
        "valueHigh": [round(values(r)[2] * 100, 2) for r in rows],
        "clipped": [[name for name, value in zip(("estimate", "low", "high"), values(r),
                                                 strict=True) if clipped(value)]
                    for r in rows],
        "primary": [r.metric == primary or r.p_value_holm is not None for r in rows],
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
    # Minor to major units by the currency's own digits (JPY has none, KWD three).
    digits = currency_exponent(currency)
    labels = [point.day.isoformat() for point in report.spend]
    series: list[dict[str, Any]] = [{
        "label": "Spent", "colour": "#1d4ed8",
        "data": [round(point.spent_minor / 10**digits, digits) for point in report.spend]}]
    if report.campaign.budget_minor:
        series.append({"label": "Budget", "colour": "#b91c1c", "dashed": True,
                       "data": [round(report.campaign.budget_minor / 10**digits, digits)]
                       * len(labels)})
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


def qini_chart(report: Report) -> dict[str, Any] | None:
    """The Qini curve per treatment arm against random targeting (incremental responders)."""
    qini = report.qini
    if qini is None or not qini.curve:
        return None
    colours = arm_colours(report)
    series: list[dict[str, Any]] = []
    for arm in dict.fromkeys(point.arm for point in qini.curve):
        points = [p for p in qini.curve if p.arm == arm]
        colour = colours.get(arm, "#2563eb")
        series.append({"label": arm, "colour": colour, "data": [
            {"x": round(p.fraction_targeted * 100, 2), "y": round(p.incremental_gain, 3)}
            for p in points]})
        series.append({"label": f"{arm} (random)", "colour": colour, "dashed": True,
                       "data": [{"x": round(p.fraction_targeted * 100, 2),
                                 "y": round(p.random_gain, 3)} for p in points]})
    return {"kind": "xy", "unit": "", "xUnit": "%",
            "xTitle": f"Customers targeted, highest {qini.score} first (%)",
            "yTitle": f"Incremental {metric_label(qini.metric).lower()} (customers)",
            "series": series}


def decile_rows(report: Report) -> list[dict[str, Any]]:
    if report.qini is None:
        return []
    return [{"arm": d.arm, "decile": d.decile,
             "score": interval_text(d.score_min, d.score_max, format_score),
             "n": f"{format_count(d.treatment_n)} vs {format_count(d.control_n)}",
             "treatment": format_percent(d.treatment_rate),
             "control": format_percent(d.control_rate),
             "uplift": format_percent(d.uplift, signed=True).replace("%", " pp"),
             "interval": interval_text(d.uplift_ci_low, d.uplift_ci_high,
                                       lambda v: format_percent(v, signed=True)
                                       .replace("%", " pp")),
             "note": d.reason or ""}
            for d in report.qini.deciles]


def format_score(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.4g}"


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
            "holm": (format_p(result.p_value_adjusted(report.correction))
                     if result.p_value_holm is not None else ""),
            "chance": (format_percent(result.bayesian.chance_to_beat_baseline)
                       if result.bayesian is not None else ""),
            "always_valid": (interval_text(result.sequential.ci_low, result.sequential.ci_high,
                                           unit.diff) if result.sequential is not None else ""),
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


@dataclass(frozen=True)
class Section:
    """One collapsible section of the report page, below the decision summary.

    Its body is the template ``reports/sections/<key>.html``; ``heading_id`` is the id of
    its ``<h2>`` (what links and tests point at).
    """

    key: str
    title: str
    open: bool = False

    @property
    def heading_id(self) -> str:
        return f"{self.key}-title"


def report_sections(report: Report, context: Mapping[str, Any]) -> list[Section]:
    """The sections the page shows after the decision, in reading order.

    A new section is one entry here (shown when it has something to say) and one template.
    """
    segment = context.get("segment")
    wanted = [
        Section("results", "Every metric"),
        Section("segments", f"By {(segment or '').replace('_', ' ')}"
                ) if context["segments"] else None,
        Section("power", "Power" + (" so far" if report.interim else ""))
        if context["power"] else None,
        Section("economics", "Economics") if context["economics"] else None,
        Section("guardrails", "Guardrails") if context["guardrails"] else None,
        Section("qini", "Targeting by score", open=report.qini is not None)
        if context["qini_choices"] or report.qini is not None else None,
        Section("timeline", "Over time") if {"adoption", "spend"} & set(context["charts"])
        else None,
        Section("sizes", "Sample sizes and dates"),
        Section("methods", "Methods"),
    ]
    return [section for section in wanted if section is not None]


def report_context(report: Report, *, goal_metric: str | None,
                   qini_choices: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the report templates print, formatted once here."""
    decision = decision_summary(report, goal_metric=goal_metric)
    primary = decision.metric
    total = sum(arm.n for arm in report.arms)
    segments = [s for s in report.segments if s.metric == primary]
    charts = {"lift": lift_chart(report, primary), "adoption": adoption_chart(report),
              "spend": spend_chart(report), "segments": segment_chart(report, primary),
              "qini": qini_chart(report)}
    context: dict[str, Any] = {
        "report": report, "decision": decision, "verdicts": list(decision.verdicts),
        # What the decision's health checks do not already say (SRM has its own alert).
        "alerts": [w for w in report.warnings[1 if report.srm.flagged else 0:]
                   if w not in report.cautions],
        "primary": primary, "primary_label": decision.metric_label,
        "confidence": f"{1 - report.alpha:.0%}", "total_exposed": total,
        "arms": [{"name": arm.name, "control": arm.is_control, "n": arm.n,
                  "share": arm.n / total if total else None, "weight": arm.planned_weight,
                  "planned_share": arm.planned_share,
                  "incentive": arm.incentive_name, "type": arm.incentive_type}
                 for arm in report.arms],
        "srm_text": srm_sentence(report.srm),
        "results": result_rows(report, report.results),
        "segments": result_rows(report, segments),
        "segment_holm": any(s.p_value_holm is not None for s in segments),
        "economics": economics_rows(report), "guardrails": guardrail_rows(report),
        "deciles": decile_rows(report), "qini_choices": tuple(qini_choices),
        "qini_coefficients": {arm: format_number(value) for arm, value in
                              (report.qini.qini_coefficient.items() if report.qini else [])},
        "heterogeneity": heterogeneity_rows(report, [primary] if primary else []),
        "correction": report.correction,
        "correction_label": {"holm": "Holm", "bh": "BH"}[report.correction],
        "correction_name": CORRECTION_NAMES[report.correction],
        "baseline": report.baseline_arm or "control",
        "charts": {name: spec for name, spec in charts.items() if spec is not None},
        "budget_share": (report.campaign.spent_minor / report.campaign.budget_minor
                         if report.campaign.budget_minor else None),
        "power": power_rows(report),
    }
    context.setdefault("segment", None)
    return context


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
        scores = qini_score_choices(connection, campaign.id)
        options = replace(options, qini=qini_choice(scores, options.qini))
        report, options = _built_report(connection, campaign.id, segment, options)
        arms = arm_names(connection, campaign.id)
    polls = (campaign.origin == CampaignOrigin.LIVE.value
             and campaign.status != CampaignStatus.ENDED.value)
    query = {"segment": segment or NO_SEGMENT, **options.query()}
    context = {"title": f"Report: {campaign.name}", "campaign": campaign, "segment": segment,
               "segment_choices": choices, "no_segment": NO_SEGMENT,
               "qini_score": options.qini,
               "refresh_seconds": REFRESH_SECONDS if polls else None, "query": query,
               "arm_choices": arms, "corrections": CORRECTION_NAMES, "options": options,
               "max_pre_period_days": MAX_PRE_PERIOD_DAYS,
               **report_context(report, goal_metric=goal_metric, qini_choices=scores)}
    context["segment"] = segment
    context["sections"] = report_sections(report, context)
    return context


SegmentQuery = Annotated[str | None, Query(max_length=100, description="Segment column.")]
OptionQuery = Annotated[str | None, Query(max_length=40)]


def _options(qini: Annotated[str | None, Query(max_length=100, description=(
                 "Score to rank customers by for the Qini curve and decile table."))] = None,
             correction: Annotated[str, Query(max_length=10,
                                              description="holm or bh.")] = "holm",
             baseline: Annotated[str | None, Query(max_length=200,
                                                   description="Baseline arm.")] = None,
             cap_revenue: OptionQuery = None, cap_cost_to_serve: OptionQuery = None,
             cap_incentive_cost: OptionQuery = None,
             cuped_days: OptionQuery = None) -> ReportOptions:
    """The report options of the page's address, the same for the page and downloads."""
    return report_options({"cap_revenue": cap_revenue, "cap_cost_to_serve": cap_cost_to_serve,
                           "cap_incentive_cost": cap_incentive_cost,
                           "cuped_days": cuped_days},
                          correction=correction, baseline=baseline, qini=qini)


Options = Annotated[ReportOptions, Depends(_options)]


@router.get(f"{CAMPAIGN}/report", name="ui.campaigns.report")
def report_page(request: Request, session: SessionDep, user: SignedIn,
                campaign_id: CampaignId, segment: SegmentQuery = None, *,
                options: Options) -> Response:
    campaign = load_campaign(session, campaign_id)
    context = _context(session, campaign, segment, options)
    return render(request, "reports/show.html", context,
                  status_code=422 if context["options"].errors else 200)


@router.get(f"{CAMPAIGN}/report/live", name="ui.campaigns.report.live")
def report_fragment(request: Request, session: SessionDep, user: SignedIn,
                    campaign_id: CampaignId, segment: SegmentQuery = None, *,
                    options: Options) -> Response:
    """The report's numbers and charts alone, for the htmx refresh."""
    campaign = load_campaign(session, campaign_id)
    return render(request, "reports/live.html", _context(session, campaign, segment, options))


def _download(session: Session, campaign_id: int, segment: str | None,
              download: Download, options: ReportOptions) -> Response:
    campaign = load_campaign(session, campaign_id)
    assert campaign.id is not None
    with read_view(session) as connection:
        chosen, _ = segment_choice(connection, campaign.id, segment)
        options = replace(options, qini=qini_choice(qini_score_choices(connection, campaign.id),
                                                    options.qini))
        report, _ = _built_report(connection, campaign.id, chosen, options)
    export_format = ExportFormat(download.value)
    return Response(
        content=export_bytes(report, export_format), media_type=export_format.media_type,
        headers={"Content-Disposition":
                 f'attachment; filename="{export_filename(report, export_format)}"'})


@router.get(f"{CAMPAIGN}/report.csv", name="ui.campaigns.report.csv")
def report_csv(session: SessionDep, user: SignedIn, campaign_id: CampaignId,
               segment: SegmentQuery = None, *, options: Options) -> Response:
    """The tidy long format: one number per row (campaign, arm, segment, metric, ...)."""
    return _download(session, campaign_id, segment, Download.CSV, options)


@router.get(f"{CAMPAIGN}/report.xlsx", name="ui.campaigns.report.xlsx")
def report_xlsx(session: SessionDep, user: SignedIn, campaign_id: CampaignId,
                segment: SegmentQuery = None, *, options: Options) -> Response:
    """A workbook: summary, metrics, segments, economics and diagnostics sheets."""
    return _download(session, campaign_id, segment, Download.XLSX, options)


@router.get(f"{CAMPAIGN}/report.html", name="ui.campaigns.report.html")
def report_html(session: SessionDep, user: SignedIn, campaign_id: CampaignId,
                segment: SegmentQuery = None, *, options: Options) -> Response:
    """One self-contained HTML file with SVG charts, to read offline or send."""
    return _download(session, campaign_id, segment, Download.HTML, options)
