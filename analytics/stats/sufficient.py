"""Per-arm sufficient statistics: counts, sums, sums of squares and cross-products.

The SQL layer aggregates these in the database; every test of the package starts from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Relative size below which `sum_sq - sum**2 / n` is rounding noise, not variance.
_ROUNDING_TOLERANCE = 1e-12


def sum_sq_dev(n: int, total: float, total_sq: float) -> float:
    """Sum of squared deviations from the mean, from Σv and Σv²."""
    return residual_ss(total_sq - total * total / n, scale=abs(total_sq))


def cross_dev(n: int, sum_a: float, sum_b: float, sum_ab: float) -> float:
    """Sum of cross-products of deviations from the means, from Σa, Σb and Σab."""
    return sum_ab - sum_a * sum_b / n


def residual_ss(residual: float, scale: float) -> float:
    """A sum of squares computed as a difference; rounding noise below ``scale`` is zero."""
    if residual <= _ROUNDING_TOLERANCE * scale:
        return 0.0
    return residual


def check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"a count cannot be negative (got n={n})")


@dataclass(frozen=True)
class MeanStats:
    """One arm's aggregates of a per-unit metric: n, Σv and Σv².

    For a binary metric (a proportion) ``sum`` is the number of successes and
    ``sum_sq`` equals ``sum``.
    """

    n: int
    sum: float
    sum_sq: float

    def __post_init__(self) -> None:
        check_count(self.n)

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> MeanStats:
        """Aggregate raw per-unit values (for tests and small imports)."""
        array = np.asarray(values, dtype=float)
        return cls(n=int(array.size), sum=float(array.sum()), sum_sq=float(np.dot(array, array)))

    @property
    def mean(self) -> float | None:
        return self.sum / self.n if self.n > 0 else None

    @property
    def variance(self) -> float | None:
        """Sample variance (ddof = 1); None when n < 2."""
        if self.n < 2:
            return None
        return sum_sq_dev(self.n, self.sum, self.sum_sq) / (self.n - 1)


def _pair_moments(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> tuple[int, float, float, float, float, float]:
    """(n, Σa, Σa², Σb, Σb², Σab) of paired per-unit values."""
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape:
        raise ValueError("the two series must have one value per unit")
    return (int(first.size), float(first.sum()), float(np.dot(first, first)),
            float(second.sum()), float(np.dot(second, second)), float(np.dot(first, second)))


@dataclass(frozen=True)
class RatioStats:
    """One arm's aggregates of a ratio metric Σx / Σy with per-unit numerator x, denominator y.

    Example: x = a customer's interactions on the target channel, y = all of
    their interactions in the stage; the metric is the target channel's share.
    """

    n: int
    sum_x: float
    sum_x2: float
    sum_y: float
    sum_y2: float
    sum_xy: float

    def __post_init__(self) -> None:
        check_count(self.n)

    @classmethod
    def from_values(
        cls, *, x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
    ) -> RatioStats:
        """Aggregate raw per-unit numerators ``x`` and denominators ``y``."""
        n, sum_x, sum_x2, sum_y, sum_y2, sum_xy = _pair_moments(x, y)
        return cls(n=n, sum_x=sum_x, sum_x2=sum_x2, sum_y=sum_y, sum_y2=sum_y2, sum_xy=sum_xy)

    @property
    def ratio(self) -> float | None:
        """Σx / Σy; None when there are no units or Σy = 0."""
        if self.n == 0 or self.sum_y == 0:
            return None
        return self.sum_x / self.sum_y

    @property
    def ratio_variance(self) -> float | None:
        """Delta-method variance of the ratio estimate.

        Var(R) ≈ (Var(x) - 2 R Cov(x, y) + R² Var(y)) / (n ȳ²), sample moments with ddof = 1.
        """
        ratio = self.ratio
        if ratio is None or self.n < 2:
            return None
        s_xx = sum_sq_dev(self.n, self.sum_x, self.sum_x2)
        s_yy = sum_sq_dev(self.n, self.sum_y, self.sum_y2)
        s_xy = cross_dev(self.n, self.sum_x, self.sum_y, self.sum_xy)
        residual = residual_ss(
            s_xx - 2 * ratio * s_xy + ratio * ratio * s_yy, scale=s_xx + ratio * ratio * s_yy
        )
        unit_variance = residual / (self.n - 1)
        mean_y = self.sum_y / self.n
        return unit_variance / (self.n * mean_y * mean_y)


@dataclass(frozen=True)
class CovariateStats:
    """One arm's aggregates of an outcome y and its pre-period covariate x (for CUPED)."""

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float
    sum_x2: float
    sum_xy: float

    def __post_init__(self) -> None:
        check_count(self.n)

    @classmethod
    def from_values(
        cls, *, y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray
    ) -> CovariateStats:
        """Aggregate raw per-unit outcomes ``y`` and covariates ``x``."""
        n, sum_y, sum_y2, sum_x, sum_x2, sum_xy = _pair_moments(y, x)
        return cls(n=n, sum_y=sum_y, sum_y2=sum_y2, sum_x=sum_x, sum_x2=sum_x2, sum_xy=sum_xy)

    @property
    def outcome(self) -> MeanStats:
        """The outcome alone, for the unadjusted comparison."""
        return MeanStats(n=self.n, sum=self.sum_y, sum_sq=self.sum_y2)
