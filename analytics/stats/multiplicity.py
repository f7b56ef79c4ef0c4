"""Corrections for many tests read together."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import overload

import numpy as np

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


def _adjusted(p_values: Sequence[float | None],
              correct: Callable[[np.ndarray], np.ndarray]) -> list[float | None]:
    """Apply ``correct`` (ascending p-values -> adjusted, same order) to the defined
    p-values and return them in the input order.

    ``None`` entries (comparisons whose p-value is undefined) stay ``None`` and do not
    count towards the family size: an undefined test cannot reject. (statsmodels'
    multipletests gives the same numbers, tests check it, but runs gc.collect() on every
    call, which costs up to a second per report with segment breakdowns.)
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    values = [float(p) for p in p_values if p is not None]
    if any(not 0.0 <= p <= 1.0 for p in values):  # also rejects NaN
        raise ValueError(f"p-values must lie in [0, 1] (got {list(p_values)})")
    adjusted: list[float | None] = [None] * len(p_values)
    if values:
        order = np.argsort(values, kind="stable")
        corrected = np.empty(len(values))
        corrected[order] = np.minimum(correct(np.array(values)[order]), 1.0)
        for index, p in zip(present, corrected, strict=True):
            adjusted[index] = float(p)
    return adjusted


def _holm_step_down(ascending: np.ndarray) -> np.ndarray:
    # the i-th smallest p (0-based) times m - i, made monotone with a running maximum
    m = len(ascending)
    return np.maximum.accumulate(ascending * (m - np.arange(m)))


def _bh_step_up(ascending: np.ndarray) -> np.ndarray:
    # the i-th smallest p (1-based) times m / i, made monotone from the largest down
    m = len(ascending)
    return np.minimum.accumulate((ascending * m / np.arange(1, m + 1))[::-1])[::-1]


@overload
def holm(p_values: Sequence[float]) -> list[float]: ...
@overload
def holm(p_values: Sequence[float | None]) -> list[float | None]: ...
def holm(p_values: Sequence[float | None]) -> list[float | None] | list[float]:
    """Holm step-down adjusted p-values (family-wise error rate), in the input order;
    ``None`` entries stay ``None`` and do not count towards the family size."""
    return _adjusted(p_values, _holm_step_down)


@overload
def benjamini_hochberg(p_values: Sequence[float]) -> list[float]: ...
@overload
def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]: ...
def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None] | list[float]:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in input order;
    ``None`` entries stay ``None`` and do not count towards m, as in :func:`holm`."""
    return _adjusted(p_values, _bh_step_up)
