"""The offers hot path on PostgreSQL: one statement for the customer, one for exposures
and codes.

The same work as :func:`campaigns.services.offers.customer_offers`, written as
data-modifying CTEs so that each step is a single round trip, and run through psycopg's
async driver without the ORM: on a storefront's busiest route, building and tracking ORM
objects, and handing every round trip to a thread and back, cost more than PostgreSQL's
work. The statements are prepared once per connection; their text depends neither on the
number of campaigns nor on the number of requests they serve.

The server runs them on connections of its own async pool in autocommit: each statement is
its own transaction. Requests in flight at the same time share them (:class:`GroupedSteps`,
:class:`campaigns.asyncdb.Grouped`): one statement gets or creates the customers of several
requests, one records their first exposures, claims the coupon codes of the offers they
show for the first time and reads their standing, so a busy server pays a statement's
fixed cost (round trip, driver, parse, locks, WAL flush) once for many requests. That is
safe because every step stands alone: a customer created by a request that then fails is
simply found by the next one; exposures and their codes are written and read back in one
statement. An offer that still needs a code after it (a customer exposed earlier whose
claim failed, a claim that lost a race) gets it from a third statement, and a customer
exposed without a code gets one on the next request. The same code runs inside a caller's
transaction, one request at a time (:class:`DirectSteps` on a
:class:`~campaigns.asyncdb.SessionConnection`), where a failed statement is undone by a
savepoint.

Rows are inserted in the order of their unique keys, so two concurrent statements that
insert some of the same customers or exposures wait for each other instead of deadlocking.
A CTE's ``SELECT`` does not see rows its own ``INSERT`` wrote, nor rows a concurrent
transaction committed after the statement started. Both statements therefore return the
inserted rows (``RETURNING``) next to the ones that were there, and read again in a new
statement in the rare race where another request inserted the same row meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, Self, TypeVar

from psycopg.errors import DeadlockDetected, UniqueViolation
from pydantic_core import to_json

from campaigns.asyncdb import Database, Grouped, fetch_alone
from campaigns.services.catalog import CampaignConfig, Snapshot
from campaigns.services.customers import CustomerAttributes
from campaigns.services.offers import (
    Exposure,
    IssuedCode,
    OfferView,
    _assignment_rows,
    choose_campaigns,
    code_expiry,
    describe_offers,
    fresh_code,
    needs_own_code,
    offers_to_show,
)
from campaigns.types import utcnow

T = TypeVar("T")

_CUSTOMER_COLUMNS = ("id, external_id, segment, value_tier, loyalty_tier, preferred_channel, "
                     "region, age_band, tenure_months, points, lifetime_value_minor, is_new, "
                     "attributes")
_ATTRIBUTE_NAMES = ("segment", "value_tier", "loyalty_tier", "preferred_channel", "region",
                    "age_band", "tenure_months", "points", "lifetime_value", "is_new",
                    "attributes")
#: The attributes a new customer is created with, and their column types.
_NEW_CUSTOMER = (("segment", "varchar"), ("value_tier", "varchar"), ("loyalty_tier", "varchar"),
                 ("preferred_channel", "varchar"), ("region", "varchar"),
                 ("age_band", "varchar"), ("tenure_months", "integer"), ("is_new", "boolean"),
                 ("attributes", "jsonb"))
_NEW_CUSTOMER_NAMES = ", ".join(name for name, _ in _NEW_CUSTOMER)

# The statements are assembled from constant fragments only; values are always parameters.
# Each takes its rows (one per customer or exposure) as one JSON array, so that one text
# (prepared once per connection) serves one request or many (see campaigns.asyncdb.Grouped).
# One JSON text is also cheaper to send than an array per column: psycopg dumps a list
# element by element in Python, about 0.1 ms for the customer statement's nine arrays.
_FIND_CUSTOMERS = (f"SELECT {_CUSTOMER_COLUMNS} FROM customer "  # noqa: S608
                   "WHERE external_id = ANY(CAST(%(external_ids)s AS varchar[]))")

_GET_OR_CREATE_CUSTOMERS = f"""
WITH t AS (
    SELECT * FROM jsonb_to_recordset(CAST(%(customers)s AS jsonb))
    AS t(external_id varchar, {", ".join(f"{name} {kind}" for name, kind in _NEW_CUSTOMER)})),
found AS (SELECT {_CUSTOMER_COLUMNS} FROM customer
          WHERE external_id IN (SELECT external_id FROM t)),
created AS (
    INSERT INTO customer (external_id, {_NEW_CUSTOMER_NAMES}, points, lifetime_value_minor,
                          created_at)
    SELECT t.external_id, {", ".join(f"t.{name}" for name, _ in _NEW_CUSTOMER)}, 0, 0,
           CAST(%(now)s AS timestamptz)
    FROM t
    WHERE NOT EXISTS (SELECT FROM found WHERE found.external_id = t.external_id)
    ON CONFLICT (external_id) DO NOTHING
    RETURNING {_CUSTOMER_COLUMNS})
SELECT * FROM found UNION ALL SELECT * FROM created
"""  # noqa: S608

_STANDING_COLUMNS = ("s.customer_id, s.campaign_id, s.arm_id, s.redemption_count, "
                     "c.spent_minor, cc.code, cc.expires_at, cc.uses, cc.max_uses, "
                     "c.starts_at, c.ends_at")
_STANDING_JOINS = """
CROSS JOIN LATERAL (SELECT spent_minor, starts_at, ends_at FROM campaign
                    WHERE id = s.campaign_id LIMIT 1) c
LEFT JOIN LATERAL (SELECT code, expires_at, uses, max_uses FROM coupon_code
                   WHERE campaign_id = s.campaign_id AND customer_id = s.customer_id
                   LIMIT 1) cc ON true
"""
# Existing rows are looked up row by row, each by its unique key (LATERAL subqueries with
# LIMIT, which the planner keeps as written; there is at most one row anyway). Planned for
# a JSON array of unknown length (PostgreSQL assumes 100 rows), plain joins would hash
# whole tables: the plans are generic and kept (see web.deps.AsyncPool), and an
# assignment or coupon_code table of a few thousand rows is cheaper to read whole than
# with 100 index lookups, so every statement would read it whole as it grows. The same
# holds for the campaign table: joined plainly, every statement read all its rows (100
# campaigns: a fifth of a one-exposure statement's time) to hash them.
_EXPOSURES = """
t AS (SELECT * FROM jsonb_to_recordset(CAST(%(exposures)s AS jsonb))
      AS t(customer_id bigint, campaign_id bigint, arm_id bigint, period integer,
           channel_id bigint, exposed_at timestamptz, incentive_id bigint, code varchar,
           code_expires_at timestamptz, budget_minor bigint, unit_cost_minor bigint))
"""
_EXISTING_ASSIGNMENTS = """
SELECT t.customer_id, t.campaign_id, a.arm_id, a.redemption_count
FROM t CROSS JOIN LATERAL (SELECT arm_id, redemption_count FROM assignment
                           WHERE campaign_id = t.campaign_id AND customer_id = t.customer_id
                           LIMIT 1) a
"""

# The k-th code wanted of a batch (by campaign and incentive) is its k-th unissued code
# that no concurrent statement holds (SKIP LOCKED); a claim the batch has no code left for
# inserts the new code it brought. Used by the exposure statement and by _ISSUE_CODES.
_CLAIM_CODES = """
wanted AS (SELECT campaign_id, incentive_id, count(*) AS count FROM wants GROUP BY 1, 2),
pooled AS (
    SELECT w.campaign_id, w.incentive_id, p.id, p.n
    FROM wanted w CROSS JOIN LATERAL (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT id FROM coupon_code
              WHERE campaign_id = w.campaign_id AND incentive_id = w.incentive_id
                AND customer_id IS NULL
              ORDER BY id LIMIT w.count FOR UPDATE SKIP LOCKED) AS free) p),
claimed AS (
    UPDATE coupon_code c
    SET customer_id = wants.customer_id, issued_at = wants.issued_at,
        expires_at = wants.expires_at
    FROM wants JOIN pooled USING (campaign_id, incentive_id, n)
    WHERE c.id = pooled.id
    RETURNING c.campaign_id, c.customer_id, c.code, c.expires_at, c.uses, c.max_uses),
created_codes AS (
    INSERT INTO coupon_code (code, incentive_id, campaign_id, customer_id, max_uses, uses,
                             issued_at, expires_at, created_at)
    SELECT wants.code, wants.incentive_id, wants.campaign_id, wants.customer_id,
           1, 0, wants.issued_at, wants.expires_at, wants.issued_at
    FROM wants
    WHERE NOT EXISTS (SELECT FROM pooled WHERE pooled.campaign_id = wants.campaign_id
                        AND pooled.incentive_id = wants.incentive_id
                        AND pooled.n = wants.n)
    ORDER BY wants.campaign_id, wants.customer_id
    ON CONFLICT DO NOTHING
    RETURNING campaign_id, customer_id, code, expires_at, uses, max_uses),
issued AS (SELECT * FROM claimed UNION ALL SELECT * FROM created_codes)
"""

# First exposures, the standing of every exposed campaign and the coupon codes of the
# offers first shown, in one statement. A code is claimed only for an assignment this
# statement created (so no other statement claims one for the same customer and
# campaign), for a row that brought a claim (the arm's offer carries a code of the
# customer's own), and when the campaign's budget can pay the offer and its row's schedule
# admits it at the request's time, as offered_arm decides it. Any other offer that needs a
# code gets it from the code statement.
_EXPOSE = f"""
WITH {_EXPOSURES},
created AS (
    INSERT INTO assignment (campaign_id, customer_id, arm_id, allocation_period,
                            first_exposed_at, exposure_channel_id, redemption_count)
    SELECT t.campaign_id, t.customer_id, t.arm_id, t.period, t.exposed_at, t.channel_id, 0
    FROM t
    ON CONFLICT (campaign_id, customer_id) DO NOTHING
    RETURNING customer_id, campaign_id, arm_id, redemption_count),
s AS (SELECT s.*, c.spent_minor, cc.code, cc.expires_at, cc.uses, cc.max_uses,
             c.starts_at, c.ends_at
      FROM (SELECT *, true AS fresh FROM created
            UNION ALL SELECT *, false FROM ({_EXISTING_ASSIGNMENTS}) e) s
      {_STANDING_JOINS}),
wants AS (
    SELECT t.campaign_id, t.incentive_id, t.customer_id, t.code, t.exposed_at AS issued_at,
           t.code_expires_at AS expires_at,
           row_number() OVER (PARTITION BY t.campaign_id, t.incentive_id
                              ORDER BY t.customer_id) AS n
    FROM s JOIN t ON t.campaign_id = s.campaign_id AND t.customer_id = s.customer_id
    WHERE s.fresh AND s.code IS NULL AND t.incentive_id IS NOT NULL
      AND (s.starts_at IS NULL OR s.starts_at <= t.exposed_at)
      AND (s.ends_at IS NULL OR s.ends_at > t.exposed_at)
      AND (t.budget_minor IS NULL
           OR (t.budget_minor - s.spent_minor > 0
               AND t.budget_minor - s.spent_minor >= t.unit_cost_minor))),
{_CLAIM_CODES}
SELECT s.customer_id, s.campaign_id, s.arm_id, s.redemption_count, s.spent_minor,
       coalesce(s.code, i.code), coalesce(s.expires_at, i.expires_at),
       coalesce(s.uses, i.uses), coalesce(s.max_uses, i.max_uses), s.starts_at, s.ends_at
FROM s LEFT JOIN issued i ON i.campaign_id = s.campaign_id AND i.customer_id = s.customer_id
"""  # noqa: S608

_STANDING = f"""
WITH {_EXPOSURES}
SELECT {_STANDING_COLUMNS} FROM ({_EXISTING_ASSIGNMENTS}) AS s {_STANDING_JOINS}
"""  # noqa: S608


def _json(rows: list[dict[str, Any]]) -> str:
    """Rows as the JSON text a statement takes (pydantic-core: a fourth of ``json.dumps``'s
    time for the exposure rows)."""
    return to_json(rows).decode()


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


@dataclass(frozen=True)
class NewCustomer:
    """A customer to find, or to create with ``attributes`` if unseen."""

    external_id: str
    attributes: CustomerAttributes


@dataclass(frozen=True)
class CodeOffer:
    """The customer's own coupon code to claim with a first exposure (see ``_EXPOSE``):
    the arm's incentive, a new code for when its batch has none left, the code's expiry,
    and what :func:`campaigns.services.offers.offered_arm` needs to tell whether the
    campaign's budget can pay the offer."""

    incentive_id: int
    code: str
    expires_at: datetime | None
    budget_minor: int | None
    unit_cost_minor: int


@dataclass(frozen=True)
class FirstExposures:
    """A customer's first exposures to record: (campaign, arm, period) rows, and the codes
    to claim with them, by campaign."""

    customer_id: int
    rows: list[tuple[int, int, int]]
    channel_id: int | None
    now: datetime
    codes: Mapping[int, CodeOffer] = field(default_factory=dict)


CustomerRow = tuple[int, dict[str, object]]


async def get_or_create_customers(database: Database, customers: list[NewCustomer]
                                  ) -> list[CustomerRow]:
    """Each customer's id and the attributes eligibility rules see (created if unseen).

    New customers are inserted in the order of their ids, so two concurrent statements
    that create some of the same customers wait for each other rather than deadlock.
    """
    new: dict[str, CustomerAttributes] = {}
    for customer in sorted(customers, key=lambda customer: customer.external_id):
        new.setdefault(customer.external_id, customer.attributes)
    rows_in = [{"external_id": external_id,
                **{name: getattr(attributes, name) for name, _ in _NEW_CUSTOMER}}
               for external_id, attributes in new.items()]
    params = {"customers": _json(rows_in), "now": utcnow()}
    rows = await (await database.execute(_GET_OR_CREATE_CUSTOMERS, params, prepare=True)
                  ).fetchall()
    found = {row[1]: row for row in rows}
    if len(found) < len(new):
        # A concurrent first sighting inserted a customer after this statement began.
        missing = [external_id for external_id in new if external_id not in found]
        rows = await (await database.execute(_FIND_CUSTOMERS, {"external_ids": missing},
                                             prepare=True)).fetchall()
        found |= {row[1]: row for row in rows}
    results = []
    for customer in customers:
        row = found.get(customer.external_id)
        if row is None:
            raise RuntimeError(f"customer '{customer.external_id}' could be neither found "
                               "nor created")
        values = dict(zip(_ATTRIBUTE_NAMES, row[2:], strict=True))
        values["attributes"] = values["attributes"] or {}
        results.append((int(row[0]), values))
    return results


def _code_columns(offer: CodeOffer | None) -> dict[str, Any]:
    if offer is None:
        return {}
    return {"incentive_id": offer.incentive_id, "code": offer.code,
            "code_expires_at": _iso(offer.expires_at), "budget_minor": offer.budget_minor,
            "unit_cost_minor": offer.unit_cost_minor}


def _exposure_params(exposures: list[FirstExposures], *, claim_codes: bool = True
                     ) -> dict[str, Any]:
    # One row per (campaign, customer), in that order: the order of the unique key, so
    # concurrent statements insert shared rows in the same order and cannot deadlock. Of
    # two requests for the same customer, the first one's row (arm, time, code) is sent.
    rows = sorted({(campaign_id, exposure.customer_id): (arm_id, period, exposure)
                   for exposure in reversed(exposures)
                   for campaign_id, arm_id, period in exposure.rows}.items(),
                  key=lambda item: item[0])
    return {"exposures": _json([
        {"customer_id": customer_id, "campaign_id": campaign_id, "arm_id": arm_id,
         "period": period, "channel_id": exposure.channel_id,
         "exposed_at": exposure.now.isoformat(),
         **_code_columns(exposure.codes.get(campaign_id) if claim_codes else None)}
        for (campaign_id, customer_id), (arm_id, period, exposure) in rows]),
        "count": len(rows)}


def _standing(rows: list[Any]) -> dict[tuple[int, int], Exposure]:
    return {
        (customer_id, campaign_id): Exposure(
            arm_id, count, spent, IssuedCode(code, _utc(expires), uses, max_uses)
            if code else None, _utc(starts_at), _utc(ends_at))
        for customer_id, campaign_id, arm_id, count, spent, code, expires, uses, max_uses,
        starts_at, ends_at in rows}


async def expose_all(database: Database, exposures: list[FirstExposures]
                     ) -> list[dict[int, Exposure]]:
    """Record first exposures, claim the codes of the offers first shown, and read each
    customer's standing, by campaign.

    The first exposure of a (campaign, customer) wins: a row already there keeps its arm
    and time, and so does the first of two requests for the same customer in one batch.
    If claiming a code fails on a race (a code issued to the customer meanwhile by another
    way, a deadlock between two claims), the statement leaves nothing behind and runs
    again without claims; those offers then get their codes from the code statement.
    """
    if not any(exposure.rows for exposure in exposures):
        return [{} for _ in exposures]
    params = _exposure_params(exposures)
    count = params.pop("count")
    try:
        rows = await fetch_alone(database, _EXPOSE, params)
    except (UniqueViolation, DeadlockDetected):
        params = _exposure_params(exposures, claim_codes=False)
        count = params.pop("count")
        rows = await fetch_alone(database, _EXPOSE, params)
    standing = _standing(rows)
    if len(standing) < count:
        # Another request exposed a customer concurrently and committed after this
        # statement began: its rows are visible to a new statement.
        standing = _standing(await (await database.execute(_STANDING, params, prepare=True)
                                    ).fetchall())
    return [{campaign_id: standing[exposure.customer_id, campaign_id]
             for campaign_id, _, _ in exposure.rows
             if (exposure.customer_id, campaign_id) in standing}
            for exposure in exposures]


# The batch's next unissued code if there is one, else a new code: one statement. ON
# CONFLICT without a target covers both unique keys of a new code: the code itself, and one
# issued code per customer and campaign.
_ISSUE_CODE = """
WITH claimed AS (
    UPDATE coupon_code
    SET customer_id = %(customer_id)s, issued_at = CAST(%(now)s AS timestamptz),
        expires_at = CAST(%(expires_at)s AS timestamptz)
    WHERE id = (SELECT id FROM coupon_code
                WHERE campaign_id = %(campaign_id)s AND incentive_id = %(incentive_id)s
                  AND customer_id IS NULL
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING code, expires_at, uses, max_uses),
created AS (
    INSERT INTO coupon_code (code, incentive_id, campaign_id, customer_id, max_uses, uses,
                             issued_at, expires_at, created_at)
    SELECT %(code)s, %(incentive_id)s, %(campaign_id)s, %(customer_id)s, 1, 0,
           CAST(%(now)s AS timestamptz), CAST(%(expires_at)s AS timestamptz),
           CAST(%(now)s AS timestamptz)
    WHERE NOT EXISTS (SELECT FROM claimed)
    ON CONFLICT DO NOTHING
    RETURNING code, expires_at, uses, max_uses)
SELECT * FROM claimed UNION ALL SELECT * FROM created
"""

_ISSUED_CODE = """
SELECT code, expires_at, uses, max_uses FROM coupon_code
WHERE campaign_id = %(campaign_id)s AND customer_id = %(customer_id)s
"""


async def _claim(database: Database, params: dict[str, Any]) -> Any:
    try:
        rows = await fetch_alone(database, _ISSUE_CODE, params)
    except UniqueViolation:
        return None
    return rows[0] if rows else None


async def issue_code(database: Database, *, campaign: CampaignConfig, arm: Any,
                     customer_id: int, now: datetime) -> IssuedCode:
    """Claim the batch's next unissued code for the customer, or create one."""
    assert arm.incentive_id is not None
    params: dict[str, Any] = {"campaign_id": campaign.id, "incentive_id": arm.incentive_id,
                              "customer_id": customer_id, "now": now,
                              "expires_at": code_expiry(arm, campaign, now)}
    for _attempt in range(5):
        row = await _claim(database, params | {"code": fresh_code(arm)})
        if row is None:
            # Someone else's code for this customer (read it), or a random code that
            # collided with an existing one (try another).
            row = await (await database.execute(_ISSUED_CODE, params, prepare=True)).fetchone()
        if row is not None:
            code, expires, uses, max_uses = row
            return IssuedCode(code, _utc(expires), uses, max_uses)
    raise RuntimeError("could not issue a unique coupon code in 5 attempts")


# Codes for many (campaign, customer) pairs at once (see _CLAIM_CODES). A claim that is
# answered by neither a batch code nor its new code (a concurrent request issued that
# customer's code first, or the new code collided with an existing one) is left out of the
# result and issued on its own (see issue_codes).
_ISSUE_CODES = f"""
WITH t AS (
    SELECT * FROM jsonb_to_recordset(CAST(%(claims)s AS jsonb))
    AS t(k integer, campaign_id bigint, incentive_id bigint, customer_id bigint,
         code varchar, issued_at timestamptz, expires_at timestamptz)),
wants AS (
    SELECT t.*, row_number() OVER (PARTITION BY campaign_id, incentive_id ORDER BY k) AS n
    FROM t),
{_CLAIM_CODES}
SELECT * FROM issued
"""  # noqa: S608


@dataclass(frozen=True)
class CodeClaim:
    """A code of the customer's own to issue for an offer (see :func:`issue_code`)."""

    campaign: CampaignConfig
    arm: Any
    customer_id: int
    now: datetime

    @property
    def key(self) -> tuple[int, int]:
        return self.campaign.id, self.customer_id


async def issue_codes(database: Database, claims: list[CodeClaim]) -> list[IssuedCode]:
    """Issue codes for several offers and customers in one statement, one per claim.

    Claims for the same campaign and customer get the same code. If the statement fails
    on a race (two batches issuing one customer's code at once), it leaves nothing behind
    (it is its own transaction, or a savepoint in a caller's), and each claim is then
    issued on its own.
    """
    unique = {claim.key: claim for claim in reversed(claims)}
    if len(unique) == 1:
        only = claims[0]
        issued = await issue_code(database, campaign=only.campaign, arm=only.arm,
                                  customer_id=only.customer_id, now=only.now)
        return [issued for _ in claims]
    rows = [{"k": k, "campaign_id": claim.campaign.id, "incentive_id": claim.arm.incentive_id,
             "customer_id": claim.customer_id, "code": fresh_code(claim.arm),
             "issued_at": claim.now.isoformat(),
             "expires_at": _iso(code_expiry(claim.arm, claim.campaign, claim.now))}
            for k, (_, claim) in enumerate(sorted(unique.items()))]
    params = {"claims": _json(rows)}
    found: dict[tuple[int, int], IssuedCode] = {}
    try:
        result = await fetch_alone(database, _ISSUE_CODES, params)
        found = {(campaign_id, customer_id): IssuedCode(code, _utc(expires), uses, max_uses)
                 for campaign_id, customer_id, code, expires, uses, max_uses in result}
    except (UniqueViolation, DeadlockDetected):
        pass
    for key, claim in sorted(unique.items()):
        if key not in found:
            found[key] = await issue_code(database, campaign=claim.campaign, arm=claim.arm,
                                          customer_id=claim.customer_id, now=claim.now)
    return [found[claim.key] for claim in claims]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class OfferSteps(Protocol):
    """The database steps of an offers request: alone on one connection
    (:class:`DirectSteps`), or grouped with concurrent requests' (:class:`GroupedSteps`).
    The request runs them inside ``async with steps:``."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def customer(self, customer: NewCustomer) -> CustomerRow: ...

    async def expose(self, exposures: FirstExposures) -> dict[int, Exposure]: ...

    async def issue_codes(self, claims: list[CodeClaim]) -> list[IssuedCode]: ...


class DirectSteps:
    """Every step on one connection, as its own statement: for a caller's transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def customer(self, customer: NewCustomer) -> CustomerRow:
        return (await get_or_create_customers(self.database, [customer]))[0]

    async def expose(self, exposures: FirstExposures) -> dict[int, Exposure]:
        return (await expose_all(self.database, [exposures]))[0]

    async def issue_codes(self, claims: list[CodeClaim]) -> list[IssuedCode]:
        return [await issue_code(self.database, campaign=claim.campaign, arm=claim.arm,
                                 customer_id=claim.customer_id, now=claim.now)
                for claim in claims]


Run = Callable[[Callable[[Database], Awaitable[T]]], Awaitable[T]]


def _flattened(flush: Callable[[list[CodeClaim]], Awaitable[list[IssuedCode]]]
               ) -> Callable[[list[list[CodeClaim]]], Awaitable[list[list[IssuedCode]]]]:
    """A flush of single claims as a flush of each request's list of claims."""
    async def flush_lists(lists: list[list[CodeClaim]]) -> list[list[IssuedCode]]:
        issued = iter(await flush([claim for claims in lists for claim in claims]))
        return [[next(issued) for _ in claims] for claims in lists]
    return flush_lists


#: How long an exposure statement waits for the requests in flight that are still getting
#: their customer (see Grouped): about two customer statements.
EXPOSURE_LINGER_SECONDS = 0.002


class StepGroups:
    """The grouped statements of one server process (one event loop): customers, first
    exposures and coupon codes.

    ``runner`` gives each group its own ``run``, which runs a unit of work on a connection
    of the process's pool (and once more after a connection error: every statement here
    stands alone, so that is safe); one statement of a group runs at a time, so each group
    can keep a connection of its own.

    The exposure statement waits (up to ``exposure_linger`` seconds) for the requests in
    flight that have not sent their exposures yet: they are getting their customer, and
    nearly all of them will. Under moderate load that makes one exposure statement of
    several requests where there were several of one each.
    """

    def __init__(self, runner: Callable[[], Run[Any]], *,
                 exposure_linger: float = EXPOSURE_LINGER_SECONDS) -> None:
        #: Requests in flight, and how many of them have sent their exposures.
        self.in_flight = 0
        self.exposing = 0
        run_customers, run_exposures, run_codes = runner(), runner(), runner()
        self.customers: Grouped[NewCustomer, CustomerRow] = Grouped(
            lambda customers: run_customers(
                lambda database: get_or_create_customers(database, customers)))
        self.exposures: Grouped[FirstExposures, dict[int, Exposure]] = Grouped(
            lambda exposures: run_exposures(lambda database: expose_all(database, exposures)),
            linger=exposure_linger, coming=lambda: self.in_flight - self.exposing)
        self.codes: Grouped[list[CodeClaim], list[IssuedCode]] = Grouped(_flattened(
            lambda claims: run_codes(lambda database: issue_codes(database, claims))))


class GroupedSteps:
    """A request's steps on the server's pool: its customer, its first exposures and its
    coupon codes are written together with those of the requests in flight at the same
    time."""

    def __init__(self, groups: StepGroups) -> None:
        self.groups = groups
        self._exposing = False

    async def __aenter__(self) -> Self:
        self.groups.in_flight += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.groups.in_flight -= 1
        if self._exposing:
            self.groups.exposing -= 1
        else:
            self.groups.exposures.recheck()  # an exposure statement may be waiting for it

    async def customer(self, customer: NewCustomer) -> CustomerRow:
        return await self.groups.customers.submit(customer)

    async def expose(self, exposures: FirstExposures) -> dict[int, Exposure]:
        if not self._exposing:
            self._exposing = True
            self.groups.exposing += 1
        return await self.groups.exposures.submit(exposures)

    async def issue_codes(self, claims: list[CodeClaim]) -> list[IssuedCode]:
        return await self.groups.codes.submit(claims)


def _code_offers(chosen: list[CampaignConfig], rows: list[tuple[int, int, int]],
                 now: datetime) -> dict[int, CodeOffer]:
    """The code to claim with each first exposure whose offer carries a code of the
    customer's own, if :func:`campaigns.services.offers.offered_arm` would show it to a
    customer just exposed (no redemption yet; the budget is checked in the statement)."""
    campaigns = {campaign.id: campaign for campaign in chosen}
    offers = {}
    for campaign_id, arm_id, _ in rows:
        campaign = campaigns[campaign_id]
        arm = campaign.arm(arm_id)
        if arm is None or arm.is_control or not needs_own_code(arm) \
                or arm.incentive_id is None \
                or (campaign.per_customer_limit is not None and campaign.per_customer_limit <= 0):
            continue
        offers[campaign_id] = CodeOffer(arm.incentive_id, fresh_code(arm),
                                        code_expiry(arm, campaign, now), campaign.budget_minor,
                                        arm.unit_cost_minor)
    return offers


async def customer_offers(steps: OfferSteps, *, snapshot: Snapshot, external_id: str,
                          attributes: CustomerAttributes, channel_key: str | None,
                          stage_key: str | None, now: datetime) -> list[OfferView]:
    """:func:`campaigns.services.offers.customer_offers` in two statements (three when an
    offer needs a code the exposure statement did not claim)."""
    channel_id = snapshot.channel_ids.get(channel_key) if channel_key else None
    customer_id, customer_attributes = await steps.customer(NewCustomer(external_id,
                                                                        attributes))
    chosen = choose_campaigns(snapshot, attributes=customer_attributes, stage_key=stage_key,
                              now=now)
    if not chosen:
        return []
    rows = _assignment_rows(chosen, external_id=external_id)
    exposures = await steps.expose(FirstExposures(
        customer_id, rows, channel_id, now, _code_offers(chosen, rows, now))) if rows else {}
    shown = offers_to_show(chosen, exposures, now=now)
    claims = [CodeClaim(offer.campaign, offer.arm, customer_id, now)
              for offer in shown if offer.code_to_issue]
    issued = dict(zip((claim.campaign.id for claim in claims),
                      await steps.issue_codes(claims), strict=True)) if claims else {}
    return describe_offers(shown, issued, now=now)
