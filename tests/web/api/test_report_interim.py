"""A running campaign's report is interim until every exposed customer's window has passed.

The story moves the clock with time-machine: a campaign with a 30-day window, exposing
customers over its first 10 days, read through ``GET /api/v1/campaigns/{id}/report`` and
``channelshift report`` on day 10 (nobody's window complete), day 35 (the first half's
windows complete) and day 41 after it ended (final).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from analytics import queries
from campaigns.models import Arm, Assignment, Campaign, Channel, ChannelEvent, Stage
from campaigns.services.campaigns import transition
from tests.builders import ACTOR, control_arm, make_customer, make_running_campaign, percent_arm
from tests.web.api.test_economics import SessionEngine
from web import cli

#: The campaign starts here; its goal observes each customer for 30 days.
T0 = datetime(2027, 3, 1, tzinfo=UTC)
WINDOW_DAYS = 30
PER_ARM = 40
URL = "/api/v1/campaigns/{}/report"


class Exposed:
    """The campaign and, per arm, when each of its customers was first exposed."""

    def __init__(self, campaign: Campaign, exposed_at: dict[str, list[datetime]]) -> None:
        self.campaign = campaign
        self.exposed_at = exposed_at

    def complete_by_arm(self, now: datetime) -> dict[str, int]:
        """Counted here from the exposure times the test wrote, not by the database."""
        cutoff = now - timedelta(days=WINDOW_DAYS)
        return {arm: sum(moment <= cutoff for moment in times)
                for arm, times in self.exposed_at.items()}


def used_web(index: int) -> bool:
    """Every third control customer (even indexes), every second treated one (odd)."""
    return (index // 2) % (3 if index % 2 == 0 else 2) == 0


@pytest.fixture
def exposed(session: Session) -> Exposed:
    return make_exposed(session)


def make_exposed(session: Session) -> Exposed:
    """Launched at T0, exposing 80 customers evenly over days 0-10, alternating arms;
    :func:`used_web` ones use the web an hour after exposure."""
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        campaign = make_running_campaign(
            session, name="Interim story", starts_at=T0, ends_at=T0 + timedelta(days=10),
            arms=[control_arm(weight=50), percent_arm("ten percent", weight=50)])
    arms = {arm.name: arm for arm in session.exec(
        select(Arm).where(Arm.campaign_id == campaign.id))}
    web = session.exec(select(Channel).where(Channel.key == "web")).one()
    after_sale = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    step = timedelta(days=10) / (2 * PER_ARM)
    exposed_at: dict[str, list[datetime]] = {"control": [], "ten percent": []}
    for index in range(2 * PER_ARM):
        arm = "control" if index % 2 == 0 else "ten percent"
        moment = T0 + index * step
        customer = make_customer(session, external_id=f"interim-{index}")
        session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                               arm_id=arms[arm].id, first_exposed_at=moment))
        exposed_at[arm].append(moment)
        if used_web(index):
            session.add(ChannelEvent(client_event_id=f"interim-web-{index}",
                                     customer_id=customer.id, channel_id=web.id,
                                     stage_id=after_sale.id, kind="interaction",
                                     occurred_at=moment + timedelta(hours=1), cost_minor=10))
    session.flush()
    return Exposed(campaign, exposed_at)


@pytest.fixture
def report_cli(engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Callable[..., Any]:
    return make_report_cli(engine, session, monkeypatch, tmp_path)


def make_report_cli(engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path) -> Callable[..., Any]:
    """``channelshift report`` in this process (so time-machine moves its clock), reading
    the test's own transaction."""
    monkeypatch.setattr(cli, "get_engine", lambda: SessionEngine(engine, session))
    monkeypatch.setattr(cli, "_ensure_schema", lambda: None)
    monkeypatch.setattr(queries, "report_view", lambda _engine: nullcontext(session.connection()))
    runner = CliRunner()

    def run(campaign_id: int, *args: str) -> Any:
        out = tmp_path / "report.json"
        result = runner.invoke(cli.app, ["report", str(campaign_id), "--out", str(out), *args],
                               env={"COLUMNS": "300"})
        return result, (json.loads(out.read_text()) if result.exit_code == 0 else None)

    return run


def interim_methods(body: dict[str, Any]) -> str:
    return body["methods"][0]


class TestInterimReport:
    def test_day_10_of_a_30_day_window(self, client, analytics_key, exposed: Exposed,
                                       report_cli) -> None:
        now = T0 + timedelta(days=10)
        with time_machine.travel(now, tick=False):
            body = client.get(URL.format(exposed.campaign.id), headers=analytics_key).json()
            result, from_cli = report_cli(exposed.campaign.id)
        assert result.exit_code == 0, result.output
        for report in (body, from_cli):
            interim = report["interim"]
            assert interim["exposed"] == 2 * PER_ARM and interim["complete"] == 0
            assert interim["complete_by_arm"] == {"control": 0, "ten percent": 0}
            assert interim["exposed_by_arm"] == {"control": PER_ARM, "ten percent": PER_ARM}
            assert interim["still_running"] is True and interim["window_days"] == WINDOW_DAYS
            # The last exposure was an eighth of a day before now: its window ends 30 days on.
            last = max(max(times) for times in exposed.exposed_at.values())
            assert interim["windows_complete_at"] == (
                last + timedelta(days=WINDOW_DAYS)).isoformat().replace("+00:00", "Z")
            # Methods no longer claim 30 days of observation for everyone.
            methods = interim_methods(report)
            assert "observed for 30 days from their first exposure" not in methods
            assert methods.startswith("Intention to treat, interim:")
            assert f"0 of {2 * PER_ARM} have a complete 30-day window" in methods
            assert report["warnings"][0].startswith(
                f"INTERIM RESULTS: 0 of {2 * PER_ARM} exposed customers")
            # Every exposed customer is compared over the days observed so far.
            adoption = next(r for r in report["results"] if r["metric"] == "adoption")
            assert adoption["n_control"] == adoption["n_treatment"] == PER_ARM
        assert body["interim"] == from_cli["interim"]

    def test_day_35_counts_the_complete_windows(self, client, analytics_key,
                                                exposed: Exposed, report_cli) -> None:
        now = T0 + timedelta(days=35)
        expected = exposed.complete_by_arm(now)
        assert 0 < sum(expected.values()) < 2 * PER_ARM  # the story needs both kinds
        with time_machine.travel(now, tick=False):
            body = client.get(URL.format(exposed.campaign.id) + "?format=csv",
                              headers=analytics_key)
            result, from_cli = report_cli(exposed.campaign.id)
        assert result.exit_code == 0, result.output
        assert from_cli["interim"]["complete_by_arm"] == expected
        assert from_cli["interim"]["complete"] == sum(expected.values())
        rows = [line.split(",") for line in body.text.splitlines()]
        tidy = {(row[1], row[4]): row[5] for row in rows if row[3] == "interim"}
        for arm, count in expected.items():
            assert int(tidy[(arm, "n_complete_window")]) == count
            assert int(tidy[(arm, "n_exposed")]) == PER_ARM
        assert tidy[("all", "interim")] == "1"

    def test_final_once_ended_and_every_window_passed(self, client, analytics_key,
                                                      session: Session, exposed: Exposed,
                                                      report_cli) -> None:
        with time_machine.travel(T0 + timedelta(days=10, hours=1), tick=False):
            transition(session, campaign=exposed.campaign, target="ended", actor=ACTOR)
        # Ended, but the last customers are still inside their window: still interim.
        with time_machine.travel(T0 + timedelta(days=39), tick=False):
            body = client.get(URL.format(exposed.campaign.id), headers=analytics_key).json()
        assert body["interim"]["still_running"] is False
        assert 0 < body["interim"]["complete"] < 2 * PER_ARM
        with time_machine.travel(T0 + timedelta(days=41), tick=False):
            body = client.get(URL.format(exposed.campaign.id), headers=analytics_key).json()
            result, from_cli = report_cli(exposed.campaign.id)
        assert result.exit_code == 0, result.output
        for report in (body, from_cli):
            assert report["interim"] is None
            assert not any(w.startswith("INTERIM") for w in report["warnings"])
            assert "observed for 30 days from their first exposure" in interim_methods(report)

    def test_html_and_verdicts_say_interim(self, client, analytics_key,
                                           exposed: Exposed) -> None:
        with time_machine.travel(T0 + timedelta(days=10), tick=False):
            html = client.get(URL.format(exposed.campaign.id) + "?format=html",
                              headers=analytics_key).text
        assert 'class="banner caution"' in html and "INTERIM RESULTS" in html
        assert "Interim: ten percent: adoption" in html
