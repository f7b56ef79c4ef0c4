"""Small samples through the user's path: build_report and GET .../report say which interval
each row used, and no interval leaves the parameter's range (live and imported campaigns).

The numbers are checked against the independent score inversion of
tests/analytics/test_intervals.py (numerical maximum likelihood) and statsmodels.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlmodel import Session, select
from statsmodels.stats import proportion as sm_proportion

from analytics.exports import to_json
from analytics.report import build_report, choose_segment
from campaigns.models import Arm, Assignment, Campaign, Channel, ChannelEvent, Stage
from seeds.experiments import build_spec, import_experiment
from tests.analytics.test_intervals import inverted, reference_score
from tests.builders import control_arm, make_customer, make_running_campaign, percent_arm

SCORE = "Miettinen-Nurminen score"


def url(campaign_id: int, **query: str) -> str:
    suffix = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/v1/campaigns/{campaign_id}/report" + (f"?{suffix}" if suffix else "")


def small_live_campaign(session: Session, *, arms: dict[str, tuple[int, int]]) -> Campaign:
    """A running campaign exposed 60 days ago (every window complete); ``arms`` maps the
    control and "ten percent" arms to (customers, adopters of the web after-sale)."""
    now = datetime.now(UTC)
    campaign = make_running_campaign(session, name="Tiny pilot", arms=[
        control_arm(weight=50), percent_arm("ten percent", weight=50)])
    campaign.starts_at, campaign.ends_at = now - timedelta(days=61), now + timedelta(days=30)
    session.add(campaign)
    by_name = {arm.name: arm for arm in session.exec(
        select(Arm).where(Arm.campaign_id == campaign.id))}
    web = session.exec(select(Channel).where(Channel.key == "web")).one()
    after_sale = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    exposed = now - timedelta(days=60)
    for name, (customers, adopters) in arms.items():
        for index in range(customers):
            customer = make_customer(session, external_id=f"tiny-{name}-{index}")
            at = exposed + timedelta(minutes=index)
            session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                                   arm_id=by_name[name].id, first_exposed_at=at))
            if index < adopters:
                session.add(ChannelEvent(
                    client_event_id=f"tiny-{name}-web-{index}", customer_id=customer.id,
                    channel_id=web.id, stage_id=after_sale.id, kind="interaction",
                    occurred_at=at + timedelta(hours=2), cost_minor=10))
    session.flush()
    return campaign


def check_score_row(row: dict, successes: tuple[int, int], n: tuple[int, int]) -> None:
    """A JSON result row of a small 2x2 table: the score test and its interval."""
    (xt, xc), (nt, nc) = successes, n
    assert row["small_sample"] is True and row["interval_method"] == SCORE
    assert row["reason"].startswith("small sample:")
    assert row["p_value"] == pytest.approx(
        sm_proportion.score_test_proportions_2indep(xt, nt, xc, nc).pvalue, rel=1e-9)
    edge = 1 - 1e-9
    expected = inverted(lambda d: reference_score(xt, nt, xc, nc, d), -edge, edge)
    expected = tuple(-1.0 if v <= -edge else 1.0 if v >= edge else v for v in expected)
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(expected, abs=2e-7)
    assert -1.0 <= row["diff_ci_low"] <= row["diff_ci_high"] <= 1.0
    assert row["rel_lift_ci_low"] is None or row["rel_lift_ci_low"] >= -1.0
    excludes = row["diff_ci_low"] > 0 or row["diff_ci_high"] < 0
    assert excludes == (row["p_value"] < 0.05)


def rows_by_metric(body: dict) -> dict[str, dict]:
    return {row["metric"]: row for row in body["results"]}


def same_report(client, analytics_key, session: Session, campaign_id: int) -> dict:
    """The API's JSON, checked equal to build_report's, and the API's tidy CSV."""
    response = client.get(url(campaign_id), headers=analytics_key)
    assert response.status_code == 200, response.text
    body = response.json()
    connection = session.connection()
    expected = to_json(build_report(connection, campaign_id,
                                    segment=choose_segment(connection, campaign_id, None)))
    assert body.pop("generated_at") and expected.pop("generated_at")
    for document in (body, expected):  # the interim status is as of each one's own now
        if document.get("interim"):
            assert document["interim"].pop("as_of")
    assert body == expected
    return body


def tidy(client, analytics_key, campaign_id: int) -> pd.DataFrame:
    response = client.get(url(campaign_id, format="csv"), headers=analytics_key)
    assert response.status_code == 200
    return pd.read_csv(io.BytesIO(response.content))


class TestLiveCampaign:
    def test_small_arms_use_the_score_interval(self, client, analytics_key, session) -> None:
        campaign = small_live_campaign(session, arms={"control": (12, 3),
                                                      "ten percent": (15, 9)})
        report = build_report(session.connection(), campaign.id)
        adoption = next(r.comparison for r in report.results if r.metric == "adoption")
        assert adoption.control_n == 12 and adoption.treatment_n == 15
        assert adoption.interval_method == SCORE and adoption.small_sample
        text = " ".join(report.methods)
        assert "Miettinen-Nurminen score test" in text and "Small samples:" in text
        small = next(m for m in report.methods if m.startswith("Small samples:"))
        assert "adoption" in small and "cost_to_serve" in small

        body = same_report(client, analytics_key, session, campaign.id)
        rows = rows_by_metric(body)
        check_score_row(rows["adoption"], successes=(9, 3), n=(15, 12))
        # Means of 12 and 15 customers are flagged too, with Welch's t test kept.
        assert rows["cost_to_serve"]["small_sample"] is True
        assert rows["cost_to_serve"]["interval_method"] == "Welch t"
        assert all(row["rel_lift_ci_low"] is None or row["rel_lift_ci_low"] >= -1.0
                   for row in body["results"])

        frame = tidy(client, analytics_key, campaign.id)
        adoption_rows = frame[(frame.arm == "ten percent") & (frame.metric == "adoption")]
        statistics = dict(zip(adoption_rows.statistic, adoption_rows.value, strict=True))
        assert statistics["small_sample"] == 1
        assert f"interval_method={SCORE}" in statistics
        assert statistics["diff_ci_low"] == pytest.approx(rows["adoption"]["diff_ci_low"])

    def test_large_arms_stay_wald(self, client, analytics_key, session) -> None:
        campaign = small_live_campaign(session, arms={"control": (120, 30),
                                                      "ten percent": (130, 52)})
        rows = rows_by_metric(same_report(client, analytics_key, session, campaign.id))
        adoption = rows["adoption"]
        assert adoption["interval_method"] == "Wald z" and adoption["small_sample"] is False
        low, high = sm_proportion.confint_proportions_2indep(52, 130, 30, 120, method="wald")
        assert (adoption["diff_ci_low"], adoption["diff_ci_high"]) == pytest.approx(
            (low, high), rel=1e-9)


class TestImportedExperiment:
    def test_extreme_small_tables_stay_in_range(self, client, analytics_key,
                                                session) -> None:
        n = 12
        frame = pd.DataFrame({
            "unit": [f"u{i}" for i in range(2 * n)],
            "group": ["A"] * n + ["B"] * n,
            # everyone in A kept the old channel, nobody in B: a difference of -100%
            "kept": ["1"] * n + ["0"] * n,
            "bought": ["1"] * 2 + ["0"] * (n - 2) + ["1"] * 8 + ["0"] * (n - 8),
            "spend": [str(10 + i % 5) for i in range(2 * n)],
        })
        imported = import_experiment(session, frame, build_spec(
            name="Tiny import", arm_column="group", control="A",
            metrics=["kept:binary", "bought:binary", "spend:continuous"], id_column="unit"),
            actor="test")
        session.flush()
        rows = rows_by_metric(same_report(client, analytics_key, session,
                                          imported.campaign_id))
        kept = rows["kept"]
        check_score_row(kept, successes=(0, n), n=(n, n))
        assert kept["diff"] == -1.0 and kept["diff_ci_low"] == -1.0
        assert kept["rel_lift"] == -1.0 and kept["rel_lift_ci_low"] == -1.0
        assert kept["rel_lift_interval_method"] == "Miettinen-Nurminen score (risk ratio)"
        check_score_row(rows["bought"], successes=(8, 2), n=(n, n))
        assert rows["spend"]["small_sample"] is True
        assert rows["spend"]["interval_method"] == "Welch t"
