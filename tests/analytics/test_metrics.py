"""The metric registry is the one place a live metric's facts live.

A small live campaign (adoption, cost, conversions with revenue, complaints, churn and
pre-period activity in both arms) is reported; the report's metrics, their tests, their
Bayesian direction (against gbstats 0.8's EffectBayesianABTest), the Methods text and
the money formats (JPY, no minor digits, by Babel) must all follow :data:`METRICS`.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import openpyxl
import pytest
from babel.numbers import get_currency_precision
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from analytics.exports import MONEY_METRICS, format_money, render_html, write_xlsx
from analytics.guardrails import GUARDRAILS
from analytics.metrics import GOAL_METRICS, METRICS, base_key, lookup, metric_label
from analytics.queries import (
    BINARY_METRICS,
    CAPPABLE_METRICS,
    MEAN_METRICS,
    PRE_PERIOD_METRICS,
    arm_statistics,
    customer_metrics,
    goal_window,
)
from analytics.report import Report, build_report
from analytics.reports import LOWER_IS_BETTER, PRIMARY_METRICS
from analytics.stats import MEANS_METHOD, PROPORTIONS_METHOD, RATIOS_METHOD
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    ChannelEvent,
    Conversion,
    Customer,
    GoalMetric,
    GuardrailMetric,
    Stage,
)
from campaigns.services.channels import channel_by_key
from tests.analytics import gbstats_reference as gb
from tests.builders import make_running_campaign

EXPOSED_AT = datetime.now(UTC) - timedelta(days=10)
#: What the business means by each metric's good direction (the registry must agree).
LOWER_IS_BETTER_IN_THE_BUSINESS = {"source_interactions", "cost_to_serve", "incentive_cost",
                                   "complaints", "churn"}


def expose(session: Session, campaign: Campaign, arm_name: str, *, customers: int,
           adopt_every: int, prefix: str) -> None:
    """``customers`` exposed in ``arm_name`` with every kind of activity a metric reads."""
    arm = session.exec(select(Arm).where(Arm.campaign_id == campaign.id,
                                         Arm.name == arm_name)).one()
    web, call_centre = channel_by_key(session, "web"), channel_by_key(session, "call_centre")
    stage = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    for i in range(customers):
        customer = Customer(external_id=f"{prefix}{i}")
        session.add(customer)
        session.flush()
        session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                               arm_id=arm.id, first_exposed_at=EXPOSED_AT))

        def event(key: str, *, kind: str = "interaction", days: float = 1.0,
                  cost: int | None = None, i: int = i, customer: Customer = customer) -> None:
            channel = web if kind != "interaction" or i % adopt_every == 0 else call_centre
            session.add(ChannelEvent(
                client_event_id=f"{prefix}{i}-{key}", customer_id=customer.id,
                channel_id=channel.id, stage_id=stage.id, kind=kind, cost_minor=cost,
                occurred_at=EXPOSED_AT + timedelta(days=days)))

        event("now", cost=150 + 40 * (i % 5))
        if i % 2:
            event("pre", days=-3, cost=120 + 30 * (i % 3))
        if i % 7 == 0:
            event("complaint", kind="complaint", days=2)
        if i % 11 == 0:
            event("churn", kind="churn", days=3)
        if i % 4 == 0:
            session.add(Conversion(client_event_id=f"{prefix}{i}-order",
                                   customer_id=customer.id, revenue_minor=1500 + 250 * (i % 6),
                                   occurred_at=EXPOSED_AT + timedelta(days=2)))
    session.flush()


@pytest.fixture
def campaign(session: Session) -> Campaign:
    campaign = make_running_campaign(session, budget_minor=500_000)
    campaign.currency = "JPY"
    session.add(campaign)
    session.flush()
    expose(session, campaign, "control", customers=150, adopt_every=5, prefix="C")
    expose(session, campaign, "ten percent", customers=160, adopt_every=3, prefix="T")
    return campaign


@pytest.fixture
def report(session: Session, campaign: Campaign) -> Report:
    return build_report(session.connection(), campaign.id)


class TestOneSource:
    def test_every_metric_the_report_compares_is_registered_and_vice_versa(
            self, report: Report) -> None:
        plain = [r.metric for r in report.results if not r.metric.endswith("_cuped")]
        assert set(plain) == set(METRICS)
        adjusted = {r.metric for r in report.results if r.metric.endswith("_cuped")}
        assert adjusted == {f"{m.key}_cuped" for m in METRICS.values() if m.pre_period}

    def test_every_registered_column_is_produced_by_the_sql(self, session: Session,
                                                            campaign: Campaign) -> None:
        connection = session.connection()
        per = customer_metrics(connection, goal_window(connection, campaign.id))
        row = connection.execute(sa_select(per)).mappings().first()
        assert row is not None
        for metric in METRICS.values():
            columns = ([metric.column] if metric.kind != "ratio"
                       else [metric.numerator, metric.denominator])
            assert None not in columns and set(columns) <= set(row), metric.key  # type: ignore[arg-type]
            if metric.pre_period:
                assert f"{metric.key}_pre" in row

    def test_each_kind_is_the_test_the_report_ran(self, report: Report) -> None:
        method = {"proportion": PROPORTIONS_METHOD, "mean": MEANS_METHOD,
                  "ratio": RATIOS_METHOD}
        for result in report.results:
            if result.metric.endswith("_cuped"):
                continue
            known = METRICS[result.metric]
            assert result.comparison.method == method[known.kind], result.metric
            # Holm and BH correct across the primary metrics only.
            assert (result.p_value_holm is not None) == known.primary, result.metric

    def test_derived_names_are_the_registry_s(self) -> None:
        assert set(MEAN_METRICS) == {m.key for m in METRICS.values() if m.kind != "ratio"}
        assert {m.key for m in METRICS.values() if m.unit == "rate"} == BINARY_METRICS
        assert set(PRE_PERIOD_METRICS) == {m.key for m in METRICS.values() if m.pre_period}
        assert set(CAPPABLE_METRICS) == MONEY_METRICS \
            == {m.key for m in METRICS.values() if m.unit == "money"}
        assert set(PRIMARY_METRICS) == {"adoption", "target_share"}
        assert set(GOAL_METRICS) == {goal.value for goal in GoalMetric}
        assert all(GOAL_METRICS[goal] in PRIMARY_METRICS for goal in GOAL_METRICS)
        assert LOWER_IS_BETTER == LOWER_IS_BETTER_IN_THE_BUSINESS
        for guarded in GuardrailMetric:
            guardrail = GUARDRAILS[guarded.value]
            assert guardrail.harm_direction == (
                1 if guarded.value in LOWER_IS_BETTER_IN_THE_BUSINESS else -1)
            assert guardrail.label == METRICS[guarded.value].noun

    def test_keys_and_labels(self) -> None:
        assert base_key("cost_to_serve_cuped") == "cost_to_serve"
        assert lookup("cost_to_serve_cuped") is METRICS["cost_to_serve"]
        assert lookup("an_imported_metric") is None
        assert metric_label("adoption_cuped") == "Adopted the target channel (CUPED)"
        assert metric_label("an_imported_metric") == "an imported metric"


class TestDirection:
    def test_the_bayesian_view_follows_each_metric_s_direction(self, session: Session,
                                                                report: Report,
                                                                campaign: Campaign) -> None:
        rows = {row["arm"]: row for row in arm_statistics(session.connection(), campaign.id)}
        control, treatment = rows["control"], rows["ten percent"]
        checked = set()
        for result in report.results:
            known = lookup(result.metric)
            if result.metric.endswith("_cuped") or known is None or known.kind == "ratio":
                continue

            def statistic(row: dict, column: str = known.column or "", binary: bool =
                          known.kind == "proportion") -> gb.Statistic:
                if binary:
                    return gb.ProportionStatistic(n=row["n"], sum=row[f"{column}_sum"])
                return gb.SampleMeanStatistic(n=row["n"], sum=row[f"{column}_sum"],
                                              sum_squares=row[f"{column}_sum_sq"])

            inverse = result.metric in LOWER_IS_BETTER_IN_THE_BUSINESS
            reference = gb.effect_bayesian(statistic(control), statistic(treatment),
                                           relative=False, inverse=inverse)
            if reference is None:  # no variance in an arm (incentive cost: none redeemed)
                continue
            assert result.bayesian is not None
            assert result.bayesian.lower_is_better is inverse
            assert result.bayesian.chance_to_beat_baseline == pytest.approx(
                reference.chance_to_win, abs=1e-9)
            assert result.bayesian.expected_loss == pytest.approx(reference.risk[1],
                                                                  rel=1e-7, abs=1e-12)
            checked.add(result.metric)
        assert {"cost_to_serve", "complaints", "churn", "source_interactions",
                "revenue", "adoption"} <= checked

    def test_methods_name_the_lower_is_better_metrics(self, report: Report) -> None:
        bayesian = next(line for line in report.methods if "chance to beat" in line)
        sentence = bayesian[bayesian.index("Lower is better for "):]
        named = sentence.removeprefix("Lower is better for ").rstrip(".").replace(" and ", ", ")
        assert set(named.split(", ")) == LOWER_IS_BETTER_IN_THE_BUSINESS


class TestLabelsAndUnits:
    def test_the_workbook_defines_every_metric_with_its_label(self, report: Report) -> None:
        buffer = io.BytesIO()
        write_xlsx(report, buffer)
        sheet = openpyxl.load_workbook(io.BytesIO(buffer.getvalue()))["diagnostics"]
        values = [[cell.value for cell in row] for row in sheet.iter_rows()]
        start = values.index(["Metrics", *[None] * (len(values[0]) - 1)])
        header = values[start + 1][:6]
        assert header == ["metric", "label", "unit", "kind", "better", "primary"]
        defined = {row[0]: dict(zip(header, row[:6], strict=True))
                   for row in values[start + 2:] if row[0] is not None}
        assert set(defined) == {r.metric for r in report.results}
        for key, metric in METRICS.items():
            assert defined[key]["label"] == metric.label
            assert defined[key]["unit"] == ("JPY" if key in MONEY_METRICS else metric.unit)
            assert defined[key]["better"] == metric.better
            assert defined[key]["primary"] == metric.primary
        assert defined["cost_to_serve_cuped"]["label"] == "Cost to serve per customer (CUPED)"

    def test_money_metrics_use_the_currency_s_digits(self, report: Report) -> None:
        assert get_currency_precision("JPY") == 0
        revenue = next(r for r in report.results
                       if r.metric == "revenue" and r.arm == "ten percent")
        mean = revenue.comparison.treatment_mean
        assert mean is not None and mean > 100
        # The HTML export prints yen without minor digits, not a hundredth of them.
        assert format_money(mean, "JPY") in render_html(report)
        assert "." not in format_money(mean, "JPY").split()[-1]
        buffer = io.BytesIO()
        write_xlsx(report, buffer)
        sheet = openpyxl.load_workbook(io.BytesIO(buffer.getvalue()))["metrics"]
        header = [cell.value for cell in sheet[1]]
        for row in sheet.iter_rows(min_row=2):
            cells = dict(zip(header, row, strict=False))
            if cells["arm"].value == "ten percent" and cells["metric"].value == "revenue":
                assert cells["mean_treatment"].value == pytest.approx(mean)  # 10 ** 0
                assert "JPY" in cells["mean_treatment"].number_format
                break
        else:
            pytest.fail("no revenue row in the workbook")
