"""Experiment statistics on sufficient statistics: pure functions, frozen results.

One module per subject: :mod:`~analytics.stats.sufficient` (per-arm aggregates),
:mod:`~analytics.stats.comparisons` (the test of each row), :mod:`~analytics.stats.intervals`
(score and Fieller intervals that invert a test), :mod:`~analytics.stats.srm`,
:mod:`~analytics.stats.multiplicity`, :mod:`~analytics.stats.power`,
:mod:`~analytics.stats.sequential`, :mod:`~analytics.stats.effects` (each arm's estimate and
an effect's variance), :mod:`~analytics.stats.bayesian` and
:mod:`~analytics.stats.heterogeneity`. This package re-exports their public names.

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

from analytics.stats.bayesian import BAYESIAN_METHOD, BayesianResult, bayesian_effect
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
from analytics.stats.effects import (
    ArmEstimate,
    Effect,
    EffectType,
    cuped_estimates,
    effect,
    mean_estimate,
    proportion_estimate,
    ratio_estimate,
)
from analytics.stats.heterogeneity import HETEROGENEITY_METHOD, HeterogeneityResult, cochran_q
from analytics.stats.intervals import (
    RatioInterval,
    fieller,
    score_interval_diff,
    score_interval_ratio,
    score_statistic_diff,
    score_statistic_ratio,
)
from analytics.stats.multiplicity import (
    CORRECTION_NAMES,
    CORRECTIONS,
    benjamini_hochberg,
    check_correction,
    holm,
)
from analytics.stats.power import (
    REPORT_POWER,
    DetectableEffect,
    detectable_effect,
    mde_from_se,
    minimum_detectable_effect,
    required_sample_size,
    underpowered,
)
from analytics.stats.sequential import (
    ConfidenceSequence,
    SequentialResult,
    confidence_sequence,
    sequential_rho,
    sequential_test,
)
from analytics.stats.srm import SRM_THRESHOLD, SrmResult, srm_check
from analytics.stats.sufficient import CovariateStats, MeanStats, RatioStats

__all__ = [
    "BAYESIAN_METHOD",
    "CORRECTIONS",
    "CORRECTION_NAMES",
    "CUPED_METHOD",
    "HETEROGENEITY_METHOD",
    "MEANS_METHOD",
    "PROPORTIONS_METHOD",
    "RATIOS_METHOD",
    "REPORT_POWER",
    "SMALLEST_P_VALUE",
    "SRM_THRESHOLD",
    "ArmEstimate",
    "BayesianResult",
    "Comparison",
    "ConfidenceSequence",
    "CovariateStats",
    "CupedResult",
    "DetectableEffect",
    "Effect",
    "EffectType",
    "HeterogeneityResult",
    "MeanStats",
    "RatioInterval",
    "RatioStats",
    "SequentialResult",
    "SrmResult",
    "bayesian_effect",
    "benjamini_hochberg",
    "check_correction",
    "cochran_q",
    "compare_means",
    "compare_proportions",
    "compare_ratios",
    "confidence_sequence",
    "cuped",
    "cuped_estimates",
    "detectable_effect",
    "effect",
    "fieller",
    "holm",
    "mde_from_se",
    "mean_estimate",
    "minimum_detectable_effect",
    "proportion_estimate",
    "ratio_estimate",
    "required_sample_size",
    "score_interval_diff",
    "score_interval_ratio",
    "score_statistic_diff",
    "score_statistic_ratio",
    "sequential_rho",
    "sequential_test",
    "srm_check",
    "underpowered",
]
