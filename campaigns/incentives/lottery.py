"""Lottery / prize draw: qualifying events earn entries; each entry may win one prize.

Odds are exact fractions (``{numerator, denominator}``) per entry; their sum over all prizes
must not exceed 1 because an entry wins at most one prize. All probability arithmetic uses
:class:`fractions.Fraction`, never floats.
"""

from __future__ import annotations

import math
from datetime import UTC
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from campaigns.incentives.base import (
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    order_amount,
    require_channel,
)
from campaigns.incentives.fields import (
    CONFIG_MODEL_CONFIG,
    Count,
    Loc,
    NonNegativeMoney,
    PositiveMoney,
    Slug,
    problems_error,
)
from campaigns.money import format_money
from campaigns.wording import plural

EntryEvent = Literal["interaction", "conversion", "redemption"]

MAX_DENOMINATOR = 10**12


class Odds(BaseModel):
    """Chance that one entry wins this prize: ``numerator`` in ``denominator``."""

    model_config = CONFIG_MODEL_CONFIG

    numerator: Count = Field(ge=1)
    denominator: Count = Field(ge=1, le=MAX_DENOMINATOR)

    @model_validator(mode="after")
    def _at_most_one(self) -> Odds:
        if self.numerator > self.denominator:
            raise problems_error(
                [
                    (
                        ("numerator",),
                        f"odds of {self.numerator} in {self.denominator} are more than certain; "
                        "numerator must not exceed denominator",
                    )
                ]
            )
        return self

    @property
    def probability(self) -> Fraction:
        return Fraction(self.numerator, self.denominator)


class Prize(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    key: Slug
    name: str = Field(min_length=1, max_length=100)
    value_minor: PositiveMoney
    inventory: Count = Field(ge=1)
    odds: Odds


class EntryRule(BaseModel):
    """Which events earn entries, and how many."""

    model_config = CONFIG_MODEL_CONFIG

    event: EntryEvent
    channel_key: Slug | None = None
    min_amount_minor: NonNegativeMoney | None = None
    entries_per_event: Count = Field(1, ge=1, le=100)
    max_entries_per_customer: Count | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _cap_allows_one_event(self) -> EntryRule:
        cap = self.max_entries_per_customer
        if cap is not None and cap < self.entries_per_event:
            raise problems_error(
                [
                    (
                        ("max_entries_per_customer",),
                        f"max_entries_per_customer ({cap}) is below entries_per_event "
                        f"({self.entries_per_event}): a single event would exceed the limit",
                    )
                ]
            )
        return self


def _percent_text(value: Fraction) -> str:
    percent = Decimal(value.numerator * 100) / Decimal(value.denominator)
    return f"{percent.quantize(Decimal('0.01')).normalize():f}%"


class LotteryConfig(BaseModel):
    model_config = CONFIG_MODEL_CONFIG

    prizes: list[Prize] = Field(min_length=1, max_length=50)
    entry_rule: EntryRule
    draw_at: AwareDatetime | None = None
    #: Whether redeeming the offer counts toward the campaign's per-customer limit when it
    #: earns no entry (the entry rule is an interaction or a conversion, so entries come
    #: from events). Off by default: such a redemption only signs the customer up.
    count_entryless_redemptions: bool = False

    @field_validator("prizes")
    @classmethod
    def _prizes_consistent(cls, prizes: list[Prize]) -> list[Prize]:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for index, prize in enumerate(prizes):
            if prize.key in seen:
                problems.append(
                    (
                        (index, "key"),
                        f"prize key '{prize.key}' is already used by prize {seen[prize.key]}",
                    )
                )
            else:
                seen[prize.key] = index
        total = sum((p.odds.probability for p in prizes), Fraction(0))
        if total > 1:
            problems.append(
                (
                    (),
                    f"the prizes' odds add up to {total} ({_percent_text(total)}) per entry; "
                    "they must total at most 1 (100%) because an entry wins at most one prize",
                )
            )
        if problems:
            raise problems_error(problems)
        return prizes


def total_inventory(config: LotteryConfig) -> int:
    """Number of prizes available across all prize kinds."""
    return sum(p.inventory for p in config.prizes)


def win_probability(config: LotteryConfig) -> Fraction:
    """Chance that one entry wins any prize."""
    return sum((p.odds.probability for p in config.prizes), Fraction(0))


def expected_value_per_entry(config: LotteryConfig) -> Fraction:
    """Exact expected prize value (minor units) of one entry."""
    return sum((p.odds.probability * p.value_minor for p in config.prizes), Fraction(0))


_EVENT_TEXT = {
    "interaction": "every time you use the service",
    "conversion": "every order",
    "redemption": "every redeemed offer",
}


def _where(rule: EntryRule) -> str:
    return f" on {rule.channel_key}" if rule.channel_key else ""


class Lottery(IncentiveType[LotteryConfig]):
    key = "lottery"
    label = "lottery"
    config_model = LotteryConfig

    def describe(self, config: LotteryConfig, *, currency: str) -> Offer:
        rule = config.entry_rule
        top = max(config.prizes, key=lambda p: p.value_minor)
        entries = plural(rule.entries_per_event, "entry", "entries")
        where = f" on {rule.channel_key}" if rule.channel_key else ""
        prizes = ", ".join(f"{p.name} (worth {format_money(p.value_minor, currency)})"
                           for p in config.prizes)
        terms: list[str] = []
        if rule.min_amount_minor:
            terms.append(f"Minimum spend {format_money(rule.min_amount_minor, currency)} per "
                         "entry event.")
        if rule.max_entries_per_customer is not None:
            terms.append(f"At most {plural(rule.max_entries_per_customer, 'entry', 'entries')} "
                         "per customer.")
        terms.append(f"{plural(total_inventory(config), 'prize')} in total.")
        terms.append(
            "Chance per entry: "
            + "; ".join(
                f"{p.name} {p.odds.numerator} in {p.odds.denominator}" for p in config.prizes
            )
            + "."
        )
        if config.draw_at is not None:
            when = config.draw_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            terms.append(f"Draw on {when}.")
        return Offer(
            type=self.key,
            title=f"Win {top.name}",
            description=f"Get {entries} for {_EVENT_TEXT[rule.event]}{where}. Prizes: {prizes}.",
            terms=" ".join(terms),
            benefit_summary={
                "kind": "lottery",
                "event": rule.event,
                "entries_per_event": rule.entries_per_event,
                "prize_count": total_inventory(config),
                "top_prize_value_minor": top.value_minor,
                "draw_at": None if config.draw_at is None else config.draw_at.isoformat(),
            },
            needs_code=False,
        )

    def compute_benefit(self, config: LotteryConfig, ctx: OrderContext) -> Benefit:
        rule = config.entry_rule
        require_channel(ctx, rule.channel_key)
        if rule.min_amount_minor is not None:
            order_amount(ctx, minimum_minor=rule.min_amount_minor)
        return Benefit(benefit_minor=0, cost_minor=0, details={})

    def redemption_response(self, config: LotteryConfig) -> dict[str, object]:
        rule = config.entry_rule
        if rule.event == "redemption":
            return {"lottery_entries": rule.entries_per_event}
        return {"lottery_entries": 0,
                "lottery_entries_note": "this redemption earns no lottery entry; entries are "
                                        f"earned by {rule.event}s{_where(rule)}",
                "counts_toward_limit": config.count_entryless_redemptions}

    def entry_cap(self, config: LotteryConfig) -> int | None:
        return config.entry_rule.max_entries_per_customer

    def unit_cost_estimate(
        self, config: LotteryConfig, *, typical_order_minor: int | None = None
    ) -> int:
        """Expected prize value of one entry, rounded down (exact via ``Fraction``)."""
        return math.floor(expected_value_per_entry(config))


INCENTIVE_TYPE = Lottery()
