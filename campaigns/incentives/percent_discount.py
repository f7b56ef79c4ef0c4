"""Percent discount: a percentage off the order, optionally capped and above a minimum order."""

from __future__ import annotations

from pydantic import BaseModel

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
)
from campaigns.incentives.fields import (
    CONFIG_MODEL_CONFIG,
    NonNegativeMoney,
    PercentBasisPoints,
    PositiveMoney,
)
from campaigns.money import format_money


class PercentDiscountConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    percent_bp: PercentBasisPoints
    cap_minor: PositiveMoney | None = None
    min_order_minor: NonNegativeMoney | None = None


class PercentDiscount(IncentiveType[PercentDiscountConfig]):
    key = "percent_discount"
    label = "percent discount"
    config_model = PercentDiscountConfig

    def describe(self, config: PercentDiscountConfig, *, currency: str) -> Offer:
        percent = format_percent(config.percent_bp)
        description = f"{percent} off your order"
        if config.cap_minor is not None:
            description += f", up to {format_money(config.cap_minor, currency)}"
        terms = minimum_order_terms(config.min_order_minor, currency=currency)
        if config.cap_minor is not None:
            terms.append(f"Discount capped at {format_money(config.cap_minor, currency)}.")
        return Offer(
            type=self.key,
            title=f"{percent} off",
            description=description + ".",
            terms=" ".join(terms),
            benefit_summary={
                "kind": "percent",
                "percent_bp": config.percent_bp,
                "cap_minor": config.cap_minor,
                "min_order_minor": config.min_order_minor,
            },
            needs_code=False,
        )

    def compute_benefit(self, config: PercentDiscountConfig, ctx: OrderContext) -> Benefit:
        amount = order_amount(ctx, minimum_minor=config.min_order_minor)
        uncapped = percent_of(amount, config.percent_bp)
        discount = capped(uncapped, config.cap_minor)
        return Benefit(
            benefit_minor=discount,
            cost_minor=discount,
            details={"percent_bp": config.percent_bp, "capped": discount < uncapped},
        )

    def unit_cost_estimate(
        self, config: PercentDiscountConfig, *, typical_order_minor: int | None = None
    ) -> int:
        order = max(typical_order_minor or 0, config.min_order_minor or 0)
        return capped(percent_of(order, config.percent_bp), config.cap_minor)


INCENTIVE_TYPE = PercentDiscount()
