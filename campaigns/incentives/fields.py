"""Shared field types and validation helpers for incentive configuration models.

Money is always an integer amount of minor units (cents); percentages are integer basis points
(``10000`` = 100%). Floats are refused for both with a message saying so, because a float
silently loses cents. Every message here is written for the marketer filling in the form.

Cross-field checks (odds that add up to more than 1, tier thresholds out of order) raise
:func:`problems_error`, which carries the exact location of each problem below the validated
model so that :meth:`IncentiveType.validate` can point at ``config.tiers.2.threshold_points``
rather than at the whole list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError

#: Upper bound for any money field: 10 billion in a two-decimal currency. Keeps amounts far
#: inside a 64-bit integer column even after multiplying by basis points.
MAX_MINOR = 10**12
#: Basis points in 100%.
BP_SCALE = 10_000

#: Model configuration every incentive config model uses.
CONFIG_MODEL_CONFIG = ConfigDict(extra="forbid", str_strip_whitespace=True)

Loc = tuple[str | int, ...]

_INT_TEXT = re.compile(r"-?\d+")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _field(info: ValidationInfo) -> str:
    return info.field_name or "value"


def _whole(value: Any) -> int | None:
    """``value`` as an int if it is an exact whole number that is not a float or bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def _as_money(value: Any, info: ValidationInfo) -> int:
    whole = _whole(value)
    if whole is not None:
        return whole
    field = _field(info)
    if isinstance(value, float | Decimal) or (
        isinstance(value, str) and re.fullmatch(r"\s*-?\d*[.,]\d*\s*", value)
    ):
        raise PydanticCustomError(
            "money_not_integer",
            "{field} must be a whole number of minor units (cents), e.g. 1999 for 19.99; "
            "got {shown}: decimal and float amounts are not accepted",
            {"field": field, "shown": repr(value)},
        )
    raise PydanticCustomError(
        "money_type",
        "{field} must be an amount in minor units (cents) as a whole number, e.g. 1999 for 19.99",
        {"field": field},
    )


def _as_basis_points(value: Any, info: ValidationInfo) -> int:
    whole = _whole(value)
    if whole is not None:
        return whole
    field = _field(info)
    if isinstance(value, float | Decimal | str):
        raise PydanticCustomError(
            "basis_points_not_integer",
            "{field} must be whole basis points (1250 = 12.5%, 10000 = 100%); got {shown}: "
            "float percentages are not accepted",
            {"field": field, "shown": repr(value)},
        )
    raise PydanticCustomError(
        "basis_points_type",
        "{field} must be a whole number of basis points (1250 = 12.5%)",
        {"field": field},
    )


def _as_count(value: Any, info: ValidationInfo) -> int:
    whole = _whole(value)
    if whole is not None:
        return whole
    raise PydanticCustomError(
        "whole_number",
        "{field} must be a whole number; got {shown}",
        {"field": _field(info), "shown": repr(value)},
    )


def _money_in_range(lowest: int, what: str) -> Any:
    def check(value: int, info: ValidationInfo) -> int:
        if value < lowest or value > MAX_MINOR:
            raise PydanticCustomError(
                "money_range",
                "{field} must be " + what + " and at most {max} minor units (cents); got {value}",
                {"field": _field(info), "max": f"{MAX_MINOR:,}", "value": value},
            )
        return value

    return check


def _percent_in_range(value: int, info: ValidationInfo) -> int:
    if not 1 <= value <= BP_SCALE:
        raise PydanticCustomError(
            "percent_range",
            "percent must be between 0.01% and 100%: {field} takes basis points 1..10000 "
            "(1250 = 12.5%); got {value}",
            {"field": _field(info), "value": value},
        )
    return value


def _slug(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str):
        return value  # the str schema reports the type error
    lowered = value.strip().lower()
    if not _SLUG.fullmatch(lowered):
        raise PydanticCustomError(
            "slug",
            "{field} must be a short key of lowercase letters, digits, '-' or '_' starting with a "
            "letter or digit, at most 64 characters (e.g. 'web' or 'grand-prize'); got {shown}",
            {"field": _field(info), "shown": repr(value)},
        )
    return lowered


#: Amount in minor units, 0 allowed.
NonNegativeMoney = Annotated[
    int, BeforeValidator(_as_money), AfterValidator(_money_in_range(0, "0 or more"))
]
#: Amount in minor units, strictly positive.
PositiveMoney = Annotated[
    int, BeforeValidator(_as_money), AfterValidator(_money_in_range(1, "greater than 0"))
]
#: A percentage in basis points, 1..10000 (0.01%..100%).
PercentBasisPoints = Annotated[
    int, BeforeValidator(_as_basis_points), AfterValidator(_percent_in_range)
]
#: Basis points with a range given by ``Field(ge=..., le=...)`` at the use site.
BasisPoints = Annotated[int, BeforeValidator(_as_basis_points)]
#: A whole number (days, inventory, entries); range given by ``Field`` at the use site.
Count = Annotated[int, BeforeValidator(_as_count)]
#: A lowercase key such as a channel key, prize key or tier key.
Slug = Annotated[str, BeforeValidator(_slug)]


def problems_error(problems: Sequence[tuple[Loc, str]]) -> PydanticCustomError:
    """An error for cross-field problems, each located relative to the validated model.

    ``IncentiveType.validate`` expands it into one ``FieldError`` per problem.
    """
    return PydanticCustomError(
        "inconsistent",
        "{summary}",
        {
            "summary": "; ".join(msg for _, msg in problems),
            "problems": [(tuple(loc), msg) for loc, msg in problems],
        },
    )
