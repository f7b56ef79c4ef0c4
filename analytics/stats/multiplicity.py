"""Corrections for many tests read together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np


@overload
def holm(p_values: Sequence[float]) -> list[float]: ...
@overload
def holm(p_values: Sequence[float | None]) -> list[float | None]: ...
def holm(p_values: Sequence[float | None]) -> list[float | None] | list[float]:
    """Holm step-down adjusted p-values, in the input order.

    ``None`` entries (comparisons whose p-value is undefined) stay ``None`` and
    do not count towards the family size: an undefined test cannot reject.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    values = [float(p) for p in p_values if p is not None]
    if any(not 0.0 <= p <= 1.0 for p in values):  # also rejects NaN
        raise ValueError(f"p-values must lie in [0, 1] (got {list(p_values)})")
    adjusted: list[float | None] = [None] * len(p_values)
    if values:
        # Step-down: the i-th smallest p (0-based) is multiplied by m - i, then made
        # monotone with a running maximum and capped at 1. (statsmodels' multipletests
        # gives the same numbers, tests check it, but runs gc.collect() on every call,
        # which costs up to a second per report with segment breakdowns.)
        m = len(values)
        order = np.argsort(values, kind="stable")
        scaled = np.array(values)[order] * (m - np.arange(m))
        corrected = np.empty(m)
        corrected[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
        for index, p in zip(present, corrected, strict=True):
            adjusted[index] = float(p)
    return adjusted


#: The corrections a report may apply to its family of primary comparisons.
CORRECTIONS = ("holm", "bh")
#: How a report names each correction.
CORRECTION_NAMES = {"holm": "Holm step-down (family-wise error rate)",
                    "bh": "Benjamini-Hochberg (false discovery rate)"}


def check_correction(correction: str) -> str:
    """``correction`` if it is one of :data:`CORRECTIONS`; ValueError naming them if not."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction '{correction}'; use one of "
                         f"{', '.join(CORRECTIONS)}")
    return correction


@overload
def benjamini_hochberg(p_values: Sequence[float]) -> list[float]: ...
@overload
def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]: ...
def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None] | list[float]:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in input order.

    The i-th smallest of m p-values (1-based) is multiplied by m / i, then made monotone
    from the largest down with a running minimum and capped at 1. ``None`` entries stay
    ``None`` and do not count towards m, as in :func:`holm`.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    values = [float(p) for p in p_values if p is not None]
    if any(not 0.0 <= p <= 1.0 for p in values):  # also rejects NaN
        raise ValueError(f"p-values must lie in [0, 1] (got {list(p_values)})")
    adjusted: list[float | None] = [None] * len(p_values)
    if values:
        m = len(values)
        order = np.argsort(values, kind="stable")
        scaled = np.array(values)[order] * m / np.arange(1, m + 1)
        stepped = np.minimum.accumulate(scaled[::-1])[::-1]
        corrected = np.empty(m)
        corrected[order] = np.minimum(stepped, 1.0)
        for index, p in zip(present, corrected, strict=True):
            adjusted[index] = float(p)
    return adjusted
