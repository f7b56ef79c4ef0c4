"""An in-process snapshot of running campaigns' configuration for the storefront hot path.

Loading the configuration of every running campaign (goals, rules, arms, weights,
incentives) is many queries; the offers endpoint must not pay for them per request.
Each worker process keeps an immutable :class:`Snapshot` and polls the one-row
``config_epoch`` counter at most every ``refresh_interval`` seconds. Every configuration
change bumps the counter in its own transaction (see ``record_audit``), so all worker
processes, on any host, reload within about a second of a change committing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlmodel import Session, col, select

from campaigns.incentives import Offer, get_incentive_type
from campaigns.models import (
    Arm,
    ArmAllocation,
    Campaign,
    CampaignStatus,
    Channel,
    GoalSourceChannel,
    Incentive,
    MigrationGoal,
    Stage,
)
from campaigns.rules import ALWAYS, Rule
from campaigns.services.epoch import read_config_epoch


@dataclass(frozen=True)
class ArmConfig:
    id: int
    name: str
    weight: int
    is_control: bool
    incentive_id: int | None = None
    incentive_type: str | None = None
    incentive_name: str | None = None
    config: Any = None  # the type's validated pydantic config
    raw_config: dict[str, Any] = field(default_factory=dict)
    offer: Offer | None = None
    needs_code: bool = False
    unit_cost_minor: int = 0


@dataclass(frozen=True)
class CampaignConfig:
    id: int
    name: str
    goal_id: int
    stage_key: str
    target_channel_key: str
    source_channel_keys: frozenset[str]
    goal_rule: Rule
    campaign_rule: Rule
    arms: tuple[ArmConfig, ...]
    allocation: tuple[tuple[ArmConfig, int], ...]  # (arm, weight) of the current period
    salt: str
    period: int
    stacking: str
    priority: int
    per_customer_limit: int | None
    budget_minor: int | None
    ends_at: datetime | None
    currency: str
    starts_at: datetime | None = None

    @cached_property
    def _arms_by_id(self) -> dict[int, ArmConfig]:
        return {arm.id: arm for arm in self.arms}

    def arm(self, arm_id: int) -> ArmConfig | None:
        return self._arms_by_id.get(arm_id)

    def eligible(self, attributes: dict[str, object]) -> bool:
        return self.goal_rule.evaluate(attributes) and self.campaign_rule.evaluate(attributes)


def outside_schedule(starts_at: datetime | None, ends_at: datetime | None, now: datetime
                     ) -> str | None:
    """Why a running campaign takes no offer or redemption at ``now``: ``campaign_ended``
    from ``ends_at`` on, ``campaign_not_started`` before ``starts_at``; None within its
    schedule. Every storefront path asks this of the campaign row it reads, whether or not
    the scheduler has ended or started the campaign yet."""
    if ends_at is not None and ends_at <= now:
        return "campaign_ended"
    if starts_at is not None and starts_at > now:
        return "campaign_not_started"
    return None


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    campaigns: tuple[CampaignConfig, ...]  # highest priority first
    channel_ids: dict[str, int]
    stage_ids: dict[str, int]
    loaded_at: float

    def campaign(self, campaign_id: int) -> CampaignConfig | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)


def _rule(tree: dict[str, Any] | None) -> Rule:
    return Rule.from_data(tree) if tree else ALWAYS


def _arm_config(arm: Arm, incentive: Incentive | None, *, currency: str) -> ArmConfig:
    assert arm.id is not None
    if incentive is None:
        return ArmConfig(id=arm.id, name=arm.name, weight=arm.weight, is_control=arm.is_control)
    kind = get_incentive_type(incentive.type)
    config = kind.validate(incentive.config)
    return ArmConfig(
        id=arm.id, name=arm.name, weight=arm.weight, is_control=arm.is_control,
        incentive_id=incentive.id, incentive_type=incentive.type, incentive_name=incentive.name,
        config=config, raw_config=incentive.config, offer=kind.describe(config, currency=currency),
        needs_code=kind.needs_code(config), unit_cost_minor=kind.unit_cost_estimate(config),
    )


def load_snapshot(session: Session, *, epoch: int) -> Snapshot:
    """Read the configuration of every running campaign (a handful of queries in all)."""
    channels = {c.key: c.id for c in session.exec(select(Channel)).all() if c.id is not None}
    channel_keys = {v: k for k, v in channels.items()}
    stages = {s.key: s.id for s in session.exec(select(Stage)).all() if s.id is not None}
    stage_keys = {v: k for k, v in stages.items()}
    running = session.exec(
        select(Campaign).where(Campaign.status == CampaignStatus.RUNNING.value)
        .order_by(col(Campaign.priority).desc(), col(Campaign.id))
    ).all()
    ids = [c.id for c in running]
    goals = {g.id: g for g in session.exec(
        select(MigrationGoal).where(col(MigrationGoal.id).in_({c.goal_id for c in running}))
    ).all()}
    sources: dict[int, set[str]] = {}
    for link in session.exec(select(GoalSourceChannel).where(
            col(GoalSourceChannel.goal_id).in_(list(goals)))).all():
        sources.setdefault(link.goal_id, set()).add(channel_keys[link.channel_id])
    arms_by_campaign: dict[int, list[Arm]] = {}
    for arm in session.exec(select(Arm).where(col(Arm.campaign_id).in_(ids))
                            .order_by(col(Arm.position), col(Arm.id))).all():
        arms_by_campaign.setdefault(arm.campaign_id, []).append(arm)
    incentive_ids = {a.incentive_id for arms in arms_by_campaign.values() for a in arms
                     if a.incentive_id is not None}
    incentives = {i.id: i for i in session.exec(
        select(Incentive).where(col(Incentive.id).in_(incentive_ids))).all()}
    weights: dict[tuple[int, int], int] = {}
    periods = {c.id: c.allocation_period for c in running}
    for row in session.exec(select(ArmAllocation).where(
            col(ArmAllocation.campaign_id).in_(ids))).all():
        if periods.get(row.campaign_id) == row.period:
            weights[(row.campaign_id, row.arm_id)] = row.weight
    configs = []
    for campaign in running:
        # Only live campaigns run, and a live campaign always has a goal (CHECK constraint).
        assert campaign.id is not None and campaign.goal_id is not None
        goal = goals[campaign.goal_id]
        arms = tuple(_arm_config(arm, incentives.get(arm.incentive_id) if arm.incentive_id
                                 else None, currency=campaign.currency)
                     for arm in arms_by_campaign.get(campaign.id, []))
        allocation = tuple((arm, weights.get((campaign.id, arm.id), arm.weight)) for arm in arms)
        configs.append(CampaignConfig(
            id=campaign.id, name=campaign.name, goal_id=campaign.goal_id,
            stage_key=stage_keys[goal.stage_id],
            target_channel_key=channel_keys[goal.target_channel_id],
            source_channel_keys=frozenset(sources.get(goal.id or 0, set())),
            goal_rule=_rule(goal.eligibility_tree), campaign_rule=_rule(campaign.eligibility_tree),
            arms=arms, allocation=allocation, salt=campaign.salt,
            period=campaign.allocation_period, stacking=campaign.stacking,
            priority=campaign.priority, per_customer_limit=campaign.per_customer_limit,
            budget_minor=campaign.budget_minor, ends_at=campaign.ends_at,
            currency=campaign.currency, starts_at=campaign.starts_at,
        ))
    return Snapshot(epoch=epoch, campaigns=tuple(configs), channel_ids=channels,
                    stage_ids=stages, loaded_at=time.monotonic())


class Catalog:
    """The per-process cache of :class:`Snapshot` (thread-safe)."""

    def __init__(self, *, refresh_interval: float = 1.0) -> None:
        self.refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._epoch = -1
        self._checked_at = float("-inf")
        self._snapshot: Snapshot | None = None
        self.reloads = 0

    def epoch_due(self) -> bool:
        """Whether the epoch was last read an interval ago or more (always, with an
        interval of 0): then read it (:meth:`epoch`, on a thread) before trusting the
        cached snapshot. ``web.deps.SharedReads`` shares one read among the requests that
        find it due at the same time."""
        return time.monotonic() - self._checked_at >= self.refresh_interval

    @property
    def cached_epoch(self) -> int:
        return self._epoch

    def epoch(self, session: Session) -> int:
        """Read the configuration epoch from the database (see :meth:`epoch_due`)."""
        now = time.monotonic()
        epoch = read_config_epoch(session)
        with self._lock:
            self._epoch = epoch
            self._checked_at = now
        return epoch

    def current(self) -> Snapshot | None:
        """The cached snapshot if it is of the epoch last read, else None (call
        :meth:`snapshot` then, on a thread): lets the routes on the event loop skip the
        thread pool. Callers check the epoch first (:meth:`epoch_due`), as the API key
        check does for every API request."""
        current = self._snapshot
        if current is None or current.epoch != self._epoch:
            return None
        return current

    def snapshot(self, session: Session) -> Snapshot:
        """The snapshot of the current configuration, loaded if the cached one is of an
        older epoch (or was invalidated)."""
        epoch = self.epoch(session) if self._epoch < 0 or self.epoch_due() else self._epoch
        current = self._snapshot
        if current is not None and current.epoch == epoch:
            return current
        with self._lock:
            current = self._snapshot
            if current is None or current.epoch != epoch:
                current = load_snapshot(session, epoch=epoch)
                self._snapshot = current
                self.reloads += 1
        return current

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None
            self._checked_at = float("-inf")
