"""The incentive-type contract: what a type validates, shows and costs.

An incentive type is a small object registered under a ``key``: it owns a pydantic config
model, turns raw configuration into that model (or into an :class:`InvalidIncentiveConfig`
whose field errors a marketer can act on), describes the offer for a storefront and computes
the benefit and cost of one redemption. All money is integer minor units; percentages are
integer basis points. No floats are used for money anywhere in this package.
"""

from __future__ import annotations

import difflib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from campaigns.errors import FieldError, InvalidIncentiveConfig, ValidationFailed
from campaigns.incentives.fields import BP_SCALE, Loc
from campaigns.money import DEFAULT_CURRENCY, format_money
from campaigns.wording import plural

ConfigT = TypeVar("ConfigT", bound=BaseModel)

CONFIG_LOC = "config"


@dataclass(frozen=True)
class Offer:
    """What a storefront shows for an incentive."""

    type: str
    title: str
    description: str
    terms: str
    benefit_summary: dict[str, object]
    needs_code: bool


@dataclass(frozen=True)
class Benefit:
    """One redemption: value to the customer and cost to the business, in minor units."""

    benefit_minor: int
    cost_minor: int
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SharedCode:
    """A code the marketer chose, one for every customer: its total cap (None: none) and
    whether each customer may redeem it only once."""

    code: str
    max_redemptions: int | None
    once_per_customer: bool


@dataclass(frozen=True)
class OrderContext:
    """What is known about the order or event an incentive is applied to."""

    order_amount_minor: int | None = None
    channel_key: str | None = None
    target_channel_key: str | None = None
    points_base: int | None = None
    #: the campaign's currency, for the amounts an error message quotes
    currency: str = DEFAULT_CURRENCY


# --------------------------------------------------------------------------- formatting


def format_percent(bp: int) -> str:
    """``1250`` -> ``"12.5%"``, ``1000`` -> ``"10%"``, ``1`` -> ``"0.01%"``."""
    text = f"{Decimal(bp) / 100:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def format_multiplier(bp: int) -> str:
    """``20000`` -> ``"2x"``, ``15000`` -> ``"1.5x"``."""
    return format_percent(bp * 100 // BP_SCALE)[:-1] + "x"


# --------------------------------------------------------------------------- arithmetic


def percent_of(amount_minor: int, bp: int) -> int:
    """``amount * bp / 10000`` rounded down, in integer arithmetic."""
    return amount_minor * bp // BP_SCALE


def capped(amount_minor: int, cap_minor: int | None) -> int:
    return amount_minor if cap_minor is None else min(amount_minor, cap_minor)


def _order_error(message: str, msg: str, type_: str) -> ValidationFailed:
    return ValidationFailed(message, [FieldError(("order_amount_minor",), msg, type_)])


def order_amount(ctx: OrderContext, *, minimum_minor: int | None = None) -> int:
    """The order amount from ``ctx``, checked to be present, whole and at least the minimum.

    Raises :class:`ValidationFailed` located at ``order_amount_minor`` when it is not.
    """
    amount = ctx.order_amount_minor
    if amount is None:
        raise _order_error(
            "an order amount is needed to compute this benefit",
            "order amount is required",
            "missing",
        )
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise _order_error(
            "the order amount must be whole minor units",
            f"order amount must be a whole number of minor units (cents); got {amount!r}",
            "money_not_integer",
        )
    if amount < 0:
        raise _order_error(
            "the order amount cannot be negative",
            f"order amount cannot be negative; got {amount}",
            "money_range",
        )
    if minimum_minor is not None and amount < minimum_minor:
        raise _order_error(
            "the order does not qualify: the minimum order is "
            f"{format_money(minimum_minor, ctx.currency)}",
            f"order total {format_money(amount, ctx.currency)} is below the minimum order of "
            f"{format_money(minimum_minor, ctx.currency)}",
            "below_minimum_order",
        )
    return amount


def require_channel(ctx: OrderContext, channel_key: str | None) -> None:
    """Raise :class:`ValidationFailed` at ``channel_key`` unless the order is on that channel."""
    if channel_key is None or ctx.channel_key == channel_key:
        return
    got = "no channel" if ctx.channel_key is None else f"channel '{ctx.channel_key}'"
    raise ValidationFailed(
        f"the order does not qualify: it must be placed on channel '{channel_key}'",
        [
            FieldError(
                ("channel_key",),
                f"only orders on channel '{channel_key}' qualify; this order has {got}",
                "wrong_channel",
            )
        ],
    )


def minimum_order_terms(min_order_minor: int | None, *, currency: str) -> list[str]:
    if not min_order_minor:
        return []
    return [f"Minimum order {format_money(min_order_minor, currency)}."]


# --------------------------------------------------------------------------- error messages


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``None`` from an annotation (``X | None`` -> ``X``)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Union or origin is types.UnionType:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _walk(model: type[BaseModel], loc: Loc) -> tuple[Any, Any]:
    """(annotation, FieldInfo or None) of the value at ``loc`` inside ``model``."""
    annotation: Any = model
    info: Any = None
    for part in loc:
        current = _unwrap(annotation)
        if isinstance(part, int):
            if typing.get_origin(current) not in (list, tuple):
                return None, None
            annotation, info = typing.get_args(current)[0], None
        elif _is_model(current):
            info = current.model_fields.get(part)
            if info is None:
                return None, None
            annotation = info.annotation
        else:
            return None, None
    return annotation, info


def _allowed_settings(model: type[BaseModel], loc: Loc) -> list[str]:
    annotation, _ = _walk(model, loc)
    annotation = _unwrap(annotation)
    return sorted(annotation.model_fields) if _is_model(annotation) else []


def _bounds(model: type[BaseModel], loc: Loc) -> tuple[int | None, int | None]:
    """(lowest, highest) allowed integer value at ``loc`` from ``Field(ge/gt/le/lt)``."""
    _, info = _walk(model, loc)
    low: int | None = None
    high: int | None = None
    for meta in getattr(info, "metadata", ()):
        # annotated_types.Ge / Gt / Le / Lt, as Field(ge=..., ...) stores them
        if isinstance(getattr(meta, "ge", None), int):
            low = meta.ge
        elif isinstance(getattr(meta, "gt", None), int):
            low = meta.gt + 1
        elif isinstance(getattr(meta, "le", None), int):
            high = meta.le
        elif isinstance(getattr(meta, "lt", None), int):
            high = meta.lt - 1
    return low, high


def _path(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) if loc else "the configuration"


def _unit(name: str) -> str:
    if name.endswith("_bp"):
        return " basis points (10000 = 100%)"
    if name.endswith("_minor"):
        return " minor units (cents)"
    if name.endswith("days"):
        return " days"
    return ""


def _range_message(model: type[BaseModel], loc: Loc, err: ErrorDetails) -> str:
    name = _path(loc)
    leaf = next((str(p) for p in reversed(loc) if isinstance(p, str)), name)
    low, high = _bounds(model, loc)
    unit = _unit(leaf)
    got = f"; got {err.get('input')!r}"
    if low is not None and high is not None:
        return f"{name} must be between {low:,} and {high:,}{unit}{got}"
    if low is not None:
        return f"{name} must be at least {low:,}{unit}{got}"
    if high is not None:
        return f"{name} must be at most {high:,}{unit}{got}"
    return f"{name} is out of range{got}"


def _message(model: type[BaseModel], label: str, loc: Loc, err: ErrorDetails) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    name = _path(loc)
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        leaf = str(loc[-1]) if loc else name
        where = f"'{_path(loc[:-1])}'" if loc[:-1] else f"a {label} incentive"
        allowed = _allowed_settings(model, loc[:-1])
        message = f"'{leaf}' is not a setting of {where}"
        close = difflib.get_close_matches(leaf, allowed, n=1)
        if close:
            message += f"; did you mean '{close[0]}'?"
        if allowed:
            message += f" (allowed: {', '.join(allowed)})"
        return message
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        allowed = _allowed_settings(model, loc)
        listing = f" with the settings {', '.join(allowed)}" if allowed else ""
        return f"{name} must be an object{listing}"
    if kind == "list_type":
        return f"{name} must be a list"
    if kind == "too_short":
        return f"{name} needs at least {plural(int(ctx.get('min_length', 0)), 'item')}"
    if kind == "too_long":
        return f"{name} can have at most {plural(int(ctx.get('max_length', 0)), 'item')}"
    if kind == "string_type":
        return f"{name} must be text"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return f"{name} cannot be empty"
        return f"{name} must be at least {ctx.get('min_length')} characters long"
    if kind == "string_too_long":
        return f"{name} must be at most {ctx.get('max_length')} characters long"
    if kind == "literal_error":
        return f"{name} must be {ctx.get('expected')}; got {err.get('input')!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{name} must be true or false"
    if kind.startswith("int_"):
        return f"{name} must be a whole number"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _range_message(model, loc, err)
    if kind.startswith(("datetime_", "timezone_")):
        return f"{name} must be a date and time with a timezone, e.g. 2025-06-30T18:00:00+00:00"
    return err["msg"]


def field_errors(model: type[BaseModel], label: str, exc: ValidationError) -> list[FieldError]:
    """Turn a pydantic ``ValidationError`` into located, readable ``FieldError`` s."""
    result: list[FieldError] = []
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "inconsistent" and "problems" in ctx:
            for sub_loc, msg in ctx["problems"]:
                result.append(FieldError((CONFIG_LOC, *loc, *sub_loc), msg, "inconsistent"))
            continue
        result.append(FieldError((CONFIG_LOC, *loc), _message(model, label, loc, err), err["type"]))
    return result


# --------------------------------------------------------------------------- the contract


class IncentiveType(ABC, Generic[ConfigT]):
    """One kind of incentive. Subclasses set ``key``, ``label`` and ``config_model``."""

    key: ClassVar[str]
    label: ClassVar[str]
    config_model: type[ConfigT]

    def validate(self, raw: Mapping[str, Any] | ConfigT) -> ConfigT:
        """Check ``raw`` and return the typed config.

        Raises :class:`InvalidIncentiveConfig` with one ``FieldError`` per problem, each
        located under ``("config", ...)``.
        """
        if isinstance(raw, self.config_model):
            return raw
        if not isinstance(raw, Mapping):
            raise InvalidIncentiveConfig(
                f"invalid {self.label} configuration",
                [
                    FieldError(
                        (CONFIG_LOC,),
                        "the configuration must be an object of named settings",
                        "dict_type",
                    )
                ],
            )
        try:
            return self.config_model.model_validate(dict(raw))
        except ValidationError as exc:
            raise InvalidIncentiveConfig(
                f"invalid {self.label} configuration",
                field_errors(self.config_model, self.label, exc),
            ) from None

    def dump(self, config: ConfigT) -> dict[str, Any]:
        """The normalized, JSON-able form of ``config`` (validates back to the same config)."""
        return config.model_dump(mode="json")

    @abstractmethod
    def describe(self, config: ConfigT, *, currency: str) -> Offer:
        """The offer as a storefront shows it, its amounts in the campaign's ``currency``."""

    @abstractmethod
    def compute_benefit(self, config: ConfigT, ctx: OrderContext) -> Benefit:
        """Benefit and cost of one redemption; :class:`ValidationFailed` if it does not qualify."""

    def needs_code(self, config: ConfigT) -> bool:
        """Whether redeeming needs a code typed in by the customer."""
        return False

    def shared_code(self, config: ConfigT) -> SharedCode | None:
        """The one code every customer types, when the type has one (a row is kept for it)."""
        return None

    def redemption_response(self, config: ConfigT) -> dict[str, Any]:
        """What a redemption adds to its response, known before anything is written.

        ``lottery_entries`` is the number of entries it asks for (the redemption grants
        them up to :meth:`entry_cap`); ``counts_toward_limit`` false leaves the
        campaign's per-customer limit untouched.
        """
        return {}

    def entry_cap(self, config: ConfigT) -> int | None:
        """Most lottery entries a customer may hold in a campaign (None: no cap)."""
        return None

    @abstractmethod
    def unit_cost_estimate(self, config: ConfigT, *, typical_order_minor: int | None = None) -> int:
        """Expected cost of one redemption, for planning and budget display.

        Types whose cost scales with the order use ``typical_order_minor`` when given, else
        the minimum order (or 0 when there is none), so the figure is never inflated by a guess.
        """

    def __repr__(self) -> str:
        return f"<incentive type {self.key!r}>"
