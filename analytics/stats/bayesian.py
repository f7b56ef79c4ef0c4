"""The Bayesian view of a comparison: chance to beat the baseline and expected loss.

GrowthBook's ``EffectBayesianABTest`` (gbstats 0.8) with its default flat (improper)
prior on the effect: the posterior of the effect is normal, centred on the estimate with
the estimate's variance, so

- chance to beat the baseline = P(effect better than 0) under that posterior;
- expected loss of choosing the treatment = E[max(-effect, 0)] (what is given up, on
  average, if the treatment is in fact worse), and of keeping the baseline
  E[max(effect, 0)]; for a metric where lower is better the two swap, as gbstats'
  ``inverse`` does;
- the credible interval is the posterior's central 1 - alpha interval (with a flat
  prior it coincides with the normal confidence interval of the same estimate).

Pure functions on :class:`~analytics.stats.effects.Effect`, which comes from the
sufficient statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from analytics.stats.common import check_alpha
from analytics.stats.effects import Effect, EffectType

BAYESIAN_METHOD = ("Bayesian view (as GrowthBook's gbstats 0.8 EffectBayesian test with its "
                   "default flat prior): normal posterior of the effect centred on the "
                   "estimate with the estimate's variance")


@dataclass(frozen=True, kw_only=True)
class BayesianResult:
    """The posterior of one effect (absolute or relative) and what it says for a decision."""

    effect_type: EffectType
    alpha: float
    lower_is_better: bool = False
    posterior_mean: float | None = None
    posterior_sd: float | None = None
    chance_to_beat_baseline: float | None = None
    #: expected loss of shipping the treatment: how much worse it is, on average
    expected_loss: float | None = None
    #: expected loss of keeping the baseline: how much better the treatment is
    expected_loss_baseline: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str | None = None


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _positive_part_mean(mean: float, sd: float) -> float:
    """E[max(X, 0)] for X ~ N(mean, sd²): mean Φ(mean/sd) + sd φ(mean/sd)."""
    z = mean / sd
    return max(mean * _normal_cdf(z) + sd * _normal_pdf(z), 0.0)


def bayesian_effect(observed: Effect | None, *, alpha: float = 0.05,
                    lower_is_better: bool = False,
                    effect_type: EffectType = "absolute") -> BayesianResult:
    """Chance to beat the baseline, expected losses and credible interval of ``observed``.

    ``observed`` None (an arm without units, a zero baseline for a relative effect) or
    without variance gives a result with only ``reason`` set; ``effect_type`` then
    names what was asked for.
    """
    check_alpha(alpha)
    if observed is None:
        return BayesianResult(effect_type=effect_type, alpha=alpha,
                              lower_is_better=lower_is_better,
                              reason=("the effect is undefined (an arm without units, or a "
                                      "zero baseline for a relative effect)"))
    mean = observed.estimate
    if not observed.variance > 0:
        return BayesianResult(effect_type=observed.effect_type, alpha=alpha,
                              lower_is_better=lower_is_better, posterior_mean=mean,
                              reason="no variance: the posterior is undefined")
    sd = math.sqrt(observed.variance)
    gain = _positive_part_mean(mean, sd)  # E[max(effect, 0)]
    drop = _positive_part_mean(-mean, sd)  # E[max(-effect, 0)]
    chance_up = _normal_cdf(mean / sd)  # P(effect > 0)
    half = NormalDist().inv_cdf(1.0 - alpha / 2) * sd
    return BayesianResult(
        effect_type=observed.effect_type, alpha=alpha, lower_is_better=lower_is_better,
        posterior_mean=mean, posterior_sd=sd,
        chance_to_beat_baseline=1.0 - chance_up if lower_is_better else chance_up,
        expected_loss=gain if lower_is_better else drop,
        expected_loss_baseline=drop if lower_is_better else gain,
        ci_low=mean - half, ci_high=mean + half)
