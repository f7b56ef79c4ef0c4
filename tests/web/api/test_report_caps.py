"""Report options through the API, ``channelshift report`` and the UI form: money caps
(checked against numpy on the values the test wrote), the CUPED pre-period, power rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import time_machine
from sqlalchemy import Engine
from sqlmodel import Session
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from tests.web.api.test_report_interim import (
    PER_ARM,
    T0,
    URL,
    Exposed,
    make_exposed,
    make_report_cli,
    used_web,
)

#: After every window: the figures are final.
LATER = T0 + timedelta(days=45)


@pytest.fixture
def exposed(session: Session) -> Exposed:
    return make_exposed(session)


@pytest.fixture
def report_cli(engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Callable[..., Any]:
    return make_report_cli(engine, session, monkeypatch, tmp_path)


def expected_cost(exposed: Exposed, arm: str, cap: float) -> np.ndarray:
    """Each customer's cost to serve, capped: 10 for the web users the fixture wrote."""
    index = {"control": range(0, 2 * PER_ARM, 2), "ten percent": range(1, 2 * PER_ARM, 2)}
    return np.minimum(np.where([used_web(i) for i in index[arm]], 10.0, 0.0), cap)


class TestThroughTheApi:
    def test_fixed_cap_power_and_pre_period(self, client, analytics_key,
                                            exposed: Exposed) -> None:
        with time_machine.travel(LATER, tick=False):
            body = client.get(URL.format(exposed.campaign.id) + "?cap_cost_to_serve=0.04"
                              "&cuped_days=7", headers=analytics_key).json()
        [cap] = body["caps"]
        assert cap["metric"] == "cost_to_serve" and cap["cap_minor"] == 4
        assert cap["capped_by_arm"] == {arm: int((expected_cost(exposed, arm, 1e9) > 4).sum())
                                        for arm in ("control", "ten percent")}
        result = next(r for r in body["results"] if r["metric"] == "cost_to_serve")
        assert result["mean_control"] == pytest.approx(
            expected_cost(exposed, "control", 4).mean(), rel=1e-12)
        assert result["mean_treatment"] == pytest.approx(
            expected_cost(exposed, "ten percent", 4).mean(), rel=1e-12)
        assert body["pre_period_days"] == 7
        assert any("(7 days before each customer's first exposure)" in m
                   for m in body["methods"])
        [power] = [p for p in body["power"] if p["metric"] == "adoption"]
        effect = power["effect"]
        h = proportion_effectsize(effect["baseline"] + effect["mde"], effect["baseline"])
        assert NormalIndPower().power(h, PER_ARM, 0.05, ratio=1.0) == pytest.approx(0.8,
                                                                                    abs=1e-9)
        # 40 customers an arm cannot detect the goal's +5 points
        assert power["target"] == 0.05 and effect["mde"] > 0.05
        assert any(w.startswith("UNDERPOWERED: arm 'ten percent'") for w in body["warnings"])

    def test_percentile_cap_among_the_positive_values(self, client, analytics_key,
                                                      exposed: Exposed) -> None:
        with time_machine.travel(LATER, tick=False):
            body = client.get(URL.format(exposed.campaign.id) + "?cap_cost_to_serve=50p",
                              headers=analytics_key).json()
        [cap] = body["caps"]
        costs = np.r_[expected_cost(exposed, "control", 1e9),
                      expected_cost(exposed, "ten percent", 1e9)]
        assert cap["positive_n"] == int((costs > 0).sum())
        assert cap["cap_minor"] == np.percentile(costs[costs > 0], 50) == 10

    def test_imported_power_and_refused_options(self, client, analytics_key,
                                                session) -> None:
        campaign_id = imported_campaign(session)
        body = client.get(URL.format(campaign_id), headers=analytics_key).json()
        [power] = body["power"]  # the imported experiment's one (Holm-corrected) metric
        effect = power["effect"]
        assert power["metric"] == "bought" and power["target"] is None
        assert effect["baseline"] == pytest.approx(0.25)
        h = proportion_effectsize(0.25 + effect["mde"], 0.25)
        assert NormalIndPower().power(h, 200, 0.05, ratio=1.0) == pytest.approx(0.8, abs=1e-9)
        assert body["interim"] is None
        assert not any(w.startswith("UNDERPOWERED") for w in body["warnings"])
        for query, name in (("cap_revenue=99p", "cap_revenue"), ("cuped_days=7", "cuped_days")):
            response = client.get(URL.format(campaign_id) + "?" + query, headers=analytics_key)
            assert response.status_code == 422
            assert response.json()["errors"][0]["loc"] == ["query", name]


def imported_campaign(session) -> int:
    """400 units; arm 1 buys in 40%, arm 0 in 25%."""
    import pandas as pd

    from seeds.experiments import build_spec, import_experiment

    rows = 400
    frame = pd.DataFrame({
        "id": [str(i) for i in range(rows)], "arm": [str(i % 2) for i in range(rows)],
        "bought": [str(int((i // 2) % 20 < (8 if i % 2 else 5))) for i in range(rows)]})
    result = import_experiment(session, frame, build_spec(
        name="Imported power", arm_column="arm", control="0", metrics=["bought:binary"],
        id_column="id"), actor="test")
    session.flush()
    return result.campaign_id


class TestThroughTheCli:
    def test_options(self, exposed: Exposed, report_cli) -> None:
        with time_machine.travel(LATER, tick=False):
            result, body = report_cli(exposed.campaign.id, "--cap-cost-to-serve", "0.04",
                                      "--cuped-days", "7")
        assert result.exit_code == 0, result.output
        assert body["caps"][0]["cap_minor"] == 4 and body["pre_period_days"] == 7

    @pytest.mark.parametrize(("args", "message"), [
        (("--cap-revenue", "99"), None), (("--cap-revenue", "lots"), "--cap-revenue: cannot"),
        (("--cap-incentive-cost", "100p"), "--cap-incentive-cost: a percentile cap"),
        (("--cuped-days", "0"), "--cuped-days: the CUPED pre-period must be 1 to 730")])
    def test_bad_values_name_the_option(self, exposed: Exposed, report_cli, args,
                                        message) -> None:
        with time_machine.travel(LATER, tick=False):
            result, _ = report_cli(exposed.campaign.id, *args)
        if message is None:  # 99 is an amount: 99.00 EUR
            assert result.exit_code == 0, result.output
            return
        assert result.exit_code == 1
        assert message in " ".join(result.output.split())
