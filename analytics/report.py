"""The campaign report analysts take away: every result of a campaign in one frozen value.

:func:`build_report` gathers what a reader needs to trust and act on an experiment: the
campaign and its arms, the sample sizes and the sample ratio check, every treatment arm
against control with the methods that produced the numbers, and two time series computed
in SQL (cumulative adoption by arm, cumulative spend against the budget). Sections other
modules compute (economics, segment breakdown, guardrails, Qini) are fields that default
to empty so they can be filled in with :func:`dataclasses.replace`.

:mod:`analytics.exports` turns a :class:`Report` into JSON, CSV, XLSX and HTML. Like the
rest of ``analytics/`` this module only reads the domain.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from analytics.economics import EconomicsResult, economics_from_rows
from analytics.guardrails import GUARDRAILS, GuardrailResult, assess_guardrails
from analytics.metrics import GOAL_METRICS, base_key
from analytics.metrics import lookup as metric_lookup
from analytics.queries import (
    CapRule,
    DailyAdoption,
    arm_statistics_and_adoption,
    check_pre_period_days,
    complete_windows,
    goal_window,
    parse_cap,
    positive_percentile,
    uncapped_rows,
)
from analytics.reports import (
    PRIMARY_METRICS,
    REPORT_TUNING_N,
    CampaignResults,
    MetricResult,
    PlannedSplit,
    SegmentHeterogeneity,
    campaign_results,
    choose_baseline,
    compare_arms,
    planned_split,
    sample_ratio,
    segment_heterogeneity,
)
from analytics.segments import campaign_and_segment_results, segment_names
from analytics.stats import (
    BAYESIAN_METHOD,
    CORRECTION_NAMES,
    CUPED_METHOD,
    HETEROGENEITY_METHOD,
    MEANS_METHOD,
    PROPORTIONS_METHOD,
    RATIOS_METHOD,
    SRM_THRESHOLD,
    Comparison,
    DetectableEffect,
    SrmResult,
    check_correction,
    detectable_effect,
    underpowered,
)
from analytics.stats.intervals import (
    FINNEY_G_LIMIT,
    LIFT_DELTA,
    LIFT_FIELLER,
    LIFT_SCORE,
    MIN_EXPECTED_COUNT,
)
from analytics.uplift import QiniOptionError, QiniResult, qini, qini_metric_names
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    Channel,
    ExperimentMetric,
    Incentive,
    MigrationGoal,
    Redemption,
    RedemptionStatus,
    Stage,
)
from campaigns.types import utcnow

__all__ = [
    "MAX_SERIES_POINTS",
    "AppliedCap",
    "ArmInfo",
    "CampaignInfo",
    "DateRange",
    "InterimStatus",
    "MetricPower",
    "Report",
    "ReportOptionError",
    "SpendPoint",
    "TimelinePoint",
    "adoption_timeline",
    "build_report",
    "resolve_campaign",
    "spend_timeline",
]

#: Most points a time series keeps per arm; longer campaigns are sampled evenly.
MAX_SERIES_POINTS = 120

_CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
_ARM = Arm.__table__  # type: ignore[attr-defined]
_INCENTIVE = Incentive.__table__  # type: ignore[attr-defined]
_GOAL = MigrationGoal.__table__  # type: ignore[attr-defined]
_STAGE = Stage.__table__  # type: ignore[attr-defined]
_CHANNEL = Channel.__table__  # type: ignore[attr-defined]
_ASSIGNMENT = Assignment.__table__  # type: ignore[attr-defined]
_REDEMPTION = Redemption.__table__  # type: ignore[attr-defined]
_EXPERIMENT_METRIC = ExperimentMetric.__table__  # type: ignore[attr-defined]

#: The statistics module's method tags, in the words a report prints.
_METHOD_WORDS: Mapping[str, str] = {
    PROPORTIONS_METHOD: "unpooled Wald z test of the difference of proportions, with the "
    "Wald interval from the same standard error, so the interval excludes 0 exactly when "
    "p < alpha (bounded to [-1, 1]); for a small 2x2 table (under "
    f"{MIN_EXPECTED_COUNT} expected in a cell, or an empty cell) the Miettinen-Nurminen "
    "score test and the score interval that inverts it instead, and the row says so",
    MEANS_METHOD: "Welch's t test of the difference of means (unequal variances, "
    "Welch-Satterthwaite degrees of freedom) and the t interval of the same test",
    RATIOS_METHOD: "ratio of sums per arm (Σ numerator / Σ denominator over customers), "
    "delta-method variance, z test and the z interval of the same test",
}


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class CampaignInfo:
    """What the report says about the campaign itself (names, not ids, for readers)."""

    id: int
    name: str
    status: str
    origin: str
    goal: str | None
    stage: str | None
    target_channel: str | None
    currency: str
    budget_minor: int | None
    spent_minor: int
    starts_at: datetime | None
    ends_at: datetime | None
    pause_reason: str | None
    #: the goal's observation window; also the length of the CUPED pre-period
    window_days: int | None = None
    #: imported experiments: metric name -> the covariate column CUPED adjusts with
    covariates: Mapping[str, str] = field(default_factory=dict)
    #: the guardrail metrics the sequential monitor watches (Campaign.guardrails)
    guardrails: tuple[str, ...] = ()
    #: the goal's target: an absolute uplift of its metric (0.05 = +5 points)
    target_uplift: float | None = None
    #: the goal's metric ("adoption" or "share")
    goal_metric: str | None = None


@dataclass(frozen=True)
class ArmInfo:
    """An arm as configured, with how many units were exposed in it."""

    name: str
    is_control: bool
    n: int
    planned_weight: int
    incentive_type: str | None
    incentive_name: str | None
    #: the arm's share of the split the sample ratio check tests against
    planned_share: float | None = None
    #: the arm's share of all units
    observed_share: float | None = None


@dataclass(frozen=True)
class DateRange:
    """First and last exposure of a live campaign."""

    first_exposure: datetime
    last_exposure: datetime


@dataclass(frozen=True)
class TimelinePoint:
    """One arm at the end of one day: customers exposed so far, and how many of them had
    used the target channel at the goal's stage (within their window) by then."""

    arm: str
    day: date
    exposed: int
    adopted: int

    @property
    def rate(self) -> float | None:
        return self.adopted / self.exposed if self.exposed else None


@dataclass(frozen=True)
class SpendPoint:
    """Incentive cost charged to the budget up to the end of ``day`` (rollbacks deducted)."""

    day: date
    spent_minor: int


class ReportOptionError(ValueError):
    """A report option with a value the report cannot use; ``option`` names it as the API's
    query parameter does (``cap_revenue``, ``cuped_days``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.detail = message


def parse_caps(caps: Mapping[str, CapRule | str]) -> dict[str, CapRule]:
    """Cap options by metric, each a :class:`~analytics.queries.CapRule` or the text a
    reader gave ("99p", "500.00"); :class:`ReportOptionError` names an unreadable one."""
    parsed: dict[str, CapRule] = {}
    for metric, rule in caps.items():
        if isinstance(rule, str):
            try:
                rule = parse_cap(rule)
            except ValueError as error:
                raise ReportOptionError(f"cap_{metric}", str(error)) from None
        parsed[metric] = rule
    return parsed


@dataclass(frozen=True)
class InterimStatus:
    """A live campaign whose results can still change: some exposed customers have not had
    their whole observation window yet, or it can still expose more.

    Window metrics then count every exposed customer over the part of the window that has
    passed: the arms stay comparable (exposure time does not depend on the arm), so tests
    and intervals stay valid, but a cumulative metric (adoption, revenue, cost) and its
    effect can still grow until every window is complete.
    """

    as_of: datetime
    window_days: int
    exposed: int
    #: exposed customers whose whole window had passed at ``as_of``
    complete: int
    exposed_by_arm: Mapping[str, int]
    complete_by_arm: Mapping[str, int]
    #: the campaign is running or paused: more customers may still be exposed
    still_running: bool
    #: when the last exposed customer's window ends
    windows_complete_at: datetime
    #: days the most recently exposed customer has been observed
    least_observed_days: float

    @property
    def incomplete(self) -> int:
        return self.exposed - self.complete


@dataclass(frozen=True)
class AppliedCap:
    """One money metric capped per customer, as the report applied it."""

    metric: str
    #: the option as given: "99p" (a percentile of the positive values) or "500.00"
    rule: str
    percentile: float | None
    #: the cap in minor units (None: no customer had a positive value, nothing to cap)
    cap_minor: float | None
    #: percentile caps: how many customers' values were positive
    positive_n: int | None
    #: customers whose value was above the cap, per arm
    capped_by_arm: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPower:
    """What one treatment arm's comparison on a primary metric could detect."""

    arm: str
    metric: str
    effect: DetectableEffect
    #: the goal's target uplift, when this is the goal's metric
    target: float | None = None

    @property
    def underpowered(self) -> bool:
        return self.target is not None and underpowered(self.effect, self.target)


@dataclass(frozen=True)
class Report:
    """Everything a campaign report shows; exports render it, they compute nothing."""

    campaign: CampaignInfo
    generated_at: datetime
    alpha: float
    date_range: DateRange | None
    arms: list[ArmInfo]
    srm: SrmResult
    results: list[MetricResult]
    timeline: list[TimelinePoint] = field(default_factory=list)
    spend: list[SpendPoint] = field(default_factory=list)
    economics: list[EconomicsResult] = field(default_factory=list)
    segments: list[MetricResult] = field(default_factory=list)
    guardrails: list[GuardrailResult] = field(default_factory=list)
    qini: QiniResult | None = None
    #: the multiplicity correction tables and verdicts use: "holm" or "bh"
    correction: str = "holm"
    #: the arm every other arm is compared with; None: the control arm
    baseline: str | None = None
    #: Cochran's Q per arm and metric across the breakdown's segment values
    heterogeneity: list[SegmentHeterogeneity] = field(default_factory=list)

    @property
    def baseline_arm(self) -> str | None:
        """The name of the arm the comparisons are against (the control arm by default)."""
        if self.baseline is not None:
            return self.baseline
        control = self.control
        return control.name if control is not None else None
    #: the split the sample ratio check tested (planned shares are on ``arms``)
    planned_split: PlannedSplit | None = None
    #: set when the results are interim (see :class:`InterimStatus`)
    interim: InterimStatus | None = None
    #: minimum detectable effect per treatment arm and primary metric
    power: list[MetricPower] = field(default_factory=list)
    #: money metrics capped per customer (report options)
    caps: list[AppliedCap] = field(default_factory=list)
    #: the CUPED pre-period asked for (None: as long as the goal's window)
    pre_period_days: int | None = None

    @property
    def control(self) -> ArmInfo | None:
        return next((arm for arm in self.arms if arm.is_control), None)

    @property
    def methods(self) -> list[str]:
        """Each method behind the numbers, in plain words, naming the metrics it applies to.

        Derived from the report's contents, so sections wired in later (guardrails,
        economics, segments) state their method too.
        """
        return list(_method_statements(self))

    @property
    def warnings(self) -> list[str]:
        """What a reader must see before any number: SRM, detected harm, a spent budget,
        then the :attr:`cautions` (interim, underpowered)."""
        out: list[str] = []
        if self.srm.flagged:
            out.append(srm_sentence(self.srm) + " The arm sizes do not match the planned "
                       "split, so assignment or exposure logging is broken; do not trust "
                       "the comparisons below until the cause is found.")
        out += _split_warnings(self)
        for guardrail in self.guardrails:
            if guardrail.harm_detected:
                out.append(f"Guardrail harmed: {guardrail.metric} in arm '{guardrail.arm}' "
                           "(always-valid sequential test).")
        budget = self.campaign.budget_minor
        if budget is not None and budget > 0 and self.campaign.spent_minor >= budget:
            out.append("The budget is spent: no more incentives are being paid.")
        return out + self.cautions

    @property
    def cautions(self) -> list[str]:
        """The warnings that qualify the results rather than invalidate them: interim
        results, and comparisons underpowered for the goal's target (last in
        :attr:`warnings`)."""
        out = [] if self.interim is None else [interim_sentence(self.interim)]
        return out + [power_sentence(row, alpha=self.alpha) for row in self.power
                      if row.underpowered]

    def records(self) -> list[dict[str, Any]]:
        """The report in tidy long format: one dict per number.

        Keys: ``campaign`` (name), ``arm``, ``segment`` ("all" or "<column>=<value>"),
        ``metric``, ``statistic``, ``value``. ``value`` is always a number or None (an
        undefined statistic), so the column stays numeric in every tool. Rows with
        ``arm`` "all" describe the whole experiment (alpha, SRM). So that a file of
        records states how its numbers were made, a few rows carry text instead of a
        number, in ``statistic`` with an empty ``value``: metric ``date_range``
        (``first_exposure=<ISO time>``, ``last_exposure=...``, ``generated_at=...``)
        and metric ``method`` (one row per statement of :attr:`methods`).
        """
        name = self.campaign.name
        return [{"campaign": name, "arm": arm, "segment": segment, "metric": metric,
                 "statistic": statistic, "value": value}
                for arm, segment, metric, statistic, value in self._rows()]

    def _rows(self) -> Iterator[tuple[str, str, str, str, float | int | None]]:
        if self.date_range is not None:
            yield ("all", "all", "date_range",
                   f"first_exposure={_iso(self.date_range.first_exposure)}", None)
            yield ("all", "all", "date_range",
                   f"last_exposure={_iso(self.date_range.last_exposure)}", None)
        yield "all", "all", "date_range", f"generated_at={_iso(self.generated_at)}", None
        for statement in self.methods:
            yield "all", "all", "method", statement, None
        yield "all", "all", "experiment", "alpha", self.alpha
        yield "all", "all", "sample_ratio", "srm_p_value", self.srm.p_value
        yield "all", "all", "sample_ratio", "srm_chi2", self.srm.chi2
        yield "all", "all", "sample_ratio", "srm_flagged", int(self.srm.flagged)
        for arm in self.arms:
            yield arm.name, "all", "assignment", "n", arm.n
            yield arm.name, "all", "assignment", "planned_weight", arm.planned_weight
        yield from _split_rows(self)
        for result in [*self.results, *self.segments]:
            for statistic, value in comparison_statistics(result):
                yield result.arm, result.segment, result.metric, statistic, value
        yield from _view_rows(self)
        yield from _heterogeneity_rows(self)
        for economics in self.economics:
            for statistic, value in (("estimate", economics.estimate),
                                     ("ci_low", economics.ci_low),
                                     ("ci_high", economics.ci_high)):
                yield economics.arm, "all", economics.metric, statistic, value
        for guardrail in self.guardrails:
            # Sample sizes are the metric's own n_control / n_treatment rows above.
            for statistic, value in (
                    ("sequential_control_mean", guardrail.control_mean),
                    ("sequential_treatment_mean", guardrail.treatment_mean),
                    ("sequential_diff", guardrail.diff),
                    ("sequential_ci_low", guardrail.ci_low),
                    ("sequential_ci_high", guardrail.ci_high),
                    ("sequential_p_value", guardrail.p_value_always_valid),
                    ("sequential_level", guardrail.level),
                    ("harm_direction", guardrail.harm_direction),
                    ("harm_detected", int(guardrail.harm_detected))):
                yield guardrail.arm, "all", guardrail.metric, statistic, value
        if self.qini is not None:
            yield from _qini_rows(self.qini)
        yield from _interim_power_cap_rows(self)


def _interim_power_cap_rows(report: Report
                            ) -> Iterator[tuple[str, str, str, str, float | int | None]]:
    """Tidy rows of the interim status, the detectable effects and the caps."""
    interim = report.interim
    if interim is not None:
        yield "all", "all", "interim", "interim", 1
        yield "all", "all", "interim", "window_days", interim.window_days
        yield "all", "all", "interim", f"as_of={_iso(interim.as_of)}", None
        for arm, exposed in interim.exposed_by_arm.items():
            yield arm, "all", "interim", "n_exposed", exposed
            yield arm, "all", "interim", "n_complete_window", interim.complete_by_arm.get(arm, 0)
    elif report.campaign.origin == CampaignOrigin.LIVE.value and report.date_range:
        yield "all", "all", "interim", "interim", 0
    for row in report.power:
        effect = row.effect
        for statistic, value in (("mde", effect.mde), ("mde_relative", effect.mde_relative),
                                 ("mde_power", effect.power),
                                 ("target_uplift", row.target),
                                 ("underpowered", int(row.underpowered)
                                  if row.target is not None else None)):
            yield row.arm, "all", row.metric, statistic, value
    for cap in report.caps:
        yield "all", "all", cap.metric, "cap_minor", cap.cap_minor
        if cap.percentile is not None:
            yield "all", "all", cap.metric, "cap_percentile", cap.percentile
            yield "all", "all", cap.metric, "cap_positive_n", cap.positive_n
        for arm, capped in cap.capped_by_arm.items():
            yield arm, "all", cap.metric, "capped_n", capped


def _split_rows(report: Report) -> Iterator[tuple[str, str, str, str, float | int | None]]:
    """Planned against observed share of every arm, and whether the split was assumed."""
    for arm in report.arms:
        yield arm.name, "all", "assignment", "planned_share", arm.planned_share
        yield arm.name, "all", "assignment", "observed_share", arm.observed_share
    if report.planned_split is not None:
        yield ("all", "all", "sample_ratio", "planned_split_assumed",
               int(report.planned_split.assumed))


def _split_warnings(report: Report) -> list[str]:
    split = report.planned_split
    if split is None or not split.assumed or not any(arm.n for arm in report.arms):
        return []
    shares = ", ".join(f"{arm.name} {arm.observed_share:.1%}" for arm in report.arms
                       if arm.observed_share is not None)
    return [f"ASSUMPTION: no planned split was recorded for this experiment, so the sample "
            f"ratio check assumes equal allocation (observed: {shares}). If the arms were "
            "meant to differ in size, import it again with --weights."]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def comparison_statistics(result: MetricResult) -> list[tuple[str, float | int | None]]:
    """(statistic, value) pairs of one comparison, as the tidy format names them.

    ``p_value_floored`` is 1 when ``p_value`` is only an upper bound (the true p-value is
    below the smallest a double holds). ``p_value_holm`` is given for the metrics Holm
    corrects, ``variance_reduction`` for CUPED-adjusted metrics; every other statistic
    is given for every comparison (None when undefined, e.g. an interval of an arm
    without variance).
    """
    c = result.comparison
    pairs: list[tuple[str, float | int | None]] = [
        ("n_control", c.control_n), ("n_treatment", c.treatment_n),
        ("mean_control", c.control_mean), ("mean_treatment", c.treatment_mean),
        ("diff", c.diff), ("diff_se", c.diff_se),
        ("diff_ci_low", c.diff_ci_low), ("diff_ci_high", c.diff_ci_high),
        ("test_statistic", c.statistic), ("p_value", c.p_value),
        ("p_value_floored", int(c.p_value_floored))]
    if result.p_value_holm is not None or result.metric in PRIMARY_METRICS:
        pairs.append(("p_value_holm", result.p_value_holm))
    pairs += [("rel_lift", c.rel_lift), ("rel_lift_ci_low", c.rel_lift_ci_low),
              ("rel_lift_ci_high", c.rel_lift_ci_high)]
    if result.variance_reduction is not None or c.method == CUPED_METHOD:
        pairs.append(("variance_reduction", result.variance_reduction))
    pairs += _interval_statistics(c)
    return pairs


def _interval_statistics(c: Comparison) -> list[tuple[str, float | int | None]]:
    """Which interval each comparison used (text rows) and whether it is a small sample."""
    pairs: list[tuple[str, float | int | None]] = [("small_sample", int(c.small_sample))]
    if c.interval_method is not None:
        pairs.append((f"interval_method={c.interval_method}", None))
    if c.rel_lift_interval_method is not None:
        pairs.append((f"rel_lift_interval_method={c.rel_lift_interval_method}", None))
    return pairs


def view_statistics(result: MetricResult, *, correction: str = "holm"
                    ) -> list[tuple[str, float | int | None]]:
    """(statistic, value) pairs of a comparison's Bayesian and sequential views.

    ``p_value_bh`` is given (for the corrected metrics) when the report's correction is
    Benjamini-Hochberg. ``bayes_*`` is the absolute effect's posterior, ``bayes_rel_*``
    the relative one's; ``always_valid_*`` the confidence sequence on the absolute effect.
    """
    pairs: list[tuple[str, float | int | None]] = []
    if correction == "bh" and (result.p_value_bh is not None
                               or result.metric in PRIMARY_METRICS):
        pairs.append(("p_value_bh", result.p_value_bh))
    for prefix, view in (("bayes", result.bayesian), ("bayes_rel", result.bayesian_relative)):
        if view is not None:
            pairs += [(f"{prefix}_chance_to_beat_baseline", view.chance_to_beat_baseline),
                      (f"{prefix}_expected_loss", view.expected_loss),
                      (f"{prefix}_expected_loss_baseline", view.expected_loss_baseline),
                      (f"{prefix}_ci_low", view.ci_low), (f"{prefix}_ci_high", view.ci_high)]
    sequence = result.sequential
    if sequence is not None:
        pairs += [("always_valid_ci_low", sequence.ci_low),
                  ("always_valid_ci_high", sequence.ci_high),
                  ("always_valid_p_value", sequence.p_value_always_valid)]
    return pairs


def _view_rows(report: Report) -> Iterator[tuple[str, str, str, str, float | int | None]]:
    baseline = report.baseline_arm
    if baseline is not None:
        yield "all", "all", "experiment", f"baseline={baseline}", None
    yield "all", "all", "experiment", f"correction={report.correction}", None
    for result in [*report.results, *report.segments]:
        for statistic, value in view_statistics(result, correction=report.correction):
            yield result.arm, result.segment, result.metric, statistic, value


def _heterogeneity_rows(report: Report
                        ) -> Iterator[tuple[str, str, str, str, float | int | None]]:
    for row in report.heterogeneity:
        test = row.test
        for statistic, value in (("heterogeneity_q", test.q), ("heterogeneity_df", test.df),
                                 ("heterogeneity_p_value", test.p_value),
                                 ("heterogeneity_i_squared", test.i_squared),
                                 ("heterogeneity_segments", test.segments)):
            yield row.arm, row.breakdown, row.metric, statistic, value


def _qini_rows(qini: QiniResult) -> Iterator[tuple[str, str, str, str, float | int | None]]:
    for arm, coefficient in qini.qini_coefficient.items():
        yield arm, "all", qini.metric, "qini_coefficient", coefficient
    for arm, q0 in (qini.qini_q0 or {}).items():
        yield arm, "all", qini.metric, "qini_q0", q0
    for arm, score in (qini.qini_auc_score or {}).items():
        yield arm, "all", qini.metric, "qini_auc_score", score
    yield "all", "all", qini.metric, "qini_scored_n", qini.scored_n
    yield "all", "all", qini.metric, "qini_distinct_scores", qini.distinct_scores
    for row in qini.deciles:
        segment = f"{qini.score}_decile={row.decile}"
        for statistic, value in (("score_min", row.score_min), ("score_max", row.score_max),
                                 ("n_control", row.control_n), ("n_treatment", row.treatment_n),
                                 ("mean_control", row.control_rate),
                                 ("mean_treatment", row.treatment_rate),
                                 ("diff", row.uplift), ("diff_ci_low", row.uplift_ci_low),
                                 ("diff_ci_high", row.uplift_ci_high),
                                 ("p_value", row.p_value)):
            yield row.arm, segment, qini.metric, statistic, value


# --------------------------------------------------------------------------- methods


def srm_sentence(srm: SrmResult) -> str:
    """One sentence on the sample ratio check, for every output format."""
    if srm.p_value is None:
        state = "FLAGGED" if srm.flagged else "not tested"
        return f"Sample ratio check {state}: {srm.reason or 'no p-value'}."
    p_value = f"< {srm.p_value:.0e}" if srm.p_value_floored else f"= {srm.p_value:.3g}"
    if srm.flagged:
        return (f"SAMPLE RATIO MISMATCH: chi-square p {p_value} is below {srm.threshold:g}.")
    return (f"Sample ratio check passed: chi-square p {p_value} "
            f"(flagged below {srm.threshold:g}).")


def _metric_names(results: Iterable[MetricResult], method: str) -> list[str]:
    names: dict[str, None] = {}
    for result in results:
        if result.comparison.method == method:
            names[result.metric] = None
    return list(names)


def _method_statements(report: Report) -> Iterator[str]:
    results = [*report.results, *report.segments]
    level = f"{1 - report.alpha:.0%}".replace(".0%", "%")
    campaign = report.campaign
    if report.interim is not None:
        yield _interim_method(report.interim, level=level, alpha=report.alpha)
    elif campaign.origin == CampaignOrigin.LIVE.value and campaign.window_days is not None:
        yield (f"Intention to treat: every exposed customer counts in the arm they were "
               f"assigned, whatever they did, observed for {campaign.window_days} days from "
               f"their first exposure. Intervals are two-sided {level} (alpha "
               f"{report.alpha:g}).")
    else:
        yield (f"Each unit counts in the arm it was assigned. Intervals are two-sided "
               f"{level} (alpha {report.alpha:g}).")
    methods: dict[str, None] = {r.comparison.method: None for r in results}
    for method in methods:
        if method == CUPED_METHOD:
            continue
        metrics = ", ".join(_metric_names(results, method))
        yield f"{metrics}: {_METHOD_WORDS.get(method, method)}."
    yield from _lift_statements(results)
    if CUPED_METHOD in methods:
        metrics = ", ".join(_metric_names(results, CUPED_METHOD))
        yield (f"{metrics}: CUPED, {_cuped_covariate(campaign, report.pre_period_days)}, "
               "then Welch's t test.")
    corrected = [r for r in report.results if r.p_value_holm is not None]
    if corrected and report.correction == "holm":
        names = ", ".join(dict.fromkeys(r.metric for r in corrected))
        yield (f"Holm step-down correction across {len(corrected)} comparisons "
               f"(every treatment arm x the primary metrics {names}); the other "
               "p-values are not corrected for multiplicity.")
    split = report.planned_split
    planned = f" ({split.source})" if split is not None else ""
    yield (f"Sample ratio mismatch check: chi-square goodness of fit of the arm sizes to "
           f"the planned weights{planned}, flagged when p < {SRM_THRESHOLD:g}.")
    yield from _cap_methods(report)
    yield from _power_methods(report)
    if report.guardrails:
        metrics = ", ".join(dict.fromkeys(g.metric for g in report.guardrails))
        levels = sorted({g.level for g in report.guardrails if g.level is not None})
        level_words = (f" at level {', '.join(f'{lv:.2%}' for lv in levels)} (split over "
                       "arms x guardrails so the campaign's false-alarm rate stays within "
                       "alpha)" if levels else "")
        yield (f"Guardrails ({metrics}): always-valid sequential test (normal-mixture "
               f"confidence sequence){level_words}, valid however often it is checked; "
               "harm is declared when the whole interval lies on the harmful side of zero.")
    economics_methods = {e.metric: e.method for e in report.economics if e.method}
    for metric, method in economics_methods.items():
        yield f"Economics, {metric.replace('_', ' ')}: {method}."
    if report.economics and not economics_methods:
        yield ("Economics: each treatment arm's lifts against control scaled to the arm's "
               "size and priced with the channel costs, revenue and incentive costs.")
    if report.segments:
        yield _segment_statement(report)
    yield from _view_method_statements(report, corrected)
    if report.qini is not None:
        yield (f"Targeting: uplift of {report.qini.metric} by decile of the score "
               f"'{report.qini.score}' ({report.qini.scored_n:,} scored units); "
               f"{report.qini.method.rstrip('.')}.")
        yield from _qini_statements(report.qini)


def _qini_statements(qini: QiniResult) -> Iterator[str]:
    """Which metric the Qini counts and how ties were handled (report option qini_metric)."""
    yield (f"The Qini curve and deciles count responders of {qini.metric} (a 0/1 metric; "
           "the report option qini_metric chooses another).")
    if qini.ties:
        yield qini.ties.rstrip(".") + "."


def _segment_statement(report: Report) -> str:
    """What the segment table's correction is, read from the table's own p-values."""
    segments = report.segments
    columns = ", ".join(dict.fromkeys(s.segment.split("=", 1)[0] for s in segments))
    corrected = [s for s in segments if s.p_value_holm is not None]
    if not corrected:
        return (f"Segment breakdown ({columns}): the same comparisons within each value; "
                "exploratory, not corrected for multiplicity.")
    names = ", ".join(dict.fromkeys(s.metric for s in corrected))
    return (f"Segment breakdown ({columns}): the same comparisons within each value; "
            f"exploratory. {CORRECTION_NAMES[report.correction]} correction across the "
            f"breakdown's {len(corrected)} comparisons of {names} (every value x treatment "
            "arm x primary metric); the other metrics' p-values are not corrected.")


def _view_method_statements(report: Report, corrected: Sequence[MetricResult]
                            ) -> Iterator[str]:
    """Methods of the baseline choice, BH, the Bayesian and sequential views, Cochran's Q."""
    results = [*report.results, *report.segments]
    control = report.control
    if report.baseline is not None and (control is None or report.baseline != control.name):
        yield (f"Baseline: every arm, control included, is compared with the arm "
               f"'{report.baseline}' (differences are arm - {report.baseline}); economics "
               "and guardrails stay against the control arm.")
    if corrected and report.correction == "bh":
        names = ", ".join(dict.fromkeys(r.metric for r in corrected))
        yield (f"Benjamini-Hochberg correction (false discovery rate) across "
               f"{len(corrected)} comparisons (every arm x the primary metrics {names}); "
               "the other p-values are not corrected for multiplicity.")
    if any(r.bayesian is not None for r in results):
        yield (f"{BAYESIAN_METHOD}: chance to beat the baseline is the posterior "
               "probability that the effect goes the good way; expected loss is the "
               "average shortfall of choosing the arm if it is in fact worse (of keeping the "
               "baseline, if it is better); credible intervals are the posterior's central "
               f"{1 - report.alpha:.0%}. Given for the absolute and the relative effect."
               + _lower_is_better_sentence(results))
    if any(r.sequential is not None for r in results):
        yield ("Always-valid results: a two-sided normal-mixture confidence sequence "
               "(Waudby-Smith et al. 2024; the one the guardrails use) on each absolute "
               f"difference, tuned to be tightest at n = {REPORT_TUNING_N:,} units in the "
               "two arms compared, with its always-valid p-value. Unlike the fixed-horizon "
               "interval it stays valid however often the report is read, and is wider.")
    if report.heterogeneity:
        yield (f"Heterogeneity across segment values: {HETEROGENEITY_METHOD}, per arm and "
               "metric. Read a difference between segments only when this test rejects.")


def _lower_is_better_sentence(results: Sequence[MetricResult]) -> str:
    """" Lower is better for ..." naming the report's metrics whose direction is down."""
    lower = [key for key in dict.fromkeys(base_key(r.metric) for r in results)
             if (metric := metric_lookup(key)) is not None and metric.lower_is_better]
    if not lower:
        return ""
    names = lower[0] if len(lower) == 1 else f"{', '.join(lower[:-1])} and {lower[-1]}"
    return f" Lower is better for {names}."


def _lift_statements(results: Sequence[MetricResult]) -> Iterator[str]:
    """How the relative lifts' intervals were made, and which rows were small samples."""
    lifts = {method: ", ".join(dict.fromkeys(
        r.metric for r in results if r.comparison.rel_lift_interval_method == method))
        for method in (LIFT_DELTA, LIFT_FIELLER, LIFT_SCORE)}
    if any(lifts.values()):
        parts = [f"{words} ({lifts[method]})" for method, words in (
            (LIFT_DELTA, "a delta-method normal interval"),
            (LIFT_FIELLER, "Fieller's interval, which inverts the row's own test at every "
             f"ratio, where the control mean is imprecise (Finney's g >= {FINNEY_G_LIMIT:g}) "
             "or the delta interval would leave the possible range"),
            (LIFT_SCORE, "the Miettinen-Nurminen score interval of the risk ratio, "
             "inverting the row's score test, for small 2x2 tables")) if lifts[method]]
        yield ("Relative lift (treatment / control - 1) with " + "; ".join(parts)
               + ". A lift of a metric that cannot be negative is never below -100%.")
    small = [r for r in results if r.comparison.small_sample]
    if small:
        metrics = ", ".join(dict.fromkeys(r.metric for r in small))
        yield (f"Small samples: {len(small)} comparison(s) where the normal approximation is "
               f"doubtful at their size ({metrics}), each marked in its row.")


def _cuped_covariate(campaign: CampaignInfo, pre_period_days: int | None = None) -> str:
    if campaign.covariates:
        pairs = ", ".join(f"{metric} by {column}" for metric, column in
                          campaign.covariates.items())
        return f"adjusting each metric by its imported covariate ({pairs})"
    days = pre_period_days or campaign.window_days
    return ("adjusting each metric by its own value in the pre-period "
            f"({days} days before each customer's first exposure), pooled within-arm slope")


def _days(value: float) -> str:
    whole = math.floor(value)
    return f"{whole} day{'s' * (whole != 1)}"


def interim_sentence(interim: InterimStatus) -> str:
    """The banner of an interim report."""
    running = ("The campaign is still running, so more customers may join. "
               if interim.still_running else "")
    ends = (f"every window is complete on {_iso(interim.windows_complete_at)}"
            if interim.incomplete else "every exposed customer's window is complete")
    return (f"INTERIM RESULTS: {interim.complete:,} of {interim.exposed:,} exposed customers "
            f"have had their full {interim.window_days}-day observation window ({ends}). "
            f"{running}Customers still inside their window are counted over the days "
            f"observed so far (the latest for {_days(interim.least_observed_days)}), so "
            "adoption, revenue and cost, and their differences, can still grow; every "
            "verdict is interim.")


def _interim_method(interim: InterimStatus, *, level: str, alpha: float) -> str:
    return (f"Intention to treat, interim: every exposed customer counts in the arm they "
            f"were assigned, observed from their first exposure for {interim.window_days} "
            "days or until the report was generated, whichever comes first; "
            f"{interim.complete:,} of {interim.exposed:,} have a complete "
            f"{interim.window_days}-day window ("
            + ", ".join(f"{arm} {interim.complete_by_arm.get(arm, 0):,} of {n:,}"
                        for arm, n in interim.exposed_by_arm.items())
            + "). Exposure time does not depend on the arm, so the comparisons stay "
            "valid tests, but they measure a shorter follow-up than the goal's window. "
            f"Intervals are two-sided {level} (alpha {alpha:g}).")


def power_sentence(row: MetricPower, *, alpha: float) -> str:
    """The banner of a comparison underpowered for the goal's target uplift."""
    effect = row.effect
    target = f"{row.target * 100:.2g} points" if row.target is not None else "its target"
    power = f"{effect.power:.0%} power, alpha {alpha:g}"
    sizes = f"n = {effect.n_treatment:,} against {effect.n_control:,} in control"
    if effect.mde is None:
        detect = f"cannot detect any effect yet ({effect.reason})"
    else:
        detect = (f"can only detect a difference in {row.metric} of {effect.mde * 100:.2g} "
                  f"points or more")
    return (f"UNDERPOWERED: arm '{row.arm}' {detect} ({power}, {sizes}), but the goal "
            f"targets {target}. A result that is not significant here is not evidence that "
            "the incentive has no effect.")


def _power_methods(report: Report) -> Iterator[str]:
    if not report.power:
        return
    methods = dict.fromkeys(row.effect.method for row in report.power)
    metrics = ", ".join(dict.fromkeys(row.metric for row in report.power))
    power = report.power[0].effect.power
    yield (f"Power after the fact ({metrics}): the minimum detectable effect of each "
           f"treatment arm at the sample it achieved, {power:.0%} power, two-sided alpha "
           f"{report.alpha:g}; " + "; ".join(methods) + "."
           + (" Flagged as underpowered when it exceeds the goal's target uplift."
              if any(row.target is not None for row in report.power) else ""))


def _cap_methods(report: Report) -> Iterator[str]:
    if not report.caps:
        return
    from analytics.exports import format_money

    currency = report.campaign.currency
    parts = []
    for cap in report.caps:
        if cap.cap_minor is None:
            parts.append(f"{cap.metric}: no customer had a positive value, nothing capped")
            continue
        how = (f"the {cap.percentile:g}th percentile of the {cap.positive_n:,} positive "
               "values, all arms together (linear interpolation)"
               if cap.percentile is not None else "a fixed amount")
        capped = sum(cap.capped_by_arm.values())
        parts.append(f"{cap.metric} at {format_money(cap.cap_minor, currency)} ({how}; "
                     f"{capped:,} customer{'s' * (capped != 1)} capped)")
    pre = (" The CUPED pre-period value of a capped metric is capped at the same value."
           if any(getattr(metric_lookup(cap.metric), "pre_period", False)
                  for cap in report.caps) else "")
    yield ("Outliers: per-customer values above a cap are replaced by the cap (winsorised) "
           "in the comparisons: " + "; ".join(parts) + "." + pre + " Economics and "
           "guardrails use the amounts as recorded.")


# --------------------------------------------------------------------------- building


def resolve_campaign(connection: Connection, reference: str) -> int:
    """The id of the campaign named by ``reference``: its id, or else its exact name."""
    reference = reference.strip()
    if reference.isdigit():
        found = connection.execute(select(_CAMPAIGN.c.id)
                                   .where(_CAMPAIGN.c.id == int(reference))).scalar()
        if found is not None:
            return int(found)
    found = connection.execute(select(_CAMPAIGN.c.id)
                               .where(_CAMPAIGN.c.name == reference)).scalar()
    if found is None:
        raise CampaignNotFound(f"'{reference}'" if not reference.isdigit() else reference)
    return int(found)


#: The breakdown a report shows unless asked otherwise (live campaigns).
DEFAULT_SEGMENT = "value_tier"
#: The value of a ``segment`` option that asks for no breakdown at all.
NO_SEGMENT = "none"


def choose_segment(connection: Connection, campaign_id: int,
                   requested: str | None) -> str | None:
    """The breakdown to report: ``requested``, else a sensible default, or None for none.

    Raises ValueError naming the valid choices when ``requested`` is not one of them.
    """
    names = segment_names(connection, campaign_id)
    if requested == NO_SEGMENT:
        return None
    if requested is None:
        return DEFAULT_SEGMENT if DEFAULT_SEGMENT in names else (names[0] if names else None)
    if requested not in names:
        raise ValueError(f"unknown segment '{requested}'; use one of "
                         f"{', '.join([*names, NO_SEGMENT])}")
    return requested


def build_report(connection: Connection, campaign_id: int, *, alpha: float = 0.05,
                 now: datetime | None = None, segment: str | None = None,
                 qini_score: str | None = None, qini_metric: str | None = None,
                 correction: str = "holm", baseline: str | None = None,
                 caps: Mapping[str, CapRule | str] | None = None,
                 cuped_days: int | None = None) -> Report:
    """The campaign's full report at ``now`` (default: the current time).

    Every section comes from one aggregation of the campaign's exposures and events
    (sufficient statistics per arm, and per value of ``segment`` when one is asked for:
    an arm's whole-campaign row is the sum of its segment rows): results, economics,
    guardrails and the segment breakdown. ``segment`` is one of
    :func:`analytics.segments.segment_names`; ``qini_score`` names a numeric customer
    attribute (for an imported experiment: its ``--score`` column) for the
    uplift-by-decile table and Qini curve, and ``qini_metric`` the 0/1 metric that curve
    counts (default: adoption, or an imported experiment's first binary metric).

    ``correction`` ('holm' or 'bh') is the multiplicity correction the tables use;
    ``baseline`` names the arm every other arm is compared with (None: the control arm).

    ``caps`` (metric of :data:`analytics.queries.CAPPABLE_METRICS` -> rule, or its text
    as :func:`parse_caps` reads it) caps those
    money metrics per customer in the comparisons (:class:`AppliedCap`); ``cuped_days``
    sets the CUPED pre-period (default: as long as the goal's window). Both are for live
    campaigns; :class:`ReportOptionError` (a ValueError) names a bad one.

    A live campaign whose exposed customers have not all had their whole window at
    ``now``, or that is still running, gets :attr:`Report.interim`; every report gets the
    minimum detectable effect of each treatment arm on each primary metric
    (:attr:`Report.power`).

    Raises :class:`campaigns.errors.CampaignNotFound` for an unknown id, ValueError
    for alpha outside (0, 1), an unknown segment, correction or baseline arm, and
    :class:`analytics.uplift.QiniOptionError` (a ValueError naming the option) for a
    Qini score or metric the campaign does not have. A live campaign nobody has been
    exposed to yet gets an empty result list and an untested SRM check rather than an
    error.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1 (got {alpha})")
    check_correction(correction)
    caps = parse_caps(caps or {})
    generated_at = (now or utcnow()).astimezone(UTC)
    campaign = campaign_info(connection, campaign_id)
    if baseline is not None:
        choose_baseline(arm_names(connection, campaign_id), baseline)
    live = campaign.origin == CampaignOrigin.LIVE.value
    try:
        check_pre_period_days(cuped_days)
    except ValueError as error:
        raise ReportOptionError("cuped_days", str(error)) from None
    if not live:
        if cuped_days is not None:
            raise ReportOptionError("cuped_days", "an imported experiment's CUPED uses its "
                                    "imported covariate columns; there is no pre-period to "
                                    "set")
        if caps:
            name = next(iter(caps))
            raise ReportOptionError(f"cap_{name}", "capping applies to a live campaign's "
                                    "money metrics; an imported experiment has none")
    applied_caps: list[AppliedCap] = []
    if segment is not None:
        segment = choose_segment(connection, campaign_id, segment)
    sections: dict[str, Any] = {}
    daily: DailyAdoption | None = None
    if live and not _has_exposures(connection, campaign_id):
        arm_rows: list[dict[str, Any]] = []
        results: list[MetricResult] = []
        srm = SrmResult(p_value=None, chi2=None, flagged=False, reason="no units assigned yet")
    else:
        live_rows: list[dict[str, Any]] | None = None
        if live:
            applied_caps = _resolve_caps(connection, campaign_id, campaign, caps)
            # One pass over the exposures and events: every statistic and the timeline.
            live_rows, daily = arm_statistics_and_adoption(
                connection, campaign_id, segment=segment, pre_period_days=cuped_days,
                caps={cap.metric: cap.cap_minor for cap in applied_caps
                      if cap.cap_minor is not None})
        if segment is not None:
            outcome, sections["segments"] = campaign_and_segment_results(
                connection, campaign_id, segment, alpha=alpha, rows=live_rows,
                baseline=baseline)
            sections["heterogeneity"] = segment_heterogeneity(sections["segments"])
        elif live_rows is not None:
            outcome = CampaignResults(campaign_id=campaign_id, arms=live_rows,
                                      results=compare_arms(live_rows, alpha=alpha,
                                                           baseline=baseline),
                                      srm=sample_ratio(connection, campaign_id, live_rows))
        else:
            outcome = campaign_results(connection, campaign_id, alpha=alpha,
                                       baseline=baseline)
        arm_rows, results, srm = outcome.arms, outcome.results, outcome.srm
        if live:
            # Accounting and harm are judged on the amounts as recorded, never capped.
            recorded = uncapped_rows(arm_rows)
            sections["economics"] = economics_from_rows(recorded, alpha=alpha)
            guarded = campaign.guardrails
            if guarded:
                # The same judgement the guardrail check makes before it pauses a campaign.
                sections["guardrails"] = assess_guardrails(recorded, metrics=guarded,
                                                           alpha=alpha)
            applied_caps = [_with_capped_counts(cap, arm_rows) for cap in applied_caps]
        if qini_score is not None:
            sections["qini"] = _qini_section(connection, campaign_id, score=qini_score,
                                             metric=qini_metric)
    if qini_metric is not None and qini_score is None:
        raise QiniOptionError("qini_metric", "qini_metric chooses what the Qini curve "
                              "counts: give qini_score (the score to target by) too")
    split = planned_split(connection, campaign_id)
    date_range = exposure_range(connection, campaign_id) if live else None
    arms = _arms(connection, campaign_id, arm_rows, split=split)
    return Report(
        campaign=campaign,
        generated_at=generated_at,
        alpha=alpha,
        date_range=date_range,
        arms=arms,
        srm=srm,
        results=results,
        timeline=(_timeline_points(connection, campaign_id, daily)
                  if daily is not None and arm_rows else []),
        spend=spend_timeline(connection, campaign_id, now=generated_at) if live else [],
        correction=correction,
        baseline=baseline,
        planned_split=split,
        interim=interim_status(connection, campaign_id, campaign=campaign, arms=arms,
                               date_range=date_range, now=generated_at),
        power=power_after_the_fact(results, campaign=campaign, alpha=alpha),
        caps=applied_caps,
        pre_period_days=cuped_days,
        **sections,
    )


def arm_names(connection: Connection, campaign_id: int) -> list[str]:
    """The campaign's arms in position order (control first)."""
    return list(connection.execute(select(_ARM.c.name).where(_ARM.c.campaign_id == campaign_id)
                                   .order_by(_ARM.c.position, _ARM.c.id)).scalars())


def _qini_section(connection: Connection, campaign_id: int, *, score: str,
                  metric: str | None) -> QiniResult:
    """The Qini curve and decile table, refusing a score or metric the campaign lacks."""
    if metric is None:
        names = qini_metric_names(connection, campaign_id)
        if not names:
            raise QiniOptionError("qini_score", "the Qini curve counts responders: this "
                                  "imported experiment has no binary (0/1) metric")
        metric = names[0]
    result = qini(connection, campaign_id, score, metric=metric)
    if result is None:
        raise QiniOptionError("qini_score", f"no customer of this campaign has a score "
                              f"'{score}' (a numeric customer attribute, or an imported "
                              "--score column)")
    return result


def _resolve_caps(connection: Connection, campaign_id: int, campaign: CampaignInfo,
                  caps: Mapping[str, CapRule]) -> list[AppliedCap]:
    """Each cap in minor units: a fixed amount converted from major units, a percentile
    computed by the database among the positive values."""
    from analytics.exports import currency_exponent
    from analytics.queries import CAPPABLE_METRICS

    applied: list[AppliedCap] = []
    for metric, rule in caps.items():
        if metric not in CAPPABLE_METRICS:
            raise ReportOptionError(f"cap_{metric}", "only the money metrics "
                                    f"{', '.join(CAPPABLE_METRICS)} can be capped")
        if rule.amount is not None:
            minor = rule.amount.scaleb(currency_exponent(campaign.currency))
            value = int(minor) if minor == minor.to_integral_value() else float(minor)
            applied.append(AppliedCap(metric=metric, rule=str(rule), percentile=None,
                                      cap_minor=value, positive_n=None))
            continue
        assert rule.percentile is not None
        cap, positive = positive_percentile(connection, goal_window(connection, campaign_id),
                                            metric, rule.percentile)
        applied.append(AppliedCap(metric=metric, rule=str(rule), percentile=rule.percentile,
                                  cap_minor=cap, positive_n=positive))
    return applied


def _with_capped_counts(cap: AppliedCap, rows: Sequence[Mapping[str, Any]]) -> AppliedCap:
    key = f"{cap.metric}_capped_n"
    counts = {row["arm"]: int(row[key]) for row in rows if key in row}
    return replace(cap, capped_by_arm=counts)


def interim_status(connection: Connection, campaign_id: int, *, campaign: CampaignInfo,
                   arms: Sequence[ArmInfo], date_range: DateRange | None,
                   now: datetime) -> InterimStatus | None:
    """The interim status of a live campaign at ``now`` (None: its results are final).

    Interim while some exposed customer's window has not ended, or while the campaign is
    running or paused and so may expose more customers.
    """
    if (campaign.origin != CampaignOrigin.LIVE.value or date_range is None
            or campaign.window_days is None):
        return None
    window = timedelta(days=campaign.window_days)
    windows_complete_at = date_range.last_exposure + window
    still_running = campaign.status in (CampaignStatus.RUNNING.value,
                                        CampaignStatus.PAUSED.value)
    if now >= windows_complete_at and not still_running:
        return None
    complete = complete_windows(connection, campaign_id, window_days=campaign.window_days,
                                as_of=now)
    ids: dict[str, int] = {name: arm_id for name, arm_id in connection.execute(
        select(_ARM.c.name, _ARM.c.id).where(_ARM.c.campaign_id == campaign_id))}
    observed = min(now - date_range.last_exposure, window).total_seconds() / 86_400
    return InterimStatus(
        as_of=now, window_days=campaign.window_days, exposed=sum(arm.n for arm in arms),
        complete=sum(complete.values()),
        exposed_by_arm={arm.name: arm.n for arm in arms},
        complete_by_arm={arm.name: complete.get(ids[arm.name], 0) for arm in arms},
        still_running=still_running, windows_complete_at=windows_complete_at,
        least_observed_days=max(observed, 0.0))


def power_after_the_fact(results: Sequence[MetricResult], *, campaign: CampaignInfo,
                         alpha: float) -> list[MetricPower]:
    """The minimum detectable effect of every treatment arm on every primary metric (the
    Holm-corrected ones), each against the goal's target uplift when it is the goal's
    metric."""
    goal_metric = GOAL_METRICS.get(campaign.goal_metric or "")
    out = []
    for result in results:
        if result.segment != "all" or not (result.metric in PRIMARY_METRICS
                                           or result.p_value_holm is not None):
            continue
        target = campaign.target_uplift if result.metric == goal_metric else None
        out.append(MetricPower(arm=result.arm, metric=result.metric,
                               effect=detectable_effect(result.comparison, alpha=alpha),
                               target=target))
    return out


def campaign_info(connection: Connection, campaign_id: int) -> CampaignInfo:
    target = _CHANNEL.alias("target")
    row = connection.execute(
        select(_CAMPAIGN, _GOAL.c.name.label("goal_name"), _GOAL.c.window_days,
               _GOAL.c.target_uplift, _GOAL.c.metric.label("goal_metric"),
               _STAGE.c.name.label("stage_name"), target.c.name.label("target_name"))
        .select_from(_CAMPAIGN.outerjoin(_GOAL, _GOAL.c.id == _CAMPAIGN.c.goal_id)
                     .outerjoin(_STAGE, _STAGE.c.id == _GOAL.c.stage_id)
                     .outerjoin(target, target.c.id == _GOAL.c.target_channel_id))
        .where(_CAMPAIGN.c.id == campaign_id)
    ).mappings().first()
    if row is None:
        raise CampaignNotFound(campaign_id)
    covariates: dict[str, str] = {}
    if row["origin"] == CampaignOrigin.IMPORTED.value:
        covariates = {name: column for name, column in connection.execute(
            select(_EXPERIMENT_METRIC.c.name, _EXPERIMENT_METRIC.c.covariate_column)
            .where(_EXPERIMENT_METRIC.c.campaign_id == campaign_id,
                   _EXPERIMENT_METRIC.c.covariate_column.is_not(None))
            .order_by(_EXPERIMENT_METRIC.c.position, _EXPERIMENT_METRIC.c.id))}
    return CampaignInfo(
        id=row["id"], name=row["name"], status=row["status"], origin=row["origin"],
        goal=row["goal_name"], stage=row["stage_name"], target_channel=row["target_name"],
        currency=row["currency"], budget_minor=row["budget_minor"],
        spent_minor=row["spent_minor"], starts_at=row["starts_at"], ends_at=row["ends_at"],
        pause_reason=row["pause_reason"], window_days=row["window_days"],
        covariates=covariates,
        guardrails=tuple(metric for metric in GUARDRAILS if metric in (row["guardrails"] or [])),
        target_uplift=(float(row["target_uplift"]) if row["target_uplift"] is not None
                       else None),
        goal_metric=row["goal_metric"])


def _has_exposures(connection: Connection, campaign_id: int) -> bool:
    return connection.execute(select(_ASSIGNMENT.c.id)
                              .where(_ASSIGNMENT.c.campaign_id == campaign_id)
                              .limit(1)).first() is not None


def _arms(connection: Connection, campaign_id: int,
          arm_rows: Sequence[Mapping[str, Any]], *,
          split: PlannedSplit | None = None) -> list[ArmInfo]:
    """Every configured arm with its exposed count (0 for an arm nobody landed in) and its
    planned and observed shares."""
    n_by_id = {row["arm_id"]: row["n"] for row in arm_rows if "arm_id" in row}
    n_by_name = {row["arm"]: row["n"] for row in arm_rows if "arm" in row}
    rows = connection.execute(
        select(_ARM.c.id, _ARM.c.name, _ARM.c.is_control, _ARM.c.weight,
               _INCENTIVE.c.type, _INCENTIVE.c.name.label("incentive_name"))
        .select_from(_ARM.outerjoin(_INCENTIVE, _INCENTIVE.c.id == _ARM.c.incentive_id))
        .where(_ARM.c.campaign_id == campaign_id)
        .order_by(_ARM.c.position, _ARM.c.id))
    arms = [ArmInfo(name=row.name, is_control=bool(row.is_control),
                    n=int(n_by_id.get(row.id, n_by_name.get(row.name, 0))),
                    planned_weight=int(row.weight), incentive_type=row.type,
                    incentive_name=row.incentive_name,
                    planned_share=split.share(row.id) if split is not None else None)
            for row in rows]
    total = sum(arm.n for arm in arms)
    return [replace(arm, observed_share=arm.n / total if total else None) for arm in arms]


def exposure_range(connection: Connection, campaign_id: int) -> DateRange | None:
    first, last = connection.execute(
        select(func.min(_ASSIGNMENT.c.first_exposed_at), func.max(_ASSIGNMENT.c.first_exposed_at))
        .where(_ASSIGNMENT.c.campaign_id == campaign_id)).one()
    if first is None or last is None:
        return None
    return DateRange(first_exposure=first, last_exposure=last)


# --------------------------------------------------------------------------- time series


def _utc_day(connection: Connection, column: Any) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD', in the dialect's own terms."""
    if connection.dialect.name == "postgresql":
        # The session time zone must not move a timestamp across midnight.
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)  # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS...'


def sample_days(days: Sequence[date], max_points: int = MAX_SERIES_POINTS) -> list[date]:
    """At most ``max_points`` of ``days``, evenly spaced, always keeping the last one."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    step = max(1, math.ceil(len(days) / max_points))
    return list(reversed(days[len(days) - 1::-step])) if days else []


def _day_span(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def adoption_timeline(connection: Connection, campaign_id: int, *,
                      max_points: int = MAX_SERIES_POINTS) -> list[TimelinePoint]:
    """Cumulative exposures and adoptions by UTC day and arm.

    A customer adopts on the day of their first interaction on the goal's target channel
    at its stage within their window, the same definition as the ``adoption`` metric (and
    from the same aggregation, :func:`analytics.queries.arm_statistics_and_adoption`), so
    once every window has closed the last point of each arm equals that arm's adoption
    count. Only (arm, day) counts leave the database.
    """
    _, daily = arm_statistics_and_adoption(connection, campaign_id)
    return _timeline_points(connection, campaign_id, daily, max_points=max_points)


def _timeline_points(connection: Connection, campaign_id: int, daily: DailyAdoption, *,
                     max_points: int = MAX_SERIES_POINTS) -> list[TimelinePoint]:
    exposures, adoptions = daily.exposed, daily.adopted
    if not exposures:
        return []
    days = [day for _, day in (*exposures, *adoptions)]
    span = _day_span(min(days), max(days))
    kept = set(sample_days(span, max_points))
    # (dict(result) would take the Result's keys() for a mapping's)
    arm_names = {arm_id: name for arm_id, name in connection.execute(
        select(_ARM.c.id, _ARM.c.name).where(_ARM.c.campaign_id == campaign_id)
        .order_by(_ARM.c.position, _ARM.c.id))}
    points: list[TimelinePoint] = []
    for arm_id, arm_name in arm_names.items():
        exposed = adopted_so_far = 0
        for day in span:
            exposed += exposures.get((arm_id, day), 0)
            adopted_so_far += adoptions.get((arm_id, day), 0)
            if day in kept:
                points.append(TimelinePoint(arm=arm_name, day=day, exposed=exposed,
                                            adopted=adopted_so_far))
    return points


def spend_timeline(connection: Connection, campaign_id: int, *, now: datetime,
                   max_points: int = MAX_SERIES_POINTS) -> list[SpendPoint]:
    """Cumulative incentive cost charged to the budget by UTC day.

    A redemption is charged on the day it was made and, if rolled back, refunded on the
    day of the rollback, as the campaign's ``spent_minor`` is; so the last point equals
    ``spent_minor``. The series runs from the campaign's start (or its first charge) to
    its end or ``now``, whichever is earlier (or its last change, if later); a campaign
    that never started and never spent has none.
    """
    r = _REDEMPTION
    charged_day = _utc_day(connection, r.c.created_at)
    refunded_day = _utc_day(connection, r.c.rolled_back_at)
    changes: dict[date, int] = defaultdict(int)
    for day, amount in connection.execute(
            select(charged_day, func.sum(r.c.cost_minor))
            .where(r.c.campaign_id == campaign_id).group_by(charged_day)):
        changes[date.fromisoformat(day)] += int(amount)
    for day, amount in connection.execute(
            select(refunded_day, func.sum(r.c.cost_minor))
            .where(r.c.campaign_id == campaign_id,
                   r.c.status == RedemptionStatus.ROLLED_BACK.value,
                   r.c.rolled_back_at.is_not(None))
            .group_by(refunded_day)):
        changes[date.fromisoformat(day)] -= int(amount)
    starts_at, ends_at = connection.execute(
        select(_CAMPAIGN.c.starts_at, _CAMPAIGN.c.ends_at)
        .where(_CAMPAIGN.c.id == campaign_id)).one()
    bounds = list(changes)
    if starts_at is not None and starts_at <= now:
        bounds += [starts_at.date(), min(ends_at or now, now).date()]
    if not bounds:
        return []
    span = _day_span(min(bounds), max(bounds))
    kept = set(sample_days(span, max_points))
    points: list[SpendPoint] = []
    spent = 0
    for day in span:
        spent += changes.get(day, 0)
        if day in kept:
            points.append(SpendPoint(day=day, spent_minor=spent))
    return points
