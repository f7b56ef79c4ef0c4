"""Offers endpoint throughput and latency vs a bare constant-JSON endpoint.

PostgreSQL, 100 running campaigns (mixed incentive types, eligibility rules, stacking),
1,000,000 customers; uvicorn with 2 workers for both apps; wrk drives maximum throughput
from a second process, both apps in turns, and an open-loop client measures p99 at half
the offers maximum.
Last line: ``ratio=<offers/bare throughput> p99_ms=<p99 at half load>``.
"""

from __future__ import annotations

import io
import random
import sys
from datetime import timedelta

from harness import fresh_schema, interleaved, paced, server, settle, wrk
from sqlmodel import Session

from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import create_campaign, transition
from campaigns.services.channels import create_channel, ensure_default_stages, set_channel_cost
from campaigns.services.goals import create_goal
from campaigns.types import utcnow

CUSTOMERS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
CAMPAIGNS = 100
WORKERS = 2
SECONDS = 15
#: The maxima are measured in this many turns of SECONDS / ROUNDS each.
ROUNDS = 3

CHANNELS = [("store", "store"), ("call_centre", "call_centre"), ("ivr", "ivr"), ("web", "web"),
            ("app", "app")]
LADDER = [{"key": "base", "name": "Base", "threshold_points": 0, "benefits": "-"},
          {"key": "gold", "name": "Gold", "threshold_points": 1000, "benefits": "More"}]
INCENTIVES = [
    ("percent_discount", {"percent_bp": 1000, "cap_minor": 2000}),
    ("fixed_discount", {"amount_minor": 500, "min_order_minor": 2000}),
    ("coupon", {"mode": "batch", "prefix": "BM", "length": 10,
                "benefit": {"kind": "percent", "percent_bp": 1500}}),
    ("loyalty", {"tiers": LADDER, "points_per_currency_unit": 1,
                 "target_channel_multiplier_bp": 20000, "point_value_minor_per_1000": 10}),
    ("rebate", {"percent_bp": 500, "condition": {"payout_delay_days": 30}}),
    ("gift", {"item": "Tote bag", "unit_cost_minor": 300, "inventory": 100000}),
    ("free_trial", {"product": "Premium", "days": 30, "cost_minor": 400}),
]
RULES = [None, "value_tier in [bronze, silver]", "region == north", "tenure_months >= 12",
         "segment == consumer and not (value_tier == platinum)"]


def build_world(session: Session) -> str:
    stages = [s.key for s in ensure_default_stages(session)]
    for key, kind in CHANNELS:
        create_channel(session, actor="bench", channel_create={"key": key, "name": key,
                                                               "kind": kind})
        for stage in stages:
            set_channel_cost(session, actor="bench", cost={
                "channel": key, "stage": stage, "cost_minor": 20 if kind in ("web", "app")
                else 700})
    rng = random.Random(7)
    now = utcnow()
    for i in range(CAMPAIGNS):
        stage = stages[i % 3]
        target = "web" if i % 2 else "app"
        goal = create_goal(session, actor="bench", goal_create={
            "name": f"goal {i}", "stage": stage, "source_channels": ["call_centre", "store"],
            "target_channel": target, "target_uplift": "0.03",
            "eligibility_rule": RULES[i % len(RULES)]})
        kind, config = INCENTIVES[i % len(INCENTIVES)]
        campaign = create_campaign(session, actor="bench", campaign_create={
            "name": f"campaign {i}", "goal_id": goal.id, "starts_at": now,
            "ends_at": now + timedelta(days=60), "budget_minor": 10**12,
            "per_customer_limit": 3, "stacking": "stackable" if i % 5 == 0 else "exclusive",
            "priority": rng.randrange(100),
            "arms": [{"name": "control", "weight": 20, "is_control": True},
                     {"name": kind, "weight": 80,
                      "incentive": {"name": f"{kind} {i}", "type": kind, "config": config}}]})
        transition(session, campaign=campaign, target="scheduled", actor="bench", now=now)
        transition(session, campaign=campaign, target="running", actor="bench", now=now)
    key = create_api_key(session, name="bench", scope="storefront", actor="bench").secret
    session.commit()
    return key


def copy_customers(engine, count: int) -> None:
    tiers = ["bronze", "bronze", "silver", "gold", "platinum"]
    regions = ["north", "south", "east", "west"]
    segments = ["consumer", "consumer", "small_business", "enterprise"]
    rng = random.Random(11)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy("COPY customer (external_id, segment, value_tier, region, "
                         "tenure_months, points, lifetime_value_minor, is_new, attributes, "
                         "created_at) FROM STDIN") as copy:
            buffer = io.StringIO()
            for i in range(1, count + 1):
                buffer.write(f"C{i}\t{rng.choice(segments)}\t{rng.choice(tiers)}\t"
                             f"{rng.choice(regions)}\t{rng.randrange(60)}\t0\t0\tf\t{{}}\t"
                             "2026-01-01 00:00:00+00\n")
                if i % 50_000 == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        raw.commit()
        cursor.execute("ANALYZE customer")
        raw.commit()
    finally:
        raw.close()


def lua(path: str, key: str, count: int) -> str:
    # Each wrk thread seeds itself differently, so threads do not replay the same customers.
    return f"""
function init(args)
  math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
end
local headers = {{["Authorization"] = "Bearer {key}"}}
request = function()
  return wrk.format("GET", string.format("{path}", math.random(1, {count})), headers)
end
"""


def main() -> None:
    with fresh_schema("bench_offers") as (engine, schema):
        print(f"seeding {CUSTOMERS:,} customers and {CAMPAIGNS} running campaigns...", flush=True)
        with Session(engine) as session:
            key = build_world(session)
        copy_customers(engine, CUSTOMERS)
        # Each phase starts with the previous one's writes on disk (the seeding wrote a few
        # hundred megabytes, a maximum-throughput run tens): see harness.settle.
        settle(engine)
        offers_path = "/api/v1/customers/C%d/offers?channel=web&stage=after_sale"
        offers_lua, bare_lua = lua(offers_path, key, CUSTOMERS), lua("/bare/C%d", key, CUSTOMERS)
        with server("web.app:create_app", schema=schema, workers=WORKERS) as url, \
                server("benchmarks.bare_app:create_app", schema=schema,
                       workers=WORKERS) as bare_url:
            wrk(url, lua=offers_lua, seconds=3)  # warm-up
            wrk(bare_url, lua=bare_lua, seconds=3)
            # Both maxima in turns, the same time each (see harness.interleaved).
            offers_max, bare_max = interleaved([(url, offers_lua), (bare_url, bare_lua)],
                                               rounds=ROUNDS, seconds=SECONDS // ROUNDS)
            half = offers_max.requests_per_second / 2
            settle(engine)
            at_half = paced(url + "/api/v1/customers/C{}/offers?channel=web&stage=after_sale",
                            headers={"Authorization": f"Bearer {key}"}, rate=half,
                            seconds=SECONDS, id_range=(1, CUSTOMERS))
    print(f"offers max:  {offers_max.requests_per_second:8.0f} req/s  p50 {offers_max.p50_ms:.1f} "
          f"ms  p99 {offers_max.p99_ms:.1f} ms  non-2xx {offers_max.errors}")
    print(f"bare max:    {bare_max.requests_per_second:8.0f} req/s  p50 {bare_max.p50_ms:.1f} ms  "
          f"p99 {bare_max.p99_ms:.1f} ms")
    print(f"offers at half load ({half:.0f} req/s): p50 {at_half.p50_ms:.1f} ms  p99 "
          f"{at_half.p99_ms:.1f} ms  errors {at_half.errors}")
    print(f"CPU per request at max: offers {offers_max.server_cpu_ms:.2f} ms in the workers + "
          f"{offers_max.database_cpu_ms:.2f} ms in PostgreSQL; bare "
          f"{bare_max.server_cpu_ms:.2f} ms")
    # Statements carry fewer requests each at half the rate, so a request costs more: the
    # machine is busier at "half load" than half.
    print(f"CPU per request at half load: offers {at_half.server_cpu_ms:.2f} ms in the "
          f"workers + {at_half.database_cpu_ms:.2f} ms in PostgreSQL")
    ratio = offers_max.requests_per_second / bare_max.requests_per_second
    print(f"ratio={ratio:.3f} p99_ms={at_half.p99_ms:.1f}")


if __name__ == "__main__":
    main()
