"""Targeting: uplift by segment, and the uplift-by-decile table and Qini curve of a score."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecileRow:
    arm: str
    decile: int  # 1 = highest score
    score_min: float
    score_max: float
    control_n: int
    treatment_n: int
    control_rate: float | None
    treatment_rate: float | None
    uplift: float | None
    uplift_ci_low: float | None
    uplift_ci_high: float | None


@dataclass(frozen=True)
class QiniPoint:
    arm: str
    fraction_targeted: float  # 0..1, customers ordered by score, highest first
    incremental_gain: float  # Qini: treated responders - control responders x (n_t / n_c)
    random_gain: float  # the diagonal of random targeting at the same fraction


@dataclass(frozen=True)
class QiniResult:
    metric: str
    score: str  # where the score came from (attribute or column name)
    deciles: list[DecileRow]
    curve: list[QiniPoint]
    qini_coefficient: dict[str, float | None]  # per arm: area between curve and diagonal
