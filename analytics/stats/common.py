"""What every statistic of the package shares: alpha checks, p-value flooring, reasons."""

from __future__ import annotations

import math

SMALLEST_P_VALUE = math.ulp(0.0)
"""Reported instead of a p-value that underflows to 0.0 (with ``p_value_floored``)."""


def check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1 (got {alpha})")


def floor_p(p: float) -> tuple[float, bool]:
    """Cap a p-value at 1 and replace an underflowed 0.0 by the smallest positive float."""
    p = min(float(p), 1.0)
    if p > 0.0:
        return p, False
    return SMALLEST_P_VALUE, True


def join_reasons(*reasons: str | None) -> str | None:
    present = [reason for reason in reasons if reason]
    return "; ".join(present) if present else None


def small_arm_reason(control_n: int, treatment_n: int, minimum: int) -> str | None:
    small = [
        f"{arm} has n={n}"
        for arm, n in (("control", control_n), ("treatment", treatment_n))
        if n < minimum
    ]
    if not small:
        return None
    return f"too few units (need at least {minimum} per arm): " + ", ".join(small)
