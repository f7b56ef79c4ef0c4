"""The management API: channels, goals, incentives, campaigns, coupon batches and exports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from campaigns.db import session_scope
from campaigns.incentives import DEFAULT_CHARSET, LOOKALIKES
from campaigns.models import Arm, Assignment, Campaign, CouponCode, Customer
from campaigns.services import coupons
from campaigns.services.apikeys import create_api_key, revoke_api_key
from campaigns.services.campaigns import campaign_arms
from campaigns.settings import Settings
from campaigns.types import utcnow
from tests.builders import make_channel, make_customer, make_goal
from tests.scratch import scratch_database
from tests.web.api.conftest import bearer
from web.app import create_app

API = "/api/v1"
MANAGEMENT_TAGS = {"channels", "goals", "incentives", "campaigns", "coupon codes and exports"}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def locs(response: Any) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["errors"]]


def control(weight: int = 50) -> dict[str, Any]:
    return {"name": "control", "weight": weight, "is_control": True}


def coupon(name: str = "web coupon", *, weight: int = 50, mode: str = "batch",
           **config: Any) -> dict[str, Any]:
    settings = {"prefix": "WEB-"} if mode == "batch" else {"code": "SAVE10"}
    return {"name": name, "weight": weight, "incentive": {
        "name": f"{name} incentive", "type": "coupon",
        "config": {"mode": mode, "benefit": {"kind": "percent", "percent_bp": 1000},
                   **settings, **config}}}


def discount(name: str = "ten percent", *, weight: int = 50, percent_bp: int = 1000
             ) -> dict[str, Any]:
    return {"name": name, "weight": weight, "incentive": {
        "name": f"{name} off", "type": "percent_discount", "config": {"percent_bp": percent_bp}}}


def campaign_body(goal_id: int, *, name: str = "Spring push",
                  arms: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    now = utcnow()
    body: dict[str, Any] = {
        "name": name, "goal_id": goal_id, "starts_at": iso(now + timedelta(hours=1)),
        "ends_at": iso(now + timedelta(days=30)), "budget_minor": 100_000,
        "arms": arms if arms is not None else [control(), coupon()],
    }
    body.update(overrides)
    return body


class Api:
    """The client with a management key, and the steps tests repeat."""

    def __init__(self, client: TestClient, headers: dict[str, str], session: Session) -> None:
        self.client = client
        self.headers = headers
        self.session = session

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(API + path, headers=self.headers, **kwargs)

    def post(self, path: str, json: Any = None) -> Any:
        return self.client.post(API + path, headers=self.headers, json=json)

    def put(self, path: str, json: Any = None) -> Any:
        return self.client.put(API + path, headers=self.headers, json=json)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.client.patch(API + path, headers=self.headers, json=json)

    def delete(self, path: str) -> Any:
        return self.client.delete(API + path, headers=self.headers)

    def goal(self) -> int:
        goal = make_goal(self.session)
        assert goal.id is not None
        return goal.id

    def campaign(self, **kwargs: Any) -> dict[str, Any]:
        goal_id = kwargs.pop("goal_id", None) or self.goal()
        response = self.post("/campaigns", campaign_body(goal_id, **kwargs))
        assert response.status_code == 201, response.text
        return response.json()

    def move(self, campaign_id: int, *targets: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for target in targets:
            response = self.post(f"/campaigns/{campaign_id}/transitions", {"to": target})
            assert response.status_code == 200, response.text
            body = response.json()
        return body

    def batch(self, campaign: dict[str, Any], count: int, *, arm: int = 1) -> Any:
        return self.post(f"/campaigns/{campaign['id']}/arms/{campaign['arms'][arm]['id']}"
                         "/coupon-batches", {"count": count})

    def csv_rows(self, path: str) -> list[dict[str, str]]:
        response = self.get(path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert "attachment" in response.headers["content-disposition"]
        return list(csv.DictReader(io.StringIO(response.text)))


@pytest.fixture
def api(client: TestClient, management_key: dict[str, str], session: Session) -> Api:
    return Api(client, management_key, session)


def expose(session: Session, *, campaign_id: int, arm_name: str, external_id: str,
           issue_code: bool = False) -> Customer:
    """Record ``external_id``'s first exposure to an arm (and issue them the next code)."""
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    arm = next(a for a in campaign_arms(session, campaign) if a.name == arm_name)
    customer = make_customer(session, external_id=external_id)
    assert customer.id is not None and arm.id is not None
    session.add(Assignment(campaign_id=campaign_id, customer_id=customer.id, arm_id=arm.id))
    if issue_code:
        code = session.exec(select(CouponCode).where(
            CouponCode.campaign_id == campaign_id, col(CouponCode.customer_id).is_(None))
            .order_by(col(CouponCode.id))).first()
        assert code is not None
        code.customer_id, code.issued_at = customer.id, utcnow()
        session.add(code)
    session.flush()
    return customer


# --- authentication, for every management route ----------------------------------------

ROUTES = [
    ("GET", "/channels"), ("POST", "/channels"), ("GET", "/channels/web"),
    ("PATCH", "/channels/web"), ("GET", "/stages"), ("POST", "/stages"),
    ("GET", "/channel-costs"), ("PUT", "/channel-costs"),
    ("GET", "/goals"), ("POST", "/goals"), ("GET", "/goals/1"),
    ("GET", "/incentive-types"), ("GET", "/incentives"), ("POST", "/incentives"),
    ("GET", "/incentives/1"),
    ("GET", "/campaigns"), ("POST", "/campaigns"), ("GET", "/campaigns/1"),
    ("PATCH", "/campaigns/1"), ("DELETE", "/campaigns/1"), ("POST", "/campaigns/1/arms"),
    ("DELETE", "/campaigns/1/arms/1"), ("PUT", "/campaigns/1/weights"),
    ("POST", "/campaigns/1/transitions"), ("GET", "/campaigns/1/audit"),
    ("POST", "/campaigns/1/arms/1/coupon-batches"), ("GET", "/campaigns/1/coupon-codes.csv"),
    ("GET", "/campaigns/1/audience.csv"),
]


class TestAuthentication:
    def test_the_list_covers_every_management_route(self, client: TestClient) -> None:
        def template(path: str) -> str:
            return (path.removeprefix(API).replace("{key}", "web").replace("{goal_id}", "1")
                    .replace("{incentive_id}", "1").replace("{campaign_id}", "1")
                    .replace("{arm_id}", "1"))

        paths = client.get("/openapi.json").json()["paths"]
        routes = {(method.upper(), template(path)) for path, operations in paths.items()
                  for method, operation in operations.items()
                  if set(operation.get("tags", ())) & MANAGEMENT_TAGS}
        assert routes == set(ROUTES)

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    def test_anonymous(self, client: TestClient, method: str, path: str) -> None:
        response = client.request(method, API + path, json={})
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    def test_storefront_key(self, client: TestClient, storefront_key: dict[str, str],
                            method: str, path: str) -> None:
        response = client.request(method, API + path, json={}, headers=storefront_key)
        assert response.status_code == 403
        assert response.json()["code"] == "wrong_scope"

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    def test_analytics_key(self, client: TestClient, analytics_key: dict[str, str],
                           method: str, path: str) -> None:
        response = client.request(method, API + path, json={}, headers=analytics_key)
        assert response.status_code == 403

    def test_revoked_key(self, client: TestClient, session: Session) -> None:
        created = create_api_key(session, name="old", scope="management", actor="test")
        assert created.api_key.id is not None
        revoke_api_key(session, api_key_id=created.api_key.id, actor="test")
        response = client.get(f"{API}/channels", headers=bearer(created.secret))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"


# --- channels, stages, costs -------------------------------------------------------------


class TestListChannels:
    def test_success_ordered_by_key(self, api: Api, session: Session) -> None:
        for key in ("web", "call_centre", "app"):
            make_channel(session, key=key)
        body = api.get("/channels").json()
        assert body["total"] == 3
        assert [c["key"] for c in body["items"]] == ["app", "call_centre", "web"]
        assert set(body["items"][0]) == {"id", "key", "name", "kind", "active", "created_at"}

    def test_pagination(self, api: Api, session: Session) -> None:
        for n in range(7):
            make_channel(session, key=f"partner_{n}")
        page = api.get("/channels", params={"limit": 3, "offset": 5}).json()
        assert page["total"] == 7
        assert [c["key"] for c in page["items"]] == ["partner_5", "partner_6"]

    @pytest.mark.parametrize(("params", "loc"), [
        ({"limit": 501}, ["query", "limit"]), ({"limit": 0}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"])])
    def test_bad_paging(self, api: Api, params: dict[str, int], loc: list[str]) -> None:
        response = api.get("/channels", params=params)
        assert response.status_code == 422
        assert locs(response) == [loc]

    def test_limit_of_500_is_allowed(self, api: Api) -> None:
        assert api.get("/channels", params={"limit": 500}).status_code == 200


class TestCreateChannel:
    def test_success(self, api: Api) -> None:
        response = api.post("/channels", {"key": "web", "name": "Web shop", "kind": "web"})
        assert response.status_code == 201
        assert response.json() | {"id": 0, "created_at": ""} == {
            "id": 0, "key": "web", "name": "Web shop", "kind": "web", "active": True,
            "created_at": ""}
        assert api.get("/channels/web").status_code == 200

    def test_duplicate_key(self, api: Api, session: Session) -> None:
        make_channel(session, key="web")
        response = api.post("/channels", {"key": "web", "name": "Again", "kind": "web"})
        assert response.status_code == 409
        assert locs(response) == [["key"]]

    @pytest.mark.parametrize(("body", "loc"), [
        ({"key": "web", "name": "Web", "kind": "fax"}, ["body", "kind"]),
        ({"key": "Web Shop", "name": "Web", "kind": "web"}, ["body", "key"]),
        ({"key": "web", "kind": "web"}, ["body", "name"]),
        ({"key": "web", "name": "Web", "kind": "web", "colour": "red"}, ["body", "colour"]),
    ])
    def test_bad_body(self, api: Api, body: dict[str, Any], loc: list[str]) -> None:
        response = api.post("/channels", body)
        assert response.status_code == 422
        assert loc in locs(response)
        assert api.get("/channels").json()["total"] == 0


class TestGetChannel:
    def test_success(self, api: Api, session: Session) -> None:
        make_channel(session, key="ivr")
        body = api.get("/channels/ivr").json()
        assert (body["key"], body["kind"], body["active"]) == ("ivr", "ivr", True)

    def test_unknown_key(self, api: Api) -> None:
        response = api.get("/channels/fax")
        assert response.status_code == 404
        assert response.json()["code"] == "channel_not_found"


class TestUpdateChannel:
    def test_only_sent_fields_change(self, api: Api, session: Session) -> None:
        make_channel(session, key="ivr", name="IVR")
        response = api.patch("/channels/ivr", {"active": False})
        assert response.status_code == 200
        assert (response.json()["name"], response.json()["active"]) == ("IVR", False)
        assert api.get("/channels/ivr").json()["active"] is False

    def test_unknown_key(self, api: Api) -> None:
        assert api.patch("/channels/fax", {"active": False}).status_code == 404

    def test_bad_body(self, api: Api, session: Session) -> None:
        make_channel(session, key="ivr")
        response = api.patch("/channels/ivr", {"kind": "pigeon"})
        assert response.status_code == 422
        assert locs(response) == [["body", "kind"]]

    def test_key_cannot_change(self, api: Api, session: Session) -> None:
        make_channel(session, key="ivr")
        response = api.patch("/channels/ivr", {"key": "phone"})
        assert response.status_code == 422
        assert locs(response) == [["body", "key"]]


class TestStages:
    def test_list_in_order(self, api: Api, session: Session) -> None:
        make_goal(session)  # creates the default stages
        body = api.get("/stages").json()
        assert [s["key"] for s in body["items"]] == ["pre_sale", "purchase", "after_sale"]
        assert body["total"] == 3

    def test_create(self, api: Api) -> None:
        response = api.post("/stages", {"key": "onboarding", "name": "Onboarding",
                                        "position": 4})
        assert response.status_code == 201
        assert response.json()["key"] == "onboarding"
        assert api.get("/stages").json()["items"][-1]["key"] == "onboarding"

    def test_duplicate(self, api: Api) -> None:
        api.post("/stages", {"key": "onboarding", "name": "Onboarding"})
        response = api.post("/stages", {"key": "onboarding", "name": "Again"})
        assert response.status_code == 409

    def test_bad_body(self, api: Api) -> None:
        response = api.post("/stages", {"key": "x", "name": "Too short a key"})
        assert response.status_code == 422
        assert locs(response) == [["body", "key"]]


class TestChannelCosts:
    @pytest.fixture(autouse=True)
    def world(self, session: Session) -> None:
        make_goal(session)  # stages, call_centre and web

    def test_set_then_replace(self, api: Api) -> None:
        first = api.put("/channel-costs", {"channel": "call_centre", "stage": "after_sale",
                                           "cost_minor": 650})
        assert first.status_code == 200
        assert first.json() | {"updated_at": ""} == {
            "channel": "call_centre", "stage": "after_sale", "cost_minor": 650,
            "currency": "EUR", "updated_at": ""}
        api.put("/channel-costs", {"channel": "call_centre", "stage": "after_sale",
                                   "cost_minor": 700})
        body = api.get("/channel-costs").json()
        assert body["total"] == 1
        assert body["items"][0]["cost_minor"] == 700

    def test_list_ordered_by_channel_and_stage(self, api: Api) -> None:
        for channel, stage, cost in [("web", "after_sale", 20), ("call_centre", "purchase", 500),
                                     ("call_centre", "pre_sale", 400)]:
            api.put("/channel-costs", {"channel": channel, "stage": stage, "cost_minor": cost})
        items = api.get("/channel-costs").json()["items"]
        assert [(i["channel"], i["stage"], i["cost_minor"]) for i in items] == [
            ("call_centre", "pre_sale", 400), ("call_centre", "purchase", 500),
            ("web", "after_sale", 20)]
        page = api.get("/channel-costs", params={"limit": 1, "offset": 2}).json()
        assert (page["total"], page["items"][0]["channel"]) == (3, "web")

    def test_unknown_channel(self, api: Api) -> None:
        response = api.put("/channel-costs", {"channel": "fax", "stage": "after_sale",
                                              "cost_minor": 1})
        assert response.status_code == 404
        assert locs(response) == [["channel"]]

    @pytest.mark.parametrize("cost", [-1, 6.5, "650"])
    def test_bad_cost(self, api: Api, cost: Any) -> None:
        response = api.put("/channel-costs", {"channel": "web", "stage": "after_sale",
                                              "cost_minor": cost})
        assert response.status_code == 422
        assert locs(response) == [["body", "cost_minor"]]


# --- goals and incentives ----------------------------------------------------------------

GOAL = {"name": "Self-service", "stage": "after_sale", "source_channels": ["call_centre", "ivr"],
        "target_channel": "web", "target_uplift": "0.05",
        "eligibility_rule": "value_tier != 'platinum'"}


class TestGoals:
    @pytest.fixture(autouse=True)
    def world(self, session: Session) -> None:
        make_goal(session, name="Existing")
        make_channel(session, key="ivr")

    def test_create_and_get(self, api: Api) -> None:
        response = api.post("/goals", GOAL)
        assert response.status_code == 201
        goal = response.json()
        assert (goal["stage"], goal["source_channels"], goal["target_channel"]) == (
            "after_sale", ["call_centre", "ivr"], "web")
        assert (goal["target_uplift"], goal["metric"], goal["window_days"]) == (
            "0.0500", "adoption", 30)
        assert goal["eligibility_rule"].replace("'", "") == "value_tier != platinum"
        assert api.get(f"/goals/{goal['id']}").json() == goal

    def test_list_paginates(self, api: Api) -> None:
        api.post("/goals", GOAL)
        body = api.get("/goals", params={"limit": 1, "offset": 1}).json()
        assert body["total"] == 2
        assert [g["name"] for g in body["items"]] == ["Self-service"]

    def test_unknown_goal(self, api: Api) -> None:
        response = api.get("/goals/999999")
        assert response.status_code == 404
        assert response.json()["code"] == "goal_not_found"

    def test_unknown_channel(self, api: Api) -> None:
        response = api.post("/goals", GOAL | {"target_channel": "fax"})
        assert response.status_code == 404
        assert locs(response) == [["target_channel"]]

    def test_target_is_also_a_source(self, api: Api) -> None:
        response = api.post("/goals", GOAL | {"source_channels": ["web"]})
        assert response.status_code == 422
        assert "cannot also be a source" in response.json()["errors"][0]["msg"]

    @pytest.mark.parametrize(("change", "loc"), [
        ({"target_uplift": "1.5"}, ["body", "target_uplift"]),
        ({"source_channels": []}, ["body", "source_channels"]),
        ({"window_days": 0}, ["body", "window_days"])])
    def test_bad_body(self, api: Api, change: dict[str, Any], loc: list[str]) -> None:
        response = api.post("/goals", GOAL | change)
        assert response.status_code == 422
        assert locs(response) == [loc]

    def test_bad_rule(self, api: Api) -> None:
        response = api.post("/goals", GOAL | {"eligibility_rule": "shoe_size > 3"})
        assert response.status_code == 422
        assert locs(response)[0] == ["eligibility_rule"]

    def test_duplicate_name(self, api: Api) -> None:
        response = api.post("/goals", GOAL | {"name": "Existing"})
        assert response.status_code == 409


BATCH_COUPON = {"name": "10% code", "type": "coupon",
                "config": {"mode": "batch", "prefix": "WEB-", "expires_days": 30,
                           "benefit": {"kind": "percent", "percent_bp": 1000}}}


class TestIncentives:
    def test_create_and_get(self, api: Api) -> None:
        response = api.post("/incentives", BATCH_COUPON)
        assert response.status_code == 201
        incentive = response.json()
        assert (incentive["type"], incentive["type_label"]) == ("coupon", "coupon")
        assert incentive["config"]["length"] == 10  # normalized with the defaults
        assert incentive["config"]["charset"] == DEFAULT_CHARSET
        assert incentive["summary"]["needs_code"] is True
        assert incentive["summary"]["title"] == "10% off with a code"
        assert api.get(f"/incentives/{incentive['id']}").json() == incentive

    def test_config_validated_by_type(self, api: Api) -> None:
        response = api.post("/incentives", {"name": "x", "type": "percent_discount",
                                            "config": {"percent_bp": 0}})
        assert response.status_code == 422
        assert locs(response) == [["config", "percent_bp"]]
        assert response.json()["code"] == "invalid_incentive_config"
        assert api.get("/incentives").json()["total"] == 0

    def test_unknown_type(self, api: Api) -> None:
        response = api.post("/incentives", {"name": "x", "type": "cashback", "config": {}})
        assert response.status_code == 422
        assert locs(response) == [["type"]]

    def test_missing_config(self, api: Api) -> None:
        response = api.post("/incentives", {"name": "x", "type": "coupon"})
        assert response.status_code == 422
        assert locs(response) == [["body", "config"]]

    def test_list_filters_and_paginates(self, api: Api) -> None:
        api.post("/incentives", BATCH_COUPON)
        for bp in (500, 1000):
            api.post("/incentives", {"name": f"{bp}", "type": "percent_discount",
                                     "config": {"percent_bp": bp}})
        assert api.get("/incentives").json()["total"] == 3
        only = api.get("/incentives", params={"type": "percent_discount", "limit": 1}).json()
        assert only["total"] == 2 and [i["name"] for i in only["items"]] == ["500"]

    def test_unknown_incentive(self, api: Api) -> None:
        assert api.get("/incentives/999999").status_code == 404


class TestIncentiveTypes:
    def test_lists_every_type_with_its_schema(self, api: Api) -> None:
        body = api.get("/incentive-types").json()
        by_key = {t["key"]: t for t in body["items"]}
        assert body["total"] == len(by_key) >= 7
        assert {"coupon", "percent_discount", "lottery", "free_trial"} <= set(by_key)
        schema = by_key["coupon"]["config_schema"]
        assert schema["type"] == "object"
        assert {"mode", "benefit", "prefix", "length", "charset"} <= set(schema["properties"])

    def test_pagination(self, api: Api) -> None:
        everything = api.get("/incentive-types").json()
        page = api.get("/incentive-types", params={"limit": 2, "offset": 1}).json()
        assert page["total"] == everything["total"]
        assert page["items"] == everything["items"][1:3]


# --- campaigns ---------------------------------------------------------------------------


class TestCreateCampaign:
    def test_success_with_inline_arms(self, api: Api) -> None:
        goal_id = api.goal()
        response = api.post("/campaigns", campaign_body(goal_id))
        assert response.status_code == 201
        campaign = response.json()
        assert (campaign["status"], campaign["goal_id"], campaign["spent_minor"],
                campaign["remaining_budget_minor"]) == ("draft", goal_id, 0, 100_000)
        control_arm, coupon_arm = campaign["arms"]
        assert (control_arm["name"], control_arm["is_control"], control_arm["incentive"]) == (
            "control", True, None)
        assert (coupon_arm["weight"], coupon_arm["incentive"]["type"],
                coupon_arm["incentive"]["needs_code"]) == (50, "coupon", True)
        assert coupon_arm["incentive"]["title"] == "10% off with a code"

    def test_arm_reusing_an_incentive(self, api: Api) -> None:
        incentive = api.post("/incentives", BATCH_COUPON).json()
        campaign = api.campaign(arms=[control(), {"name": "reuse", "weight": 50,
                                                  "incentive_id": incentive["id"]}])
        assert campaign["arms"][1]["incentive_id"] == incentive["id"]

    def test_unknown_goal(self, api: Api) -> None:
        response = api.post("/campaigns", campaign_body(999_999))
        assert response.status_code == 404
        assert locs(response) == [["goal_id"]]

    def test_bad_incentive_names_the_arm(self, api: Api) -> None:
        response = api.post("/campaigns", campaign_body(
            api.goal(), arms=[control(), discount(percent_bp=0)]))
        assert response.status_code == 422
        assert ["arms", 1, "incentive", "config", "percent_bp"] in locs(response)
        assert api.get("/campaigns").json()["total"] == 0

    @pytest.mark.parametrize(("change", "loc"), [
        ({"starts_at": "2026-04-01T00:00:00"}, ["body", "starts_at"]),
        ({"budget_minor": 12.5}, ["body", "budget_minor"]),
        ({"stacking": "greedy"}, ["body", "stacking"]),
        ({"arms": [{"name": "x", "weight": 50}]}, ["body", "arms", "0"]),
    ])
    def test_bad_body(self, api: Api, change: dict[str, Any], loc: list[str]) -> None:
        response = api.post("/campaigns", campaign_body(api.goal()) | change)
        assert response.status_code == 422
        assert loc in locs(response)

    def test_duplicate_name(self, api: Api) -> None:
        goal_id = api.goal()
        api.campaign(goal_id=goal_id)
        response = api.post("/campaigns", campaign_body(goal_id))
        assert response.status_code == 409
        assert locs(response) == [["name"]]


class TestListCampaigns:
    def test_filter_by_status_and_paginate(self, api: Api) -> None:
        goal_id = api.goal()
        ids = [api.campaign(goal_id=goal_id, name=f"C{n}")["id"] for n in range(4)]
        api.move(ids[1], "scheduled")
        api.move(ids[3], "scheduled")
        everything = api.get("/campaigns").json()
        assert everything["total"] == 4
        assert [c["id"] for c in everything["items"]] == ids
        assert all(len(c["arms"]) == 2 for c in everything["items"])
        scheduled = api.get("/campaigns", params={"status": "scheduled"}).json()
        assert [c["id"] for c in scheduled["items"]] == [ids[1], ids[3]]
        page = api.get("/campaigns", params={"status": "draft", "limit": 1, "offset": 1}).json()
        assert (page["total"], [c["id"] for c in page["items"]]) == (2, [ids[2]])

    def test_unknown_status(self, api: Api) -> None:
        response = api.get("/campaigns", params={"status": "archived"})
        assert response.status_code == 422
        assert locs(response) == [["query", "status"]]


class TestGetCampaign:
    def test_success(self, api: Api) -> None:
        created = api.campaign()
        assert api.get(f"/campaigns/{created['id']}").json() == created

    def test_shows_spent_and_remaining_budget(self, api: Api, session: Session) -> None:
        created = api.campaign()
        campaign = session.get(Campaign, created["id"])
        assert campaign is not None
        campaign.spent_minor = 2_500
        session.add(campaign)
        session.flush()
        body = api.get(f"/campaigns/{created['id']}").json()
        assert (body["budget_minor"], body["spent_minor"], body["remaining_budget_minor"]) == (
            100_000, 2_500, 97_500)

    def test_unknown_id(self, api: Api) -> None:
        response = api.get("/campaigns/999999")
        assert response.status_code == 404
        assert response.json()["code"] == "campaign_not_found"

    def test_id_must_be_positive(self, api: Api) -> None:
        response = api.get("/campaigns/0")
        assert response.status_code == 422
        assert locs(response) == [["path", "campaign_id"]]


class TestUpdateCampaign:
    def test_success(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.patch(f"/campaigns/{campaign['id']}",
                             {"budget_minor": 250_000, "description": "More"})
        assert response.status_code == 200
        body = response.json()
        assert (body["budget_minor"], body["description"], body["name"]) == (
            250_000, "More", "Spring push")
        assert body["config_version"] == campaign["config_version"] + 1

    def test_running_campaign_cannot_move_its_start(self, api: Api) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled", "running")
        response = api.patch(f"/campaigns/{campaign['id']}",
                             {"starts_at": iso(utcnow() + timedelta(days=2))})
        assert response.status_code == 409
        assert response.json()["code"] == "campaign_live"
        assert locs(response) == [["starts_at"]]

    def test_bad_body(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.patch(f"/campaigns/{campaign['id']}", {"priority": 5000})
        assert response.status_code == 422
        assert locs(response) == [["body", "priority"]]

    def test_schedule_out_of_order(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.patch(f"/campaigns/{campaign['id']}",
                             {"ends_at": iso(utcnow() - timedelta(days=1))})
        assert response.status_code == 422
        assert locs(response) == [["ends_at"]]

    def test_unknown_id(self, api: Api) -> None:
        assert api.patch("/campaigns/999999", {"priority": 1}).status_code == 404


class TestDeleteCampaign:
    def test_draft_is_deleted_with_its_codes(self, api: Api, session: Session) -> None:
        campaign = api.campaign()
        assert api.batch(campaign, 20).status_code == 201
        response = api.delete(f"/campaigns/{campaign['id']}")
        assert response.status_code == 204
        assert response.content == b""
        assert api.get(f"/campaigns/{campaign['id']}").status_code == 404
        assert session.exec(select(CouponCode).where(
            CouponCode.campaign_id == campaign["id"])).first() is None
        assert session.exec(select(Arm).where(Arm.campaign_id == campaign["id"])).first() is None

    def test_scheduled_campaign_cannot_be_deleted(self, api: Api) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled")
        response = api.delete(f"/campaigns/{campaign['id']}")
        assert response.status_code == 409
        assert response.json()["code"] == "campaign_not_draft"
        assert api.get(f"/campaigns/{campaign['id']}").status_code == 200

    def test_unknown_id(self, api: Api) -> None:
        assert api.delete("/campaigns/999999").status_code == 404


class TestAddArm:
    def test_success(self, api: Api) -> None:
        campaign = api.campaign(arms=[control(40), discount(weight=40)])
        response = api.post(f"/campaigns/{campaign['id']}/arms",
                            discount("five percent", weight=20, percent_bp=500))
        assert response.status_code == 201
        arm = response.json()
        assert (arm["name"], arm["weight"], arm["position"]) == ("five percent", 20, 2)
        assert arm["incentive"]["type"] == "percent_discount"
        arms = api.get(f"/campaigns/{campaign['id']}").json()["arms"]
        assert [a["name"] for a in arms] == ["control", "ten percent", "five percent"]

    def test_only_while_draft(self, api: Api) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled")
        response = api.post(f"/campaigns/{campaign['id']}/arms", discount("more", weight=10))
        assert response.status_code == 409
        assert response.json()["code"] == "campaign_not_draft"

    def test_duplicate_name(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.post(f"/campaigns/{campaign['id']}/arms", discount("web coupon"))
        assert response.status_code == 422
        assert response.json()["errors"][0]["type"] == "duplicate"

    def test_bad_body(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.post(f"/campaigns/{campaign['id']}/arms",
                            {"name": "heavy", "weight": 101, "is_control": True})
        assert response.status_code == 422
        assert locs(response) == [["body", "weight"]]

    def test_unknown_campaign(self, api: Api) -> None:
        assert api.post("/campaigns/999999/arms", discount()).status_code == 404


class TestRemoveArm:
    def test_success(self, api: Api) -> None:
        campaign = api.campaign()
        arm_id = campaign["arms"][1]["id"]
        assert api.delete(f"/campaigns/{campaign['id']}/arms/{arm_id}").status_code == 204
        arms = api.get(f"/campaigns/{campaign['id']}").json()["arms"]
        assert [a["name"] for a in arms] == ["control"]

    def test_arm_of_another_campaign(self, api: Api) -> None:
        goal_id = api.goal()
        first = api.campaign(goal_id=goal_id, name="First")
        second = api.campaign(goal_id=goal_id, name="Second")
        response = api.delete(f"/campaigns/{first['id']}/arms/{second['arms'][0]['id']}")
        assert response.status_code == 404
        assert response.json()["code"] == "arm_not_found"
        assert len(api.get(f"/campaigns/{second['id']}").json()["arms"]) == 2

    def test_only_while_draft(self, api: Api) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled")
        response = api.delete(f"/campaigns/{campaign['id']}/arms/{campaign['arms'][1]['id']}")
        assert response.status_code == 409


class TestSetWeights:
    def test_replaced_before_anyone_is_exposed(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.put(f"/campaigns/{campaign['id']}/weights",
                           {"weights": {"control": 20, "web coupon": 80}})
        assert response.status_code == 200
        body = response.json()
        assert [a["weight"] for a in body["arms"]] == [20, 80]
        assert body["allocation_period"] == 1

    def test_new_period_once_customers_are_exposed(self, api: Api, session: Session) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled", "running")
        customer = expose(session, campaign_id=campaign["id"], arm_name="control",
                          external_id="C1")
        response = api.put(f"/campaigns/{campaign['id']}/weights",
                           {"weights": {"control": 10, "web coupon": 90}})
        assert response.status_code == 200
        assert response.json()["allocation_period"] == 2
        assignment = session.exec(select(Assignment).where(
            Assignment.customer_id == customer.id)).one()
        assert (assignment.arm_id, assignment.allocation_period) == (
            campaign["arms"][0]["id"], 1)
        audit = api.get(f"/campaigns/{campaign['id']}/audit").json()["items"][-1]
        assert audit["action"] == "campaign.weights"
        assert audit["details"]["new_period"] is True

    @pytest.mark.parametrize(("weights", "loc"), [
        ({"control": 50, "web coupon": 40}, ["weights"]),
        ({"control": 50, "web coupon": 40, "ghost": 10}, ["weights", "ghost"]),
        ({"control": 100}, ["weights", "web coupon"]),
    ])
    def test_invalid_weights(self, api: Api, weights: dict[str, int], loc: list[str]) -> None:
        campaign = api.campaign()
        response = api.put(f"/campaigns/{campaign['id']}/weights", {"weights": weights})
        assert response.status_code == 422
        assert loc in locs(response)

    def test_bad_body(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.put(f"/campaigns/{campaign['id']}/weights",
                           {"weights": {"control": -5, "web coupon": 105}})
        assert response.status_code == 422
        assert ["body", "weights", "control"] in locs(response)

    def test_ended_campaign(self, api: Api) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled", "ended")
        response = api.put(f"/campaigns/{campaign['id']}/weights",
                           {"weights": {"control": 50, "web coupon": 50}})
        assert response.status_code == 409

    def test_unknown_campaign(self, api: Api) -> None:
        assert api.put("/campaigns/999999/weights", {"weights": {"a": 100}}).status_code == 404


class TestTransitions:
    def test_through_the_lifecycle(self, api: Api) -> None:
        campaign = api.campaign()
        path = f"/campaigns/{campaign['id']}/transitions"
        assert api.post(path, {"to": "scheduled"}).json()["status"] == "scheduled"
        assert api.post(path, {"to": "running"}).json()["status"] == "running"
        paused = api.post(path, {"to": "paused", "reason": "complaints rising"}).json()
        assert (paused["status"], paused["pause_reason"]) == ("paused", "complaints rising")
        resumed = api.post(path, {"to": "running"}).json()
        assert (resumed["status"], resumed["pause_reason"]) == ("running", None)
        assert api.post(path, {"to": "ended"}).json()["status"] == "ended"

    def test_refused_with_every_reason(self, api: Api) -> None:
        campaign = api.campaign(arms=[discount(weight=60)], budget_minor=None, ends_at=None)
        response = api.post(f"/campaigns/{campaign['id']}/transitions", {"to": "scheduled"})
        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "invalid_transition"
        types = {error["type"] for error in body["errors"]}
        assert {"no_control", "weights_sum", "missing"} <= types
        assert {("budget_minor",), ("ends_at",), ("arms",)} <= {
            tuple(error["loc"]) for error in body["errors"]}
        assert api.get(f"/campaigns/{campaign['id']}").json()["status"] == "draft"

    def test_not_allowed_from_this_status(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.post(f"/campaigns/{campaign['id']}/transitions", {"to": "running"})
        assert response.status_code == 409
        assert "allowed from draft: scheduled" in response.json()["message"]

    def test_back_to_draft(self, api: Api) -> None:
        campaign = api.campaign()
        assert api.move(campaign["id"], "scheduled", "draft")["status"] == "draft"

    @pytest.mark.parametrize(("body", "loc"), [
        ({"to": "archived"}, ["body", "to"]), ({}, ["body", "to"]),
        ({"to": "paused", "reason": "x" * 501}, ["body", "reason"]),
        ({"to": "paused", "why": "x"}, ["body", "why"])])
    def test_bad_body(self, api: Api, body: dict[str, Any], loc: list[str]) -> None:
        campaign = api.campaign()
        response = api.post(f"/campaigns/{campaign['id']}/transitions", body)
        assert response.status_code == 422
        assert locs(response) == [loc]

    def test_unknown_campaign(self, api: Api) -> None:
        response = api.post("/campaigns/999999/transitions", {"to": "scheduled"})
        assert response.status_code == 404


class TestCampaignAudit:
    def test_changes_in_order_with_the_actor(self, api: Api) -> None:
        campaign = api.campaign()
        api.patch(f"/campaigns/{campaign['id']}", {"priority": 7})
        api.move(campaign["id"], "scheduled")
        body = api.get(f"/campaigns/{campaign['id']}/audit").json()
        assert [e["action"] for e in body["items"]] == [
            "campaign.create", "campaign.update", "campaign.scheduled"]
        assert body["total"] == 3
        assert all(e["actor"].startswith("api_key:") and e["actor"].endswith(":ops")
                   for e in body["items"])
        assert body["items"][1]["details"]["before"] == {"priority": 0}

    def test_only_this_campaign(self, api: Api) -> None:
        goal_id = api.goal()
        first = api.campaign(goal_id=goal_id, name="First")
        api.campaign(goal_id=goal_id, name="Second")
        body = api.get(f"/campaigns/{first['id']}/audit").json()
        assert {e["entity_id"] for e in body["items"]} == {first["id"]}

    def test_pagination(self, api: Api) -> None:
        campaign = api.campaign()
        for priority in range(1, 5):
            api.patch(f"/campaigns/{campaign['id']}", {"priority": priority})
        page = api.get(f"/campaigns/{campaign['id']}/audit",
                       params={"limit": 2, "offset": 3}).json()
        assert page["total"] == 5
        assert [e["details"]["changes"]["priority"] for e in page["items"]] == [3, 4]

    def test_unknown_campaign(self, api: Api) -> None:
        assert api.get("/campaigns/999999/audit").status_code == 404


# --- coupon batches and exports ----------------------------------------------------------


class TestCouponBatches:
    def test_twenty_thousand_unique_codes(self, api: Api, session: Session) -> None:
        campaign = api.campaign()
        response = api.batch(campaign, 20_000)
        assert response.status_code == 201
        assert response.json() == {"generated": 20_000, "total_codes": 20_000}
        codes = session.exec(select(CouponCode.code).where(
            CouponCode.campaign_id == campaign["id"])).all()
        assert len(codes) == len(set(codes)) == 20_000
        assert all(c.startswith("WEB-") and not set(c[4:]) & LOOKALIKES for c in codes)

    def test_totals_accumulate(self, api: Api) -> None:
        campaign = api.campaign()
        api.batch(campaign, 100)
        assert api.batch(campaign, 50).json() == {"generated": 50, "total_codes": 150}
        audit = api.get(f"/campaigns/{campaign['id']}/audit").json()["items"]
        assert [e["details"]["generated"] for e in audit
                if e["action"] == "coupon_batch.generate"] == [100, 50]

    def test_shared_coupon(self, api: Api) -> None:
        campaign = api.campaign(arms=[control(), coupon(mode="shared")])
        response = api.batch(campaign, 10)
        assert response.status_code == 409
        assert response.json()["code"] == "not_batch_coupon"
        assert "batch mode" in response.json()["message"]

    def test_control_arm(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.batch(campaign, 10, arm=0)
        assert response.status_code == 409
        assert "control arm" in response.json()["message"]

    def test_not_a_coupon(self, api: Api) -> None:
        campaign = api.campaign(arms=[control(), discount()])
        assert api.batch(campaign, 10).status_code == 409

    @pytest.mark.parametrize("count", [0, 1_000_001, -3, "many", 2.5, None])
    def test_bad_count(self, api: Api, count: Any) -> None:
        campaign = api.campaign()
        response = api.batch(campaign, count)
        assert response.status_code == 422
        assert locs(response) == [["body", "count"]]

    def test_unknown_field(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.post(f"/campaigns/{campaign['id']}/arms/{campaign['arms'][1]['id']}"
                            "/coupon-batches", {"count": 5, "prefix": "X"})
        assert response.status_code == 422
        assert locs(response) == [["body", "prefix"]]

    def test_arm_of_another_campaign(self, api: Api) -> None:
        goal_id = api.goal()
        first = api.campaign(goal_id=goal_id, name="First")
        second = api.campaign(goal_id=goal_id, name="Second")
        response = api.post(f"/campaigns/{first['id']}/arms/{second['arms'][1]['id']}"
                            "/coupon-batches", {"count": 5})
        assert response.status_code == 404
        assert response.json()["code"] == "arm_not_found"

    def test_unknown_campaign(self, api: Api) -> None:
        assert api.post("/campaigns/999999/arms/1/coupon-batches",
                        {"count": 5}).status_code == 404

    def test_ended_campaign(self, api: Api) -> None:
        campaign = api.campaign()
        api.move(campaign["id"], "scheduled", "ended")
        response = api.batch(campaign, 5)
        assert response.status_code == 409
        assert response.json()["code"] == "campaign_ended"

    def test_a_failed_batch_writes_nothing(self, api: Api, session: Session,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        campaign = api.campaign()
        api.batch(campaign, 10)
        existing = list(session.exec(select(CouponCode.code)).all())
        monkeypatch.setattr(coupons, "EXTRA_ROUNDS", 1)
        real_draw = coupons.generate_codes
        draws = iter([None])

        def draw(n: int, **kwargs: Any) -> list[str]:
            # The first draw is half fresh, half taken; every later one only taken codes.
            if next(draws, "taken") is None:
                return real_draw(n - len(existing), **kwargs) + existing
            return existing[:n]

        monkeypatch.setattr(coupons, "generate_codes", draw)
        response = api.batch(campaign, 20)
        assert response.status_code == 409
        assert response.json()["code"] == "code_space_exhausted"
        assert sorted(session.exec(select(CouponCode.code)).all()) == sorted(existing)


class TestCouponCodesCsv:
    def test_parses_back(self, api: Api, session: Session) -> None:
        campaign = api.campaign()
        api.batch(campaign, 30)
        api.move(campaign["id"], "scheduled", "running")
        expose(session, campaign_id=campaign["id"], arm_name="web coupon", external_id="C-7",
               issue_code=True)
        rows = api.csv_rows(f"/campaigns/{campaign['id']}/coupon-codes.csv")
        assert len(rows) == 30
        assert list(rows[0]) == ["code", "arm", "customer_id", "issued_at", "uses"]
        stored = session.exec(select(CouponCode).where(CouponCode.campaign_id == campaign["id"])
                              .order_by(col(CouponCode.id))).all()
        assert [r["code"] for r in rows] == [c.code for c in stored]
        issued, unissued = rows[0], rows[1:]
        assert (issued["arm"], issued["customer_id"], issued["uses"]) == (
            "web coupon", "C-7", "0")
        assert datetime.fromisoformat(issued["issued_at"]).utcoffset() == timedelta(0)
        assert all((r["arm"], r["customer_id"], r["issued_at"]) == ("web coupon", "", "")
                   for r in unissued)

    def test_streams_in_chunks(self, api: Api) -> None:
        campaign = api.campaign()
        api.batch(campaign, 2_500)
        with api.client.stream("GET", f"{API}/campaigns/{campaign['id']}/coupon-codes.csv",
                               headers=api.headers) as response:
            chunks = list(response.iter_raw())
        assert len(chunks) >= 3  # written 1,000 rows at a time
        lines = b"".join(chunks).decode().splitlines()
        assert len(lines) == 2_501 and len(set(lines)) == 2_501

    def test_no_codes_gives_only_the_header(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.get(f"/campaigns/{campaign['id']}/coupon-codes.csv")
        assert response.text == "code,arm,customer_id,issued_at,uses\r\n"

    def test_unknown_campaign(self, api: Api) -> None:
        response = api.get("/campaigns/999999/coupon-codes.csv")
        assert response.status_code == 404
        assert response.json()["code"] == "campaign_not_found"


class TestAudienceCsv:
    def test_lists_exactly_the_assigned_customers(self, api: Api, session: Session) -> None:
        goal_id = api.goal()
        campaign = api.campaign(goal_id=goal_id)
        other = api.campaign(goal_id=goal_id, name="Other")
        api.batch(campaign, 10)
        for external_id, arm in [("A1", "web coupon"), ("A2", "control"), ("A3", "web coupon")]:
            expose(session, campaign_id=campaign["id"], arm_name=arm, external_id=external_id,
                   issue_code=arm == "web coupon")
        expose(session, campaign_id=other["id"], arm_name="control", external_id="B1")
        make_customer(session, external_id="never-seen")

        rows = api.csv_rows(f"/campaigns/{campaign['id']}/audience.csv")

        assert [(r["external_id"], r["arm"], r["is_control"]) for r in rows] == [
            ("A1", "web coupon", "false"), ("A2", "control", "true"),
            ("A3", "web coupon", "false")]
        issued = dict(session.exec(
            select(Customer.external_id, CouponCode.code)
            .join(CouponCode, col(CouponCode.customer_id) == Customer.id)).all())
        assert {r["external_id"]: r["code"] for r in rows} == {
            "A1": issued["A1"], "A2": "", "A3": issued["A3"]}
        assert all(datetime.fromisoformat(r["first_exposed_at"]) for r in rows)

    def test_customers_who_fetched_offers(self, api: Api, client: TestClient,
                                          storefront_key: dict[str, str]) -> None:
        campaign = api.campaign(arms=[coupon(weight=100)], control_opt_out=True,
                                control_opt_out_reason="launch test")
        api.batch(campaign, 5, arm=0)
        api.move(campaign["id"], "scheduled", "running")
        shown = {}
        for external_id in ("S1", "S2"):
            offers = client.get(f"{API}/customers/{external_id}/offers",
                                params={"stage": "after_sale"}, headers=storefront_key).json()
            shown[external_id] = offers["offers"][0]["code"]
        rows = api.csv_rows(f"/campaigns/{campaign['id']}/audience.csv")
        assert {r["external_id"]: r["code"] for r in rows} == shown
        assert all(code.startswith("WEB-") for code in shown.values())

    def test_no_assignments_gives_only_the_header(self, api: Api) -> None:
        campaign = api.campaign()
        response = api.get(f"/campaigns/{campaign['id']}/audience.csv")
        assert response.text == "external_id,arm,is_control,first_exposed_at,code\r\n"

    def test_unknown_campaign(self, api: Api) -> None:
        assert api.get("/campaigns/999999/audience.csv").status_code == 404


@pytest.fixture(scope="module")
def own_engine(database: tuple[str, str | None],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A database of its own, so data can really be committed (PostgreSQL: a fresh schema)."""
    with scratch_database(database, tmp_path_factory.mktemp("own"), prefix="cs_own") as scratch:
        yield scratch.engine


class TestExportsOnTheAppsOwnSessions:
    """Without the test's shared session: the stream reads on a session that outlives the route."""

    def test_codes_and_audience_stream_from_committed_data(self, own_engine: Engine) -> None:
        with session_scope(own_engine) as session:
            secret = create_api_key(session, name="ops", scope="management",
                                    actor="test").secret
            goal = make_goal(session)
            assert goal.id is not None
        app = create_app(engine=own_engine, check_schema=False,
                         settings=Settings(config_refresh_seconds=0))
        with TestClient(app) as client, Session(own_engine) as unused:
            api = Api(client, bearer(secret), unused)
            campaign = api.campaign(goal_id=goal.id)
            assert api.batch(campaign, 2_345).status_code == 201
            with session_scope(own_engine) as session:
                expose(session, campaign_id=campaign["id"], arm_name="web coupon",
                       external_id="C1", issue_code=True)
            codes = api.csv_rows(f"/campaigns/{campaign['id']}/coupon-codes.csv")
            audience = api.csv_rows(f"/campaigns/{campaign['id']}/audience.csv")
        assert len(codes) == len({row["code"] for row in codes}) == 2_345
        assert [(r["external_id"], r["code"]) for r in audience] == [("C1", codes[0]["code"])]


class TestCsvFormulaGuard:
    def test_text_that_looks_like_a_formula_is_quoted(self) -> None:
        from web.api.management.common import csv_value

        assert csv_value("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
        assert csv_value("@SUM(A1)") == "'@SUM(A1)"
        assert csv_value("web coupon") == "web coupon"
        assert csv_value(-5) == -5  # numbers stay numbers


class TestIntegersAreIntegers:
    """A JSON true, 5.0 or "5" where the document says integer is refused naming the field,
    and nothing changes (schemathesis found `{"priority": true}` accepted as priority 1)."""

    @pytest.mark.parametrize("value", [True, 5.0, "5"])
    def test_campaign_update(self, api: Api, value: Any) -> None:
        campaign = api.campaign()
        response = api.client.patch(f"/api/v1/campaigns/{campaign['id']}",
                                    json={"priority": value}, headers=api.headers)
        assert response.status_code == 422, response.text
        assert ["body", "priority"] in locs(response)
        assert api.get(f"/campaigns/{campaign['id']}").json()["priority"] \
            == campaign["priority"]

    @pytest.mark.parametrize("field", ["goal_id", "per_customer_limit", "priority"])
    def test_campaign_create(self, api: Api, field: str) -> None:
        body = campaign_body(api.goal())
        body[field] = True
        before = len(api.get("/campaigns").json()["items"])
        response = api.post("/campaigns", body)
        assert response.status_code == 422, response.text
        assert ["body", field] in locs(response)
        assert len(api.get("/campaigns").json()["items"]) == before
