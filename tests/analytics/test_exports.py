"""Exports of the campaign report: JSON, tidy CSV, XLSX, self-contained HTML, and the CLI."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from scipy import stats as sps
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.economics import EconomicsResult
from analytics.exports import (
    JSON_FORMAT,
    RECORD_COLUMNS,
    ExportFormat,
    export_bytes,
    export_filename,
    format_money,
    format_p,
    format_pp,
    nice_ticks,
    render_html,
    to_json,
    write_csv,
    write_xlsx,
)
from analytics.guardrails import GuardrailResult
from analytics.report import Report, build_report
from analytics.reports import MetricResult, campaign_results
from analytics.segments import DecileRow, QiniPoint, QiniResult
from analytics.stats import PROPORTIONS_METHOD, Comparison
from seeds.demo import ENDED_CAMPAIGN, TRUE_EFFECTS, DemoSummary
from seeds.experiments import build_spec, import_experiment
from tests.analytics.test_report import (
    NOW,
    make_skewed_campaign,
    rolled_back_connection,
    savepoint_session,
    seed_demo,
)
from tests.scratch import empty_schema

SHEETS = ["summary", "metrics", "segments", "economics", "diagnostics"]


@pytest.fixture(scope="module")
def world(engine: Engine) -> Iterator[Connection]:
    with rolled_back_connection(engine) as connection:
        yield connection


@pytest.fixture(scope="module")
def demo(world: Connection) -> DemoSummary:
    return seed_demo(world)


@pytest.fixture
def session(world: Connection) -> Iterator[Session]:
    with savepoint_session(world) as session:
        yield session


@pytest.fixture
def ended(session: Session, demo: DemoSummary) -> Report:
    return build_report(session.connection(), demo.ended_campaign_id, now=NOW)


def adoption_diffs(session: Session, campaign_id: int) -> dict[str, float]:
    return {r.arm: r.comparison.diff
            for r in campaign_results(session.connection(), campaign_id).results
            if r.metric == "adoption"}


def svg_blocks(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, flags=re.S)


def with_every_section(report: Report) -> Report:
    """The report with hand-made economics, segment, guardrail and Qini sections."""
    comparison = Comparison(method=PROPORTIONS_METHOD, alpha=0.05, control_n=80,
                            treatment_n=40, control_mean=0.2, treatment_mean=0.3, diff=0.1,
                            diff_ci_low=-0.05, diff_ci_high=0.25, p_value=0.2)
    return replace(
        report,
        economics=[EconomicsResult(arm="ten percent", metric="net_benefit", estimate=123456,
                                   ci_low=-2000, ci_high=250000, unit="minor",
                                   method="savings + incremental margin - incentive cost"),
                   EconomicsResult(arm="ten percent", metric="roi", estimate=float("nan"),
                                   ci_low=None, ci_high=None, unit="ratio",
                                   reason="no incentive cost")],
        segments=[MetricResult(arm="ten percent", metric="adoption", segment="region=north",
                               comparison=comparison)],
        guardrails=[GuardrailResult(arm="ten percent", metric="complaints", harm_direction=1,
                                    control_mean=0.01, treatment_mean=0.05, diff=0.04,
                                    ci_low=0.01, ci_high=0.07, p_value_always_valid=0.001,
                                    harm_detected=True, control_n=80, treatment_n=80,
                                    level=0.95)],
        qini=QiniResult(metric="adoption", score="propensity", deciles=[DecileRow(
            arm="ten percent", decile=1, score_min=0.8, score_max=0.99, control_n=20,
            treatment_n=10, control_rate=0.1, treatment_rate=0.4, uplift=0.3,
            uplift_ci_low=0.01, uplift_ci_high=0.59)], curve=[
            QiniPoint(arm="ten percent", fraction_targeted=0.0, incremental_gain=0.0,
                      random_gain=0.0),
            QiniPoint(arm="ten percent", fraction_targeted=1.0, incremental_gain=8.0,
                      random_gain=8.0)], qini_coefficient={"ten percent": 0.12},
            qini_q0={"ten percent": 0.4}, scored_n=160))


# --------------------------------------------------------------------------- demo world


@pytest.mark.slow
class TestDemoExports:
    def test_json_is_plain_and_complete(self, session: Session, ended: Report) -> None:
        data = to_json(ended)
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        assert list(data) == ["format", "campaign", "generated_at", "alpha", "date_range",
                              "methods", "warnings", "arms", "srm", "planned_split",
                              "results", "segments", "economics", "guardrails", "qini",
                              "timeline", "spend", "correction", "baseline", "heterogeneity",
                              "interim", "power", "caps", "pre_period_days"]
        assert data["format"] == JSON_FORMAT
        assert data["campaign"]["name"] == ENDED_CAMPAIGN
        assert data["generated_at"] == "2026-11-22T00:00:00Z"
        assert data["date_range"]["first_exposure"].startswith("2026-09-")
        assert [(a["name"], a["n"]) for a in data["arms"]] == [(a.name, a.n)
                                                               for a in ended.arms]
        assert data["srm"]["p_value"] == ended.srm.p_value
        assert data["srm"]["summary"].startswith("Sample ratio check passed")
        assert data["methods"] == ended.methods
        diffs = adoption_diffs(session, ended.campaign.id)
        assert {r["arm"]: r["diff"] for r in data["results"] if r["metric"] == "adoption"} \
            == diffs
        assert len(data["timeline"]) == len(ended.timeline)
        assert data["spend"][-1]["spent_minor"] == ended.campaign.spent_minor
        assert json.loads(export_bytes(ended, "json")) == data

    def test_csv_round_trips_through_pandas(self, session: Session, ended: Report,
                                            tmp_path: Path) -> None:
        path = tmp_path / "report.csv"
        write_csv(ended, path)
        frame = pd.read_csv(path)
        assert list(frame.columns) == list(RECORD_COLUMNS)
        assert frame.value.dtype == float
        assert len(frame) == len(ended.records())
        rows = frame.set_index(["arm", "segment", "metric", "statistic"]).value
        for arm, diff in adoption_diffs(session, ended.campaign.id).items():
            assert rows[(arm, "all", "adoption", "diff")] == diff  # full precision
        for arm in ended.arms:
            assert rows[(arm.name, "all", "assignment", "n")] == arm.n
        assert rows[("all", "all", "sample_ratio", "srm_p_value")] == ended.srm.p_value
        assert rows[("all", "all", "sample_ratio", "srm_flagged")] == 0
        about = frame[frame.metric.isin(["method", "date_range"])].statistic.tolist()
        assert any(s.startswith("first_exposure=2026-09-") for s in about)
        assert any("Welch's t test" in s for s in about)
        stream = io.StringIO()
        write_csv(ended, stream)
        assert stream.getvalue() == path.read_text(encoding="utf-8")

    def test_xlsx_has_the_five_sheets(self, session: Session, ended: Report,
                                      tmp_path: Path) -> None:
        path = tmp_path / "report.xlsx"
        write_xlsx(ended, path)
        book = openpyxl.load_workbook(path)
        assert book.sheetnames == SHEETS
        metrics = list(book["metrics"].values)
        header = metrics[0]
        diffs = {row[header.index("arm")]: row[header.index("diff")] for row in metrics[1:]
                 if row[header.index("metric")] == "adoption"}
        assert diffs == pytest.approx(adoption_diffs(session, ended.campaign.id))
        summary = dict(list(book["summary"].values)[1:])
        assert summary["campaign"] == ENDED_CAMPAIGN
        assert summary["sample ratio check"].startswith("Sample ratio check passed")
        assert summary["first exposure (UTC)"] == ended.date_range.first_exposure.replace(
            tzinfo=None)
        cells = [cell for row in book["diagnostics"].values for cell in row
                 if cell is not None]
        for needed in ("Sample ratio check", "Sample sizes", "Methods", "Date range (UTC)",
                       "Guardrails (always-valid sequential test)", ended.srm.p_value,
                       *ended.methods):
            assert needed in cells, needed
        for arm in ended.arms:
            assert arm.name in cells and arm.n in cells

    def test_html_is_self_contained_with_charts(self, ended: Report) -> None:
        html = render_html(ended)
        assert html.startswith("<!doctype html>")
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
        assert "http://" not in html and "https://" not in html
        assert "<script" not in html.lower() and "<link" not in html.lower()
        charts = svg_blocks(html)
        assert len(charts) == 3  # forest plot, adoption over time, spend against budget
        for chart in charts:
            ET.fromstring(chart)  # well-formed
        for arm in ended.arms:
            assert arm.name in html and f"{arm.n:,}" in html
        assert "Sample ratio check passed" in html and 'class="banner danger"' not in html
        assert "first exposure 2026-09-" in html
        assert "Wald z test" in html and "Holm" in html
        spent = format_money(ended.campaign.spent_minor, "EUR")
        assert spent in html and "budget EUR 5,000.00" in html
        adoption = next(r for r in ended.results if r.metric == "adoption"
                        and r.arm == next(iter(TRUE_EFFECTS)))
        assert format_pp(adoption.comparison.diff) in html

    def test_every_format_for_the_draft(self, session: Session, demo: DemoSummary) -> None:
        report = build_report(session.connection(), demo.draft_campaign_id, now=NOW)
        html = render_html(report)
        assert "No results yet" in html and svg_blocks(html) == []
        assert to_json(report)["results"] == []
        book = openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx")))
        assert book.sheetnames == SHEETS
        frame = pd.read_csv(io.BytesIO(export_bytes(report, "csv")))
        assert set(frame.metric) >= {"assignment", "sample_ratio", "method"}


# --------------------------------------------------------------------------- small worlds


class TestSampleRatioBanner:
    def test_every_format_shouts(self, session: Session) -> None:
        campaign = make_skewed_campaign(session)
        report = build_report(session.connection(), campaign.id, now=NOW)
        html = render_html(report)
        banner = re.search(r'<div class="banner danger" role="alert">(.*?)</div>', html, re.S)
        assert banner is not None and "SAMPLE RATIO MISMATCH" in banner.group(1)
        assert html.index("banner danger") < html.index('id="summary"')
        assert to_json(report)["srm"]["flagged"] is True
        assert to_json(report)["warnings"][0].startswith("SAMPLE RATIO MISMATCH")
        frame = pd.read_csv(io.BytesIO(export_bytes(report, "csv")))
        flagged = frame[frame.statistic == "srm_flagged"].value
        assert flagged.tolist() == [1.0]
        book = openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx")))
        summary = list(book["summary"].values)
        assert any(row[0] == "warning" and "SAMPLE RATIO MISMATCH" in row[1]
                   for row in summary)


class TestSections:
    def test_sections_from_other_modules_are_rendered(self, session: Session) -> None:
        campaign = make_skewed_campaign(session, control=80, treatment=80)
        report = with_every_section(build_report(session.connection(), campaign.id,
                                                 now=NOW))
        html = render_html(report)
        assert "Economics were not computed" not in html
        assert "EUR 1,234.56" in html and "net benefit" in html and "no incentive cost" in html
        assert "harm detected" in html and "Guardrail harmed: complaints" in html
        assert "region=north" in html and "propensity" in html
        assert len(svg_blocks(html)) == 5  # + segment uplift and Qini curve
        data = to_json(report)
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        assert data["economics"][1]["estimate"] is None  # NaN is not JSON
        assert data["qini"]["deciles"][0]["uplift"] == 0.3
        records = {(r["arm"], r["segment"], r["metric"], r["statistic"]): r["value"]
                   for r in report.records()}
        assert records[("ten percent", "all", "net_benefit", "estimate")] == 123456
        assert records[("ten percent", "all", "complaints", "harm_detected")] == 1
        assert records[("ten percent", "region=north", "adoption", "diff")] == 0.1
        assert records[("ten percent", "all", "adoption", "qini_coefficient")] == 0.12
        assert any("always-valid" in m and "95.00%" in m for m in report.methods)
        assert "Economics, net benefit: savings + incremental margin - incentive cost." in \
            report.methods
        assert any("160 scored units" in m for m in report.methods)
        assert records[("ten percent", "all", "adoption", "qini_q0")] == 0.4
        assert records[("ten percent", "all", "complaints", "n_treatment")] == 80
        book = openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx")))
        economics = list(book["economics"].values)
        # money in major units of the campaign's currency, with a format naming it
        assert economics[1][:4] == ("ten percent", "net_benefit", "EUR", 1234.56)
        assert book["economics"]["D2"].number_format == '#,##0.00 "EUR"'
        segment_cells = [c for row in book["segments"].values for c in row]
        assert "region=north" in segment_cells and "Qini coefficient" in segment_cells

    def test_names_are_escaped_and_formulas_defused(self, session: Session) -> None:
        campaign = make_skewed_campaign(session, control=30, treatment=30,
                                        treatment_arm="=HYPERLINK(1)",
                                        name="<b>Spring</b> & co")
        report = build_report(session.connection(), campaign.id, now=NOW)
        html = render_html(report)
        assert "<b>Spring</b>" not in html and "&lt;b&gt;Spring&lt;/b&gt; &amp; co" in html
        for chart in svg_blocks(html):
            ET.fromstring(chart)
        frame = pd.read_csv(io.BytesIO(export_bytes(report, "csv")))
        assert "'=HYPERLINK(1)" in set(frame.arm)
        book = openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx")))
        cells = [c for row in book["metrics"].values for c in row]
        assert "'=HYPERLINK(1)" in cells and "=HYPERLINK(1)" not in cells


class TestFormatting:
    @pytest.mark.parametrize(("minor", "currency", "expected"), [
        (123456, "EUR", "EUR 1,234.56"), (-5, "EUR", "-EUR 0.05"), (1500, "JPY", "JPY 1,500"),
        (1234, "KWD", "KWD 1.234"), (None, "EUR", "\u2013")])
    def test_money_in_major_units(self, minor, currency, expected) -> None:
        assert format_money(minor, currency) == expected

    def test_rates_in_points_and_p_values(self) -> None:
        assert format_pp(0.0612) == "+6.1 pp" and format_pp(-0.004) == "-0.4 pp"
        assert format_p(0.00001) == "< 0.0001" and format_p(0.0123) == "0.012"
        assert format_p(5e-324, floored=True) == "< 1e-300"

    def test_nice_ticks(self) -> None:
        assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        assert nice_ticks(-0.13, 0.42) == pytest.approx([-0.1, 0, 0.1, 0.2, 0.3, 0.4])
        assert nice_ticks(0, 512_000) == pytest.approx([0, 100_000, 200_000, 300_000,
                                                        400_000, 500_000])

    def test_file_names_and_media_types(self, session: Session) -> None:
        campaign = make_skewed_campaign(session, control=2, treatment=2)
        report = build_report(session.connection(), campaign.id,
                              now=datetime(2026, 3, 4, 23, 59, tzinfo=UTC))
        assert export_filename(report, "html") == f"campaign-{campaign.id}-report-20260304.html"
        assert ExportFormat.XLSX.media_type.endswith("spreadsheetml.sheet")
        assert report.generated_at.date() == date(2026, 3, 4)


# --------------------------------------------------------------------------- command line


def run_cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "web.cli", *args], env=env, text=True,
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
                          cwd=cwd)


@pytest.fixture(scope="class")
def cli_demo(database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `channelshift` environment on its own database holding a small demo world."""
    url, _ = database
    folder = tmp_path_factory.mktemp("cli")
    repository = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELSHIFT_")}
    env |= {"CHANNELSHIFT_DATA_DIR": str(folder / "data"), "COLUMNS": "300",
            "PYTHONPATH": str(repository)}
    with empty_schema(url, prefix="cs_report") as schema:
        if schema is not None:
            env |= {"CHANNELSHIFT_DATABASE_URL": url, "CHANNELSHIFT_DATABASE_SCHEMA": schema}
        seeded = run_cli(env, "demo", "--no-serve", "--customers", "600", cwd=folder)
        assert seeded.returncode == 0, seeded.stderr
        yield env


@pytest.mark.slow
class TestCli:
    def test_writes_reports(self, cli_demo, tmp_path: Path) -> None:
        html = tmp_path / "ended.html"
        by_name = run_cli(cli_demo, "report", ENDED_CAMPAIGN, "--format", "html", "--out",
                          str(html), cwd=tmp_path)
        assert by_name.returncode == 0, by_name.stderr
        assert f"wrote the html report of campaign 1 '{ENDED_CAMPAIGN}' to " \
            f"{html.resolve()}" in by_name.stdout
        # lift, cumulative adoption, spend, and uplift by the default segment (value tier)
        assert len(svg_blocks(html.read_text(encoding="utf-8"))) == 4
        workbook = tmp_path / "ended.xlsx"  # the format follows the extension
        by_id = run_cli(cli_demo, "report", "1", "--out", str(workbook), cwd=tmp_path)
        assert by_id.returncode == 0, by_id.stderr
        assert openpyxl.load_workbook(workbook).sheetnames == SHEETS
        default = run_cli(cli_demo, "report", "2", cwd=tmp_path)  # json, named for the id
        assert default.returncode == 0, default.stderr
        [written] = list(tmp_path.glob("campaign-2-report-*.json"))
        data = json.loads(written.read_text(encoding="utf-8"))
        assert data["campaign"]["name"] == "Pre-sale questions in the app"
        assert [a["n"] for a in data["arms"]] and data["srm"]["p_value"] is not None

    def test_clear_errors(self, cli_demo, tmp_path: Path) -> None:
        unknown = run_cli(cli_demo, "report", "No such campaign", cwd=tmp_path)
        assert unknown.returncode == 1
        assert "campaign 'No such campaign' does not exist" in unknown.stderr
        bad_format = run_cli(cli_demo, "report", "1", "--format", "pdf", cwd=tmp_path)
        assert bad_format.returncode == 1
        assert "unknown format 'pdf': use one of json, csv, xlsx, html" in bad_format.stderr
        missing = tmp_path / "no-such-folder" / "report.csv"
        unwritable = run_cli(cli_demo, "report", "1", "--out", str(missing), cwd=tmp_path)
        assert unwritable.returncode == 1
        assert "cannot write" in unwritable.stderr and "does not exist" in unwritable.stderr
        assert list(tmp_path.iterdir()) == []


class TestImportedExperiment:
    def test_report_of_an_imported_experiment(self, session: Session) -> None:
        rng = np.random.default_rng(7)
        treated = rng.integers(0, 2, 400)
        before = rng.normal(50, 10, 400)
        frame = pd.DataFrame({
            "unit": [f"u{i}" for i in range(400)],
            "arm": np.where(treated == 1, "coupon", "holdout"),
            "bought": (rng.random(400) < 0.2 + 0.1 * treated).astype(int),
            "spend": before * 0.8 + 5 * treated + rng.normal(0, 5, 400),
            "spend_before": before})
        imported = import_experiment(session, frame.astype(str), build_spec(
            name="Imported coupon test", arm_column="arm", control="holdout",
            metrics=["bought:binary", "spend:continuous"], covariates=["spend=spend_before"],
            id_column="unit"), actor="test")
        session.flush()
        report = build_report(session.connection(), imported.campaign_id, now=NOW)
        assert report.campaign.origin == "imported" and report.campaign.goal is None
        assert report.date_range is None and report.timeline == [] and report.spend == []
        assert {a.name: a.n for a in report.arms} == {
            "holdout": int((treated == 0).sum()), "coupon": int((treated == 1).sum())}
        spend = next(r for r in report.results if r.metric == "spend").comparison
        welch = sps.ttest_ind(frame.spend[treated == 1], frame.spend[treated == 0],
                              equal_var=False)
        assert spend.p_value == pytest.approx(welch.pvalue, rel=1e-9)
        assert any("imported covariate (spend by spend_before)" in m for m in report.methods)
        html = render_html(report)
        assert "Not available for imported experiments" in html
        assert "coupon: spend" in html  # a headline: its p-value is Holm-corrected
        assert len(svg_blocks(html)) == 1
        assert json.loads(export_bytes(report, "json"))["campaign"]["origin"] == "imported"
        csv = pd.read_csv(io.BytesIO(export_bytes(report, "csv")))
        assert "p_value_holm" in set(csv[csv.metric == "spend"].statistic)
        assert openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx"))).sheetnames \
            == SHEETS


# --------------------------------------------------------------------------- issue 27 items 7, 14


def _with_lifts(report: Report, **changes: float) -> Report:
    """The report's first result with its comparison's relative-lift figures changed."""
    first = report.results[0]
    return replace(report, results=[replace(first, comparison=replace(
        first.comparison, **changes)), *report.results[1:]])


class TestForestPlot:
    def test_an_estimate_beyond_the_axis_is_marked_and_labelled(self, ended: Report) -> None:
        report = _with_lifts(ended, rel_lift=5.0, rel_lift_ci_low=2.0, rel_lift_ci_high=8.0)
        forest = svg_blocks(render_html(report))[0]
        label = f"{report.results[0].arm} · {report.results[0].metric}"
        assert forest.count('class="clipped"') == 1
        assert "+500.0% (+200.0% to +800.0%) (beyond the axis)" in forest
        assert label in forest
        unclipped = svg_blocks(render_html(ended))[0]
        assert 'class="clipped"' not in unclipped and "beyond the axis" not in unclipped

    def test_a_filled_dot_means_the_drawn_interval_excludes_zero(self, ended: Report) -> None:
        """The caption says the dot reads the relative-lift interval drawn on its row."""
        first = ended.results[0]
        colour = "#2563eb"  # the first treatment arm's colour
        assert first.arm == next(a.name for a in ended.arms if not a.is_control)
        for low, high, filled in ((0.05, 0.30, True), (-0.05, 0.30, False)):
            report = _with_lifts(ended, rel_lift=0.1, rel_lift_ci_low=low,
                                 rel_lift_ci_high=high, diff_ci_low=-0.01,
                                 diff_ci_high=0.02)
            html = render_html(report)
            dots = re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)" r="4.5" fill="([^"]+)"',
                              svg_blocks(html)[0])
            assert (dots[0][1] == colour) is filled
            assert "A filled dot: that relative-lift interval excludes zero" in html


class TestFlooredPValues:
    def test_p_value_floored_reaches_csv_and_xlsx(self, session: Session) -> None:
        """A difference so large its p-value underflows: every file says it is a bound."""
        rows = 8_000
        frame = pd.DataFrame({
            "id": [str(i) for i in range(rows)], "arm": [str(i % 2) for i in range(rows)],
            # arm 1 buys in 70% of units, arm 0 in 10%: z is about 69
            "bought": [str(int((i // 2) % 10 < (7 if i % 2 else 1))) for i in range(rows)]})
        imported = import_experiment(session, frame, build_spec(
            name="Huge effect", arm_column="arm", control="0", metrics=["bought:binary"],
            id_column="id"), actor="test")
        report = build_report(session.connection(), imported.campaign_id, now=NOW)
        bought = next(r for r in report.results if r.metric == "bought")
        assert sps.norm.sf(60) * 2 < 1e-300  # what a double cannot hold
        assert bought.comparison.p_value_floored
        csv_rows = pd.read_csv(io.BytesIO(export_bytes(report, "csv")))
        floored = csv_rows[(csv_rows.metric == "bought")
                           & (csv_rows.statistic == "p_value_floored")].value
        assert floored.tolist() == [1.0]
        book = openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx")))
        values = list(book["metrics"].values)
        header = values[0]
        row = next(r for r in values[1:] if r[header.index("metric")] == "bought")
        assert row[header.index("p_value_floored")] is True
        assert to_json(report)["results"][0]["p_value_floored"] is True
        assert "&lt; 1e-300" in render_html(report)


class TestSegmentMethods:
    def test_methods_state_the_correction_the_table_applies(self, session: Session,
                                                            demo: DemoSummary) -> None:
        report = build_report(session.connection(), demo.ended_campaign_id, now=NOW,
                              segment="value_tier")
        corrected = [s for s in report.segments if s.p_value_holm is not None]
        assert corrected and len(corrected) < len(report.segments)
        statement = next(m for m in report.methods if m.startswith("Segment breakdown"))
        assert f"Holm step-down (family-wise error rate) correction across the breakdown's " \
               f"{len(corrected)} comparisons" in statement
        assert "not corrected for multiplicity" not in statement
        uncorrected = replace(report, segments=[replace(s, p_value_holm=None)
                                                for s in report.segments])
        assert any("exploratory, not corrected for multiplicity" in m
                   for m in uncorrected.methods)


class TestReadableWorkbook:
    def _book(self, report: Report) -> openpyxl.Workbook:
        return openpyxl.load_workbook(io.BytesIO(export_bytes(report, "xlsx")))

    def test_formats_frozen_headers_and_widths(self, ended: Report) -> None:
        book = self._book(ended)
        for name in SHEETS:
            sheet = book[name]
            assert sheet.freeze_panes in ("A2", "A3"), name
            numeric = [cell for row in sheet.iter_rows() for cell in row
                       if isinstance(cell.value, int | float)
                       and not isinstance(cell.value, bool)]
            general = [(cell.coordinate, cell.value) for cell in numeric
                       if cell.number_format == "General"]
            assert general == [], (name, general[:5])
        metrics = book["metrics"]
        header = [cell.value for cell in metrics[1]]
        assert metrics.freeze_panes == "A2"

        def cell(metric: str, column: str) -> openpyxl.cell.Cell:
            row = next(r for r in metrics.iter_rows(min_row=2)
                       if r[header.index("metric")].value == metric)
            return row[header.index(column)]

        adoption = next(r for r in ended.results if r.metric == "adoption")
        assert cell("adoption", "mean_control").number_format == "0.00%"
        assert cell("adoption", "diff").value == pytest.approx(adoption.comparison.diff)
        assert cell("adoption", "rel_lift").number_format == "0.00%"
        assert cell("adoption", "p_value").number_format == "[<0.0001]0.00E+00;0.0000"
        assert cell("adoption", "n_control").number_format == "#,##0"
        revenue = next(r for r in ended.results if r.metric == "revenue")
        assert cell("revenue", "mean_treatment").number_format == '#,##0.00 "EUR"'
        assert cell("revenue", "mean_treatment").value == pytest.approx(
            revenue.comparison.treatment_mean / 100)
        widths = {column: metrics.column_dimensions[letter].width
                  for column, letter in zip(header, "ABCDEFGHIJKLMNOPQRSTUV", strict=False)}
        longest_arm = max(len(r.arm) for r in ended.results)
        assert widths["arm"] >= longest_arm + 2
        assert all(10 <= width <= 60 for width in widths.values())
        assert widths["method"] > widths["n_control"]
        summary = {row[0].value: row[1] for row in book["summary"].iter_rows(min_row=2)}
        assert summary["budget"].value == ended.campaign.budget_minor / 100
        assert summary["budget"].number_format == '#,##0.00 "EUR"'
        sizes = [row for row in book["diagnostics"].iter_rows() if row[0].value == "name"]
        assert sizes  # the sample size table's header
        share = book["diagnostics"].cell(row=sizes[0][0].row + 1, column=4)
        assert share.number_format == "0.00%" and 0 < share.value < 1

    def test_money_takes_the_currency_s_own_digits(self, ended: Report) -> None:
        """JPY has no minor unit: 1,500 minor units are 1,500 yen, written without decimals."""
        report = replace(ended, campaign=replace(ended.campaign, currency="JPY",
                                                 budget_minor=1500))
        summary = {row[0].value: row[1]
                   for row in self._book(report)["summary"].iter_rows(min_row=2)}
        assert summary["budget"].value == 1500
        assert summary["budget"].number_format == '#,##0 "JPY"'
        kwd = replace(ended, campaign=replace(ended.campaign, currency="KWD",
                                              budget_minor=1500))
        summary = {row[0].value: row[1]
                   for row in self._book(kwd)["summary"].iter_rows(min_row=2)}
        assert summary["budget"].value == 1.5
        assert summary["budget"].number_format == '#,##0.000 "KWD"'
        assert format_money(1500, "JPY") == "JPY 1,500"
