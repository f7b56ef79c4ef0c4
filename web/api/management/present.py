"""Turning table rows into the API's ``XPublic`` shapes, loading related rows in batches."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from campaigns.errors import InvalidIncentiveConfig
from campaigns.incentives import Offer, get_incentive_type
from campaigns.models import (
    Arm,
    Campaign,
    Channel,
    ChannelCost,
    Incentive,
    MigrationGoal,
    Stage,
)
from campaigns.money import DEFAULT_CURRENCY
from campaigns.services.goals import source_channel_keys
from web.api.schemas import (
    ArmPublic,
    CampaignPublic,
    ChannelCostPublic,
    GoalPublic,
    IncentiveBrief,
    IncentivePublic,
    OfferSummary,
)

#: The column's scale (Numeric(6, 4)): the same text whether the value was read back or not.
UPLIFT_STEP = Decimal("0.0001")


def _offer(incentive: Incentive, *, currency: str = DEFAULT_CURRENCY
           ) -> tuple[Offer | None, int | None]:
    """What the incentive offers and costs; (None, None) if its config no longer validates.

    An incentive read on its own has no campaign: its amounts read in the default currency.
    """
    try:
        incentive_type = get_incentive_type(incentive.type)
        config = incentive_type.validate(incentive.config)
    except InvalidIncentiveConfig:
        return None, None
    return (incentive_type.describe(config, currency=currency),
            incentive_type.unit_cost_estimate(config))


def incentive_public(incentive: Incentive) -> IncentivePublic:
    assert incentive.id is not None
    offer, unit_cost = _offer(incentive)
    try:
        label = get_incentive_type(incentive.type).label
    except InvalidIncentiveConfig:
        label = incentive.type
    summary = None if offer is None else OfferSummary(
        title=offer.title, description=offer.description, terms=offer.terms,
        needs_code=offer.needs_code)
    return IncentivePublic(id=incentive.id, name=incentive.name, type=incentive.type,
                           type_label=label, config=incentive.config, summary=summary,
                           unit_cost_estimate_minor=unit_cost, created_at=incentive.created_at)


def _incentive_brief(incentive: Incentive, *, currency: str) -> IncentiveBrief:
    assert incentive.id is not None
    offer, _ = _offer(incentive, currency=currency)
    return IncentiveBrief(
        id=incentive.id, name=incentive.name, type=incentive.type,
        title=offer.title if offer else None, description=offer.description if offer else None,
        terms=offer.terms if offer else None, needs_code=offer.needs_code if offer else False)


def arm_public(arm: Arm, incentive: Incentive | None, *, currency: str = DEFAULT_CURRENCY
               ) -> ArmPublic:
    """The arm with its incentive's offer, amounts in its campaign's ``currency``."""
    assert arm.id is not None
    return ArmPublic(id=arm.id, name=arm.name, weight=arm.weight, is_control=arm.is_control,
                     position=arm.position, incentive_id=arm.incentive_id,
                     incentive=_incentive_brief(incentive, currency=currency)
                     if incentive else None)


def campaigns_public(session: Session, campaigns: Sequence[Campaign]) -> list[CampaignPublic]:
    """The campaigns with their arms and incentives: three queries however many campaigns."""
    ids = [campaign.id for campaign in campaigns]
    arms = session.exec(select(Arm).where(col(Arm.campaign_id).in_(ids))
                        .order_by(col(Arm.position), col(Arm.id))).all() if ids else []
    incentive_ids = {arm.incentive_id for arm in arms if arm.incentive_id is not None}
    incentives = {incentive.id: incentive for incentive in session.exec(
        select(Incentive).where(col(Incentive.id).in_(incentive_ids)))} if incentive_ids else {}
    currencies = {campaign.id: campaign.currency for campaign in campaigns}
    arms_by_campaign: dict[int, list[ArmPublic]] = {}
    for arm in arms:
        incentive = incentives.get(arm.incentive_id) if arm.incentive_id is not None else None
        arms_by_campaign.setdefault(arm.campaign_id, []).append(
            arm_public(arm, incentive, currency=currencies[arm.campaign_id]))
    return [_campaign_public(campaign, arms_by_campaign.get(campaign.id or 0, []))
            for campaign in campaigns]


def campaign_public(session: Session, campaign: Campaign) -> CampaignPublic:
    return campaigns_public(session, [campaign])[0]


def _campaign_public(campaign: Campaign, arms: list[ArmPublic]) -> CampaignPublic:
    data: dict[str, Any] = campaign.model_dump()
    remaining = None if campaign.budget_minor is None else \
        campaign.budget_minor - campaign.spent_minor
    return CampaignPublic.model_validate({**data, "remaining_budget_minor": remaining,
                                          "arms": arms})


def goals_public(session: Session, goals: Sequence[MigrationGoal]) -> list[GoalPublic]:
    """The goals with stage and channel keys: three queries however many goals."""
    ids = [goal.id for goal in goals if goal.id is not None]
    sources = source_channel_keys(session, ids)
    stage_keys = dict(session.exec(select(Stage.id, Stage.key)).all())
    channel_keys = dict(session.exec(
        select(Channel.id, Channel.key).where(
            col(Channel.id).in_({goal.target_channel_id for goal in goals}))).all())
    return [GoalPublic(
        id=goal.id, name=goal.name, description=goal.description,
        stage=stage_keys[goal.stage_id], source_channels=sources.get(goal.id or 0, []),
        target_channel=channel_keys[goal.target_channel_id], metric=goal.metric,
        window_days=goal.window_days,
        target_uplift=Decimal(goal.target_uplift).quantize(UPLIFT_STEP),
        eligibility_rule=goal.eligibility_rule, created_at=goal.created_at,
    ) for goal in goals]


def goal_public(session: Session, goal: MigrationGoal) -> GoalPublic:
    return goals_public(session, [goal])[0]


def channel_cost_public(cost: ChannelCost, channel_key: str, stage_key: str
                        ) -> ChannelCostPublic:
    return ChannelCostPublic(channel=channel_key, stage=stage_key, cost_minor=cost.cost_minor,
                             currency=cost.currency, updated_at=cost.updated_at)
