"""Guardrails in action: the check pauses, once, with a reason; the scheduler and the CLI run it.

The check opens its own transactions, as it does in the server, so every test gets a
database of its own (PostgreSQL: a fresh schema) with really committed data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import web.guardrails as guardrails_module
from campaigns.db import build_engine, session_scope
from campaigns.models import AuditLog, Campaign
from campaigns.services.campaigns import transition, update_campaign
from campaigns.settings import Settings
from tests.analytics.test_guardrails import harmful_plans, populate
from tests.builders import control_arm, incentive_arm, make_running_campaign
from tests.scratch import scratch_database
from web.app import create_app
from web.guardrails import GuardrailAction, GuardrailOutcome, check_guardrails
from web.scheduler import Job, Scheduler

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    """A migrated database of this test's own and the environment a CLI process needs."""

    engine: Engine
    env: dict[str, str]


@pytest.fixture
def world(database: tuple[str, str | None], tmp_path: Path) -> Iterator[World]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELSHIFT_")}
    env |= {"CHANNELSHIFT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"}
    with scratch_database(database, tmp_path, prefix="cs_guard") as scratch:
        env["CHANNELSHIFT_DATABASE_URL"] = scratch.url
        if scratch.schema:
            env["CHANNELSHIFT_DATABASE_SCHEMA"] = scratch.schema
        yield World(scratch.engine, env)


def running_campaign(engine: Engine, name: str, *, harmful: bool = False,
                     budget_spent: bool = False, seed: int = 0, **overrides: Any) -> int:
    """A committed running campaign with 400 exposed customers per arm."""
    with session_scope(engine) as session:
        campaign = make_running_campaign(session, name=name, **overrides)
        populate(session, campaign, plans=harmful_plans() if harmful else None, seed=seed)
        if budget_spent:
            assert campaign.budget_minor is not None
            campaign.spent_minor = campaign.budget_minor
            session.add(campaign)
        assert campaign.id is not None
        return campaign.id


def campaign_state(engine: Engine, campaign_id: int) -> tuple[str, str | None, int]:
    with Session(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign.status, campaign.pause_reason, campaign.config_version


def pauses(engine: Engine, campaign_id: int) -> list[AuditLog]:
    with Session(engine) as session:
        return list(session.exec(select(AuditLog).where(
            AuditLog.entity_type == "campaign", AuditLog.entity_id == campaign_id,
            AuditLog.action == "campaign.paused").order_by(col(AuditLog.id))).all())


def by_campaign(actions: list[GuardrailAction]) -> dict[int, GuardrailAction]:
    return {action.campaign_id: action for action in actions}


class TestCheckGuardrails:
    def test_harmful_campaign_is_paused_with_the_reason(self, world: World) -> None:
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=1)
        harmless = running_campaign(world.engine, "Harmless", seed=2)
        actions = by_campaign(check_guardrails(world.engine))
        assert actions[harmful].outcome is GuardrailOutcome.PAUSED
        assert actions[harmless].outcome is GuardrailOutcome.KEPT
        reason = actions[harmful].reason
        assert reason.startswith("Guardrail harmed: complaints per customer in arm "
                                 "'ten percent': ")
        assert "always-valid 96.7% interval" in reason and "400 and 400 customers" in reason
        assert "churn" not in reason and "revenue" not in reason
        status, pause_reason, _ = campaign_state(world.engine, harmful)
        assert (status, pause_reason) == ("paused", reason)
        audit, = pauses(world.engine, harmful)
        assert audit.actor == "guardrails"
        assert audit.details == {"from": "running", "to": "paused", "reason": reason}
        assert campaign_state(world.engine, harmless)[:2] == ("running", None)
        assert pauses(world.engine, harmless) == []

    def test_budget_spent_campaign_is_paused(self, world: World) -> None:
        spent = running_campaign(world.engine, "Spent", budget_spent=True, seed=3,
                                 budget_minor=123_456)
        action, = check_guardrails(world.engine, actor="cron")
        assert action.outcome is GuardrailOutcome.PAUSED
        assert action.reason == ("Budget spent: EUR 1,234.56 of EUR 1,234.56. Raise the budget "
                                 "to resume.")
        assert campaign_state(world.engine, spent)[:2] == ("paused", action.reason)
        audit, = pauses(world.engine, spent)
        assert audit.actor == "cron" and audit.details["reason"] == action.reason

    def test_a_budget_that_cannot_pay_one_more_redemption_is_spent(self, world: World) -> None:
        with session_scope(world.engine) as session:
            campaign = make_running_campaign(session, name="Mugs", budget_minor=10_000, arms=[
                control_arm(), incentive_arm("mug", "gift", {
                    "item": "Mug", "unit_cost_minor": 800, "inventory": 100})])
            campaign.spent_minor = 9_500
            mugs = campaign.id
        action, = check_guardrails(world.engine, actor="cron")
        assert action.outcome is GuardrailOutcome.PAUSED
        assert action.reason == ("Budget spent: EUR 95.00 of EUR 100.00; the EUR 5.00 left "
                                 "cannot pay one more redemption (arm 'mug' costs EUR 8.00). "
                                 "Raise the budget to resume.")
        assert campaign_state(world.engine, mugs)[:2] == ("paused", action.reason)

    def test_dry_run_changes_nothing(self, world: World) -> None:
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=4)
        spent = running_campaign(world.engine, "Spent", budget_spent=True, seed=5)
        before = {c: campaign_state(world.engine, c) for c in (harmful, spent)}
        actions = by_campaign(check_guardrails(world.engine, dry_run=True))
        assert {a.outcome for a in actions.values()} == {GuardrailOutcome.WOULD_PAUSE}
        assert "complaints per customer" in actions[harmful].reason
        assert actions[spent].reason.startswith("Budget spent")
        assert {c: campaign_state(world.engine, c) for c in (harmful, spent)} == before
        assert pauses(world.engine, harmful) == pauses(world.engine, spent) == []

    def test_running_twice_pauses_once(self, world: World) -> None:
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=6)
        first = check_guardrails(world.engine)
        second = check_guardrails(world.engine)
        assert [a.outcome for a in first] == [GuardrailOutcome.PAUSED]
        assert second == []  # a paused campaign is not running, so not checked again
        assert len(pauses(world.engine, harmful)) == 1

    def test_only_running_live_campaigns_are_checked(self, world: World) -> None:
        paused = running_campaign(world.engine, "Paused by hand", harmful=True, seed=7)
        with session_scope(world.engine) as session:
            campaign = session.get(Campaign, paused)
            assert campaign is not None
            transition(session, campaign=campaign, target="paused", actor="marketer",
                       reason="holiday")
            session.add(Campaign(name="Imported", origin="imported", status="running",
                                 salt="imported"))
        assert check_guardrails(world.engine) == []
        assert campaign_state(world.engine, paused)[:2] == ("paused", "holiday")

    def test_resumed_while_still_harmful_is_paused_again(self, world: World) -> None:
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=8)
        check_guardrails(world.engine)
        with session_scope(world.engine) as session:
            campaign = session.get(Campaign, harmful)
            assert campaign is not None
            transition(session, campaign=campaign, target="running", actor="marketer")
        again, = check_guardrails(world.engine)
        assert again.outcome is GuardrailOutcome.PAUSED
        assert len(pauses(world.engine, harmful)) == 2

    def test_one_failing_campaign_does_not_stop_the_others(
        self, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        import analytics.guardrails

        broken = running_campaign(world.engine, "Broken", seed=9)
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=10)
        real = analytics.guardrails.evaluate_guardrails

        def evaluate(connection: Any, campaign_id: int, **kwargs: Any) -> Any:
            if campaign_id == broken:
                raise RuntimeError("statistics table is corrupt")
            return real(connection, campaign_id, **kwargs)

        monkeypatch.setattr(analytics.guardrails, "evaluate_guardrails", evaluate)
        with caplog.at_level(logging.ERROR, logger="channelshift.guardrails"):
            actions = by_campaign(check_guardrails(world.engine))
        assert actions[broken].outcome is GuardrailOutcome.FAILED
        assert "statistics table is corrupt" in actions[broken].reason
        assert actions[harmful].outcome is GuardrailOutcome.PAUSED
        assert any("Broken" in r.getMessage() and r.exc_info for r in caplog.records)
        assert campaign_state(world.engine, broken)[0] == "running"

    def test_a_change_during_the_check_is_not_overridden(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The marketer drops the complaints guardrail while the statistics are being read."""
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=11)
        real = guardrails_module._decide

        def decide_then_edit(*args: Any, **kwargs: Any) -> Any:
            verdict = real(*args, **kwargs)
            with session_scope(world.engine) as session:
                campaign = session.get(Campaign, harmful)
                update_campaign(session, campaign=campaign, actor="marketer",
                                campaign_update={"guardrails": ["revenue"]})
            return verdict

        monkeypatch.setattr(guardrails_module, "_decide", decide_then_edit)
        action, = check_guardrails(world.engine)
        assert action.outcome is GuardrailOutcome.SKIPPED
        assert "changed during the check" in action.reason
        assert campaign_state(world.engine, harmful)[0] == "running"
        monkeypatch.setattr(guardrails_module, "_decide", real)
        kept, = check_guardrails(world.engine)  # revenue alone shows no harm
        assert kept.outcome is GuardrailOutcome.KEPT

    def test_two_checkers_at_once_pause_once(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Both checkers decide to pause before either writes: the row lock lets one win."""
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=12)
        both_decided = threading.Barrier(2, timeout=60)
        real = guardrails_module._decide

        def decide_together(*args: Any, **kwargs: Any) -> Any:
            verdict = real(*args, **kwargs)
            both_decided.wait()
            return verdict

        monkeypatch.setattr(guardrails_module, "_decide", decide_together)
        results: list[list[GuardrailAction]] = []
        errors: list[BaseException] = []

        def checker() -> None:
            try:
                results.append(check_guardrails(world.engine))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=checker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        outcomes = sorted(action.outcome.value for actions in results for action in actions)
        assert outcomes == ["paused", "skipped"]
        skipped = next(a for actions in results for a in actions
                       if a.outcome is GuardrailOutcome.SKIPPED)
        assert skipped.reason == "the campaign is already paused"
        assert len(pauses(world.engine, harmful)) == 1


def unused_engine() -> Engine:
    """An engine no query reaches (the check is replaced or never runs)."""
    return build_engine("sqlite://")


class TestScheduler:
    def test_off_when_the_scheduler_or_the_interval_is_off(self, world: World) -> None:
        app = create_app(engine=world.engine, check_schema=False,
                         settings=Settings(scheduler=False, guardrail_interval_seconds=900))
        with TestClient(app):
            assert app.state.scheduler.running is False
        app = create_app(engine=world.engine, check_schema=False,
                         settings=Settings(scheduler=True, guardrail_interval_seconds=0))
        with TestClient(app):
            scheduler = app.state.scheduler
            assert "guardrails" not in scheduler.enabled
            assert scheduler.enabled == ["schedules", "draws", "budget"]

    def test_the_server_pauses_a_harmful_campaign_on_its_own(self, world: World) -> None:
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=13)
        app = create_app(engine=world.engine, check_schema=False,
                         settings=Settings(scheduler=True, guardrail_interval_seconds=0.05,
                                           schedule_interval_seconds=0, draw_interval_seconds=0,
                                           budget_interval_seconds=0,
                                           config_refresh_seconds=0))
        with TestClient(app):
            deadline = time.monotonic() + 30
            while campaign_state(world.engine, harmful)[0] != "paused":
                assert time.monotonic() < deadline, "the scheduler never paused the campaign"
                time.sleep(0.05)
            scheduler = app.state.scheduler
        assert scheduler.running is False  # stopped with the app
        audit, = pauses(world.engine, harmful)
        assert audit.actor == "system:guardrails"

    def test_survives_a_failing_check(self, caplog: pytest.LogCaptureFixture) -> None:
        calls: list[float] = []

        def flaky(engine: Engine) -> list[GuardrailAction]:
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise ConnectionError("database restarting")
            return []

        async def run() -> None:
            scheduler = Scheduler(unused_engine(), [Job("guardrails", 0.01, flaky)])
            scheduler.start()
            while scheduler.runs["guardrails"] < 3:
                await asyncio.sleep(0.01)
            await scheduler.stop()

        with caplog.at_level(logging.ERROR, logger="channelshift.scheduler"):
            asyncio.run(asyncio.wait_for(run(), timeout=30))
        assert len(calls) >= 3
        assert any("scheduler job 'guardrails' failed" in r.getMessage() and r.exc_info
                   for r in caplog.records)

    def test_jitter_spreads_the_runs(self) -> None:
        job = Job("guardrails", 900, check_guardrails)
        scheduler = Scheduler(unused_engine(), [job], rng=random.Random(1))
        delays = [scheduler.next_delay(job) for _ in range(1_000)]
        assert 810 <= min(delays) < 830 and 870 < max(delays) <= 990
        with pytest.raises(ValueError, match="interval_seconds"):
            Job("guardrails", -1, check_guardrails)


def run_cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "web.cli", *args], env=world.env, cwd=ROOT,
                          text=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.slow
class TestCli:
    def test_check_prints_what_it_paused_and_why(self, world: World) -> None:
        harmful = running_campaign(world.engine, "Complaints up", harmful=True, seed=14)
        running_campaign(world.engine, "Harmless", seed=15)

        dry = run_cli(world, "guardrails", "check", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would pause campaign {harmful} 'Complaints up': Guardrail harmed: " \
               "complaints per customer in arm 'ten percent'" in dry.stdout
        assert "checked 2 running campaigns: 1 would be paused (dry run), 1 fine" in dry.stdout
        assert campaign_state(world.engine, harmful)[0] == "running"

        real = run_cli(world, "guardrails", "check")
        assert real.returncode == 0, real.stderr
        assert f"paused campaign {harmful} 'Complaints up': Guardrail harmed: " in real.stdout
        assert "checked 2 running campaigns: 1 paused, 1 fine" in real.stdout
        status, reason, _ = campaign_state(world.engine, harmful)
        assert status == "paused" and reason is not None and reason in real.stdout
        assert pauses(world.engine, harmful)[0].actor == "cli:guardrails"
