"""Guardrails: always-valid (sequential) monitoring of harm, and the budget."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuardrailResult:
    arm: str
    metric: str  # a campaigns.models.GuardrailMetric value
    harm_direction: int  # +1: an increase harms (complaints, churn); -1: a drop (revenue)
    control_mean: float | None
    treatment_mean: float | None
    diff: float | None
    ci_low: float | None  # always-valid confidence sequence at this look
    ci_high: float | None
    p_value_always_valid: float | None
    harm_detected: bool
    reason: str | None = None
