"""Every API route refuses a caller without the right key, before it does anything.

The routes come from the application itself (``fastapi.routing.iter_route_contexts``, the
walk FastAPI's OpenAPI generator makes), and :data:`REQUIRED_SCOPES` says which key each
one needs. A route added without an entry here fails :class:`TestRouteTable`, so none can
be forgotten; an entry that does not match the route's real check fails the walk. Marketer
UI routes have their own table and walk (``tests/web/ui/test_access.py``).

Each walk sends, to every route: no key, malformed keys, a key of every other scope and a
revoked key of the right scope (401 / 403 with the API's JSON error body), and the right
key (anything but 401 / 403), which proves the walk would notice a missing check.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, SQLModel

from campaigns import models  # every table registered on the metadata
from campaigns.models import ApiScope
from campaigns.services.apikeys import create_api_key, revoke_api_key
from campaigns.services.campaigns import campaign_arms
from tests.builders import (
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    make_campaign,
    make_channel,
    make_running_campaign,
)
from tests.web.api.conftest import app, bearer, client  # noqa: F401  (fixtures)
from web.ui.rendering import UiRoute

pytestmark = pytest.mark.reliability

STOREFRONT = frozenset({ApiScope.STOREFRONT})
MANAGEMENT = frozenset({ApiScope.MANAGEMENT})
ANALYTICS = frozenset({ApiScope.ANALYTICS})
ANALYTICS_OR_MANAGEMENT = frozenset({ApiScope.ANALYTICS, ApiScope.MANAGEMENT})

V1 = "/api/v1"

#: The key every API route needs. A new route must be added here (TestRouteTable fails
#: until it is), which forces the question "who may call it?".
REQUIRED_SCOPES: dict[tuple[str, str], frozenset[ApiScope]] = {
    # storefront: offers, redemptions, codes, trials, loyalty, events
    ("GET", f"{V1}/customers/{{customer_id}}/offers"): STOREFRONT,
    ("POST", f"{V1}/redemptions"): STOREFRONT,
    # the redeemer's storefront key, or an operator's
    ("POST", f"{V1}/redemptions/{{redemption_id}}/rollback"): STOREFRONT | MANAGEMENT,
    ("POST", f"{V1}/coupons/validate"): STOREFRONT,
    ("GET", f"{V1}/customers/{{customer_id}}/trials"): STOREFRONT,
    ("GET", f"{V1}/customers/{{customer_id}}/loyalty"): STOREFRONT,
    ("POST", f"{V1}/events"): STOREFRONT,
    # management: configuration, campaigns, coupon batches, exports, draws
    ("GET", f"{V1}/channels"): MANAGEMENT,
    ("POST", f"{V1}/channels"): MANAGEMENT,
    ("GET", f"{V1}/channels/{{key}}"): MANAGEMENT,
    ("PATCH", f"{V1}/channels/{{key}}"): MANAGEMENT,
    ("GET", f"{V1}/stages"): MANAGEMENT,
    ("POST", f"{V1}/stages"): MANAGEMENT,
    ("GET", f"{V1}/channel-costs"): MANAGEMENT,
    ("PUT", f"{V1}/channel-costs"): MANAGEMENT,
    ("GET", f"{V1}/goals"): MANAGEMENT,
    ("POST", f"{V1}/goals"): MANAGEMENT,
    ("GET", f"{V1}/goals/{{goal_id}}"): MANAGEMENT,
    ("GET", f"{V1}/incentive-types"): MANAGEMENT,
    ("GET", f"{V1}/incentives"): MANAGEMENT,
    ("POST", f"{V1}/incentives"): MANAGEMENT,
    ("GET", f"{V1}/incentives/{{incentive_id}}"): MANAGEMENT,
    ("GET", f"{V1}/campaigns"): MANAGEMENT,
    ("POST", f"{V1}/campaigns"): MANAGEMENT,
    ("GET", f"{V1}/campaigns/{{campaign_id}}"): MANAGEMENT,
    ("PATCH", f"{V1}/campaigns/{{campaign_id}}"): MANAGEMENT,
    ("DELETE", f"{V1}/campaigns/{{campaign_id}}"): MANAGEMENT,
    ("POST", f"{V1}/campaigns/{{campaign_id}}/arms"): MANAGEMENT,
    ("DELETE", f"{V1}/campaigns/{{campaign_id}}/arms/{{arm_id}}"): MANAGEMENT,
    ("PUT", f"{V1}/campaigns/{{campaign_id}}/weights"): MANAGEMENT,
    ("POST", f"{V1}/campaigns/{{campaign_id}}/transitions"): MANAGEMENT,
    ("GET", f"{V1}/campaigns/{{campaign_id}}/audit"): MANAGEMENT,
    ("POST", f"{V1}/campaigns/{{campaign_id}}/arms/{{arm_id}}/coupon-batches"): MANAGEMENT,
    ("GET", f"{V1}/campaigns/{{campaign_id}}/coupon-codes.csv"): MANAGEMENT,
    ("GET", f"{V1}/campaigns/{{campaign_id}}/audience.csv"): MANAGEMENT,
    ("POST", f"{V1}/campaigns/{{campaign_id}}/draws"): MANAGEMENT,
    ("GET", f"{V1}/campaigns/{{campaign_id}}/draws/{{draw_id}}"): MANAGEMENT,
    ("POST", f"{V1}/campaigns/{{campaign_id}}/draws/{{draw_id}}/verify"): MANAGEMENT,
    # analytics: reports; the economics overview is also read by marketers
    ("GET", f"{V1}/campaigns/{{campaign_id}}/report"): ANALYTICS,
    ("GET", f"{V1}/channels/economics"): ANALYTICS_OR_MANAGEMENT,
    # monitoring: the metrics name campaigns and their spend
    ("GET", "/metrics"): ANALYTICS_OR_MANAGEMENT,
}

#: Routes anyone may call, and why that is safe. Nothing under /api/ may be here.
OPEN_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe: says only 'ok'",
    ("GET", "/readyz"): "readiness probe: ready or not, and why (no data)",
    ("GET", "/docs"): "the API's documentation page",
    ("GET", "/openapi.json"): "the API's schema",
    ("HEAD", "/openapi.json"): "the API's schema",
}

#: Mounted applications (no per-route table): the vendored and own front-end files.
OPEN_MOUNTS = {"/static"}

#: Authorization headers that are not a usable key. ``{secret}`` is a live key of the
#: right scope, to show that only a well-formed bearer header is read.
MALFORMED_AUTHORIZATIONS = (
    "Bearer",
    "Bearer    ",
    "Token {secret}",
    "{secret}",
    "Basic {basic}",
    "Bearer {secret}x",
    "Bearer x{secret}",
    "Bearer {secret} {secret}",
    "Bearer cs_00000000_" + "A" * 43,
    "Bearer " + "A" * 2000,
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    route: APIRoute

    @property
    def scopes(self) -> frozenset[ApiScope]:
        return REQUIRED_SCOPES[(self.method, self.template)]

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def app_routes(app: FastAPI) -> tuple[list[Endpoint], set[str]]:  # noqa: F811
    """Every (method, path) the app answers, as the router sees it, and its mounts."""
    endpoints, mounts = [], set()
    for context in iter_route_contexts(app.routes):
        if context.methods is None:
            mounts.add(context.path)
            continue
        for method in sorted(context.methods):
            endpoints.append(Endpoint(method, context.path, context.original_route))
    return endpoints, mounts


def api_endpoints(app: FastAPI) -> list[Endpoint]:  # noqa: F811
    return [endpoint for endpoint in app_routes(app)[0]
            if (endpoint.method, endpoint.template) in REQUIRED_SCOPES]


def is_error_body(response: httpx.Response, code: str) -> bool:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False
    body = response.json()
    return isinstance(body, dict) and body.get("code") == code \
        and isinstance(body.get("message"), str) and bool(body["message"]) \
        and isinstance(body.get("errors"), list)


# --- the world the walk runs in ---------------------------------------------------------


@dataclass
class World:
    path_values: dict[str, str]
    keys: dict[ApiScope, str]  # a live key of each scope
    revoked: dict[ApiScope, str]  # a revoked key of each scope

    def url(self, endpoint: Endpoint) -> str:
        names = endpoint.route.param_convertors
        unknown = set(names) - set(self.path_values)
        assert not unknown, f"{endpoint}: give the walk a value for {sorted(unknown)}"
        return endpoint.template.format(**self.path_values)


@pytest.fixture
def world(session: Session, client: TestClient) -> World:  # noqa: F811
    """Real rows behind every path parameter, so a permitted key reaches real data."""
    campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm()],
                                     per_customer_limit=5)
    coupon = next(arm for arm in campaign_arms(session, campaign) if not arm.is_control)
    keys = {scope: create_api_key(session, name=f"walk {scope.value}", scope=scope,
                                  actor="test").secret for scope in ApiScope}
    customer = customer_id_in_arm(session, campaign, coupon.name)
    issued = client.get(f"{V1}/customers/{customer}/offers", headers=bearer(keys[
        ApiScope.STOREFRONT])).json()["offers"][0]["code"]
    redeemed = client.post(f"{V1}/redemptions", json={
        "customer_id": customer, "channel": "web", "code": issued, "order_amount_minor": 5000},
        headers={**bearer(keys[ApiScope.STOREFRONT]), "Idempotency-Key": uuid.uuid4().hex})
    assert redeemed.status_code == 201, redeemed.text
    revoked = {}
    for scope in ApiScope:
        created = create_api_key(session, name=f"revoked {scope.value}", scope=scope,
                                 actor="test")
        # used once while valid, so a cached "valid" answer would show up here
        assert client.get("/api/v1/channels/economics",
                          headers=bearer(created.secret)).status_code in (200, 403)
        assert created.api_key.id is not None
        revoke_api_key(session, api_key_id=created.api_key.id, actor="test")
        revoked[scope] = created.secret
    return World(
        path_values={"customer_id": customer, "redemption_id": str(redeemed.json()[
            "redemption_id"]), "campaign_id": str(campaign.id), "arm_id": str(coupon.id),
            "draw_id": "1", "key": "web", "goal_id": str(campaign.goal_id),
            "incentive_id": str(coupon.incentive_id)},
        keys=keys, revoked=revoked)


def send(client: TestClient, endpoint: Endpoint, url: str,  # noqa: F811
         authorization: str | None, *, body: Any = None) -> httpx.Response:
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    if authorization is not None:
        headers["Authorization"] = authorization
    if endpoint.method in ("POST", "PUT", "PATCH"):
        return client.request(endpoint.method, url, headers=headers,
                              json={} if body is None else body)
    return client.request(endpoint.method, url, headers=headers)


def denials(world: World, scopes: frozenset[ApiScope]
            ) -> Iterator[tuple[str, str | None, int, set[str]]]:
    """(what, Authorization header, status, acceptable error codes) a route must refuse."""
    secret = world.keys[min(scopes)]
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    yield "no key", None, 401, {"unauthenticated"}
    for template in MALFORMED_AUTHORIZATIONS:
        yield (f"malformed {template[:20]!r}", template.format(secret=secret, basic=basic), 401,
               {"unauthenticated", "invalid_api_key"})
    for scope in ApiScope:
        if scope not in scopes:
            yield f"{scope.value} key", f"Bearer {world.keys[scope]}", 403, {"wrong_scope"}
    for scope in scopes:
        yield (f"revoked {scope.value} key", f"Bearer {world.revoked[scope]}", 401,
               {"invalid_api_key"})


# --- the tests -----------------------------------------------------------------------------


class TestRouteTable:
    def test_every_route_is_in_a_table_and_no_entry_is_stale(self, app) -> None:  # noqa: F811
        endpoints, mounts = app_routes(app)
        ui = {(e.method, e.template) for e in endpoints if isinstance(e.route, UiRoute)}
        rest = {(e.method, e.template) for e in endpoints} - ui
        missing = rest - set(REQUIRED_SCOPES) - set(OPEN_ROUTES)
        assert not missing, f"routes with no entry in REQUIRED_SCOPES or OPEN_ROUTES: " \
                            f"{sorted(missing)}"
        assert set(REQUIRED_SCOPES) <= rest, sorted(set(REQUIRED_SCOPES) - rest)
        assert set(OPEN_ROUTES) <= rest, sorted(set(OPEN_ROUTES) - rest)
        assert mounts == OPEN_MOUNTS
        assert len(ui) >= 40 and len(REQUIRED_SCOPES) >= 40

    def test_nothing_under_api_is_open(self, app) -> None:  # noqa: F811
        assert all(path.startswith("/api/") or path == "/metrics"
                   for _, path in REQUIRED_SCOPES)
        assert not [path for _, path in OPEN_ROUTES if path.startswith("/api/")]
        ui_paths = [e.template for e in app_routes(app)[0] if isinstance(e.route, UiRoute)]
        assert not [path for path in ui_paths if path.startswith("/api/")]

    def test_every_scope_guards_some_route(self) -> None:
        assert set().union(*REQUIRED_SCOPES.values()) == set(ApiScope)


def refusal_problems(client: TestClient, endpoint: Endpoint, world: World  # noqa: F811
                     ) -> tuple[list[str], int]:
    """What is wrong with how ``endpoint`` refuses the wrong callers; requests sent."""
    problems, sent = [], 0
    url = world.url(endpoint)
    for what, authorization, status, codes in denials(world, endpoint.scopes):
        response = send(client, endpoint, url, authorization)
        sent += 1
        if response.status_code != status or not any(
                is_error_body(response, code) for code in codes):
            problems.append(f"{endpoint} with {what}: {response.status_code} "
                            f"{response.text[:120]}")
        elif status == 401 and response.headers.get("www-authenticate") != "Bearer":
            problems.append(f"{endpoint} with {what}: 401 without WWW-Authenticate")
    return problems, sent


def scope_check(endpoint: Endpoint) -> Callable[..., Any]:
    """The route's ``require_scope`` dependency (web/deps.py)."""
    for dependency in endpoint.route.dependant.dependencies:
        if dependency.call is not None \
                and dependency.call.__qualname__.startswith("require_scope."):
            return dependency.call
    raise AssertionError(f"{endpoint} has no require_scope dependency of its own")


class TestDenied:
    def test_every_route_refuses_every_wrong_caller(self, app, client, world  # noqa: F811
                                                    ) -> None:
        problems, sent = [], 0
        for endpoint in api_endpoints(app):
            found, count = refusal_problems(client, endpoint, world)
            problems += found
            sent += count
        assert problems == []
        assert sent >= 40 * 13

    def test_the_walk_notices_a_missing_check(self, app, client, world  # noqa: F811
                                              ) -> None:
        """With one route's scope check gone, the walk above reports that route."""
        endpoint = next(e for e in api_endpoints(app)
                        if (e.method, e.template) == ("GET", f"{V1}/goals"))
        check = scope_check(endpoint)
        app.dependency_overrides[check] = lambda: None
        try:
            problems, sent = refusal_problems(client, endpoint, world)
        finally:
            del app.dependency_overrides[check]
        assert len(problems) == sent
        assert refusal_problems(client, endpoint, world)[0] == []

    def test_the_key_is_checked_before_the_input(self, app, client, world  # noqa: F811
                                                 ) -> None:
        """Bad input from a caller without the right key is refused for the key, not the input:
        nobody learns how a route checks its input, or makes it do so, without a key."""
        problems = []
        for endpoint in api_endpoints(app):
            url = f"{world.url(endpoint)}?probe=%00&limit=-1"
            wrong_scope = min(set(ApiScope) - endpoint.scopes, default=None)
            callers = [(None, 401)]
            if wrong_scope is not None:
                callers.append((f"Bearer {world.keys[wrong_scope]}", 403))
            for authorization, status in callers:
                response = send(client, endpoint, url, authorization,
                                body={"probe": "\x00", "count": "many"})
                if response.status_code != status:
                    problems.append(f"{endpoint} ({status} expected): "
                                    f"{response.status_code} {response.text[:100]}")
        assert problems == []

    def test_wrong_scope_answer_names_the_scope_needed(self, client, world  # noqa: F811
                                                       ) -> None:
        response = client.get(f"{V1}/campaigns", headers=bearer(world.keys[
            ApiScope.STOREFRONT]))
        assert response.status_code == 403
        assert response.json()["message"] == ("this route needs a management key; this key "
                                               "has scope storefront")

    def test_an_anonymous_caller_learns_nothing_about_ids(self, client, world  # noqa: F811
                                                          ) -> None:
        # The key is checked before the path: existing, missing or malformed ids look alike.
        existing = world.path_values["campaign_id"]
        assert client.get(f"{V1}/campaigns/{existing}").status_code == 401
        assert client.get(f"{V1}/campaigns/999999").status_code == 401
        assert client.get(f"{V1}/campaigns/not-a-number").status_code == 401


class TestPermitted:
    def test_the_right_key_passes_the_check_on_every_route(self, app, client, world  # noqa: F811
                                                           ) -> None:
        problems, checked = [], 0
        for endpoint in api_endpoints(app):
            for scope in sorted(endpoint.scopes):
                response = send(client, endpoint, world.url(endpoint),
                                f"Bearer {world.keys[scope]}")
                checked += 1
                if response.status_code in (401, 403):
                    problems.append(f"{endpoint} with a {scope.value} key: "
                                    f"{response.status_code} {response.text[:120]}")
        assert problems == []
        assert checked >= 40


# --- no side effect before the refusal ------------------------------------------------


def database_rows(session: Session) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, as text: a change anywhere shows up as a difference."""
    session.expire_all()
    state = {}
    for table in SQLModel.metadata.sorted_tables:
        rows = session.execute(select(table)).all()
        state[table.name] = sorted(tuple(str(value) for value in row) for row in rows)
    return state


@dataclass(frozen=True)
class Effect:
    """A request that changes rows when the right key sends it."""

    method: str
    template: str
    body: Callable[[World], Any] | None = None
    url: Callable[[World], str] | None = None

    def path(self, world: World) -> str:
        return self.url(world) if self.url else self.template.format(**world.path_values)


#: One request per kind of change, on both sides of the API: each would change rows if the
#: key were right (checked below), so "no row changed" after the refusals means something.
EFFECTS = (
    # storefront (while the campaign still runs)
    Effect("GET", f"{V1}/customers/{{customer_id}}/offers",
           url=lambda w: f"{V1}/customers/NEW-CUSTOMER-1/offers"),
    Effect("POST", f"{V1}/coupons/validate", lambda w: {"code": "NOSUCHCODE123"}),
    Effect("POST", f"{V1}/events", lambda w: {"events": [{
        "type": "interaction", "event_id": "walk-1", "customer_id": "C-EVENTS",
        "channel": "web", "stage": "after_sale", "occurred_at": "2026-01-31T09:12:00Z"}]}),
    Effect("POST", f"{V1}/redemptions", lambda w: {
        "customer_id": w.path_values["fresh_customer"], "channel": "web",
        "code": w.path_values["fresh_code"], "order_amount_minor": 5000}),
    Effect("POST", f"{V1}/redemptions/{{redemption_id}}/rollback"),
    # management
    Effect("POST", f"{V1}/channels",
           lambda w: {"key": "hijack", "name": "Hijacked", "kind": "partner"}),
    Effect("PATCH", f"{V1}/channels/{{key}}", lambda w: {"name": "Renamed by a shop"}),
    Effect("PUT", f"{V1}/channel-costs",
           lambda w: {"channel": "web", "stage": "after_sale", "cost_minor": 1}),
    Effect("POST", f"{V1}/campaigns", lambda w: {
        "name": "Rogue campaign", "goal_id": int(w.path_values["goal_id"]),
        "arms": [control_arm(), coupon_arm()]}),
    Effect("PATCH", f"{V1}/campaigns/{{campaign_id}}", lambda w: {"budget_minor": 10**9}),
    Effect("POST", f"{V1}/campaigns/{{campaign_id}}/arms/{{arm_id}}/coupon-batches",
           lambda w: {"count": 3}),
    Effect("DELETE", f"{V1}/campaigns/{{campaign_id}}",
           url=lambda w: f"{V1}/campaigns/{w.path_values['draft_id']}"),
    Effect("POST", f"{V1}/campaigns/{{campaign_id}}/transitions",
           lambda w: {"to": "paused", "reason": "walk"}),
)


class TestNoSideEffect:
    def test_refused_requests_change_no_row(self, app, client, session, world  # noqa: F811
                                            ) -> None:
        campaign_id = int(world.path_values["campaign_id"])
        draft = make_campaign(session, name="Draft to delete")
        make_channel(session, key="call_centre")
        fresh = customer_id_in_arm(session, session.get(models.Campaign, campaign_id),
                                   "web coupon", prefix="F")
        code = client.get(f"{V1}/customers/{fresh}/offers", headers=bearer(world.keys[
            ApiScope.STOREFRONT])).json()["offers"][0]["code"]
        world.path_values |= {"draft_id": str(draft.id), "fresh_customer": fresh,
                              "fresh_code": code}
        endpoints = {(e.method, e.template): e for e in api_endpoints(app)}
        assert {(effect.method, effect.template) for effect in EFFECTS} <= set(endpoints)

        before = database_rows(session)
        refused = 0
        for effect in EFFECTS:
            endpoint = endpoints[(effect.method, effect.template)]
            body = effect.body(world) if effect.body else None
            for what, authorization, status, _ in denials(world, endpoint.scopes):
                response = send(client, endpoint, effect.path(world), authorization,
                                body=body)
                assert response.status_code == status, (str(endpoint), what, response.text)
                refused += 1
        assert database_rows(session) == before, "a refused request changed the database"

        # The same requests with the right key do change rows: the check above could fail.
        for effect in EFFECTS:
            endpoint = endpoints[(effect.method, effect.template)]
            state = database_rows(session)
            response = send(client, endpoint, effect.path(world),
                            f"Bearer {world.keys[min(endpoint.scopes)]}",
                            body=effect.body(world) if effect.body else None)
            assert 200 <= response.status_code < 300, (str(endpoint), response.text)
            assert database_rows(session) != state, f"{endpoint} changed nothing"
        assert refused >= len(EFFECTS) * 13
