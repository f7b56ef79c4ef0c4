"""The offers and redemption routes on PostgreSQL's async pool: what the server runs, on
committed data.

The other API tests run each request inside the test's own transaction, through the same
async code on the session's connection. Here the app runs its lifespan, so requests go
through psycopg's async pool in autocommit, as in production: the offers and redemptions
must be what the ORM path gives, exposures and codes must be recorded once under
concurrent first requests, and a pool whose connections the database killed must heal
without an error.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, col, select

from campaigns.assignment import choose_arm
from campaigns.models import Assignment, Campaign, CouponCode, Customer
from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import campaign_arms
from campaigns.services.coupons import generate_coupon_batch
from campaigns.settings import Settings
from tests.builders import control_arm, coupon_arm, make_goal, make_running_campaign, percent_arm
from tests.scratch import Scratch, scratch_database
from web.app import create_app

pytestmark = pytest.mark.postgres_only


@dataclass(frozen=True)
class World:
    scratch: Scratch
    application_name: str
    key: dict[str, str]
    gold_only: Campaign  # stackable, priority 90, value_tier == gold
    coupons: Campaign  # exclusive, priority 50, everyone


@pytest.fixture(scope="module")
def world(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    assert database[0].startswith("postgresql"), "the async pool is PostgreSQL's"
    name = f"cs_async_{secrets.token_hex(4)}"
    with scratch_database(database, Path(tmp_path_factory.mktemp("async")), prefix=name,
                          query=f"application_name={name}") as scratch:
        with Session(scratch.engine, expire_on_commit=False) as session:
            gold_only = make_running_campaign(
                session, name="Gold web push", stacking="stackable", priority=90,
                goal=make_goal(session, name="Gold to web", rule="value_tier == gold"),
                arms=[control_arm(weight=30), percent_arm(weight=70)], budget_minor=10**9)
            coupons = make_running_campaign(
                session, name="Coupons for all", priority=50, per_customer_limit=1,
                arms=[control_arm(weight=30), coupon_arm(weight=70)])
            key = create_api_key(session, name="shop", scope="storefront", actor="test").secret
            session.commit()
        yield World(scratch, name, {"Authorization": f"Bearer {key}"}, gold_only, coupons)


@pytest.fixture
def app(world: World):
    return create_app(engine=world.scratch.engine, check_schema=False,
                      settings=Settings(config_refresh_seconds=0))


def expected_arms(world: World, external_id: str, value_tier: str) -> dict[int, str]:
    """Campaign id -> arm name the customer must be assigned to. A gold customer is in the
    stackable gold campaign only: an exclusive campaign below a stackable one is left out."""
    with Session(world.scratch.engine) as session:
        campaigns = [world.gold_only if value_tier == "gold" else world.coupons]
        return {campaign.id: choose_arm(
                    salt=campaign.salt, customer_id=external_id,
                    arms=[(arm.name, arm.weight) for arm in campaign_arms(session, campaign)],
                    period=campaign.allocation_period)
                for campaign in campaigns if campaign.id is not None}


def get(client: TestClient, world: World, customer: str, **params: str) -> dict:
    response = client.get(f"/api/v1/customers/{customer}/offers",
                          params={"stage": "after_sale", "channel": "web", **params},
                          headers=world.key)
    assert response.status_code == 200, response.text
    return response.json()


def assignments(world: World, customer: str) -> dict[int, tuple[str, datetime]]:
    with Session(world.scratch.engine) as session:
        rows = session.exec(
            select(Assignment.campaign_id, Campaign.name, Assignment.first_exposed_at)
            .join(Customer, col(Customer.id) == Assignment.customer_id)
            .join(Campaign, col(Campaign.id) == Assignment.campaign_id)
            .where(Customer.external_id == customer)).all()
        arm_names = {arm.id: arm.name for campaign in (world.gold_only, world.coupons)
                     for arm in campaign_arms(session, campaign)}
        arms = dict(session.exec(
            select(Assignment.campaign_id, Assignment.arm_id)
            .join(Customer, col(Customer.id) == Assignment.customer_id)
            .where(Customer.external_id == customer)).all())
    return {campaign_id: (arm_names[arms[campaign_id]], exposed)
            for campaign_id, _name, exposed in rows}


class TestSameOffersAsTheOrmPath:
    @pytest.mark.parametrize("path", ["async pool", "orm"])
    def test_offers_exposures_and_codes(self, world: World, app, path: str) -> None:
        # Entering the client runs the lifespan, which opens the async pool; without it the
        # route takes the ORM path on a thread.
        client = TestClient(app)
        with client if path == "async pool" else nullcontext():
            for i in range(24):
                customer, tier = f"{path[0]}{i}", ("gold", "bronze")[i % 2]
                body = get(client, world, customer, value_tier=tier)
                arms = expected_arms(world, customer, tier)
                treated = {campaign_id for campaign_id, arm in arms.items() if arm != "control"}
                assert {offer["campaign_id"] for offer in body["offers"]} == treated
                for offer in body["offers"]:
                    assert offer["arm"] == arms[offer["campaign_id"]]
                    if offer["campaign_id"] == world.coupons.id:
                        assert offer["code"].startswith("WEB")
                        assert offer["redemptions_left"] == 1
                    else:
                        assert offer["code"] is None
                        assert offer["benefit"]["percent_bp"] == 1000
                exposed = assignments(world, customer)
                assert {cid: arm for cid, (arm, _at) in exposed.items()} == arms
                # A second visit: the same offers, code included; first exposure kept.
                assert get(client, world, customer, value_tier="gold") == body
                assert assignments(world, customer) == exposed

    def test_known_customer_keeps_attributes(self, world: World, app) -> None:
        with TestClient(app) as client:
            get(client, world, "K1", value_tier="bronze")
            again = get(client, world, "K1", value_tier="gold")  # ignored: already known
        assert set(assignments(world, "K1")) == {world.coupons.id}
        assert all(offer["campaign_id"] == world.coupons.id for offer in again["offers"])


class TestConcurrentFirstVisits:
    def test_one_customer_one_exposure_one_code(self, world: World, app) -> None:
        customer = next(f"R{i}" for i in range(1000)
                        if expected_arms(world, f"R{i}", "bronze")[world.coupons.id]
                        != "control")
        with TestClient(app) as client, ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(
                lambda _i: get(client, world, customer, value_tier="bronze"), range(48)))
        assert all(body == bodies[0] for body in bodies)
        assert len(assignments(world, customer)) == 1
        with Session(world.scratch.engine) as session:
            codes = session.exec(
                select(CouponCode.code).join(Customer,
                                             col(Customer.id) == CouponCode.customer_id)
                .where(Customer.external_id == customer)).all()
            customers = session.exec(select(Customer.id)
                                     .where(Customer.external_id == customer)).all()
        assert codes == [bodies[0]["offers"][0]["code"]]
        assert len(customers) == 1

    def test_many_customers_at_once_each_get_their_own(self, world: World, app) -> None:
        """Concurrent requests share statements (campaigns.asyncdb.Grouped): each must still
        get its own customer, attributes, arms and code, and nobody else's."""
        customers = [(f"M{i}", ("gold", "bronze", "silver")[i % 3]) for i in range(60)]
        with TestClient(app) as client, ThreadPoolExecutor(20) as pool:
            bodies = list(pool.map(
                lambda item: get(client, world, item[0], value_tier=item[1],
                                 tenure_months=str(int(item[0][1:]))), customers))
        with Session(world.scratch.engine) as session:
            stored = {customer.external_id: customer for customer in session.exec(
                select(Customer).where(col(Customer.external_id).startswith("M")))}
            codes = dict(session.exec(
                select(Customer.external_id, CouponCode.code)
                .join(Customer, col(Customer.id) == CouponCode.customer_id)
                .where(col(Customer.external_id).startswith("M"))).all())
        for (customer, tier), body in zip(customers, bodies, strict=True):
            assert body["customer_id"] == customer
            assert (stored[customer].value_tier, stored[customer].tenure_months) \
                == (tier, int(customer[1:]))
            arms = expected_arms(world, customer, tier)
            assert {cid: arm for cid, (arm, _at) in assignments(world, customer).items()} \
                == arms
            assert {offer["campaign_id"]: offer["arm"] for offer in body["offers"]} == {
                cid: arm for cid, arm in arms.items() if arm != "control"}
            assert [offer["code"] for offer in body["offers"] if offer["code"]] \
                == ([codes[customer]] if customer in codes else [])
        assert len(set(codes.values())) == len(codes) > 0

    def test_codes_issued_together_each_customer_once(self, world: World, app) -> None:
        """Codes are claimed in grouped statements too: the k-th claim of a batch takes the
        k-th unissued code of the coupon batch, a claim with none left gets a new code, and
        a batch that races another for the same customer's code falls back to claims one
        by one. Whatever the interleaving, every customer ends with one code of its own."""
        with Session(world.scratch.engine) as session:
            arm = next(arm for arm in campaign_arms(session, world.coupons)
                       if not arm.is_control)
            generate_coupon_batch(session, campaign=world.coupons, arm=arm, count=12,
                                  actor="test")
            session.commit()
            pooled = set(session.exec(select(CouponCode.code).where(
                CouponCode.campaign_id == world.coupons.id,
                col(CouponCode.customer_id).is_(None))).all())
        customers = [f"G{i}" for i in range(30)]
        requests = [customer for customer in customers for _ in range(3)]
        random.Random(5).shuffle(requests)
        with TestClient(app) as client, ThreadPoolExecutor(24) as pool:
            bodies = list(pool.map(lambda customer: get(client, world, customer,
                                                        value_tier="bronze"), requests))
        with Session(world.scratch.engine) as session:
            issued = session.exec(
                select(Customer.external_id, CouponCode.code)
                .join(Customer, col(Customer.id) == CouponCode.customer_id)
                .where(col(Customer.external_id).startswith("G"))).all()
        codes = dict(issued)
        assert len(codes) == len(issued)  # one code per customer
        assert len(set(codes.values())) == len(codes)  # nobody else's
        treated = {customer for customer in customers
                   if expected_arms(world, customer, "bronze")[world.coupons.id] != "control"}
        assert set(codes) == treated and len(treated) > len(pooled) // 2
        for customer, body in zip(requests, bodies, strict=True):
            assert [offer["code"] for offer in body["offers"]] \
                == ([codes[customer]] if customer in treated else [])
        assert pooled & set(codes.values()), "the batch's codes were not used"


def redeem(client: TestClient, world: World, key: str, **body: object):
    return client.post("/api/v1/redemptions", json={"channel": "web", **body},
                       headers={**world.key, "Idempotency-Key": key})


def treated(world: World, campaign: Campaign, prefix: str, tier: str) -> Iterator[str]:
    return (f"{prefix}{i}" for i in range(1000)
            if expected_arms(world, f"{prefix}{i}", tier)[campaign.id] != "control")


def spent_and_costs(world: World, campaign: Campaign) -> tuple[int, int]:
    with world.scratch.engine.connect() as connection:
        return connection.execute(text(
            "SELECT (SELECT spent_minor FROM campaign WHERE id = :id), "
            "(SELECT coalesce(sum(cost_minor), 0) FROM redemption "
            " WHERE campaign_id = :id AND status = 'applied')"), {"id": campaign.id}).one()


class TestRedemptionsAsTheOrmPath:
    @pytest.mark.parametrize("path", ["async pool", "orm"])
    def test_redeem_replay_and_refusals(self, world: World, app, path: str) -> None:
        client = TestClient(app)
        bodies = []
        with client if path == "async pool" else nullcontext():
            customers = treated(world, world.coupons, f"{path[0]}X", "bronze")
            for customer in (next(customers), next(customers)):
                code = get(client, world, customer, value_tier="bronze")["offers"][0]["code"]
                key = secrets.token_hex(8)
                request = {"customer_id": customer, "code": code, "order_amount_minor": 5000}
                first = redeem(client, world, key, **request)
                assert first.status_code == 201, first.text
                assert first.headers["Idempotent-Replayed"] == "false"
                replayed = redeem(client, world, key, **request)
                assert (replayed.status_code, replayed.json()) == (200, first.json())
                assert replayed.headers["Idempotent-Replayed"] == "true"
                assert redeem(client, world, key, **request | {"order_amount_minor": 1}
                              ).json()["code"] == "idempotency_key_reused"
                again = redeem(client, world, secrets.token_hex(8), **request)
                assert (again.status_code, again.json()["code"]) == (409, "code_already_redeemed")
                bodies.append(first.json())
            # The offer without a code, by campaign id.
            gold = next(treated(world, world.gold_only, f"{path[0]}G", "gold"))
            get(client, world, gold, value_tier="gold")
            taken = redeem(client, world, secrets.token_hex(8), customer_id=gold,
                           campaign_id=world.gold_only.id, order_amount_minor=20000)
            assert taken.status_code == 201, taken.text
            assert taken.json()["benefit_minor"] == 2000
            unknown = redeem(client, world, secrets.token_hex(8), customer_id="nobody",
                             campaign_id=world.gold_only.id)
            assert (unknown.status_code, unknown.json()["code"]) == (404, "customer_not_found")
            bad_code = redeem(client, world, secrets.token_hex(8), customer_id=gold,
                              code="NOSUCHCODE")
            assert (bad_code.status_code, bad_code.json()["code"]) == (404, "unknown_code")
        for body in bodies:
            assert body["status"] == "applied" and body["incentive_type"] == "coupon"
            assert body["campaign_id"] == world.coupons.id and body["redemption_id"] >= 1
        for campaign in (world.coupons, world.gold_only):
            spent, costs = spent_and_costs(world, campaign)
            assert spent == costs


class TestPoolHeals:
    def test_connections_killed_by_the_database(self, world: World, app) -> None:
        """Stale pooled connections are replaced without an error reaching a client."""
        with TestClient(app) as client:
            for i in range(5):
                get(client, world, f"H{i}")
            with world.scratch.engine.begin() as connection:
                killed = connection.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"),
                    {"name": world.application_name}).scalar_one()
            assert killed >= 1
            for i in range(5, 15):
                get(client, world, f"H{i}")

    def test_redemption_after_the_connections_were_killed(self, world: World, app) -> None:
        customer = next(treated(world, world.gold_only, "HR", "gold"))
        with TestClient(app) as client:
            get(client, world, customer, value_tier="gold")
            with world.scratch.engine.begin() as connection:
                connection.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"),
                    {"name": world.application_name})
            response = redeem(client, world, secrets.token_hex(8), customer_id=customer,
                              campaign_id=world.gold_only.id, order_amount_minor=1000)
        assert response.status_code == 201, response.text

    def test_connection_lost_after_the_redemption_committed(self, world: World, app,
                                                             monkeypatch) -> None:
        """The pool runs the request again; its second run finds its own first and answers
        as created, once, rather than as a replay of some earlier request."""
        import psycopg

        import web.api.storefront

        real = web.api.storefront.redeem_postgresql
        runs = []

        async def lost_after_commit(*args: object, **kwargs: object) -> object:
            outcome = await real(*args, **kwargs)
            runs.append(outcome)
            if len(runs) == 1:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return outcome

        monkeypatch.setattr(web.api.storefront, "redeem_postgresql", lost_after_commit)
        customer = next(treated(world, world.gold_only, "LC", "gold"))
        key = secrets.token_hex(8)
        request = {"customer_id": customer, "campaign_id": world.gold_only.id,
                   "order_amount_minor": 3000}
        with TestClient(app) as client:
            get(client, world, customer, value_tier="gold")
            first = redeem(client, world, key, **request)
            assert (first.status_code, first.headers["Idempotent-Replayed"]) == (201, "false")
            assert len(runs) == 2 and runs[1].body == runs[0].body
            # A retry by the client is a replay as always.
            again = redeem(client, world, key, **request)
        assert (again.status_code, again.json()) == (200, first.json())
        with world.scratch.engine.connect() as connection:
            assert connection.execute(text(
                "SELECT count(*) FROM redemption WHERE idempotency_key LIKE :key"),
                {"key": f"%:{key}"}).scalar_one() == 1

    def test_deadlock_is_not_retried_as_a_dead_connection(self, world: World, app,
                                                           monkeypatch) -> None:
        """A deadlock the redemption's own retries did not resolve is answered at once
        with 'send it again': the connections are fine, so the pool is not tested."""
        import psycopg

        import web.api.storefront

        calls = []

        async def deadlock(*args: object, **kwargs: object) -> None:
            calls.append(1)
            raise psycopg.errors.DeadlockDetected("deadlock detected")

        monkeypatch.setattr(web.api.storefront, "redeem_postgresql", deadlock)
        with TestClient(app) as client:
            response = redeem(client, world, secrets.token_hex(8), customer_id="D1",
                              campaign_id=world.gold_only.id)
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["code"] == "concurrency_conflict"
        assert calls == [1]
