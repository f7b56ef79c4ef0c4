"""Rebate / cashback: a percentage of the order paid back later, optionally channel-bound."""

from __future__ import annotations

from pydantic import BaseModel, Field

from campaigns.incentives.base import (
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    capped,
    format_percent,
    minimum_order_terms,
    order_amount,
    percent_of,
    require_channel,
)
from campaigns.incentives.fields import (
    CONFIG_MODEL_CONFIG,
    Count,
    NonNegativeMoney,
    PercentBasisPoints,
    PositiveMoney,
    Slug,
)
from campaigns.money import format_money
from campaigns.wording import plural


class RebateCondition(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    min_order_minor: NonNegativeMoney | None = None
    #: The order must be placed on this channel to earn the rebate.
    channel_key: Slug | None = None
    payout_delay_days: Count = Field(0, ge=0, le=365)


class RebateConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    percent_bp: PercentBasisPoints
    cap_minor: PositiveMoney | None = None
    condition: RebateCondition = Field(default_factory=RebateCondition)


class Rebate(IncentiveType[RebateConfig]):
    key = "rebate"
    label = "rebate"
    config_model = RebateConfig

    def describe(self, config: RebateConfig, *, currency: str) -> Offer:
        percent = format_percent(config.percent_bp)
        condition = config.condition
        description = f"Get {percent} of your order back"
        if config.cap_minor is not None:
            description += f", up to {format_money(config.cap_minor, currency)}"
        if condition.channel_key is not None:
            description += f", when you order on {condition.channel_key}"
        terms = minimum_order_terms(condition.min_order_minor, currency=currency)
        if condition.payout_delay_days:
            terms.append(f"Paid out {plural(condition.payout_delay_days, 'day')} after the "
                         "order.")
        else:
            terms.append("Paid out straight after the order.")
        return Offer(
            type=self.key,
            title=f"{percent} cashback",
            description=description + ".",
            terms=" ".join(terms),
            benefit_summary={
                "kind": "rebate",
                "percent_bp": config.percent_bp,
                "cap_minor": config.cap_minor,
                "min_order_minor": condition.min_order_minor,
                "channel_key": condition.channel_key,
                "payout_delay_days": condition.payout_delay_days,
            },
            needs_code=False,
        )

    def compute_benefit(self, config: RebateConfig, ctx: OrderContext) -> Benefit:
        require_channel(ctx, config.condition.channel_key)
        amount = order_amount(ctx, minimum_minor=config.condition.min_order_minor)
        uncapped = percent_of(amount, config.percent_bp)
        rebate = capped(uncapped, config.cap_minor)
        return Benefit(
            benefit_minor=rebate,
            cost_minor=rebate,
            details={
                "payout_delay_days": config.condition.payout_delay_days,
                "capped": rebate < uncapped,
            },
        )

    def unit_cost_estimate(
        self, config: RebateConfig, *, typical_order_minor: int | None = None
    ) -> int:
        order = max(typical_order_minor or 0, config.condition.min_order_minor or 0)
        return capped(percent_of(order, config.percent_bp), config.cap_minor)


INCENTIVE_TYPE = Rebate()
