"""Pure simulation of the demo world: customers, histories, experiments, redemptions, draws.

Nothing here touches a database. :func:`simulate_demo_world` turns ``(seed, customers, now)``
into a :class:`DemoWorld` of numpy arrays and small records keyed by *customer index*
(position in the customer frame) and *arm name*; :mod:`seeds.demo` maps those to database
ids and writes them. The same arguments always give the same world: every random draw comes
from one ``numpy.random.default_rng(seed)`` in a fixed order, the lottery draw uses
:func:`campaigns.services.lotteries.draw_winners` with a seed derived from ``seed``, and arms
come from
:func:`campaigns.assignment.choose_arm` with salts derived from the seed.

Times are integer seconds relative to ``now`` (negative = in the past). Money is integer
minor units: random amounts are drawn as a float *factor*, turned into integer basis points
and applied with integer arithmetic.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from campaigns.assignment import choose_arm
from campaigns.incentives import OrderContext, get_incentive_type, tier_for_points
from campaigns.rules import Rule, parse_optional_rule
from campaigns.services.lotteries import draw_winners
from seeds.demo_spec import (
    ACTIVITY_PER_90_DAYS,
    ACTIVITY_SPREAD,
    AGE_BAND_SHARES,
    AGE_BANDS,
    CHANNEL_KEYS,
    CHANNEL_MIX,
    CHURN_SHARE,
    COMPLAINT_CHANNEL_SHARES,
    COMPLAINT_RATE,
    COUPON_EXPIRES_DAYS,
    CUSTOMER_PREFIX,
    DAY,
    DRAFT_ARMS,
    DRAFT_CAMPAIGN,
    ENDED_ARMS,
    ENDED_CAMPAIGN,
    ENDED_EXPERIMENT,
    ENDED_GOAL,
    ENTERPRISE_PREFERRED_SHARES,
    HISTORY_DAYS,
    LEDGER_PREFIX,
    LOTTERY_DRAW_DELAY_DAYS,
    MARGIN_BP_RANGE,
    MIN_ORDER_MINOR,
    MONTHLY_VALUE_MINOR,
    NEW_CUSTOMER_DAYS,
    NEW_CUSTOMER_SHARE,
    NEWSLETTER_SHARE,
    ORDER_BASE_MINOR,
    ORDER_LOGNORMAL_SIGMA,
    ORDER_SHARE,
    POINTS_SCALE,
    PRE_PERIOD_DAYS,
    PREFERRED_CHANNEL_WEIGHT,
    PREFERRED_SHARES,
    REGION_SHARES,
    REGIONS,
    RUNNING_ARMS,
    RUNNING_CAMPAIGN,
    RUNNING_EXPERIMENT,
    RUNNING_GOAL,
    SEGMENT_ORDER_MULTIPLIER_BP,
    SEGMENT_SHARES,
    SEGMENTS,
    STAGE_COSTS,
    STAGE_KEYS,
    STAGE_MIX,
    TENURE_MONTHS_RANGE,
    VALUE_TIER_SHARES,
    VALUE_TIERS,
    ArmSpec,
    ExperimentSpec,
    GoalSpec,
    OfferUse,
    incentive_configs,
    loyalty_config,
)

#: "Never" as a time offset: later than any simulated time.
NEVER = np.iinfo(np.int64).max // 4
#: Event kinds, in the order of :attr:`EventTable.kind` codes.
EVENT_KINDS: tuple[str, ...] = ("interaction", "complaint", "churn", "acquisition")
INTERACTION, COMPLAINT, CHURN, ACQUISITION = range(4)
NO_AMOUNT = -1  # revenue/margin sentinel for "none"
BP = 10_000
#: Orders that redeem an offer are at least this large (every offer's minimum order).
MIN_REDEMPTION_ORDER_MINOR = 2500

CAMPAIGN_KEYS: Mapping[str, str] = {ENDED_CAMPAIGN: "c1", RUNNING_CAMPAIGN: "c2",
                                    DRAFT_CAMPAIGN: "c3"}
CAMPAIGN_ARMS: Mapping[str, tuple[ArmSpec, ...]] = {ENDED_CAMPAIGN: ENDED_ARMS,
                                                     RUNNING_CAMPAIGN: RUNNING_ARMS,
                                                     DRAFT_CAMPAIGN: DRAFT_ARMS}
CAMPAIGN_GOALS: Mapping[str, GoalSpec] = {ENDED_CAMPAIGN: ENDED_GOAL,
                                          RUNNING_CAMPAIGN: RUNNING_GOAL}


def channel_index(key: str) -> int:
    return CHANNEL_KEYS.index(key)


def stage_index(key: str) -> int:
    return STAGE_KEYS.index(key)


def campaign_salt(*, seed: int, campaign: str) -> str:
    """The assignment salt of a demo campaign: derived from the seed, so worlds repeat."""
    return hashlib.sha256(f"{seed}:{campaign}".encode()).hexdigest()[:32]


def cost_matrix(costs: Mapping[tuple[str, str], int] | None = None) -> np.ndarray:
    """Cost per interaction as a (stage, channel) int64 matrix; ``costs`` by (channel, stage)."""
    matrix = np.zeros((len(STAGE_KEYS), len(CHANNEL_KEYS)), dtype=np.int64)
    for s, stage in enumerate(STAGE_KEYS):
        for c, channel in enumerate(CHANNEL_KEYS):
            default = STAGE_COSTS[stage][channel]
            matrix[s, c] = default if costs is None else costs.get((channel, stage), default)
    return matrix


def _categorical(rng: np.random.Generator, probs: Sequence[float], size: int) -> np.ndarray:
    cumulative = np.cumsum(np.asarray(probs, dtype=float))
    cumulative /= cumulative[-1]
    drawn = np.searchsorted(cumulative, rng.random(size), side="right")
    return np.minimum(drawn, len(cumulative) - 1).astype(np.int64)


# --------------------------------------------------------------------------- customers


@dataclass(eq=False)
class CustomerFrame:
    """Customers as parallel arrays; categorical columns hold indexes into the spec tuples."""

    external_id: list[str]
    segment: np.ndarray
    value_tier: np.ndarray
    preferred: np.ndarray
    region: np.ndarray
    age_band: np.ndarray
    tenure_months: np.ndarray
    is_new: np.ndarray
    newsletter: np.ndarray
    acquired_at: np.ndarray
    churned_at: np.ndarray
    activity: np.ndarray
    opening_points: np.ndarray
    lifetime_value_minor: np.ndarray

    def __len__(self) -> int:
        return len(self.external_id)

    def rule_view(self, index: int) -> dict[str, object]:
        """Attribute mapping of one customer as eligibility rules read it."""
        points = int(self.opening_points[index])
        return {
            "segment": SEGMENTS[self.segment[index]],
            "value_tier": VALUE_TIERS[self.value_tier[index]],
            "preferred_channel": CHANNEL_KEYS[self.preferred[index]],
            "region": REGIONS[self.region[index]],
            "age_band": AGE_BANDS[self.age_band[index]],
            "tenure_months": int(self.tenure_months[index]),
            "points": points,
            "lifetime_value": int(self.lifetime_value_minor[index]),
            "is_new": bool(self.is_new[index]),
            "attributes": {"newsletter": bool(self.newsletter[index])},
        }


def build_customer_frame(rng: np.random.Generator, *, customers: int) -> CustomerFrame:
    """Draw ``customers`` customers with attributes, acquisition and churn times."""
    n = customers
    segment = _categorical(rng, SEGMENT_SHARES, n)
    value_tier = _categorical(rng, VALUE_TIER_SHARES, n)
    preferred = np.where(segment == SEGMENTS.index("enterprise"),
                         _categorical(rng, ENTERPRISE_PREFERRED_SHARES, n),
                         _categorical(rng, PREFERRED_SHARES, n))
    region = _categorical(rng, REGION_SHARES, n)
    age_band = _categorical(rng, AGE_BAND_SHARES, n)
    is_new = rng.random(n) < NEW_CUSTOMER_SHARE
    new_age_days = rng.random(n) * NEW_CUSTOMER_DAYS
    low, high = TENURE_MONTHS_RANGE
    established_tenure = rng.integers(low, high + 1, n)
    tenure = np.where(is_new, (new_age_days // 30).astype(np.int64), established_tenure)
    established_age_days = established_tenure * 30 + rng.random(n) * 30
    acquired_at = -(np.where(is_new, new_age_days, established_age_days) * DAY).astype(np.int64)
    churns = ~is_new & (rng.random(n) < CHURN_SHARE)
    churned_at = np.where(churns, -(rng.random(n) * HISTORY_DAYS * DAY).astype(np.int64), NEVER)
    activity_base = np.array([ACTIVITY_PER_90_DAYS[s] for s in SEGMENTS])[segment]
    activity = activity_base * rng.uniform(*ACTIVITY_SPREAD, n)
    newsletter = rng.random(n) < NEWSLETTER_SHARE
    points_scale = np.array([POINTS_SCALE[t] for t in VALUE_TIERS])[value_tier]
    tenure_factor = np.minimum(np.maximum(tenure, 1), 36) / 12
    opening_points = (rng.gamma(2.0, 1.0, n) * points_scale * tenure_factor).astype(np.int64)
    monthly = np.array([MONTHLY_VALUE_MINOR[t] for t in VALUE_TIERS], dtype=np.int64)[value_tier]
    multiplier = np.array([SEGMENT_ORDER_MULTIPLIER_BP[s] for s in SEGMENTS],
                          dtype=np.int64)[segment]
    spread_bp = (rng.lognormal(0.0, 0.35, n) * BP).astype(np.int64)
    lifetime_value = monthly * multiplier // BP * np.maximum(tenure, 1) * spread_bp // BP
    width = max(6, len(str(n)))
    return CustomerFrame(
        external_id=[f"{CUSTOMER_PREFIX}{i:0{width}d}" for i in range(1, n + 1)],
        segment=segment, value_tier=value_tier, preferred=preferred.astype(np.int64),
        region=region, age_band=age_band, tenure_months=tenure.astype(np.int64),
        is_new=is_new, newsletter=newsletter, acquired_at=acquired_at, churned_at=churned_at,
        activity=activity, opening_points=opening_points, lifetime_value_minor=lifetime_value,
    )


def order_amounts(rng: np.random.Generator, frame: CustomerFrame,
                  customer: np.ndarray) -> np.ndarray:
    """Order amounts (cents) for the given customers: tier base x segment x lognormal factor."""
    base = np.array([ORDER_BASE_MINOR[t] for t in VALUE_TIERS], dtype=np.int64)
    multiplier = np.array([SEGMENT_ORDER_MULTIPLIER_BP[s] for s in SEGMENTS], dtype=np.int64)
    typical = base[frame.value_tier[customer]] * multiplier[frame.segment[customer]] // BP
    sigma = ORDER_LOGNORMAL_SIGMA
    factor_bp = (rng.lognormal(-sigma * sigma / 2, sigma, len(customer)) * BP).astype(np.int64)
    return np.maximum(typical * factor_bp // BP, MIN_ORDER_MINOR)


def margins(rng: np.random.Generator, revenue: np.ndarray) -> np.ndarray:
    low, high = MARGIN_BP_RANGE
    return revenue * rng.integers(low, high + 1, len(revenue)) // BP


# --------------------------------------------------------------------------- events


@dataclass(eq=False)
class EventTable:
    """Channel events as parallel arrays (kind codes index :data:`EVENT_KINDS`)."""

    customer: np.ndarray
    channel: np.ndarray
    stage: np.ndarray
    kind: np.ndarray
    t: np.ndarray
    cost: np.ndarray
    revenue: np.ndarray
    margin: np.ndarray
    lottery: np.ndarray

    _COLUMNS = ("customer", "channel", "stage", "kind", "t", "cost", "revenue", "margin",
                "lottery")

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def build(cls, *, customer: np.ndarray, channel: np.ndarray, stage: np.ndarray,
              kind: int | np.ndarray, t: np.ndarray, costs: np.ndarray,
              revenue: np.ndarray | None = None, margin: np.ndarray | None = None,
              lottery: np.ndarray | None = None) -> EventTable:
        """Events with costs looked up in the (stage, channel) ``costs`` matrix."""
        n = len(customer)
        none = np.full(n, NO_AMOUNT, dtype=np.int64)
        return cls(
            customer=customer.astype(np.int64), channel=channel.astype(np.int64),
            stage=stage.astype(np.int64),
            kind=np.broadcast_to(np.asarray(kind, dtype=np.int64), (n,)).copy(),
            t=t.astype(np.int64), cost=costs[stage, channel].astype(np.int64),
            revenue=none if revenue is None else revenue.astype(np.int64),
            margin=none.copy() if margin is None else margin.astype(np.int64),
            lottery=np.zeros(n, dtype=bool) if lottery is None else lottery.astype(bool),
        )

    @classmethod
    def concat(cls, tables: Sequence[EventTable]) -> EventTable:
        return cls(**{name: np.concatenate([getattr(t, name) for t in tables])
                      for name in cls._COLUMNS})

    def take(self, selector: np.ndarray) -> EventTable:
        return EventTable(**{name: getattr(self, name)[selector] for name in self._COLUMNS})

    def sorted(self) -> EventTable:
        """By time, then customer, then the original order (stable)."""
        return self.take(np.lexsort((np.arange(len(self)), self.customer, self.t)))


def _active_span(frame: CustomerFrame) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each customer's activity inside the history window."""
    start = np.maximum(frame.acquired_at, -HISTORY_DAYS * DAY)
    end = np.minimum(frame.churned_at, 0)
    return start, np.maximum(end, start)


def _uniform_times(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    return start + (rng.random(len(start)) * (end - start)).astype(np.int64)


def _draw_channels(rng: np.random.Generator, stage: np.ndarray,
                   preferred: np.ndarray) -> np.ndarray:
    mix = np.array([CHANNEL_MIX[s] for s in STAGE_KEYS], dtype=float)
    cumulative = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
    cumulative[:, -1] = 1.0
    drawn = (rng.random(len(stage))[:, None] >= cumulative[stage]).sum(axis=1)
    on_preferred = rng.random(len(stage)) < PREFERRED_CHANNEL_WEIGHT
    return np.where(on_preferred, preferred, np.minimum(drawn, len(CHANNEL_KEYS) - 1))


def background_events(rng: np.random.Generator, frame: CustomerFrame,
                      costs: np.ndarray) -> EventTable:
    """Interactions, orders, complaints, churn and acquisition events over the history."""
    start, end = _active_span(frame)
    n = rng.poisson(frame.activity * (end - start) / (PRE_PERIOD_DAYS * DAY))
    customer = np.repeat(np.arange(len(frame)), n)
    t = _uniform_times(rng, start[customer], end[customer])
    stage = _categorical(rng, STAGE_MIX, len(customer))
    channel = _draw_channels(rng, stage, frame.preferred[customer])
    is_order = (stage == stage_index("purchase")) & (rng.random(len(customer)) < ORDER_SHARE)
    revenue = np.full(len(customer), NO_AMOUNT, dtype=np.int64)
    margin = revenue.copy()
    revenue[is_order] = order_amounts(rng, frame, customer[is_order])
    margin[is_order] = margins(rng, revenue[is_order])
    interactions = EventTable.build(customer=customer, channel=channel, stage=stage,
                                    kind=INTERACTION, t=t, costs=costs, revenue=revenue,
                                    margin=margin)
    return EventTable.concat([interactions, _complaints(rng, frame, costs, start, end),
                              _churn_events(frame, costs), _acquisitions(frame, costs)])


def _complaints(rng: np.random.Generator, frame: CustomerFrame, costs: np.ndarray,
                start: np.ndarray, end: np.ndarray) -> EventTable:
    n = rng.poisson(COMPLAINT_RATE * (end - start) / (PRE_PERIOD_DAYS * DAY))
    customer = np.repeat(np.arange(len(frame)), n)
    channels = np.array([channel_index(k) for k in COMPLAINT_CHANNEL_SHARES])
    channel = channels[_categorical(rng, list(COMPLAINT_CHANNEL_SHARES.values()),
                                    len(customer))]
    stage = np.full(len(customer), stage_index("after_sale"))
    return EventTable.build(customer=customer, channel=channel, stage=stage, kind=COMPLAINT,
                            t=_uniform_times(rng, start[customer], end[customer]), costs=costs)


def _churn_events(frame: CustomerFrame, costs: np.ndarray) -> EventTable:
    customer = np.flatnonzero(frame.churned_at < 0)
    table = EventTable.build(customer=customer, channel=frame.preferred[customer],
                             stage=np.full(len(customer), stage_index("after_sale")),
                             kind=CHURN, t=frame.churned_at[customer], costs=costs)
    table.cost[:] = 0  # leaving costs nothing to serve
    return table


def _acquisitions(frame: CustomerFrame, costs: np.ndarray) -> EventTable:
    customer = np.flatnonzero(frame.acquired_at >= -HISTORY_DAYS * DAY)
    return EventTable.build(customer=customer, channel=frame.preferred[customer],
                            stage=np.full(len(customer), stage_index("purchase")),
                            kind=ACQUISITION, t=frame.acquired_at[customer], costs=costs)


# --------------------------------------------------------------------------- experiments


@dataclass(eq=False)
class ExperimentResult:
    """Exposed customers of one campaign with their arm, covariate, adoption and events."""

    spec: ExperimentSpec
    salt: str
    customer: np.ndarray
    arm: list[str]
    exposed_at: np.ndarray
    exposure_channel: np.ndarray
    covariate: np.ndarray
    p0: np.ndarray
    adopted: np.ndarray
    window_end: np.ndarray
    events: EventTable

    def arm_counts(self) -> dict[str, int]:
        return dict(Counter(self.arm))

    def adoption_by_arm(self) -> dict[str, float]:
        """Share of each arm's exposed customers who adopted (as simulated)."""
        arms = np.array(self.arm)
        return {name: float(self.adopted[arms == name].mean()) for name in sorted(set(self.arm))}


def eligible_mask(frame: CustomerFrame, rule: Rule) -> np.ndarray:
    return np.fromiter((rule.evaluate(frame.rule_view(i)) for i in range(len(frame))),
                       dtype=bool, count=len(frame))


def assign_arms(*, salt: str, external_ids: Sequence[str],
                arms: Sequence[ArmSpec]) -> list[str]:
    """Arm names by :func:`choose_arm` (the production hash), in position order of ``arms``."""
    weights = [(arm.name, arm.weight) for arm in arms]
    return [choose_arm(salt=salt, customer_id=cid, arms=weights) for cid in external_ids]


def _exposure_of(frame: CustomerFrame, result_customer: np.ndarray,
                 exposed_at: np.ndarray) -> np.ndarray:
    by_customer = np.full(len(frame), NEVER, dtype=np.int64)
    by_customer[result_customer] = exposed_at
    return by_customer


def _stage_channel_mask(events: EventTable, *, stage: str, channels: Sequence[str]) -> np.ndarray:
    wanted = np.isin(events.channel, [channel_index(c) for c in channels])
    return wanted & (events.stage == stage_index(stage)) & (events.kind == INTERACTION)


def pre_period_counts(events: EventTable, *, exposure_of: np.ndarray, stage: str,
                      target: str) -> np.ndarray:
    """Per customer: ``stage`` interactions on ``target`` in the 90 days before exposure."""
    at = exposure_of[events.customer]
    mask = (_stage_channel_mask(events, stage=stage, channels=[target]) & (at != NEVER)
            & (events.t < at) & (events.t >= at - PRE_PERIOD_DAYS * DAY))
    return np.bincount(events.customer[mask], minlength=len(exposure_of))


def window_mask(events: EventTable, *, exposure_of: np.ndarray, spec: ExperimentSpec
                ) -> np.ndarray:
    """Events the experiment itself simulates (source/target interactions in the window)."""
    at = exposure_of[events.customer]
    return (_stage_channel_mask(events, stage=spec.stage, channels=(*spec.sources, spec.target))
            & (at != NEVER) & (events.t >= at) & (events.t <= at + spec.window_days * DAY))


def adoption_probability(spec: ExperimentSpec, *, frame: CustomerFrame, customer: np.ndarray,
                         covariate: np.ndarray) -> np.ndarray:
    """Baseline adoption probability ``p0`` (see :class:`ExperimentSpec`)."""
    tier = np.array([spec.tier_adjust.get(t, 0.0) for t in VALUE_TIERS])[frame.value_tier[customer]]
    segment = np.array([spec.segment_adjust.get(s, 0.0) for s in SEGMENTS])[
        frame.segment[customer]]
    p0 = spec.base + tier + segment + spec.covariate_slope * np.minimum(covariate,
                                                                        spec.covariate_cap)
    return np.clip(p0, 0.0, 1.0)


def _select_exposed(rng: np.random.Generator, frame: CustomerFrame, spec: ExperimentSpec,
                    eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = spec.start_day * DAY
    stop = min(start + spec.exposure_days * DAY, 0)
    at = start + (rng.random(len(frame)) * (stop - start)).astype(np.int64)
    chosen = rng.random(len(frame)) < spec.exposure_rate
    active = (frame.acquired_at + DAY <= at) & (frame.churned_at > at)
    customer = np.flatnonzero(eligible & active & chosen)
    return customer, at[customer]


def simulate_experiment(rng: np.random.Generator, *, frame: CustomerFrame, history: EventTable,
                        spec: ExperimentSpec, arms: Sequence[ArmSpec], salt: str,
                        eligible: np.ndarray, costs: np.ndarray
                        ) -> tuple[ExperimentResult, EventTable]:
    """Expose, assign, draw adoption and the window's source/target events.

    Returns the result and ``history`` without the events the experiment replaces (the
    stage's source/target interactions of exposed customers inside their window).
    """
    customer, exposed_at = _select_exposed(rng, frame, spec, eligible)
    arm = assign_arms(salt=salt, external_ids=[frame.external_id[i] for i in customer], arms=arms)
    exposure_channels = np.array([channel_index(c) for c in spec.exposure_channels])
    exposure_channel = exposure_channels[_categorical(rng, [1.0] * len(exposure_channels),
                                                      len(customer))]
    exposure_of = _exposure_of(frame, customer, exposed_at)
    covariate = pre_period_counts(history, exposure_of=exposure_of, stage=spec.stage,
                                  target=spec.target)[customer]
    p0 = adoption_probability(spec, frame=frame, customer=customer, covariate=covariate)
    effect = np.array([spec.effects.get(name, 0.0) for name in arm])
    adopted = rng.random(len(customer)) < np.clip(p0 + effect, 0.0, 1.0)
    window_end = np.minimum(np.minimum(exposed_at + spec.window_days * DAY,
                                       frame.churned_at[customer]), 0)
    events = _window_events(rng, spec=spec, customer=customer, arm=arm, exposed_at=exposed_at,
                            window_end=window_end, adopted=adopted, costs=costs)
    kept = history.take(~window_mask(history, exposure_of=exposure_of, spec=spec))
    result = ExperimentResult(spec=spec, salt=salt, customer=customer, arm=arm,
                              exposed_at=exposed_at, exposure_channel=exposure_channel,
                              covariate=covariate, p0=p0, adopted=adopted,
                              window_end=window_end, events=events)
    return result, kept


def _window_events(rng: np.random.Generator, *, spec: ExperimentSpec, customer: np.ndarray,
                   arm: Sequence[str], exposed_at: np.ndarray, window_end: np.ndarray,
                   adopted: np.ndarray, costs: np.ndarray) -> EventTable:
    """Source contacts for everyone (fewer for adopters) and target interactions of adopters."""
    share_of_window = (window_end - exposed_at) / (spec.window_days * DAY)
    contacts = rng.poisson(spec.source_contacts * share_of_window)
    contacts = np.where(adopted, rng.binomial(contacts, spec.adopter_source_keep), contacts)
    low, high = spec.adopter_target_events
    target_n = np.where(adopted, rng.integers(low, high + 1, len(customer)), 0)
    sources = np.array([channel_index(c) for c in spec.sources])
    source_owner = np.repeat(np.arange(len(customer)), contacts)
    target_owner = np.repeat(np.arange(len(customer)), target_n)
    owner = np.concatenate([source_owner, target_owner])
    channel = np.concatenate([sources[_categorical(rng, spec.source_mix, len(source_owner))],
                              np.full(len(target_owner), channel_index(spec.target))])
    t = _uniform_times(rng, exposed_at[owner], window_end[owner])
    in_lottery = np.zeros(len(owner), dtype=bool)
    if spec.lottery_arm is not None:
        lottery_owner = np.array([name == spec.lottery_arm for name in arm], dtype=bool)
        in_lottery[len(source_owner):] = lottery_owner[target_owner]
    return EventTable.build(customer=customer[owner], channel=channel,
                            stage=np.full(len(owner), stage_index(spec.stage)),
                            kind=INTERACTION, t=t, costs=costs, lottery=in_lottery)


# --------------------------------------------------------------------------- redemptions


@dataclass(frozen=True)
class SimRedemption:
    campaign: str
    arm: str
    customer: int
    t: int
    channel: str
    order_id: str
    order_amount_minor: int
    benefit_minor: int
    cost_minor: int
    paid_minor: int
    margin_minor: int
    details: dict[str, Any]
    idempotency_key: str
    code: str | None = None
    points: int = 0


@dataclass(frozen=True)
class SimCoupon:
    code: str
    customer: int
    issued_at: int
    expires_at: int
    used: bool


def coupon_codes(rng: np.random.Generator, *, n: int, prefix: str, length: int,
                 charset: str) -> list[str]:
    """``n`` unique codes in the coupon's format, drawn from ``rng`` (so they repeat by seed).

    Same shape as :func:`campaigns.incentives.codes.generate_codes` (prefix + ``length``
    characters of ``charset``), which draws from :mod:`secrets` and so cannot be seeded.
    """
    alphabet = np.array(list(charset))
    codes: dict[str, None] = {}
    while len(codes) < n:
        draws = rng.integers(0, len(charset), (n - len(codes), length))
        for row in alphabet[draws]:
            codes.setdefault(prefix + "".join(row), None)
    return list(codes)


def simulate_redemptions(rng: np.random.Generator, *, frame: CustomerFrame,
                         result: ExperimentResult, configs: Mapping[str, Any],
                         codes_by_customer: Mapping[int, str]) -> list[SimRedemption]:
    """Offer uses by adopters, in time order, stopped where the budget would be overspent."""
    spec = result.spec
    arms = np.array(result.arm)
    key = CAMPAIGN_KEYS[spec.campaign]
    candidates: list[SimRedemption] = []
    for offer in spec.offers:
        positions = np.flatnonzero((arms == offer.arm) & result.adopted)
        redeem = rng.random(len(positions)) < offer.rate
        positions = positions[redeem]
        customer = result.customer[positions]
        start = result.exposed_at[positions]
        stop = np.minimum(result.window_end[positions], spec.end_day * DAY)
        t = _uniform_times(rng, start, np.maximum(stop, start + 1))
        amounts = np.maximum(order_amounts(rng, frame, customer), MIN_REDEMPTION_ORDER_MINOR)
        margin_bp = rng.integers(MARGIN_BP_RANGE[0], MARGIN_BP_RANGE[1] + 1, len(customer))
        candidates += [
            _redemption(offer, spec=spec, config=configs[offer.arm], customer=int(c), t=int(when),
                        amount=int(amount), margin_bp=int(bp), code=codes_by_customer.get(int(c)))
            for c, when, amount, bp in zip(customer, t, amounts, margin_bp, strict=True)
        ]
    candidates.sort(key=lambda r: (r.t, r.customer, r.arm))
    accepted: list[SimRedemption] = []
    spent = 0
    for number, candidate in enumerate(candidates, start=1):
        if spent + candidate.cost_minor > spec.budget_minor:
            continue  # the real service refuses a redemption that would overspend
        spent += candidate.cost_minor
        accepted.append(_numbered(candidate, key=key, number=number))
    return accepted


def _redemption(offer: OfferUse, *, spec: ExperimentSpec, config: Any, customer: int, t: int,
                amount: int, margin_bp: int, code: str | None) -> SimRedemption:
    incentive_type = get_incentive_type(_arm_type(spec.campaign, offer.arm))
    benefit = incentive_type.compute_benefit(
        config, OrderContext(order_amount_minor=amount, channel_key=offer.channel,
                             target_channel_key=spec.target))
    paid = amount - benefit.benefit_minor if offer.reduces_price else amount
    earned = benefit.details.get("points", 0)
    points = earned if offer.credits_points and isinstance(earned, int) else 0
    return SimRedemption(
        campaign=spec.campaign, arm=offer.arm, customer=customer, t=t, channel=offer.channel,
        order_id="", order_amount_minor=amount, benefit_minor=benefit.benefit_minor,
        cost_minor=benefit.cost_minor, paid_minor=paid, margin_minor=paid * margin_bp // BP,
        details=dict(benefit.details), idempotency_key="", code=code, points=points,
    )


def _numbered(redemption: SimRedemption, *, key: str, number: int) -> SimRedemption:
    return replace(redemption, order_id=f"DEMO-{key.upper()}-{number:06d}",
                   idempotency_key=f"demo-{key}-redeem-{number:06d}")


def _arm_type(campaign: str, arm: str) -> str:
    for spec in CAMPAIGN_ARMS[campaign]:
        if spec.name == arm and spec.incentive_type is not None:
            return spec.incentive_type
    raise KeyError(f"campaign {campaign!r} has no incentive arm {arm!r}")


def redemption_events(redemptions: Sequence[SimRedemption], *, costs: np.ndarray) -> EventTable:
    """The order (a purchase interaction with revenue) behind each redemption."""
    if not redemptions:
        return EventTable.build(customer=np.zeros(0, np.int64), channel=np.zeros(0, np.int64),
                                stage=np.zeros(0, np.int64), kind=INTERACTION,
                                t=np.zeros(0, np.int64), costs=costs)
    return EventTable.build(
        customer=np.array([r.customer for r in redemptions]),
        channel=np.array([channel_index(r.channel) for r in redemptions]),
        stage=np.full(len(redemptions), stage_index("purchase")), kind=INTERACTION,
        t=np.array([r.t for r in redemptions]), costs=costs,
        revenue=np.array([r.paid_minor for r in redemptions]),
        margin=np.array([r.margin_minor for r in redemptions]),
    )


# --------------------------------------------------------------------------- lottery


@dataclass(frozen=True)
class SimLotteryDraw:
    """The draw :func:`campaigns.services.lotteries.run_draw` makes with ``seed``."""

    seed: str
    drawn_at: int
    #: (customer index, prize key, prize value in cents), in award order
    winners: tuple[tuple[int, str, int], ...]
    #: prizes awarded by prize key (never above the prize's inventory)
    used: Mapping[str, int]


# --------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class SimLedgerEntry:
    """A points movement; credits name their redemption (``source_ref`` gets its id later)."""

    customer: int
    campaign: str | None
    delta: int
    reason: str
    source_ref: str
    t: int
    redemption_key: str | None = None


def points_ledger(frame: CustomerFrame, redemptions: Sequence[SimRedemption]
                  ) -> list[SimLedgerEntry]:
    """Opening balances plus the points credited by loyalty redemptions."""
    start = np.maximum(frame.acquired_at, -HISTORY_DAYS * DAY)
    entries = [
        SimLedgerEntry(customer=int(i), campaign=None, delta=int(frame.opening_points[i]),
                       reason="opening balance", source_ref=f"{LEDGER_PREFIX}opening",
                       t=int(start[i]))
        for i in np.flatnonzero(frame.opening_points > 0)
    ]
    entries += [
        SimLedgerEntry(customer=r.customer, campaign=r.campaign, delta=r.points,
                       reason="redemption", source_ref="", t=r.t,
                       redemption_key=r.idempotency_key)
        for r in redemptions if r.points > 0
    ]
    return entries


# --------------------------------------------------------------------------- the world


@dataclass(eq=False)
class DemoWorld:
    """Everything :func:`seeds.demo.seed_demo_world` writes, before it has database ids."""

    seed: int
    now: datetime
    customers: CustomerFrame
    events: EventTable
    experiments: dict[str, ExperimentResult]
    configs: dict[str, Any]
    salts: dict[str, str]
    coupons: list[SimCoupon]
    redemptions: list[SimRedemption]
    lottery_entries: list[tuple[int, int]] = field(default_factory=list)
    lottery_draw: SimLotteryDraw | None = None
    ledger: list[SimLedgerEntry] = field(default_factory=list)
    points: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def loyalty_tiers(self) -> list[str]:
        """Each customer's loyalty tier from their final points balance."""
        ladder = get_incentive_type("loyalty").validate(loyalty_config())
        return [tier_for_points(ladder, int(p)) for p in self.points]

    def spent_minor(self, campaign: str) -> int:
        return sum(r.cost_minor for r in self.redemptions if r.campaign == campaign)

    def summary(self) -> dict[str, int]:
        """Row counts the world produces (used by tests and the CLI output)."""
        return {
            "customers": len(self.customers),
            "channel_events": len(self.events),
            "conversions": int((self.events.revenue >= 0).sum()),
            "assignments": sum(len(r.customer) for r in self.experiments.values()),
            "coupon_codes": len(self.coupons),
            "redemptions": len(self.redemptions),
            "lottery_entries": len(self.lottery_entries),
            "lottery_winners": len(self.lottery_draw.winners) if self.lottery_draw else 0,
            "points_ledger_entries": len(self.ledger),
        }


def validated_configs(now: datetime) -> dict[str, Any]:
    """Typed incentive configs by arm name, validated by the incentive registry."""
    types = {arm.name: arm.incentive_type for arms in CAMPAIGN_ARMS.values() for arm in arms
             if arm.incentive_type is not None}
    return {name: get_incentive_type(types[name]).validate(raw)
            for name, raw in incentive_configs(now).items()}


def _eligibility(frame: CustomerFrame, goal: GoalSpec) -> np.ndarray:
    rule = parse_optional_rule(goal.eligibility_rule, channel_keys=CHANNEL_KEYS)
    return eligible_mask(frame, rule)


def _coupons(rng: np.random.Generator, result: ExperimentResult, config: Any) -> list[SimCoupon]:
    arms = np.array(result.arm)
    positions = np.flatnonzero(arms == "web coupon")
    codes = coupon_codes(rng, n=len(positions), prefix=config.prefix, length=config.length,
                         charset=config.charset)
    return [SimCoupon(code=code, customer=int(result.customer[p]),
                      issued_at=int(result.exposed_at[p]),
                      expires_at=int(result.exposed_at[p]) + COUPON_EXPIRES_DAYS * DAY,
                      used=False)
            for code, p in zip(codes, positions, strict=True)]


def _lottery(world: DemoWorld, *, seed: int) -> None:
    """Entries for prize-draw adopters' web interactions while the campaign ran, and the draw.

    The winners are what :func:`campaigns.services.lotteries.run_draw` picks with the same
    seed: its tickets are the entries in insertion (id) order aggregated per customer,
    which is the order of ``world.lottery_entries``.
    """
    config = world.configs["prize draw"]
    cap = config.entry_rule.max_entries_per_customer
    running = world.events.lottery & (world.events.t < ENDED_EXPERIMENT.end_day * DAY)
    per_customer: Counter[int] = Counter()
    entries: list[tuple[int, int]] = []
    for position in np.flatnonzero(running).tolist():
        customer = int(world.events.customer[position])
        if cap is not None and per_customer[customer] >= cap:
            continue
        per_customer[customer] += 1
        entries.append((customer, position))
    world.lottery_entries = entries
    draw_seed = hashlib.sha256(f"{seed}:lottery:{ENDED_CAMPAIGN}".encode()).hexdigest()
    awards = draw_winners(list(per_customer.items()),
                          [(p.key, p.value_minor, p.inventory) for p in config.prizes], draw_seed)
    world.lottery_draw = SimLotteryDraw(
        seed=draw_seed, drawn_at=(ENDED_EXPERIMENT.end_day + LOTTERY_DRAW_DELAY_DAYS) * DAY,
        winners=tuple((a.customer_id, a.prize_key, a.value_minor) for a in awards),
        used=dict(Counter(a.prize_key for a in awards)),
    )


def simulate_demo_world(*, seed: int, customers: int, now: datetime,
                        costs: Mapping[tuple[str, str], int] | None = None) -> DemoWorld:
    """The whole demo world for ``seed`` and ``now``: deterministic, no database."""
    if customers < 1:
        raise ValueError(f"customers must be at least 1; got {customers}")
    rng = np.random.default_rng(seed)
    matrix = cost_matrix(costs)
    configs = validated_configs(now)
    salts = {name: campaign_salt(seed=seed, campaign=name) for name in CAMPAIGN_ARMS}
    frame = build_customer_frame(rng, customers=customers)
    history = background_events(rng, frame, matrix)
    experiments: dict[str, ExperimentResult] = {}
    redemptions: list[SimRedemption] = []
    coupons: list[SimCoupon] = []
    for spec in (ENDED_EXPERIMENT, RUNNING_EXPERIMENT):
        result, history = simulate_experiment(
            rng, frame=frame, history=history, spec=spec, arms=CAMPAIGN_ARMS[spec.campaign],
            salt=salts[spec.campaign],
            eligible=_eligibility(frame, CAMPAIGN_GOALS[spec.campaign]), costs=matrix)
        experiments[spec.campaign] = result
        campaign_coupons = (_coupons(rng, result, configs["web coupon"])
                            if spec.campaign == ENDED_CAMPAIGN else [])
        used = simulate_redemptions(rng, frame=frame, result=result, configs=configs,
                                    codes_by_customer={c.customer: c.code
                                                       for c in campaign_coupons})
        redeemed = {r.code for r in used if r.code}
        coupons += [replace(c, used=c.code in redeemed) for c in campaign_coupons]
        redemptions += used
        history = EventTable.concat([history, result.events,
                                     redemption_events(used, costs=matrix)])
    world = DemoWorld(seed=seed, now=now, customers=frame, events=history.sorted(),
                      experiments=experiments, configs=configs, salts=salts, coupons=coupons,
                      redemptions=redemptions)
    _lottery(world, seed=seed)
    world.ledger = points_ledger(frame, redemptions)
    points = frame.opening_points.copy()
    for entry in world.ledger:
        if entry.campaign is not None:
            points[entry.customer] += entry.delta
    world.points = points
    return world
