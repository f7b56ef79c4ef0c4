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

from sqlalchemy import BigInteger, and_, any_, bindparam, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from campaigns.assignment import choose_arm
from campaigns.db import insert_ignore
from campaigns.incentives.codes import generate_code
from campaigns.models import Assignment, Campaign, CouponCode, Customer
from campaigns.services.catalog import ArmConfig, CampaignConfig, Snapshot
from campaigns.services.customers import customer_attributes
from campaigns.types import UTCDateTime


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


def _candidates(snapshot: Snapshot, *, customer: Customer, stage_key: str | None,
                now: datetime) -> list[CampaignConfig]:
    attributes = customer_attributes(customer)
    return [
        campaign for campaign in snapshot.campaigns
        if (stage_key is None or campaign.stage_key == stage_key)
        and (campaign.ends_at is None or campaign.ends_at > now)
        and campaign.eligible(attributes)
    ]


def resolve_stacking(candidates: list[CampaignConfig]) -> list[CampaignConfig]:
    """Campaigns (highest priority first) the customer takes part in for this request."""
    chosen: list[CampaignConfig] = []
    for campaign in candidates:
        if campaign.stacking == "exclusive":
            if not chosen:
                chosen.append(campaign)
                break
            continue  # a higher-priority stackable offer is already shown
        chosen.append(campaign)
    return chosen


@dataclass(frozen=True)
class Exposure:
    """A customer's standing in one campaign, read in the same query as the exposure."""

    assignment: Assignment
    spent_minor: int
    code: CouponCode | None


def expose(session: Session, *, campaigns: list[CampaignConfig], customer: Customer,
           channel_id: int | None, now: datetime) -> dict[int, Exposure]:
    """Assign and record first exposure once; returns the customer's standing per campaign.

    Two round trips whatever the number of campaigns: one INSERT ... ON CONFLICT DO NOTHING
    of every assignment (the unique (campaign, customer) key makes the first exposure win;
    a concurrent request for the same customer waits for it and keeps its arm and time),
    then one SELECT of the assignments with the campaigns' spend and any issued code.
    """
    assert customer.id is not None
    rows = []
    for campaign in campaigns:
        if not campaign.allocation:
            continue
        arm = choose_arm(salt=campaign.salt, customer_id=customer.external_id,
                         arms=list(campaign.allocation), period=campaign.period)
        rows.append({
            "campaign_id": campaign.id, "customer_id": customer.id, "arm_id": arm.id,
            "allocation_period": campaign.period, "first_exposed_at": now,
            "exposure_channel_id": channel_id, "redemption_count": 0,
        })
    ids = [campaign.id for campaign in campaigns]
    if session.get_bind().dialect.name == "postgresql":
        _insert_assignments_postgresql(session, rows)
        in_campaigns = col(Assignment.campaign_id) == any_(
            bindparam("campaign_ids", value=ids, type_=ARRAY(BigInteger)))
    else:
        insert_ignore(session, Assignment, rows, conflict_columns=["campaign_id", "customer_id"])
        in_campaigns = col(Assignment.campaign_id).in_(ids)
    standing = session.exec(
        select(Assignment, Campaign.spent_minor, CouponCode)
        .join(Campaign, col(Campaign.id) == Assignment.campaign_id)
        .outerjoin(CouponCode, and_(col(CouponCode.campaign_id) == Assignment.campaign_id,
                                    col(CouponCode.customer_id) == Assignment.customer_id))
        .where(Assignment.customer_id == customer.id, in_campaigns)
    ).all()
    return {assignment.campaign_id: Exposure(assignment, spent, code)
            for assignment, spent, code in standing}


_INSERT_ASSIGNMENTS = text(
    "INSERT INTO assignment (campaign_id, customer_id, arm_id, allocation_period, "
    "first_exposed_at, exposure_channel_id, redemption_count) "
    "SELECT t.campaign_id, :customer_id, t.arm_id, t.period, :now, :channel_id, 0 "
    "FROM unnest(CAST(:campaign_ids AS bigint[]), CAST(:arm_ids AS bigint[]), "
    "CAST(:periods AS integer[])) AS t(campaign_id, arm_id, period) "
    "ON CONFLICT (campaign_id, customer_id) DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))


def _insert_assignments_postgresql(session: Session, rows: list[dict[str, Any]]) -> None:
    """The same INSERT ... ON CONFLICT DO NOTHING as elsewhere, as one statement whose text
    does not depend on the number of campaigns (arrays + unnest), so PostgreSQL keeps it
    prepared and SQLAlchemy compiles it once."""
    if not rows:
        return
    session.execute(_INSERT_ASSIGNMENTS, {
        "customer_id": rows[0]["customer_id"], "now": rows[0]["first_exposed_at"],
        "channel_id": rows[0]["exposure_channel_id"],
        "campaign_ids": [row["campaign_id"] for row in rows],
        "arm_ids": [row["arm_id"] for row in rows],
        "periods": [row["allocation_period"] for row in rows]})


def _code_expiry(arm: ArmConfig, campaign: CampaignConfig, now: datetime) -> datetime | None:
    days = getattr(arm.config, "expires_days", None)
    if days:
        expiry = now + timedelta(days=days)
        return min(expiry, campaign.ends_at) if campaign.ends_at else expiry
    return campaign.ends_at


def issue_code(session: Session, *, campaign: CampaignConfig, arm: ArmConfig,
               customer: Customer, now: datetime) -> CouponCode:
    """Give the customer one unique code: the next unissued one of the batch, or a new one.

    Claiming is one conditional UPDATE (``SKIP LOCKED`` on PostgreSQL, so concurrent
    claims take different codes); the unique (campaign, customer) index on issued codes
    settles a race between two first exposures of the same customer.
    """
    assert customer.id is not None and arm.incentive_id is not None
    expires_at = _code_expiry(arm, campaign, now)
    unissued = (select(CouponCode.id)
                .where(CouponCode.campaign_id == campaign.id,
                       CouponCode.incentive_id == arm.incentive_id,
                       col(CouponCode.customer_id).is_(None))
                .order_by(col(CouponCode.id)).limit(1).with_for_update(skip_locked=True))
    claim = (update(CouponCode)
             .where(col(CouponCode.id) == unissued.scalar_subquery())
             .values(customer_id=customer.id, issued_at=now, expires_at=expires_at)
             .returning(col(CouponCode.id)))
    issued = (select(CouponCode).where(CouponCode.campaign_id == campaign.id,
                                       CouponCode.customer_id == customer.id)
              .execution_options(populate_existing=True))
    for _attempt in range(5):
        try:
            with session.begin_nested():
                if session.execute(claim).scalar_one_or_none() is None:
                    session.add(CouponCode(
                        code=_fresh_code(arm), incentive_id=arm.incentive_id,
                        campaign_id=campaign.id, customer_id=customer.id, max_uses=1,
                        issued_at=now, expires_at=expires_at))
                    session.flush()
        except IntegrityError:
            # Either a concurrent request issued this customer's code first (read it), or
            # the random code collided with an existing one (try another).
            existing = session.exec(issued).first()
            if existing is not None:
                return existing
            continue
        return session.exec(issued).one()
    raise RuntimeError("could not issue a unique coupon code in 5 attempts")


def _fresh_code(arm: ArmConfig) -> str:
    # At least 40 random bits: a collision with an existing code is vanishingly rare, and the
    # unique index would refuse it (the caller's savepoint then retries).
    config = arm.config
    return generate_code(prefix=config.prefix or "", length=config.length,
                         charset=config.charset)


def _shared_code(arm: ArmConfig) -> str | None:
    return getattr(arm.config, "code", None) if getattr(arm.config, "mode", None) == "shared" \
        else None


def customer_offers(
    session: Session, *, snapshot: Snapshot, customer: Customer, channel_key: str | None,
    stage_key: str | None, now: datetime,
) -> list[OfferView]:
    """Resolve, expose and describe the customer's offers (see the module docstring)."""
    chosen = resolve_stacking(_candidates(snapshot, customer=customer, stage_key=stage_key,
                                          now=now))
    if not chosen:
        return []
    channel_id = snapshot.channel_ids.get(channel_key) if channel_key else None
    exposures = expose(session, campaigns=chosen, customer=customer, channel_id=channel_id,
                       now=now)
    offers = []
    for campaign in chosen:
        exposure = exposures.get(campaign.id)
        arm = campaign.arm(exposure.assignment.arm_id) if exposure else None
        if exposure is None or arm is None or arm.is_control:
            continue
        left = None
        if campaign.per_customer_limit is not None:
            left = campaign.per_customer_limit - exposure.assignment.redemption_count
            if left <= 0:
                continue
        if campaign.budget_minor is not None:
            remaining = campaign.budget_minor - exposure.spent_minor
            if remaining <= 0 or remaining < arm.unit_cost_minor:
                continue
        assert arm.offer is not None and arm.incentive_type is not None
        code_value: str | None = None
        expires_at = campaign.ends_at
        if arm.needs_code:
            code_value = _shared_code(arm)
            if code_value is None:
                code = exposure.code
                if code is None:
                    code = issue_code(session, campaign=campaign, arm=arm, customer=customer,
                                      now=now)
                code_value, expires_at = code.code, code.expires_at or campaign.ends_at
                if code.expires_at is not None and code.expires_at <= now:
                    continue
                if code.max_uses is not None and code.uses >= code.max_uses:
                    continue
        offers.append(OfferView(
            campaign_id=campaign.id, campaign_name=campaign.name, arm=arm.name,
            incentive_type=arm.incentive_type, title=arm.offer.title,
            description=arm.offer.description, terms=arm.offer.terms,
            benefit=dict(arm.offer.benefit_summary), code=code_value, expires_at=expires_at,
            redemptions_left=left,
        ))
    return offers
