"""The dashboard: every campaign by status, spend against budget, and what each one moved.

The page lists campaigns at once; each card then loads its headline (statistics over
every exposed customer, the slow part) as an htmx fragment, so a dashboard with many
campaigns shows up immediately and fills in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import Response
from sqlalchemy import func
from sqlmodel import Session, col, select

from campaigns.models import Assignment, Campaign, CampaignOrigin, CampaignStatus, MigrationGoal
from web.deps import SessionDep, read_view
from web.ui.auth import SignedIn
from web.ui.headline import CampaignHeadline, campaign_headline
from web.ui.pages import page_router
from web.ui.problems import PageNotFound
from web.ui.rendering import render

router = page_router()
logger = logging.getLogger("channelshift.ui")

#: Sections of the dashboard, most urgent first.
STATUS_ORDER = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.SCHEDULED,
                CampaignStatus.DRAFT, CampaignStatus.ENDED)


@dataclass(frozen=True)
class IntervalPlot:
    """Where an arm's lift and interval sit on a shared axis, in percent of the width."""

    low: float
    high: float
    point: float
    zero: float


@dataclass(frozen=True)
class CampaignCard:
    id: int
    name: str
    status: str
    imported: bool
    goal: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    budget_minor: int | None
    spent_minor: int
    currency: str
    exposures: int
    #: why the campaign is paused (a guardrail or the budget when the monitor paused it)
    pause_reason: str | None = None

    @property
    def has_results(self) -> bool:
        return self.exposures > 0 and not self.imported


def interval_plots(headline: CampaignHeadline) -> tuple[IntervalPlot | None, ...]:
    """One axis for all arms of a campaign, symmetric around zero so harm and lift compare."""
    bounds = [abs(value) for arm in headline.arms for value in (arm.ci_low, arm.ci_high)
              if value is not None]
    reach = max(bounds, default=0.0) * 1.1 or 0.01

    def x(value: float) -> float:
        return round(50 + 50 * value / reach, 2)

    return tuple(
        IntervalPlot(low=x(arm.ci_low), high=x(arm.ci_high), point=x(arm.lift), zero=50.0)
        if arm.ci_low is not None and arm.ci_high is not None and arm.lift is not None
        else None
        for arm in headline.arms)


def _exposures(session: Session, campaign_id: int | None = None) -> dict[int, int]:
    """Exposed customers per campaign (of one campaign if ``campaign_id`` is given)."""
    statement = select(Assignment.campaign_id, func.count()).group_by(
        col(Assignment.campaign_id))
    if campaign_id is not None:
        statement = statement.where(col(Assignment.campaign_id) == campaign_id)
    return {campaign: int(count) for campaign, count in session.exec(statement).all()}


def campaign_cards(session: Session) -> dict[str, list[CampaignCard]]:
    """Campaigns grouped by status (in :data:`STATUS_ORDER`)."""
    exposures = _exposures(session)
    rows = session.exec(
        select(Campaign, MigrationGoal.name)
        .join(MigrationGoal, col(MigrationGoal.id) == Campaign.goal_id, isouter=True)
        .order_by(col(Campaign.priority).desc(), col(Campaign.name))).all()
    groups: dict[str, list[CampaignCard]] = {status.value: [] for status in STATUS_ORDER}
    for campaign, goal_name in rows:
        assert campaign.id is not None
        groups.setdefault(campaign.status, []).append(CampaignCard(
            id=campaign.id, name=campaign.name, status=campaign.status,
            imported=campaign.origin == CampaignOrigin.IMPORTED.value, goal=goal_name,
            starts_at=campaign.starts_at, ends_at=campaign.ends_at,
            budget_minor=campaign.budget_minor, spent_minor=campaign.spent_minor,
            currency=campaign.currency, exposures=exposures.get(campaign.id, 0),
            pause_reason=campaign.pause_reason if campaign.status == "paused" else None))
    return groups


@router.get("/", name="ui.dashboard")
def dashboard(request: Request, session: SessionDep, user: SignedIn) -> Response:
    groups = campaign_cards(session)
    return render(request, "dashboard.html", {
        "title": "Dashboard", "groups": groups,
        "total": sum(len(cards) for cards in groups.values())})


@router.get("/dashboard/campaigns/{campaign_id}/headline", name="ui.dashboard.headline")
def headline_fragment(request: Request, session: SessionDep, user: SignedIn,
                      campaign_id: Annotated[int, Path(ge=1)]) -> Response:
    """One card's headline (an htmx fragment): adoption lift per arm, verdict, SRM."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise PageNotFound(f"There is no campaign {campaign_id}.")
    headline, problem = None, None
    if campaign.origin != CampaignOrigin.LIVE.value:
        problem = "Imported experiments have their results in their report."
    elif not _exposures(session, campaign_id):
        problem = "No customer exposed yet: results appear once offers are served."
    else:
        try:
            with read_view(session) as connection:
                headline = campaign_headline(connection, campaign_id)
        except (ValueError, ArithmeticError) as error:
            # One campaign's degenerate data must not take the dashboard down; say why.
            logger.warning("headline of campaign %s failed: %s", campaign_id, error)
            problem = f"Results could not be computed: {error}."
    return render(request, "dashboard_headline.html", {
        "campaign": campaign, "headline": headline, "problem": problem,
        "plots": interval_plots(headline) if headline else ()})
