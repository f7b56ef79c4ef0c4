"""GrowthBook's gbstats 0.8.0, transcribed for the tests: statistics and EffectBayesianABTest.

gbstats 0.8.0 pins numpy < 2 and pandas < 2, so it cannot be installed beside this
project's numpy 2 / pandas 3. These are its formulas, kept line for line from
``gbstats/models/statistics.py``, ``gbstats/frequentist/tests.py`` (``frequentist_diff``,
``frequentist_variance``), ``gbstats/bayesian/tests.py`` (``EffectBayesianABTest`` with the
default ``GaussianPrior(proper=False)``, i.e. a flat prior) and ``gbstats/utils.py``
(``truncated_normal_mean``, through scipy's truncnorm as gbstats does). The expected loss
here goes through truncated-normal means, not the closed form the project uses.
``TestTranscription`` in test_stats_bayesian.py compares them with the real package when
it happens to be importable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, truncnorm


@dataclass
class SampleMeanStatistic:
    n: int
    sum: float
    sum_squares: float

    @property
    def variance(self) -> float:
        if self.n <= 1:
            return 0
        return (self.sum_squares - pow(self.sum, 2) / self.n) / (self.n - 1)

    @property
    def mean(self) -> float:
        return 0 if self.n == 0 else self.sum / self.n

    unadjusted_mean = mean


@dataclass
class ProportionStatistic:
    n: int
    sum: float

    @property
    def variance(self) -> float:
        return self.mean * (1 - self.mean)

    @property
    def mean(self) -> float:
        return 0 if self.n == 0 else self.sum / self.n

    unadjusted_mean = mean


@dataclass
class RatioStatistic:
    n: int
    m_statistic: SampleMeanStatistic
    d_statistic: SampleMeanStatistic
    m_d_sum_of_products: float

    @property
    def mean(self) -> float:
        if self.d_statistic.sum == 0:
            return 0
        return self.m_statistic.sum / self.d_statistic.sum

    unadjusted_mean = mean

    @property
    def variance(self) -> float:
        if self.d_statistic.mean == 0 or self.n <= 1:
            return 0
        return (
            self.m_statistic.variance / pow(self.d_statistic.mean, 2)
            - 2 * self.covariance * self.m_statistic.mean / pow(self.d_statistic.mean, 3)
            + pow(self.m_statistic.mean, 2) * self.d_statistic.variance
            / pow(self.d_statistic.mean, 4)
        )

    @property
    def covariance(self) -> float:
        if self.n <= 1:
            return 0
        return (self.m_d_sum_of_products
                - self.m_statistic.sum * self.d_statistic.sum / self.n) / (self.n - 1)


Statistic = SampleMeanStatistic | ProportionStatistic | RatioStatistic


def frequentist_diff(mean_a: float, mean_b: float, relative: bool,
                     mean_a_unadjusted: float | None = None) -> float:
    if not mean_a_unadjusted:
        mean_a_unadjusted = mean_a
    if relative:
        return (mean_b - mean_a) / mean_a_unadjusted
    return mean_b - mean_a


def frequentist_variance(var_a: float, mean_a: float, n_a: int, var_b: float, mean_b: float,
                         n_b: int, relative: bool) -> float:
    if relative:
        return var_b / (pow(mean_a, 2) * n_b) + var_a * pow(mean_b, 2) / (pow(mean_a, 4) * n_a)
    return var_b / n_b + var_a / n_a


def truncated_normal_mean(mu: float, sigma: float, a: float, b: float) -> float:
    a, b = (a - mu) / sigma, (b - mu) / sigma
    mn, _, _, _ = truncnorm.stats(a, b, loc=mu, scale=sigma, moments="mvsk")
    return float(mn)


@dataclass
class BayesianTestResult:
    chance_to_win: float
    expected: float
    ci: list[float]
    risk: list[float]  # [risk of keeping control, risk of shipping the treatment]


def effect_bayesian(stat_a: Statistic, stat_b: Statistic, *, relative: bool,
                    alpha: float = 0.05, inverse: bool = False) -> BayesianTestResult | None:
    """``EffectBayesianABTest(stat_a, stat_b, EffectBayesianConfig(...)).compute_result()``
    with the default flat prior; None where gbstats returns its default (error) output."""
    if stat_a.mean == 0 and relative:
        return None
    if stat_a.n == 0 or stat_b.n == 0:
        return None
    if stat_a.variance <= 0 or stat_b.variance <= 0:
        return None
    data_variance = frequentist_variance(stat_a.variance, stat_a.unadjusted_mean, stat_a.n,
                                         stat_b.variance, stat_b.unadjusted_mean, stat_b.n,
                                         relative)
    data_mean = frequentist_diff(stat_a.mean, stat_b.mean, relative, stat_a.unadjusted_mean)
    post_prec = 1 / data_variance + 0  # int(proper) / prior variance, proper = False
    mean_diff = data_mean
    std_diff = float(np.sqrt(1 / post_prec))
    # gbstats: 1 - norm.sf(...) if inverse, else norm.sf(...)
    ctw = 1 - norm.sf(0, mean_diff, std_diff) if inverse else norm.sf(0, mean_diff, std_diff)
    ci = norm.ppf([alpha / 2, 1 - alpha / 2], mean_diff, std_diff).tolist()
    prob_ctrl_is_better = norm.cdf(0.0, loc=mean_diff, scale=std_diff)
    mn_neg = truncated_normal_mean(mu=mean_diff, sigma=std_diff, a=-np.inf, b=0.0)
    mn_pos = truncated_normal_mean(mu=mean_diff, sigma=std_diff, a=0, b=np.inf)
    risk_ctrl = float((1.0 - prob_ctrl_is_better) * mn_pos)
    risk_trt = -float(prob_ctrl_is_better * mn_neg)
    risk = [risk_ctrl, risk_trt] if not inverse else [risk_trt, risk_ctrl]
    return BayesianTestResult(chance_to_win=float(ctw), expected=mean_diff, ci=ci, risk=risk)
