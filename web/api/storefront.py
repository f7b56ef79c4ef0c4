"""Storefront API: offers, redemptions, coupon validation, trials and loyalty."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from pydantic_core import to_json
from sqlmodel import Session, col, select

from campaigns.models import ApiScope, Assignment, Incentive, PointsLedger, TrialGrant
from campaigns.schemas import InputModel
from campaigns.services.customers import (
    CustomerAttributes,
    ExternalId,
    customer_by_external_id,
)
from campaigns.services.offers import OfferView, customer_offers
from campaigns.services.offers_postgresql import customer_offers as offers_postgresql
from campaigns.services.ratelimit import Limit, count_in_window, record_event
from campaigns.services.redemptions import (
    RedemptionOutcome,
    RedemptionRequest,
    autocommit,
    redeem,
    rollback_redemption,
    validate_code,
)
from campaigns.services.redemptions_postgresql import redeem as redeem_postgresql
from campaigns.types import utcnow
from campaigns.validation import parse_input
from web.api.direct import DirectRoute, documented, parameters
from web.api.schemas import MAX_ID, error_responses, inline_refs
from web.deps import (
    AsyncDatabase,
    Caller,
    OnDemand,
    SessionDep,
    StorefrontCaller,
    admit,
    require_scope,
)
from web.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["storefront"])

STOREFRONT = frozenset({ApiScope.STOREFRONT})
#: A rollback is the storefront's that redeemed, or an operator's.
RollbackCaller = Annotated[Caller, Depends(require_scope(ApiScope.STOREFRONT,
                                                         ApiScope.MANAGEMENT))]

CustomerIdPath = Annotated[str, Path(min_length=1, max_length=100,
                                     pattern=r"^[A-Za-z0-9_.:@-]+$",
                                     description="The customer's id in your systems.")]

#: Failed validations allowed per key and per client address in a minute.
VALIDATION_FAILURES = Limit(max_events=20, window_seconds=60)
#: Every validation answer takes at least this long, whatever the reason.
VALIDATION_FLOOR_SECONDS = 0.05


class OfferOut(BaseModel):
    campaign_id: int
    campaign_name: str
    arm: str
    incentive_type: str
    title: str
    description: str
    terms: str
    benefit: dict[str, Any]
    code: str | None = Field(description="The customer's coupon code, when the offer needs one.")
    expires_at: datetime | None
    redemptions_left: int | None = Field(description="Null when the campaign has no limit.")


class OffersOut(BaseModel):
    customer_id: str
    channel: str | None
    stage: str | None
    offers: list[OfferOut]

    model_config = {"json_schema_extra": {"examples": [{
        "customer_id": "C000042", "channel": "call_centre", "stage": "after_sale",
        "offers": [{"campaign_id": 1, "campaign_name": "After-sale self-service on the web",
                    "arm": "web coupon", "incentive_type": "coupon",
                    "title": "10% off with code", "description": "10% off your next order",
                    "terms": "Single use. Expires 30 days after it is issued.",
                    "benefit": {"kind": "percent", "percent_bp": 1000},
                    "code": "WEBK7M2Q9XHT", "expires_at": "2026-12-22T10:00:00Z",
                    "redemptions_left": 1}]}]}}


#: Attributes of a customer seen for the first time, accepted as query parameters.
NEW_CUSTOMER_FIELDS = ("segment", "value_tier", "loyalty_tier", "preferred_channel", "region",
                       "age_band", "tenure_months", "is_new")


class OffersPath(BaseModel):
    """The offers route's path parameter."""

    customer_id: ExternalId = Field(description="The customer's id in your systems.")


class OffersWhere(BaseModel):
    """Where the offers will be shown: query parameters of the offers route."""

    channel: str | None = Field(default=None, max_length=40, description="Channel key.")
    stage: str | None = Field(default=None, max_length=40, description="Stage key.")


async def get_offers(request: Request) -> Response:
    # A DirectRoute (see web.api.direct): the busiest route reads its parameters, checks
    # its caller and opens a session (only on a cache miss, or on SQLite) itself.
    async with OnDemand(request) as on_demand:
        await admit(request, STOREFRONT, on_demand.session)
        catalog = request.app.state.catalog
        snapshot = catalog.current() or await run_in_threadpool(catalog.snapshot,
                                                                await on_demand.session())
        errors: list[dict[str, Any]] = []
        path = parameters(request.path_params, OffersPath, "path", ("customer_id",), errors)
        query = request.query_params
        where = parameters(query, OffersWhere, "query", ("channel", "stage"), errors)
        channel, stage = (where.channel, where.stage) if where else (None, None)
        if channel is not None and channel not in snapshot.channel_ids:
            errors.append({"loc": ("query", "channel"), "msg": f"unknown channel '{channel}'",
                           "type": "not_found"})
        if stage is not None and stage not in snapshot.stage_ids:
            errors.append({"loc": ("query", "stage"), "msg": f"unknown stage '{stage}'",
                           "type": "not_found"})
        attributes = parameters(query, CustomerAttributes, "query", NEW_CUSTOMER_FIELDS, errors)
        if errors or path is None or attributes is None:
            raise RequestValidationError(errors)
        customer_id, now = path.customer_id, utcnow()
        database = await on_demand.database()
        if database is None:
            # SQLite: the ORM path, on a thread, committed there.
            offers = await run_in_threadpool(
                _offers_in_session, await on_demand.session(), snapshot=snapshot,
                external_id=customer_id, attributes=attributes, channel_key=channel,
                stage_key=stage, now=now)
        else:
            # PostgreSQL: on the event loop, the customer and exposure statements grouped
            # with those of concurrent requests. Every step stands alone, so repeating one on
            # a fresh connection after a connection error is safe (see AsyncPool.run).
            async with database.offer_steps() as steps:
                offers = await offers_postgresql(
                    steps, snapshot=snapshot, external_id=customer_id,
                    attributes=attributes, channel_key=channel, stage_key=stage, now=now)
    # Built from values this code made, so serialised as they are: an OfferView has the
    # fields of OfferOut, in its order (building the models cost a tenth of the route).
    return Response(to_json({"customer_id": customer_id, "channel": channel, "stage": stage,
                             "offers": offers}), media_type="application/json")


router.add_api_route(
    "/customers/{customer_id}/offers", get_offers, methods=["GET"],
    route_class_override=DirectRoute, response_model=OffersOut,
    summary="The offers to show this customer now",
    description=(
        "Returns the customer's offers from running campaigns: eligibility rules applied, "
        "arm assigned deterministically and exposure recorded once (the first exposure time "
        "is kept), stacking and priority resolved, limits and remaining budget respected, "
        "and a unique coupon code issued on first exposure where the offer needs one. "
        "Customers in a control group are recorded as exposed and get no offer.\n\n"
        "A customer ChannelShift has not seen is created on first sight with the attributes "
        "given as query parameters (`segment`, `value_tier`, `loyalty_tier`, "
        "`preferred_channel`, `region`, `age_band`, `tenure_months`, `is_new`); for a known "
        "customer those parameters are ignored."),
    responses=error_responses(descriptions={
        403: "Key of another scope (offers need a storefront key)",
        422: "Bad parameter, or an unknown channel or stage; `errors` names it"}),
    openapi_extra={"parameters": [
        *documented(OffersPath, "path", ("customer_id",)),
        *documented(OffersWhere, "query", ("channel", "stage")),
        *documented(CustomerAttributes, "query", NEW_CUSTOMER_FIELDS,
                    description="Used only when the customer is created by this request.")]},
)


def _offers_in_session(session: Session, **arguments: Any) -> list[OfferView]:
    offers = customer_offers(session, **arguments)
    session.commit()  # here, on the route's thread: the dependency then has nothing to do
    return offers


REDEMPTION_EXAMPLE = {"customer_id": "C000042", "campaign_id": 1, "code": "WEBK7M2Q9XHT",
                      "channel": "web", "order_id": "ORD-1001", "order_amount_minor": 5990}


REPLAYED_HEADER = {"Idempotent-Replayed": {
    "description": "true when this is the stored answer to an earlier identical request",
    "required": True, "schema": {"type": "string", "enum": ["true", "false"]}},
    "Redemption-Status": {
    "description": "where the redemption stands now: applied, or rolled_back when a replay "
    "finds it rolled back since (the body says so too)",
    "required": True, "schema": {"type": "string", "enum": ["applied", "rolled_back"]}}}


class RedemptionOut(BaseModel):
    redemption_id: int
    status: str
    campaign_id: int
    arm: str
    incentive_type: str
    customer_id: str
    order_id: str | None
    benefit_minor: int
    cost_minor: int
    currency: str
    details: dict[str, Any]
    created_at: datetime
    rolled_back_at: datetime | None = Field(
        default=None, description="Set when a replay finds the redemption rolled back since.")
    trial: dict[str, Any] | None = None
    points: int | None = None
    lottery_entries: int | None = None
    lottery_entries_note: str | None = Field(
        None, description="why a lottery redemption earned no entry (its entries come from "
        "events)")
    counts_toward_limit: bool | None = Field(
        None, description="false when the redemption left the per-customer limit untouched")


@router.post(
    "/redemptions", status_code=201, response_model=RedemptionOut,
    summary="Redeem an offer (exactly once per Idempotency-Key)",
    description=(
        "Validates the offer or code, the customer, the channel and the order; computes the "
        "benefit; charges the campaign budget, the customer's limit and the code atomically. "
        "Retrying with the same `Idempotency-Key` and the same body returns the stored "
        "response (with header `Idempotent-Replayed: true`) and has no further effect; the "
        "same key with another body is refused with 422. A replay of a redemption rolled "
        "back since says so: `status` `rolled_back`, `rolled_back_at`, and the header "
        "`Redemption-Status: rolled_back`."),
    responses={
        200: {"model": RedemptionOut, "description": "Replay of an earlier identical request",
              "headers": REPLAYED_HEADER},
        201: {"headers": REPLAYED_HEADER},
        **error_responses(404, 409, body=True, descriptions={
            404: "Unknown code, customer or channel",
            409: "Code used, budget spent, limit reached, not offered, control group, "
                 "campaign not running, ended or not started",
            422: "Bad body, missing Idempotency-Key, or key reused"}),
    },
    # The body is validated by the route (after the Idempotency-Key), so its schema is
    # declared here for the OpenAPI document.
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": inline_refs(RedemptionRequest.model_json_schema())}}}},
)
async def post_redemption(
    request: Request, session: SessionDep, caller: StorefrontCaller, database: AsyncDatabase,
    body: Annotated[dict[str, Any], Body(openapi_examples={"coupon": {
        "summary": "Redeem a coupon on a web order", "value": REDEMPTION_EXAMPLE}})],
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=8, max_length=200,
        description="A unique key per redemption attempt; reuse it when retrying.")] = None,
) -> JSONResponse:
    if idempotency_key is None:
        raise ApiError(422, "idempotency_key_required",
                       "send an Idempotency-Key header (a unique value per redemption)",
                       [{"loc": ["header", "Idempotency-Key"], "msg": "this header is required",
                         "type": "missing"}])
    data = parse_input(RedemptionRequest, body, what="redemption")
    catalog = request.app.state.catalog
    snapshot = catalog.current() or await run_in_threadpool(catalog.snapshot, session)
    key = f"{caller.api_key_id}:{idempotency_key}"
    now = utcnow()
    if database is None:
        # SQLite: the ORM path, on a thread, in the request's transaction.
        outcome = await run_in_threadpool(_redeem_in_session, session, snapshot=snapshot,
                                          idempotency_key=key, request=data, now=now,
                                          api_key_id=caller.api_key_id)
    else:
        # PostgreSQL: on the event loop, one atomic statement in autocommit; PostgreSQL
        # commits it as it finishes, so the campaign row it locks is not held while the
        # response is built. Safe to repeat after a connection error (AsyncPool.run).
        outcome = await database.run(request, lambda connection: redeem_postgresql(
            connection, snapshot=snapshot, idempotency_key=key, request=data, now=now,
            api_key_id=caller.api_key_id))
    if not outcome.replayed:
        request.app.state.metrics.redemption(outcome.body)
    return JSONResponse(outcome.body, status_code=200 if outcome.replayed else 201,
                        headers={"Idempotent-Replayed": "true" if outcome.replayed
                                 else "false", "Redemption-Status": outcome.body["status"]})


def _redeem_in_session(session: Session, **arguments: Any) -> RedemptionOutcome:
    # What the key lookup may have read is committed first, so that on PostgreSQL (a test
    # without the async pool) the redemption runs in autocommit as in production.
    session.commit()
    with autocommit(session):
        return redeem(session, **arguments)


class RollbackOut(BaseModel):
    redemption_id: int
    status: str
    rolled_back_at: datetime | None
    restored_budget_minor: int
    already_rolled_back: bool


@router.post(
    "/redemptions/{redemption_id}/rollback", response_model=RollbackOut,
    summary="Roll back a redemption (order cancelled); exactly once",
    description="Restores budget, the customer's limit, the code and stock. Calling it again "
    "changes nothing and says `already_rolled_back: true`. Only the storefront key that made "
    "the redemption, or a management key, may roll it back; to any other key a redemption "
    "id answers exactly as an id that does not exist.",
    responses=error_responses(404, descriptions={
        404: "No such redemption (or one that another key made)"}),
)
def post_rollback(session: SessionDep, caller: RollbackCaller,
                  redemption_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> dict[str, Any]:
    return rollback_redemption(
        session, redemption_id=redemption_id, now=utcnow(),
        by_api_key=None if caller.scope is ApiScope.MANAGEMENT else caller.api_key_id)


class ValidateIn(InputModel):
    code: Annotated[str, Field(min_length=1, max_length=64)]
    customer_id: ExternalId | None = None
    order_amount_minor: Annotated[int, Field(ge=0, le=10**15, strict=True)] | None = None
    channel: Annotated[str, Field(max_length=40)] | None = None

    model_config = {"json_schema_extra": {"examples": [
        {"code": "WEBK7M2Q9XHT", "customer_id": "C000042", "order_amount_minor": 5990}]}}


class ValidateOut(BaseModel):
    valid: bool
    reason: str = Field(description="ok, unknown, expired, used, not_yours, already_used, "
                        "campaign_not_running, campaign_ended, campaign_not_started or "
                        "not_applicable")
    message: str
    campaign_id: int | None = None
    title: str | None = None
    terms: str | None = None
    expires_at: datetime | None = None
    benefit_minor: int | None = None


def _validate_now(request: Request, session: Session, caller_id: int, client: str,
                  data: ValidateIn) -> dict[str, Any]:
    """Check the failure limits, validate, count a failure (in the request's transaction)."""
    now = utcnow()
    subjects = (f"validate:key:{caller_id}", f"validate:ip:{client}")
    for subject in subjects:
        if count_in_window(session, subject=subject, limit=VALIDATION_FAILURES,
                           now=now) >= VALIDATION_FAILURES.max_events:
            return {"limited": VALIDATION_FAILURES.retry_after(now)}
    result = validate_code(session, snapshot=request.app.state.catalog.snapshot(session),
                           code_text=data.code, customer_external_id=data.customer_id,
                           order_amount_minor=data.order_amount_minor,
                           channel=data.channel, now=now)
    if not result["valid"]:
        for subject in subjects:
            record_event(session, subject=subject, limit=VALIDATION_FAILURES, now=now)
    return result


@router.post(
    "/coupons/validate", response_model=ValidateOut,
    summary="Would this code apply, and what would it give? (redeems nothing)",
    description=(
        "Distinct reasons are returned for unknown, expired, used and foreign codes, but "
        "every answer takes the same minimum time so timing does not reveal which. More than "
        f"{VALIDATION_FAILURES.max_events} failed validations a minute from one key or one "
        "client address are refused with 429 and a Retry-After header."),
    responses=error_responses(429, body=True, descriptions={
        429: "Too many failed validations; see Retry-After"}),
)
async def post_validate(request: Request, session: SessionDep, caller: StorefrontCaller,
                        data: ValidateIn) -> JSONResponse:
    started = time.monotonic()
    client = request.client.host if request.client else "unknown"
    result = await run_in_threadpool(_validate_now, request, session, caller.api_key_id,
                                     client, data)
    await asyncio.sleep(max(0.0, VALIDATION_FLOOR_SECONDS - (time.monotonic() - started)))
    if "limited" in result:
        raise ApiError(429, "rate_limited", "too many failed code validations; try later",
                       headers={"Retry-After": str(result["limited"])})
    return JSONResponse(ValidateOut(**result).model_dump(mode="json"))


class TrialOut(BaseModel):
    product: str
    campaign_id: int
    starts_at: datetime
    ends_at: datetime
    active: bool
    converted_at: datetime | None


class TrialsOut(BaseModel):
    customer_id: str
    trials: list[TrialOut]


@router.get("/customers/{customer_id}/trials", response_model=TrialsOut,
            summary="The customer's free trials, active and past",
            responses=error_responses(404, descriptions={404: "Unknown customer"}))
def get_trials(session: SessionDep, caller: StorefrontCaller,
               customer_id: CustomerIdPath) -> TrialsOut:
    customer = customer_by_external_id(session, customer_id)
    now = utcnow()
    grants = session.exec(select(TrialGrant).where(TrialGrant.customer_id == customer.id)
                          .order_by(col(TrialGrant.starts_at).desc())).all()
    return TrialsOut(customer_id=customer_id, trials=[TrialOut(
        product=g.product, campaign_id=g.campaign_id, starts_at=g.starts_at, ends_at=g.ends_at,
        active=g.starts_at <= now < g.ends_at, converted_at=g.converted_at) for g in grants])


class LedgerEntryOut(BaseModel):
    delta: int
    reason: str
    at: datetime


class LoyaltyOut(BaseModel):
    customer_id: str
    points: int
    tier: str | None
    next_tier: str | None
    points_to_next_tier: int | None
    ledger: list[LedgerEntryOut]


def _loyalty_ladder(session: Session, customer_id: int) -> list[dict[str, Any]] | None:
    """The tier ladder of the loyalty incentive the customer is assigned to, if any."""
    from campaigns.models import Arm

    row = session.exec(
        select(Incentive).join(Arm, col(Arm.incentive_id) == Incentive.id)
        .join(Assignment, col(Assignment.arm_id) == Arm.id)
        .where(Assignment.customer_id == customer_id, Incentive.type == "loyalty")
        .order_by(col(Assignment.first_exposed_at).desc())).first()
    return row.config["tiers"] if row else None


@router.get("/customers/{customer_id}/loyalty", response_model=LoyaltyOut,
            summary="Points balance, tier and recent ledger entries",
            responses=error_responses(404, descriptions={404: "Unknown customer"}))
def get_loyalty(session: SessionDep, caller: StorefrontCaller,
                customer_id: CustomerIdPath) -> LoyaltyOut:
    customer = customer_by_external_id(session, customer_id)
    assert customer.id is not None
    ladder = _loyalty_ladder(session, customer.id)
    tier, next_tier, to_next = customer.loyalty_tier, None, None
    if ladder:
        tier = tier_for_points_from_ladder(ladder, customer.points)
        above = [t for t in ladder if t["threshold_points"] > customer.points]
        if above:
            next_tier, to_next = above[0]["key"], above[0]["threshold_points"] - customer.points
    entries = session.exec(select(PointsLedger).where(PointsLedger.customer_id == customer.id)
                           .order_by(col(PointsLedger.id).desc()).limit(50)).all()
    return LoyaltyOut(customer_id=customer_id, points=customer.points, tier=tier,
                      next_tier=next_tier, points_to_next_tier=to_next,
                      ledger=[LedgerEntryOut(delta=e.delta, reason=e.reason, at=e.created_at)
                              for e in entries])


def tier_for_points_from_ladder(ladder: list[dict[str, Any]], points: int) -> str | None:
    reached = [t["key"] for t in ladder if t["threshold_points"] <= points]
    return reached[-1] if reached else None

