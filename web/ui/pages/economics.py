"""The channel economics overview: what each channel costs, and which customers it keeps.

Rendered from :func:`analytics.economics.channel_overview` (every figure aggregated by the
database) with charts drawn by chart.js from JSON blocks, and downloadable as CSV or XLSX
through :func:`analytics.economics.export_overview`. The period is picked as two dates in
the user's time zone: "from" its midnight, "to" inclusive (up to the next midnight).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response

from analytics.economics import (
    MEDIA_TYPES,
    ChannelOverview,
    ExportFormat,
    channel_overview,
    export_overview,
)
from web.deps import SessionDep, read_view
from web.ui.auth import SignedIn, SignedInUser
from web.ui.forms import FormState
from web.ui.pages import page_router
from web.ui.pages.campaigns import user_zone
from web.ui.rendering import render

router = page_router()

#: Stacking order of value tiers in the mix chart (lowest value first); others follow.
TIER_ORDER = ("bronze", "silver", "gold", "platinum")
DateQuery = Annotated[str | None, Query(max_length=40)]


@dataclass(frozen=True)
class Period:
    """The period the user asked for: the typed dates and the UTC bounds they mean."""

    since_text: str
    until_text: str
    since: datetime | None
    until: datetime | None

    @property
    def query(self) -> dict[str, str]:
        return {name: value for name, value in (("since", self.since_text),
                                                ("until", self.until_text)) if value}


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def parse_period(since: str | None, until: str | None, *, zone: tzinfo,
                 form: FormState) -> Period:
    """Two optional dates in the user's zone; problems go on ``form`` next to the field."""
    texts = {"since": (since or "").strip(), "until": (until or "").strip()}
    days: dict[str, date | None] = {}
    for name, text in texts.items():
        days[name] = None
        if not text:
            continue
        try:
            days[name] = date.fromisoformat(text)
        except ValueError:
            form.add(name, f"'{text}' is not a date; write it like 2026-01-31.")
    first, last = days["since"], days["until"]
    if first and last and last < first:
        form.add("until", "The period must end on or after the day it starts.")
    if form.failed:
        return Period(texts["since"], texts["until"], None, None)
    return Period(
        since_text=texts["since"], until_text=texts["until"],
        since=_local_midnight(first, zone) if first else None,
        # inclusive: up to the midnight that ends the last day
        until=_local_midnight(last + timedelta(days=1), zone) if last else None)


def _major(minor: float | None) -> float | None:
    return None if minor is None else round(minor / 100, 2)


def _tiers(overview: ChannelOverview) -> list[str]:
    present = {tier for row in overview.preferred_channels for tier in row.value_tiers}
    return [t for t in TIER_ORDER if t in present] + sorted(present - set(TIER_ORDER))


def overview_charts(overview: ChannelOverview) -> dict[str, dict[str, Any]]:
    """The chart specifications (read by app.mjs) for the sections that have rows."""
    charts: dict[str, dict[str, Any]] = {}
    channels = sorted({(row.channel, row.channel_name) for row in overview.channel_stages})
    stages = list(dict.fromkeys(row.stage for row in overview.channel_stages))
    if channels:
        cost = {(row.channel, row.stage): row.cost_to_serve_minor
                for row in overview.channel_stages}
        charts["cost"] = {
            "kind": "bars", "stacked": True, "unit": "EUR", "yTitle": "Cost to serve (EUR)",
            "labels": [name for _, name in channels],
            "series": [{"label": stage.replace("_", " "),
                        "data": [_major(cost.get((key, stage), 0)) for key, _ in channels]}
                       for stage in stages]}
    preferred = overview.preferred_channels
    if preferred:
        labels = [row.channel_name or row.channel or "not recorded" for row in preferred]
        charts["tiers"] = {
            "kind": "bars", "stacked": True, "unit": "%", "yTitle": "Customers (%)",
            "labels": labels,
            "series": [{"label": tier, "data": [
                round(100 * row.value_tiers.get(tier, 0) / row.customers, 2)
                if row.customers else None for row in preferred]}
                for tier in _tiers(overview)]}
        charts["churn"] = {
            "kind": "bars", "unit": "%", "yTitle": "Churn rate (%)", "labels": labels,
            "series": [{"label": "churn rate", "data": [
                round(row.churn_rate * 100, 2) if row.churn_rate is not None else None
                for row in preferred]}]}
    if overview.acquisition:
        charts["acquisition"] = {
            "kind": "bars", "unit": "EUR", "yTitle": "EUR per acquired customer",
            "labels": [row.channel_name for row in overview.acquisition],
            "series": [{"label": "acquisition cost per customer", "data": [
                _major(row.cost_per_customer_minor) for row in overview.acquisition]}]}
    return charts


def _overview_for(session: SessionDep, user: SignedInUser, since: str | None,
                  until: str | None) -> tuple[FormState, Period, ChannelOverview | None]:
    form = FormState(values={"since": since or "", "until": until or ""})
    period = parse_period(since, until, zone=user_zone(user), form=form)
    if form.failed:
        return form, period, None
    with read_view(session) as connection:
        return form, period, channel_overview(connection, since=period.since,
                                              until=period.until)


@router.get("/economics", name="ui.economics")
def economics_page(request: Request, session: SessionDep, user: SignedIn,
                   since: DateQuery = None, until: DateQuery = None) -> Response:
    form, period, overview = _overview_for(session, user, since, until)
    return render(request, "economics/overview.html", {
        "title": "Channel economics", "form": form, "period": period, "overview": overview,
        "tiers": _tiers(overview) if overview else [],
        "charts": overview_charts(overview) if overview else {}},
        status_code=422 if overview is None else 200)


def _download(request: Request, session: SessionDep, user: SignedInUser, since: str | None,
              until: str | None, export_format: ExportFormat) -> Response:
    form, _, overview = _overview_for(session, user, since, until)
    if overview is None:
        return render(request, "economics/overview.html", {
            "title": "Channel economics", "form": form, "period": None, "overview": None,
            "tiers": [], "charts": {}}, status_code=422)
    stamp = datetime.now(user_zone(user)).strftime("%Y%m%d")  # as the CLI names the file
    return Response(
        content=export_overview(overview, export_format),
        media_type=MEDIA_TYPES[export_format],
        headers={"Content-Disposition": "attachment; "
                 f'filename="channel-economics-{stamp}.{export_format.value}"'})


@router.get("/economics.csv", name="ui.economics.csv")
def economics_csv(request: Request, session: SessionDep, user: SignedIn,
                  since: DateQuery = None, until: DateQuery = None) -> Response:
    """Tidy rows: section, channel, stage, metric, value."""
    return _download(request, session, user, since, until, ExportFormat.CSV)


@router.get("/economics.xlsx", name="ui.economics.xlsx")
def economics_xlsx(request: Request, session: SessionDep, user: SignedIn,
                   since: DateQuery = None, until: DateQuery = None) -> Response:
    """A workbook with a sheet per section and the tidy records."""
    return _download(request, session, user, since, until, ExportFormat.XLSX)
