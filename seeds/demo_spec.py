"""The demo world's fixed parameters: channels, costs, customer mix, campaigns, true effects.

Everything the simulation in :mod:`seeds.demo_simulation` draws from is declared here, so
the numbers that docs/DEMO.md documents live in one place. Money is integer minor units
(euro cents); probabilities and rates are plain floats (they are not money).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: Who the audit log says configured the demo world.
DEMO_ACTOR = "seed:demo"
DEFAULT_SEED = 20261122
DEFAULT_CUSTOMERS = 20_000
CURRENCY = "EUR"

DAY = 86_400  # seconds
#: Background history before ``now`` (covers the ended campaign's 90-day pre-period).
HISTORY_DAYS = 180
#: Length of the pre-period whose target-channel use is the CUPED covariate.
PRE_PERIOD_DAYS = 90

#: Prefixes of generated identifiers (used to find the demo's rows again).
CUSTOMER_PREFIX = "C"
EVENT_PREFIX = "demo-e"
CONVERSION_PREFIX = "demo-cv"
LEDGER_PREFIX = "demo-"

# --------------------------------------------------------------------------- channels

#: (key, display name, kind), in the index order the simulation uses.
CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("store", "Store", "store"),
    ("sales_rep", "Sales rep", "sales_rep"),
    ("call_centre", "Call centre", "call_centre"),
    ("ivr", "IVR (phone menu)", "ivr"),
    ("web", "Web", "web"),
    ("app", "Mobile app", "app"),
    ("email", "Email", "email"),
    ("partner", "Partner", "partner"),
)
CHANNEL_KEYS: tuple[str, ...] = tuple(key for key, _, _ in CHANNELS)
STAGE_KEYS: tuple[str, ...] = ("pre_sale", "purchase", "after_sale")

#: Cost to serve one interaction, in cents, by stage and channel.
STAGE_COSTS: Mapping[str, Mapping[str, int]] = {
    "pre_sale": {"store": 1200, "sales_rep": 4500, "call_centre": 600, "ivr": 90,
                 "web": 15, "app": 12, "email": 5, "partner": 1000},
    "purchase": {"store": 1800, "sales_rep": 6000, "call_centre": 800, "ivr": 120,
                 "web": 25, "app": 20, "email": 8, "partner": 1500},
    "after_sale": {"store": 1500, "sales_rep": 5000, "call_centre": 700, "ivr": 110,
                   "web": 20, "app": 15, "email": 6, "partner": 1200},
}

# --------------------------------------------------------------------------- customers

SEGMENTS: tuple[str, ...] = ("consumer", "small_business", "enterprise")
SEGMENT_SHARES: tuple[float, ...] = (0.80, 0.15, 0.05)
VALUE_TIERS: tuple[str, ...] = ("bronze", "silver", "gold", "platinum")
VALUE_TIER_SHARES: tuple[float, ...] = (0.50, 0.30, 0.15, 0.05)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
REGION_SHARES: tuple[float, ...] = (0.22, 0.24, 0.18, 0.16, 0.20)
AGE_BANDS: tuple[str, ...] = ("18_24", "25_34", "35_44", "45_54", "55_64", "65_plus")
AGE_BAND_SHARES: tuple[float, ...] = (0.10, 0.22, 0.22, 0.20, 0.15, 0.11)
#: Preferred channel shares (in CHANNEL_KEYS order); enterprise customers use their own mix.
PREFERRED_SHARES: tuple[float, ...] = (0.14, 0.04, 0.24, 0.06, 0.26, 0.16, 0.05, 0.05)
ENTERPRISE_PREFERRED_SHARES: tuple[float, ...] = (0.05, 0.35, 0.20, 0.02, 0.20, 0.08, 0.05,
                                                  0.05)
#: Share of customers acquired in the last NEW_CUSTOMER_DAYS days (``is_new``).
NEW_CUSTOMER_SHARE = 0.08
NEW_CUSTOMER_DAYS = 60
#: Tenure in months of established customers (acquired before the history starts).
TENURE_MONTHS_RANGE = (7, 120)
#: Share of established customers who churn at some point during the history.
CHURN_SHARE = 0.02
#: Complaints per customer per 90 days (independent of any campaign arm).
COMPLAINT_RATE = 0.02
COMPLAINT_CHANNEL_SHARES: Mapping[str, float] = {"call_centre": 0.6, "store": 0.2,
                                                  "email": 0.2}
NEWSLETTER_SHARE = 0.4

#: Interactions per 90 days by segment; each customer gets a factor in ACTIVITY_SPREAD.
ACTIVITY_PER_90_DAYS: Mapping[str, float] = {"consumer": 6.0, "small_business": 8.0,
                                             "enterprise": 10.0}
ACTIVITY_SPREAD = (0.8, 1.25)

#: Share of interactions by stage (STAGE_KEYS order).
STAGE_MIX: tuple[float, ...] = (0.30, 0.25, 0.45)
#: Probability that an interaction happens on the customer's preferred channel; otherwise
#: the channel is drawn from CHANNEL_MIX of the stage.
PREFERRED_CHANNEL_WEIGHT = 0.45
CHANNEL_MIX: Mapping[str, tuple[float, ...]] = {
    #            store sales  call   ivr   web   app  email partner
    "pre_sale": (0.25, 0.10, 0.15, 0.02, 0.25, 0.13, 0.05, 0.05),
    "purchase": (0.25, 0.06, 0.20, 0.04, 0.27, 0.12, 0.00, 0.06),
    "after_sale": (0.10, 0.03, 0.35, 0.20, 0.15, 0.10, 0.05, 0.02),
}
#: Share of purchase-stage interactions that are orders (with revenue and a conversion row).
ORDER_SHARE = 0.55
#: Typical order by value tier (cents) and segment multiplier (basis points).
ORDER_BASE_MINOR: Mapping[str, int] = {"bronze": 4500, "silver": 7500, "gold": 12_000,
                                       "platinum": 20_000}
SEGMENT_ORDER_MULTIPLIER_BP: Mapping[str, int] = {"consumer": 10_000, "small_business": 20_000,
                                                  "enterprise": 40_000}
ORDER_LOGNORMAL_SIGMA = 0.45
MIN_ORDER_MINOR = 500
MARGIN_BP_RANGE = (1800, 3600)
#: Lifetime value: monthly value by tier (cents) x segment multiplier x tenure.
MONTHLY_VALUE_MINOR: Mapping[str, int] = {"bronze": 1500, "silver": 3500, "gold": 8000,
                                          "platinum": 20_000}
#: Opening loyalty points: gamma(shape 2, scale by tier) x tenure factor.
POINTS_SCALE: Mapping[str, float] = {"bronze": 400.0, "silver": 600.0, "gold": 1000.0,
                                     "platinum": 1600.0}

LOYALTY_TIERS: tuple[dict[str, Any], ...] = (
    {"key": "member", "name": "Member", "threshold_points": 0,
     "benefits": "Points on every order"},
    {"key": "plus", "name": "Plus", "threshold_points": 2000,
     "benefits": "Free delivery on web and app orders"},
    {"key": "premier", "name": "Premier", "threshold_points": 8000,
     "benefits": "Priority service and yearly gift"},
)

# --------------------------------------------------------------------------- campaigns

ENDED_CAMPAIGN = "After-sale self-service on the web"
RUNNING_CAMPAIGN = "Pre-sale questions in the app"
DRAFT_CAMPAIGN = "Purchases on the web instead of the phone"
DEMO_CAMPAIGNS: tuple[str, ...] = (ENDED_CAMPAIGN, RUNNING_CAMPAIGN, DRAFT_CAMPAIGN)

#: True absolute uplift of adoption probability for the ended campaign's arms.
TRUE_EFFECTS: Mapping[str, float] = {"web coupon": 0.06, "prize draw": 0.03}
#: True absolute uplift of adoption probability for the running campaign's arms.
RUNNING_TRUE_EFFECTS: Mapping[str, float] = {"double points in the app": 0.04,
                                             "5% app discount": 0.02}


@dataclass(frozen=True)
class GoalSpec:
    name: str
    description: str
    stage: str
    sources: tuple[str, ...]
    target: str
    metric: str
    window_days: int
    target_uplift: str
    eligibility_rule: str | None


@dataclass(frozen=True)
class ArmSpec:
    name: str
    weight: int
    incentive_type: str | None = None
    incentive_name: str | None = None

    @property
    def is_control(self) -> bool:
        return self.incentive_type is None


@dataclass(frozen=True)
class OfferUse:
    """How adopters of one arm use its offer: share who redeem, on which channel."""

    arm: str
    rate: float
    channel: str
    #: the benefit is taken off the price (discounts); otherwise it is paid on top (points)
    reduces_price: bool
    #: redemptions credit loyalty points (a points_ledger row each)
    credits_points: bool = False


@dataclass(frozen=True)
class ExperimentSpec:
    """How exposures, adoption and the in-window channel events of one campaign are drawn.

    Baseline adoption probability of an exposed customer::

        p0 = base + tier_adjust[value_tier] + segment_adjust[segment]
             + covariate_slope * min(pre, covariate_cap)

    where ``pre`` is the number of the customer's ``stage`` interactions on ``target`` in the
    90 days before exposure. The arm's effect is added to ``p0`` and the sum is clipped to
    [0, 1] (with these constants the clip never binds, so the expected uplift is exact).
    """

    campaign: str
    stage: str
    sources: tuple[str, ...]
    source_mix: tuple[float, ...]
    target: str
    start_day: int
    end_day: int
    exposure_days: int
    exposure_rate: float
    window_days: int
    base: float
    tier_adjust: Mapping[str, float]
    segment_adjust: Mapping[str, float]
    covariate_slope: float
    covariate_cap: int
    effects: Mapping[str, float]
    #: expected source-channel contacts over a full window (Poisson)
    source_contacts: float
    #: share of source contacts an adopter still makes
    adopter_source_keep: float
    #: target-channel interactions of an adopter: uniform integer in this range
    adopter_target_events: tuple[int, int]
    offers: tuple[OfferUse, ...] = ()
    lottery_arm: str | None = None
    per_customer_limit: int | None = None
    budget_minor: int = 0
    exposure_channels: tuple[str, ...] = field(default_factory=tuple)


ENDED_GOAL = GoalSpec(
    name="After-sale service on the web",
    description="Move after-sale questions from the call centre and IVR to web self-service. "
                "Platinum customers keep their account manager.",
    stage="after_sale", sources=("call_centre", "ivr"), target="web", metric="adoption",
    window_days=30, target_uplift="0.05",
    eligibility_rule="value_tier in [bronze, silver, gold]",
)
RUNNING_GOAL = GoalSpec(
    name="Pre-sale questions in the app",
    description="Answer product questions in the app instead of in stores and by sales reps.",
    stage="pre_sale", sources=("store", "sales_rep"), target="app", metric="adoption",
    window_days=30, target_uplift="0.04",
    eligibility_rule="value_tier in [bronze, silver]",
)
DRAFT_GOAL = GoalSpec(
    name="Purchases on the web instead of the phone",
    description="Shift phone orders to the web shop.",
    stage="purchase", sources=("call_centre",), target="web", metric="share",
    window_days=60, target_uplift="0.03",
    eligibility_rule="segment in [consumer, small_business]",
)

ENDED_ARMS: tuple[ArmSpec, ...] = (
    ArmSpec("control", 34),
    ArmSpec("web coupon", 33, "coupon", "10% off on the web (personal code)"),
    ArmSpec("prize draw", 33, "lottery", "Prize draw for web self-service"),
)
RUNNING_ARMS: tuple[ArmSpec, ...] = (
    ArmSpec("control", 20),
    ArmSpec("double points in the app", 40, "loyalty", "Double points in the app"),
    ArmSpec("5% app discount", 40, "percent_discount", "5% off app orders"),
)
DRAFT_ARMS: tuple[ArmSpec, ...] = (
    ArmSpec("control", 34),
    ArmSpec("web rebate", 33, "rebate", "3% cashback on web orders"),
    ArmSpec("free delivery trial", 33, "free_trial", "30 days of free premium delivery"),
)

ENDED_EXPERIMENT = ExperimentSpec(
    campaign=ENDED_CAMPAIGN, stage="after_sale", sources=("call_centre", "ivr"),
    source_mix=(0.65, 0.35), target="web",
    start_day=-75, end_day=-45, exposure_days=14, exposure_rate=0.60, window_days=30,
    base=0.135,
    tier_adjust={"bronze": 0.0, "silver": 0.02, "gold": 0.04, "platinum": 0.0},
    segment_adjust={"consumer": 0.0, "small_business": 0.02, "enterprise": -0.03},
    covariate_slope=0.09, covariate_cap=4,
    effects=TRUE_EFFECTS,
    source_contacts=3.0, adopter_source_keep=0.4, adopter_target_events=(1, 3),
    offers=(OfferUse("web coupon", 0.70, "web", reduces_price=True),),
    lottery_arm="prize draw", per_customer_limit=1, budget_minor=500_000,
    exposure_channels=("call_centre", "ivr"),
)
RUNNING_EXPERIMENT = ExperimentSpec(
    campaign=RUNNING_CAMPAIGN, stage="pre_sale", sources=("store", "sales_rep"),
    source_mix=(0.75, 0.25), target="app",
    start_day=-10, end_day=50, exposure_days=10, exposure_rate=0.32, window_days=30,
    base=0.11,
    tier_adjust={"bronze": 0.0, "silver": 0.02, "gold": 0.0, "platinum": 0.0},
    segment_adjust={"consumer": 0.0, "small_business": 0.02, "enterprise": -0.02},
    covariate_slope=0.08, covariate_cap=4,
    effects=RUNNING_TRUE_EFFECTS,
    source_contacts=1.5, adopter_source_keep=0.4, adopter_target_events=(1, 2),
    offers=(
        OfferUse("5% app discount", 0.50, "app", reduces_price=True),
        OfferUse("double points in the app", 0.60, "app", reduces_price=False,
                 credits_points=True),
    ),
    per_customer_limit=3, budget_minor=300_000,
    exposure_channels=("store", "sales_rep"),
)
DRAFT_BUDGET_MINOR = 600_000
DRAFT_START_DAY = 14
DRAFT_END_DAY = 74

#: Coupon codes of the ended campaign expire this many days after they are issued.
COUPON_EXPIRES_DAYS = 60
#: Lottery draw: one day after the ended campaign ends.
LOTTERY_DRAW_DELAY_DAYS = 1
LOTTERY_ALGORITHM = "odds-per-entry-v1"


def incentive_configs(now: datetime) -> dict[str, dict[str, Any]]:
    """Raw incentive configurations by arm name (validated by the incentive registry)."""
    draw_at = now + timedelta(days=ENDED_EXPERIMENT.end_day + LOTTERY_DRAW_DELAY_DAYS)
    return {
        "web coupon": {
            "mode": "batch", "prefix": "WEB-", "length": 10,
            "benefit": {"kind": "percent", "percent_bp": 1000, "cap_minor": 1000,
                        "min_order_minor": 2000},
            "expires_days": COUPON_EXPIRES_DAYS,
        },
        "prize draw": {
            "prizes": [
                {"key": "city-break", "name": "Weekend city break", "value_minor": 40_000,
                 "inventory": 1, "odds": {"numerator": 1, "denominator": 400}},
                {"key": "tablet", "name": "Tablet", "value_minor": 20_000, "inventory": 2,
                 "odds": {"numerator": 1, "denominator": 150}},
                {"key": "voucher-15", "name": "15 EUR web shop voucher", "value_minor": 1500,
                 "inventory": 40, "odds": {"numerator": 1, "denominator": 10}},
            ],
            "entry_rule": {"event": "interaction", "channel_key": "web", "entries_per_event": 1,
                           "max_entries_per_customer": 3},
            "draw_at": draw_at.isoformat(),
        },
        "double points in the app": loyalty_config(),
        "5% app discount": {"percent_bp": 500, "cap_minor": 2500},
        "web rebate": {"percent_bp": 300, "cap_minor": 3000,
                       "condition": {"min_order_minor": 2000, "channel_key": "web",
                                     "payout_delay_days": 30}},
        "free delivery trial": {"product": "Premium delivery", "days": 30, "cost_minor": 400,
                                "value_minor": 999, "converts_to_paid_price_minor": 999},
    }


def loyalty_config() -> dict[str, Any]:
    """The loyalty programme of the running campaign's points arm (2x points in the app).

    Its tier ladder also sets every demo customer's ``loyalty_tier`` from their points.
    """
    return {
        "tiers": [dict(tier) for tier in LOYALTY_TIERS],
        "points_per_currency_unit": 1,
        "target_channel_multiplier_bp": 20_000,
        "point_value_minor_per_1000": 1000,
    }
