"""What may a storefront offer this customer, here, now?

For one customer the running campaigns (from the cached :class:`Snapshot`) are filtered
by stage, schedule and eligibility rules, ordered by priority and resolved by stacking
policy: the first exclusive campaign claims the customer alone (its control arm included,
so the holdout really sees nothing), stackable campaigns above it combine. The customer is
assigned (deterministically) and exposed once per campaign; the control arm is exposed
but gets no offer. Treatment arms whose per-customer limit is used up, or whose campaign
budget cannot pay one more benefit, are left out. Coupon arms issue one code per customer
on first exposure, from the pre-generated batch when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from campaigns.assignment import choose_arm
from campaigns.db import insert_ignore
from campaigns.incentives.codes import generate_code
from campaigns.models import Assignment, Campaign, CouponCode, Customer
from campaigns.services.campaigns import can_pay_one_more
from campaigns.services.catalog import ArmConfig, CampaignConfig, Snapshot, outside_schedule
from campaigns.services.customers import (
    CustomerAttributes,
    customer_attributes,
    get_or_create_customer,
)


@dataclass(frozen=True)
class OfferView:
    campaign_id: int
    campaign_name: str
    arm: str
    incentive_type: str
    title: str
    description: str
    terms: str
    benefit: dict[str, Any]
    code: str | None
    expires_at: datetime | None
    redemptions_left: int | None


def offers_combine(first: str, second: str) -> bool:
    """Whether one customer may be offered two campaigns at once, given their stacking policies.

    Stackable campaigns combine; an exclusive one is shown alone (the higher-priority of the
    two hides the other), so it combines with none. The wizard's conflict check asks the same.
    """
    return first == second == "stackable"


def choose_campaigns(snapshot: Snapshot, *, attributes: dict[str, object],
                     stage_key: str | None, now: datetime) -> list[CampaignConfig]:
    """The campaigns (highest priority first) the customer takes part in for this request.

    Running campaigns of the stage whose rules admit the customer, stacking resolved: every
    stackable one, down to the first exclusive one if no stackable one came before it (an
    exclusive campaign is shown alone). Rules are evaluated only where the answer matters:
    once an offer is chosen, exclusive campaigns are passed over unevaluated, and the first
    exclusive one chosen ends the search (the busiest route evaluated every campaign's
    rules of the stage before).
    """
    chosen: list[CampaignConfig] = []
    for campaign in snapshot.campaigns:
        if (stage_key is not None and campaign.stage_key != stage_key) \
                or outside_schedule(campaign.starts_at, campaign.ends_at, now) is not None:
            continue
        exclusive = campaign.stacking == "exclusive"
        if chosen and not offers_combine(chosen[-1].stacking, campaign.stacking):
            continue  # a higher-priority stackable offer is already shown
        if not campaign.eligible(attributes):
            continue
        chosen.append(campaign)
        if exclusive:
            break
    return chosen


@dataclass(frozen=True)
class IssuedCode:
    """The customer's own coupon code in a campaign, as far as an offer needs it."""

    code: str
    expires_at: datetime | None
    uses: int
    max_uses: int | None


@dataclass(frozen=True)
class Exposure:
    """A customer's standing in one campaign, read in the same query as the exposure."""

    arm_id: int
    redemption_count: int
    spent_minor: int
    code: IssuedCode | None
    #: the campaign row's schedule, read with its spend (the snapshot may be a second old)
    starts_at: datetime | None = None
    ends_at: datetime | None = None


def _assignment_rows(campaigns: list[CampaignConfig], *, external_id: str
                     ) -> list[tuple[int, int, int]]:
    """(campaign id, arm id, allocation period) of each campaign that assigns customers."""
    rows = []
    for campaign in campaigns:
        if not campaign.allocation:
            continue
        arm = choose_arm(salt=campaign.salt, customer_id=external_id,
                         arms=list(campaign.allocation), period=campaign.period)
        rows.append((campaign.id, arm.id, campaign.period))
    return rows


def expose(session: Session, *, campaigns: list[CampaignConfig], customer: Customer,
           channel_id: int | None, now: datetime) -> dict[int, Exposure]:
    """Assign and record first exposure once; returns the customer's standing per campaign.

    Two statements whatever the number of campaigns: one INSERT ... ON CONFLICT DO NOTHING
    of every assignment (the unique (campaign, customer) key makes the first exposure win;
    a concurrent request for the same customer waits for it and keeps its arm and time),
    then one SELECT of the assignments with the campaigns' spend and any issued code.
    The storefront route on PostgreSQL does both in one statement (see
    :mod:`campaigns.services.offers_postgresql`).
    """
    assert customer.id is not None
    rows = _assignment_rows(campaigns, external_id=customer.external_id)
    insert_ignore(session, Assignment, [
        {"campaign_id": campaign_id, "customer_id": customer.id, "arm_id": arm_id,
         "allocation_period": period, "first_exposed_at": now,
         "exposure_channel_id": channel_id, "redemption_count": 0}
        for campaign_id, arm_id, period in rows], conflict_columns=["campaign_id", "customer_id"])
    standing = session.execute(
        sa_select(col(Assignment.campaign_id), col(Assignment.arm_id),
                  col(Assignment.redemption_count), col(Campaign.spent_minor),
                  col(CouponCode.code), col(CouponCode.expires_at), col(CouponCode.uses),
                  col(CouponCode.max_uses), col(Campaign.starts_at), col(Campaign.ends_at))
        .join(Campaign, col(Campaign.id) == Assignment.campaign_id)
        .outerjoin(CouponCode, and_(col(CouponCode.campaign_id) == Assignment.campaign_id,
                                    col(CouponCode.customer_id) == Assignment.customer_id))
        .where(col(Assignment.customer_id) == customer.id,
               col(Assignment.campaign_id).in_([campaign.id for campaign in campaigns]))
    ).all()
    return {campaign_id: Exposure(arm_id, count, spent,
                                  IssuedCode(code, expires, uses, max_uses) if code else None,
                                  starts_at, ends_at)
            for campaign_id, arm_id, count, spent, code, expires, uses, max_uses, starts_at,
            ends_at in standing}


def code_expiry(arm: ArmConfig, campaign: CampaignConfig, now: datetime) -> datetime | None:
    days = getattr(arm.config, "expires_days", None)
    if days:
        expiry = now + timedelta(days=days)
        return min(expiry, campaign.ends_at) if campaign.ends_at else expiry
    return campaign.ends_at


def issue_code(session: Session, *, campaign: CampaignConfig, arm: ArmConfig,
               customer_id: int, now: datetime) -> IssuedCode:
    """Give the customer one unique code: the next unissued one of the batch, or a new one.

    Claiming is one conditional UPDATE (``SKIP LOCKED`` on PostgreSQL, so concurrent
    claims take different codes); the unique (campaign, customer) index on issued codes
    settles a race between two first exposures of the same customer.
    """
    assert arm.incentive_id is not None
    expires_at = code_expiry(arm, campaign, now)
    unissued = (select(CouponCode.id)
                .where(CouponCode.campaign_id == campaign.id,
                       CouponCode.incentive_id == arm.incentive_id,
                       col(CouponCode.customer_id).is_(None))
                .order_by(col(CouponCode.id)).limit(1).with_for_update(skip_locked=True))
    claim = (update(CouponCode)
             .where(col(CouponCode.id) == unissued.scalar_subquery())
             .values(customer_id=customer_id, issued_at=now, expires_at=expires_at)
             .returning(col(CouponCode.id)))
    issued = (select(CouponCode.code, CouponCode.expires_at, CouponCode.uses,
                     CouponCode.max_uses)
              .where(CouponCode.campaign_id == campaign.id,
                     CouponCode.customer_id == customer_id))
    for _attempt in range(5):
        try:
            with session.begin_nested():
                if session.execute(claim).scalar_one_or_none() is None:
                    session.add(CouponCode(
                        code=fresh_code(arm), incentive_id=arm.incentive_id,
                        campaign_id=campaign.id, customer_id=customer_id, max_uses=1,
                        issued_at=now, expires_at=expires_at))
                    session.flush()
        except IntegrityError:
            # Either a concurrent request issued this customer's code first (read it), or
            # the random code collided with an existing one (try another).
            existing = session.exec(issued).first()
            if existing is not None:
                return IssuedCode(*existing)
            continue
        return IssuedCode(*session.exec(issued).one())
    raise RuntimeError("could not issue a unique coupon code in 5 attempts")


def fresh_code(arm: ArmConfig) -> str:
    # At least 40 random bits: a collision with an existing code is vanishingly rare, and the
    # unique index would refuse it (the caller's savepoint then retries).
    config = arm.config
    return generate_code(prefix=config.prefix or "", length=config.length,
                         charset=config.charset)


def _shared_code(arm: ArmConfig) -> str | None:
    return getattr(arm.config, "code", None) if getattr(arm.config, "mode", None) == "shared" \
        else None


def customer_offers(
    session: Session, *, snapshot: Snapshot, external_id: str,
    attributes: CustomerAttributes, channel_key: str | None, stage_key: str | None,
    now: datetime,
) -> list[OfferView]:
    """Resolve, expose and describe the customer's offers (see the module docstring).

    An unknown customer is created with ``attributes``. This is the ORM form, for any
    database; the storefront route on PostgreSQL runs the same steps as a few statements
    on an async connection (:mod:`campaigns.services.offers_postgresql`).
    """
    channel_id = snapshot.channel_ids.get(channel_key) if channel_key else None
    customer = get_or_create_customer(session, external_id=external_id, attributes=attributes)
    assert customer.id is not None
    chosen = choose_campaigns(snapshot, attributes=customer_attributes(customer),
                              stage_key=stage_key, now=now)
    if not chosen:
        return []
    exposures = expose(session, campaigns=chosen, customer=customer, channel_id=channel_id,
                       now=now)
    shown = offers_to_show(chosen, exposures, now=now)
    issued = {offer.campaign.id: issue_code(session, campaign=offer.campaign, arm=offer.arm,
                                            customer_id=customer.id, now=now)
              for offer in shown if offer.code_to_issue}
    return describe_offers(shown, issued, now=now)


@dataclass(frozen=True)
class ToShow:
    """An offer the customer may see, before its code is known."""

    campaign: CampaignConfig
    arm: ArmConfig
    exposure: Exposure
    redemptions_left: int | None

    @property
    def code_to_issue(self) -> bool:
        """Whether the offer needs a code of the customer's own that is not issued yet."""
        return needs_own_code(self.arm) and self.exposure.code is None


def offers_to_show(chosen: list[CampaignConfig], exposures: dict[int, Exposure], *,
                   now: datetime) -> list[ToShow]:
    return [ToShow(campaign, *standing) for campaign in chosen
            if (standing := offered_arm(campaign, exposures.get(campaign.id), now=now))
            is not None]


def describe_offers(shown: list[ToShow], issued: dict[int, IssuedCode], *, now: datetime
                    ) -> list[OfferView]:
    """The offers as the storefront shows them; ``issued``: codes just issued, by campaign."""
    views = []
    for offer in shown:
        code = (offer.exposure.code or issued[offer.campaign.id]) \
            if needs_own_code(offer.arm) else None
        view = describe_offer(offer.campaign, offer.arm, offer.redemptions_left, code, now=now)
        if view is not None:
            views.append(view)
    return views


def offered_arm(campaign: CampaignConfig, exposure: Exposure | None, *, now: datetime
                ) -> tuple[ArmConfig, Exposure, int | None] | None:
    """The treatment arm the customer may be offered in ``campaign``, its exposure and the
    redemptions left, or None (not exposed, control, outside the schedule on the campaign
    row, limit used up, budget cannot pay one more)."""
    arm = campaign.arm(exposure.arm_id) if exposure else None
    if exposure is None or arm is None or arm.is_control \
            or outside_schedule(exposure.starts_at, exposure.ends_at, now) is not None:
        return None
    left = None
    if campaign.per_customer_limit is not None:
        left = campaign.per_customer_limit - exposure.redemption_count
        if left <= 0:
            return None
    if not can_pay_one_more(budget_minor=campaign.budget_minor,
                            spent_minor=exposure.spent_minor, unit_cost_minor=arm.unit_cost_minor):
        return None
    return arm, exposure, left


def needs_own_code(arm: ArmConfig) -> bool:
    """Whether the arm's offer carries a code of the customer's own (not a shared code)."""
    return arm.needs_code and _shared_code(arm) is None


def describe_offer(campaign: CampaignConfig, arm: ArmConfig, left: int | None,
                   code: IssuedCode | None, *, now: datetime) -> OfferView | None:
    """The offer as the storefront shows it; None when the customer's code is spent or
    expired. ``code`` is the customer's own code when :func:`needs_own_code`."""
    assert arm.offer is not None and arm.incentive_type is not None
    code_value: str | None = _shared_code(arm) if arm.needs_code else None
    expires_at = campaign.ends_at
    if code is not None:
        code_value, expires_at = code.code, code.expires_at or campaign.ends_at
        if code.expires_at is not None and code.expires_at <= now:
            return None
        if code.max_uses is not None and code.uses >= code.max_uses:
            return None
    return OfferView(
        campaign_id=campaign.id, campaign_name=campaign.name, arm=arm.name,
        incentive_type=arm.incentive_type, title=arm.offer.title,
        description=arm.offer.description, terms=arm.offer.terms,
        benefit=dict(arm.offer.benefit_summary), code=code_value, expires_at=expires_at,
        redemptions_left=left,
    )
