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
