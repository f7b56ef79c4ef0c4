"""The review's figures: can this campaign detect its goal, and whom does it collide with?

Power: each arm is compared with the control on the goal's adoption, a proportion, with
the same two-sided test the report uses (:func:`analytics.stats.minimum_detectable_effect`
and its inverse :func:`analytics.stats.required_sample_size`, at 5% and 80% power). Each
arm expects ``audience * weight / 100`` customers.

Conflicts: campaigns that run (or will) during the new one's schedule, whose audience
shares customers with it (counted in SQL when both rules can be read), whatever their stage.
When both stacking policies let one customer be offered both (the storefront's own rule,
:func:`campaigns.services.offers.offers_combine`), those customers can take both incentives;
an exclusive campaign is shown alone, so it stacks with none. In another channel, a richer
benefit for the same customers pulls them there instead — the price gap between channels
that channel partners notice. Benefits are compared by each incentive type's own
``compute_benefit`` on a typical order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from analytics.stats import minimum_detectable_effect, required_sample_size
from campaigns.errors import InvalidIncentiveConfig, InvalidRule, ValidationFailed
from campaigns.incentives import OrderContext, get_incentive_type
from campaigns.models import Arm, Channel, Incentive, MigrationGoal, Stage
from campaigns.rules import Rule
from campaigns.services.audience import LiveCampaign, live_campaigns, overlap_count
from campaigns.services.offers import offers_combine
from campaigns.wording import plural

ALPHA = 0.05
POWER = 0.8


# --------------------------------------------------------------------------- power


@dataclass(frozen=True)
class ArmPower:
    """What one arm against the control can detect with the expected customers."""

    arm: str
    weight: int
    n_control: int
    n_treatment: int
    #: smallest absolute lift in adoption detectable at ALPHA with POWER (None: none is)
    mde: float | None
    #: why no lift is detectable, when ``mde`` is None
    problem: str | None
    #: the audience at which this arm would detect the goal's target uplift
    needed_audience: int | None

    def detects(self, target_uplift: float) -> bool:
        return self.mde is not None and self.mde <= target_uplift


@dataclass(frozen=True)
class PowerPlan:
    audience: int
    baseline: float
    target_uplift: float
    arms: tuple[ArmPower, ...]

    @property
    def too_small(self) -> bool:
        """Some arm cannot detect the goal's target uplift with this audience."""
        return any(not arm.detects(self.target_uplift) for arm in self.arms)

    @property
    def needed_audience(self) -> int | None:
        """The audience every arm needs to detect the target uplift (None: unreachable)."""
        needs = [arm.needed_audience for arm in self.arms]
        return None if not needs or None in needs else max(n for n in needs if n is not None)


def _needed_audience(*, baseline: float, target_uplift: float, control_weight: int,
                     weight: int, alpha: float, power: float) -> int | None:
    ratio = weight / control_weight
    try:
        n_control = required_sample_size(baseline_rate=baseline, mde_abs=target_uplift,
                                         alpha=alpha, power=power, ratio=ratio)
    except ValueError:
        return None  # baseline + target above 100%: no sample reaches it
    n_treatment = math.ceil(ratio * n_control)
    # audience * weight // 100 >= n  <=>  audience >= ceil(100 n / weight)
    return max(-(-100 * n_control // control_weight), -(-100 * n_treatment // weight))


def power_plan(*, audience: int, baseline: float, target_uplift: float, control_weight: int,
               arms: Sequence[tuple[str, int]], alpha: float = ALPHA, power: float = POWER
               ) -> PowerPlan:
    """The minimum detectable effect of each arm against the control, and what would do."""
    results = []
    n_control = audience * control_weight // 100
    for name, weight in arms:
        n_treatment = audience * weight // 100
        mde: float | None = None
        problem: str | None = None
        try:
            mde = minimum_detectable_effect(baseline_rate=baseline, n_control=n_control,
                                            n_treatment=n_treatment, alpha=alpha, power=power)
        except ValueError as error:
            problem = str(error)
        results.append(ArmPower(
            arm=name, weight=weight, n_control=n_control, n_treatment=n_treatment, mde=mde,
            problem=problem,
            needed_audience=_needed_audience(baseline=baseline, target_uplift=target_uplift,
                                             control_weight=control_weight, weight=weight,
                                             alpha=alpha, power=power)))
    return PowerPlan(audience=audience, baseline=baseline, target_uplift=target_uplift,
                     arms=tuple(results))


# --------------------------------------------------------------------------- benefits


@dataclass(frozen=True)
class ArmOffer:
    """An arm's incentive and what it is worth to a customer on a typical order."""

    arm: str
    title: str
    description: str
    #: value to the customer of one redemption (minor units); None: cannot be told
    benefit_minor: int | None
    #: what one redemption is expected to cost the business (the type's own estimate)
    cost_minor: int


def benefit_estimate(type_key: str, config: Mapping[str, Any], *, order_minor: int | None,
                     channel_key: str | None) -> int | None:
    """What one redemption is worth to the customer on an order of ``order_minor``.

    The type's ``compute_benefit`` on that order, placed on the campaign's target channel;
    0 when such an order does not qualify (below a minimum order, another channel). A
    type whose redemption gives nothing at once (a lottery entry) is worth its expected
    value, which its ``unit_cost_estimate`` is. None when the benefit depends on an order
    amount that is not known.
    """
    incentive_type = get_incentive_type(type_key)
    parsed = incentive_type.validate(config)
    context = OrderContext(order_amount_minor=order_minor, channel_key=channel_key,
                           target_channel_key=channel_key)
    try:
        benefit = incentive_type.compute_benefit(parsed, context).benefit_minor
    except ValidationFailed:
        return None if order_minor is None else 0
    if benefit == 0:
        benefit = incentive_type.unit_cost_estimate(parsed, typical_order_minor=order_minor)
    return benefit


def arm_offer(arm: str, type_key: str, config: Mapping[str, Any], *, order_minor: int | None,
              channel_key: str | None, currency: str) -> ArmOffer:
    incentive_type = get_incentive_type(type_key)
    parsed = incentive_type.validate(config)
    offer = incentive_type.describe(parsed, currency=currency)
    return ArmOffer(arm=arm, title=offer.title, description=offer.description,
                    benefit_minor=benefit_estimate(type_key, config, order_minor=order_minor,
                                                   channel_key=channel_key),
                    cost_minor=incentive_type.unit_cost_estimate(
                        parsed, typical_order_minor=order_minor))


def richest(offers: Sequence[ArmOffer]) -> ArmOffer | None:
    known = [offer for offer in offers if offer.benefit_minor is not None]
    return max(known, key=lambda offer: offer.benefit_minor or 0, default=None)


# --------------------------------------------------------------------------- conflicts


@dataclass(frozen=True)
class CampaignConflict:
    campaign_id: int
    campaign: str
    status: str
    kind: str  # "stacking": offers that combine; "benefit": a richer offer in another channel
    #: customers in both audiences (None when one of the rules could not be read)
    overlap: int | None
    message: str


@dataclass(frozen=True)
class DraftAudience:
    """The campaign being made, as the conflict check needs it."""

    goal: MigrationGoal
    rules: Sequence[Rule] | None  # None when the typed rule does not parse
    starts_at: datetime | None
    ends_at: datetime | None
    offers: Sequence[ArmOffer]
    stacking: str


def _names(session: Session) -> tuple[dict[int, str], dict[int, str]]:
    channels = {channel.id: channel.name for channel in session.exec(select(Channel)).all()}
    stages = {stage.id: stage.name for stage in session.exec(select(Stage)).all()}
    return ({k: v for k, v in channels.items() if k is not None},
            {k: v for k, v in stages.items() if k is not None})


def _channel_keys(session: Session) -> dict[int, str]:
    return {channel.id: channel.key for channel in session.exec(select(Channel)).all()
            if channel.id is not None}


def _offers(session: Session, live: LiveCampaign, *, order_minor: int | None,
            channel_key: str | None) -> list[ArmOffer]:
    rows = session.exec(
        select(Arm, Incentive).join(Incentive, col(Incentive.id) == col(Arm.incentive_id))
        .where(Arm.campaign_id == live.campaign.id).order_by(col(Arm.position))).all()
    offers = []
    for arm, incentive in rows:
        try:
            offers.append(arm_offer(arm.name, incentive.type, incentive.config,
                                    order_minor=order_minor, channel_key=channel_key,
                                    currency=live.campaign.currency))
        except InvalidIncentiveConfig:
            continue  # a stored config that no longer validates offers nothing to compare
    return offers


def _overlap(session: Session, draft: DraftAudience, live: LiveCampaign) -> int | None:
    if draft.rules is None:
        return None
    try:
        theirs = live.rules(session)
    except InvalidRule:
        return None
    return overlap_count(session, draft.rules, theirs)


def _people(count: int | None) -> str:
    if count is None:
        return "customers (the overlap could not be counted)"
    return plural(count, "customer")


def find_conflicts(session: Session, draft: DraftAudience, *, order_minor: int | None,
                   money: Callable[[int | None], str]) -> list[CampaignConflict]:
    """Clashes with running, paused and scheduled campaigns during the draft's schedule.

    ``money`` formats minor units for the messages (the page's filter).
    """
    channels, stages = _names(session)
    keys = _channel_keys(session)
    ours = richest(draft.offers)
    conflicts = []
    for live in live_campaigns(session, starts_at=draft.starts_at, ends_at=draft.ends_at):
        overlap = _overlap(session, draft, live)
        if overlap == 0:
            continue  # no customer can see both
        campaign, goal = live.campaign, live.goal
        assert campaign.id is not None
        who = f"'{campaign.name}' ({campaign.status})"
        stage = f", on the {stages[goal.stage_id]} stage," if goal.stage_id in stages else ""
        if offers_combine(draft.stacking, campaign.stacking):
            conflicts.append(CampaignConflict(
                campaign_id=campaign.id, campaign=campaign.name, status=campaign.status,
                kind="stacking", overlap=overlap,
                message=f"{who}{stage} shares {_people(overlap)} with this audience, and both "
                "campaigns are stackable: those customers can be offered both incentives and "
                "redeem both."))
        if goal.target_channel_id == draft.goal.target_channel_id:
            continue
        their_channel = keys.get(goal.target_channel_id)
        theirs = richest(_offers(session, live, order_minor=order_minor,
                                 channel_key=their_channel))
        if theirs is None or theirs.benefit_minor is None or (
                ours is not None and ours.benefit_minor is not None
                and theirs.benefit_minor <= ours.benefit_minor):
            continue
        mine = (f"this campaign's richest arm ('{ours.arm}', {ours.title}) is worth "
                f"{money(ours.benefit_minor)}" if ours and ours.benefit_minor is not None
                else "this campaign's offers cannot be valued on a typical order")
        conflicts.append(CampaignConflict(
            campaign_id=campaign.id, campaign=campaign.name, status=campaign.status,
            kind="benefit", overlap=overlap,
            message=f"{who} offers {_people(overlap)} of this audience a richer benefit on "
            f"{channels.get(goal.target_channel_id, 'another channel')}: its arm "
            f"'{theirs.arm}' ({theirs.title}) is worth {money(theirs.benefit_minor)} on a "
            f"typical order, while {mine} on "
            f"{channels.get(draft.goal.target_channel_id, 'this channel')}. Customers "
            "will follow the richer offer."))
    return conflicts
