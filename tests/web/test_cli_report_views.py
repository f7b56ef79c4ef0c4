"""`channelshift report --correction / --baseline` on a live and an imported campaign,
run in this process against a scratch database of this run's backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner, Result

from tests.analytics import gbstats_reference as gb
from tests.datafiles import shared_data
from tests.scratch import cli_database
from tests.web.api.test_report_views import make_three_arm_campaign
from web.cli import app

ARTEA = shared_data("artea-a_b-experiment.csv")


@pytest.fixture
def cli_db(database: tuple[str, str | None], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    with cli_database(database, tmp_path, monkeypatch, prefix="cs_views") as scratch:
        yield scratch.engine


def channelshift(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def report_json(tmp_path: Path, campaign: str, *options: str) -> dict:
    target = tmp_path / "report.json"
    result = channelshift("report", campaign, "--out", str(target), *options)
    assert result.exit_code == 0, result.output
    return json.loads(target.read_text(encoding="utf-8"))


class TestLiveCampaign:
    def test_bh_and_another_baseline(self, cli_db: Engine, tmp_path: Path) -> None:
        with Session(cli_db) as session:
            live = make_three_arm_campaign(session)
            session.commit()
        body = report_json(tmp_path, "Three arms", "--correction", "bh",
                           "--baseline", "twenty percent", "--segment", "none")
        assert body["correction"] == "bh" and body["baseline"] == "twenty percent"
        adoption = [r for r in body["results"] if r["metric"] == "adoption"]
        assert [r["arm"] for r in adoption] == ["control", "ten percent"]
        expected = multipletests([r["p_value"] for r in adoption], method="fdr_bh")[1]
        assert [r["p_value_bh"] for r in adoption] == pytest.approx(list(expected), rel=1e-12)
        base = gb.ProportionStatistic(*live.totals("twenty percent"))
        for result in adoption:
            reference = gb.effect_bayesian(base, gb.ProportionStatistic(
                *live.totals(result["arm"])), relative=False)
            assert reference is not None
            assert result["bayes_chance_to_beat_baseline"] == pytest.approx(
                reference.chance_to_win, abs=1e-9)
            assert result["bayes_expected_loss"] == pytest.approx(reference.risk[1], rel=1e-7)

    def test_bad_options(self, cli_db: Engine) -> None:
        with Session(cli_db) as session:
            make_three_arm_campaign(session)
            session.commit()
        result = channelshift("report", "Three arms", "--baseline", "half price")
        assert result.exit_code == 1
        assert ("--baseline: unknown arm 'half price'; use one of control, ten percent, "
                "twenty percent") in result.stderr
        result = channelshift("report", "Three arms", "--correction", "sidak")
        assert result.exit_code == 1
        assert "--correction: unknown correction 'sidak'; use one of holm, bh" in result.stderr


class TestImportedExperiment:
    def test_csv_has_the_views_heterogeneity_and_baseline(self, cli_db: Engine,
                                                          tmp_path: Path) -> None:
        imported = channelshift("import", "experiment", str(ARTEA), "--name", "Artea cli",
                                "--arm-column", "test_coupon", "--control", "0",
                                "--metric", "revenue_after:continuous",
                                "--segment", "channel_acq", "--id-column", "id")
        assert imported.exit_code == 0, imported.output
        target = tmp_path / "report.csv"
        result = channelshift("report", imported.stdout.strip(), "--out", str(target),
                              "--baseline", "1", "--segment", "channel_acq")
        assert result.exit_code == 0, result.output
        frame = pd.read_csv(target)
        overall = frame[(frame.segment == "all") & (frame.metric == "revenue_after")]
        assert set(overall.arm) == {"0"}
        values = overall.set_index("statistic").value.astype(float)
        raw = pd.read_csv(ARTEA, encoding="utf-8-sig")
        base, other = (raw[raw.test_coupon == arm].revenue_after.to_numpy(float)
                       for arm in (1, 0))
        reference = gb.effect_bayesian(
            gb.SampleMeanStatistic(n=base.size, sum=base.sum(), sum_squares=(base**2).sum()),
            gb.SampleMeanStatistic(n=other.size, sum=other.sum(),
                                   sum_squares=(other**2).sum()), relative=True)
        assert reference is not None
        assert values["bayes_rel_chance_to_beat_baseline"] == pytest.approx(
            reference.chance_to_win, abs=1e-9)
        assert values["bayes_rel_ci_low"] == pytest.approx(reference.ci[0], rel=1e-9)
        assert {"always_valid_ci_low", "always_valid_ci_high", "always_valid_p_value"} <= set(
            values.index)
        q = frame[(frame.statistic == "heterogeneity_q") & (frame.metric == "revenue_after")]
        assert list(q.segment) == ["channel_acq"] and q.value.astype(float).item() >= 0
        assert "baseline=1" in set(frame.statistic)
