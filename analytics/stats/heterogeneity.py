"""Does an effect differ between segments? Cochran's Q and I² across per-segment effects.

A breakdown shows one effect per segment value; some will differ by chance alone.
Cochran's Q tests the hypothesis that every segment shares one effect:

    w_i = 1 / v_i,   pooled = Σ w_i d_i / Σ w_i,   Q = Σ w_i (d_i - pooled)²,

with d_i the segment's effect and v_i the variance of its estimate; under the hypothesis
Q ~ chi-square with k - 1 degrees of freedom (k segments with a defined effect).
I² = max(0, (Q - (k - 1)) / Q) is the share of the spread between segments beyond what
chance explains (Higgins & Thompson 2002). Only when Q is significant does the data
support reading "works in one segment, not in another".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analytics.stats.common import floor_p
from analytics.stats.effects import Effect

HETEROGENEITY_METHOD = ("Cochran's Q test of equal effects across segment values "
                        "(inverse-variance weights, chi-square with k - 1 df) and I²")


@dataclass(frozen=True, kw_only=True)
class HeterogeneityResult:
    """Cochran's Q across the segments' effects of one metric and arm."""

    segments: int  # segment values with a defined effect and variance (k)
    excluded: int = 0  # segment values left out: effect or variance undefined
    q: float | None = None
    df: int | None = None
    p_value: float | None = None
    p_value_floored: bool = False
    i_squared: float | None = None
    pooled: float | None = None  # the fixed-effect (inverse-variance) pooled effect
    reason: str | None = None


def cochran_q(effects: Sequence[Effect | None]) -> HeterogeneityResult:
    """Cochran's Q, its p-value and I² across per-segment effects (None: undefined)."""
    from scipy import stats as sps
    usable = [e for e in effects if e is not None and e.variance > 0]
    excluded = len(effects) - len(usable)
    if len(usable) < 2:
        return HeterogeneityResult(
            segments=len(usable), excluded=excluded,
            reason="fewer than two segment values with a defined effect and variance")
    weights = [1.0 / e.variance for e in usable]
    total = sum(weights)
    pooled = sum(w * e.estimate for w, e in zip(weights, usable, strict=True)) / total
    q = sum(w * (e.estimate - pooled) ** 2 for w, e in zip(weights, usable, strict=True))
    df = len(usable) - 1
    p_value, floored = floor_p(float(sps.chi2.sf(q, df)))
    i_squared = max(0.0, (q - df) / q) if q > 0 else 0.0
    return HeterogeneityResult(segments=len(usable), excluded=excluded, q=q, df=df,
                               p_value=p_value, p_value_floored=floored,
                               i_squared=i_squared, pooled=pooled)
