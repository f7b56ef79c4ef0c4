"""Experiment statistics on sufficient statistics: pure functions, frozen results.

One module per subject: :mod:`~analytics.stats.sufficient` (per-arm aggregates),
:mod:`~analytics.stats.comparisons` (the test of each row), :mod:`~analytics.stats.srm`,
:mod:`~analytics.stats.multiplicity`, :mod:`~analytics.stats.power` and
:mod:`~analytics.stats.sequential`. This package re-exports their public names.

Every function takes per-arm aggregates (counts, sums, sums of squares and
cross-products) that the SQL layer computes in the database, so no raw rows are
ever needed here. The module imports no database, web or pandas code.

Conventions shared by every result:

- ``diff`` is treatment minus control; ``rel_lift`` is treatment / control - 1.
- Degenerate data (an empty arm, n < 2, zero variance, a zero control mean)
  never raises and never yields NaN or infinity: the undefined fields are
  ``None`` and ``reason`` says why in words a report can print. Invalid
  *parameters* (alpha outside (0, 1), negative counts, mismatched lengths) are
  programming or configuration errors and raise ``ValueError``.
- p-values come from survival functions (``sf``), never ``1 - cdf``, so a
  p-value of 1e-200 keeps its magnitude. When even ``sf`` underflows to 0.0
  the p-value is reported as the smallest positive float
  (``SMALLEST_P_VALUE``, about 5e-324) with ``p_value_floored=True``; a
  p-value is therefore never 0.
- Sample variances use ddof = 1. Sums of squared deviations are computed as
  ``sum_sq - sum**2 / n`` and treated as exactly zero below a relative
  rounding tolerance, so constant data is recognised as zero-variance.
"""

from __future__ import annotations

from analytics.stats.common import SMALLEST_P_VALUE
from analytics.stats.comparisons import (
    CUPED_METHOD,
    MEANS_METHOD,
    PROPORTIONS_METHOD,
    RATIOS_METHOD,
    Comparison,
    CupedResult,
    compare_means,
    compare_proportions,
    compare_ratios,
    cuped,
)
from analytics.stats.multiplicity import holm
from analytics.stats.power import (
    REPORT_POWER,
    DetectableEffect,
    detectable_effect,
    mde_from_se,
    minimum_detectable_effect,
    required_sample_size,
    underpowered,
)
from analytics.stats.sequential import SequentialResult, sequential_rho, sequential_test
from analytics.stats.srm import SRM_THRESHOLD, SrmResult, srm_check
from analytics.stats.sufficient import CovariateStats, MeanStats, RatioStats

__all__ = [
    "CUPED_METHOD",
    "MEANS_METHOD",
    "PROPORTIONS_METHOD",
    "RATIOS_METHOD",
    "REPORT_POWER",
    "SMALLEST_P_VALUE",
    "SRM_THRESHOLD",
    "Comparison",
    "CovariateStats",
    "CupedResult",
    "DetectableEffect",
    "MeanStats",
    "RatioStats",
    "SequentialResult",
    "SrmResult",
    "compare_means",
    "compare_proportions",
    "compare_ratios",
    "cuped",
    "detectable_effect",
    "holm",
    "mde_from_se",
    "minimum_detectable_effect",
    "required_sample_size",
    "sequential_rho",
    "sequential_test",
    "srm_check",
    "underpowered",
]
