"""The dashboard's headline per campaign: did the incentive move target-channel adoption?

One small function, :func:`campaign_headline`, reads the campaign's results (every
treatment arm against control) and keeps the adoption comparison of each arm with its
confidence interval, a verdict in plain words and the sample-ratio warning. When the
full report assembly lands it can replace this function without touching the pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.engine import Connection

from analytics.guardrails import GUARDRAILS, assess_guardrails, describe_harm
from analytics.reports import campaign_results
from analytics.stats import Comparison
from campaigns.models import Campaign

HEADLINE_METRIC = "adoption"


class Verdict(StrEnum):
    CREDIBLE_LIFT = "credible lift"
    NO_EFFECT = "no detectable effect"
    HARM = "harm"
    TOO_EARLY = "not enough data yet"


def verdict(comparison: Comparison) -> Verdict:
    """What the interval says: above zero is a lift, below zero harm, across zero nothing.

    The verdict reads the same interval the page shows, so the words never disagree with
    the picture; an interval that cannot be computed yet (no variance, empty arm) says so.
    """
    low, high = comparison.diff_ci_low, comparison.diff_ci_high
    if low is None or high is None:
        return Verdict.TOO_EARLY
    if low > 0:
        return Verdict.CREDIBLE_LIFT
    if high < 0:
        return Verdict.HARM
    return Verdict.NO_EFFECT


@dataclass(frozen=True)
class ArmHeadline:
    arm: str
    control_n: int
    treatment_n: int
    control_rate: float | None
    treatment_rate: float | None
    #: treatment - control, as a fraction (0.05 = +5 percentage points), with its interval
    lift: float | None
    ci_low: float | None
    ci_high: float | None
    p_value_holm: float | None
    verdict: Verdict


@dataclass(frozen=True)
class CampaignHeadline:
    campaign_id: int
    confidence: float
    arms: tuple[ArmHeadline, ...]
    srm_flagged: bool
    srm_p_value: float | None
    #: guardrails showing significant harm now (the monitor pauses a running campaign)
    harmed: tuple[str, ...] = ()

    @property
    def exposures(self) -> int:
        if not self.arms:
            return 0
        return self.arms[0].control_n + sum(arm.treatment_n for arm in self.arms)


def campaign_headline(connection: Connection, campaign_id: int, *, alpha: float = 0.05
                      ) -> CampaignHeadline:
    """Adoption lift of every treatment arm over control, with the SRM check."""
    report = campaign_results(connection, campaign_id, alpha=alpha)
    arms = tuple(
        ArmHeadline(
            arm=result.arm, control_n=result.comparison.control_n,
            treatment_n=result.comparison.treatment_n,
            control_rate=result.comparison.control_mean,
            treatment_rate=result.comparison.treatment_mean,
            lift=result.comparison.diff, ci_low=result.comparison.diff_ci_low,
            ci_high=result.comparison.diff_ci_high, p_value_holm=result.p_value_holm,
            verdict=verdict(result.comparison))
        for result in report.results if result.metric == HEADLINE_METRIC)
    table = Campaign.__table__  # type: ignore[attr-defined]
    watched, currency = connection.execute(
        select(table.c.guardrails, table.c.currency).where(table.c.id == campaign_id)).one()
    harmed = tuple(
        describe_harm(result, currency=currency) for result in assess_guardrails(
            report.arms, metrics=[m for m in GUARDRAILS if m in (watched or [])], alpha=alpha)
        if result.harm_detected)
    return CampaignHeadline(campaign_id=campaign_id, confidence=1 - alpha, arms=arms,
                            srm_flagged=report.srm.flagged, srm_p_value=report.srm.p_value,
                            harmed=harmed)
