"""Campaign reports for analysts (analytics scope): JSON, tidy CSV, XLSX or one HTML file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from analytics.exports import ExportFormat, export_bytes, export_filename
from analytics.queries import MAX_PRE_PERIOD_DAYS
from analytics.report import ReportOptionError, arm_names, build_report, choose_segment
from analytics.reports import choose_baseline
from analytics.stats import CORRECTIONS
from analytics.uplift import QiniOptionError
from campaigns.errors import FieldError, ValidationFailed
from web.api.schemas import MAX_ID, ErrorPublic, error_responses
from web.deps import AnalyticsCaller, SessionDep, read_view

router = APIRouter(prefix="/api/v1", tags=["reports"])

#: Largest alpha a report accepts: wider "confidence" levels than 50% mean nothing.
MAX_ALPHA = 0.5

_JSON_EXAMPLE: dict[str, Any] = {
    "format": "channelshift.report/1",
    "campaign": {"id": 1, "name": "After-sale self-service on the web", "status": "ended",
                 "origin": "live", "goal": "After-sale service on the web",
                 "stage": "After-sale", "target_channel": "Web", "currency": "EUR",
                 "budget_minor": 500000, "spent_minor": 81470,
                 "starts_at": "2026-09-08T00:00:00Z", "ends_at": "2026-10-08T00:00:00Z",
                 "pause_reason": None, "window_days": 30, "covariates": {}},
    "generated_at": "2026-11-22T12:00:00Z", "alpha": 0.05,
    "date_range": {"first_exposure": "2026-09-08T00:11:25Z",
                   "last_exposure": "2026-09-21T23:54:05Z"},
    "methods": ["adoption, conversion, churn: unpooled Wald z test of the difference of "
                "proportions, with the Wald interval from the same standard error, so the "
                "interval excludes 0 exactly when p < alpha (bounded to [-1, 1]); ..."],
    "warnings": [],
    "arms": [{"name": "control", "is_control": True, "n": 496, "planned_weight": 34,
              "incentive_type": None, "incentive_name": None},
             {"name": "web coupon", "is_control": False, "n": 574, "planned_weight": 33,
              "incentive_type": "coupon", "incentive_name": "10% off on the web"}],
    "srm": {"p_value": 0.0054, "chi2": 10.44, "flagged": False, "threshold": 0.001,
            "p_value_floored": False, "reason": None,
            "summary": "Sample ratio check passed: chi-square p = 0.0054 (flagged below "
                       "0.001)."},
    "results": [{"arm": "web coupon", "metric": "adoption", "segment": "all",
                 "method": "difference of proportions: unpooled Wald z test and interval "
                           "(Miettinen-Nurminen score test and interval for small counts)",
                 "n_control": 496, "n_treatment": 574, "mean_control": 0.2056,
                 "mean_treatment": 0.2753, "diff": 0.0696, "diff_se": 0.026,
                 "diff_ci_low": 0.0186, "diff_ci_high": 0.1206, "statistic": 2.65, "df": None,
                 "p_value": 0.0081, "p_value_floored": False, "p_value_holm": 0.0243,
                 "rel_lift": 0.3385, "rel_lift_se": 0.148, "rel_lift_ci_low": 0.0467,
                 "rel_lift_ci_high": 0.6304, "variance_reduction": None, "reason": None,
                 "interval_method": "Wald z", "rel_lift_interval_method": "delta method",
                 "small_sample": False}],
    "segments": [], "economics": [], "guardrails": [], "qini": None,
    "timeline": [{"arm": "control", "day": "2026-09-08", "exposed": 41, "adopted": 2,
                  "rate": 0.0488}],
    "spend": [{"day": "2026-09-08", "spent_minor": 0}],
}

_CSV_EXAMPLE = (
    "campaign,arm,segment,metric,statistic,value\n"
    "After-sale self-service on the web,all,all,sample_ratio,srm_p_value,0.0054\n"
    "After-sale self-service on the web,control,all,assignment,n,496\n"
    "After-sale self-service on the web,web coupon,all,adoption,diff,0.0696\n"
    "After-sale self-service on the web,web coupon,all,adoption,diff_ci_low,0.0186\n")


_CAP_HELP = ("Cap each customer's {metric} in the comparisons (live campaigns): `99p` at "
             "the 99th percentile of the positive values (any percentile above 0 and below "
             "100), or `500.00` at that amount in the campaign's currency. CUPED's "
             "pre-period value is capped alike; economics and guardrails stay uncapped.")


def _invalid_query(name: str, error: ValueError) -> ValidationFailed:
    return ValidationFailed(f"invalid request: query.{name}: {error}",
                            [FieldError(("query", name), str(error), "value_error")])


def _error(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": description,
            "content": {"application/json": {"example": {**example, "errors": []}}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The report in the requested format; CSV, XLSX and HTML come as "
                         "a download (Content-Disposition: attachment).",
          "content": {
              ExportFormat.JSON.media_type: {"example": _JSON_EXAMPLE},
              "text/csv": {"example": _CSV_EXAMPLE},
              ExportFormat.XLSX.media_type: {"schema": {"type": "string",
                                                        "format": "binary"}},
              "text/html": {"example": "<!doctype html>\n<html lang=\"en\">...<svg "
                                       "viewBox=\"0 0 940 546\" role=\"img\">...</svg>..."},
          }},
    401: _error("No API key, or an unknown or revoked one", {
        "code": "unauthenticated",
        "message": "send an API key as 'Authorization: Bearer <key>'"}),
    403: _error("A key of another scope (reports need an analytics key)", {
        "code": "wrong_scope",
        "message": "this route needs an analytics key; this key has scope storefront"}),
    404: _error("No campaign has this id", {
        "code": "campaign_not_found", "message": "campaign 42 does not exist"}),
    422: {"model": ErrorPublic, "description": "An invalid format or alpha",
          "content": {"application/json": {"example": {
              "code": "validation_failed", "message": "invalid request: query.alpha",
              "errors": [{"loc": ["query", "alpha"],
                          "msg": "Input should be less than or equal to 0.5",
                          "type": "less_than_equal"}]}}}},
    503: error_responses()[503],
}


@router.get(
    "/campaigns/{campaign_id}/report", response_class=Response, responses=RESPONSES,
    summary="A campaign's report: results with intervals, methods, SRM check, charts",
    description="Every arm against the baseline arm (`baseline`, default control) for "
    "every metric (differences and relative lifts with intervals, p-values, Holm or "
    "Benjamini-Hochberg correction of the primary metrics (`correction`), CUPED, the "
    "Bayesian chance to beat the baseline and expected loss, always-valid intervals; "
    "Cochran's Q across segment values), the arms and their sample sizes, the sample "
    "ratio mismatch check, the date range, the methods in plain words, cumulative "
    "adoption by day and spend against the budget. `format`: `json` (default; raw "
    "numbers, money in minor units), `csv` (tidy long format: campaign, arm, segment, "
    "metric, statistic, value), `xlsx` (sheets summary, metrics, segments, economics, "
    "diagnostics) or `html` (one self-contained file with inline SVG charts, no "
    "external assets). Needs an analytics key.",
)
def campaign_report(
    caller: AnalyticsCaller, session: SessionDep,
    campaign_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The campaign's id.")],
    export_format: Annotated[ExportFormat, Query(
        alias="format", description="json, csv, xlsx or html.")] = ExportFormat.JSON,
    alpha: Annotated[float, Query(
        gt=0, le=MAX_ALPHA, description="Significance level: intervals are two-sided "
        "(1 - alpha); at most 0.5.", examples=[0.05])] = 0.05,
    segment: Annotated[str | None, Query(
        max_length=100, description="Customer attribute to break uplift down by (Holm "
        "across segments); default value_tier (an imported experiment: its first segment "
        "column); `none` for no breakdown.", examples=["preferred_channel"])] = None,
    qini_score: Annotated[str | None, Query(
        max_length=100, description="Numeric customer attribute holding a targeting score: "
        "adds the uplift-by-decile table and Qini curve (an imported experiment: the name "
        "of the column imported with --score).", examples=["propensity"])] = None,
    qini_metric: Annotated[str | None, Query(
        max_length=100, description="The 0/1 metric the Qini curve and deciles count; "
        "default adoption (an imported experiment: its first binary metric). Needs "
        "`qini_score`.", examples=["conversion"])] = None,
    correction: Annotated[str, Query(
        max_length=10, description="Multiplicity correction of the primary metrics: "
        "`holm` (family-wise error rate) or `bh` (Benjamini-Hochberg, false discovery "
        "rate).", examples=list(CORRECTIONS))] = "holm",
    baseline: Annotated[str | None, Query(
        max_length=200, description="The arm every other arm is compared with, by name "
        "(default: the control arm).", examples=["control"])] = None,
    cap_revenue: Annotated[str | None, Query(
        max_length=40, description=_CAP_HELP.format(metric="revenue"),
        examples=["99p", "500.00"])] = None,
    cap_cost_to_serve: Annotated[str | None, Query(
        max_length=40, description=_CAP_HELP.format(metric="cost to serve"),
        examples=["99p"])] = None,
    cap_incentive_cost: Annotated[str | None, Query(
        max_length=40, description=_CAP_HELP.format(metric="incentive cost"),
        examples=["99p"])] = None,
    cuped_days: Annotated[int | None, Query(
        ge=1, le=MAX_PRE_PERIOD_DAYS, description="Length of the CUPED pre-period in days "
        "before each customer's first exposure (live campaigns); default: the goal's "
        "window.", examples=[14])] = None,
) -> Response:
    # A plain `def`: FastAPI runs it in the thread pool, so the report's SQL and the
    # rendering never block the event loop.
    if correction not in CORRECTIONS:
        raise _invalid_query("correction", ValueError(
            f"unknown correction '{correction}'; use one of {', '.join(CORRECTIONS)}"))
    caps = {metric: text for metric, text in (
        ("revenue", cap_revenue), ("cost_to_serve", cap_cost_to_serve),
        ("incentive_cost", cap_incentive_cost)) if text is not None}
    with read_view(session) as connection:
        try:
            chosen = choose_segment(connection, campaign_id, segment)
        except ValueError as error:
            raise _invalid_query("segment", error) from None
        try:
            choose_baseline(arm_names(connection, campaign_id), baseline)
        except ValueError as error:
            raise _invalid_query("baseline", error) from None
        try:
            report = build_report(connection, campaign_id, alpha=alpha, segment=chosen,
                                  qini_score=qini_score, qini_metric=qini_metric,
                                  correction=correction, baseline=baseline, caps=caps,
                                  cuped_days=cuped_days)
        except QiniOptionError as error:
            raise _invalid_query(error.option, error) from None
        except ReportOptionError as error:
            raise _invalid_query(error.option, ValueError(error.detail)) from None
        except ValueError as error:  # the options are checked: only the score is left
            raise _invalid_query("qini_score", error) from None
    disposition = "inline" if export_format is ExportFormat.JSON else "attachment"
    return Response(
        content=export_bytes(report, export_format), media_type=export_format.media_type,
        headers={"Content-Disposition":
                 f'{disposition}; filename="{export_filename(report, export_format)}"',
                 "Cache-Control": "no-store"})
