"""Fixed discount: a fixed amount off the order, never more than the order itself."""

from __future__ import annotations

from pydantic import BaseModel

from campaigns.incentives.base import (
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    minimum_order_terms,
    order_amount,
)
from campaigns.incentives.fields import CONFIG_MODEL_CONFIG, NonNegativeMoney, PositiveMoney
from campaigns.money import format_money


class FixedDiscountConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    amount_minor: PositiveMoney
    min_order_minor: NonNegativeMoney | None = None


class FixedDiscount(IncentiveType[FixedDiscountConfig]):
    key = "fixed_discount"
    label = "fixed discount"
    config_model = FixedDiscountConfig

    def describe(self, config: FixedDiscountConfig, *, currency: str) -> Offer:
        amount = format_money(config.amount_minor, currency)
        terms = minimum_order_terms(config.min_order_minor, currency=currency)
        terms.append("The discount never exceeds the order total.")
        return Offer(
            type=self.key,
            title=f"{amount} off",
            description=f"{amount} off your order.",
            terms=" ".join(terms),
            benefit_summary={
                "kind": "fixed",
                "amount_minor": config.amount_minor,
                "min_order_minor": config.min_order_minor,
            },
            needs_code=False,
        )

    def compute_benefit(self, config: FixedDiscountConfig, ctx: OrderContext) -> Benefit:
        amount = order_amount(ctx, minimum_minor=config.min_order_minor)
        discount = min(config.amount_minor, amount)
        return Benefit(benefit_minor=discount, cost_minor=discount, details={})

    def unit_cost_estimate(
        self, config: FixedDiscountConfig, *, typical_order_minor: int | None = None
    ) -> int:
        if typical_order_minor is None:
            return config.amount_minor
        return min(config.amount_minor, max(typical_order_minor, config.min_order_minor or 0))


INCENTIVE_TYPE = FixedDiscount()
