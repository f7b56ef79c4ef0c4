"""Coupon: a discount redeemed with a code, either one shared code or a batch of unique codes.

Shared mode: one code chosen by the marketer (``SAVE10``), optionally limited in total uses
(``max_redemptions``) and, with ``single_use``, to one use per customer.
Batch mode: unique single-use codes generated as ``prefix`` + ``length`` random characters
from ``charset`` (see :mod:`campaigns.incentives.codes`), with at least 40 bits of randomness.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from campaigns.incentives.base import (
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    SharedCode,
    capped,
    format_percent,
    minimum_order_terms,
    order_amount,
    percent_of,
)
from campaigns.incentives.codes import (
    DEFAULT_CHARSET,
    MIN_ENTROPY_BITS,
    charset_problems,
    entropy_bits,
    has_min_entropy,
    min_length_for,
)
from campaigns.incentives.fields import (
    CONFIG_MODEL_CONFIG,
    Count,
    Loc,
    NonNegativeMoney,
    PercentBasisPoints,
    PositiveMoney,
    problems_error,
)
from campaigns.money import format_money
from campaigns.wording import plural

DEFAULT_CODE_LENGTH = 10

_SHARED_CODE = re.compile(r"[A-Z0-9-]{4,32}")
_PREFIX = re.compile(r"[A-Z0-9-]{0,12}")


class CouponBenefit(BaseModel):
    """What the code gives: a percentage (``percent_bp``) or a fixed amount (``amount_minor``)."""

    model_config = CONFIG_MODEL_CONFIG

    kind: Literal["percent", "fixed"]
    percent_bp: PercentBasisPoints | None = None
    amount_minor: PositiveMoney | None = None
    cap_minor: PositiveMoney | None = None
    min_order_minor: NonNegativeMoney | None = None

    @model_validator(mode="after")
    def _matches_kind(self) -> CouponBenefit:
        problems: list[tuple[Loc, str]] = []
        if self.kind == "percent":
            if self.percent_bp is None:
                problems.append((("percent_bp",), "percent_bp is required for a percent coupon"))
            if self.amount_minor is not None:
                problems.append(
                    (("amount_minor",), "amount_minor is for fixed coupons; use percent_bp")
                )
        else:
            if self.amount_minor is None:
                problems.append((("amount_minor",), "amount_minor is required for a fixed coupon"))
            if self.percent_bp is not None:
                problems.append(
                    (("percent_bp",), "percent_bp is for percent coupons; use amount_minor")
                )
            if self.cap_minor is not None:
                problems.append(
                    (("cap_minor",), "cap_minor only applies to percent coupons; remove it")
                )
        if problems:
            raise problems_error(problems)
        return self

    def amount_for(self, order_minor: int) -> int:
        if self.kind == "percent":
            assert self.percent_bp is not None
            return capped(percent_of(order_minor, self.percent_bp), self.cap_minor)
        assert self.amount_minor is not None
        return min(self.amount_minor, order_minor)


class CouponConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    mode: Literal["shared", "batch"]
    # shared mode
    code: str | None = None
    max_redemptions: Count | None = Field(None, ge=1)
    # batch mode; filled with defaults when mode is "batch"
    prefix: str | None = None
    length: Count | None = Field(None, ge=6, le=32, description=(
        f"From {min_length_for(DEFAULT_CHARSET)} to 32 characters with the default character "
        f"set (a code needs {MIN_ENTROPY_BITS} bits of randomness; a custom set of fewer "
        "characters needs a longer code)."))
    charset: str | None = None
    # forced to True for batch codes (each code is used once); for a shared code, whether
    # each customer may use it once (False by default)
    single_use: bool | None = None
    benefit: CouponBenefit
    expires_days: Count | None = Field(None, ge=1, le=3650)

    @field_validator("code", "prefix", "charset", mode="before")
    @classmethod
    def _uppercase(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: str | None) -> str | None:
        if value is not None and not _SHARED_CODE.fullmatch(value):
            raise PydanticCustomError(
                "code_format",
                "code must be 4 to 32 characters of letters A-Z, digits and '-'; got {shown}",
                {"shown": repr(value)},
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_shape(cls, value: str | None) -> str | None:
        if value is not None and not _PREFIX.fullmatch(value):
            raise PydanticCustomError(
                "prefix_format",
                "prefix must be at most 12 characters of letters A-Z, digits and '-'; got {shown}",
                {"shown": repr(value)},
            )
        return value

    @field_validator("charset")
    @classmethod
    def _charset_rules(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = "".join(dict.fromkeys(value))  # drop repeats, keep order
        problems = charset_problems(value)
        if problems:
            raise problems_error([((), p) for p in problems])
        return value

    @model_validator(mode="after")
    def _mode_rules(self) -> CouponConfig:
        problems: list[tuple[Loc, str]] = []
        if self.mode == "shared":
            if self.code is None:
                problems.append((("code",), "code is required for a shared coupon"))
            for name in ("prefix", "length", "charset"):
                if getattr(self, name) is not None:
                    problems.append(((name,), f"{name} only applies to batch coupons; remove it"))
            if self.single_use is None:
                self.single_use = False
        else:
            if self.code is not None:
                problems.append(
                    (("code",), "batch coupons generate their codes; remove code or use shared")
                )
            if self.max_redemptions is not None:
                problems.append(
                    (
                        ("max_redemptions",),
                        "batch codes are single-use; limit redemptions by the batch size instead",
                    )
                )
            if self.single_use is False:
                problems.append(
                    (("single_use",), "batch codes are always single-use; remove single_use")
                )
            self.single_use = True
            if self.prefix is None:
                self.prefix = ""
            if self.length is None:
                self.length = DEFAULT_CODE_LENGTH
            if self.charset is None:
                self.charset = DEFAULT_CHARSET
            if not has_min_entropy(self.length, self.charset):
                bits = entropy_bits(self.length, self.charset)
                needed = min_length_for(self.charset)
                problems.append(
                    (
                        ("length",),
                        f"codes of {self.length} characters from a {len(self.charset)}-character "
                        f"charset give {bits:.1f} bits of randomness; at least "
                        f"{MIN_ENTROPY_BITS} bits are required, so use length {needed} or more",
                    )
                )
        if problems:
            raise problems_error(problems)
        return self


class Coupon(IncentiveType[CouponConfig]):
    key = "coupon"
    label = "coupon"
    config_model = CouponConfig

    def describe(self, config: CouponConfig, *, currency: str) -> Offer:
        benefit = config.benefit
        if benefit.kind == "percent":
            assert benefit.percent_bp is not None
            headline = f"{format_percent(benefit.percent_bp)} off"
        else:
            assert benefit.amount_minor is not None
            headline = f"{format_money(benefit.amount_minor, currency)} off"
        if config.mode == "shared":
            description = f"{headline} your order with code {config.code}."
        else:
            description = f"{headline} your order with your personal code."
        terms = minimum_order_terms(benefit.min_order_minor, currency=currency)
        if benefit.cap_minor is not None:
            terms.append(f"Discount capped at {format_money(benefit.cap_minor, currency)}.")
        if config.single_use:
            terms.append("The code can be used once" + (
                " per customer." if config.mode == "shared" else "."))
        if config.max_redemptions is not None:
            terms.append("Limited to the first "
                         f"{plural(config.max_redemptions, 'redemption')}.")
        if config.expires_days is not None:
            terms.append(f"Expires {plural(config.expires_days, 'day')} after it is issued.")
        return Offer(
            type=self.key,
            title=f"{headline} with a code",
            description=description,
            terms=" ".join(terms),
            benefit_summary={
                "kind": benefit.kind,
                "percent_bp": benefit.percent_bp,
                "amount_minor": benefit.amount_minor,
                "cap_minor": benefit.cap_minor,
                "min_order_minor": benefit.min_order_minor,
                "mode": config.mode,
                "expires_days": config.expires_days,
            },
            needs_code=True,
        )

    def compute_benefit(self, config: CouponConfig, ctx: OrderContext) -> Benefit:
        amount = order_amount(ctx, minimum_minor=config.benefit.min_order_minor)
        discount = config.benefit.amount_for(amount)
        return Benefit(benefit_minor=discount, cost_minor=discount, details={})

    def needs_code(self, config: CouponConfig) -> bool:
        return True

    def shared_code(self, config: CouponConfig) -> SharedCode | None:
        if config.mode != "shared":
            return None
        assert config.code is not None
        return SharedCode(code=config.code, max_redemptions=config.max_redemptions,
                          once_per_customer=bool(config.single_use))

    def unit_cost_estimate(
        self, config: CouponConfig, *, typical_order_minor: int | None = None
    ) -> int:
        benefit = config.benefit
        order = max(typical_order_minor or 0, benefit.min_order_minor or 0)
        if benefit.kind == "fixed" and typical_order_minor is None:
            assert benefit.amount_minor is not None
            return benefit.amount_minor
        return benefit.amount_for(order)


INCENTIVE_TYPE = Coupon()
