"""Redemption on PostgreSQL, on the event loop: the storefront route's path.

The same checks and the same single statement (``REDEEM_AT_ONCE``) as
:func:`campaigns.services.redemptions.redeem`, run through psycopg's async driver on a
connection of the server's async pool, in autocommit, so that a redemption costs two
round trips (read, redeem), no BEGIN or COMMIT, and no trip to the thread pool and back
for either. The statements are SQLAlchemy's, compiled once for psycopg
(:func:`campaigns.asyncdb.psycopg_sql`).

Safe to run again after a connection error (``web.deps.AsyncPool`` does): the redemption
statement commits as a whole or not at all, and a second run finds a committed first one
by its idempotency key and answers what the first would have: the same body, as created
(201), since its ``created_at`` is this request's (see
:func:`campaigns.services.redemptions.replay`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from campaigns.asyncdb import Database, fetch_alone, psycopg_sql
from campaigns.services.catalog import Snapshot
from campaigns.services.redemptions import (
    ASSIGNMENT_OF,
    DEADLOCK_ATTEMPTS,
    ENTRIES_HELD,
    READ,
    REDEEM_AT_ONCE,
    STORED,
    AtOnce,
    Plan,
    ReadRow,
    RedemptionOutcome,
    RedemptionRequest,
    Stored,
    answer,
    assignment_in,
    at_once_params,
    code_already_used,
    found_in,
    is_code_use_conflict,
    is_trial_conflict,
    needs_entries_held,
    plan,
    read_params,
    refusal,
    replay,
    request_fingerprint,
    stored_in,
    target_campaign,
    trial_already_granted,
    winner,
)

_READ_SQL, _READ_FIXED = psycopg_sql(READ)
_STORED_SQL, _ = psycopg_sql(STORED)
_ASSIGNMENT_OF_SQL, _ = psycopg_sql(ASSIGNMENT_OF)
_AT_ONCE_SQL, _ = psycopg_sql(REDEEM_AT_ONCE)
_ENTRIES_HELD_SQL, _ = psycopg_sql(ENTRIES_HELD)


async def _stored(database: Database, key: str) -> Stored | None:
    return stored_in(await (await database.execute(
        _STORED_SQL, {"key": key}, prepare=True)).fetchone())


async def _execute_at_once(database: Database, params: dict[str, Any]) -> AtOnce:
    """Run the redemption statement, again if PostgreSQL broke a deadlock by aborting it
    (see :func:`campaigns.services.redemptions._execute_at_once`); inside a caller's
    transaction, in a savepoint."""
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            (row,) = await fetch_alone(database, _AT_ONCE_SQL, params)
            return AtOnce(*row)
        except pg_errors.DeadlockDetected:
            if attempt == DEADLOCK_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _apply(database: Database, plan: Plan) -> int | None:
    params = at_once_params(plan)
    params["response"] = Jsonb(params["response"])
    try:
        outcome = await _execute_at_once(database, params)
    except pg_errors.UniqueViolation as error:
        if is_trial_conflict(error):
            raise trial_already_granted() from None
        if is_code_use_conflict(error):
            raise code_already_used() from None
        raise
    if outcome.redemption_id is not None:
        return int(outcome.redemption_id)
    if outcome.approved:
        return None  # every check passed: only the idempotency key conflicted
    if await _stored(database, plan.idempotency_key) is not None:
        return None  # a concurrent request with this key took what was left
    held = None
    if needs_entries_held(plan, outcome):
        (held,) = await (await database.execute(
            _ENTRIES_HELD_SQL, {"assignment_id": plan.assignment_id}, prepare=True)).fetchone()
    raise refusal(plan, outcome, entries_held=held)


async def redeem(database: Database, *, snapshot: Snapshot, idempotency_key: str,
                 request: RedemptionRequest, now: datetime, api_key_id: int | None = None
                 ) -> RedemptionOutcome:
    """Redeem once per idempotency key; a replay with the same body returns the stored body."""
    fingerprint = request_fingerprint(request)
    row = await (await database.execute(
        _READ_SQL, _READ_FIXED | read_params(idempotency_key, request), prepare=True)
    ).fetchone()
    found = found_in(ReadRow(*row), request)
    if found.stored is not None:
        return replay(found.stored, fingerprint, now=now)
    campaign, customer_id = target_campaign(snapshot, found=found, request=request)
    assignment = (found.assignment_id, found.arm_id)
    if found.assignment_campaign_id != campaign.id:
        assignment = assignment_in(await (await database.execute(
            _ASSIGNMENT_OF_SQL, {"campaign_id": campaign.id, "customer_id": customer_id},
            prepare=True)).fetchone())
    checked = plan(snapshot, campaign=campaign, found=found, assignment=assignment,
                   key=idempotency_key, fingerprint=fingerprint, request=request, now=now,
                   api_key_id=api_key_id)
    redemption_id = await _apply(database, checked)
    if redemption_id is None:
        # Another request with this key got there first; its row is visible now.
        return replay(winner(await _stored(database, idempotency_key)), fingerprint,
                      now=now)
    return RedemptionOutcome(body=answer(redemption_id, checked.stored), replayed=False)
