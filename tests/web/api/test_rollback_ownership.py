"""A redemption is rolled back only by the API key that made it (or a management key);
any other key learns nothing, not even that the redemption exists. A retry of a
redemption's request after its rollback says it was rolled back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlmodel import Session, func, select

from campaigns.models import Campaign, CouponCode, Redemption
from campaigns.services.apikeys import create_api_key
from tests.builders import (
    ACTOR,
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    make_running_campaign,
    percent_arm,
)
from tests.web.api.conftest import bearer


def redeem(client, key, body: dict, idem: str):
    return client.post("/api/v1/redemptions", json=body,
                       headers={**key, "Idempotency-Key": idem})


def rollback(client, key, redemption_id):
    return client.post(f"/api/v1/redemptions/{redemption_id}/rollback", headers=key)


def without_request_id(body: dict) -> dict:
    return {name: value for name, value in body.items() if name != "request_id"}


@pytest.fixture
def campaign(session: Session) -> Campaign:
    return make_running_campaign(session, arms=[control_arm(weight=1), coupon_arm(weight=99)],
                                 per_customer_limit=1)


@pytest.fixture
def other_shop(session: Session) -> dict[str, str]:
    return bearer(create_api_key(session, name="other shop", scope="storefront",
                                 actor=ACTOR).secret)


def redeemed(client, session, storefront_key, campaign: Campaign, *, prefix: str = "C",
             idem: str | None = None) -> dict:
    customer = customer_id_in_arm(session, campaign, "web coupon", prefix=prefix)
    offers = client.get(f"/api/v1/customers/{customer}/offers", headers=storefront_key)
    body = {"customer_id": customer, "channel": "web", "code": offers.json()["offers"][0]["code"],
            "order_amount_minor": 2000}
    response = redeem(client, storefront_key, body, idem or uuid.uuid4().hex)
    assert response.status_code == 201, response.text
    return {"body": body, **response.json()}


class TestRollbackBelongsToItsRedeemer:
    def test_another_storefront_key_gets_the_404_of_an_unknown_id_and_changes_nothing(
            self, client, session, storefront_key, other_shop, campaign) -> None:
        redemption = redeemed(client, session, storefront_key, campaign)
        foreign = rollback(client, other_shop, redemption["redemption_id"])
        unknown = rollback(client, other_shop, 987654321)
        assert (foreign.status_code, unknown.status_code) == (404, 404)
        assert without_request_id(foreign.json()) == without_request_id(unknown.json())
        assert foreign.headers.get("content-length") == unknown.headers.get("content-length")
        session.expire_all()
        stored = session.get(Redemption, redemption["redemption_id"])
        assert stored is not None and stored.status == "applied"
        assert session.get(Campaign, campaign.id).spent_minor == redemption["cost_minor"]
        assert session.exec(select(CouponCode.uses)).one() == 1

    def test_the_redeemer_rolls_it_back(self, client, session, storefront_key, other_shop,
                                        campaign) -> None:
        redemption = redeemed(client, session, storefront_key, campaign)
        assert rollback(client, other_shop, redemption["redemption_id"]).status_code == 404
        response = rollback(client, storefront_key, redemption["redemption_id"])
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "rolled_back"
        session.expire_all()
        assert session.get(Campaign, campaign.id).spent_minor == 0

    def test_a_management_key_rolls_it_back(self, client, session, storefront_key,
                                            management_key, campaign) -> None:
        redemption = redeemed(client, session, storefront_key, campaign)
        response = rollback(client, management_key, redemption["redemption_id"])
        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["already_rolled_back"]) \
            == ("rolled_back", False)
        session.expire_all()
        assert session.get(Campaign, campaign.id).spent_minor == 0


class TestReplayAfterRollbackSaysRolledBack:
    def test_replaying_the_key_after_rollback_says_it_was_rolled_back(
            self, client, session, storefront_key, campaign) -> None:
        idem = uuid.uuid4().hex
        redemption = redeemed(client, session, storefront_key, campaign, idem=idem)
        assert rollback(client, storefront_key, redemption["redemption_id"]).status_code == 200
        replay = redeem(client, storefront_key, redemption["body"], idem)
        assert replay.status_code == 200, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.headers["Redemption-Status"] == "rolled_back"
        body = replay.json()
        assert body["redemption_id"] == redemption["redemption_id"]
        assert body["status"] == "rolled_back"
        assert body["rolled_back_at"] is not None
        # The rest is the stored answer, as first given.
        first = {k: v for k, v in redemption.items() if k not in ("body", "status")}
        assert {k: v for k, v in body.items() if k not in ("status", "rolled_back_at")} == first
        session.expire_all()
        assert session.get(Campaign, campaign.id).spent_minor == 0  # the replay charged nothing

    def test_replay_of_a_live_redemption_says_applied(self, client, session, storefront_key,
                                                      campaign) -> None:
        idem = uuid.uuid4().hex
        redemption = redeemed(client, session, storefront_key, campaign, idem=idem)
        replay = redeem(client, storefront_key, redemption["body"], idem)
        assert replay.status_code == 200
        assert replay.headers["Redemption-Status"] == "applied"
        assert replay.json()["status"] == "applied"


REDEEMED = 100
PROBES = 400


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    from tests.liveserver import live_server

    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("needs PostgreSQL (CHANNELSHIFT_TEST_DATABASE_URL=postgresql...)")
    with live_server(url, tmp_path_factory.mktemp("live"), workers=2) as live:
        yield live


async def _fire(url: str, requests: list[tuple[str, str, Any, dict[str, str]]]) -> list[Any]:
    import httpx

    limits = httpx.Limits(max_connections=len(requests) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.request(method, path, json=body, headers=headers)
                                      for method, path, body, headers in requests))


@pytest.mark.postgres_only
@pytest.mark.slow
class TestRollbackIdsTellAStrangerNothing:
    def test_another_shop_walking_every_id_rolls_back_nothing_and_learns_nothing(
            self, server) -> None:
        with Session(server.engine, expire_on_commit=False) as session:
            keys = {name: bearer(create_api_key(session, name=name, scope=scope,
                                                actor=ACTOR).secret)
                    for name, scope in (("shop", "storefront"), ("rival", "storefront"),
                                        ("ops", "management"))}
            campaign = make_running_campaign(session, name="owned", budget_minor=10**9,
                                             arms=[control_arm(weight=1), percent_arm(weight=99)])
            customers = list(dict.fromkeys(
                customer_id_in_arm(session, campaign, "ten percent", prefix="R", start=i * 3)
                for i in range(REDEEMED)))
            session.commit()
        run = asyncio.run
        offered = run(_fire(server.url, [("GET", f"/api/v1/customers/{c}/offers", None,
                                          keys["shop"]) for c in customers]))
        assert {r.status_code for r in offered} == {200}
        made = run(_fire(server.url, [
            ("POST", "/api/v1/redemptions", {"customer_id": c, "channel": "web",
                                             "campaign_id": campaign.id,
                                             "order_amount_minor": 1000},
             {**keys["shop"], "Idempotency-Key": uuid.uuid4().hex}) for c in customers]))
        assert {r.status_code for r in made} == {201}
        ids = sorted(r.json()["redemption_id"] for r in made)
        # The rival walks every id from 1 to well past the last one, all at once.
        probes = run(_fire(server.url, [
            ("POST", f"/api/v1/redemptions/{i}/rollback", None, keys["rival"])
            for i in range(1, max(ids) + PROBES - len(ids) + 1)]))
        bodies = {json.dumps(without_request_id(r.json()), sort_keys=True) for r in probes}
        statuses = Counter(r.status_code for r in probes)
        assert statuses == {404: len(probes)}, statuses
        assert len(bodies) == 1, bodies
        assert len({r.headers["content-length"] for r in probes}) == 1
        with Session(server.engine) as session:
            assert session.exec(select(func.count()).select_from(Redemption).where(
                Redemption.campaign_id == campaign.id,
                Redemption.status == "applied")).one() == len(ids)
            assert session.get(Campaign, campaign.id).spent_minor == len(ids) * 100
        # The redeemer rolls back half, an operator the other half.
        undone = run(_fire(server.url, [
            ("POST", f"/api/v1/redemptions/{i}/rollback", None,
             keys["shop"] if n % 2 else keys["ops"]) for n, i in enumerate(ids)]))
        assert Counter(r.status_code for r in undone) == {200: len(ids)}
        with Session(server.engine) as session:
            assert session.get(Campaign, campaign.id).spent_minor == 0
        print(f"\nrival probes {len(probes)}: {dict(statuses)}, {len(bodies)} distinct body; "
              f"redeemer and operator rollbacks {dict(Counter(r.status_code for r in undone))}"
              f"; 5xx {sum(r.status_code >= 500 for r in probes + undone)}")
