"""The redemption service: the same outcomes whether it writes in one statement
(PostgreSQL) or in steps (SQLite), refusals that leave nothing behind, and -- on
PostgreSQL -- the money invariants under truly concurrent autocommitted statements."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, select

from campaigns.asyncdb import SessionConnection
from campaigns.errors import (
    BudgetExhausted,
    ChannelShiftError,
    CodeAlreadyRedeemed,
    Conflict,
    CustomerLimitReached,
)
from campaigns.models import (
    Assignment,
    Campaign,
    CouponCode,
    Customer,
    IncentiveStock,
    LotteryEntry,
    PointsLedger,
    Redemption,
    TrialGrant,
)
from campaigns.services.campaigns import transition
from campaigns.services.catalog import Snapshot, load_snapshot
from campaigns.services.customers import CustomerAttributes
from campaigns.services.epoch import read_config_epoch
from campaigns.services.offers import customer_offers
from campaigns.services.redemptions import (
    REDEEM_AT_ONCE,
    IdempotencyKeyReused,
    RedemptionOutcome,
    RedemptionRequest,
    autocommit,
    redeem,
    rollback_redemption,
)
from campaigns.services.redemptions_postgresql import redeem as redeem_postgresql
from campaigns.types import utcnow
from tests.builders import (
    ACTOR,
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    incentive_arm,
    make_running_campaign,
    percent_arm,
)
from tests.scratch import scratch_database

GIFT = {"item": "Tote bag", "unit_cost_minor": 350, "inventory": 1}
TRIAL = {"product": "Premium", "days": 30, "cost_minor": 500}
LADDER = [{"key": "base", "name": "Base", "threshold_points": 0, "benefits": "-"},
          {"key": "gold", "name": "Gold", "threshold_points": 150, "benefits": "More"}]
LOYALTY = {"tiers": LADDER, "points_per_currency_unit": 1,
           "target_channel_multiplier_bp": 20000, "point_value_minor_per_1000": 10}
LOTTERY = {"prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 29_900, "inventory": 1,
                       "odds": {"numerator": 1, "denominator": 100}}],
           "entry_rule": {"event": "redemption", "entries_per_event": 2}}


def snapshot(session: Session) -> Snapshot:
    return load_snapshot(session, epoch=read_config_epoch(session))


def exposed(session: Session, campaign: Campaign, arm: str, *, prefix: str = "C"
            ) -> tuple[str, str | None]:
    """A customer in ``arm`` who has been shown the offer: (external id, coupon code)."""
    external_id = customer_id_in_arm(session, campaign, arm, prefix=prefix)
    offers = customer_offers(session, snapshot=snapshot(session), external_id=external_id,
                             attributes=CustomerAttributes(), channel_key="web",
                             stage_key=None, now=utcnow())
    offer = next(o for o in offers if o.campaign_id == campaign.id)
    return external_id, offer.code


#: The service's implementations: the ORM one, and on PostgreSQL also the storefront
#: route's, on psycopg's async driver (run here on the session's connection).
PATHS = ["orm", "async"] if os.environ.get("CHANNELSHIFT_TEST_DATABASE_URL", "") \
    .startswith("postgresql") else ["orm"]
_path = "orm"


@pytest.fixture(params=PATHS)
def redemption_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test's redemptions through each implementation in turn."""
    monkeypatch.setattr(sys.modules[__name__], "_path", request.param)
    return str(request.param)


def _redeem(session: Session, **arguments: Any) -> RedemptionOutcome:
    if _path == "orm":
        return redeem(session, **arguments)
    return asyncio.run(redeem_postgresql(SessionConnection(session), **arguments))


def attempt(session: Session, body: dict[str, Any], *, key: str | None = None
            ) -> RedemptionOutcome:
    """One redemption as the web layer runs it: its own unit of work, undone if it fails."""
    session.commit()
    try:
        outcome = _redeem(session, snapshot=snapshot(session),
                          idempotency_key=key or uuid.uuid4().hex,
                          request=RedemptionRequest(**body), now=utcnow())
        session.commit()
        return outcome
    except BaseException:
        session.rollback()
        raise


def books(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Everything a redemption of ``campaign`` may change."""
    session.expire_all()
    return {
        "spent": session.get(Campaign, campaign.id).spent_minor,
        "redemptions": session.exec(select(func.count()).select_from(Redemption)
                                    .where(Redemption.campaign_id == campaign.id)).one(),
        "limits": sorted(a.redemption_count for a in session.exec(
            select(Assignment).where(Assignment.campaign_id == campaign.id))),
        "codes": sorted(c.uses for c in session.exec(
            select(CouponCode).where(CouponCode.campaign_id == campaign.id))),
        "stock": sorted(s.used for s in session.exec(select(IncentiveStock))),
        "trials": session.exec(select(func.count()).select_from(TrialGrant)).one(),
        "points": sorted(c.points for c in session.exec(select(Customer))),
        "entries": session.exec(select(func.count()).select_from(LotteryEntry)).one(),
    }


def offer_body(customer: str, campaign: Campaign, **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer, "channel": "web", "campaign_id": campaign.id,
            "order_amount_minor": 1000, **extra}


@pytest.mark.usefixtures("redemption_path")
class TestApplied:
    def test_charges_budget_and_limit_and_stores_the_response(self, session) -> None:
        campaign = make_running_campaign(session, per_customer_limit=2,
                                         arms=[control_arm(weight=1), percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        outcome = attempt(session, offer_body(customer, campaign, order_id="O-1"))
        assert not outcome.replayed
        assert {k: outcome.body[k] for k in ("status", "benefit_minor", "cost_minor",
                                              "customer_id", "order_id", "arm")} == {
            "status": "applied", "benefit_minor": 100, "cost_minor": 100,
            "customer_id": customer, "order_id": "O-1", "arm": "ten percent"}
        after = books(session, campaign)
        assert (after["spent"], after["redemptions"], after["limits"]) == (100, 1, [1])
        stored = session.get(Redemption, outcome.body["redemption_id"])
        assert stored.response | {"redemption_id": stored.id} == outcome.body
        assert (stored.cost_minor, stored.order_amount_minor, stored.status) == (
            100, 1000, "applied")

    def test_replay_returns_the_stored_body_and_changes_nothing(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1),
                                                        percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        first = attempt(session, offer_body(customer, campaign), key="key-1")
        before = books(session, campaign)
        again = attempt(session, offer_body(customer, campaign), key="key-1")
        assert again == RedemptionOutcome(body=first.body, replayed=True)
        assert books(session, campaign) == before

    def test_same_key_with_another_body_is_refused(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1),
                                                        percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        attempt(session, offer_body(customer, campaign), key="key-2")
        before = books(session, campaign)
        with pytest.raises(IdempotencyKeyReused):
            attempt(session, offer_body(customer, campaign, order_amount_minor=2000),
                    key="key-2")
        assert books(session, campaign) == before

    def test_replay_wins_over_a_campaign_that_stopped(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1),
                                                        percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        first = attempt(session, offer_body(customer, campaign), key="key-3")
        transition(session, campaign=campaign, target="paused", actor=ACTOR)
        assert attempt(session, offer_body(customer, campaign), key="key-3").body == first.body

    def test_code_by_code_alone(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm()])
        customer, code = exposed(session, campaign, "web coupon")
        outcome = attempt(session, {"customer_id": customer, "channel": "web", "code": code,
                                    "order_amount_minor": 2000})
        assert (outcome.body["campaign_id"], outcome.body["cost_minor"]) == (campaign.id, 200)
        assert books(session, campaign)["codes"] == [1]


@pytest.mark.usefixtures("redemption_path")
class TestRefusalsWriteNothing:
    """Each refusal raises its own error and leaves every counter as it was."""

    def test_single_use_code(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm()])
        customer, code = exposed(session, campaign, "web coupon")
        body = {"customer_id": customer, "channel": "web", "code": code,
                "order_amount_minor": 1000}
        attempt(session, body)
        before = books(session, campaign)
        with pytest.raises(CodeAlreadyRedeemed):
            attempt(session, body)
        assert books(session, campaign) == before
        assert (before["codes"], before["spent"], before["redemptions"]) == ([1], 100, 1)

    def test_customer_limit(self, session) -> None:
        campaign = make_running_campaign(session, per_customer_limit=1,
                                         arms=[control_arm(weight=1), percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        attempt(session, offer_body(customer, campaign))
        before = books(session, campaign)
        with pytest.raises(CustomerLimitReached):
            attempt(session, offer_body(customer, campaign))
        assert books(session, campaign) == before
        assert (before["limits"], before["redemptions"]) == ([1], 1)

    def test_budget(self, session) -> None:
        campaign = make_running_campaign(session, budget_minor=150,
                                         arms=[control_arm(weight=1), percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        attempt(session, offer_body(customer, campaign))
        before = books(session, campaign)
        with pytest.raises(BudgetExhausted):
            attempt(session, offer_body(customer, campaign))
        assert books(session, campaign) == before
        assert (before["spent"], before["limits"]) == (100, [1])

    def test_budget_with_a_code(self, session) -> None:
        campaign = make_running_campaign(session, budget_minor=150,
                                         arms=[control_arm(), coupon_arm()])
        first, first_code = exposed(session, campaign, "web coupon", prefix="A")
        second, second_code = exposed(session, campaign, "web coupon", prefix="B")
        attempt(session, {"customer_id": first, "channel": "web", "code": first_code,
                          "order_amount_minor": 1000})
        before = books(session, campaign)
        with pytest.raises(BudgetExhausted):
            attempt(session, {"customer_id": second, "channel": "web", "code": second_code,
                              "order_amount_minor": 1000})
        assert books(session, campaign) == before
        assert (before["spent"], before["codes"]) == (100, [0, 1])

    def test_campaign_stopped_after_the_configuration_was_read(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1),
                                                        percent_arm(weight=99)])
        customer, _ = exposed(session, campaign, "ten percent")
        stale = snapshot(session)
        transition(session, campaign=campaign, target="paused", actor=ACTOR)
        session.commit()
        before = books(session, campaign)
        with pytest.raises(Conflict) as refused:
            _redeem(session, snapshot=stale, idempotency_key="key-4",
                    request=RedemptionRequest(**offer_body(customer, campaign)), now=utcnow())
        session.rollback()
        assert refused.value.code == "campaign_not_running"
        assert "paused" in refused.value.message
        assert books(session, campaign) == before

    def test_gift_out_of_stock(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1), incentive_arm(
            "gift", "gift", GIFT, weight=99)])
        first, _ = exposed(session, campaign, "gift", prefix="G")
        second, _ = exposed(session, campaign, "gift", prefix="H")
        attempt(session, offer_body(first, campaign))
        before = books(session, campaign)
        with pytest.raises(Conflict) as refused:
            attempt(session, offer_body(second, campaign))
        assert refused.value.code == "out_of_stock"
        assert books(session, campaign) == before
        assert (before["stock"], before["spent"], before["redemptions"]) == ([1], 350, 1)

    def test_trial_granted_once(self, session) -> None:
        campaign = make_running_campaign(session, per_customer_limit=5, arms=[
            control_arm(weight=1), incentive_arm("trial", "free_trial", TRIAL, weight=99)])
        customer, _ = exposed(session, campaign, "trial")
        outcome = attempt(session, offer_body(customer, campaign))
        assert outcome.body["trial"]["product"] == "Premium"
        before = books(session, campaign)
        with pytest.raises(Conflict) as refused:
            attempt(session, offer_body(customer, campaign))
        assert refused.value.code == "trial_already_granted"
        assert books(session, campaign) == before
        assert (before["trials"], before["spent"], before["limits"]) == (1, 500, [1])


@pytest.mark.usefixtures("redemption_path")
class TestGrantsAndRollback:
    def test_points_are_credited_and_taken_back_once(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1), incentive_arm(
            "double points", "loyalty", LOYALTY, weight=99)])
        customer, _ = exposed(session, campaign, "double points")
        outcome = attempt(session, offer_body(customer, campaign, order_amount_minor=10_000))
        assert outcome.body["points"] == 200
        owner = session.exec(select(Customer).where(Customer.external_id == customer)).one()
        assert owner.points == 200
        ledger = session.exec(select(PointsLedger).where(
            PointsLedger.customer_id == owner.id)).all()
        assert [(e.delta, e.source_ref) for e in ledger] == [
            (200, f"redemption:{outcome.body['redemption_id']}")]
        for already in (False, True):
            undone = rollback_redemption(session, redemption_id=outcome.body["redemption_id"],
                                         now=utcnow())
            assert undone["already_rolled_back"] is already
        session.refresh(owner)
        assert owner.points == 0
        assert books(session, campaign)["spent"] == 0

    def test_gift_stock_comes_back_on_rollback(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1), incentive_arm(
            "gift", "gift", GIFT, weight=99)])
        first, _ = exposed(session, campaign, "gift", prefix="G")
        second, _ = exposed(session, campaign, "gift", prefix="H")
        outcome = attempt(session, offer_body(first, campaign))
        rollback_redemption(session, redemption_id=outcome.body["redemption_id"], now=utcnow())
        assert attempt(session, offer_body(second, campaign)).body["incentive_type"] == "gift"
        assert books(session, campaign)["stock"] == [1]

    def test_lottery_entries_are_recorded(self, session) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(weight=1), incentive_arm(
            "draw", "lottery", LOTTERY, weight=99)])
        customer, _ = exposed(session, campaign, "draw")
        outcome = attempt(session, offer_body(customer, campaign))
        assert outcome.body["lottery_entries"] == 2
        entry = session.exec(select(LotteryEntry)).one()
        assert (entry.entries, entry.source_ref) == (
            2, f"redemption:{outcome.body['redemption_id']}")


class TestStatement:
    def test_fits_psycopgs_statement_cache(self) -> None:
        # psycopg re-parses longer statements on every execution (psycopg/_queries.py).
        from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

        compiled = str(REDEEM_AT_ONCE.compile(dialect=postgresql.psycopg.dialect()))
        assert len(compiled.encode()) <= MAX_CACHED_STATEMENT_LENGTH

    def test_a_transaction_in_progress_is_joined_not_autocommitted(self, session) -> None:
        # The test session is bound to a connection inside an outer transaction: autocommit
        # must neither switch it nor close it (which would drop the uncommitted customer).
        session.add(Customer(external_id="pending"))
        session.flush()
        with autocommit(session) as on:
            assert on is False
        assert session.exec(select(Customer.external_id).where(
            Customer.external_id == "pending")).one() == "pending"


# --------------------------------------------------------------------------- PostgreSQL

THREADS = 24


@pytest.fixture(scope="module")
def fresh_engine(database: tuple[str, str | None], backend: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A schema of its own: these tests commit, and must not leak rows into other tests."""
    if backend != "postgresql":
        # Deselected on SQLite by the postgres_only marker; run anywhere else, fail loudly.
        raise AssertionError("these tests need PostgreSQL (they are marked postgres_only)")
    with scratch_database(database, tmp_path_factory.mktemp("redeem"), prefix="cs_redeem",
                          pool_size=THREADS) as scratch:
        yield scratch.engine


def committed(engine: Engine, build: Any) -> Any:
    with Session(engine, expire_on_commit=False) as session:
        result = build(session)
        session.commit()
        return result


def race(engine: Engine, bodies: list[tuple[str, dict[str, Any]]]
         ) -> list[RedemptionOutcome | ChannelShiftError]:
    """Run every (key, body) at once, each on its own autocommitted session."""
    with Session(engine) as session:
        config = snapshot(session)
    start = threading.Barrier(len(bodies))

    def one(key: str, body: dict[str, Any]) -> RedemptionOutcome | ChannelShiftError:
        with Session(engine) as session, autocommit(session) as on:
            assert on
            start.wait()
            try:
                return redeem(session, snapshot=config, idempotency_key=key,
                              request=RedemptionRequest(**body), now=utcnow())
            except ChannelShiftError as error:
                return error

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda item: one(*item), bodies))


def kinds(results: list[RedemptionOutcome | ChannelShiftError]) -> Counter[str]:
    return Counter(("replayed" if r.replayed else "applied")
                   if isinstance(r, RedemptionOutcome) else r.code for r in results)


@pytest.mark.postgres_only
class TestConcurrentStatements:
    def test_budget_is_never_overspent(self, fresh_engine) -> None:
        campaign = committed(fresh_engine, lambda s: make_running_campaign(
            s, name="tight", budget_minor=1_000, priority=10,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customers = committed(fresh_engine, lambda s: [
            exposed(s, campaign, "ten percent", prefix=f"B{i}-")[0] for i in range(THREADS)])
        results = race(fresh_engine, [(uuid.uuid4().hex, offer_body(c, campaign))
                                      for c in customers])
        assert kinds(results) == {"applied": 10, "budget_exhausted": THREADS - 10}
        with Session(fresh_engine) as session:
            spent = session.get(Campaign, campaign.id).spent_minor
            costs = session.exec(select(func.sum(Redemption.cost_minor)).where(
                Redemption.campaign_id == campaign.id)).one()
            charged = session.exec(select(func.sum(Assignment.redemption_count)).where(
                Assignment.campaign_id == campaign.id)).one()
        assert spent == costs == 1_000 and charged == 10

    def test_one_key_has_one_effect(self, fresh_engine) -> None:
        campaign = committed(fresh_engine, lambda s: make_running_campaign(
            s, name="one key", priority=20,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customer = committed(fresh_engine, lambda s: exposed(s, campaign, "ten percent",
                                                             prefix="K")[0])
        results = race(fresh_engine, [("same-key", offer_body(customer, campaign))] * THREADS)
        assert kinds(results) == {"applied": 1, "replayed": THREADS - 1}
        assert len({str(r.body) for r in results if isinstance(r, RedemptionOutcome)}) == 1
        with Session(fresh_engine) as session:
            assert session.get(Campaign, campaign.id).spent_minor == 100

    def test_customer_limit_is_never_exceeded(self, fresh_engine) -> None:
        campaign = committed(fresh_engine, lambda s: make_running_campaign(
            s, name="limit", priority=30, per_customer_limit=3,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customer = committed(fresh_engine, lambda s: exposed(s, campaign, "ten percent",
                                                             prefix="L")[0])
        results = race(fresh_engine, [(uuid.uuid4().hex, offer_body(customer, campaign))
                                      for _ in range(THREADS)])
        assert kinds(results) == {"applied": 3, "customer_limit_reached": THREADS - 3}
        with Session(fresh_engine) as session:
            assert session.get(Campaign, campaign.id).spent_minor == 300

    def test_single_use_code_is_redeemed_once(self, fresh_engine) -> None:
        campaign = committed(fresh_engine, lambda s: make_running_campaign(
            s, name="code", priority=40, arms=[control_arm(), coupon_arm()]))
        customer, code = committed(fresh_engine, lambda s: exposed(s, campaign, "web coupon",
                                                                   prefix="S"))
        body = {"customer_id": customer, "channel": "web", "code": code,
                "order_amount_minor": 1000}
        results = race(fresh_engine, [(uuid.uuid4().hex, body) for _ in range(THREADS)])
        assert kinds(results) == {"applied": 1, "code_already_redeemed": THREADS - 1}
        with Session(fresh_engine) as session:
            assert session.exec(select(CouponCode.uses).where(
                CouponCode.code == code)).one() == 1
