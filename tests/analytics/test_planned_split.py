"""The sample ratio check tests the planned split, and the report shows planned vs observed.

Imported experiments go through ``channelshift import experiment`` and ``channelshift
report`` run in this process on a scratch database of this run's backend; live campaigns
are written with the test builders. Every chi-square is recomputed with scipy.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from scipy import stats as sps
from sqlalchemy import Engine, insert, select
from sqlmodel import Session
from typer.testing import CliRunner, Result

from analytics.report import build_report
from analytics.reports import planned_split
from campaigns.models import Arm, ArmAllocation, Assignment
from seeds.experiments import UNEQUAL_SPLIT_P
from tests.analytics.test_report import NOW, make_skewed_campaign
from tests.builders import make_customer
from tests.scratch import cli_database
from web.cli import app


def write_experiment(folder: Path, *, control: int, treatment: int) -> Path:
    """A CSV of ``control`` + ``treatment`` units, sorted by arm; every third buys."""
    path = folder / f"split-{control}-{treatment}.csv"
    rows = [("c" if i < control else "t", str(int(i % 3 == 0)), str(i % 11))
            for i in range(control + treatment)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "bought", "score"])
        writer.writerows(rows)
    return path


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def import_options(name: str) -> list[str]:
    return ["--name", name, "--arm-column", "arm", "--control", "c",
            "--metric", "bought:binary", "--score", "score"]


@pytest.fixture
def cli_db(database: tuple[str, str | None], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    with cli_database(database, tmp_path, monkeypatch, prefix="cs_split") as scratch:
        yield scratch.engine


class TestImportedThroughTheCli:
    def test_unequal_arms_need_weights(self, cli_db: Engine, tmp_path: Path) -> None:
        path = write_experiment(tmp_path, control=200, treatment=800)
        refused = cli("import", "experiment", str(path), *import_options("20/80"))
        assert refused.exit_code == 1
        assert "--weights: the arms are clearly unequal ('c' 200, 't' 800 units" \
            in refused.stderr
        assert "--weights 'c=20,t=80'" in refused.stderr
        assert sps.chisquare([200, 800]).pvalue < UNEQUAL_SPLIT_P

    def test_planned_against_observed_in_every_format(self, cli_db: Engine,
                                                      tmp_path: Path) -> None:
        path = write_experiment(tmp_path, control=190, treatment=810)
        imported = cli("import", "experiment", str(path), *import_options("20/80"),
                       "--weights", "c=20,t=80")
        assert imported.exit_code == 0, imported.output
        campaign = imported.stdout.strip()
        out = tmp_path / "report.json"
        assert cli("report", campaign, "--out", str(out)).exit_code == 0
        data = json.loads(out.read_text())
        expected = sps.chisquare([190, 810], [200, 800])
        assert data["srm"]["chi2"] == pytest.approx(float(expected.statistic), rel=1e-12)
        assert data["srm"]["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-9)
        assert data["srm"]["flagged"] is False and data["warnings"] == []
        assert [(a["name"], a["planned_share"], a["observed_share"]) for a in data["arms"]] \
            == [("c", 0.2, 0.19), ("t", 0.8, 0.81)]
        assert data["planned_split"] == {
            "source": "the planned split given with --weights at import", "assumed": False}
        assert any("planned weights (the planned split given with --weights at import)" in m
                   for m in data["methods"])
        rows = self.report_rows(campaign, tmp_path)
        assert rows[("c", "planned_share")] == "0.2" and rows[("c", "observed_share")] == "0.19"
        assert rows[("t", "planned_share")] == "0.8" and rows[("t", "observed_share")] == "0.81"
        assert rows[("all", "planned_split_assumed")] == "0"
        sheet = self.diagnostics(campaign, tmp_path)
        assert [(r["name"], r["planned_share"], r["observed_share"]) for r in sheet] == [
            ("c", 0.2, 0.19), ("t", 0.8, 0.81)]
        html = tmp_path / "report.html"
        assert cli("report", campaign, "--out", str(html)).exit_code == 0
        page = html.read_text()
        assert '<td class="num planned-share">20.0%</td><td class="num observed-share">' \
               '19.0%</td>' in page

    def test_an_assumed_equal_split_is_a_warning(self, cli_db: Engine, tmp_path: Path
                                                 ) -> None:
        path = write_experiment(tmp_path, control=480, treatment=520)
        imported = cli("import", "experiment", str(path), *import_options("even"))
        assert imported.exit_code == 0, imported.output
        out = tmp_path / "even.json"
        assert cli("report", imported.stdout.strip(), "--out", str(out)).exit_code == 0
        data = json.loads(out.read_text())
        assert data["planned_split"]["assumed"] is True
        [warning] = data["warnings"]
        assert warning.startswith("ASSUMPTION: no planned split was recorded")
        assert "observed: c 48.0%, t 52.0%" in warning and "--weights" in warning
        assert [a["planned_share"] for a in data["arms"]] == [0.5, 0.5]
        assert data["srm"]["chi2"] == pytest.approx(
            float(sps.chisquare([480, 520]).statistic), rel=1e-12)

    @staticmethod
    def report_rows(campaign: str, folder: Path) -> dict[tuple[str, str], str]:
        out = folder / "report.csv"
        assert cli("report", campaign, "--out", str(out)).exit_code == 0
        records = csv.DictReader(io.StringIO(out.read_text()))
        return {(r["arm"], r["statistic"]): r["value"] for r in records
                if r["metric"] in ("assignment", "sample_ratio")}

    @staticmethod
    def diagnostics(campaign: str, folder: Path) -> list[dict[str, object]]:
        out = folder / "report.xlsx"
        assert cli("report", campaign, "--out", str(out)).exit_code == 0
        sheet = openpyxl.load_workbook(out)["diagnostics"]
        rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
        header = next(i for i, row in enumerate(rows) if row[:2] == ["name", "is_control"])
        names = rows[header]
        block = []
        for row in rows[header + 1:]:
            if row[0] is None:
                break
            block.append(dict(zip(names, row, strict=True)))
        return block


class TestLive:
    def test_weights_edited_during_the_campaign(self, session: Session) -> None:
        """Period 1 planned 50/50 for 300 customers, period 2 planned 20/80 for 100 more:
        the expected split is their customer-weighted mix, not an equal one."""
        campaign = make_skewed_campaign(session, control=150, treatment=150,
                                        name="Edited weights")
        arms = {arm.name: arm.id for arm in session.exec(
            select(Arm).where(Arm.campaign_id == campaign.id)).scalars()}
        control, treatment = arms["control"], arms["ten percent"]
        session.execute(insert(ArmAllocation), [
            {"campaign_id": campaign.id, "period": 2, "arm_id": control, "weight": 20},
            {"campaign_id": campaign.id, "period": 2, "arm_id": treatment, "weight": 80}])
        for index in range(100):
            customer = make_customer(session, external_id=f"edited-{index}")
            session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                                   arm_id=control if index < 20 else treatment,
                                   allocation_period=2,
                                   first_exposed_at=NOW - timedelta(days=5)))
        session.flush()
        connection = session.connection()
        split = planned_split(connection, campaign.id)
        assert "2 allocation periods" in split.source and split.assumed is False
        report = build_report(connection, campaign.id, now=NOW)
        planned = [300 * 0.5 + 100 * 0.2, 300 * 0.5 + 100 * 0.8]
        assert [a.planned_share for a in report.arms] == pytest.approx([p / 400
                                                                        for p in planned])
        assert [a.observed_share for a in report.arms] == pytest.approx([170 / 400,
                                                                         230 / 400])
        assert report.srm.chi2 == pytest.approx(
            float(sps.chisquare([170, 230], planned).statistic), rel=1e-12)
        assert report.srm.flagged is False

    def test_one_period_uses_its_weights(self, session: Session) -> None:
        campaign = make_skewed_campaign(session, control=200, treatment=100)
        report = build_report(session.connection(), campaign.id, now=NOW)
        assert [a.planned_share for a in report.arms] == [0.5, 0.5]
        assert [a.observed_share for a in report.arms] == pytest.approx([2 / 3, 1 / 3])
        assert report.planned_split is not None
        assert report.planned_split.source == "the arms' planned weights (allocation period 1)"
        assert report.srm.flagged is True
        assert report.srm.chi2 == pytest.approx(float(sps.chisquare([200, 100]).statistic))
        frame = pd.DataFrame(report.records())
        shares = frame[frame.statistic.isin(["planned_share", "observed_share"])]
        assert len(shares) == 4


def test_the_import_refuses_exactly_what_the_report_would_flag() -> None:
    from analytics.stats import SRM_THRESHOLD

    assert UNEQUAL_SPLIT_P == SRM_THRESHOLD
