"""Qini curve and deciles of imported experiments, against scikit-uplift 0.5.1, in any row order.

Experiments are imported the way an analyst imports them (:func:`import_experiment`, the
code behind ``channelshift import experiment``), then compared with scikit-uplift run on
the same raw rows: ``qini_curve`` (one point per distinct score, ties together),
``qini_auc_score`` and, for a score without ties, ``uplift_by_percentile`` (whose bins
split ties by row order, so with ties the deciles are checked against pandas ranks).
The Artea data (``../shared/data``) gives a real score with heavy ties (browsing minutes);
hypothesis generates experiments with few distinct scores and shuffles their rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklift import metrics as sklift_metrics
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.report import build_report
from analytics.uplift import MAX_CURVE_POINTS, QiniOptionError, QiniResult, qini
from seeds.experiments import build_spec, import_experiment
from tests.analytics.test_planned_split import (  # cli_db: a fixture the CLI tests use
    cli,
    cli_db,  # noqa: F401
    import_options,
    write_experiment,
)
from tests.analytics.test_segments import tie_aware_deciles
from tests.datafiles import shared_data

ARTEA = shared_data("artea-a_b-experiment.csv")
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Artea:
    connection: Connection
    tied: int  # scored by browsing_minutes: integers, heavy ties
    untied: int  # scored by a score without ties
    raw: pd.DataFrame


@pytest.fixture(scope="module")
def artea(engine: Engine) -> Iterator[Artea]:
    """Artea imported twice, with two scores, in one transaction rolled back at the end."""
    raw = pd.read_csv(ARTEA, encoding="utf-8-sig")
    raw["bought"] = (raw.trans_after > 0).astype(int)
    raw["bought_twice"] = (raw.trans_after > 1).astype(int)
    # browsing minutes, ties broken by a unique fraction per customer
    raw["untied"] = raw.browsing_minutes + raw.id / 100_000
    text = raw.astype(str)
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    options = {"arm_column": "test_coupon", "control": "0", "id_column": "id",
               "metrics": ["bought:binary", "bought_twice:binary",
                           "revenue_after:continuous"]}
    try:
        tied = import_experiment(session, text, build_spec(
            name="Artea tied", score_column="browsing_minutes", **options), actor="test")
        untied = import_experiment(session, text, build_spec(
            name="Artea untied", score_column="untied", **options), actor="test")
        session.flush()
        yield Artea(connection, tied.campaign_id, untied.campaign_id, raw)
    finally:
        session.close()
        outer.rollback()
        connection.close()


def check_curve_with_sklift(result: QiniResult, raw: pd.DataFrame, *, score: str,
                            outcome: str, arm: str = "1") -> None:
    """The curve, Q and the Qini AUC score against scikit-uplift on the raw rows."""
    y = raw[outcome].to_numpy(int)
    treated = (raw.arm_label == arm).to_numpy(int)
    scores = raw[score].to_numpy(float)
    targeted, gain = sklift_metrics.qini_curve(y, scores, treated)
    curve = [point for point in result.curve if point.arm == arm]
    # one point per distinct score, and 0; a report carries at most MAX_CURVE_POINTS of them
    assert len(targeted) == len(np.unique(scores)) + 1
    assert len(curve) == min(len(targeted), MAX_CURVE_POINTS)
    at = {int(x): g for x, g in zip(targeted, gain, strict=True)}
    for point in curve:
        customers = round(point.fraction_targeted * len(raw))
        assert point.fraction_targeted * len(raw) == pytest.approx(customers, abs=1e-6)
        assert point.incremental_gain == pytest.approx(at[customers], abs=1e-9)
    assert (curve[0].fraction_targeted, curve[-1].fraction_targeted) == (0.0, 1.0)
    assert result.qini_auc_score is not None
    assert result.qini_auc_score[arm] == pytest.approx(
        float(sklift_metrics.qini_auc_score(y, scores, treated)), abs=TOLERANCE)
    # Q: sklift's area between curve and diagonal in the units of analytics.uplift
    x = targeted / len(raw)
    above = (gain - x * gain[-1]) / treated.sum()
    assert result.qini_coefficient[arm] == pytest.approx(float(np.trapezoid(above, x)),
                                                         abs=TOLERANCE)


class TestArtea:
    def test_curve_and_coefficients_match_sklift_with_ties(self, artea: Artea) -> None:
        result = qini(artea.connection, artea.tied, "browsing_minutes", metric="bought")
        assert result is not None
        raw = artea.raw.assign(arm_label=artea.raw.test_coupon.astype(str))
        check_curve_with_sklift(result, raw, score="browsing_minutes", outcome="bought")
        assert result.distinct_scores == artea.raw.browsing_minutes.nunique()
        assert result.scored_n == 5000

    def test_deciles_match_sklift_without_ties(self, artea: Artea) -> None:
        result = qini(artea.connection, artea.untied, "untied", metric="bought")
        assert result is not None
        raw = artea.raw
        table = sklift_metrics.uplift_by_percentile(
            raw.bought.to_numpy(), raw.untied.to_numpy(), raw.test_coupon.to_numpy(), bins=10)
        assert [d.decile for d in result.deciles] == list(range(1, 11))
        assert [d.treatment_n for d in result.deciles] == list(table.n_treatment)
        assert [d.control_n for d in result.deciles] == list(table.n_control)
        for field, column in (("treatment_rate", "response_rate_treatment"),
                              ("control_rate", "response_rate_control"),
                              ("uplift", "uplift")):
            assert [getattr(d, field) for d in result.deciles] == pytest.approx(
                list(table[column]), abs=TOLERANCE), field
        check_curve_with_sklift(result, raw.assign(arm_label=raw.test_coupon.astype(str)),
                                score="untied", outcome="bought")
        assert "every scored customer has a score of their own" in result.ties

    def test_ties_are_never_split_across_deciles(self, artea: Artea) -> None:
        result = qini(artea.connection, artea.tied, "browsing_minutes", metric="bought")
        assert result is not None
        raw = artea.raw
        expected = tie_aware_deciles(raw.browsing_minutes.astype(float), 10)
        assert len(result.deciles) == expected.max()
        previous_min = np.inf
        for decile in result.deciles:
            # a decile is a range of score values holding every customer with those scores
            assert decile.score_max < previous_min
            previous_min = decile.score_min
            inside = raw[raw.browsing_minutes.between(decile.score_min, decile.score_max)]
            assert (decile.treatment_n, decile.control_n) == (
                int((inside.test_coupon == 1).sum()), int((inside.test_coupon == 0).sum()))
            assert set(expected[inside.index]) == {decile.decile}
        assert "5,000 scored customers share" in result.ties

    def test_the_analyst_chooses_the_metric(self, artea: Artea) -> None:
        report = build_report(artea.connection, artea.tied, qini_score="browsing_minutes",
                              qini_metric="bought_twice")
        assert report.qini is not None and report.qini.metric == "bought_twice"
        raw = artea.raw.assign(arm_label=artea.raw.test_coupon.astype(str))
        check_curve_with_sklift(report.qini, raw, score="browsing_minutes",
                                outcome="bought_twice")
        assert any("count responders of bought_twice" in m for m in report.methods)
        assert any(m.startswith("Ties: 5,000 scored customers share") for m in report.methods)
        default = build_report(artea.connection, artea.tied, qini_score="browsing_minutes")
        assert default.qini is not None and default.qini.metric == "bought"  # first binary

    def test_records_name_the_metric_score_and_ties(self, artea: Artea) -> None:
        report = build_report(artea.connection, artea.tied, qini_score="browsing_minutes",
                              qini_metric="bought_twice")
        records = pd.DataFrame(report.records())
        qini_rows = records[records.statistic.str.startswith("qini_")]
        assert set(qini_rows.metric) == {"bought_twice"}
        deciles = records[records.segment.str.startswith("browsing_minutes_decile=")]
        assert set(deciles.metric) == {"bought_twice"}
        assert {"score_min", "score_max", "diff"} <= set(deciles.statistic)
        methods = records[records.metric == "method"].statistic
        assert methods.str.startswith("Ties: ").any()

    @pytest.mark.parametrize("metric", ["revenue_after", "adoption", "nope"])
    def test_an_unknown_metric_is_refused_naming_the_choices(self, artea: Artea,
                                                             metric: str) -> None:
        with pytest.raises(QiniOptionError, match=rf"unknown Qini metric '{metric}'.*use "
                                                  r"one of: bought, bought_twice$") as refused:
            build_report(artea.connection, artea.tied, qini_score="browsing_minutes",
                         qini_metric=metric)
        assert refused.value.option == "qini_metric"

    def test_a_score_that_was_not_imported_is_refused(self, artea: Artea) -> None:
        with pytest.raises(QiniOptionError, match=r"unknown score 'untied'.*imported scores "
                                                  r"are: browsing_minutes$") as refused:
            build_report(artea.connection, artea.tied, qini_score="untied")
        assert refused.value.option == "qini_score"

    def test_metric_without_score_is_refused(self, artea: Artea) -> None:
        with pytest.raises(QiniOptionError, match="give qini_score") as refused:
            build_report(artea.connection, artea.tied, qini_metric="bought")
        assert refused.value.option == "qini_metric"


# ------------------------------------------------------------------ row order


def experiment(rng: np.random.Generator, *, units: int, distinct: int) -> pd.DataFrame:
    """Units with a score of few distinct values, treated half the time, responding more
    when treated and scored high (so the Qini coefficient is far from 0)."""
    score = rng.integers(0, distinct, units)
    treated = rng.uniform(size=units) < 0.5
    response = rng.uniform(size=units) < 0.2 + 0.4 * treated * score / max(distinct - 1, 1)
    return pd.DataFrame({"id": [f"u{i}" for i in range(units)],
                         "arm": np.where(treated, "t", "c"),
                         "bought": response.astype(int).astype(str),
                         "score": (score / 4).astype(str)})


@pytest.fixture(scope="module")
def order_connection(artea: Artea) -> Connection:
    """The module's connection: its transaction holds SQLite's write lock until the end."""
    return artea.connection


class TestRowOrder:
    @settings(max_examples=12, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(seed=st.integers(0, 2**32 - 1), units=st.integers(30, 400),
           distinct=st.integers(1, 12), shuffle=st.integers(0, 2**32 - 1))
    def test_shuffled_and_sorted_rows_give_identical_figures(
            self, order_connection: Connection, seed: int, units: int, distinct: int,
            shuffle: int) -> None:
        frame = experiment(np.random.default_rng(seed), units=units, distinct=distinct)
        if frame.arm.value_counts().min() < 2:
            return  # both arms need units; too rare to bias the search
        orders = {"file": frame,
                  "shuffled": frame.sample(frac=1, random_state=shuffle % 2**32),
                  "by arm": frame.sort_values("arm", kind="stable"),
                  "by arm, treated first": frame.sort_values("arm", ascending=False,
                                                             kind="stable"),
                  "by score then arm": frame.sort_values(["score", "arm"])}
        savepoint = order_connection.begin_nested()
        session = Session(bind=order_connection, join_transaction_mode="create_savepoint")
        try:
            results = {}
            for name, rows in orders.items():
                imported = import_experiment(session, rows.reset_index(drop=True), build_spec(
                    name=f"order {name}", arm_column="arm", control="c",
                    metrics=["bought:binary"], score_column="score", id_column="id",
                    weights="c=50,t=50"), actor="test")
                session.flush()
                results[name] = qini(order_connection, imported.campaign_id, "score",
                                     metric="bought")
        finally:
            session.close()
            savepoint.rollback()
        first = results["file"]
        assert first is not None
        for name, result in results.items():
            assert result == first, name
        raw = frame.assign(bought=frame.bought.astype(int), score=frame.score.astype(float),
                           arm_label=frame.arm)
        check_curve_with_sklift(first, raw, score="score", outcome="bought", arm="t")
        expected = tie_aware_deciles(raw.score, 10)
        assert len({d.decile for d in first.deciles}) == expected.max()


# ------------------------------------------------------------------ command line


@pytest.mark.usefixtures("cli_db")
class TestCommandLine:
    def test_qini_options(self, tmp_path: Path) -> None:
        path = write_experiment(tmp_path, control=500, treatment=500)
        imported = cli("import", "experiment", str(path), *import_options("scored"),
                       "--metric", "score:continuous")
        assert imported.exit_code == 0, imported.output
        campaign = imported.stdout.strip()
        out = tmp_path / "qini.json"
        done = cli("report", campaign, "--out", str(out), "--qini-score", "score",
                   "--qini-metric", "bought")
        assert done.exit_code == 0, done.output
        data = json.loads(out.read_text())
        assert (data["qini"]["score"], data["qini"]["metric"]) == ("score", "bought")
        assert data["qini"]["ties"].startswith("Ties: 1,000 scored customers share 11 "
                                               "distinct score values")
        html = tmp_path / "qini.html"
        assert cli("report", campaign, "--out", str(html), "--qini-score", "score"
                   ).exit_code == 0
        page = html.read_text()
        assert "Targeting by score: score" in page and "Responders counted: bought." in page
        assert "Qini curve of bought by score score" in page
        unknown_score = cli("report", campaign, "--qini-score", "propensity")
        assert unknown_score.exit_code == 1
        assert "--qini-score: unknown score 'propensity'" in unknown_score.stderr
        assert "the imported scores are: score" in unknown_score.stderr
        unknown_metric = cli("report", campaign, "--qini-score", "score",
                             "--qini-metric", "score")
        assert unknown_metric.exit_code == 1
        assert "--qini-metric: unknown Qini metric 'score'" in unknown_metric.stderr
        assert "use one of: bought" in unknown_metric.stderr
