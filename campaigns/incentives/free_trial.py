"""Free trial: a product free for a number of days, at a known cost to the business."""

from __future__ import annotations

from pydantic import BaseModel, Field

from campaigns.incentives.base import Benefit, IncentiveType, Offer, OrderContext
from campaigns.incentives.fields import (
    CONFIG_MODEL_CONFIG,
    Count,
    NonNegativeMoney,
    PositiveMoney,
)
from campaigns.money import format_money
from campaigns.wording import plural


class FreeTrialConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    product: str = Field(min_length=1, max_length=100)
    days: Count = Field(ge=1, le=365)
    #: What the trial costs the business per customer.
    cost_minor: NonNegativeMoney
    #: List price of the trial period, shown to the customer as its value.
    value_minor: NonNegativeMoney | None = None
    #: Price the trial converts to when it ends, if it converts.
    converts_to_paid_price_minor: PositiveMoney | None = None


class FreeTrial(IncentiveType[FreeTrialConfig]):
    key = "free_trial"
    label = "free trial"
    config_model = FreeTrialConfig

    def describe(self, config: FreeTrialConfig, *, currency: str) -> Offer:
        days = plural(config.days, "day")
        description = f"Try {config.product} free for {days}"
        if config.value_minor:
            description += f" (worth {format_money(config.value_minor, currency)})"
        terms = []
        if config.converts_to_paid_price_minor is not None:
            price = format_money(config.converts_to_paid_price_minor, currency)
            terms.append(f"After the trial it continues at {price} unless cancelled.")
        else:
            terms.append("No payment needed; the trial ends by itself.")
        return Offer(
            type=self.key,
            title=f"{days} of {config.product} free",
            description=description + ".",
            terms=" ".join(terms),
            benefit_summary={
                "kind": "trial",
                "product": config.product,
                "trial_days": config.days,
                "value_minor": config.value_minor,
                "converts_to_paid_price_minor": config.converts_to_paid_price_minor,
            },
            needs_code=False,
        )

    def compute_benefit(self, config: FreeTrialConfig, ctx: OrderContext) -> Benefit:
        return Benefit(
            benefit_minor=config.value_minor or 0,
            cost_minor=config.cost_minor,
            details={"product": config.product, "trial_days": config.days},
        )

    def unit_cost_estimate(
        self, config: FreeTrialConfig, *, typical_order_minor: int | None = None
    ) -> int:
        return config.cost_minor


INCENTIVE_TYPE = FreeTrial()
