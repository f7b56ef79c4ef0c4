"""Sample ratio mismatch: were units assigned in the planned proportions?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analytics.stats.common import floor_p

SRM_THRESHOLD = 0.001
"""Sample ratio mismatch is flagged when the chi-square p-value is below this."""


@dataclass(frozen=True, kw_only=True)
class SrmResult:
    """Sample ratio mismatch check of assignment counts against the planned weights."""

    p_value: float | None
    chi2: float | None
    flagged: bool
    threshold: float = SRM_THRESHOLD
    p_value_floored: bool = False
    reason: str | None = None


def srm_check(observed_counts: Sequence[int], expected_weights: Sequence[float]) -> SrmResult:
    """Chi-square goodness-of-fit of assignment counts to the planned arm weights.

    Flagged when p < ``SRM_THRESHOLD`` (0.001). Units found in an arm whose
    planned weight is zero are flagged outright (no p-value).
    """
    from scipy import stats as sps
    if len(observed_counts) != len(expected_weights):
        raise ValueError("one expected weight per observed count is required")
    if any(c < 0 for c in observed_counts) or any(
        not (math.isfinite(w) and w >= 0) for w in expected_weights
    ):
        raise ValueError("counts and weights must be non-negative and finite")
    total = sum(observed_counts)
    if total == 0:
        return SrmResult(p_value=None, chi2=None, flagged=False, reason="no units assigned yet")
    if sum(expected_weights) <= 0:
        raise ValueError("expected weights must not all be zero")
    if any(c > 0 for c, w in zip(observed_counts, expected_weights, strict=True) if w == 0):
        return SrmResult(
            p_value=None,
            chi2=None,
            flagged=True,
            reason="units were assigned to an arm whose planned weight is zero",
        )
    kept = [(c, w) for c, w in zip(observed_counts, expected_weights, strict=True) if w > 0]
    if len(kept) < 2:
        return SrmResult(
            p_value=None, chi2=None, flagged=False, reason="a single arm: nothing to compare"
        )
    observed = np.array([c for c, _ in kept], dtype=float)
    weights = np.array([w for _, w in kept], dtype=float)
    expected = total * weights / weights.sum()
    chi2, raw_p = sps.chisquare(observed, f_exp=expected)
    p_value, floored = floor_p(float(raw_p))
    return SrmResult(
        p_value=p_value,
        chi2=float(chi2),
        flagged=p_value < SRM_THRESHOLD,
        p_value_floored=floored,
    )
