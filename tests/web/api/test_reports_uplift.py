"""GET /api/v1/campaigns/{id}/report: the Qini options and the planned split.

Experiments are imported with the importer into the test's transaction, which the app's
requests share; numbers are recomputed with scipy and scikit-uplift.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklift import metrics as sklift_metrics
from sqlmodel import Session

from seeds.experiments import build_spec, import_experiment
from tests.analytics.test_report import make_skewed_campaign


def url(campaign_id: int, **query: str) -> str:
    suffix = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/v1/campaigns/{campaign_id}/report" + (f"?{suffix}" if suffix else "")


def experiment_frame(control: int, treatment: int) -> pd.DataFrame:
    """Units sorted by arm; a score of 7 values with ties; treated units respond more when
    their score is high."""
    units = control + treatment
    arm = ["c"] * control + ["t"] * treatment
    score = [i % 7 for i in range(units)]
    bought = [int((i * 37) % 100 < (20 + (6 * score[i] if arm[i] == "t" else 0)))
              for i in range(units)]
    return pd.DataFrame({"arm": arm, "score": [str(s) for s in score],
                         "bought": [str(b) for b in bought],
                         "renewed": [str(int(i % 4 == 0)) for i in range(units)],
                         "spend": [str(i % 13) for i in range(units)]})


def import_frame(session: Session, frame: pd.DataFrame, *, name: str,
                 weights: str | None = None) -> int:
    result = import_experiment(session, frame, build_spec(
        name=name, arm_column="arm", control="c",
        metrics=["bought:binary", "renewed:binary", "spend:continuous"],
        score_column="score", weights=weights), actor="test")
    session.flush()
    return result.campaign_id


class TestQiniOptions:
    def test_metric_and_score_as_asked(self, client, analytics_key, session) -> None:
        frame = experiment_frame(400, 400)
        campaign = import_frame(session, frame, name="Scored")
        response = client.get(url(campaign, qini_score="score", qini_metric="renewed"),
                              headers=analytics_key)
        assert response.status_code == 200
        qini = response.json()["qini"]
        assert (qini["score"], qini["metric"]) == ("score", "renewed")
        y = frame.renewed.astype(int).to_numpy()
        treated = (frame.arm == "t").astype(int).to_numpy()
        scores = frame.score.astype(float).to_numpy()
        assert qini["qini_auc_score"]["t"] == pytest.approx(
            float(sklift_metrics.qini_auc_score(y, scores, treated)), abs=1e-9)
        _, gain = sklift_metrics.qini_curve(y, scores, treated)
        assert [p["incremental_gain"] for p in qini["curve"]] == pytest.approx(list(gain))
        assert "share 7 distinct score values" in qini["ties"]
        methods = response.json()["methods"]
        assert any("count responders of renewed" in m for m in methods)
        default = client.get(url(campaign, qini_score="score"), headers=analytics_key).json()
        assert default["qini"]["metric"] == "bought"
        rows = list(csv.DictReader(io.StringIO(client.get(
            url(campaign, qini_score="score", qini_metric="renewed", format="csv"),
            headers=analytics_key).text)))
        assert {r["metric"] for r in rows if r["statistic"] == "qini_coefficient"} == {
            "renewed"}

    @pytest.mark.parametrize(("query", "field", "message"), [
        ({"qini_score": "propensity"}, "qini_score",
         "unknown score 'propensity' for imported campaign {id}; the imported scores are: "
         "score"),
        ({"qini_score": "score", "qini_metric": "spend"}, "qini_metric",
         "unknown Qini metric 'spend': the Qini curve counts responders of a 0/1 metric; "
         "use one of: bought, renewed"),
        ({"qini_metric": "bought"}, "qini_metric", "give qini_score")])
    def test_refusals_name_the_parameter(self, client, analytics_key, session, query,
                                         field, message) -> None:
        campaign = import_frame(session, experiment_frame(50, 50), name="Refusals")
        response = client.get(url(campaign, **query), headers=analytics_key)
        assert response.status_code == 422
        [error] = response.json()["errors"]
        assert error["loc"] == ["query", field]
        assert message.format(id=campaign) in error["msg"]


class TestPlannedSplit:
    def test_imported_with_weights(self, client, analytics_key, session) -> None:
        campaign = import_frame(session, experiment_frame(210, 790), name="Twenty eighty",
                                weights="c=20,t=80")
        data = client.get(url(campaign), headers=analytics_key).json()
        expected = sps.chisquare([210, 790], [200, 800])
        assert data["srm"]["chi2"] == pytest.approx(float(expected.statistic), rel=1e-12)
        assert data["srm"]["flagged"] is False
        assert [(a["name"], a["planned_share"], a["observed_share"]) for a in data["arms"]] \
            == [("c", 0.2, 0.21), ("t", 0.8, 0.79)]
        assert data["planned_split"]["assumed"] is False

    def test_live(self, client, analytics_key, session) -> None:
        campaign = make_skewed_campaign(session, control=200, treatment=100)
        data = client.get(url(campaign.id), headers=analytics_key).json()
        assert [a["planned_share"] for a in data["arms"]] == [0.5, 0.5]
        assert [a["observed_share"] for a in data["arms"]] == pytest.approx([2 / 3, 1 / 3])
        assert data["srm"]["flagged"] is True
        assert data["planned_split"] == {
            "source": "the arms' planned weights (allocation period 1)", "assumed": False}
        assert np.isclose(data["srm"]["chi2"], sps.chisquare([200, 100]).statistic)
