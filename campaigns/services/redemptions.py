"""Redeeming an offer, exactly once, and rolling it back, exactly once.

A redemption reads what it needs in one query (a stored redemption under the same
Idempotency-Key, the code, the customer and their assignment), checks the request in
Python against the cached campaign configuration, and then writes. What it writes:

- the redemption row with its response (``idempotency_key`` is unique, so a retry finds
  the stored response instead of redeeming again);
- a single-use code's ``uses``, the customer's ``redemption_count`` under the campaign's
  per-customer limit, a gift's stock, and the campaign's ``spent_minor`` under its budget;
- what the incentive grants: a trial, loyalty points, lottery entries.

Every limit is decided by the database on the row it protects, never by reading a value
into Python and writing it back (the check-then-write race that many promotion engines
shipped). The CHECK constraints on the same columns back this up for any other writer.

On PostgreSQL all of it is **one statement** (:data:`REDEEM_AT_ONCE`): it locks the rows it
charges in a fixed order (code, assignment, stock, campaign -- the order
:func:`rollback_redemption` uses too, so the two never deadlock), re-checks each limit on
the locked, latest version of its row, and writes only when every check passed; a
refusal writes nothing. Being one statement it is atomic without an explicit transaction,
so the web layer runs it in autocommit (:func:`autocommit`): PostgreSQL commits
it as it finishes, and the campaign row that every redemption of a campaign must lock is
held for the statement's own duration, not for a round trip to Python and back (held
until a COMMIT sent from Python, it serialised each busy campaign's redemptions).

On SQLite, which has a single writer anyway, the same writes are a few statements in the
request's transaction (``BEGIN IMMEDIATE`` takes the write lock up front).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple

from pydantic import Field, model_validator
from sqlalchemy import (
    BigInteger,
    Engine,
    Select,
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    text,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, IntegrityError
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
from campaigns.incentives import Benefit, OrderContext, get_incentive_type
from campaigns.incentives.base import SharedCode
from campaigns.incentives.codes import normalize_code
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    CouponCode,
    CouponCodeUse,
    Customer,
    IncentiveStock,
    LotteryEntry,
    PointsLedger,
    Redemption,
    RedemptionStatus,
    TrialGrant,
)
from campaigns.schemas import InputModel, Key, MinorUnits
from campaigns.services.catalog import ArmConfig, CampaignConfig, Snapshot, outside_schedule
from campaigns.services.customers import ExternalId, unknown_customer


class RedemptionRequest(InputModel):
    customer_id: ExternalId
    channel: Key
    campaign_id: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
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


def answer(redemption_id: int, stored: dict[str, Any]) -> dict[str, Any]:
    """The response body, keys sorted at every level: the first answer and every replay are
    byte-identical whatever order the database keeps JSON keys in."""
    body = {**stored, "redemption_id": redemption_id}
    return json.loads(json.dumps(body, sort_keys=True))


@contextmanager
def autocommit(session: Session) -> Iterator[bool]:
    """Run the block with every statement committing as it ends, if the session allows it.

    For a unit of work whose writes are one statement, like :func:`redeem` on PostgreSQL:
    PostgreSQL commits the statement before Python sees its result, so the rows it locks
    (the campaign row, which every redemption of the campaign needs) are held for the
    statement's own duration. On leaving, the connection goes straight back to the pool:
    there is nothing left to commit. Yields whether autocommit is on. It is not on SQLite,
    for a session bound to a connection (a caller's or a test's transaction) or for one
    that has already begun; the block then joins that transaction, which is as correct
    and only holds the rows until the caller commits.
    """
    bind = session.get_bind()
    if not isinstance(bind, Engine) or bind.dialect.name != "postgresql" \
            or session.in_transaction():
        yield False
        return
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        yield True
    finally:
        session.close()


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Stored:
    """A redemption already made under the request's Idempotency-Key."""

    id: int
    request_hash: str
    response: dict[str, Any]
    #: where it stands now (``rolled_back`` after a rollback), and since when
    status: str = RedemptionStatus.APPLIED.value
    rolled_back_at: datetime | None = None


@dataclass(frozen=True)
class _Code:
    id: int
    incentive_id: int
    campaign_id: int | None
    customer_id: int | None
    expires_at: datetime | None


@dataclass(frozen=True)
class _Found:
    """What the single read found; any part may be missing."""

    stored: Stored | None
    code: _Code | None
    customer_id: int | None
    assignment_id: int | None
    arm_id: int | None
    #: the campaign the assignment was looked up for (None: not known from the request)
    assignment_campaign_id: int | None


_redemption = Redemption.__table__  # type: ignore[attr-defined]
_code = CouponCode.__table__  # type: ignore[attr-defined]
_customer = Customer.__table__  # type: ignore[attr-defined]
_assignment = Assignment.__table__  # type: ignore[attr-defined]


def _read_statement() -> Select[Any]:
    """Stored redemption, code, customer and assignment: outer joins from a one-row anchor,
    each on a unique key, so there is exactly one row whatever exists. The assignment is
    for the request's campaign, or else the code's. Built once: building a select costs
    more Python than running it."""
    anchor = core_select(literal(1).label("anchor")).subquery("anchor")
    campaign_id = func.coalesce(bindparam("campaign_id", type_=BigInteger),
                                _code.c.campaign_id)
    joined = (
        anchor.outerjoin(_redemption, _redemption.c.idempotency_key == bindparam("key"))
        .outerjoin(_code, _code.c.code == bindparam("code", type_=String))
        .outerjoin(_customer, _customer.c.external_id == bindparam("external_id"))
        .outerjoin(_assignment, and_(_assignment.c.customer_id == _customer.c.id,
                                     _assignment.c.campaign_id == campaign_id)))
    return core_select(
        _redemption.c.id.label("stored_id"), _redemption.c.request_hash,
        _redemption.c.response, _code.c.id.label("code_id"),
        _code.c.incentive_id.label("code_incentive_id"),
        _code.c.campaign_id.label("code_campaign_id"),
        _code.c.customer_id.label("code_customer_id"),
        _code.c.expires_at.label("code_expires_at"), _customer.c.id.label("customer_id"),
        _assignment.c.id.label("assignment_id"), _assignment.c.arm_id,
        _redemption.c.status.label("stored_status"),
        _redemption.c.rolled_back_at.label("stored_rolled_back_at"),
    ).select_from(joined)


READ = _read_statement()


class ReadRow(NamedTuple):
    """:data:`READ`'s row (psycopg's own rows are plain tuples)."""

    stored_id: int | None
    request_hash: str | None
    response: dict[str, Any] | None
    code_id: int | None
    code_incentive_id: int | None
    code_campaign_id: int | None
    code_customer_id: int | None
    code_expires_at: datetime | None
    customer_id: int | None
    assignment_id: int | None
    arm_id: int | None
    stored_status: str | None
    stored_rolled_back_at: datetime | None


assert ReadRow._fields == tuple(READ.selected_columns.keys())


def _read(session: Session, *, key: str, request: RedemptionRequest) -> _Found:
    """What :func:`redeem` needs to know before it checks anything, in one round trip."""
    return found_in(ReadRow(*session.execute(READ, read_params(key, request)).one()), request)


def read_params(key: str, request: RedemptionRequest) -> dict[str, Any]:
    """The parameters of :data:`READ` for a request."""
    return {"key": key,
            "code": normalize_code(request.code) if request.code is not None else None,
            "external_id": request.customer_id, "campaign_id": request.campaign_id}


def found_in(row: ReadRow, request: RedemptionRequest) -> _Found:
    """:data:`READ`'s row as what it found."""
    code = stored = None
    if row.code_id is not None:
        assert row.code_incentive_id is not None
        code = _Code(id=row.code_id, incentive_id=row.code_incentive_id,
                     campaign_id=row.code_campaign_id, customer_id=row.code_customer_id,
                     expires_at=row.code_expires_at)
    if row.stored_id is not None:
        assert row.request_hash is not None and row.response is not None
        assert row.stored_status is not None
        stored = Stored(row.stored_id, row.request_hash, row.response, row.stored_status,
                        row.stored_rolled_back_at)
    looked_up_for = request.campaign_id if request.campaign_id is not None \
        else code.campaign_id if code is not None else None
    return _Found(stored=stored, code=code, customer_id=row.customer_id,
                  assignment_id=row.assignment_id, arm_id=row.arm_id,
                  assignment_campaign_id=looked_up_for)


#: The redemption stored under an idempotency key (parameter ``key``).
STORED = core_select(_redemption.c.id, _redemption.c.request_hash, _redemption.c.response,
                     _redemption.c.status, _redemption.c.rolled_back_at) \
    .where(_redemption.c.idempotency_key == bindparam("key", type_=String))
#: A customer's assignment to a campaign (parameters ``campaign_id``, ``customer_id``).
ASSIGNMENT_OF = core_select(_assignment.c.id, _assignment.c.arm_id).where(
    _assignment.c.campaign_id == bindparam("campaign_id", type_=BigInteger),
    _assignment.c.customer_id == bindparam("customer_id", type_=BigInteger))


#: The live lottery entries of an assignment (parameter ``assignment_id``).
ENTRIES_HELD = core_select(_assignment.c.lottery_entries).where(
    _assignment.c.id == bindparam("assignment_id", type_=BigInteger))


def stored_in(row: Any) -> Stored | None:
    return Stored(row[0], row[1], row[2], row[3], row[4]) if row is not None else None


def _stored(session: Session, key: str) -> Stored | None:
    return stored_in(session.execute(STORED, {"key": key}).first())


def assignment_in(row: Any) -> tuple[int | None, int | None]:
    return (row[0], row[1]) if row is not None else (None, None)


def _assignment_of(session: Session, *, campaign_id: int, customer_id: int
                   ) -> tuple[int | None, int | None]:
    return assignment_in(session.execute(ASSIGNMENT_OF, {
        "campaign_id": campaign_id, "customer_id": customer_id}).first())


# --------------------------------------------------------------------------- checking


def replay(existing: Stored, fingerprint: str, *, now: datetime) -> RedemptionOutcome:
    """The stored answer to a request with the same key and body.

    Unless this very request made it: on PostgreSQL a request whose connection died after
    the redemption committed is run again (``web.deps.AsyncPool``), and its second run finds
    its own first. The stored ``created_at`` is the request's own ``now`` then, and the
    client gets what the first run would have answered (201, not a replay).

    A redemption rolled back since is answered as stored but for its ``status``
    (``rolled_back``) and ``rolled_back_at``: a retry must not read as a live benefit.
    """
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused()
    own = existing.response.get("created_at") == now.isoformat()
    response = existing.response
    if existing.status != RedemptionStatus.APPLIED.value:
        rolled_back_at = existing.rolled_back_at
        response = {**response, "status": existing.status,
                    "rolled_back_at": rolled_back_at.astimezone(UTC).isoformat()
                    if rolled_back_at is not None else None}
    return RedemptionOutcome(body=answer(existing.id, response), replayed=not own)


def _not_redeemable(message: str, loc: tuple[str, ...], kind: str) -> Conflict:
    return Conflict(message, [FieldError(loc, message, kind)], code=kind)


def _unknown_code() -> NotFound:
    return NotFound("this code is unknown", [FieldError(("code",), "unknown code",
                                                         "unknown_code")], code="unknown_code")


def _campaign_for(snapshot: Snapshot, request: RedemptionRequest,
                  code: _Code | None) -> CampaignConfig:
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


def _check_code(code: _Code | None, *, arm: ArmConfig, campaign: CampaignConfig,
                customer_id: int, now: datetime) -> None:
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
    if code.customer_id is not None and code.customer_id != customer_id:
        raise _not_redeemable("this code was issued to another customer", ("code",),
                              "code_not_yours")
    if code.expires_at is not None and code.expires_at <= now:
        raise _not_redeemable("this code has expired", ("code",), "code_expired")


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
    assert arm.incentive_type is not None
    extra.update(get_incentive_type(arm.incentive_type).redemption_response(arm.config))
    return extra


@dataclass(frozen=True)
class Plan:
    """A checked redemption, ready to be written: every id and amount the writes need."""

    idempotency_key: str
    fingerprint: str
    campaign: CampaignConfig
    arm: ArmConfig
    incentive_id: int
    customer_id: int
    assignment_id: int
    code_id: int | None
    channel_id: int
    request: RedemptionRequest
    benefit: Benefit
    extra: dict[str, Any]
    stored: dict[str, Any]
    now: datetime
    #: the API key making the redemption (None: a caller without one, e.g. the seeds)
    api_key_id: int | None = None

    @property
    def trial_ends_at(self) -> datetime:
        return self.now + timedelta(days=self.arm.config.days)

    @property
    def lottery_entries(self) -> int:
        """Entries the redemption grants. :data:`REDEEM_AT_ONCE` adds them to the column,
        not to the locked row's value as its other charges do: a count that only grows
        passes its CHECK on the snapshot's version too, and the UPDATE computes the value
        it writes again on the latest version."""
        return int(self.extra.get("lottery_entries", 0) or 0)

    @property
    def counts_toward_limit(self) -> bool:
        """False for a redemption whose type says it leaves the per-customer limit alone."""
        return self.extra.get("counts_toward_limit", True) is not False

    @property
    def entry_cap(self) -> int | None:
        assert self.arm.incentive_type is not None
        return get_incentive_type(self.arm.incentive_type).entry_cap(self.arm.config)

    @property
    def shared_code(self) -> SharedCode | None:
        """The shared code redeemed, if the request's code is the type's shared code."""
        if self.code_id is None or self.arm.incentive_type is None:
            return None
        return get_incentive_type(self.arm.incentive_type).shared_code(self.arm.config)

    @property
    def code_once_per_customer(self) -> bool:
        return self.shared_code is not None and self.shared_code.once_per_customer


def target_campaign(snapshot: Snapshot, *, found: _Found, request: RedemptionRequest
                    ) -> tuple[CampaignConfig, int]:
    """The running campaign the request redeems and the customer's id; raises the first
    problem, as a typed error, in the order: unknown code, campaign, customer. When the
    campaign was only known from the configuration (a code shared by campaigns), the
    caller looks up the customer's assignment to it before :func:`plan`."""
    if request.code is not None and found.code is None:
        raise _unknown_code()
    campaign = _campaign_for(snapshot, request, found.code)
    if found.customer_id is None:
        raise unknown_customer(request.customer_id)
    return campaign, found.customer_id


def plan(snapshot: Snapshot, *, campaign: CampaignConfig, found: _Found,
         assignment: tuple[int | None, int | None], key: str, fingerprint: str,
         request: RedemptionRequest, now: datetime, api_key_id: int | None = None) -> Plan:
    """Check the request against what was read; raise the first problem, as a typed error.

    A campaign outside its schedule in the configuration is refused first (its codes
    expire with it, and the campaign's end is the truer reason); the redemption statement
    decides it again on the locked campaign row."""
    assert found.customer_id is not None
    scheduled = _outside_schedule(campaign.starts_at, campaign.ends_at, now)
    if scheduled is not None:
        raise scheduled
    assignment_id, arm_id = assignment
    if assignment_id is None or arm_id is None:
        raise _not_redeemable("this offer was never made to this customer", ("customer_id",),
                              "not_offered")
    arm = campaign.arm(arm_id)
    if arm is None or arm.is_control or arm.incentive_type is None \
            or arm.incentive_id is None:
        raise _not_redeemable("this customer is in the control group and has no offer",
                              ("customer_id",), "control_group")
    if request.channel not in snapshot.channel_ids:
        raise NotFound(f"channel '{request.channel}' does not exist",
                       [FieldError(("channel",), f"unknown channel '{request.channel}'",
                                   "not_found")], code="channel_not_found")
    _check_code(found.code, arm=arm, campaign=campaign, customer_id=found.customer_id, now=now)
    benefit = get_incentive_type(arm.incentive_type).compute_benefit(arm.config, OrderContext(
        order_amount_minor=request.order_amount_minor, channel_key=request.channel,
        target_channel_key=campaign.target_channel_key, currency=campaign.currency))
    extra = _extra_response(arm, benefit.details, now)
    stored = {
        "status": RedemptionStatus.APPLIED.value, "campaign_id": campaign.id, "arm": arm.name,
        "incentive_type": arm.incentive_type, "customer_id": request.customer_id,
        "order_id": request.order_id, "benefit_minor": benefit.benefit_minor,
        "cost_minor": benefit.cost_minor, "currency": campaign.currency,
        "details": benefit.details, **extra, "created_at": now.isoformat(),
    }
    return Plan(idempotency_key=key, fingerprint=fingerprint, campaign=campaign, arm=arm,
                 incentive_id=arm.incentive_id, customer_id=found.customer_id,
                 assignment_id=assignment_id,
                 code_id=found.code.id if found.code is not None else None,
                 channel_id=snapshot.channel_ids[request.channel], request=request,
                 benefit=benefit, extra=extra, stored=stored, now=now, api_key_id=api_key_id)


def _redemption_values(plan: Plan) -> dict[str, Any]:
    return {
        "idempotency_key": plan.idempotency_key, "request_hash": plan.fingerprint,
        "campaign_id": plan.campaign.id, "arm_id": plan.arm.id,
        "customer_id": plan.customer_id, "coupon_code_id": plan.code_id,
        "channel_id": plan.channel_id, "order_id": plan.request.order_id,
        "order_amount_minor": plan.request.order_amount_minor,
        "benefit_minor": plan.benefit.benefit_minor, "cost_minor": plan.benefit.cost_minor,
        "status": RedemptionStatus.APPLIED.value, "response": plan.stored,
        "created_at": plan.now, "api_key_id": plan.api_key_id,
    }


def redeem(
    session: Session, *, snapshot: Snapshot, idempotency_key: str, request: RedemptionRequest,
    now: datetime, api_key_id: int | None = None,
) -> RedemptionOutcome:
    """Redeem once per idempotency key; a replay with the same body returns the stored body.

    The ORM path: SQLite, and PostgreSQL inside a caller's transaction; the storefront's
    route on PostgreSQL runs :func:`campaigns.services.redemptions_postgresql.redeem`."""
    fingerprint = request_fingerprint(request)
    found = _read(session, key=idempotency_key, request=request)
    if found.stored is not None:
        return replay(found.stored, fingerprint, now=now)
    campaign, customer_id = target_campaign(snapshot, found=found, request=request)
    assignment = (found.assignment_id, found.arm_id)
    if found.assignment_campaign_id != campaign.id:
        assignment = _assignment_of(session, campaign_id=campaign.id, customer_id=customer_id)
    checked = plan(snapshot, campaign=campaign, found=found, assignment=assignment,
                   key=idempotency_key, fingerprint=fingerprint, request=request, now=now,
                   api_key_id=api_key_id)
    if session.get_bind().dialect.name == "postgresql":
        redemption_id = _apply_at_once(session, checked)
    else:
        redemption_id = _apply_in_steps(session, checked)
    if redemption_id is None:
        # Another request with this key got there first; its row is visible now.
        return replay(winner(_stored(session, idempotency_key)), fingerprint, now=now)
    return RedemptionOutcome(body=answer(redemption_id, checked.stored), replayed=False)


def winner(stored: Stored | None) -> Stored:
    if stored is None:
        raise AssertionError("idempotency key conflict without a stored redemption")
    return stored


# --------------------------------------------------------------------------- PostgreSQL


def _compact(sql: str) -> str:
    """One space for every run of whitespace: psycopg caches the parsing of a statement
    only up to 4 kB, and this one is parsed on every redemption otherwise."""
    return " ".join(sql.split())


#: The whole redemption in one statement (PostgreSQL). The ``*_row`` CTEs lock the rows
#: to charge, in the order code, assignment, stock, campaign, each only if the one before
#: passed its check; ``FOR NO KEY UPDATE`` is the lock an UPDATE takes, so foreign-key
#: checks of concurrent inserts are not blocked. After waiting for a lock, PostgreSQL
#: re-checks the row's condition on its latest committed version, so the checks see every
#: redemption committed before. The redemption row is inserted only if the locked campaign
#: row is ``approved`` (running, within its schedule ``[starts_at, ends_at)`` at the
#: request's time -- from Python, the clock the rest of the request reads -- and budget
#: left), and every write after it is conditional on that insert, so a refusal writes
#: nothing. A key conflict (a concurrent retry) inserts nothing either. Nullable
#: parameters are cast: a NULL has no type of its own.
#:
#: The ``charge_*`` updates compute the new value from the locked row (``(SELECT spent_minor
#: FROM campaign_row) + :cost_minor``), not from the column (``spent_minor + :cost_minor``).
#: The column would be read from the version the statement's snapshot sees, and when a
#: concurrent rollback committed after that snapshot PostgreSQL checks the CHECK
#: constraints on the tuple computed from that stale version before it re-reads the latest
#: one: a redemption that fits the budget failed with ``ck_campaign_budget_not_overspent``
#: (a 500). The locked row is the latest version and nobody can change it before commit.
#: For the same reason ``charge_budget`` writes the locked row's ``budget_minor`` too: when
#: a budget edit committed after the snapshot, the tuple checked first is the stale
#: version's, with the old budget, and a redemption that the raised budget approved
#: failed that CHECK (a 500).
REDEEM_AT_ONCE = text(_compact("""
WITH code_row AS MATERIALIZED (
  SELECT id, uses FROM coupon_code
  WHERE id = :code_id AND (max_uses IS NULL OR uses < max_uses)
  FOR NO KEY UPDATE
), limit_row AS MATERIALIZED (
  SELECT id, redemption_count, lottery_entries FROM assignment
  WHERE id = :assignment_id
    AND (CAST(:per_customer_limit AS int) IS NULL OR redemption_count < :per_customer_limit)
    AND (CAST(:entry_cap AS int) IS NULL OR lottery_entries + :lottery_entries <= :entry_cap)
    AND (CAST(:code_id AS bigint) IS NULL OR EXISTS (SELECT FROM code_row))
  FOR NO KEY UPDATE
), stock_row AS MATERIALIZED (
  SELECT id, used FROM incentive_stock
  WHERE incentive_id = :stock_incentive_id AND used < total
    AND EXISTS (SELECT FROM limit_row)
  ORDER BY id LIMIT 1
  FOR NO KEY UPDATE
), campaign_row AS MATERIALIZED (
  SELECT id, status, spent_minor, budget_minor, tstzrange(starts_at, ends_at) AS span
  FROM campaign
  WHERE id = :campaign_id AND EXISTS (SELECT FROM limit_row)
    AND (CAST(:stock_incentive_id AS bigint) IS NULL OR EXISTS (SELECT FROM stock_row))
  FOR NO KEY UPDATE
), approved AS MATERIALIZED (
  SELECT id FROM campaign_row
  WHERE status = 'running' AND span @> :created_at
    AND (budget_minor IS NULL OR spent_minor + :cost_minor <= budget_minor)
), redeemed AS (
  INSERT INTO redemption (idempotency_key, request_hash, campaign_id, arm_id, customer_id,
    coupon_code_id, channel_id, order_id, order_amount_minor, benefit_minor, cost_minor,
    status, response, created_at, api_key_id)
  SELECT :idempotency_key, :request_hash, id, :arm_id, :customer_id,
    CAST(:code_id AS bigint), :channel_id, CAST(:order_id AS varchar),
    CAST(:order_amount_minor AS bigint), :benefit_minor, :cost_minor,
    'applied', :response, :created_at, CAST(:api_key_id AS bigint)
  FROM approved
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING id
), charge_code AS (
  UPDATE coupon_code SET uses = (SELECT uses FROM code_row) + 1
  WHERE id = :code_id AND EXISTS (SELECT FROM redeemed)
), charge_limit AS (
  UPDATE assignment SET redemption_count = (SELECT redemption_count FROM limit_row) + :limit_step,
    lottery_entries = lottery_entries + :lottery_entries
  WHERE id = :assignment_id AND EXISTS (SELECT FROM redeemed)
), charge_stock AS (
  UPDATE incentive_stock SET used = (SELECT used FROM stock_row) + 1
  WHERE id = (SELECT id FROM stock_row) AND EXISTS (SELECT FROM redeemed)
), charge_budget AS (
  UPDATE campaign SET spent_minor = (SELECT spent_minor FROM campaign_row) + :cost_minor,
    budget_minor = (SELECT budget_minor FROM campaign_row)
  WHERE id = :campaign_id AND EXISTS (SELECT FROM redeemed)
), grant_trial AS (
  INSERT INTO trial_grant (customer_id, campaign_id, incentive_id, redemption_id, product,
    starts_at, ends_at)
  SELECT :customer_id, :campaign_id, :incentive_id, id, CAST(:trial_product AS varchar),
    :created_at, CAST(:trial_ends_at AS timestamptz)
  FROM redeemed WHERE CAST(:trial_product AS varchar) IS NOT NULL
), grant_points AS (
  INSERT INTO points_ledger (customer_id, campaign_id, delta, reason, source_ref, created_at)
  SELECT :customer_id, :campaign_id, :points, 'redemption', 'redemption:' || id, :created_at
  FROM redeemed WHERE :points <> 0
), credit_points AS (
  UPDATE customer SET points = points + :points
  WHERE id = :customer_id AND :points <> 0 AND EXISTS (SELECT FROM redeemed)
), enter_lottery AS (
  INSERT INTO lottery_entry (campaign_id, incentive_id, customer_id, entries, source_ref,
    created_at)
  SELECT :campaign_id, :incentive_id, :customer_id, :lottery_entries, 'redemption:' || id,
    :created_at
  FROM redeemed WHERE :lottery_entries > 0
  ON CONFLICT (campaign_id, source_ref) DO NOTHING
), use_code AS (
  INSERT INTO coupon_code_use (coupon_code_id, customer_id, redemption_id)
  SELECT :code_id, :customer_id, id FROM redeemed WHERE :once
)
SELECT (SELECT id FROM redeemed),
  EXISTS (SELECT FROM approved),
  EXISTS (SELECT FROM code_row),
  EXISTS (SELECT FROM limit_row),
  EXISTS (SELECT FROM stock_row),
  (SELECT status FROM campaign_row),
  (SELECT span FROM campaign_row)
""")).bindparams(bindparam("response", type_=JSONB))

_TRIAL_UNIQUE = "uq_trial_grant_customer_id_incentive_id"
_CODE_USE_UNIQUE = "uq_coupon_code_use_coupon_code_id_customer_id"
#: Runs of :data:`REDEEM_AT_ONCE` when PostgreSQL picks it as a deadlock victim.
DEADLOCK_ATTEMPTS = 3
_DEADLOCK_DETECTED = "40P01"


class AtOnce(NamedTuple):
    """:data:`REDEEM_AT_ONCE`'s row, read by position (the statement names no column: its
    length is at psycopg's cache limit)."""

    redemption_id: int | None
    approved: bool
    code_available: bool
    within_limit: bool
    in_stock: bool
    campaign_status: str | None
    #: the campaign's ``[starts_at, ends_at)`` (a psycopg ``Range``; an open end is None)
    campaign_span: Any = None


def is_deadlock(error: BaseException | None) -> bool:
    return getattr(error, "sqlstate", None) == _DEADLOCK_DETECTED


def _execute_at_once(session: Session, params: dict[str, Any]) -> AtOnce:
    """Run :data:`REDEEM_AT_ONCE`, again if PostgreSQL broke a deadlock by aborting it.

    Two redemptions of one busy campaign can deadlock inside PostgreSQL (seen under load,
    about one in fifty): the statement locks the campaign row's latest version, then its
    UPDATE meets the older version its snapshot sees; when a foreign-key check (an exposure,
    a code issued) left a MultiXact on that version, PostgreSQL takes the tuple lock on it
    before going on, and a second redemption that waits for our row lock holds that tuple
    lock. The aborted statement wrote nothing, so running it again is exactly the retry the
    client would make. In autocommit it is its own transaction; inside a transaction (the
    request's, when its API key or configuration check began one) it runs in a savepoint,
    so that the transaction survives the abort.
    """
    autocommitting = _autocommitting(session)
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            if autocommitting:
                return AtOnce(*session.execute(REDEEM_AT_ONCE, params).one())
            with session.begin_nested():
                return AtOnce(*session.execute(REDEEM_AT_ONCE, params).one())
        except IntegrityError:
            raise
        except DBAPIError as error:
            if not is_deadlock(error.orig) or attempt == DEADLOCK_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _autocommitting(session: Session) -> bool:
    options = session.connection().get_execution_options()
    return bool(options.get("isolation_level") == "AUTOCOMMIT")


def at_once_params(plan: Plan) -> dict[str, Any]:
    """The parameters of :data:`REDEEM_AT_ONCE` for a checked redemption."""
    values = _redemption_values(plan)
    return {
        **{name: values[name] for name in (
            "idempotency_key", "request_hash", "campaign_id", "arm_id", "customer_id",
            "channel_id", "order_id", "order_amount_minor", "benefit_minor", "cost_minor",
            "response", "created_at", "api_key_id")},
        "code_id": plan.code_id, "assignment_id": plan.assignment_id,
        "per_customer_limit": plan.campaign.per_customer_limit
        if plan.counts_toward_limit else None,
        "limit_step": 1 if plan.counts_toward_limit else 0,
        "entry_cap": plan.entry_cap, "once": plan.code_once_per_customer,
        "stock_incentive_id": plan.incentive_id if plan.arm.incentive_type == "gift" else None,
        "incentive_id": plan.incentive_id,
        "trial_product": plan.arm.config.product if "trial" in plan.extra else None,
        "trial_ends_at": plan.trial_ends_at if "trial" in plan.extra else None,
        "points": int(plan.extra.get("points", 0)),
        "lottery_entries": plan.lottery_entries,
    }


def is_trial_conflict(error: BaseException | None) -> bool:
    """Whether a unique violation is the one-trial-per-customer key."""
    return getattr(getattr(error, "diag", None), "constraint_name", None) == _TRIAL_UNIQUE


def is_code_use_conflict(error: BaseException | None) -> bool:
    """Whether a unique violation is the once-per-customer key of a shared code."""
    return getattr(getattr(error, "diag", None), "constraint_name", None) == _CODE_USE_UNIQUE


def code_already_used() -> Conflict:
    return _not_redeemable("this customer has already used this code, which each customer "
                           "may use once", ("code",), "code_already_used")


def _apply_at_once(session: Session, plan: Plan) -> int | None:
    """Run :data:`REDEEM_AT_ONCE`; the redemption's id, None on a key conflict, or the refusal."""
    try:
        outcome = _execute_at_once(session, at_once_params(plan))
    except IntegrityError as error:
        if is_trial_conflict(error.orig):
            raise trial_already_granted() from None
        if is_code_use_conflict(error.orig):
            raise code_already_used() from None
        raise
    if outcome.redemption_id is not None:
        return int(outcome.redemption_id)
    if outcome.approved:
        return None  # every check passed: only the idempotency key conflicted
    # Refused -- unless a concurrent request with the same key took what was left (it is
    # committed: this statement waited for its locks).
    if _stored(session, plan.idempotency_key) is not None:
        return None
    held = session.execute(ENTRIES_HELD, {"assignment_id": plan.assignment_id}).scalar() \
        if needs_entries_held(plan, outcome) else None
    raise refusal(plan, outcome, entries_held=held)


def refusal(plan: Plan, outcome: AtOnce, *, entries_held: int | None = None) -> Conflict:
    """The first check that failed, in the order they are made; ``entries_held`` is read
    when :func:`needs_entries_held` says the outcome alone cannot tell the two limits
    of the customer's assignment row apart."""
    if plan.code_id is not None and not outcome.code_available:
        return code_unavailable(plan)
    if not outcome.within_limit:
        if plan.campaign.per_customer_limit is None or not plan.counts_toward_limit:
            return entry_limit_reached(plan)
        if plan.entry_cap is not None and plan.lottery_entries \
                and (entries_held or 0) + plan.lottery_entries > plan.entry_cap:
            return entry_limit_reached(plan)
        return CustomerLimitReached()
    if plan.arm.incentive_type == "gift" and not outcome.in_stock:
        return Conflict("this gift is out of stock", code="out_of_stock")
    if outcome.campaign_status != "running":
        return _not_redeemable(f"the campaign is {outcome.campaign_status}, not running",
                               ("campaign_id",), "campaign_not_running")
    span = outcome.campaign_span
    scheduled = _outside_schedule(span.lower, span.upper, plan.now) \
        if span is not None else None
    if scheduled is not None:
        return scheduled
    return BudgetExhausted()


def _outside_schedule(starts_at: datetime | None, ends_at: datetime | None, now: datetime
                      ) -> Conflict | None:
    """The refusal of a redemption at ``now`` outside the campaign's schedule, if it is."""
    reason = outside_schedule(starts_at, ends_at, now)
    if reason == "campaign_ended":
        assert ends_at is not None
        return _not_redeemable(f"the campaign ended at {ends_at.isoformat()}",
                               ("campaign_id",), reason)
    if reason == "campaign_not_started":
        assert starts_at is not None
        return _not_redeemable(f"the campaign starts at {starts_at.isoformat()}",
                               ("campaign_id",), reason)
    return None


def needs_entries_held(plan: Plan, outcome: AtOnce) -> bool:
    """Whether a refusal on the assignment row may be the entry cap's or the limit's."""
    return not outcome.within_limit and (plan.code_id is None or outcome.code_available) \
        and plan.campaign.per_customer_limit is not None and plan.counts_toward_limit \
        and plan.entry_cap is not None and plan.lottery_entries > 0


def code_unavailable(plan: Plan) -> Conflict:
    """A single-use code already redeemed, or a shared code at its total cap."""
    shared = plan.shared_code
    if shared is None:
        return CodeAlreadyRedeemed()
    return _not_redeemable(f"this code has reached its limit of {shared.max_redemptions} "
                           "redemptions", ("code",), "code_limit_reached")


def entry_limit_reached(plan: Plan) -> Conflict:
    return _not_redeemable(
        f"this redemption's {plan.lottery_entries} lottery entries would take the customer "
        f"past the {plan.entry_cap} entries per customer this lottery allows",
        ("customer_id",), "entry_limit_reached")


def trial_already_granted() -> Conflict:
    return _not_redeemable("this customer already had this trial", ("campaign_id",),
                           "trial_already_granted")


# --------------------------------------------------------------------------- SQLite


def _apply_in_steps(session: Session, plan: Plan) -> int | None:
    """The same writes as :data:`REDEEM_AT_ONCE`, one statement each, in the request's
    transaction: the row first, then each conditional update, which raises on refusal
    (the caller's rollback undoes the row)."""
    redemption_id = _insert_redemption(session, _redemption_values(plan))
    if redemption_id is None:
        return None
    _charge(session, plan)
    _grant(session, plan, redemption_id=redemption_id)
    return redemption_id


def _insert_redemption(session: Session, values: dict[str, Any]) -> int | None:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING id (None: conflict)."""
    from sqlalchemy.dialects import sqlite

    statement = (sqlite.insert(_redemption).values(**values)
                 .on_conflict_do_nothing(index_elements=["idempotency_key"])
                 .returning(_redemption.c.id))
    inserted = session.execute(statement).scalar_one_or_none()
    return int(inserted) if inserted is not None else None


def _charge(session: Session, plan: Plan) -> None:
    """The conditional updates; each must touch exactly one row or the request fails."""
    if plan.code_id is not None:
        used = session.execute(
            update(CouponCode).where(col(CouponCode.id) == plan.code_id)
            .where((col(CouponCode.max_uses).is_(None))
                   | (col(CouponCode.uses) < col(CouponCode.max_uses)))
            .values(uses=CouponCode.uses + 1))
        if used.rowcount != 1:  # type: ignore[attr-defined]
            raise code_unavailable(plan)
    per_customer = update(Assignment).where(col(Assignment.id) == plan.assignment_id)
    if plan.campaign.per_customer_limit is not None and plan.counts_toward_limit:
        per_customer = per_customer.where(
            col(Assignment.redemption_count) < plan.campaign.per_customer_limit)
    limited = session.execute(per_customer.values(
        redemption_count=Assignment.redemption_count + int(plan.counts_toward_limit)))
    if limited.rowcount != 1:  # type: ignore[attr-defined]
        raise CustomerLimitReached()
    if plan.lottery_entries:
        entries = update(Assignment).where(col(Assignment.id) == plan.assignment_id)
        if plan.entry_cap is not None:
            entries = entries.where(
                col(Assignment.lottery_entries) + plan.lottery_entries <= plan.entry_cap)
        entered = session.execute(entries.values(
            lottery_entries=Assignment.lottery_entries + plan.lottery_entries))
        if entered.rowcount != 1:  # type: ignore[attr-defined]
            raise entry_limit_reached(plan)
    if plan.arm.incentive_type == "gift":
        stocked = session.execute(
            update(IncentiveStock).where(col(IncentiveStock.incentive_id) == plan.incentive_id,
                                         col(IncentiveStock.used) < col(IncentiveStock.total))
            .values(used=IncentiveStock.used + 1))
        if stocked.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("this gift is out of stock", code="out_of_stock")
    cost_minor = plan.benefit.cost_minor
    budget = update(Campaign).where(
        col(Campaign.id) == plan.campaign.id, col(Campaign.status) == "running",
        col(Campaign.starts_at).is_(None) | (col(Campaign.starts_at) <= plan.now),
        col(Campaign.ends_at).is_(None) | (col(Campaign.ends_at) > plan.now))
    if cost_minor:
        budget = budget.where(col(Campaign.budget_minor).is_(None)
                              | (col(Campaign.spent_minor) + cost_minor
                                 <= col(Campaign.budget_minor)))
    charged = session.execute(budget.values(spent_minor=Campaign.spent_minor + cost_minor))
    if charged.rowcount != 1:  # type: ignore[attr-defined]
        status, starts_at, ends_at = session.exec(
            select(Campaign.status, Campaign.starts_at, Campaign.ends_at)
            .where(Campaign.id == plan.campaign.id)).one()
        if status != "running":
            raise _not_redeemable(f"the campaign is {status}, not running", ("campaign_id",),
                                  "campaign_not_running")
        raise _outside_schedule(starts_at, ends_at, plan.now) or BudgetExhausted()


def _grant(session: Session, plan: Plan, *, redemption_id: int) -> None:
    """Type-specific effects of a redemption: trial, points, lottery entries."""
    if "trial" in plan.extra:
        grant = TrialGrant(customer_id=plan.customer_id, campaign_id=plan.campaign.id,
                           incentive_id=plan.incentive_id, redemption_id=redemption_id,
                           product=plan.arm.config.product, starts_at=plan.now,
                           ends_at=plan.trial_ends_at)
        try:
            with session.begin_nested():
                session.add(grant)
                session.flush()
        except IntegrityError:
            raise trial_already_granted() from None
    if "points" in plan.extra:
        session.add(PointsLedger(customer_id=plan.customer_id, campaign_id=plan.campaign.id,
                                 delta=plan.extra["points"], reason="redemption",
                                 source_ref=f"redemption:{redemption_id}",
                                 created_at=plan.now))
        session.execute(update(Customer).where(col(Customer.id) == plan.customer_id)
                        .values(points=Customer.points + plan.extra["points"]))
    if plan.code_once_per_customer:
        assert plan.code_id is not None
        try:
            with session.begin_nested():
                session.add(CouponCodeUse(coupon_code_id=plan.code_id,
                                          customer_id=plan.customer_id,
                                          redemption_id=redemption_id))
                session.flush()
        except IntegrityError:
            raise code_already_used() from None
    if plan.lottery_entries:
        insert_ignore(session, LotteryEntry, [{
            "campaign_id": plan.campaign.id, "incentive_id": plan.incentive_id,
            "customer_id": plan.customer_id, "entries": plan.extra["lottery_entries"],
            "source_ref": f"redemption:{redemption_id}", "created_at": plan.now}],
            conflict_columns=["campaign_id", "source_ref"])


# --------------------------------------------------------------------------- rollback


def rollback_redemption(session: Session, *, redemption_id: int, now: datetime,
                        by_api_key: int | None = None) -> dict[str, Any]:
    """Undo an applied redemption (order cancelled): budget, limit, code and stock come back.

    ``by_api_key``: the storefront key asking; a redemption another key made is then
    :func:`redemption_not_found`, the very answer to an id that does not exist, so ids
    tell a stranger nothing. None: a management caller, who may roll back any redemption.

    The status flip ``applied -> rolled_back`` is itself a conditional UPDATE, so of many
    concurrent rollbacks exactly one restores anything; the others see it already done.
    It runs in a savepoint and again if PostgreSQL picks it as a deadlock victim (a rollback
    meets a busy campaign's redemptions the way two redemptions do; see
    :func:`_execute_at_once`): the aborted attempt restored nothing.
    """
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            with session.begin_nested():
                return _rollback_once(session, redemption_id=redemption_id, now=now,
                                      by_api_key=by_api_key)
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != _DEADLOCK_DETECTED \
                    or attempt == DEADLOCK_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def redemption_not_found() -> NotFound:
    """The one answer to a redemption id the caller may not act on, whether it exists or not."""
    return NotFound("no such redemption", code="redemption_not_found")


def _rollback_once(session: Session, *, redemption_id: int, now: datetime,
                   by_api_key: int | None) -> dict[str, Any]:
    redemption = session.get(Redemption, redemption_id)
    if redemption is None or (by_api_key is not None and redemption.api_key_id != by_api_key):
        raise redemption_not_found()
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
    response = redemption.response or {}
    if redemption.coupon_code_id is not None:
        session.execute(update(CouponCode).where(col(CouponCode.id) == redemption.coupon_code_id)
                        .values(uses=CouponCode.uses - 1))
        session.execute(delete(CouponCodeUse).where(
            col(CouponCodeUse.redemption_id) == redemption.id))
    entries = int(response.get("lottery_entries", 0) or 0)
    session.execute(update(Assignment).where(
        col(Assignment.campaign_id) == redemption.campaign_id,
        col(Assignment.customer_id) == redemption.customer_id)
        .values(redemption_count=Assignment.redemption_count
                - int(response.get("counts_toward_limit", True) is not False),
                lottery_entries=Assignment.lottery_entries - entries))
    if entries:
        # Kept for the draws made before (they still verify); no later draw counts them.
        session.execute(update(LotteryEntry).where(
            col(LotteryEntry.campaign_id) == redemption.campaign_id,
            col(LotteryEntry.source_ref) == f"redemption:{redemption.id}")
            .values(rolled_back_at=now))
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
    ``campaign_not_running``, ``campaign_ended``, ``campaign_not_started``,
    ``not_applicable``); the web layer makes every answer take the
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
    scheduled = outside_schedule(campaign.starts_at, campaign.ends_at, now)
    if scheduled is not None:
        return {"valid": False, "reason": scheduled,
                "message": "this code's campaign has ended" if scheduled == "campaign_ended"
                else "this code's campaign has not started yet"}
    if code.expires_at is not None and code.expires_at <= now:
        return {"valid": False, "reason": "expired", "message": "this code has expired",
                "expired_at": code.expires_at.isoformat()}
    assert arm.incentive_type is not None and arm.offer is not None
    shared = get_incentive_type(arm.incentive_type).shared_code(arm.config)
    if code.max_uses is not None and code.uses >= code.max_uses:
        return {"valid": False, "reason": "used", "message": "this code has already been used"
                if shared is None else f"this code has reached its limit of {code.max_uses} "
                "redemptions"}
    if customer_external_id is not None and code.customer_id is not None:
        owner = session.get(Customer, code.customer_id)
        if owner is None or owner.external_id != customer_external_id:
            return {"valid": False, "reason": "not_yours",
                    "message": "this code was issued to another customer"}
    if customer_external_id is not None and shared is not None and shared.once_per_customer \
            and session.exec(select(CouponCodeUse.id).join(
                Customer, col(Customer.id) == CouponCodeUse.customer_id).where(
                CouponCodeUse.coupon_code_id == code.id,
                Customer.external_id == customer_external_id)).first() is not None:
        return {"valid": False, "reason": "already_used",
                "message": "this customer has already used this code, which each customer "
                           "may use once"}
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
                                         target_channel_key=campaign.target_channel_key,
                                         currency=campaign.currency))
        except ValidationFailed as error:
            return {"valid": False, "reason": "not_applicable", "message": error.message,
                    "errors": [e.as_dict() for e in error.errors]}
        result["benefit_minor"] = benefit.benefit_minor
    return result
