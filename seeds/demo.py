"""The demo world: channels, 20,000 customers with histories and three campaigns.

``seed_demo_world(session)`` configures channels, costs, goals and campaigns through the
domain services (validation and the audit log apply; actor ``seed:demo``), simulates the
world with :func:`seeds.demo_simulation.simulate_demo_world` and bulk-inserts customers,
events, conversions, assignments, codes, redemptions, lottery rows and points with
SQLAlchemy Core. Like the services it flushes and never commits: the caller commits.

The same ``seed`` and ``now`` give the same world (database ids aside). Seeding a database
that already holds the demo is a no-op returning the existing summary. The true effects
built into the experiments are documented in docs/DEMO.md and exposed here as
:data:`TRUE_EFFECTS` and :data:`RUNNING_TRUE_EFFECTS`.

``channelshift demo --no-serve`` (or ``python -m seeds.demo``) seeds the configured database
(``CHANNELSHIFT_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Table, bindparam, func, insert, or_, update
from sqlmodel import Session, SQLModel, col, select

from campaigns.errors import Conflict
from campaigns.models import (
    Arm,
    ArmAllocation,
    Assignment,
    AuditLog,
    Campaign,
    CampaignStatus,
    Channel,
    ChannelEvent,
    Conversion,
    CouponCode,
    Customer,
    LotteryDraw,
    LotteryEntry,
    LotteryWinner,
    PointsLedger,
    Redemption,
    RedemptionStatus,
    Stage,
    metadata,
)
from campaigns.services.audit import record_audit
from campaigns.services.campaigns import campaign_arms, create_campaign, transition
from campaigns.services.channels import (
    cost_table,
    create_channel,
    ensure_default_stages,
    set_channel_cost,
)
from campaigns.services.goals import create_goal
from campaigns.services.lotteries import run_draw
from campaigns.services.redemptions import RedemptionRequest, request_fingerprint
from campaigns.types import utcnow
from seeds.demo_simulation import (
    CAMPAIGN_ARMS,
    EVENT_KINDS,
    NO_AMOUNT,
    DemoWorld,
    ExperimentResult,
    SimRedemption,
    simulate_demo_world,
)
from seeds.demo_spec import (
    AGE_BANDS,
    CHANNEL_KEYS,
    CHANNELS,
    CONVERSION_PREFIX,
    CURRENCY,
    CUSTOMER_PREFIX,
    DEFAULT_CUSTOMERS,
    DEFAULT_SEED,
    DEMO_ACTOR,
    DEMO_CAMPAIGNS,
    DRAFT_BUDGET_MINOR,
    DRAFT_CAMPAIGN,
    DRAFT_END_DAY,
    DRAFT_GOAL,
    DRAFT_START_DAY,
    ENDED_CAMPAIGN,
    ENDED_EXPERIMENT,
    ENDED_GOAL,
    EVENT_PREFIX,
    LEDGER_PREFIX,
    REGIONS,
    RUNNING_CAMPAIGN,
    RUNNING_EXPERIMENT,
    RUNNING_GOAL,
    RUNNING_TRUE_EFFECTS,
    SEGMENTS,
    STAGE_COSTS,
    STAGE_KEYS,
    TRUE_EFFECTS,
    VALUE_TIERS,
    ArmSpec,
    GoalSpec,
    incentive_configs,
)

__all__ = [
    "DEFAULT_CUSTOMERS",
    "DEFAULT_SEED",
    "DEMO_ACTOR",
    "DEMO_CAMPAIGNS",
    "DRAFT_CAMPAIGN",
    "ENDED_CAMPAIGN",
    "RUNNING_CAMPAIGN",
    "RUNNING_TRUE_EFFECTS",
    "TRUE_EFFECTS",
    "DemoSummary",
    "demo_now",
    "demo_summary",
    "is_seeded",
    "seed_demo_world",
]

#: Rows per bulk INSERT.
CHUNK = 10_000
SEED_ACTION = "demo.seed"


@dataclass(frozen=True)
class DemoSummary:
    """What the demo world holds: its parameters, row counts and campaign ids."""

    seed: int
    now: datetime
    channels: int
    customers: int
    channel_events: int
    conversions: int
    assignments: int
    coupon_codes: int
    redemptions: int
    lottery_entries: int
    lottery_winners: int
    points_ledger_entries: int
    ended_campaign_id: int
    running_campaign_id: int
    draft_campaign_id: int

    @property
    def campaign_ids(self) -> dict[str, int]:
        return {ENDED_CAMPAIGN: self.ended_campaign_id, RUNNING_CAMPAIGN: self.running_campaign_id,
                DRAFT_CAMPAIGN: self.draft_campaign_id}


# --------------------------------------------------------------------------- public API


def demo_now(now: datetime | None = None) -> datetime:
    """``now`` in UTC; by default the current time truncated to the day."""
    if now is None:
        return utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware; got {now!r}")
    return now.astimezone(UTC)


def is_seeded(session: Session) -> bool:
    """Whether the demo's channels and its three campaigns exist."""
    channels = session.exec(select(func.count()).select_from(Channel)
                            .where(col(Channel.key).in_(CHANNEL_KEYS))).one()
    return channels == len(CHANNEL_KEYS) and len(_demo_campaign_ids(session)) == len(
        DEMO_CAMPAIGNS)


def seed_demo_world(
    session: Session, *, seed: int = DEFAULT_SEED, customers: int = DEFAULT_CUSTOMERS,
    now: datetime | None = None,
) -> DemoSummary:
    """Create the demo world (or return the existing one's summary). Flushes, never commits."""
    if is_seeded(session):
        return demo_summary(session)
    existing = _demo_campaign_ids(session)
    if existing:
        raise Conflict(
            "the database holds part of the demo world (campaigns "
            f"{', '.join(sorted(existing))}); remove them or use a fresh database",
            code="demo_partial",
        )
    now = demo_now(now)
    ensure_default_stages(session)
    _ensure_channels(session)
    costs = _ensure_costs(session)
    world = simulate_demo_world(seed=seed, customers=customers, now=now, costs=costs)
    campaigns = _configure_campaigns(session, world)
    _write_world(session, world, campaigns)
    record_audit(session, actor=DEMO_ACTOR, action=SEED_ACTION, entity_type="demo",
                 entity_id=None, details={"seed": seed, "customers": customers,
                                          "now": now.isoformat(), **world.summary()})
    session.flush()
    return demo_summary(session)


def demo_summary(session: Session) -> DemoSummary:
    """Counts of the demo's rows in the database, with the seed and ``now`` it was made with."""
    ids = _demo_campaign_ids(session)
    missing = sorted(set(DEMO_CAMPAIGNS) - set(ids))
    if missing:
        raise LookupError(f"the demo world is not seeded (missing {', '.join(missing)})")
    campaign_ids = list(ids.values())
    details = _seed_details(session)
    ended = session.get(Campaign, ids[ENDED_CAMPAIGN])
    assert ended is not None and ended.ends_at is not None
    now = (datetime.fromisoformat(details["now"]) if "now" in details
           else ended.ends_at - timedelta(days=ENDED_EXPERIMENT.end_day))
    return DemoSummary(
        seed=int(details.get("seed", DEFAULT_SEED)),
        now=now,
        channels=_count(session, Channel, col(Channel.key).in_(CHANNEL_KEYS)),
        customers=_count(session, Customer, col(Customer.external_id).like(
            f"{CUSTOMER_PREFIX}%")),
        channel_events=_count(session, ChannelEvent, col(ChannelEvent.client_event_id).like(
            f"{EVENT_PREFIX}%")),
        conversions=_count(session, Conversion, col(Conversion.client_event_id).like(
            f"{CONVERSION_PREFIX}%")),
        assignments=_count(session, Assignment, col(Assignment.campaign_id).in_(campaign_ids)),
        coupon_codes=_count(session, CouponCode, col(CouponCode.campaign_id).in_(campaign_ids)),
        redemptions=_count(session, Redemption, col(Redemption.campaign_id).in_(campaign_ids)),
        lottery_entries=_count(session, LotteryEntry,
                               col(LotteryEntry.campaign_id).in_(campaign_ids)),
        lottery_winners=session.exec(
            select(func.count()).select_from(LotteryWinner)
            .join(LotteryDraw, col(LotteryDraw.id) == LotteryWinner.draw_id)
            .where(col(LotteryDraw.campaign_id).in_(campaign_ids))).one(),
        points_ledger_entries=_count(session, PointsLedger, or_(
            col(PointsLedger.source_ref).like(f"{LEDGER_PREFIX}%"),
            col(PointsLedger.campaign_id).in_(campaign_ids))),
        ended_campaign_id=ids[ENDED_CAMPAIGN],
        running_campaign_id=ids[RUNNING_CAMPAIGN],
        draft_campaign_id=ids[DRAFT_CAMPAIGN],
    )


# --------------------------------------------------------------------------- lookups


def _count(session: Session, model: type[Any], condition: Any) -> int:
    return int(session.exec(select(func.count()).select_from(model).where(condition)).one())


def _demo_campaign_ids(session: Session) -> dict[str, int]:
    rows = session.exec(select(Campaign.name, Campaign.id)
                        .where(col(Campaign.name).in_(DEMO_CAMPAIGNS))).all()
    return {name: campaign_id for name, campaign_id in rows if campaign_id is not None}


def _seed_details(session: Session) -> dict[str, Any]:
    entry = session.exec(select(AuditLog).where(AuditLog.action == SEED_ACTION)
                         .order_by(col(AuditLog.id).desc())).first()
    return dict(entry.details) if entry is not None else {}


# --------------------------------------------------------------------------- configuration


def _ensure_channels(session: Session) -> None:
    existing = set(session.exec(select(Channel.key)).all())
    for key, name, kind in CHANNELS:
        if key not in existing:
            create_channel(session, actor=DEMO_ACTOR,
                           channel_create={"key": key, "name": name, "kind": kind})


def _ensure_costs(session: Session) -> dict[tuple[str, str], int]:
    """Set the demo costs where none is configured; return the cost table in force."""
    current = cost_table(session)
    for stage in STAGE_KEYS:
        for channel in CHANNEL_KEYS:
            if (channel, stage) not in current:
                set_channel_cost(session, actor=DEMO_ACTOR, currency=CURRENCY, cost={
                    "channel": channel, "stage": stage,
                    "cost_minor": STAGE_COSTS[stage][channel]})
    return cost_table(session)


def _goal_data(goal: GoalSpec) -> dict[str, Any]:
    return {"name": goal.name, "description": goal.description, "stage": goal.stage,
            "source_channels": list(goal.sources), "target_channel": goal.target,
            "metric": goal.metric, "window_days": goal.window_days,
            "target_uplift": goal.target_uplift, "eligibility_rule": goal.eligibility_rule}


def _arm_data(arm: ArmSpec, configs: Mapping[str, Any]) -> dict[str, Any]:
    if arm.is_control:
        return {"name": arm.name, "weight": arm.weight, "is_control": True}
    return {"name": arm.name, "weight": arm.weight,
            "incentive": {"name": arm.incentive_name or arm.name, "type": arm.incentive_type,
                          "config": configs[arm.name]}}


def _create_campaign(
    session: Session, *, world: DemoWorld, name: str, goal: GoalSpec, description: str,
    start_day: int, end_day: int, budget_minor: int, per_customer_limit: int | None,
) -> Campaign:
    """A draft campaign with its arms, salted from the seed and backdated to its planning."""
    configs = incentive_configs(world.now)
    goal_row = create_goal(session, actor=DEMO_ACTOR, goal_create=_goal_data(goal))
    starts_at = world.now + timedelta(days=start_day)
    campaign = create_campaign(session, actor=DEMO_ACTOR, campaign_create={
        "name": name, "description": description, "goal_id": goal_row.id,
        "starts_at": starts_at, "ends_at": world.now + timedelta(days=end_day),
        "budget_minor": budget_minor, "per_customer_limit": per_customer_limit,
        "arms": [_arm_data(arm, configs) for arm in CAMPAIGN_ARMS[name]],
    })
    # Assignment hashes use the salt, so it must come from the seed, before any assignment.
    campaign.salt = world.salts[name]
    planned = min(starts_at, world.now) - timedelta(days=7)
    campaign.created_at = planned
    goal_row.created_at = planned - timedelta(days=1)
    for allocation in session.exec(select(ArmAllocation)
                                   .where(ArmAllocation.campaign_id == campaign.id)):
        allocation.started_at = starts_at
        session.add(allocation)
    session.add_all([campaign, goal_row])
    session.flush()
    return campaign


def _run(session: Session, campaign: Campaign, *, now: datetime) -> None:
    """Schedule and start a campaign at its start time; end it if its end has passed."""
    assert campaign.starts_at is not None and campaign.ends_at is not None
    transition(session, campaign=campaign, target=CampaignStatus.SCHEDULED, actor=DEMO_ACTOR,
               reason="demo: scheduled", now=campaign.starts_at - timedelta(days=2))
    transition(session, campaign=campaign, target=CampaignStatus.RUNNING, actor=DEMO_ACTOR,
               reason="start time reached", now=campaign.starts_at)
    if campaign.ends_at <= now:
        transition(session, campaign=campaign, target=CampaignStatus.ENDED, actor=DEMO_ACTOR,
                   reason="end time reached", now=campaign.ends_at)


def _configure_campaigns(session: Session, world: DemoWorld) -> dict[str, Campaign]:
    ended = _create_campaign(
        session, world=world, name=ENDED_CAMPAIGN, goal=ENDED_GOAL,
        description="Call-centre and IVR callers are offered a web coupon or a prize draw "
                    "for solving after-sale questions on the web.",
        start_day=ENDED_EXPERIMENT.start_day, end_day=ENDED_EXPERIMENT.end_day,
        budget_minor=ENDED_EXPERIMENT.budget_minor,
        per_customer_limit=ENDED_EXPERIMENT.per_customer_limit)
    running = _create_campaign(
        session, world=world, name=RUNNING_CAMPAIGN, goal=RUNNING_GOAL,
        description="Store and sales-rep visitors are offered double points or 5% off in the "
                    "app for asking their pre-sale questions there.",
        start_day=RUNNING_EXPERIMENT.start_day, end_day=RUNNING_EXPERIMENT.end_day,
        budget_minor=RUNNING_EXPERIMENT.budget_minor,
        per_customer_limit=RUNNING_EXPERIMENT.per_customer_limit)
    draft = _create_campaign(
        session, world=world, name=DRAFT_CAMPAIGN, goal=DRAFT_GOAL,
        description="Phone orderers get cashback or a free delivery trial for ordering on "
                    "the web. Not scheduled yet.",
        start_day=DRAFT_START_DAY, end_day=DRAFT_END_DAY, budget_minor=DRAFT_BUDGET_MINOR,
        per_customer_limit=1)
    _run(session, ended, now=world.now)
    _run(session, running, now=world.now)
    return {ENDED_CAMPAIGN: ended, RUNNING_CAMPAIGN: running, DRAFT_CAMPAIGN: draft}


# --------------------------------------------------------------------------- bulk writing


def _table(model: type[SQLModel]) -> Table:
    """The Core table of a model, for bulk inserts that skip the ORM unit of work."""
    return metadata.tables[str(model.__tablename__)]


def _bulk_insert(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(table), list(rows[start:start + CHUNK]))


def _times(now: datetime, offsets: Iterable[int]) -> list[datetime]:
    return [now + timedelta(seconds=s) for s in offsets]


def _amount(value: int) -> int | None:
    return None if value == NO_AMOUNT else value


class _Ids:
    """Database ids of the world's customers, channels, stages, arms and incentives."""

    def __init__(self, session: Session, campaigns: Mapping[str, Campaign]) -> None:
        self.channel = dict(session.exec(select(Channel.key, Channel.id)).all())
        self.stage = dict(session.exec(select(Stage.key, Stage.id)).all())
        self.channel_by_index = [self.channel[key] for key in CHANNEL_KEYS]
        self.stage_by_index = [self.stage[key] for key in STAGE_KEYS]
        self.campaign: dict[str, int] = {}
        for name, campaign in campaigns.items():
            assert campaign.id is not None
            self.campaign[name] = campaign.id
        self.arms: dict[tuple[str, str], Arm] = {
            (name, arm.name): arm for name, c in campaigns.items()
            for arm in campaign_arms(session, c)}
        self.customer: list[int] = []

    def load_customers(self, session: Session, external_ids: Sequence[str]) -> None:
        table = _table(Customer)
        found: dict[str, int] = {}
        for start in range(0, len(external_ids), 1000):
            chunk = external_ids[start:start + 1000]
            rows = session.execute(select(table.c.external_id, table.c.id)
                                   .where(table.c.external_id.in_(chunk)))
            found.update({external_id: row_id for external_id, row_id in rows})
        self.customer = [found[cid] for cid in external_ids]


def _write_world(session: Session, world: DemoWorld, campaigns: Mapping[str, Campaign]) -> None:
    ids = _Ids(session, campaigns)
    _insert_customers(session, world)
    ids.load_customers(session, world.customers.external_id)
    event_ids = _insert_events(session, world, ids)
    redemption_counts = Counter((r.campaign, r.customer) for r in world.redemptions)
    for name, result in world.experiments.items():
        _insert_assignments(session, result, ids, campaign=name, now=world.now,
                            redemption_counts=redemption_counts)
    code_ids = _insert_coupons(session, world, ids)
    redemption_ids = _insert_redemptions(session, world, ids, code_ids)
    _insert_lottery(session, world, ids, event_ids)
    _insert_ledger(session, world, ids, redemption_ids)
    for name, campaign in campaigns.items():
        campaign.spent_minor = world.spent_minor(name)
        session.add(campaign)
    session.flush()


def _insert_customers(session: Session, world: DemoWorld) -> None:
    frame = world.customers
    tiers = world.loyalty_tiers()
    columns = zip(
        frame.external_id, frame.segment.tolist(), frame.value_tier.tolist(),
        frame.preferred.tolist(), frame.region.tolist(), frame.age_band.tolist(),
        frame.tenure_months.tolist(), world.points.tolist(),
        frame.lifetime_value_minor.tolist(), frame.is_new.tolist(), frame.newsletter.tolist(),
        _times(world.now, frame.acquired_at.tolist()), tiers, strict=True)
    rows = [
        {"external_id": cid, "segment": SEGMENTS[seg], "value_tier": VALUE_TIERS[tier],
         "loyalty_tier": loyalty, "preferred_channel": CHANNEL_KEYS[pref],
         "region": REGIONS[region], "age_band": AGE_BANDS[age], "tenure_months": tenure,
         "points": points, "lifetime_value_minor": ltv, "is_new": is_new,
         "attributes": {"newsletter": newsletter, "source": "demo"}, "created_at": created}
        for (cid, seg, tier, pref, region, age, tenure, points, ltv, is_new, newsletter,
             created, loyalty) in columns
    ]
    _bulk_insert(session, _table(Customer), rows)


def _insert_events(session: Session, world: DemoWorld, ids: _Ids) -> list[str]:
    """Channel events (and a conversion per order); returns the events' client ids."""
    events = world.events
    client_ids = [f"{EVENT_PREFIX}{i:07d}" for i in range(1, len(events) + 1)]
    customers = [ids.customer[c] for c in events.customer.tolist()]
    channels = [ids.channel_by_index[c] for c in events.channel.tolist()]
    stages = [ids.stage_by_index[s] for s in events.stage.tolist()]
    times = _times(world.now, events.t.tolist())
    revenue = events.revenue.tolist()
    rows = [
        {"client_event_id": cid, "customer_id": customer, "channel_id": channel,
         "stage_id": stage, "kind": EVENT_KINDS[kind], "occurred_at": when, "cost_minor": cost,
         "revenue_minor": _amount(rev)}
        for cid, customer, channel, stage, kind, when, cost, rev in zip(
            client_ids, customers, channels, stages, events.kind.tolist(), times,
            events.cost.tolist(), revenue, strict=True)
    ]
    _bulk_insert(session, _table(ChannelEvent), rows)
    orders = np.flatnonzero(events.revenue >= 0).tolist()
    margin = events.margin.tolist()
    conversions = [
        {"client_event_id": f"{CONVERSION_PREFIX}{n:07d}", "customer_id": customers[i],
         "channel_id": channels[i], "kind": "purchase", "occurred_at": times[i],
         "revenue_minor": revenue[i], "margin_minor": _amount(margin[i])}
        for n, i in enumerate(orders, start=1)
    ]
    _bulk_insert(session, _table(Conversion), conversions)
    return client_ids


def _insert_assignments(
    session: Session, result: ExperimentResult, ids: _Ids, *, campaign: str, now: datetime,
    redemption_counts: Mapping[tuple[str, int], int],
) -> None:
    times = _times(now, result.exposed_at.tolist())
    rows = [
        {"campaign_id": ids.campaign[campaign], "customer_id": ids.customer[customer],
         "arm_id": ids.arms[(campaign, arm)].id, "allocation_period": 1,
         "first_exposed_at": when, "exposure_channel_id": ids.channel_by_index[channel],
         "redemption_count": redemption_counts.get((campaign, customer), 0)}
        for customer, arm, when, channel in zip(result.customer.tolist(), result.arm, times,
                                                result.exposure_channel.tolist(), strict=True)
    ]
    _bulk_insert(session, _table(Assignment), rows)


def _incentive_id(ids: _Ids, campaign: str, arm: str) -> int:
    incentive_id = ids.arms[(campaign, arm)].incentive_id
    assert incentive_id is not None
    return incentive_id


def _insert_coupons(session: Session, world: DemoWorld, ids: _Ids) -> dict[str, int]:
    incentive_id = _incentive_id(ids, ENDED_CAMPAIGN, "web coupon")
    campaign_id = ids.campaign[ENDED_CAMPAIGN]
    rows = [
        {"code": c.code, "incentive_id": incentive_id, "campaign_id": campaign_id,
         "customer_id": ids.customer[c.customer], "max_uses": 1, "uses": int(c.used),
         "issued_at": world.now + timedelta(seconds=c.issued_at),
         "expires_at": world.now + timedelta(seconds=c.expires_at),
         "created_at": world.now + timedelta(seconds=c.issued_at)}
        for c in world.coupons
    ]
    _bulk_insert(session, _table(CouponCode), rows)
    table = _table(CouponCode)
    stored = session.execute(select(table.c.code, table.c.id)
                             .where(table.c.campaign_id == campaign_id))
    return {code: row_id for code, row_id in stored}


def _redemption_request(world: DemoWorld, ids: _Ids, r: SimRedemption) -> RedemptionRequest:
    """The storefront request that would have made this redemption."""
    return RedemptionRequest(customer_id=world.customers.external_id[r.customer],
                             channel=r.channel, campaign_id=ids.campaign[r.campaign],
                             code=r.code, order_id=r.order_id,
                             order_amount_minor=r.order_amount_minor)


def _redemption_response(world: DemoWorld, ids: _Ids, r: SimRedemption, *,
                         redemption_id: int) -> dict[str, Any]:
    """The response body :func:`campaigns.services.redemptions.redeem` stores and replays."""
    body: dict[str, Any] = {
        "redemption_id": redemption_id, "status": RedemptionStatus.APPLIED.value,
        "campaign_id": ids.campaign[r.campaign], "arm": r.arm,
        "incentive_type": _incentive_type(r.campaign, r.arm),
        "customer_id": world.customers.external_id[r.customer], "order_id": r.order_id,
        "benefit_minor": r.benefit_minor, "cost_minor": r.cost_minor, "currency": CURRENCY,
        "details": r.details,
    }
    if r.points:
        body["points"] = r.points
    body["created_at"] = (world.now + timedelta(seconds=r.t)).isoformat()
    return body


def _incentive_type(campaign: str, arm: str) -> str | None:
    return next(spec.incentive_type for spec in CAMPAIGN_ARMS[campaign] if spec.name == arm)


def _insert_redemptions(session: Session, world: DemoWorld, ids: _Ids,
                        code_ids: Mapping[str, int]) -> dict[str, int]:
    """Applied redemptions as ``redeem`` writes them; returns their ids by idempotency key."""
    rows: list[dict[str, Any]] = [{
        "idempotency_key": r.idempotency_key,
        "request_hash": request_fingerprint(_redemption_request(world, ids, r)),
        "campaign_id": ids.campaign[r.campaign], "arm_id": ids.arms[(r.campaign, r.arm)].id,
        "customer_id": ids.customer[r.customer],
        "coupon_code_id": code_ids[r.code] if r.code else None,
        "channel_id": ids.channel[r.channel], "order_id": r.order_id,
        "order_amount_minor": r.order_amount_minor, "benefit_minor": r.benefit_minor,
        "cost_minor": r.cost_minor, "status": RedemptionStatus.APPLIED.value, "response": {},
        "created_at": world.now + timedelta(seconds=r.t),
    } for r in world.redemptions]
    _bulk_insert(session, _table(Redemption), rows)
    table = _table(Redemption)
    stored = session.execute(select(table.c.idempotency_key, table.c.id).where(
        table.c.campaign_id.in_(list(ids.campaign.values()))))
    redemption_ids = {key: row_id for key, row_id in stored}
    responses = [{"row_id": redemption_ids[r.idempotency_key],
                  "body": _redemption_response(world, ids, r,
                                               redemption_id=redemption_ids[r.idempotency_key])}
                 for r in world.redemptions]
    statement = (update(table).where(table.c.id == bindparam("row_id"))
                 .values(response=bindparam("body")))
    for start in range(0, len(responses), CHUNK):
        session.execute(statement, responses[start:start + CHUNK])
    return redemption_ids


def _insert_lottery(session: Session, world: DemoWorld, ids: _Ids,
                    event_ids: Sequence[str]) -> None:
    """Entries in time order, then the draw through the lottery service with the world's seed."""
    draw = world.lottery_draw
    assert draw is not None
    campaign_id = ids.campaign[ENDED_CAMPAIGN]
    incentive_id = _incentive_id(ids, ENDED_CAMPAIGN, "prize draw")
    times = _times(world.now, world.events.t[[p for _, p in world.lottery_entries]].tolist())
    rows = [
        {"campaign_id": campaign_id, "incentive_id": incentive_id,
         "customer_id": ids.customer[customer], "entries": 1, "source_ref": event_ids[position],
         "created_at": when}
        for (customer, position), when in zip(world.lottery_entries, times, strict=True)
    ]
    _bulk_insert(session, _table(LotteryEntry), rows)
    # The entries each customer holds, as the entry sources keep them on the assignment.
    entries = _table(LotteryEntry)
    held = (select(func.coalesce(func.sum(entries.c.entries), 0))
            .where(entries.c.campaign_id == campaign_id,
                   entries.c.customer_id == _table(Assignment).c.customer_id)
            .scalar_subquery())
    session.execute(update(_table(Assignment))
                    .where(_table(Assignment).c.campaign_id == campaign_id)
                    .values(lottery_entries=held))
    run_draw(session, campaign_id=campaign_id, actor=DEMO_ACTOR, seed=draw.seed,
             now=world.now + timedelta(seconds=draw.drawn_at))


def _insert_ledger(session: Session, world: DemoWorld, ids: _Ids,
                   redemption_ids: Mapping[str, int]) -> None:
    rows = [
        {"customer_id": ids.customer[e.customer],
         "campaign_id": ids.campaign[e.campaign] if e.campaign else None, "delta": e.delta,
         "reason": e.reason,
         "source_ref": (f"redemption:{redemption_ids[e.redemption_key]}"
                        if e.redemption_key else e.source_ref),
         "created_at": world.now + timedelta(seconds=e.t)}
        for e in world.ledger
    ]
    _bulk_insert(session, _table(PointsLedger), rows)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m seeds.demo [--seed N] [--customers N]``: migrate and seed the configured DB."""
    from campaigns import migrate
    from campaigns.db import get_engine, session_scope

    parser = argparse.ArgumentParser(description="Seed the ChannelShift demo world.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    args = parser.parse_args(argv)
    migrate.upgrade(get_engine())
    started = time.perf_counter()
    with session_scope() as session:
        summary = seed_demo_world(session, seed=args.seed, customers=args.customers)
    print(f"demo world ready in {time.perf_counter() - started:.1f} s: {summary}")


if __name__ == "__main__":
    main()
