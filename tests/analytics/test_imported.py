"""Results of imported experiments, checked against statsmodels / scipy on the raw CSV rows.

The acceptance data set is Artea's coupon experiment (``../shared/data``): 5,000 customers,
``test_coupon`` 0 (control) or 1. ``trans_after`` counts transactions (0 to 5, so it is
imported as *continuous*: a binary import is refused, see tests/seeds), and the binary
outcome "bought at least once" is derived from it for the two-proportion test.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection
from sqlmodel import Session
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.proportion import confint_proportions_2indep

from analytics.imported import (
    imported_results,
    imported_segment_names,
    imported_statistics,
    is_imported,
)
from analytics.reports import CampaignResults, MetricResult, campaign_results, planned_split
from analytics.stats import Comparison
from campaigns.errors import CampaignNotFound
from campaigns.models import Campaign
from seeds.experiments import ExperimentImportRejected, build_spec, import_experiment
from tests.builders import make_campaign
from tests.datafiles import shared_data

ARTEA = shared_data("artea-a_b-experiment.csv")
SEGMENT = "channel_acq"
ALPHA = 0.05
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Imported:
    connection: Connection
    counts_campaign: int  # trans_after, revenue_after: continuous, with covariates
    bought_campaign: int  # bought (derived, binary), with a covariate
    raw: pd.DataFrame
    # Results computed once: the tests only read them.
    counts: CampaignResults
    counts_by_segment: CampaignResults
    bought: CampaignResults
    bought_by_segment: CampaignResults


@pytest.fixture(scope="module")
def artea(engine: Engine) -> Iterator[Imported]:
    """Artea imported twice (file and data frame) in one transaction rolled back at the end."""
    assert ARTEA.is_file(), f"the acceptance data set is missing: {ARTEA}"
    raw = pd.read_csv(ARTEA, encoding="utf-8-sig")
    raw["bought"] = (raw["trans_after"] > 0).astype(int)
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        counts = import_experiment(session, ARTEA, build_spec(
            name="Artea coupon", arm_column="test_coupon", control="0",
            metrics=["trans_after:continuous", "revenue_after:continuous"],
            covariates=["revenue_after=num_past_purch", "trans_after=spent_last_purchase"],
            segments=[SEGMENT, "shopping_cart"], id_column="id"), actor="test")
        text = pd.read_csv(ARTEA, encoding="utf-8-sig", dtype=str)
        text["bought"] = raw["bought"].astype(str)
        bought = import_experiment(session, text, build_spec(
            name="Artea bought", arm_column="test_coupon", control="0",
            metrics=["bought:binary"], covariates=["bought=num_past_purch"],
            segments=[SEGMENT], id_column="id"), actor="test")
        session.flush()
        yield Imported(
            connection, counts.campaign_id, bought.campaign_id, raw,
            counts=campaign_results(connection, counts.campaign_id),
            counts_by_segment=imported_results(connection, counts.campaign_id, segment=SEGMENT),
            bought=campaign_results(connection, bought.campaign_id),
            bought_by_segment=imported_results(connection, bought.campaign_id, segment=SEGMENT))
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def scratch(artea: Imported) -> Iterator[Session]:
    """A session on the module's connection whose work is undone after the test.

    It shares the connection (in a savepoint) because the module's transaction holds
    SQLite's write lock: a second connection could not write until the module ends.
    """
    savepoint = artea.connection.begin_nested()
    session = Session(bind=artea.connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        savepoint.rollback()


def close(actual: float | None, expected: float) -> bool:
    return actual is not None and abs(actual - expected) < TOLERANCE * max(1.0, abs(expected))


def by_key(results: CampaignResults) -> dict[tuple[str, str], MetricResult]:
    return {(r.metric, r.segment): r for r in results.results}


def groups(raw: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """("all", every row) and one (value, rows) per value of the segment column."""
    return [("all", raw)] + [(str(value), rows) for value, rows in raw.groupby(SEGMENT)]


def arms(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(control values, treatment values) of one column."""
    return (rows.loc[rows.test_coupon == 0, column].to_numpy(float),
            rows.loc[rows.test_coupon == 1, column].to_numpy(float))


def assert_welch(comparison: Comparison, control: np.ndarray, treatment: np.ndarray) -> None:
    """Welch's t test of scipy on the raw values, interval included."""
    test = sps.ttest_ind(treatment, control, equal_var=False)
    low, high = test.confidence_interval(confidence_level=1 - ALPHA)
    expected = {"control_mean": control.mean(), "treatment_mean": treatment.mean(),
                "diff": treatment.mean() - control.mean(), "statistic": test.statistic,
                "df": test.df, "p_value": test.pvalue, "diff_ci_low": low, "diff_ci_high": high,
                "rel_lift": treatment.mean() / control.mean() - 1}
    for field, value in expected.items():
        assert close(getattr(comparison, field), float(value)), (field, comparison, value)


class TestContinuousMetrics:
    @pytest.mark.parametrize("metric", ["trans_after", "revenue_after"])
    def test_welch_matches_scipy_overall_and_per_segment(self, artea: Imported, metric: str
                                                         ) -> None:
        results = by_key(artea.counts_by_segment) | by_key(artea.counts)
        for segment, rows in groups(artea.raw):
            result = results[(metric, segment)]
            assert result.arm == "1"
            assert_welch(result.comparison, *arms(rows, metric))

    @pytest.mark.parametrize(("metric", "covariate"), [("revenue_after", "num_past_purch"),
                                                       ("trans_after", "spent_last_purchase")])
    def test_cuped_matches_ols_overall_and_per_segment(self, artea: Imported, metric: str,
                                                       covariate: str) -> None:
        results = by_key(artea.counts_by_segment) | by_key(artea.counts)
        for segment, rows in groups(artea.raw):
            result = results[(f"{metric}_cuped", segment)]
            assert_cuped(result, rows, metric=metric, covariate=covariate)


def assert_cuped(result: MetricResult, rows: pd.DataFrame, *, metric: str, covariate: str
                 ) -> None:
    """CUPED equals OLS y ~ 1 + treatment + x: same effect, theta = the slope of x.

    The adjusted per-unit values y - theta (x - mean x) then go through scipy's Welch
    test, and the variance reduction is the share of within-arm variance they remove.
    """
    y = rows[metric].to_numpy(float)
    x = rows[covariate].to_numpy(float)
    treated = rows.test_coupon.to_numpy(float)
    ols = sm.OLS(y, sm.add_constant(np.column_stack([treated, x]))).fit()
    effect, theta = float(ols.params[1]), float(ols.params[2])
    comparison = result.comparison
    assert close(comparison.diff, effect), (comparison.diff, effect)
    adjusted = y - theta * (x - x.mean())
    is_treated = treated == 1
    assert_welch(comparison, adjusted[~is_treated], adjusted[is_treated])

    def within_ss(values: np.ndarray) -> float:
        return sum(float(((values[group] - values[group].mean()) ** 2).sum())
                   for group in (is_treated, ~is_treated))

    assert close(result.variance_reduction, 1 - within_ss(adjusted) / within_ss(y))
    assert result.variance_reduction is not None and result.variance_reduction > 0


class TestBinaryMetric:
    def test_two_proportions_match_statsmodels_overall_and_per_segment(self, artea: Imported
                                                                       ) -> None:
        results = by_key(artea.bought_by_segment) | by_key(artea.bought)
        for segment, rows in groups(artea.raw):
            comparison = results[("bought", segment)].comparison
            control, treatment = arms(rows, "bought")
            count = [treatment.sum(), control.sum()]
            nobs = [treatment.size, control.size]
            # One test per row: the unpooled Wald z test, as the interval.
            z_stat, p_value = sm_proportion.test_proportions_2indep(
                count[0], nobs[0], count[1], nobs[1], method="wald", compare="diff")
            low, high = confint_proportions_2indep(count[0], nobs[0], count[1], nobs[1],
                                                   method="wald", compare="diff", alpha=ALPHA)
            pc, pt = control.mean(), treatment.mean()
            half = sps.norm.isf(ALPHA / 2) * math.sqrt(pc * (1 - pc) / control.size
                                                       + pt * (1 - pt) / treatment.size)
            assert close(low, pt - pc - half) and close(high, pt - pc + half)  # by hand too
            expected = {"control_mean": pc, "treatment_mean": pt, "diff": pt - pc,
                        "statistic": z_stat, "p_value": p_value, "diff_ci_low": low,
                        "diff_ci_high": high, "rel_lift": pt / pc - 1}
            for field, value in expected.items():
                assert close(getattr(comparison, field), float(value)), (segment, field)

    def test_cuped_on_a_binary_outcome(self, artea: Imported) -> None:
        results = by_key(artea.bought)
        assert_cuped(results[("bought_cuped", "all")], artea.raw, metric="bought",
                     covariate="num_past_purch")


class TestFamilyAndSampleRatio:
    def test_holm_across_arms_and_metrics_within_each_segment(self, artea: Imported) -> None:
        found = by_key(artea.counts_by_segment)
        for segment, rows in groups(artea.raw)[1:]:
            raw_p = [sps.ttest_ind(*arms(rows, metric)[::-1], equal_var=False).pvalue
                     for metric in ("trans_after", "revenue_after")]
            # Holm for two tests, by hand: the smaller p doubled, the larger never below it.
            smaller = min(1.0, 2 * min(raw_p))
            expected = [smaller if p == min(raw_p) else max(smaller, p) for p in raw_p]
            for metric, p_holm in zip(("trans_after", "revenue_after"), expected, strict=True):
                assert close(found[(metric, segment)].p_value_holm, float(p_holm))
            # CUPED rows re-estimate the same hypotheses: not counted twice.
            assert found[("revenue_after_cuped", segment)].p_value_holm is None

    def test_srm_against_an_equal_split(self, artea: Imported) -> None:
        srm = artea.counts.srm
        counts = artea.raw.test_coupon.value_counts().sort_index().to_numpy()
        expected = sps.chisquare(counts)
        assert close(srm.chi2, float(expected.statistic))
        assert close(srm.p_value, float(expected.pvalue))
        assert srm.flagged is False

    def test_one_result_per_arm_metric_and_segment_value(self, artea: Imported) -> None:
        results = artea.counts_by_segment
        values = [str(v) for v in sorted(artea.raw[SEGMENT].unique())]
        assert [r.segment for r in results.results] == [v for v in values for _ in range(4)]
        assert [r.metric for r in results.results[:4]] == [
            "trans_after", "trans_after_cuped", "revenue_after", "revenue_after_cuped"]
        # the same SRM as without a segment: it always covers every unit
        assert results.srm == artea.counts.srm


class TestStatistics:
    def test_sums_match_the_raw_rows(self, artea: Imported) -> None:
        rows = imported_statistics(artea.connection, artea.counts_campaign)
        assert [(r["arm"], r["is_control"], r["segment_value"]) for r in rows] == [
            ("0", True, "all"), ("1", False, "all")]
        for row, arm in zip(rows, (0, 1), strict=True):
            units = artea.raw[artea.raw.test_coupon == arm]
            y, x = units.revenue_after.to_numpy(float), units.num_past_purch.to_numpy(float)
            assert row["n"] == row["revenue_after_n"] == len(units)
            for key, value in {"revenue_after_sum": y.sum(), "revenue_after_sum_sq": y @ y,
                               "revenue_after_pre_sum": x.sum(),
                               "revenue_after_pre_sum_sq": x @ x,
                               "revenue_after_cross": x @ y}.items():
                assert close(row[key], float(value)), key

    def test_segment_names_and_natural_order(self, artea: Imported) -> None:
        assert imported_segment_names(artea.connection, artea.counts_campaign) == [
            SEGMENT, "shopping_cart"]
        rows = imported_statistics(artea.connection, artea.counts_campaign, segment=SEGMENT)
        assert [r["segment_value"] for r in rows] == [v for v in "12345" for _ in range(2)]
        assert sum(r["n"] for r in rows) == 5000

    def test_unknown_segment(self, artea: Imported) -> None:
        with pytest.raises(ValueError, match=r"unknown segment 'region'.*: channel_acq, "
                                             r"shopping_cart"):
            imported_statistics(artea.connection, artea.counts_campaign, segment="region")


class TestSmallExperiments:
    """Hand-made imports for the cases the Artea data cannot show."""

    def test_srm_uses_the_planned_split(self, scratch: Session) -> None:
        frame = pd.DataFrame({"arm": ["a"] * 200 + ["b"] * 800,
                              "spend": [str(n % 7) for n in range(1000)]})
        options = {"arm_column": "arm", "control": "a", "metrics": ["spend:continuous"]}
        planned = import_experiment(scratch, frame, build_spec(
            name="planned", weights="a=20,b=80", **options))
        connection = scratch.connection()
        srm = campaign_results(connection, planned.campaign_id).srm
        assert srm.flagged is False
        assert close(srm.chi2, float(sps.chisquare([200, 800], [200, 800]).statistic))
        # 190 / 810 against the planned 20 / 80, not against an equal split
        skewed = frame.assign(arm=["a"] * 190 + ["b"] * 810)
        off = import_experiment(scratch, skewed, build_spec(
            name="off plan", weights="a=20,b=80", **options))
        srm = campaign_results(connection, off.campaign_id).srm
        expected = sps.chisquare([190, 810], [200, 800])
        assert close(srm.chi2, float(expected.statistic))
        assert close(srm.p_value, float(expected.pvalue))

    def test_unequal_arms_without_weights_are_refused(self, scratch: Session) -> None:
        frame = pd.DataFrame({"arm": ["a"] * 200 + ["b"] * 800,
                              "spend": [str(n % 7) for n in range(1000)]})
        with pytest.raises(ExperimentImportRejected) as refused:
            import_experiment(scratch, frame, build_spec(
                name="unknown", arm_column="arm", control="a", metrics=["spend:continuous"]))
        [error] = refused.value.errors
        assert error.loc == ("--weights",)
        assert "clearly unequal ('a' 200, 'b' 800 units" in error.msg
        assert "--weights 'a=20,b=80'" in error.msg
        assert scratch.execute(select(Campaign.id).where(Campaign.name == "unknown")
                               ).first() is None

    def test_near_equal_arms_without_weights_assume_an_equal_split(self, scratch: Session
                                                                   ) -> None:
        frame = pd.DataFrame({"arm": ["a"] * 480 + ["b"] * 520,
                              "spend": [str(n % 7) for n in range(1000)]})
        result = import_experiment(scratch, frame, build_spec(
            name="equal", arm_column="arm", control="a", metrics=["spend:continuous"]))
        assert result.planned_weights is None
        split = planned_split(scratch.connection(), result.campaign_id)
        assert split.assumed is True and "ASSUMED" in split.source
        srm = campaign_results(scratch.connection(), result.campaign_id).srm
        assert close(srm.chi2, float(sps.chisquare([480, 520]).statistic))

    def test_an_arm_missing_from_a_segment(self, scratch: Session) -> None:
        frame = pd.DataFrame({"arm": ["a", "a", "b", "b", "b", "b"],
                              "won": ["0", "1", "1", "1", "0", "1"],
                              "region": ["north", "north", "north", "north", "south", "south"]})
        result = import_experiment(scratch, frame, build_spec(
            name="gap", arm_column="arm", control="a", metrics=["won:binary"],
            segments=["region"]))
        rows = imported_statistics(scratch.connection(), result.campaign_id, segment="region")
        assert [(r["arm"], r["segment_value"], r["n"], r["won_sum"]) for r in rows] == [
            ("a", "north", 2, 1.0), ("b", "north", 2, 2.0), ("a", "south", 0, 0.0),
            ("b", "south", 2, 1.0)]
        south = by_key(imported_results(scratch.connection(), result.campaign_id,
                                        segment="region"))[("won", "south")]
        assert south.comparison.p_value is None
        assert south.comparison.reason == "an arm has no units: nothing to compare"
        assert south.p_value_holm is None

    def test_live_campaigns_are_not_imported_experiments(self, scratch: Session,
                                                         artea: Imported) -> None:
        campaign = make_campaign(scratch)
        assert campaign.id is not None
        with pytest.raises(ValueError, match="not an imported experiment"):
            imported_results(scratch.connection(), campaign.id)
        # what campaign_results dispatches on
        assert is_imported(scratch.connection(), campaign.id) is False
        assert is_imported(scratch.connection(), artea.counts_campaign) is True
        with pytest.raises(CampaignNotFound):
            campaign_results(scratch.connection(), campaign.id + 1000)
