"""Loyalty points: points per currency unit spent, multiplied on the campaign's target channel.

Points are earned at ``points_per_currency_unit`` per 100 minor units; on the target channel
the rate is multiplied by ``target_channel_multiplier_bp / 10000`` (1x..10x). Points cost the
business ``point_value_minor_per_1000`` per 1000 points. Tiers are a ladder of point
thresholds starting at 0.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from campaigns.errors import FieldError, ValidationFailed
from campaigns.incentives.base import (
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    format_multiplier,
    order_amount,
)
from campaigns.incentives.fields import (
    BP_SCALE,
    CONFIG_MODEL_CONFIG,
    BasisPoints,
    Count,
    Loc,
    NonNegativeMoney,
    Slug,
    problems_error,
)
from campaigns.money import format_money
from campaigns.wording import plural

MIN_MULTIPLIER_BP = BP_SCALE  # 1x
MAX_MULTIPLIER_BP = 10 * BP_SCALE  # 10x


class Tier(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    key: Slug
    name: str = Field(min_length=1, max_length=100)
    threshold_points: Count = Field(ge=0)
    benefits: str = Field(min_length=1, max_length=1000)


class LoyaltyConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    tiers: list[Tier] = Field(min_length=1, max_length=10)
    #: Points earned per 100 minor units (one currency unit) spent.
    points_per_currency_unit: Count = Field(ge=0)
    #: Earning multiplier on the target channel, in basis points (10000 = 1x).
    target_channel_multiplier_bp: BasisPoints = MIN_MULTIPLIER_BP
    #: What 1000 points cost the business when redeemed.
    point_value_minor_per_1000: NonNegativeMoney

    @field_validator("target_channel_multiplier_bp")
    @classmethod
    def _multiplier_range(cls, value: int, info: ValidationInfo) -> int:
        if not MIN_MULTIPLIER_BP <= value <= MAX_MULTIPLIER_BP:
            raise PydanticCustomError(
                "multiplier_range",
                "the target-channel multiplier must be between 1x and 10x: "
                "target_channel_multiplier_bp takes 10000..100000 (20000 = 2x); got {value}",
                {"value": value},
            )
        return value

    @field_validator("tiers")
    @classmethod
    def _ladder(cls, tiers: list[Tier]) -> list[Tier]:
        problems: list[tuple[Loc, str]] = []
        if tiers[0].threshold_points != 0:
            problems.append(
                (
                    (0, "threshold_points"),
                    f"the first tier must start at 0 points; it starts at "
                    f"{tiers[0].threshold_points}",
                )
            )
        seen: dict[str, int] = {}
        for index, tier in enumerate(tiers):
            if tier.key in seen:
                problems.append(
                    (
                        (index, "key"),
                        f"tier key '{tier.key}' is already used by tier {seen[tier.key]}",
                    )
                )
            else:
                seen[tier.key] = index
            if index and tier.threshold_points <= tiers[index - 1].threshold_points:
                problems.append(
                    (
                        (index, "threshold_points"),
                        f"tier {index} ('{tier.name}') needs more points than tier {index - 1} "
                        f"('{tiers[index - 1].name}', {tiers[index - 1].threshold_points}); "
                        f"thresholds must strictly increase, got {tier.threshold_points}",
                    )
                )
        if problems:
            raise problems_error(problems)
        return tiers


def tier_for_points(config: LoyaltyConfig, points: int) -> str:
    """Key of the highest tier whose threshold ``points`` reaches."""
    if points < 0:
        raise ValueError(f"points cannot be negative: {points}")
    key = config.tiers[0].key
    for tier in config.tiers:
        if tier.threshold_points > points:
            break
        key = tier.key
    return key


def points_cost(config: LoyaltyConfig, points: int) -> int:
    """Cost of ``points`` to the business, rounded down."""
    return points * config.point_value_minor_per_1000 // 1000


def _points_base(ctx: OrderContext) -> int:
    base = ctx.points_base
    if isinstance(base, bool) or not isinstance(base, int) or base < 0:
        raise ValidationFailed(
            "points_base must be a whole number of points, 0 or more",
            [FieldError(("points_base",), f"points_base must be 0 or more; got {base!r}")],
        )
    return base


class Loyalty(IncentiveType[LoyaltyConfig]):
    key = "loyalty"
    label = "loyalty programme"
    config_model = LoyaltyConfig

    def points_for(self, config: LoyaltyConfig, ctx: OrderContext) -> tuple[int, bool]:
        """(points earned, whether the target-channel multiplier applied), rounded down.

        ``ctx.points_base`` (points before any multiplier) takes precedence over the order
        amount. The multiplier is applied in the same step as the rate, so 1 point per 1.00 at
        2x earns 3 points on 1.50.
        """
        applied = (
            ctx.channel_key is not None
            and ctx.channel_key == ctx.target_channel_key
            and config.target_channel_multiplier_bp > BP_SCALE
        )
        multiplier = config.target_channel_multiplier_bp if applied else BP_SCALE
        if ctx.points_base is not None:
            return _points_base(ctx) * multiplier // BP_SCALE, applied
        amount = order_amount(ctx)
        return amount * config.points_per_currency_unit * multiplier // (100 * BP_SCALE), applied

    def describe(self, config: LoyaltyConfig, *, currency: str) -> Offer:
        # points_per_currency_unit is per 100 minor units
        rate = (f"{plural(config.points_per_currency_unit, 'point')} per "
                f"{format_money(100, currency)} spent")
        description = f"Earn {rate}"
        if config.target_channel_multiplier_bp > BP_SCALE:
            multiplier = format_multiplier(config.target_channel_multiplier_bp)
            description += f", {multiplier} when you use the recommended channel"
        tiers = "; ".join(
            f"{t.name} from {plural(t.threshold_points, 'point')}: {t.benefits}"
            for t in config.tiers
        )
        return Offer(
            type=self.key,
            title="Earn loyalty points",
            description=description + ".",
            terms=f"Tiers: {tiers}.",
            benefit_summary={
                "kind": "points",
                "points_per_currency_unit": config.points_per_currency_unit,
                "target_channel_multiplier_bp": config.target_channel_multiplier_bp,
                "tiers": [
                    {"key": t.key, "name": t.name, "threshold_points": t.threshold_points}
                    for t in config.tiers
                ],
            },
            needs_code=False,
        )

    def compute_benefit(self, config: LoyaltyConfig, ctx: OrderContext) -> Benefit:
        points, applied = self.points_for(config, ctx)
        cost = points_cost(config, points)
        return Benefit(
            benefit_minor=cost,
            cost_minor=cost,
            details={"points": points, "multiplier_applied": applied},
        )

    def unit_cost_estimate(
        self, config: LoyaltyConfig, *, typical_order_minor: int | None = None
    ) -> int:
        """Cost of the points a typical order earns on the target channel (0 without one)."""
        if typical_order_minor is None:
            return 0
        points = (
            typical_order_minor
            * config.points_per_currency_unit
            * config.target_channel_multiplier_bp
            // (100 * BP_SCALE)
        )
        return points_cost(config, points)


INCENTIVE_TYPE = Loyalty()
