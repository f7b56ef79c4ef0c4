"""The offers hot path on PostgreSQL: one statement for the customer, one for the exposures.

The same work as :func:`campaigns.services.offers.customer_offers`, written as
data-modifying CTEs so that each step is a single round trip, and run through psycopg's
async driver without the ORM: on a storefront's busiest route, building and tracking ORM
objects, and handing every round trip to a thread and back, cost more than PostgreSQL's
work. The statements are prepared once per connection; their text does not depend on the
number of campaigns.

The server runs them on connections of its own async pool in autocommit: each statement is
its own transaction, so a request costs two or three round trips and no BEGIN or COMMIT.
That is safe because every step stands alone: a customer created by a request that then
fails is simply found by the next one; exposures are inserted and read back in one
statement; a code is claimed for a customer already exposed, and a customer exposed
without a code gets one on the next request. The same code runs inside a caller's
transaction (:class:`SessionConnection`), where a failed code claim is undone by a
savepoint. (:mod:`campaigns.asyncdb` has the connection types.)

A CTE's ``SELECT`` does not see rows its own ``INSERT`` wrote, nor rows a concurrent
transaction committed after the statement started. Both statements therefore return the
inserted rows (``RETURNING``) next to the ones that were there, and read again in a new
statement in the rare race where another request inserted the same row meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from campaigns.asyncdb import Database
from campaigns.services.catalog import CampaignConfig, Snapshot
from campaigns.services.customers import CustomerAttributes
from campaigns.services.offers import (
    Exposure,
    IssuedCode,
    OfferView,
    _assignment_rows,
    _candidates,
    code_expiry,
    describe_offers,
    fresh_code,
    offers_to_show,
    resolve_stacking,
)
from campaigns.types import utcnow

_CUSTOMER_COLUMNS = ("id, segment, value_tier, loyalty_tier, preferred_channel, region, "
                     "age_band, tenure_months, points, lifetime_value_minor, is_new, attributes")
_ATTRIBUTE_NAMES = ("segment", "value_tier", "loyalty_tier", "preferred_channel", "region",
                    "age_band", "tenure_months", "points", "lifetime_value", "is_new",
                    "attributes")

# The statements are assembled from constant fragments only; values are always parameters.
_FIND_CUSTOMER = (f"SELECT {_CUSTOMER_COLUMNS} FROM customer "  # noqa: S608
                  "WHERE external_id = %(external_id)s")

_GET_OR_CREATE_CUSTOMER = f"""
WITH found AS ({_FIND_CUSTOMER}),
created AS (
    INSERT INTO customer (external_id, segment, value_tier, loyalty_tier, preferred_channel,
                          region, age_band, tenure_months, points, lifetime_value_minor,
                          is_new, attributes, created_at)
    SELECT %(external_id)s, CAST(%(segment)s AS varchar), CAST(%(value_tier)s AS varchar),
           CAST(%(loyalty_tier)s AS varchar), CAST(%(preferred_channel)s AS varchar),
           CAST(%(region)s AS varchar), CAST(%(age_band)s AS varchar),
           CAST(%(tenure_months)s AS integer), 0, 0, CAST(%(is_new)s AS boolean),
           CAST(%(attributes)s AS jsonb), CAST(%(now)s AS timestamptz)
    WHERE NOT EXISTS (SELECT FROM found)
    ON CONFLICT (external_id) DO NOTHING
    RETURNING {_CUSTOMER_COLUMNS})
SELECT * FROM found UNION ALL SELECT * FROM created
"""  # noqa: S608

_STANDING_COLUMNS = ("s.campaign_id, s.arm_id, s.redemption_count, c.spent_minor, cc.code, "
                     "cc.expires_at, cc.uses, cc.max_uses")
_STANDING_JOINS = """
JOIN campaign c ON c.id = s.campaign_id
LEFT JOIN coupon_code cc ON cc.campaign_id = s.campaign_id AND cc.customer_id = %(customer_id)s
"""
_EXISTING_ASSIGNMENTS = """
SELECT campaign_id, arm_id, redemption_count FROM assignment
WHERE customer_id = %(customer_id)s AND campaign_id = ANY(CAST(%(campaign_ids)s AS bigint[]))
"""

_EXPOSE = f"""
WITH created AS (
    INSERT INTO assignment (campaign_id, customer_id, arm_id, allocation_period,
                            first_exposed_at, exposure_channel_id, redemption_count)
    SELECT t.campaign_id, %(customer_id)s, t.arm_id, t.period, CAST(%(now)s AS timestamptz),
           CAST(%(channel_id)s AS bigint), 0
    FROM unnest(CAST(%(campaign_ids)s AS bigint[]), CAST(%(arm_ids)s AS bigint[]),
                CAST(%(periods)s AS integer[])) AS t(campaign_id, arm_id, period)
    ON CONFLICT (campaign_id, customer_id) DO NOTHING
    RETURNING campaign_id, arm_id, redemption_count),
s AS (SELECT * FROM created UNION ALL {_EXISTING_ASSIGNMENTS})
SELECT {_STANDING_COLUMNS} FROM s {_STANDING_JOINS}
"""  # noqa: S608

_STANDING = f"SELECT {_STANDING_COLUMNS} FROM ({_EXISTING_ASSIGNMENTS}) AS s {_STANDING_JOINS}"  # noqa: S608


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


async def get_or_create_customer(database: Database, *, external_id: str,
                                 attributes: CustomerAttributes
                                 ) -> tuple[int, dict[str, object]]:
    """The customer's id and the attributes eligibility rules see (created if unseen)."""
    params = {"external_id": external_id, **attributes.model_dump(exclude={"attributes"}),
              "attributes": Jsonb(attributes.attributes), "now": utcnow()}
    row = await (await database.execute(_GET_OR_CREATE_CUSTOMER, params, prepare=True)
                 ).fetchone()
    if row is None:
        # A concurrent first sighting inserted the customer after this statement began.
        row = await (await database.execute(_FIND_CUSTOMER, params, prepare=True)).fetchone()
    if row is None:
        raise RuntimeError(f"customer '{external_id}' could be neither found nor created")
    values = dict(zip(_ATTRIBUTE_NAMES, row[1:], strict=True))
    values["attributes"] = values["attributes"] or {}
    return int(row[0]), values


async def expose(database: Database, *, rows: list[tuple[int, int, int]], customer_id: int,
                 channel_id: int | None, now: datetime) -> dict[int, Exposure]:
    """Record first exposures of ``rows`` (campaign, arm, period) and read the standing."""
    if not rows:
        return {}
    params = {"customer_id": customer_id, "now": now, "channel_id": channel_id,
              "campaign_ids": [row[0] for row in rows], "arm_ids": [row[1] for row in rows],
              "periods": [row[2] for row in rows]}
    standing = await (await database.execute(_EXPOSE, params, prepare=True)).fetchall()
    if len(standing) < len(rows):
        # Another request exposed this customer concurrently and committed after this
        # statement began: its rows are visible to a new statement.
        standing = await (await database.execute(_STANDING, params, prepare=True)).fetchall()
    return {
        campaign_id: Exposure(arm_id, count, spent,
                              IssuedCode(code, _utc(expires), uses, max_uses) if code else None)
        for campaign_id, arm_id, count, spent, code, expires, uses, max_uses in standing
    }


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
        if database.autocommit:
            return await (await database.execute(_ISSUE_CODE, params, prepare=True)).fetchone()
        # Inside a transaction a unique violation would abort it: a savepoint keeps the
        # failure to the claim.
        async with database.transaction():
            return await (await database.execute(_ISSUE_CODE, params, prepare=True)).fetchone()
    except UniqueViolation:
        return None


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


async def customer_offers(database: Database, *, snapshot: Snapshot, external_id: str,
                          attributes: CustomerAttributes, channel_key: str | None,
                          stage_key: str | None, now: datetime) -> list[OfferView]:
    """:func:`campaigns.services.offers.customer_offers` in two or three statements."""
    channel_id = snapshot.channel_ids.get(channel_key) if channel_key else None
    customer_id, customer_attributes = await get_or_create_customer(
        database, external_id=external_id, attributes=attributes)
    chosen = resolve_stacking(_candidates(snapshot, attributes=customer_attributes,
                                          stage_key=stage_key, now=now))
    if not chosen:
        return []
    exposures = await expose(database, rows=_assignment_rows(chosen, external_id=external_id),
                             customer_id=customer_id, channel_id=channel_id, now=now)
    shown = offers_to_show(chosen, exposures)
    issued = {offer.campaign.id: await issue_code(database, campaign=offer.campaign,
                                                  arm=offer.arm, customer_id=customer_id,
                                                  now=now)
              for offer in shown if offer.code_to_issue}
    return describe_offers(shown, issued, now=now)
