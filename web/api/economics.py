"""Channel economics overview: what each channel costs per stage, and who it serves.

Read-only, so both scopes that look at the business may read it: analytics keys (analysts,
BI tools) and management keys (the marketers who set channel costs and campaigns).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from analytics.economics import (
    MEDIA_TYPES,
    ExportFormat,
    PeriodError,
    channel_overview,
    export_overview,
    parse_time_bound,
)
from campaigns.errors import FieldError, ValidationFailed
from campaigns.models import ApiScope
from web.api.schemas import ErrorPublic, error_responses
from web.deps import Caller, SessionDep, read_view, require_scope

router = APIRouter(prefix="/api/v1", tags=["analytics"])

#: Analysts and marketers both read the economics; storefronts never do.
EconomicsReader = Annotated[Caller, Depends(require_scope(ApiScope.ANALYTICS,
                                                          ApiScope.MANAGEMENT))]


class ChannelStagePublic(BaseModel):
    channel: str
    channel_name: str
    stage: str
    interactions: int
    customers: int
    cost_per_interaction_minor: int | None
    cost_to_serve_minor: int
    cost_to_serve_per_customer_minor: float | None
    revenue_minor: int | None
    margin_minor: int | None


class ChannelTotalsPublic(BaseModel):
    channel: str | None
    channel_name: str | None
    interactions: int
    customers: int
    cost_to_serve_minor: int
    cost_to_serve_per_customer_minor: float | None
    conversions: int
    converting_customers: int
    revenue_minor: int
    margin_minor: int
    margin_imputed_conversions: int


class PreferredChannelPublic(BaseModel):
    channel: str | None
    channel_name: str | None
    customers: int
    value_tiers: dict[str, int]
    churned_customers: int
    churn_rate: float | None
    average_lifetime_value_minor: float | None


class AcquisitionPublic(BaseModel):
    channel: str
    channel_name: str
    acquisitions: int
    customers: int
    cost_minor: int
    cost_per_customer_minor: float | None


OVERVIEW_EXAMPLE: dict[str, Any] = {
    "since": "2026-06-01T00:00:00Z", "until": "2026-09-01T00:00:00Z",
    "channel_stages": [
        {"channel": "call_centre", "channel_name": "Call centre", "stage": "after_sale",
         "interactions": 7088, "customers": 2391, "cost_per_interaction_minor": 700,
         "cost_to_serve_minor": 4961600, "cost_to_serve_per_customer_minor": 2075.12,
         "revenue_minor": None, "margin_minor": None},
        {"channel": "web", "channel_name": "Web", "stage": "after_sale",
         "interactions": 3670, "customers": 1527, "cost_per_interaction_minor": 20,
         "cost_to_serve_minor": 73400, "cost_to_serve_per_customer_minor": 48.07,
         "revenue_minor": None, "margin_minor": None}],
    "channels": [
        {"channel": "web", "channel_name": "Web", "interactions": 9026, "customers": 2380,
         "cost_to_serve_minor": 179100, "cost_to_serve_per_customer_minor": 75.25,
         "conversions": 1490, "converting_customers": 1053, "revenue_minor": 14499100,
         "margin_minor": 3909344, "margin_imputed_conversions": 0}],
    "preferred_channels": [
        {"channel": "web", "channel_name": "Web", "customers": 768,
         "value_tiers": {"bronze": 415, "gold": 102, "platinum": 33, "silver": 218},
         "churned_customers": 18, "churn_rate": 0.0234,
         "average_lifetime_value_minor": 280169.24}],
    "acquisition": [
        {"channel": "web", "channel_name": "Web", "acquisitions": 59, "customers": 59,
         "cost_minor": 1475, "cost_per_customer_minor": 25.0}],
}

CSV_EXAMPLE = """section,channel,stage,metric,value
channel_stage,call_centre,after_sale,interactions,7088
channel_stage,call_centre,after_sale,cost_per_interaction_minor,700
channel,web,,revenue_minor,14499100
preferred_channel,web,,churn_rate,0.0234
acquisition,web,,cost_per_customer_minor,25.0
"""


class ChannelEconomicsPublic(BaseModel):
    """The overview of ``[since, until)``; money in minor units (cents)."""

    model_config = ConfigDict(json_schema_extra={"examples": [OVERVIEW_EXAMPLE]})

    since: datetime | None
    until: datetime | None
    channel_stages: list[ChannelStagePublic]
    channels: list[ChannelTotalsPublic]
    preferred_channels: list[PreferredChannelPublic]
    acquisition: list[AcquisitionPublic]


def _error(description: str, code: str, message: str,
           errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": description, "content": {
        "application/json": {"example": {"code": code, "message": message,
                                         "errors": errors or []}}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The overview: JSON by default, or a CSV / XLSX download",
          "content": {"application/json": {"example": OVERVIEW_EXAMPLE},
                      MEDIA_TYPES[ExportFormat.CSV]: {"example": CSV_EXAMPLE},
                      MEDIA_TYPES[ExportFormat.XLSX]: {}}},
    401: _error("No API key, or an unknown or revoked one", "unauthenticated",
                "send an API key as 'Authorization: Bearer <key>'"),
    403: _error("A storefront key", "wrong_scope",
                "this route needs an analytics or management key; this key has scope "
                "storefront"),
    422: _error("A bad date, a period that ends before it starts, or an unknown format",
                "validation_failed", "invalid request: query.since",
                [{"loc": ["query", "since"], "msg": "since needs a timezone, e.g. "
                  "2026-01-31T09:00:00Z for UTC; got '2026-01-31T09:00:00'",
                  "type": "datetime_parsing"}]),
    503: error_responses()[503],
}

SINCE_DESCRIPTION = ("Start of the period, inclusive: a date (its midnight UTC) or an ISO "
                     "8601 time with a timezone. Default: the beginning of the records.")
UNTIL_DESCRIPTION = ("End of the period, exclusive: a date (its midnight UTC) or an ISO "
                     "8601 time with a timezone. Default: no end.")


def _period(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """Both bounds parsed; every bad one is named in a single 422."""
    errors: list[FieldError] = []
    parsed: dict[str, datetime | None] = {}
    for name, value in (("since", since), ("until", until)):
        try:
            parsed[name] = None if value is None else parse_time_bound(value, field_name=name)
        except PeriodError as error:
            errors.append(FieldError(("query", name), str(error), "datetime_parsing"))
    if not errors and parsed["since"] and parsed["until"] \
            and parsed["until"] <= parsed["since"]:
        errors.append(FieldError(("query", "until"), "until must be later than since",
                                 "period_order"))
    if errors:
        fields = ", ".join(".".join(map(str, error.loc)) for error in errors)
        raise ValidationFailed(f"invalid request: {fields}", errors)
    return parsed["since"], parsed["until"]


@router.get(
    "/channels/economics", response_model=ChannelEconomicsPublic,
    summary="Channel economics: cost to serve, customer quality, acquisition cost",
    description="Per channel x stage: interactions, distinct customers, the configured cost "
    "per interaction and the cost to serve (an event's own cost, else its channel's cost at "
    "its stage). Per channel: cost to serve and the revenue and margin of its conversions "
    "(a conversion without a margin counts at its revenue). Per preferred channel: "
    "customers, value-tier mix, churn rate and average lifetime value. Per channel with "
    "acquisition events: cost per new customer. `format=csv` gives tidy rows "
    "(section, channel, stage, metric, value); `format=xlsx` a workbook with a sheet per "
    "section. Needs an analytics or management key.",
    responses=RESPONSES,
)
def channel_economics(
    caller: EconomicsReader, session: SessionDep,
    since: Annotated[str | None, Query(description=SINCE_DESCRIPTION,
                                       examples=["2026-06-01"])] = None,
    until: Annotated[str | None, Query(description=UNTIL_DESCRIPTION,
                                       examples=["2026-09-01T00:00:00Z"])] = None,
    export_format: Annotated[ExportFormat, Query(alias="format",
                                                 description="json, csv or xlsx.")]
    = ExportFormat.JSON,
) -> Any:
    start, end = _period(since, until)
    with read_view(session) as connection:
        overview = channel_overview(connection, since=start, until=end)
    if export_format is ExportFormat.JSON:
        return ChannelEconomicsPublic.model_validate(overview.as_dict())
    return Response(
        content=export_overview(overview, export_format),
        media_type=MEDIA_TYPES[export_format],
        headers={"Content-Disposition":
                 f'attachment; filename="channel-economics.{export_format.value}"',
                 "Cache-Control": "no-store"})
