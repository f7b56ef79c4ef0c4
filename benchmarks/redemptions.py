"""Sustained redemptions per second with exactly-once guarantees, vs one bare INSERT.

PostgreSQL; 10 running campaigns, 50,000 exposed customers; every request carries a new
Idempotency-Key, so each one reads the customer's assignment, then inserts a redemption and
charges the customer's limit and the campaign budget under their conditions (one statement,
committed as it ends). The baseline endpoint does one INSERT in one transaction under the
same server settings (uvicorn, 2 workers, the harness's connection pool); wrk drives both
in turns. Last line: ``ratio=<redemptions/bare>``.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from harness import fresh_schema, interleaved, server, settle, wrk
from sqlalchemy import text
from sqlmodel import Session

from campaigns.assignment import choose_arm
from campaigns.models import Campaign
from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import campaign_arms, create_campaign, transition
from campaigns.services.channels import create_channel, ensure_default_stages
from campaigns.services.goals import create_goal
from campaigns.types import utcnow

CUSTOMERS = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
CAMPAIGNS = 10
SECONDS = 15
#: Both are measured in this many turns of SECONDS / ROUNDS each.
ROUNDS = 3


def build_world(session: Session) -> tuple[str, list[int]]:
    ensure_default_stages(session)
    for key, kind in (("call_centre", "call_centre"), ("web", "web")):
        create_channel(session, actor="bench", channel_create={"key": key, "name": key,
                                                               "kind": kind})
    goal = create_goal(session, actor="bench", goal_create={
        "name": "goal", "stage": "purchase", "source_channels": ["call_centre"],
        "target_channel": "web", "target_uplift": "0.03"})
    now = utcnow()
    campaign_ids = []
    for i in range(CAMPAIGNS):
        campaign = create_campaign(session, actor="bench", campaign_create={
            "name": f"campaign {i}", "goal_id": goal.id, "starts_at": now,
            "ends_at": now + timedelta(days=30), "budget_minor": 10**13,
            "per_customer_limit": 1000, "control_opt_out": True,
            "control_opt_out_reason": "benchmark: every customer is treated",
            "arms": [{"name": "discount", "weight": 100, "incentive": {
                "name": f"10% {i}", "type": "percent_discount", "config": {"percent_bp": 1000}}}]})
        transition(session, campaign=campaign, target="scheduled", actor="bench", now=now)
        transition(session, campaign=campaign, target="running", actor="bench", now=now)
        campaign_ids.append(campaign.id)
    session.flush()
    session.execute(text(
        "INSERT INTO customer (external_id, tenure_months, points, lifetime_value_minor, is_new,"
        " attributes, created_at) SELECT 'C' || g, 0, 0, 0, false, '{}', now() "
        "FROM generate_series(1, :n) g"), {"n": CUSTOMERS})
    for campaign_id in campaign_ids:
        campaign = session.get(Campaign, campaign_id)
        arm = campaign_arms(session, campaign)[0]
        assert choose_arm(salt=campaign.salt, customer_id="C1", arms=[(arm.id, 100)]) == arm.id
        session.execute(text(
            "INSERT INTO assignment (campaign_id, customer_id, arm_id, allocation_period, "
            "first_exposed_at, redemption_count) SELECT :campaign, id, :arm, 1, now(), 0 "
            "FROM customer"), {"campaign": campaign_id, "arm": arm.id})
    session.execute(text("CREATE TABLE bench_row (id bigserial PRIMARY KEY, key text NOT NULL, "
                         "created_at timestamptz NOT NULL DEFAULT now())"))
    key = create_api_key(session, name="bench", scope="storefront", actor="bench").secret
    session.commit()
    return key, campaign_ids


def redemption_lua(key: str, campaign_ids: list[int]) -> str:
    ids = ", ".join(map(str, campaign_ids))
    return f"""
local counter = 0
local campaigns = {{{ids}}}
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
local prefix = tostring(math.random(1, 2^31))
request = function()
  counter = counter + 1
  local body = string.format(
    '{{"customer_id": "C%d", "channel": "web", "campaign_id": %d, "order_amount_minor": %d}}',
    math.random(1, {CUSTOMERS}), campaigns[math.random(1, #campaigns)], math.random(500, 20000))
  local headers = {{["Authorization"] = "Bearer {key}", ["Content-Type"] = "application/json",
                   ["Idempotency-Key"] = prefix .. "-" .. counter}}
  return wrk.format("POST", "/api/v1/redemptions", headers, body)
end
"""


BARE_LUA = """
request = function()
  return wrk.format("POST", "/bare-insert", {["Content-Type"] = "application/json"}, "{}")
end
"""


def main() -> None:
    load_before = os.getloadavg()[0]
    with fresh_schema("bench_redeem") as (engine, schema):
        with Session(engine) as session:
            key, campaign_ids = build_world(session)
        settle(engine)
        redeem_lua = redemption_lua(key, campaign_ids)
        with server("web.app:create_app", schema=schema, workers=2) as url, \
                server("benchmarks.bare_app:create_app", schema=schema, workers=2) as bare_url:
            wrk(url, lua=redeem_lua, seconds=3)
            wrk(bare_url, lua=BARE_LUA, seconds=3)
            # In turns, the same time each (see harness.interleaved).
            redeemed, bare = interleaved([(url, redeem_lua), (bare_url, BARE_LUA)],
                                         rounds=ROUNDS, seconds=SECONDS // ROUNDS)
        with engine.connect() as connection:
            spent = connection.execute(text("SELECT sum(spent_minor) FROM campaign")).scalar()
            applied = connection.execute(text(
                "SELECT sum(cost_minor), count(*) FROM redemption WHERE status = 'applied'")).one()
    print(f"redemptions: {redeemed.requests_per_second:8.0f} /s  p50 {redeemed.p50_ms:.1f} ms  "
          f"p99 {redeemed.p99_ms:.1f} ms  non-2xx {redeemed.errors}")
    print(f"bare insert: {bare.requests_per_second:8.0f} /s  p50 {bare.p50_ms:.1f} ms  "
          f"p99 {bare.p99_ms:.1f} ms")
    # The machine is shared: the load average says how much the figures can be trusted.
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"reconciled: {applied[1]} redemptions, budget spent {spent} = sum of costs "
          f"{applied[0]}: {'ok' if spent == applied[0] else 'MISMATCH'}")
    print(f"ratio={redeemed.requests_per_second / bare.requests_per_second:.3f}")


if __name__ == "__main__":
    main()
