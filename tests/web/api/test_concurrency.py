"""Money invariants under concurrent requests, against a real multi-worker server.

Each test fires at least 200 requests at once at uvicorn with two worker processes on
PostgreSQL. Python locks cannot help across processes: only the database's conditional
updates and unique keys keep these invariants.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from campaigns.models import Campaign, IncentiveStock, LotteryEntry, LotteryWinner, Redemption
from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import campaign_arms
from tests.builders import (
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    incentive_arm,
    make_customer,
    make_running_campaign,
    percent_arm,
)
from tests.liveserver import LiveServer, live_server

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

CONCURRENCY = 200


@pytest.fixture(scope="module")
def server(database, tmp_path_factory) -> Iterator[LiveServer]:
    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("concurrency tests need PostgreSQL (run with -m postgres_only "
                             "and CHANNELSHIFT_TEST_DATABASE_URL=postgresql)")
    with live_server(url, tmp_path_factory.mktemp("live"), workers=2) as live:
        yield live


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> dict[str, dict[str, str]]:
    with Session(server.engine) as session:
        result = {scope: {"Authorization": "Bearer " + create_api_key(
            session, name=scope, scope=scope, actor="test").secret}
            for scope in ("storefront", "management")}
        session.commit()
    return result


def setup(server: LiveServer, build) -> Any:
    with Session(server.engine, expire_on_commit=False) as session:
        result = build(session)
        session.commit()
        return result


async def _fire(server: LiveServer, requests: list[tuple[str, str, dict[str, Any],
                                                          dict[str, str]]]
                ) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENCY + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(
            client.request(method, path, json=body if method == "POST" else None,
                           headers=headers)
            for method, path, body, headers in requests))


def fire(server, requests) -> list[httpx.Response]:
    return asyncio.run(_fire(server, requests))


def expose(server, keys, customers: list[str]) -> list[dict[str, Any]]:
    responses = fire(server, [("GET", f"/api/v1/customers/{c}/offers", {}, keys["storefront"])
                              for c in customers])
    failed = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert not failed, failed[:3]
    return [r.json() for r in responses]


def redemption(keys, body: dict[str, Any], idem: str | None = None):
    headers = {**keys["storefront"], "Idempotency-Key": idem or uuid.uuid4().hex}
    return ("POST", "/api/v1/redemptions", body, headers)


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def wait_for_catalog() -> None:
    # The workers check the configuration epoch every 0.2 s in these tests. Each test's campaign
    # has a higher priority than the ones before, so it claims the customers it exposes.
    import time

    time.sleep(0.6)


class TestSingleUseCode:
    def test_redeemed_exactly_once(self, server, keys) -> None:
        campaign = setup(server, lambda s: make_running_campaign(
            s, name="single use", priority=10, arms=[control_arm(weight=1), coupon_arm(weight=99)]))
        customer = setup(server, lambda s: customer_id_in_arm(s, campaign, "web coupon"))
        wait_for_catalog()
        code = expose(server, keys, [customer])[0]["offers"][0]["code"]
        body = {"customer_id": customer, "channel": "web", "code": code,
                "order_amount_minor": 1000}
        responses = fire(server, [redemption(keys, body) for _ in range(CONCURRENCY)])
        assert statuses(responses) == {201: 1, 409: CONCURRENCY - 1}, statuses(responses)
        assert {r.json()["code"] for r in responses if r.status_code == 409} \
            == {"code_already_redeemed"}
        with Session(server.engine) as session:
            assert session.exec(select(func.count()).select_from(Redemption).where(
                Redemption.campaign_id == campaign.id)).one() == 1
            assert session.get(Campaign, campaign.id).spent_minor == 100


class TestBudget:
    def test_never_overspent_and_spent_equals_redemptions(self, server, keys) -> None:
        campaign = setup(server, lambda s: make_running_campaign(
            s, name="tight budget", budget_minor=5_000, priority=20,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customers = setup(server, lambda s: [
            customer_id_in_arm(s, campaign, "ten percent", prefix="B", start=i * 3)
            for i in range(CONCURRENCY)])
        customers = list(dict.fromkeys(customers))
        wait_for_catalog()
        expose(server, keys, customers)
        requests = [redemption(keys, {"customer_id": c, "channel": "web",
                                      "campaign_id": campaign.id, "order_amount_minor": 1000})
                    for c in customers]
        while len(requests) < CONCURRENCY:
            requests.append(redemption(keys, requests[len(requests) % len(customers)][2]))
        responses = fire(server, requests)
        counts = statuses(responses)
        assert set(counts) <= {201, 409}, counts
        assert counts[201] == 50
        with Session(server.engine) as session:
            spent = session.get(Campaign, campaign.id).spent_minor
            applied = session.exec(select(func.sum(Redemption.cost_minor)).where(
                Redemption.campaign_id == campaign.id, Redemption.status == "applied")).one()
        assert spent == applied == 5_000


class TestCustomerLimit:
    def test_never_exceeded(self, server, keys) -> None:
        campaign = setup(server, lambda s: make_running_campaign(
            s, name="limit three", per_customer_limit=3, priority=30,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customer = setup(server, lambda s: customer_id_in_arm(s, campaign, "ten percent",
                                                              prefix="L"))
        wait_for_catalog()
        expose(server, keys, [customer])
        body = {"customer_id": customer, "channel": "web", "campaign_id": campaign.id,
                "order_amount_minor": 500}
        responses = fire(server, [redemption(keys, body) for _ in range(CONCURRENCY)])
        assert statuses(responses) == {201: 3, 409: CONCURRENCY - 3}
        assert {r.json()["code"] for r in responses if r.status_code == 409} \
            == {"customer_limit_reached"}


class TestIdempotencyKey:
    def test_replayed_concurrently_has_one_effect(self, server, keys) -> None:
        campaign = setup(server, lambda s: make_running_campaign(
            s, name="idempotent", priority=40,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customer = setup(server, lambda s: customer_id_in_arm(s, campaign, "ten percent",
                                                              prefix="I"))
        wait_for_catalog()
        expose(server, keys, [customer])
        body = {"customer_id": customer, "channel": "web", "campaign_id": campaign.id,
                "order_amount_minor": 2500}
        responses = fire(server, [redemption(keys, body, idem="same-key-for-all")
                                  for _ in range(CONCURRENCY)])
        counts = statuses(responses)
        assert counts[201] == 1 and counts[200] == CONCURRENCY - 1, counts
        assert len({r.text for r in responses}) == 1  # one response, byte for byte
        with Session(server.engine) as session:
            assert session.exec(select(func.count()).select_from(Redemption).where(
                Redemption.campaign_id == campaign.id)).one() == 1
            assert session.get(Campaign, campaign.id).spent_minor == 250


class TestLottery:
    def test_never_more_winners_than_prizes(self, server, keys) -> None:
        config = {"prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 29_900,
                              "inventory": 3, "odds": {"numerator": 1, "denominator": 100}},
                             {"key": "voucher", "name": "Voucher", "value_minor": 2_000,
                              "inventory": 7, "odds": {"numerator": 1, "denominator": 10}}],
                  "entry_rule": {"event": "redemption"}}

        def build(session: Session) -> Campaign:
            campaign = make_running_campaign(session, name="prize draw", arms=[
                control_arm(weight=50), incentive_arm("draw", "lottery", config)])
            arm = campaign_arms(session, campaign)[1]
            for i in range(60):
                customer = make_customer(session, external_id=f"P{i}")
                session.add(LotteryEntry(campaign_id=campaign.id,
                                         incentive_id=arm.incentive_id,
                                         customer_id=customer.id, entries=1 + i % 3,
                                         source_ref=f"seed:{i}"))
            return campaign

        campaign = setup(server, build)
        responses = fire(server, [("POST", f"/api/v1/campaigns/{campaign.id}/draws", {},
                                   keys["management"]) for _ in range(CONCURRENCY)])
        counts = statuses(responses)
        assert set(counts) <= {201, 409} and counts[201] >= 1, counts
        with Session(server.engine) as session:
            winners = session.exec(select(LotteryWinner.prize_key)).all()
            stock = {s.item_key: (s.used, s.total) for s in session.exec(
                select(IncentiveStock))}
        assert Counter(winners) == {"tablet": 3, "voucher": 7}
        assert stock == {"tablet": (3, 3), "voucher": (7, 7)}


class TestRedeemAndRollBackTogether:
    def test_no_deadlock_and_books_balance(self, server, keys) -> None:
        campaign = setup(server, lambda s: make_running_campaign(
            s, name="mixed", priority=50, per_customer_limit=10,
            arms=[control_arm(weight=1), percent_arm(weight=99)]))
        customers = setup(server, lambda s: list(dict.fromkeys(
            customer_id_in_arm(s, campaign, "ten percent", prefix="M", start=i * 3)
            for i in range(40))))
        wait_for_catalog()
        expose(server, keys, customers)

        def body(customer: str) -> dict[str, Any]:
            return {"customer_id": customer, "channel": "web", "campaign_id": campaign.id,
                    "order_amount_minor": 1000}

        first = fire(server, [redemption(keys, body(c)) for c in customers * 2])
        assert statuses(first) == {201: 2 * len(customers)}
        ids = [r.json()["redemption_id"] for r in first]
        # The same customers redeem again while their earlier redemptions are rolled back.
        mixed = [redemption(keys, body(c)) for c in customers * 2]
        mixed += [("POST", f"/api/v1/redemptions/{i}/rollback", {}, keys["storefront"])
                  for i in ids]
        responses = fire(server, mixed)
        assert set(statuses(responses)) <= {200, 201}, statuses(responses)
        with Session(server.engine) as session:
            spent = session.get(Campaign, campaign.id).spent_minor
            applied = session.exec(select(func.coalesce(func.sum(Redemption.cost_minor), 0))
                                   .where(Redemption.campaign_id == campaign.id,
                                          Redemption.status == "applied")).one()
        assert spent == applied == 2 * len(customers) * 100


class TestFirstExposure:
    @pytest.mark.parametrize("known", [False, True], ids=["new customers", "known customers"])
    def test_concurrent_first_sightings_create_one_customer_one_arm_one_code(
            self, server, keys, known: bool) -> None:
        """20 customers (unknown, or known but never exposed), 10 requests each at once: each
        customer is created once, assigned once and given one code, from the batch while it
        lasts (8 codes for 20 customers) and freshly made after; every response agrees."""
        from campaigns.models import Arm, Assignment, CouponCode, Customer
        from campaigns.services.coupons import generate_coupon_batch

        def build(s: Session) -> Campaign:
            campaign = make_running_campaign(s, name=f"first sight {known}",
                                             priority=60 + known,
                                             arms=[control_arm(weight=1), coupon_arm(weight=99)])
            arm = s.exec(select(Arm).where(Arm.campaign_id == campaign.id,
                                           Arm.name == "web coupon")).one()
            generate_coupon_batch(s, campaign=campaign, arm=arm, count=8, actor="test")
            return campaign

        campaign = setup(server, build)
        customers = setup(server, lambda s: list(dict.fromkeys(
            customer_id_in_arm(s, campaign, "web coupon", prefix=f"FIRST-{known}-", start=i * 2)
            for i in range(40))))[:20]
        assert len(customers) == 20
        if known:
            setup(server, lambda s: [make_customer(s, external_id=c, segment="consumer",
                                                   tenure_months=3) for c in customers])
        wait_for_catalog()
        responses = fire(server, [
            ("GET", f"/api/v1/customers/{c}/offers?segment=consumer&tenure_months=3", {},
             keys["storefront"]) for c in customers * 10])
        assert statuses(responses) == {200: 200}, [r.text for r in responses[:3]]
        offered: dict[str, set[tuple[str, str]]] = {}
        for response in responses:
            body = response.json()
            mine = [o for o in body["offers"] if o["campaign_id"] == campaign.id]
            assert len(mine) == 1, body
            offered.setdefault(body["customer_id"], set()).add((mine[0]["arm"], mine[0]["code"]))
        assert all(len(answers) == 1 for answers in offered.values()), offered
        codes = {next(iter(answers))[1] for answers in offered.values()}
        assert len(codes) == 20
        with Session(server.engine) as session:
            rows = session.exec(select(Customer).where(
                col(Customer.external_id).in_(customers))).all()
            assert len(rows) == 20 and {r.segment for r in rows} == {"consumer"}
            assert {r.tenure_months for r in rows} == {3}
            ids = [r.id for r in rows]
            assert session.exec(select(func.count()).select_from(Assignment).where(
                Assignment.campaign_id == campaign.id,
                col(Assignment.customer_id).in_(ids))).one() == 20
            issued = session.exec(select(CouponCode).where(
                CouponCode.campaign_id == campaign.id,
                col(CouponCode.customer_id).is_not(None))).all()
            assert {c.code for c in issued} == codes
            assert session.exec(select(func.count()).select_from(CouponCode).where(
                CouponCode.campaign_id == campaign.id,
                col(CouponCode.customer_id).is_(None))).one() == 0  # the batch was used first
