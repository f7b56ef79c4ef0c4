"""Redeeming an offer, exactly once, and rolling it back, exactly once.

A redemption is one transaction:

1. the redemption row, with its response, is inserted first with
   ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING id``: a concurrent
   retry with the same key waits for this one and then finds its stored response;
2. a single-use code is charged with ``UPDATE ... SET uses = uses + 1 WHERE uses < max_uses``;
3. the customer's limit with ``UPDATE assignment ... WHERE redemption_count < limit``;
4. gift stock with ``UPDATE ... WHERE used < total``;
5. the campaign budget, last (it is the row every redemption of the campaign locks, so it
   is held for the shortest time), with ``UPDATE ... WHERE spent + cost <= budget``.

Each UPDATE either changes exactly one row or the whole transaction is rolled back with a
typed error. The CHECK constraints on the same columns back this up for any other writer.
Checking in Python and then writing (the race shipped by many promotion engines) is never
done here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field, model_validator
from sqlalchemy import and_, case, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from campaigns.db import insert_ignore
from campaigns.errors import (
    BudgetExhausted,
    CodeAlreadyRedeemed,
    Conflict,
    CustomerLimitReached,
    FieldError,
    NotFound,
    ValidationFailed,
)
from campaigns.incentives import OrderContext, get_incentive_type
from campaigns.incentives.codes import normalize_code
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    CouponCode,
    Customer,
    IncentiveStock,
    LotteryEntry,
    PointsLedger,
    Redemption,
    RedemptionStatus,
    TrialGrant,
)
from campaigns.schemas import InputModel, Key, MinorUnits
from campaigns.services.catalog import ArmConfig, CampaignConfig, Snapshot
from campaigns.services.customers import ExternalId, customer_by_external_id


class RedemptionRequest(InputModel):
    customer_id: ExternalId
    channel: Key
    campaign_id: int | None = None
    code: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    order_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    order_amount_minor: MinorUnits | None = None

    @model_validator(mode="after")
    def _campaign_or_code(self) -> RedemptionRequest:
        if self.campaign_id is None and self.code is None:
            raise ValueError("give the offer's campaign_id, or the coupon code")
        return self


@dataclass(frozen=True)
class RedemptionOutcome:
    body: dict[str, Any]
    replayed: bool


class IdempotencyKeyReused(ValidationFailed):
    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was already used with a different request body; "
            "use a new key for a new redemption",
            [FieldError(("header", "Idempotency-Key"), "already used for another request",
                        "idempotency_mismatch")],
            code="idempotency_key_reused",
        )


def request_fingerprint(request: RedemptionRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stored(session: Session, key: str) -> Redemption | None:
    return session.exec(select(Redemption).where(Redemption.idempotency_key == key)
                        .execution_options(populate_existing=True)).first()


def answer(redemption_id: int, stored: dict[str, Any]) -> dict[str, Any]:
    """The response body, keys sorted at every level: the first answer and every replay are
    byte-identical whatever order the database keeps JSON keys in."""
    body = {**stored, "redemption_id": redemption_id}
    return json.loads(json.dumps(body, sort_keys=True))


def _replay(existing: Redemption, fingerprint: str) -> RedemptionOutcome:
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused()
    assert existing.id is not None
    return RedemptionOutcome(body=answer(existing.id, existing.response), replayed=True)


def _not_redeemable(message: str, loc: tuple[str, ...], kind: str) -> Conflict:
    return Conflict(message, [FieldError(loc, message, kind)], code=kind)


def _find_code(session: Session, request: RedemptionRequest) -> CouponCode | None:
    if request.code is None:
        return None
    code = session.exec(select(CouponCode).where(
        CouponCode.code == normalize_code(request.code))).first()
    if code is None:
        raise NotFound("this code is unknown", [FieldError(("code",), "unknown code",
                                                             "unknown_code")],
                       code="unknown_code")
    return code


def _campaign_for(snapshot: Snapshot, request: RedemptionRequest,
                  code: CouponCode | None) -> CampaignConfig:
    campaign_id = request.campaign_id
    if campaign_id is None and code is not None:
        campaign_id = code.campaign_id or next(
            (c.id for c in snapshot.campaigns
             if any(a.incentive_id == code.incentive_id for a in c.arms)), None)
    campaign = snapshot.campaign(campaign_id) if campaign_id is not None else None
    if campaign is None:
        raise _not_redeemable("the campaign is not running", ("campaign_id",),
                              "campaign_not_running")
    return campaign


def _check_code(code: CouponCode | None, *, arm: ArmConfig, campaign: CampaignConfig,
                customer: Customer, now: datetime) -> None:
    if not arm.needs_code:
        if code is not None:
            raise ValidationFailed("this offer is redeemed without a code",
                                   [FieldError(("code",), "this offer takes no code")])
        return
    if code is None:
        raise ValidationFailed("this offer needs its coupon code",
                               [FieldError(("code",), "this field is required", "missing")])
    if code.incentive_id != arm.incentive_id or (
            code.campaign_id is not None and code.campaign_id != campaign.id):
        raise _not_redeemable("this code belongs to another offer", ("code",), "wrong_offer")
    if code.customer_id is not None and code.customer_id != customer.id:
        raise _not_redeemable("this code was issued to another customer", ("code",),
                              "code_not_yours")
    if code.expires_at is not None and code.expires_at <= now:
        raise _not_redeemable("this code has expired", ("code",), "code_expired")


def _charge(session: Session, *, campaign: CampaignConfig, assignment: Assignment,
            arm: ArmConfig, code: CouponCode | None, cost_minor: int) -> None:
    """The conditional updates; each must touch exactly one row (see module docstring)."""
    if code is not None:
        used = session.execute(
            update(CouponCode).where(col(CouponCode.id) == code.id)
            .where((col(CouponCode.max_uses).is_(None))
                   | (col(CouponCode.uses) < col(CouponCode.max_uses)))
            .values(uses=CouponCode.uses + 1))
        if used.rowcount != 1:  # type: ignore[attr-defined]
            raise CodeAlreadyRedeemed()
    per_customer = update(Assignment).where(col(Assignment.id) == assignment.id)
    if campaign.per_customer_limit is not None:
        per_customer = per_customer.where(
            col(Assignment.redemption_count) < campaign.per_customer_limit)
    limited = session.execute(
        per_customer.values(redemption_count=Assignment.redemption_count + 1))
    if limited.rowcount != 1:  # type: ignore[attr-defined]
        raise CustomerLimitReached()
    if arm.incentive_type == "gift":
        stocked = session.execute(
            update(IncentiveStock).where(col(IncentiveStock.incentive_id) == arm.incentive_id,
                                         col(IncentiveStock.used) < col(IncentiveStock.total))
            .values(used=IncentiveStock.used + 1))
        if stocked.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("this gift is out of stock", code="out_of_stock")
    budget = update(Campaign).where(col(Campaign.id) == campaign.id,
                                    col(Campaign.status) == "running")
    if cost_minor:
        budget = budget.where(col(Campaign.budget_minor).is_(None)
                              | (col(Campaign.spent_minor) + cost_minor
                                 <= col(Campaign.budget_minor)))
    charged = session.execute(budget.values(spent_minor=Campaign.spent_minor + cost_minor))
    if charged.rowcount != 1:  # type: ignore[attr-defined]
        status = session.exec(select(Campaign.status).where(Campaign.id == campaign.id)).one()
        if status != "running":
            raise _not_redeemable(f"the campaign is {status}, not running", ("campaign_id",),
                                  "campaign_not_running")
        raise BudgetExhausted()


def _extra_response(arm: ArmConfig, details: dict[str, Any], now: datetime
                    ) -> dict[str, Any]:
    """What a redemption of this type adds to the response (known before anything is written)."""
    extra: dict[str, Any] = {}
    if arm.incentive_type == "free_trial":
        extra["trial"] = {"product": arm.config.product, "starts_at": now.isoformat(),
                          "ends_at": (now + timedelta(days=arm.config.days)).isoformat()}
    points = int(details.get("points", 0) or 0)
    if arm.incentive_type == "loyalty" and points:
        extra["points"] = points
    if arm.incentive_type == "lottery" and arm.config.entry_rule.event == "redemption":
        extra["lottery_entries"] = arm.config.entry_rule.entries_per_event
    return extra


def _grant(session: Session, *, redemption_id: int, arm: ArmConfig, customer: Customer,
           campaign: CampaignConfig, extra: dict[str, Any], now: datetime) -> None:
    """Type-specific effects of a redemption: trial, points, lottery entries."""
    assert customer.id is not None and arm.incentive_id is not None
    if "trial" in extra:
        grant = TrialGrant(customer_id=customer.id, campaign_id=campaign.id,
                           incentive_id=arm.incentive_id, redemption_id=redemption_id,
                           product=arm.config.product, starts_at=now,
                           ends_at=now + timedelta(days=arm.config.days))
        try:
            with session.begin_nested():
                session.add(grant)
                session.flush()
        except IntegrityError:
            raise _not_redeemable("this customer already had this trial", ("campaign_id",),
                                  "trial_already_granted") from None
    if "points" in extra:
        session.add(PointsLedger(customer_id=customer.id, campaign_id=campaign.id,
                                 delta=extra["points"], reason="redemption",
                                 source_ref=f"redemption:{redemption_id}"))
        session.execute(update(Customer).where(col(Customer.id) == customer.id)
                        .values(points=Customer.points + extra["points"]))
    if "lottery_entries" in extra:
        insert_ignore(session, LotteryEntry, [{
            "campaign_id": campaign.id, "incentive_id": arm.incentive_id,
            "customer_id": customer.id, "entries": extra["lottery_entries"],
            "source_ref": f"redemption:{redemption_id}", "created_at": now}],
            conflict_columns=["campaign_id", "source_ref"])


def _insert_redemption(session: Session, values: dict[str, Any]) -> int | None:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING id.

    None means another request with the same key got there first; on PostgreSQL this
    statement waited for that request's transaction, so its row is now visible.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = Redemption.__table__  # type: ignore[attr-defined]
    statement = (dialect.insert(table).values(**values)
                 .on_conflict_do_nothing(index_elements=["idempotency_key"])
                 .returning(table.c.id))
    inserted = session.execute(statement).scalar_one_or_none()
    return int(inserted) if inserted is not None else None


def redeem(
    session: Session, *, snapshot: Snapshot, idempotency_key: str, request: RedemptionRequest,
    now: datetime,
) -> RedemptionOutcome:
    """Redeem once per idempotency key; a replay with the same body returns the stored body."""
    fingerprint = request_fingerprint(request)
    existing = _stored(session, idempotency_key)
    if existing is not None:
        return _replay(existing, fingerprint)
    code = _find_code(session, request)
    campaign = _campaign_for(snapshot, request, code)
    found = session.exec(
        select(Customer, Assignment)
        .outerjoin(Assignment, and_(col(Assignment.customer_id) == Customer.id,
                                    col(Assignment.campaign_id) == campaign.id))
        .where(Customer.external_id == request.customer_id)).first()
    if found is None:
        customer_by_external_id(session, request.customer_id)  # raises the NotFound
        raise AssertionError("unreachable")
    customer, assignment = found
    if assignment is None:
        raise _not_redeemable("this offer was never made to this customer", ("customer_id",),
                              "not_offered")
    arm = campaign.arm(assignment.arm_id)
    if arm is None or arm.is_control or arm.incentive_type is None:
        raise _not_redeemable("this customer is in the control group and has no offer",
                              ("customer_id",), "control_group")
    if request.channel not in snapshot.channel_ids:
        raise NotFound(f"channel '{request.channel}' does not exist",
                       [FieldError(("channel",), f"unknown channel '{request.channel}'",
                                   "not_found")], code="channel_not_found")
    _check_code(code, arm=arm, campaign=campaign, customer=customer, now=now)
    kind = get_incentive_type(arm.incentive_type)
    benefit = kind.compute_benefit(arm.config, OrderContext(
        order_amount_minor=request.order_amount_minor, channel_key=request.channel,
        target_channel_key=campaign.target_channel_key))
    assert customer.id is not None
    extra = _extra_response(arm, benefit.details, now)
    stored = {
        "status": RedemptionStatus.APPLIED.value, "campaign_id": campaign.id, "arm": arm.name,
        "incentive_type": arm.incentive_type, "customer_id": customer.external_id,
        "order_id": request.order_id, "benefit_minor": benefit.benefit_minor,
        "cost_minor": benefit.cost_minor, "currency": campaign.currency,
        "details": benefit.details, **extra, "created_at": now.isoformat(),
    }
    redemption_id = _insert_redemption(session, {
        "idempotency_key": idempotency_key, "request_hash": fingerprint,
        "campaign_id": campaign.id, "arm_id": arm.id, "customer_id": customer.id,
        "coupon_code_id": code.id if code else None,
        "channel_id": snapshot.channel_ids[request.channel], "order_id": request.order_id,
        "order_amount_minor": request.order_amount_minor,
        "benefit_minor": benefit.benefit_minor, "cost_minor": benefit.cost_minor,
        "status": RedemptionStatus.APPLIED.value, "response": stored, "created_at": now})
    if redemption_id is None:
        winner = _stored(session, idempotency_key)
        if winner is None:
            raise AssertionError("idempotency key conflict without a stored redemption")
        return _replay(winner, fingerprint)
    _charge(session, campaign=campaign, assignment=assignment, arm=arm, code=code,
            cost_minor=benefit.cost_minor)
    _grant(session, redemption_id=redemption_id, arm=arm, customer=customer,
           campaign=campaign, extra=extra, now=now)
    return RedemptionOutcome(body=answer(redemption_id, stored), replayed=False)


def rollback_redemption(session: Session, *, redemption_id: int, now: datetime
                        ) -> dict[str, Any]:
    """Undo an applied redemption (order cancelled): budget, limit, code and stock come back.

    The status flip ``applied -> rolled_back`` is itself a conditional UPDATE, so of many
    concurrent rollbacks exactly one restores anything; the others see it already done.
    """
    redemption = session.get(Redemption, redemption_id)
    if redemption is None:
        raise NotFound(f"redemption {redemption_id} does not exist", code="redemption_not_found")
    flipped = session.execute(
        update(Redemption).where(col(Redemption.id) == redemption_id,
                                 col(Redemption.status) == RedemptionStatus.APPLIED.value)
        .values(status=RedemptionStatus.ROLLED_BACK.value, rolled_back_at=now))
    if flipped.rowcount == 1:  # type: ignore[attr-defined]
        _restore(session, redemption=redemption, now=now)
    session.refresh(redemption)
    return {"redemption_id": redemption.id, "status": redemption.status,
            "rolled_back_at": redemption.rolled_back_at.isoformat()
            if redemption.rolled_back_at else None,
            "restored_budget_minor": redemption.cost_minor,
            "already_rolled_back": flipped.rowcount != 1}  # type: ignore[attr-defined]


def _restore(session: Session, *, redemption: Redemption, now: datetime) -> None:
    """Give back what the redemption took, locking rows in the same order as ``_charge``
    (code, assignment, stock, campaign) so a rollback never deadlocks with a redemption."""
    if redemption.coupon_code_id is not None:
        session.execute(update(CouponCode).where(col(CouponCode.id) == redemption.coupon_code_id)
                        .values(uses=CouponCode.uses - 1))
    session.execute(update(Assignment).where(
        col(Assignment.campaign_id) == redemption.campaign_id,
        col(Assignment.customer_id) == redemption.customer_id)
        .values(redemption_count=Assignment.redemption_count - 1))
    incentive_type = (redemption.response or {}).get("incentive_type")
    if incentive_type == "gift":
        arm = session.get(Arm, redemption.arm_id)
        if arm is not None:
            session.execute(update(IncentiveStock).where(
                col(IncentiveStock.incentive_id) == arm.incentive_id)
                .values(used=IncentiveStock.used - 1))
    session.execute(update(Campaign).where(col(Campaign.id) == redemption.campaign_id)
                    .values(spent_minor=Campaign.spent_minor - redemption.cost_minor))
    points = int((redemption.response or {}).get("points", 0) or 0)
    if points:
        # Take back what is still there; points already spent cannot go below zero.
        session.add(PointsLedger(customer_id=redemption.customer_id,
                                 campaign_id=redemption.campaign_id, delta=-points,
                                 reason="redemption rolled back",
                                 source_ref=f"rollback:{redemption.id}"))
        session.execute(update(Customer).where(col(Customer.id) == redemption.customer_id)
                        .values(points=case((col(Customer.points) >= points,
                                             Customer.points - points), else_=0)))
    session.execute(update(TrialGrant).where(col(TrialGrant.redemption_id) == redemption.id,
                                             col(TrialGrant.ends_at) > now,
                                             col(TrialGrant.starts_at) < now)
                    .values(ends_at=now))


def validate_code(
    session: Session, *, snapshot: Snapshot, code_text: str, customer_external_id: str | None,
    order_amount_minor: int | None, channel: str | None, now: datetime,
) -> dict[str, Any]:
    """Would this code apply, and what would it give? Nothing is written.

    The reasons are distinct (``unknown``, ``expired``, ``used``, ``not_yours``,
    ``campaign_not_running``, ``not_applicable``); the web layer makes every answer take the
    same time so that an attacker cannot tell them apart by timing.
    """
    code = session.exec(select(CouponCode).where(
        CouponCode.code == normalize_code(code_text))).first()
    if code is None:
        return {"valid": False, "reason": "unknown", "message": "this code does not exist"}
    campaign = next((c for c in snapshot.campaigns
                     if (code.campaign_id is None or c.id == code.campaign_id)
                     and any(a.incentive_id == code.incentive_id for a in c.arms)), None)
    if campaign is None:
        return {"valid": False, "reason": "campaign_not_running",
                "message": "this code's campaign is not running"}
    arm = next(a for a in campaign.arms if a.incentive_id == code.incentive_id)
    if code.expires_at is not None and code.expires_at <= now:
        return {"valid": False, "reason": "expired", "message": "this code has expired",
                "expired_at": code.expires_at.isoformat()}
    if code.max_uses is not None and code.uses >= code.max_uses:
        return {"valid": False, "reason": "used", "message": "this code has already been used"}
    if customer_external_id is not None and code.customer_id is not None:
        owner = session.get(Customer, code.customer_id)
        if owner is None or owner.external_id != customer_external_id:
            return {"valid": False, "reason": "not_yours",
                    "message": "this code was issued to another customer"}
    assert arm.incentive_type is not None and arm.offer is not None
    result: dict[str, Any] = {
        "valid": True, "reason": "ok", "message": "this code applies",
        "campaign_id": campaign.id, "title": arm.offer.title, "terms": arm.offer.terms,
        "expires_at": code.expires_at.isoformat() if code.expires_at else None,
    }
    if order_amount_minor is not None:
        try:
            benefit = get_incentive_type(arm.incentive_type).compute_benefit(
                arm.config, OrderContext(order_amount_minor=order_amount_minor,
                                         channel_key=channel,
                                         target_channel_key=campaign.target_channel_key))
        except ValidationFailed as error:
            return {"valid": False, "reason": "not_applicable", "message": error.message,
                    "errors": [e.as_dict() for e in error.errors]}
        result["benefit_minor"] = benefit.benefit_minor
    return result
