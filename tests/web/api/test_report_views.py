"""GET .../report: Bayesian and always-valid views, BH, Cochran's Q and the baseline arm,
on a live three-arm campaign and on the imported Artea experiment.

Reference numbers come from the raw rows the test wrote (or Artea's CSV), through
gbstats 0.8's formulas (tests.analytics.gbstats_reference), statsmodels'
``multipletests`` and ``combine_effects``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlmodel import Session, select
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from campaigns.models import Arm, Assignment, Channel, ChannelEvent, Stage
from seeds.experiments import build_spec, import_experiment
from tests.analytics import gbstats_reference as gb
from tests.analytics.test_report import NOW, rolled_back_connection, savepoint_session
from tests.builders import control_arm, make_customer, make_running_campaign, percent_arm
from tests.datafiles import shared_data

ARTEA = shared_data("artea-a_b-experiment.csv")
ARMS = ("control", "ten percent", "twenty percent")
TIERS = ("bronze", "silver", "gold")
#: adoption probability per arm and value tier: "ten percent" works on gold customers only
RATES = {"control": (0.15, 0.15, 0.15), "ten percent": (0.15, 0.16, 0.60),
         "twenty percent": (0.22, 0.22, 0.22)}
PER_CELL = 80


@dataclass(frozen=True)
class Live:
    campaign_id: int
    #: (arm, tier) -> (customers, adopters), as written
    cells: dict[tuple[str, str], tuple[int, int]]

    def totals(self, arm: str) -> tuple[int, int]:
        cells = [self.cells[(arm, tier)] for tier in TIERS]
        return sum(n for n, _ in cells), sum(k for _, k in cells)


def make_three_arm_campaign(session: Session) -> Live:
    campaign = make_running_campaign(session, name="Three arms", arms=[
        control_arm(weight=34), percent_arm("ten percent", weight=33),
        percent_arm("twenty percent", weight=33, percent_bp=2000)])
    campaign.starts_at, campaign.ends_at = NOW - timedelta(days=60), NOW - timedelta(days=1)
    session.add(campaign)
    arms = {arm.name: arm for arm in session.exec(
        select(Arm).where(Arm.campaign_id == campaign.id))}
    web = session.exec(select(Channel).where(Channel.key == "web")).one()
    after_sale = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    exposed = NOW - timedelta(days=59)
    rng = np.random.default_rng(2027)
    cells: dict[tuple[str, str], tuple[int, int]] = {}
    index = 0
    for arm_name in ARMS:
        for tier, rate in zip(TIERS, RATES[arm_name], strict=True):
            adopters = 0
            for _ in range(PER_CELL):
                index += 1
                customer = make_customer(session, external_id=f"three-{index}", value_tier=tier)
                session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                                       arm_id=arms[arm_name].id,
                                       first_exposed_at=exposed + timedelta(minutes=index)))
                if rng.random() < rate:
                    adopters += 1
                    session.add(ChannelEvent(
                        client_event_id=f"three-web-{index}", customer_id=customer.id,
                        channel_id=web.id, stage_id=after_sale.id, kind="interaction",
                        occurred_at=exposed + timedelta(minutes=index, hours=2),
                        cost_minor=10))
            cells[(arm_name, tier)] = (PER_CELL, adopters)
    session.flush()
    assert campaign.id is not None
    return Live(campaign.id, cells)


@pytest.fixture(scope="module")
def world(engine: Engine) -> Iterator[Connection]:
    with rolled_back_connection(engine) as connection:
        yield connection


@dataclass(frozen=True)
class World:
    live: Live
    artea_id: int


@pytest.fixture(scope="module")
def seeded(world: Connection) -> World:
    session = Session(bind=world, join_transaction_mode="create_savepoint")
    live = make_three_arm_campaign(session)
    artea = import_experiment(session, ARTEA, build_spec(
        name="Artea views", arm_column="test_coupon", control="0",
        metrics=["revenue_after:continuous"], segments=["channel_acq"], id_column="id"),
        actor="test")
    session.commit()
    session.close()
    return World(live, artea.campaign_id)


@pytest.fixture
def session(world: Connection) -> Iterator[Session]:
    """Overrides the suite's session: the app's requests run in a savepoint of the world."""
    with savepoint_session(world) as session:
        yield session


def get_json(client, key, campaign_id: int, **query: str) -> dict:
    response = client.get(f"/api/v1/campaigns/{campaign_id}/report", params=query,
                          headers=key)
    assert response.status_code == 200, response.text
    return response.json()


def row(rows: list[dict], **match: str) -> dict:
    [found] = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return found


def assert_bayesian(result: dict, reference_abs: gb.BayesianTestResult | None,
                    reference_rel: gb.BayesianTestResult | None) -> None:
    assert reference_abs is not None and reference_rel is not None
    for prefix, reference in (("bayes", reference_abs), ("bayes_rel", reference_rel)):
        assert result[f"{prefix}_chance_to_beat_baseline"] == pytest.approx(
            reference.chance_to_win, abs=1e-9)
        assert result[f"{prefix}_ci_low"] == pytest.approx(reference.ci[0], rel=1e-9)
        assert result[f"{prefix}_ci_high"] == pytest.approx(reference.ci[1], rel=1e-9)
        assert result[f"{prefix}_expected_loss_baseline"] == pytest.approx(
            reference.risk[0], rel=1e-7, abs=1e-12)
        assert result[f"{prefix}_expected_loss"] == pytest.approx(reference.risk[1],
                                                                  rel=1e-7, abs=1e-12)


class TestLive:
    def test_bayesian_view_matches_gbstats(self, client, analytics_key, session,
                                           seeded: World) -> None:
        live = seeded.live
        body = get_json(client, analytics_key, live.campaign_id, segment="none")
        control = gb.ProportionStatistic(*live.totals("control"))
        for arm in ARMS[1:]:
            treatment = gb.ProportionStatistic(*live.totals(arm))
            result = row(body["results"], arm=arm, metric="adoption")
            assert result["baseline"] == "control"
            assert_bayesian(result, gb.effect_bayesian(control, treatment, relative=False),
                            gb.effect_bayesian(control, treatment, relative=True))
            assert result["always_valid_ci_low"] < result["diff_ci_low"]
            assert result["always_valid_ci_high"] > result["diff_ci_high"]
            assert result["always_valid_p_value"] >= result["p_value"]
        # cost_to_serve: lower is better, so a cost increase is the arm's expected loss.
        cost = row(body["results"], arm="ten percent", metric="cost_to_serve")
        assert cost["diff"] > 0
        assert cost["bayes_chance_to_beat_baseline"] < 0.5
        assert cost["bayes_expected_loss"] > cost["bayes_expected_loss_baseline"]
        assert any("flat prior" in m for m in body["methods"])
        assert any("n = 10,000 units" in m for m in body["methods"])

    def test_benjamini_hochberg(self, client, analytics_key, session, seeded: World) -> None:
        body = get_json(client, analytics_key, seeded.live.campaign_id, segment="none",
                        correction="bh")
        primary = [r for r in body["results"] if r["metric"] in ("adoption", "target_share")]
        # Every interaction is on the web, so the target share has no variance: its test
        # is undefined and leaves the family.
        tested = [r for r in primary if r["p_value"] is not None]
        assert {r["metric"] for r in tested} == {"adoption"}
        assert all(r["p_value_bh"] is None for r in primary if r["p_value"] is None)
        expected = multipletests([r["p_value"] for r in tested], method="fdr_bh")[1]
        assert [r["p_value_bh"] for r in tested] == pytest.approx(list(expected), rel=1e-12)
        assert body["correction"] == "bh"
        assert any(m.startswith("Benjamini-Hochberg correction") for m in body["methods"])
        assert not any(m.startswith("Holm step-down") for m in body["methods"])
        csv = client.get(f"/api/v1/campaigns/{seeded.live.campaign_id}/report",
                         params={"format": "csv", "correction": "bh", "segment": "none"},
                         headers=analytics_key)
        frame = pd.read_csv(io.BytesIO(csv.content))
        bh = frame[(frame.statistic == "p_value_bh") & (frame.metric == "adoption")]
        assert sorted(bh.arm) == sorted(ARMS[1:])
        html = client.get(f"/api/v1/campaigns/{seeded.live.campaign_id}/report",
                          params={"format": "html", "correction": "bh"}, headers=analytics_key)
        assert "p (BH)" in html.text and "p (Holm)" not in html.text

    def test_arm_against_arm(self, client, analytics_key, session, seeded: World) -> None:
        live = seeded.live
        body = get_json(client, analytics_key, live.campaign_id, segment="none",
                        baseline="ten percent")
        assert body["baseline"] == "ten percent"
        assert {r["arm"] for r in body["results"]} == {"control", "twenty percent"}
        assert {r["baseline"] for r in body["results"]} == {"ten percent"}
        base = gb.ProportionStatistic(*live.totals("ten percent"))
        other = gb.ProportionStatistic(*live.totals("twenty percent"))
        result = row(body["results"], arm="twenty percent", metric="adoption")
        assert result["diff"] == pytest.approx(other.mean - base.mean, rel=1e-12)
        assert_bayesian(result, gb.effect_bayesian(base, other, relative=False),
                        gb.effect_bayesian(base, other, relative=True))
        # Against control the sign flips, with the same test.
        default = get_json(client, analytics_key, live.campaign_id, segment="none")
        forward = row(default["results"], arm="ten percent", metric="adoption")
        backward = row(body["results"], arm="control", metric="adoption")
        assert backward["diff"] == pytest.approx(-forward["diff"], rel=1e-12)
        assert backward["p_value"] == pytest.approx(forward["p_value"], rel=1e-9)
        assert any("compared with the arm 'ten percent'" in m for m in body["methods"])

    def test_heterogeneity_above_the_segments(self, client, analytics_key, session,
                                              seeded: World) -> None:
        live = seeded.live
        body = get_json(client, analytics_key, live.campaign_id, segment="value_tier")
        for arm in ARMS[1:]:
            cells = [(live.cells[("control", t)], live.cells[(arm, t)]) for t in TIERS]
            diffs = np.array([kt / nt - kc / nc for (nc, kc), (nt, kt) in cells])
            variances = np.array([(kc / nc) * (1 - kc / nc) / nc + (kt / nt) * (1 - kt / nt) / nt
                                  for (nc, kc), (nt, kt) in cells])
            reference = combine_effects(diffs, variances)
            found = row(body["heterogeneity"], arm=arm, metric="adoption")
            assert found["breakdown"] == "value_tier" and found["segments"] == 3
            assert found["q"] == pytest.approx(reference.q, rel=1e-9)
            assert found["i_squared"] == pytest.approx(max(reference.i2, 0.0), abs=1e-9)
        # Gold customers respond to ten percent only: Q sees it; twenty percent is even.
        assert row(body["heterogeneity"], arm="ten percent", metric="adoption")["p_value"] < 0.01
        assert any(m.startswith("Heterogeneity across segment values") for m in body["methods"])
        html = client.get(f"/api/v1/campaigns/{live.campaign_id}/report",
                          params={"format": "html", "segment": "value_tier"},
                          headers=analytics_key).text
        section = html[html.index('<section id="segments">'):]
        assert section.index('id="heterogeneity"') < section.index("<th>Segment</th>")
        assert "the effect differs between segments" in section

    @pytest.mark.parametrize(("query", "field", "words"), [
        ({"baseline": "half price"}, "baseline",
         "unknown arm 'half price'; use one of control, ten percent, twenty percent"),
        ({"correction": "bonferroni"}, "correction", "use one of holm, bh")])
    def test_bad_options(self, client, analytics_key, session, seeded: World, query,
                         field, words) -> None:
        response = client.get(f"/api/v1/campaigns/{seeded.live.campaign_id}/report",
                              params=query, headers=analytics_key)
        assert response.status_code == 422
        body = response.json()
        assert body["errors"][0]["loc"] == ["query", field]
        assert words in body["errors"][0]["msg"]


class TestImported:
    def test_artea_views_against_gbstats_and_statsmodels(self, client, analytics_key, session,
                                                         seeded: World) -> None:
        raw = pd.read_csv(ARTEA, encoding="utf-8-sig")
        body = get_json(client, analytics_key, seeded.artea_id, segment="channel_acq",
                        correction="bh", baseline="1")
        # Arm 1 is the baseline: control ("0") is compared with it.
        result = row(body["results"], arm="0", metric="revenue_after")
        assert result["baseline"] == "1"

        def stat(values: pd.Series) -> gb.SampleMeanStatistic:
            array = values.to_numpy(float)
            return gb.SampleMeanStatistic(n=array.size, sum=float(array.sum()),
                                          sum_squares=float(np.dot(array, array)))

        base = stat(raw[raw.test_coupon == 1].revenue_after)
        other = stat(raw[raw.test_coupon == 0].revenue_after)
        assert_bayesian(result, gb.effect_bayesian(base, other, relative=False),
                        gb.effect_bayesian(base, other, relative=True))
        # Cochran's Q over the acquisition channels' Welch differences.
        diffs, variances = [], []
        for _, group in raw.groupby("channel_acq"):
            b, o = (group[group.test_coupon == arm].revenue_after for arm in (1, 0))
            diffs.append(o.mean() - b.mean())
            variances.append(o.var(ddof=1) / o.size + b.var(ddof=1) / b.size)
        reference = combine_effects(np.array(diffs), np.array(variances))
        found = row(body["heterogeneity"], arm="0", metric="revenue_after")
        assert found["q"] == pytest.approx(reference.q, rel=1e-9)
        segments = body["segments"]
        expected = multipletests([s["p_value"] for s in segments], method="fdr_bh")[1]
        assert [s["p_value_bh"] for s in segments] == pytest.approx(list(expected), rel=1e-12)
        assert any("Benjamini-Hochberg (false discovery rate) correction across the breakdown's"
                   in m for m in body["methods"])

    def test_unknown_baseline_names_the_arms(self, client, analytics_key, session,
                                             seeded: World) -> None:
        response = client.get(f"/api/v1/campaigns/{seeded.artea_id}/report",
                              params={"baseline": "2"}, headers=analytics_key)
        assert response.status_code == 422
        assert response.json()["errors"][0]["msg"] == "unknown arm '2'; use one of 0, 1"
