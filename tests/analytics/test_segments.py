"""Targeting figures against independent computations on the raw per-customer rows.

The synthetic campaign below has known structure: the first treatment arm's uplift grows
with the customer attribute ``score`` (and is larger for gold customers), the second
arm's uplift is flat, and ``noise`` is a score unrelated to anything. Every figure of
:mod:`analytics.segments` is recomputed here from raw rows with statsmodels, scipy or
numpy: per-segment tests, Holm over the whole breakdown, NTILE deciles, the Qini curve.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from sklift import metrics as sklift_metrics
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlmodel import Session
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.multitest import multipletests

from analytics.queries import SEGMENT_COLUMNS, arm_statistics, customer_metrics, goal_window
from analytics.reports import campaign_results
from analytics.segments import (
    MISSING_VALUE,
    QiniResult,
    campaign_and_segment_results,
    collapse_segments,
    qini,
    segment_results,
)
from analytics.uplift import QiniOptionError
from campaigns.errors import CampaignNotFound
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    Channel,
    ChannelEvent,
    Conversion,
    Customer,
    ExperimentMetric,
    ExperimentSegment,
    ExperimentUnit,
    ExperimentValue,
    Stage,
)
from campaigns.services.audit import record_audit
from tests.builders import control_arm, make_campaign, make_goal, percent_arm

START = datetime(2026, 3, 2, tzinfo=UTC)
Z_975 = float(sps.norm.isf(0.025))
TOLERANCE = 1e-9
ARMS = ("control", "ten percent", "twenty percent")
TIERS = ("bronze", "silver", "gold")


# ----------------------------------------------------------------------- test data


@dataclass(frozen=True)
class World:
    """A campaign written into the module's transaction, and its raw rows for references."""

    connection: Connection
    campaign_id: int
    raw: pd.DataFrame


def simulate(rng: np.random.Generator, customers: int) -> pd.DataFrame:
    """One row per customer: arm, attributes and what they did (the true model is here).

    Adoption: 0.20 (+0.15 for customers who used the web before); uplift +0.50 x score in
    "ten percent", a flat +0.10 in "twenty percent", +0.15 more for gold customers in both.
    """
    arm = rng.choice(len(ARMS), size=customers, p=[0.34, 0.33, 0.33])
    score = np.round(rng.uniform(0, 1, customers), 2)  # rounded: ties across deciles
    tier = rng.choice(len(TIERS), size=customers, p=[0.5, 0.3, 0.2])
    pre_adopted = rng.uniform(size=customers) < 0.15
    uplift = np.select([arm == 1, arm == 2], [0.50 * score, np.full(customers, 0.10)], 0.0)
    uplift = uplift + np.where((arm > 0) & (tier == 2), 0.15, 0.0)
    adopted = rng.uniform(size=customers) < 0.20 + 0.15 * pre_adopted + uplift
    return pd.DataFrame({
        "arm": arm, "score": score, "noise": np.round(rng.uniform(0, 1, customers), 3),
        "has_score": rng.uniform(size=customers) > 0.05,
        "tier": tier, "region": rng.choice(["north", "south"], size=customers),
        "is_new": rng.uniform(size=customers) < 0.3,
        "pre_adopted": pre_adopted, "adopted": adopted,
        "calls": rng.poisson(1.5 - 0.5 * adopted), "adopt_day": rng.uniform(0, 25, customers),
        "converted": rng.uniform(size=customers) < 0.10 + 0.05 * adopted,
        "revenue": rng.integers(1_000, 20_000, customers),
    })


def build_world(session: Session, *, customers: int = 6_000, seed: int = 11) -> int:
    """A live campaign with ``customers`` exposed customers, written with Core inserts."""
    goal = make_goal(session)
    campaign = make_campaign(session, name="Targeting", goal=goal, arms=[
        control_arm(weight=34), percent_arm("ten percent", weight=33),
        percent_arm("twenty percent", weight=33, percent_bp=2000)])
    connection = session.connection()
    arm_ids = {name: arm_id for arm_id, name in connection.execute(
        select(Arm.id, Arm.name).where(Arm.campaign_id == campaign.id))}
    channel = dict(connection.execute(select(Channel.key, Channel.id)).all())
    stage = connection.execute(select(Stage.id).where(Stage.key == "after_sale")).scalar_one()
    frame = simulate(np.random.default_rng(seed), customers)
    # Three customers in a region of their own, all in control: the treatment cells are empty.
    frame.loc[:2, ["arm", "region"]] = [0, "islands"]

    def attributes(row: Any) -> dict[str, Any]:
        return {"score": float(row.score), "noise": float(row.noise)} if row.has_score else {}

    connection.execute(insert(Customer), [
        {"external_id": f"T{i}", "value_tier": TIERS[row.tier], "region": row.region,
         "is_new": bool(row.is_new), "attributes": attributes(row), "created_at": START}
        for i, row in enumerate(frame.itertuples())])
    ids = dict(connection.execute(select(Customer.external_id, Customer.id)
                                  .where(Customer.external_id.like("T%"))).all())
    frame["customer_id"] = [ids[f"T{i}"] for i in range(customers)]
    frame["exposed_at"] = [START + timedelta(minutes=7 * i) for i in range(customers)]
    connection.execute(insert(Assignment), [
        {"campaign_id": campaign.id, "customer_id": row.customer_id,
         "arm_id": arm_ids[ARMS[row.arm]], "first_exposed_at": row.exposed_at}
        for row in frame.itertuples()])
    connection.execute(insert(ChannelEvent), list(events(frame, channel, stage)))
    connection.execute(insert(Conversion), [
        {"client_event_id": f"cv{row.customer_id}", "customer_id": row.customer_id,
         "kind": "purchase", "occurred_at": row.exposed_at + timedelta(days=3),
         "revenue_minor": int(row.revenue)}
        for row in frame.itertuples() if row.converted])
    analyze(connection)
    assert campaign.id is not None
    return campaign.id


ANALYZED_TABLES = ("customer", "assignment", "channel_event", "conversion", "experiment_unit",
                   "experiment_value", "experiment_segment")


def analyze(connection: Connection) -> None:
    """Give PostgreSQL's planner statistics, as autovacuum would for tables in production.

    Without them it plans the freshly filled tables as empty and the report query takes
    seconds instead of milliseconds. Only this run's tables (the schema on the search path).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"ANALYZE {', '.join(ANALYZED_TABLES)}"))


def events(frame: pd.DataFrame, channel: dict[str, int], stage: int
           ) -> Iterator[dict[str, Any]]:
    def event(row: Any, key: str, at: datetime, cost: int, n: int) -> dict[str, Any]:
        return {"client_event_id": f"e{row.customer_id}-{key}-{n}",
                "customer_id": row.customer_id, "channel_id": channel[key],
                "stage_id": stage, "kind": "interaction", "occurred_at": at,
                "cost_minor": cost}

    for row in frame.itertuples():
        if row.adopted:
            yield event(row, "web", row.exposed_at + timedelta(days=row.adopt_day), 20, 0)
        if row.pre_adopted:
            yield event(row, "web", row.exposed_at - timedelta(days=10), 20, 1)
        for n in range(row.calls):
            yield event(row, "call_centre", row.exposed_at + timedelta(days=2 + n), 700, n)


@pytest.fixture(scope="module")
def connection(engine: Engine) -> Iterator[Connection]:
    """One transaction for the whole module, rolled back at its end.

    The worlds are built once (they take seconds on PostgreSQL) and only read; the few
    tests that change a row do it in a savepoint they roll back.
    """
    connection = engine.connect()
    outer = connection.begin()
    try:
        yield connection
    finally:
        outer.rollback()
        connection.close()


def session_on(connection: Connection) -> Session:
    return Session(bind=connection, join_transaction_mode="create_savepoint",
                   expire_on_commit=False)


@pytest.fixture(scope="module")
def world(connection: Connection) -> World:
    with session_on(connection) as session:
        campaign_id = build_world(session)
        session.commit()  # releases the savepoint; the module's transaction stays open
    raw = raw_rows(connection, campaign_id).rename(columns={"customer_id": "unit_id"})
    return World(connection=connection, campaign_id=campaign_id, raw=raw)


@pytest.fixture(scope="module")
def experiment(connection: Connection) -> World:
    with session_on(connection) as session:
        campaign_id, raw = build_imported(session)
        session.commit()
    return World(connection=connection, campaign_id=campaign_id, raw=raw)


@contextmanager
def rolled_back(connection: Connection) -> Iterator[None]:
    savepoint = connection.begin_nested()
    try:
        yield
    finally:
        savepoint.rollback()


def raw_rows(connection: Connection, campaign_id: int) -> pd.DataFrame:
    """Per-customer metrics and attributes: the raw rows the references are computed on."""
    per = customer_metrics(connection, goal_window(connection, campaign_id))
    rows = pd.DataFrame(connection.execute(select(per)).mappings().all())
    arms = dict(connection.execute(select(Arm.id, Arm.name)).all())
    attributes = dict(connection.execute(select(Customer.id, Customer.attributes)).all())
    rows["arm"] = rows.arm_id.map(arms)
    rows["score"] = [attributes[c].get("score") for c in rows.customer_id]
    rows["noise"] = [attributes[c].get("noise") for c in rows.customer_id]
    return rows


# ------------------------------------------------------------------ segment results


def welch(treatment: np.ndarray, control: np.ndarray) -> tuple[float, float, float, float]:
    """(diff, CI low, CI high, p) from scipy's Welch test on raw values."""
    test = sps.ttest_ind(treatment, control, equal_var=False)
    interval = test.confidence_interval(0.95)
    return (float(treatment.mean() - control.mean()), float(interval.low),
            float(interval.high), float(test.pvalue))


def delta_ratio(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Σx/Σy and its delta-method variance from raw per-customer numerators/denominators."""
    ratio = x.sum() / y.sum()
    covariance = np.cov(x, y, ddof=1)
    unit = covariance[0, 0] - 2 * ratio * covariance[0, 1] + ratio**2 * covariance[1, 1]
    return float(ratio), float(unit / (len(x) * y.mean() ** 2))


class TestSegmentResults:
    def test_cells_match_raw_rows(self, world: World) -> None:
        results = segment_results(world.connection, world.campaign_id, "value_tier")
        cells = {(r.segment, r.arm, r.metric): r for r in results}
        assert {r.segment for r in results} == {f"value_tier={t}" for t in TIERS}
        for tier, group in world.raw.groupby("value_tier"):
            control = group[group.arm == "control"]
            for arm in ARMS[1:]:
                treated = group[group.arm == arm]
                key = (f"value_tier={tier}", arm)
                self.check_adoption(cells[(*key, "adoption")].comparison, control, treated)
                for metric in ("cost_to_serve", "revenue"):
                    expected = welch(treated[metric].to_numpy(float),
                                     control[metric].to_numpy(float))
                    c = cells[(*key, metric)].comparison
                    assert (c.diff, c.diff_ci_low, c.diff_ci_high, c.p_value) == pytest.approx(
                        expected, rel=1e-9, abs=TOLERANCE), (key, metric)
                self.check_share(cells[(*key, "target_share")].comparison, control, treated)
                self.check_cuped(cells[(*key, "adoption_cuped")].comparison, control, treated)

    @staticmethod
    def check_adoption(comparison: Any, control: pd.DataFrame, treated: pd.DataFrame) -> None:
        pc, pt = control.adoption.mean(), treated.adoption.mean()
        half = Z_975 * np.sqrt(pc * (1 - pc) / len(control) + pt * (1 - pt) / len(treated))
        _, p_value = sm_proportion.test_proportions_2indep(
            treated.adoption.sum(), len(treated), control.adoption.sum(), len(control),
            method="wald", compare="diff")
        assert comparison.diff == pytest.approx(pt - pc, abs=TOLERANCE)
        assert comparison.diff_ci_low == pytest.approx(pt - pc - half, abs=TOLERANCE)
        assert comparison.diff_ci_high == pytest.approx(pt - pc + half, abs=TOLERANCE)
        assert comparison.p_value == pytest.approx(p_value, rel=1e-9)

    @staticmethod
    def check_share(comparison: Any, control: pd.DataFrame, treated: pd.DataFrame) -> None:
        rc, var_c = delta_ratio(control.target_n.to_numpy(float),
                                control.stage_n.to_numpy(float))
        rt, var_t = delta_ratio(treated.target_n.to_numpy(float),
                                treated.stage_n.to_numpy(float))
        half = Z_975 * np.sqrt(var_c + var_t)
        assert (comparison.diff, comparison.diff_ci_low, comparison.diff_ci_high) == \
            pytest.approx((rt - rc, rt - rc - half, rt - rc + half), abs=TOLERANCE)

    @staticmethod
    def check_cuped(comparison: Any, control: pd.DataFrame, treated: pd.DataFrame) -> None:
        """CUPED's adjusted difference is the treatment coefficient of y ~ 1 + treated + pre."""
        both = pd.concat([control, treated])
        design = sm.add_constant(np.column_stack([(both.arm != "control").to_numpy(float),
                                                  both.adoption_pre.to_numpy(float)]))
        fit = sm.OLS(both.adoption.to_numpy(float), design).fit()
        assert comparison.diff == pytest.approx(fit.params[1], abs=1e-9)

    def test_holm_over_every_segment_arm_and_primary_metric(self, world: World) -> None:
        results = segment_results(world.connection, world.campaign_id, "value_tier")
        family = [r for r in results if r.metric in ("adoption", "target_share")]
        assert len(family) == len(TIERS) * 2 * 2
        _, expected, _, _ = multipletests([r.comparison.p_value for r in family],
                                          method="holm")
        assert [r.p_value_holm for r in family] == pytest.approx(list(expected), rel=1e-12)
        assert all(r.p_value_holm is None for r in results
                   if r.metric not in ("adoption", "target_share"))

    def test_heterogeneous_effect_is_visible(self, world: World) -> None:
        results = segment_results(world.connection, world.campaign_id, "value_tier")
        adoption = {(r.segment, r.arm): r.comparison for r in results
                    if r.metric == "adoption"}
        gold = adoption[("value_tier=gold", "twenty percent")]
        bronze = adoption[("value_tier=bronze", "twenty percent")]
        # truth +0.25 against +0.10; the difference is about 4 standard errors
        assert gold.diff > bronze.diff
        assert gold.diff_ci_low > 0

    def test_segments_partition_each_arm(self, world: World) -> None:
        results = segment_results(world.connection, world.campaign_id, "is_new")
        assert {r.segment for r in results} == {"is_new=0", "is_new=1"}
        for arm in ARMS[1:]:
            cells = [r.comparison for r in results if r.arm == arm and r.metric == "adoption"]
            assert sum(c.treatment_n for c in cells) == (world.raw.arm == arm).sum()
            assert sum(c.control_n for c in cells) == (world.raw.arm == "control").sum()

    def test_value_without_treated_customers(self, world: World) -> None:
        results = segment_results(world.connection, world.campaign_id, "region")
        islands = [r for r in results if r.segment == "region=islands"]
        assert {r.arm for r in islands} == set(ARMS[1:])
        for result in islands:
            assert result.comparison.treatment_n == 0 and result.comparison.control_n == 3
            assert result.comparison.p_value is None and result.comparison.reason

    def test_missing_values_are_labelled(self, world: World) -> None:
        results = segment_results(world.connection, world.campaign_id, "age_band")
        assert {r.segment for r in results} == {f"age_band={MISSING_VALUE}"}

    def test_unknown_segment_lists_the_valid_ones(self, world: World) -> None:
        with pytest.raises(ValueError, match="unknown segment 'shoe_size'") as error:
            segment_results(world.connection, world.campaign_id, "shoe_size")
        assert all(name in str(error.value) for name in SEGMENT_COLUMNS)

    def test_unknown_campaign(self, connection: Connection) -> None:
        with pytest.raises(CampaignNotFound):
            segment_results(connection, 987_654, "value_tier")


class TestOnePass:
    """campaign_and_segment_results: one aggregation, the same figures as the two calls."""

    def test_live_equals_the_separate_calls(self, world: World) -> None:
        whole, breakdown = campaign_and_segment_results(world.connection, world.campaign_id,
                                                        "value_tier")
        assert whole == campaign_results(world.connection, world.campaign_id)
        assert breakdown == segment_results(world.connection, world.campaign_id, "value_tier")

    def test_collapsed_rows_are_the_unsegmented_rows(self, world: World) -> None:
        rows = arm_statistics(world.connection, world.campaign_id, segment="region")
        assert collapse_segments(rows) == arm_statistics(world.connection, world.campaign_id)

    def test_imported_equals_the_separate_calls(self, experiment: World) -> None:
        whole, breakdown = campaign_and_segment_results(
            experiment.connection, experiment.campaign_id, "channel")
        assert whole == campaign_results(experiment.connection, experiment.campaign_id)
        assert breakdown == segment_results(experiment.connection, experiment.campaign_id,
                                            "channel")

    def test_unknown_segment(self, world: World) -> None:
        with pytest.raises(ValueError, match="unknown segment 'shoe_size'"):
            campaign_and_segment_results(world.connection, world.campaign_id, "shoe_size")


# ------------------------------------------------------------------------------ Qini


def ntile(count: int, buckets: int) -> np.ndarray:
    """SQL NTILE: the first ``count % buckets`` buckets hold one row more."""
    sizes = np.full(min(buckets, count), count // buckets)
    sizes[: count % buckets if count >= buckets else count] += 1
    return np.repeat(np.arange(1, len(sizes) + 1), sizes)


def tie_aware_deciles(score: pd.Series, buckets: int) -> pd.Series:
    """Each score value in the NTILE bucket of the middle of its rank range (pandas ranks),
    empty buckets skipped: the definition analytics.uplift documents."""
    first = score.rank(method="min", ascending=False).astype(int)
    last = score.rank(method="max", ascending=False).astype(int)
    bucket = pd.Series(ntile(len(score), buckets)[(first + last) // 2 - 1], index=score.index)
    return bucket.rank(method="dense").astype(int)


def reference_qini(rows: pd.DataFrame, *, score: str, outcome: str, control: str,
                   arm: str, buckets: int = 10) -> dict[str, Any]:
    """Deciles with Wald CIs (pandas), Qini curve and coefficients (scikit-uplift 0.5.1)."""
    scored = rows[rows[score].notna()]
    scored = scored.assign(decile=tie_aware_deciles(scored[score].astype(float), buckets))
    pair = scored[scored.arm.isin([control, arm])]
    table = pair.groupby(["decile", "arm"])[outcome].agg(["size", "sum"]).unstack(fill_value=0)
    n_t, r_t = table[("size", arm)].to_numpy(float), table[("sum", arm)].to_numpy(float)
    n_c, r_c = table[("size", control)].to_numpy(float), table[("sum", control)].to_numpy(float)
    rate_t, rate_c = r_t / n_t, r_c / n_c
    half = Z_975 * np.sqrt(rate_t * (1 - rate_t) / n_t + rate_c * (1 - rate_c) / n_c)
    y = pair[outcome].to_numpy(int)
    treated = (pair.arm == arm).to_numpy(int)
    uplift = pair[score].to_numpy(float)
    targeted, gain = sklift_metrics.qini_curve(y, uplift, treated)
    x = targeted / len(pair)
    above = (gain - x * gain[-1]) / treated.sum()
    q = float(np.trapezoid(above, x))
    g = gain[-1] / treated.sum()
    return {"uplift": rate_t - rate_c, "low": rate_t - rate_c - half,
            "high": rate_t - rate_c + half, "n_t": n_t, "n_c": n_c, "x": x, "gain": gain,
            "random": x * gain[-1], "q": q,
            # q0 is defined only when targeting everyone gains something
            "q0": q / (g * (1 - g) / 2) if 0 < g < 1 else None,
            "auc_score": float(sklift_metrics.qini_auc_score(y, uplift, treated)),
            "score_min": scored.groupby("decile")[score].min().to_numpy(float),
            "score_max": scored.groupby("decile")[score].max().to_numpy(float)}


def check_against_reference(result: QiniResult, reference: dict[str, Any], arm: str) -> None:
    deciles = [row for row in result.deciles if row.arm == arm]
    assert [row.decile for row in deciles] == list(range(1, len(deciles) + 1))
    assert [row.treatment_n for row in deciles] == list(reference["n_t"])
    assert [row.control_n for row in deciles] == list(reference["n_c"])
    for field in ("uplift", "score_min", "score_max"):
        assert [getattr(row, field) for row in deciles] == pytest.approx(
            list(reference[field]), abs=TOLERANCE), field
    assert [row.uplift_ci_low for row in deciles] == pytest.approx(list(reference["low"]),
                                                                   abs=TOLERANCE)
    assert [row.uplift_ci_high for row in deciles] == pytest.approx(list(reference["high"]),
                                                                    abs=TOLERANCE)
    curve = [point for point in result.curve if point.arm == arm]
    assert [p.fraction_targeted for p in curve] == pytest.approx(list(reference["x"]))
    assert [p.incremental_gain for p in curve] == pytest.approx(list(reference["gain"]))
    assert [p.random_gain for p in curve] == pytest.approx(list(reference["random"]))
    assert result.qini_coefficient[arm] == pytest.approx(reference["q"], abs=TOLERANCE)
    assert result.qini_auc_score is not None
    assert result.qini_auc_score[arm] == pytest.approx(reference["auc_score"], abs=TOLERANCE)
    assert result.qini_q0 is not None
    if reference["q0"] is None:
        assert result.qini_q0[arm] is None
    else:
        assert result.qini_q0[arm] == pytest.approx(reference["q0"], abs=TOLERANCE)


class TestQiniLive:
    def test_matches_raw_rows(self, world: World) -> None:
        for score in ("score", "noise"):
            result = qini(world.connection, world.campaign_id, score)
            assert result is not None and result.metric == "adoption"
            assert result.scored_n == world.raw[score].notna().sum()
            for arm in ARMS[1:]:
                reference = reference_qini(world.raw, score=score, outcome="adoption",
                                           control="control", arm=arm)
                check_against_reference(result, reference, arm)

    def test_informative_score_beats_noise(self, world: World) -> None:
        informative = qini(world.connection, world.campaign_id, "score")
        noise = qini(world.connection, world.campaign_id, "noise")
        assert informative is not None and noise is not None
        top, bottom = (next(r for r in informative.deciles
                            if r.arm == "ten percent" and r.decile == d) for d in (1, 10))
        assert top.score_min > bottom.score_max
        assert top.uplift is not None and bottom.uplift is not None
        # Bounds sit at least four standard deviations (over 300 simulated worlds) from
        # the expected values: top - bottom uplift 0.45 (sd 0.06); Q 0.041 (sd 0.0045) for
        # the informative score and 0 (sd 0.0045) for noise or for the flat-effect arm;
        # q0 0.42 (sd 0.045).
        assert top.uplift > bottom.uplift + 0.2
        assert top.uplift_ci_low is not None and top.uplift_ci_low > 0
        assert informative.qini_coefficient["ten percent"] > 0.02
        assert abs(noise.qini_coefficient["ten percent"]) < 0.018
        assert abs(informative.qini_coefficient["twenty percent"]) < 0.018
        assert informative.qini_q0 is not None and informative.qini_q0["ten percent"] > 0.2

    def test_other_binary_metric_and_decile_count(self, world: World) -> None:
        result = qini(world.connection, world.campaign_id, "score", metric="conversion",
                      deciles=4)
        assert result is not None and result.metric == "conversion"
        assert {row.decile for row in result.deciles} == {1, 2, 3, 4}
        reference = reference_qini(world.raw, score="score", outcome="conversion",
                                   control="control", arm="ten percent", buckets=4)
        check_against_reference(result, reference, "ten percent")

    def test_no_customer_has_the_score(self, world: World) -> None:
        assert qini(world.connection, world.campaign_id, "propensity") is None

    def test_non_numeric_score_names_the_customer(self, world: World) -> None:
        with rolled_back(world.connection):
            world.connection.execute(update(Customer).where(Customer.external_id == "T5")
                                     .values(attributes={"score": "high"}))
            with pytest.raises(ValueError, match="score attribute 'score' of customer 'T5'"):
                qini(world.connection, world.campaign_id, "score")

    def test_metric_must_be_binary(self, world: World) -> None:
        with pytest.raises(QiniOptionError, match=r"unknown Qini metric 'revenue'.*use one "
                                                  r"of: adoption, churn, conversion"):
            qini(world.connection, world.campaign_id, "score", metric="revenue")

    def test_bad_arguments(self, world: World) -> None:
        with pytest.raises(ValueError, match="deciles"):
            qini(world.connection, world.campaign_id, "score", deciles=0)
        with pytest.raises(ValueError, match="not a valid attribute name"):
            qini(world.connection, world.campaign_id, "score'); --")


# ---------------------------------------------------------------- imported campaigns


def build_imported(session: Session, *, units: int = 4_000, seed: int = 5
                   ) -> tuple[int, pd.DataFrame]:
    """An imported experiment: units with a model score, a binary and a continuous metric."""
    campaign = Campaign(name="Imported targeting", origin="imported", status="ended",
                        salt="imported")
    session.add(campaign)
    session.flush()
    arms = [Arm(campaign_id=campaign.id, name=name, weight=50, is_control=name == "0",
                position=i) for i, name in enumerate(("0", "1"))]
    metrics = [ExperimentMetric(campaign_id=campaign.id, name=name, kind=kind,
                                source_column=name, position=i)
               for i, (name, kind) in enumerate((("converted", "binary"),
                                                 ("spend", "continuous")))]
    session.add_all([*arms, *metrics])
    # What the importer records: the name of the --score column (units keep the values).
    record_audit(session, actor="test", action="campaign.import", entity_type="campaign",
                 entity_id=campaign.id, config_change=False,
                 details={"score_column": "model_score"})
    session.flush()
    campaign_id, arm_ids, metric_ids = campaign.id, [a.id for a in arms], [m.id for m in metrics]
    assert campaign_id is not None
    connection = session.connection()
    rng = np.random.default_rng(seed)
    treated = rng.uniform(size=units) < 0.5
    score = np.where(rng.uniform(size=units) < 0.03, np.nan, np.round(rng.normal(size=units), 1))
    converted = rng.uniform(size=units) < 0.1 + treated * 0.15 * (np.nan_to_num(score) > 0)
    spend = np.round(rng.gamma(2.0, 40.0, units) + treated * 5.0, 2)
    channel = rng.choice(["web", "phone", "store"], size=units, p=[0.5, 0.3, 0.2])
    connection.execute(insert(ExperimentUnit), [
        {"campaign_id": campaign_id, "arm_id": arm_ids[int(t)], "unit_key": f"u{i}",
         "row_number": i + 1, "score": None if np.isnan(s) else float(s)}
        for i, (t, s) in enumerate(zip(treated, score, strict=True))])
    unit_ids = dict(connection.execute(select(ExperimentUnit.unit_key, ExperimentUnit.id)
                                       .where(ExperimentUnit.campaign_id == campaign_id)).all())
    connection.execute(insert(ExperimentValue), [
        {"unit_id": unit_ids[f"u{i}"], "metric_id": metric_id, "value": value}
        for i in range(units)
        for metric_id, value in zip(metric_ids, (float(converted[i]), float(spend[i])),
                                    strict=True)])
    connection.execute(insert(ExperimentSegment), [
        {"unit_id": unit_ids[f"u{i}"], "name": "channel", "value": str(channel[i])}
        for i in range(units)])
    analyze(connection)
    raw = pd.DataFrame({"unit_id": [unit_ids[f"u{i}"] for i in range(units)],
                        "arm": np.where(treated, "1", "0"),
                        "score": np.where(np.isnan(score), None, score),
                        "converted": converted.astype(int), "spend": spend,
                        "channel": channel})
    return campaign_id, raw


class TestSegmentResultsImported:
    def test_cells_match_raw_rows(self, experiment: World) -> None:
        results = segment_results(experiment.connection, experiment.campaign_id, "channel")
        cells = {(r.segment, r.metric): r for r in results}
        assert {r.segment for r in results} == {"channel=phone", "channel=store", "channel=web"}
        raw = experiment.raw
        for channel, group in raw.groupby("channel"):
            control, treated = group[group.arm == "0"], group[group.arm == "1"]
            comparison = cells[(f"channel={channel}", "converted")].comparison
            TestSegmentResults.check_adoption(
                comparison, control.rename(columns={"converted": "adoption"}),
                treated.rename(columns={"converted": "adoption"}))
            expected = welch(treated.spend.to_numpy(), control.spend.to_numpy())
            c = cells[(f"channel={channel}", "spend")].comparison
            assert (c.diff, c.diff_ci_low, c.diff_ci_high, c.p_value) == pytest.approx(
                expected, rel=1e-9, abs=TOLERANCE)
        # every imported metric is primary: Holm over 3 segments x 1 arm x 2 metrics
        _, expected_holm, _, _ = multipletests([r.comparison.p_value for r in results],
                                               method="holm")
        assert [r.p_value_holm for r in results] == pytest.approx(list(expected_holm),
                                                                  rel=1e-12)

    def test_unknown_segment_lists_the_imported_ones(self, experiment: World) -> None:
        with pytest.raises(ValueError, match=r"unknown segment 'value_tier'.*valid segments: "
                                             r"channel"):
            segment_results(experiment.connection, experiment.campaign_id, "value_tier")


class TestQiniImported:
    def test_matches_raw_rows(self, experiment: World) -> None:
        result = qini(experiment.connection, experiment.campaign_id, "model_score",
                      metric="converted")
        assert result is not None and result.score == "model_score"
        reference = reference_qini(experiment.raw, score="score", outcome="converted",
                                   control="0", arm="1")
        check_against_reference(result, reference, "1")
        assert result.qini_coefficient["1"] > 0

    def test_metric_must_be_a_binary_metric_of_the_experiment(self, experiment: World
                                                              ) -> None:
        with pytest.raises(QiniOptionError, match=r"unknown Qini metric 'spend'.*use one of: "
                                                  r"converted$"):
            qini(experiment.connection, experiment.campaign_id, "model_score", metric="spend")

    def test_a_score_that_was_not_imported_is_refused(self, experiment: World) -> None:
        with pytest.raises(QiniOptionError, match=r"unknown score 'propensity'.*imported "
                                                  r"scores are: model_score") as refused:
            qini(experiment.connection, experiment.campaign_id, "propensity",
                 metric="converted")
        assert refused.value.option == "qini_score"

    def test_no_unit_has_a_score(self, experiment: World) -> None:
        with rolled_back(experiment.connection):
            experiment.connection.execute(update(ExperimentUnit).values(score=None))
            assert qini(experiment.connection, experiment.campaign_id, "model_score",
                        metric="converted") is None
