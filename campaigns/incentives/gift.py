"""Gift: a physical or digital item given with a qualifying order, from limited inventory."""

from __future__ import annotations

from pydantic import BaseModel, Field

from campaigns.incentives.base import (
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    minimum_order_terms,
    order_amount,
)
from campaigns.incentives.fields import CONFIG_MODEL_CONFIG, Count, NonNegativeMoney
from campaigns.money import format_money


class GiftConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    item: str = Field(min_length=1, max_length=100)
    sku: str | None = Field(None, min_length=1, max_length=64)
    #: What one item costs the business.
    unit_cost_minor: NonNegativeMoney
    #: Retail value shown to the customer; defaults to the unit cost.
    value_minor: NonNegativeMoney | None = None
    inventory: Count = Field(ge=1)
    min_order_minor: NonNegativeMoney | None = None


class Gift(IncentiveType[GiftConfig]):
    key = "gift"
    label = "gift"
    config_model = GiftConfig

    def retail_value(self, config: GiftConfig) -> int:
        return config.unit_cost_minor if config.value_minor is None else config.value_minor

    def describe(self, config: GiftConfig, *, currency: str) -> Offer:
        value = self.retail_value(config)
        description = f"Get {config.item} free with your order"
        if value:
            description += f" (worth {format_money(value, currency)})"
        terms = minimum_order_terms(config.min_order_minor, currency=currency)
        terms.append(f"While stocks last ({config.inventory} available).")
        return Offer(
            type=self.key,
            title=f"Free {config.item}",
            description=description + ".",
            terms=" ".join(terms),
            benefit_summary={
                "kind": "gift",
                "item": config.item,
                "sku": config.sku,
                "value_minor": value,
                "min_order_minor": config.min_order_minor,
            },
            needs_code=False,
        )

    def compute_benefit(self, config: GiftConfig, ctx: OrderContext) -> Benefit:
        if config.min_order_minor is not None:
            order_amount(ctx, minimum_minor=config.min_order_minor)
        return Benefit(
            benefit_minor=self.retail_value(config),
            cost_minor=config.unit_cost_minor,
            details={"item": config.item, "sku": config.sku},
        )

    def unit_cost_estimate(
        self, config: GiftConfig, *, typical_order_minor: int | None = None
    ) -> int:
        return config.unit_cost_minor


INCENTIVE_TYPE = Gift()
