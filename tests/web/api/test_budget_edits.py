"""Editing a campaign's budget while it redeems: never a 500, never below what is spent.

Whether a new budget covers what is spent is decided by the database, on the campaign
row, in the same UPDATE that sets it: a redemption committed between the edit's read and
its write cannot leave a budget below its spend (the CHECK constraint would refuse it with
a 500) nor be lost.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from campaigns.models import Campaign, Redemption
from campaigns.services.apikeys import create_api_key
from tests.builders import control_arm, customer_id_in_arm, make_running_campaign, percent_arm
from tests.liveserver import LiveServer, live_server


def redeem(client, key, body: dict):
    return client.post("/api/v1/redemptions", json=body,
                       headers={**key, "Idempotency-Key": uuid.uuid4().hex})


class TestBudgetBelowSpentIsRefused:
    def test_patch_below_spent_names_budget_minor_and_changes_nothing(
            self, client, session, storefront_key, management_key) -> None:
        campaign = make_running_campaign(session, budget_minor=10_000,
                                         arms=[control_arm(weight=1), percent_arm(weight=99)])
        customer = customer_id_in_arm(session, campaign, "ten percent")
        client.get(f"/api/v1/customers/{customer}/offers", headers=storefront_key)
        assert redeem(client, storefront_key, {
            "customer_id": customer, "channel": "web", "campaign_id": campaign.id,
            "order_amount_minor": 5000}).status_code == 201
        response = client.patch(f"/api/v1/campaigns/{campaign.id}", headers=management_key,
                                json={"budget_minor": 499, "name": "renamed"})
        assert response.status_code in (409, 422), response.text
        assert [e["loc"] for e in response.json()["errors"]] == [["budget_minor"]]
        session.expire_all()
        stored = session.get(Campaign, campaign.id)
        assert (stored.budget_minor, stored.spent_minor, stored.name) \
            == (10_000, 500, "Spring push")
        # exactly what is spent is fine
        response = client.patch(f"/api/v1/campaigns/{campaign.id}", headers=management_key,
                                json={"budget_minor": 500})
        assert response.status_code == 200, response.text
        assert response.json()["budget_minor"] == 500


REDEMPTIONS = 300
EDITS = 120
COST = 100  # ten percent of an order of 1,000


@pytest.fixture(scope="module")
def server(database, tmp_path_factory) -> Iterator[LiveServer]:
    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("needs PostgreSQL (run with CHANNELSHIFT_TEST_DATABASE_URL="
                             "postgresql...)")
    with live_server(url, tmp_path_factory.mktemp("live"), workers=2) as live:
        yield live


async def _fire(server: LiveServer, requests: list[tuple[str, str, dict[str, Any],
                                                          dict[str, str]]]
                ) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(
            client.request(method, path, json=body, headers=headers)
            for method, path, body, headers in requests))


@pytest.mark.postgres_only
@pytest.mark.slow
class TestBudgetEditsDuringRedemptions:
    def test_raising_and_lowering_the_budget_under_300_redemptions_never_gives_a_500(
            self, server) -> None:
        with Session(server.engine, expire_on_commit=False) as session:
            keys = {scope: {"Authorization": "Bearer " + create_api_key(
                session, name=scope, scope=scope, actor="test").secret}
                for scope in ("storefront", "management")}
            campaign = make_running_campaign(
                session, name="budget edits", budget_minor=REDEMPTIONS * COST,
                arms=[control_arm(weight=1), percent_arm(weight=99)])
            customers = list(dict.fromkeys(
                customer_id_in_arm(session, campaign, "ten percent", prefix="E", start=i * 3)
                for i in range(REDEMPTIONS)))
            session.commit()
        exposed = asyncio.run(_fire(server, [
            ("GET", f"/api/v1/customers/{c}/offers", None, keys["storefront"])
            for c in customers]))
        assert {r.status_code for r in exposed} == {200}
        redemptions = [("POST", "/api/v1/redemptions",
                        {"customer_id": customers[i % len(customers)], "channel": "web",
                         "campaign_id": campaign.id, "order_amount_minor": 1000},
                        {**keys["storefront"], "Idempotency-Key": uuid.uuid4().hex})
                       for i in range(REDEMPTIONS)]
        # Budgets from below anything spent to above everything: raises and cuts, many
        # of them landing between the spend an edit read and the spend when it writes.
        rng = random.Random(26)
        edits = [("PATCH", f"/api/v1/campaigns/{campaign.id}",
                  {"budget_minor": rng.randrange(0, REDEMPTIONS * COST * 2, COST // 2)},
                  keys["management"]) for _ in range(EDITS)]
        requests = redemptions + edits
        rng.shuffle(requests)
        responses = asyncio.run(_fire(server, requests))
        by_kind: dict[str, Counter[int]] = {"POST": Counter(), "PATCH": Counter()}
        for (method, *_), response in zip(requests, responses, strict=True):
            by_kind[method][response.status_code] += 1
        failures = [(r.status_code, r.text[:300]) for r in responses if r.status_code >= 500]
        assert not failures, (by_kind, failures[:3])
        assert set(by_kind["POST"]) <= {201, 409}, by_kind
        assert set(by_kind["PATCH"]) <= {200, 409, 422}, by_kind
        for (method, *_), response in zip(requests, responses, strict=True):
            if response.status_code in (409, 422):
                body = response.json()
                if method == "PATCH":
                    assert [e["loc"] for e in body["errors"]] == [["budget_minor"]], body
                else:
                    assert body["code"], body
        with Session(server.engine) as session:
            stored = session.get(Campaign, campaign.id)
            assert stored is not None
            applied = session.exec(select(func.coalesce(func.sum(Redemption.cost_minor), 0))
                                   .where(Redemption.campaign_id == campaign.id,
                                          Redemption.status == "applied")).one()
            assert stored.spent_minor == applied == by_kind["POST"][201] * COST
            assert stored.budget_minor is None or stored.spent_minor <= stored.budget_minor
        print(f"\nredemptions {dict(by_kind['POST'])}, budget edits {dict(by_kind['PATCH'])}, "
              f"spent {stored.spent_minor} = sum of applied {applied}")
