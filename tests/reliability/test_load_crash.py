"""Exactly-once money under load and across a crash, against a real multi-worker server.

Fifty clients send a mix of offers, coupon validations, redemptions (some replayed with
their Idempotency-Key), rollbacks and event batches (some resent with the same event ids)
to uvicorn with two workers on PostgreSQL. Afterwards the database is reconciled with what
every client was told (:func:`tests.reliability.workload.reconcile`). In the crash test
every server process is killed with SIGKILL in the middle of the load and the server is
restarted on the same schema; requests left without an answer are retried as they were.
The last test pins, deterministically, a bug the load test found.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from campaigns.models import Assignment, Campaign
from campaigns.services.campaigns import campaign_arms
from campaigns.services.catalog import load_snapshot
from campaigns.services.epoch import read_config_epoch
from campaigns.services.redemptions import (
    RedemptionOutcome,
    RedemptionRequest,
    autocommit,
    redeem,
    rollback_redemption,
)
from campaigns.types import utcnow
from tests.builders import control_arm, incentive_arm, make_customer, make_running_campaign
from tests.liveserver import LiveServer, live_server
from tests.reliability.workload import (
    REDEEM,
    Crash,
    Figures,
    Run,
    build_world,
    figures,
    reconcile,
    run_workload,
    summary,
)

pytestmark = [pytest.mark.reliability, pytest.mark.postgres_only, pytest.mark.slow]

CLIENTS = 50
LOAD_REQUESTS = 2_000
CRASH_REQUESTS = 1_000
#: The crash comes once this many answers have arrived (about a third of the load).
CRASH_AFTER = 350
REPLAYED_AFTER_RESTART = 60


@pytest.fixture
def server(database: tuple[str, str | None], tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own for each test, not started: the test sets up its world first."""
    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("load and crash tests need PostgreSQL (run with "
                             "CHANNELSHIFT_TEST_DATABASE_URL=postgresql)")
    with live_server(url, tmp_path, workers=2, start=False) as live:
        yield live


def report(name: str, server: LiveServer, run: Run) -> tuple[list[str], Figures]:
    violations = reconcile(server.engine, run)
    numbers = figures(server.engine, run)
    print()
    print(summary(name, run, numbers, violations))
    for violation in violations[:30]:
        print("  VIOLATION", violation)
    return violations, numbers


def assert_limits_were_reached(numbers: Figures) -> None:
    """The load must press on every limit, or a broken one would go unnoticed."""
    assert numbers.refusals["budget_exhausted"] > 0, numbers.refusals
    assert numbers.refusals["code_already_redeemed"] > 0, numbers.refusals
    assert numbers.refusals["customer_limit_reached"] > 0, numbers.refusals
    assert numbers.contested_codes > 0
    assert numbers.replayed > 0 and numbers.rollbacks_applied > 0
    assert numbers.events_duplicates > 0


class TestLoad:
    def test_books_balance_after_mixed_load(self, server: LiveServer) -> None:
        world = build_world(server.engine, name="load", clients=CLIENTS)
        server.start()
        run = run_workload(world, server.url, requests=LOAD_REQUESTS, seed=6)
        violations, numbers = report("load", server, run)
        assert sum(numbers.sent.values()) == LOAD_REQUESTS
        assert violations == [], f"{len(violations)} violations; first: {violations[:10]}"
        assert_limits_were_reached(numbers)


class TestCrash:
    def test_kill_9_mid_load_loses_nothing_acknowledged(self, server: LiveServer) -> None:
        world = build_world(server.engine, name="crash", clients=CLIENTS)
        server.start()

        def kill_all() -> int:
            processes = server.processes()
            server.stop(signal.SIGKILL)
            return len(processes)

        crash = Crash(after=CRASH_AFTER, kill=kill_all, restart=server.start)
        run = run_workload(world, server.url, requests=CRASH_REQUESTS, seed=9, crash=crash,
                           replay_acknowledged=REPLAYED_AFTER_RESTART)
        violations, numbers = report("crash", server, run)
        # The master, every worker (and multiprocessing's resource tracker); stop() checked
        # that none of them outlived the kill.
        assert crash.killed_processes >= 1 + server.workers
        assert crash.restarted_at is not None
        # The kill caught requests in flight, redemptions among them, and each was retried.
        assert numbers.lost[REDEEM] > 0, numbers.lost
        assert sum(numbers.lost_outcomes.values()) == sum(numbers.lost.values())
        replays_after_restart = [c for c in run.calls if c.kind == "replay"
                                 and c.started > crash.restarted_at]
        assert len(replays_after_restart) >= REPLAYED_AFTER_RESTART
        assert violations == [], f"{len(violations)} violations; first: {violations[:10]}"


class TestRedemptionBehindRollback:
    """Found by the load test: a redemption that waited for a rollback's lock on a campaign
    whose budget was spent failed with the budget CHECK constraint (a 500), because its
    UPDATE computed the new total from the row version its snapshot saw."""

    def test_waiting_redemption_gets_the_freed_budget(self, server: LiveServer) -> None:
        with Session(server.engine, expire_on_commit=False) as session:
            campaign = make_running_campaign(session, name="full", budget_minor=800, arms=[
                control_arm(weight=1),
                incentive_arm("four off", "fixed_discount", {"amount_minor": 400}, weight=99)])
            arm = campaign_arms(session, campaign)[1]
            for external_id in ("A", "B", "C"):
                customer = make_customer(session, external_id=external_id)
                assert campaign.id and customer.id and arm.id
                session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                                       arm_id=arm.id))
            session.commit()
            config = load_snapshot(session, epoch=read_config_epoch(session))

        backends: list[int] = []

        def redeem_for(customer: str) -> RedemptionOutcome:
            with Session(server.engine) as session, autocommit(session):
                backends.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                return redeem(session, snapshot=config, idempotency_key=f"key-{customer}",
                              request=RedemptionRequest(customer_id=customer, channel="web",
                                                        campaign_id=campaign.id,
                                                        order_amount_minor=1_000),
                              now=utcnow())

        first = redeem_for("A")
        redeem_for("B")  # the budget is spent: 800 of 800
        outcome: list[RedemptionOutcome | BaseException] = []
        with Session(server.engine) as cancelling:
            rollback_redemption(cancelling, redemption_id=first.body["redemption_id"],
                                now=utcnow())  # holds the campaign row until it commits

            def waiting() -> None:
                try:
                    outcome.append(redeem_for("C"))
                except BaseException as error:  # reported by the assertion below
                    outcome.append(error)

            thread = threading.Thread(target=waiting)
            thread.start()
            wait_until_waiting(cancelling, backends)
            cancelling.commit()
            thread.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], RedemptionOutcome), outcome
        with Session(server.engine) as session:
            books = session.get(Campaign, campaign.id)
            assert books is not None and books.spent_minor == 800


def wait_until_waiting(session: Session, backends: list[int]) -> None:
    """Until the redemption's backend (appended by its thread) waits for a lock, queued
    behind the rollback."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if backends:
            with Session(session.get_bind()) as observer:
                waiting = observer.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid "
                    "AND wait_event_type = 'Lock'"), {"pid": backends[-1]}).scalar_one()
            if waiting:
                return
        time.sleep(0.05)
    raise AssertionError("the redemption never queued behind the rollback")
