"""How fast a batch of unique coupon codes reaches PostgreSQL, against a bare bulk insert.

Acceptance: 1,000,000 codes in at most 30 s, and at most 3x a bare bulk insert of
1,000,000 random strings of the same length measured in the same run.

* **codes**: :func:`campaigns.services.coupons.generate_coupon_batch` through a session,
  commit included: drawing the codes, writing them, guaranteeing uniqueness, the audit entry.
* **bare**: the same number of random strings of the same length, drawn beforehand (not
  timed), written with one ``COPY`` into the same ``coupon_code`` table (same indexes and
  foreign keys) and committed. No uniqueness handling: the fastest a plain bulk insert can
  put those rows there.

Context figures (not part of the ratio): drawing the codes alone, and the bare COPY into
a scratch copy of the table without foreign keys.

The run uses its own schema (migrated with ``campaigns.migrate.upgrade``, dropped at the
end) in ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` or
``CHANNELSHIFT_BENCH_DATABASE_URL``. The last line is ``seconds=<s> ratio=<codes/bare>``.

    python -m benchmarks.codes [--count 1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness import create_benchmark_schema
from sqlalchemy import Engine, text
from sqlmodel import Session

from campaigns import migrate
from campaigns.db import build_engine
from campaigns.incentives import generate_codes
from campaigns.models import Arm
from campaigns.services.campaigns import campaign_arms, create_campaign, get_campaign
from campaigns.services.channels import create_channel, ensure_default_stages
from campaigns.services.coupons import batch_coupon_config, generate_coupon_batch
from campaigns.services.goals import create_goal
from campaigns.types import utcnow

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ACTOR = "benchmark"
PREFIX = "SAVE-"
LENGTH = 10


@dataclass(frozen=True)
class Target:
    campaign_id: int
    arm_id: int
    incentive_id: int
    prefix: str
    length: int
    charset: str


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def set_up(engine: Engine) -> Target:
    """A draft campaign whose treatment arm hands out batch coupon codes."""
    with Session(engine, expire_on_commit=False) as session:
        ensure_default_stages(session)
        for key, kind in (("call_centre", "call_centre"), ("web", "web")):
            create_channel(session, actor=ACTOR,
                           channel_create={"key": key, "name": key, "kind": kind})
        goal = create_goal(session, actor=ACTOR, goal_create={
            "name": "Self-service", "stage": "after_sale", "source_channels": ["call_centre"],
            "target_channel": "web", "target_uplift": "0.05"})
        campaign = create_campaign(session, actor=ACTOR, campaign_create={
            "name": "Benchmark", "goal_id": goal.id, "arms": [
                {"name": "control", "weight": 50, "is_control": True},
                {"name": "coupon", "weight": 50, "incentive": {
                    "name": "10% code", "type": "coupon",
                    "config": {"mode": "batch", "prefix": PREFIX, "length": LENGTH,
                               "benefit": {"kind": "percent", "percent_bp": 1000}}}}]})
        arm = campaign_arms(session, campaign)[1]
        config = batch_coupon_config(session, campaign=campaign, arm=arm)
        session.commit()
        assert campaign.id is not None and arm.id is not None and arm.incentive_id is not None
        assert config.prefix is not None and config.length and config.charset
        return Target(campaign.id, arm.id, arm.incentive_id, config.prefix, config.length,
                      config.charset)


def random_strings(count: int, *, length: int, seed: int) -> list[str]:
    """``count`` random strings of ``length`` characters (uniqueness not guaranteed)."""
    rng = random.Random(seed)
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
    return ["".join(rng.choices(alphabet, k=length)) for _ in range(count)]


def bare_insert(engine: Engine, strings: list[str], *, target: Target, table: str) -> None:
    suffix = f"\t{target.incentive_id}\t{target.campaign_id}\t1\t0\t{utcnow().isoformat()}\n"
    with engine.begin() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(
            f"COPY {table} (code, incentive_id, campaign_id, max_uses, uses, created_at) "
            "FROM STDIN"
        ) as copy:
            for start in range(0, len(strings), 10_000):
                copy.write("".join(s + suffix for s in strings[start:start + 10_000]))


def generate(engine: Engine, *, target: Target, count: int) -> None:
    with Session(engine, expire_on_commit=False) as session:
        campaign = get_campaign(session, target.campaign_id)
        arm = session.get(Arm, target.arm_id)
        assert arm is not None
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=count, actor=ACTOR)
        session.commit()


def check_codes(engine: Engine, *, target: Target, count: int) -> None:
    with engine.connect() as connection:
        rows, distinct, unissued = connection.execute(text(
            "SELECT count(*), count(DISTINCT code), count(*) FILTER (WHERE customer_id IS NULL) "
            "FROM coupon_code WHERE campaign_id = :c AND incentive_id = :i"),
            {"c": target.campaign_id, "i": target.incentive_id}).one()
    if not rows == distinct == unissued == count:
        raise SystemExit(f"wrong result: {rows} rows, {distinct} distinct, {unissued} unissued; "
                         f"expected {count}")


def truncate(engine: Engine, table: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {table} CASCADE"))


def run(engine: Engine, *, count: int, repeat: int) -> tuple[float, float]:
    target = set_up(engine)
    length = len(target.prefix) + target.length
    strings = random_strings(count, length=length, seed=20_240_601)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE coupon_code_scratch "
                                "(LIKE coupon_code INCLUDING DEFAULTS INCLUDING INDEXES "
                                "INCLUDING CONSTRAINTS)"))

    draw = min(timed(lambda: generate_codes(count, prefix=target.prefix, length=target.length,
                                            charset=target.charset)) for _ in range(repeat))
    print(f"count={count:,} code_length={length} repeat={repeat}")
    print(f"context: drawing {count:,} codes with generate_codes alone: {draw:.2f} s")

    bare_runs, code_runs, scratch_runs = [], [], []
    for _ in range(repeat):
        scratch_runs.append(timed(lambda: bare_insert(engine, strings, target=target,
                                                      table="coupon_code_scratch")))
        truncate(engine, "coupon_code_scratch")
        bare_runs.append(timed(lambda: bare_insert(engine, strings, target=target,
                                                   table="coupon_code")))
        truncate(engine, "coupon_code")
        code_runs.append(timed(lambda: generate(engine, target=target, count=count)))
        check_codes(engine, target=target, count=count)
        truncate(engine, "coupon_code")
    bare, codes, scratch = min(bare_runs), min(code_runs), min(scratch_runs)
    print("context: bare COPY into a copy of coupon_code without foreign keys: "
          f"{scratch:.2f} s  (codes/that = {codes / scratch:.2f})")
    print(f"bare:  COPY of {count:,} random {length}-character strings into coupon_code: "
          f"{bare:.2f} s  runs={[round(r, 2) for r in bare_runs]}")
    print(f"codes: generate_coupon_batch of {count:,} unique codes, committed: "
          f"{codes:.2f} s  runs={[round(r, 2) for r in code_runs]}")
    print(f"acceptance: codes <= 30 s: {codes <= 30}; codes <= 3 x bare: {codes <= 3 * bare}")
    return codes, bare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    url = os.environ.get("CHANNELSHIFT_BENCH_DATABASE_URL") or DEFAULT_URL
    schema = f"cs_bench_{secrets.token_hex(4)}"
    admin = build_engine(url)
    with admin.begin() as connection:
        create_benchmark_schema(connection, schema)
    engine = build_engine(url, schema=schema)
    try:
        migrate.upgrade(engine)
        codes, bare = run(engine, count=args.count, repeat=args.repeat)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
    print(f"seconds={codes:.2f} ratio={codes / bare:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
