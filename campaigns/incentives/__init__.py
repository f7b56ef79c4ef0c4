"""Incentive types: what an incentive offers, how it is configured, what it costs.

Use :func:`get_incentive_type` / :data:`INCENTIVE_TYPES` to reach a type by key and
:func:`validate_incentive` to check and normalize a stored configuration. Money is integer
minor units throughout; percentages are integer basis points.
"""

from campaigns.incentives.base import Benefit, IncentiveType, Offer, OrderContext
from campaigns.incentives.codes import (
    DEFAULT_CHARSET,
    LOOKALIKES,
    entropy_bits,
    generate_code,
    generate_codes,
    mask_code,
    normalize_code,
)
from campaigns.incentives.lottery import total_inventory
from campaigns.incentives.loyalty import tier_for_points
from campaigns.incentives.registry import (
    INCENTIVE_TYPES,
    get_incentive_type,
    validate_incentive,
)

__all__ = [
    "DEFAULT_CHARSET",
    "INCENTIVE_TYPES",
    "LOOKALIKES",
    "Benefit",
    "IncentiveType",
    "Offer",
    "OrderContext",
    "entropy_bits",
    "generate_code",
    "generate_codes",
    "get_incentive_type",
    "mask_code",
    "normalize_code",
    "tier_for_points",
    "total_inventory",
    "validate_incentive",
]
