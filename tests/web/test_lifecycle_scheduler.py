"""Time drives the lifecycle, with nobody calling anything: stories told over the HTTP API
and the UI of a server whose scheduler runs, with the clock moved by time-machine.

The scheduler opens its own transactions, so every test gets a committed scratch database
(PostgreSQL: a schema of its own). The app runs in this process with its lifespan (a
TestClient used as a context manager), which is what starts the scheduler in production:
nothing in these tests calls a job directly, so they fail if the server never runs it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from campaigns.db import session_scope
from campaigns.models import AuditLog, Campaign, LotteryDraw, Role
from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import transition
from campaigns.settings import Settings
from campaigns.types import utcnow
from tests.builders import (
    control_arm,
    customer_id_in_arm,
    incentive_arm,
    make_campaign,
    make_goal,
    make_running_campaign,
    percent_arm,
)
from tests.liveserver import live_server
from tests.scratch import Scratch, cli_database, scratch_database
from tests.web.ui.conftest import SECRET_KEY, make_user, sign_in
from web.app import create_app
from web.cli import app as cli
from web.scheduler import LifecycleAction, Outcome, tick
from web.ui.auth import UiState
from web.ui.settings import UiSettings

T = TypeVar("T")

#: A scheduler that acts within a fraction of a second (production: every 30 s).
QUICK = 0.05


@pytest.fixture
def scratch(database: tuple[str, str | None], tmp_path: Path) -> Iterator[Scratch]:
    with scratch_database(database, tmp_path, prefix="cs_life") as scratch:
        yield scratch


@pytest.fixture
def world(scratch: Scratch) -> dict[str, Any]:
    """Channels, the after-sale goal (call centre to web), a management and a storefront key."""
    with session_scope(scratch.engine) as session:
        goal = make_goal(session)
        management = create_api_key(session, name="ops", scope="management", actor="test")
        storefront = create_api_key(session, name="shop", scope="storefront", actor="test")
        return {"goal_id": goal.id,
                "management": {"Authorization": f"Bearer {management.secret}"},
                "storefront": {"Authorization": f"Bearer {storefront.secret}"}}


def scheduler_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "config_refresh_seconds": 0, "scheduler": True, "schedule_interval_seconds": QUICK,
        "draw_interval_seconds": QUICK, "budget_interval_seconds": QUICK,
        "guardrail_interval_seconds": 0}
    return Settings(**(values | overrides))


@contextmanager
def serving(engine: Engine, tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    """The app with its lifespan running (so its scheduler too), as the server runs it."""
    app = create_app(engine=engine, check_schema=False, settings=scheduler_settings(**overrides))
    app.state.ui = UiState(UiSettings(secret_key=SECRET_KEY), tmp_path)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def eventually(check: Callable[[], T | None], what: str, *, seconds: float = 10) -> T:
    """Poll ``check`` until it gives a truthy value; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"after {seconds} s: {what}"
        time.sleep(0.02)


def status_of(client: TestClient, world: dict[str, Any], campaign_id: int) -> str:
    response = client.get(f"/api/v1/campaigns/{campaign_id}", headers=world["management"])
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def audit(client: TestClient, world: dict[str, Any], campaign_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/campaigns/{campaign_id}/audit",
                          headers=world["management"], params={"limit": 200})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def offered_campaigns(client: TestClient, world: dict[str, Any], customer: str) -> list[int]:
    response = client.get(f"/api/v1/customers/{customer}/offers", headers=world["storefront"],
                          params={"channel": "call_centre", "stage": "after_sale"})
    assert response.status_code == 200, response.text
    return [offer["campaign_id"] for offer in response.json()["offers"]]


def redeem(client: TestClient, world: dict[str, Any], customer: str, campaign_id: int,
           **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/redemptions", headers={
        **world["storefront"], "Idempotency-Key": uuid.uuid4().hex},
        json={"customer_id": customer, "channel": "web", "campaign_id": campaign_id, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_campaign(client: TestClient, world: dict[str, Any], *, name: str,
                    starts_at: datetime, ends_at: datetime, arms: list[dict[str, Any]],
                    budget_minor: int = 100_000) -> int:
    response = client.post("/api/v1/campaigns", headers=world["management"], json={
        "name": name, "goal_id": world["goal_id"], "starts_at": starts_at.isoformat(),
        "ends_at": ends_at.isoformat(), "budget_minor": budget_minor, "arms": arms})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def move(client: TestClient, world: dict[str, Any], campaign_id: int, to: str) -> None:
    response = client.post(f"/api/v1/campaigns/{campaign_id}/transitions",
                           headers=world["management"], json={"to": to})
    assert response.status_code == 200, response.text


def treated_customer(engine: Engine, campaign_id: int, arm: str, *, prefix: str = "C") -> str:
    with Session(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return customer_id_in_arm(session, campaign, arm, prefix=prefix)


class TestSchedulesRunThemselves:
    def test_a_scheduled_campaign_starts_and_ends_on_its_own(
        self, scratch: Scratch, world: dict[str, Any], tmp_path: Path
    ) -> None:
        now = utcnow()
        starts_at, ends_at = now + timedelta(hours=1), now + timedelta(hours=3)
        with serving(scratch.engine, tmp_path) as client:
            campaign_id = create_campaign(client, world, name="Winter self-service",
                                          starts_at=starts_at, ends_at=ends_at,
                                          arms=[control_arm(), percent_arm()])
            move(client, world, campaign_id, "scheduled")
            customer = treated_customer(scratch.engine, campaign_id, "ten percent")
            assert offered_campaigns(client, world, customer) == []

            with time_machine.travel(starts_at + timedelta(seconds=1), tick=True):
                eventually(lambda: status_of(client, world, campaign_id) == "running",
                           "the campaign did not start at its start time")
                assert offered_campaigns(client, world, customer) == [campaign_id]

            with time_machine.travel(ends_at + timedelta(seconds=1), tick=True):
                eventually(lambda: status_of(client, world, campaign_id) == "ended",
                           "the campaign did not end at its end time")
                assert offered_campaigns(client, world, customer) == []

            trail = audit(client, world, campaign_id)
        automatic = [(entry["action"], entry["actor"], entry["details"]["reason"])
                     for entry in trail if entry["actor"] == "system:scheduler"]
        assert automatic == [("campaign.running", "system:scheduler", "start time reached"),
                             ("campaign.ended", "system:scheduler", "end time reached")]


LOTTERY = {"prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 29_900,
                       "inventory": 1, "odds": {"numerator": 1, "denominator": 100}},
                      {"key": "voucher", "name": "Voucher", "value_minor": 2_000,
                       "inventory": 2, "odds": {"numerator": 1, "denominator": 10}}],
           "entry_rule": {"event": "redemption"}}


def draws_of(engine: Engine, campaign_id: int) -> list[LotteryDraw]:
    with Session(engine) as session:
        return list(session.exec(select(LotteryDraw).where(
            LotteryDraw.campaign_id == campaign_id).order_by(LotteryDraw.id)).all())


class TestDrawsRunOnTheirDate:
    def test_the_server_draws_once_at_the_announced_date(
        self, scratch: Scratch, world: dict[str, Any], tmp_path: Path
    ) -> None:
        now = utcnow()
        draw_at = now + timedelta(days=2)
        config = {**LOTTERY, "draw_at": draw_at.isoformat()}
        # Two server processes' schedulers at once: the draw still happens once.
        with serving(scratch.engine, tmp_path) as client, \
                serving(scratch.engine, tmp_path / "second"):
            campaign_id = create_campaign(
                client, world, name="Win a tablet", starts_at=now + timedelta(minutes=1),
                ends_at=now + timedelta(days=7),
                arms=[control_arm(), incentive_arm("draw", "lottery", config)])
            move(client, world, campaign_id, "scheduled")
            move(client, world, campaign_id, "running")
            customers = [treated_customer(scratch.engine, campaign_id, "draw", prefix=f"L{i}-")
                         for i in range(4)]
            for customer in customers:
                assert offered_campaigns(client, world, customer) == [campaign_id]
                redeem(client, world, customer, campaign_id)

            early = client.post(f"/api/v1/campaigns/{campaign_id}/draws",
                                headers=world["management"])
            assert early.status_code == 409, early.text
            assert early.json()["code"] == "draw_not_due"
            assert draws_of(scratch.engine, campaign_id) == []

            with time_machine.travel(draw_at + timedelta(seconds=1), tick=True):
                draw = eventually(lambda: draws_of(scratch.engine, campaign_id),
                                  "the server did not run the draw at its date")[0]
                # a few more rounds of both schedulers: still that one draw
                time.sleep(QUICK * 10)
                assert [d.id for d in draws_of(scratch.engine, campaign_id)] == [draw.id]
                url = f"/api/v1/campaigns/{campaign_id}/draws/{draw.id}"
                shown = client.get(url, headers=world["management"]).json()
                verified = client.post(f"{url}/verify", headers=world["management"]).json()
        assert shown["drawn_by"] == "system:scheduler"
        assert len(shown["seed"]) == 32 and int(shown["seed"], 16) >= 0
        assert len(shown["winners"]) == 3
        assert {w["customer_id"] for w in shown["winners"]} <= set(customers)
        assert verified["verified"] is True


class TestBudgetSpentPauses:
    def test_a_budget_that_cannot_pay_one_more_pauses_the_campaign(
        self, scratch: Scratch, world: dict[str, Any], tmp_path: Path
    ) -> None:
        now = utcnow()
        five_off = incentive_arm("five off", "fixed_discount", {"amount_minor": 500})
        with session_scope(scratch.engine) as session:
            make_user(session, role=Role.MARKETER)
        with serving(scratch.engine, tmp_path) as client:
            campaign_id = create_campaign(
                client, world, name="Five off on the web", starts_at=now + timedelta(minutes=1),
                ends_at=now + timedelta(days=7), arms=[control_arm(), five_off],
                budget_minor=1_200)
            move(client, world, campaign_id, "scheduled")
            move(client, world, campaign_id, "running")
            for i in range(2):
                customer = treated_customer(scratch.engine, campaign_id, "five off",
                                            prefix=f"B{i}-")
                assert offered_campaigns(client, world, customer) == [campaign_id]
                assert redeem(client, world, customer, campaign_id,
                              order_amount_minor=2_000)["cost_minor"] == 500
            # EUR 2.00 left cannot pay one more EUR 5.00 discount
            eventually(lambda: status_of(client, world, campaign_id) == "paused",
                       "the campaign whose budget cannot pay one more was not paused")
            reason = ("Budget spent: EUR 10.00 of EUR 12.00; the EUR 2.00 left cannot pay "
                      "one more redemption (arm 'five off' costs EUR 5.00). Raise the budget "
                      "to resume.")
            paused = [entry for entry in audit(client, world, campaign_id)
                      if entry["action"] == "campaign.paused"]
            assert [(e["actor"], e["details"]["reason"]) for e in paused] == [
                ("system:scheduler", reason)]
            marketer = sign_in(client, "marketer_user")
            dashboard = marketer.get("/")
            assert dashboard.status_code == 200
            assert f"<strong>Paused:</strong> {reason}".replace("'", "&#39;") \
                in dashboard.text
            page = marketer.get(f"/campaigns/{campaign_id}")
            assert reason.replace("'", "&#39;") in page.text

            # Resuming without more budget is refused; with more, it runs (and stays so).
            resume = client.post(f"/api/v1/campaigns/{campaign_id}/transitions",
                                 headers=world["management"], json={"to": "running"})
            assert resume.status_code == 409, resume.text
            assert "the budget is spent" in resume.json()["message"]
            raised = client.patch(f"/api/v1/campaigns/{campaign_id}",
                                  headers=world["management"], json={"budget_minor": 2_000})
            assert raised.status_code == 200, raised.text
            move(client, world, campaign_id, "running")
            runs = client.app.state.scheduler.runs["budget"]  # type: ignore[attr-defined]
            eventually(lambda: client.app.state.scheduler.runs["budget"] > runs + 2,  # type: ignore[attr-defined]
                       "the budget job did not run again")
            assert status_of(client, world, campaign_id) == "running"



class TestLifecycleTickCommand:
    """``channelshift lifecycle tick``, for deployments whose cron does the scheduler's work."""

    def test_tick_does_what_is_due_and_a_dry_run_nothing(
        self, database: tuple[str, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = utcnow()
        starts_at, ends_at = now + timedelta(hours=1), now + timedelta(hours=5)
        draw_at = now + timedelta(hours=2)
        with cli_database(database, tmp_path, monkeypatch, prefix="cs_tick") as scratch:
            with session_scope(scratch.engine) as session:
                scheduled = make_campaign(session, name="Spring push", starts_at=starts_at,
                                          ends_at=ends_at)
                transition(session, campaign=scheduled, target="scheduled", actor="test")
                spent = make_running_campaign(
                    session, name="Gift cards", budget_minor=10_000, arms=[
                        control_arm(), incentive_arm("gift", "gift", {
                            "item": "Gift card", "unit_cost_minor": 3_000, "inventory": 10})])
                spent.spent_minor = 9_000  # EUR 10.00 left, a gift costs EUR 30.00
                lottery = make_running_campaign(
                    session, name="Prize draw", arms=[control_arm(), incentive_arm(
                        "draw", "lottery", {**LOTTERY, "draw_at": draw_at.isoformat()})])
                ids = (scheduled.id, spent.id, lottery.id)
            scheduled_id, spent_id, lottery_id = ids

            with time_machine.travel(starts_at + timedelta(seconds=1), tick=True):
                dry = CliRunner().invoke(cli, ["lifecycle", "tick", "--dry-run"])
                assert dry.exit_code == 0, dry.output
                assert (f"would start campaign {scheduled_id} 'Spring push': start time "
                        "reached") in dry.stdout
                assert (f"would pause campaign {spent_id} 'Gift cards': Budget spent: "
                        "EUR 90.00 of EUR 100.00; the EUR 10.00 left cannot pay one more "
                        "redemption (arm 'gift' costs EUR 30.00).") in dry.stdout
                assert "Prize draw" not in dry.stdout  # its draw is an hour away
                assert statuses(scratch.engine, ids) == ["scheduled", "running", "running"]

                done = CliRunner().invoke(cli, ["lifecycle", "tick"])
                assert done.exit_code == 0, done.output
                assert f"started campaign {scheduled_id} 'Spring push'" in done.stdout
                assert f"paused campaign {spent_id} 'Gift cards': Budget spent" in done.stdout
                assert statuses(scratch.engine, ids) == ["running", "paused", "running"]
                again = CliRunner().invoke(cli, ["lifecycle", "tick"])
                assert again.exit_code == 0 and "nothing was due" in again.stdout

            with time_machine.travel(draw_at + timedelta(seconds=1), tick=True):
                drawn = CliRunner().invoke(cli, ["lifecycle", "tick"])
                assert drawn.exit_code == 0, drawn.output
                draw, = draws_of(scratch.engine, lottery_id)
                assert (f"drew campaign {lottery_id} 'Prize draw': draw {draw.id}, 0 winners, "
                        f"seed {draw.seed}") in drawn.stdout
                assert draw.drawn_by == "system:scheduler"

            with time_machine.travel(ends_at + timedelta(seconds=1), tick=True):
                ended = CliRunner().invoke(cli, ["lifecycle", "tick"])
                assert ended.exit_code == 0, ended.output
                assert f"ended campaign {scheduled_id} 'Spring push': end time reached" \
                    in ended.stdout
                assert statuses(scratch.engine, ids) == ["ended", "paused", "running"]
            with Session(scratch.engine) as session:
                actors = session.exec(select(AuditLog.action, AuditLog.actor).where(
                    AuditLog.entity_type == "campaign",
                    col(AuditLog.entity_id).in_(ids), AuditLog.actor != "test")
                    .order_by(col(AuditLog.id))).all()
            assert actors == [("campaign.running", "system:scheduler"),
                              ("campaign.paused", "system:scheduler"),
                              ("lottery.draw", "system:scheduler"),
                              ("campaign.ended", "system:scheduler")]


class TestExactlyOnce:
    def test_eight_ticks_at_once_start_a_campaign_and_draw_a_lottery_once(
        self, scratch: Scratch
    ) -> None:
        now = utcnow()
        starts_at = now + timedelta(hours=1)
        with session_scope(scratch.engine) as session:
            make_goal(session)
            campaign = make_campaign(session, name="Spring push", starts_at=starts_at)
            transition(session, campaign=campaign, target="scheduled", actor="test")
            lottery = make_running_campaign(
                session, name="Prize draw", arms=[control_arm(), incentive_arm(
                    "draw", "lottery", {**LOTTERY, "draw_at": starts_at.isoformat()})])
            ids = (campaign.id, lottery.id)
        together = threading.Barrier(8, timeout=60)
        results: list[list[LifecycleAction]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                together.wait()
                results.append(tick(scratch.engine))
            except BaseException as error:
                errors.append(error)

        with time_machine.travel(starts_at + timedelta(seconds=1), tick=True):
            threads = [threading.Thread(target=run) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        assert errors == []
        done = sorted((a.verb, a.campaign_id) for actions in results for a in actions
                      if a.outcome is Outcome.DONE)
        assert done == [("draw", ids[1]), ("start", ids[0])]
        assert len(draws_of(scratch.engine, ids[1])) == 1
        with Session(scratch.engine) as session:
            starts = session.exec(select(AuditLog).where(
                AuditLog.entity_id == ids[0], AuditLog.action == "campaign.running")).all()
        assert [entry.actor for entry in starts] == ["system:scheduler"]


@pytest.mark.slow
class TestSeveralWorkers:
    def test_a_two_worker_server_starts_ends_and_draws_once(
        self, database: tuple[str, str | None], tmp_path: Path
    ) -> None:
        """Real worker processes, each with its scheduler, on the real clock: the schedule
        is seconds away (a server's clock cannot be moved from here)."""
        url, _ = database
        with live_server(url, tmp_path, workers=2, start=False) as server:
            server.env |= {"CHANNELSHIFT_SCHEDULER": "true",
                           "CHANNELSHIFT_SCHEDULE_INTERVAL_SECONDS": "0.1",
                           "CHANNELSHIFT_DRAW_INTERVAL_SECONDS": "0.1",
                           "CHANNELSHIFT_BUDGET_INTERVAL_SECONDS": "0.1"}
            server.start()
            soon = utcnow() + timedelta(seconds=2)
            with session_scope(server.engine) as session:
                make_goal(session)
                campaign = make_campaign(session, name="Flash sale", starts_at=soon,
                                         ends_at=soon + timedelta(seconds=2))
                transition(session, campaign=campaign, target="scheduled", actor="test")
                lottery = make_running_campaign(
                    session, name="Prize draw", arms=[control_arm(), incentive_arm(
                        "draw", "lottery", {**LOTTERY, "draw_at": soon.isoformat()})])
                ids = (campaign.id, lottery.id)
            eventually(lambda: statuses(server.engine, ids)[0] == "ended",
                       "the workers did not start and end the campaign", seconds=60)
            assert len(draws_of(server.engine, ids[1])) == 1
            with Session(server.engine) as session:
                changes = session.exec(select(AuditLog.action, AuditLog.actor).where(
                    AuditLog.entity_id == ids[0], AuditLog.actor != "test")
                    .order_by(col(AuditLog.id))).all()
        assert changes == [("campaign.running", "system:scheduler"),
                           ("campaign.ended", "system:scheduler")]


def statuses(engine: Engine, ids: tuple[int | None, ...]) -> list[str]:
    with Session(engine) as session:
        return [session.get(Campaign, campaign_id).status  # type: ignore[union-attr]
                for campaign_id in ids]
