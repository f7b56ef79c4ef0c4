"""Every UI route denies an anonymous visitor and a wrong role: one walk over the route table.

The routes are taken from the application itself, so a page added tomorrow is checked
without touching this file; a route missing from the permission table cannot even be
declared (UiRoute looks it up).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from sqlmodel import Session
from starlette.routing import BaseRoute

from campaigns.models import Role
from campaigns.services.apikeys import create_api_key
from tests.builders import make_campaign, make_channel
from tests.web.ui.conftest import csrf_token, make_user
from web.ui.auth import CSRF_HEADER
from web.ui.permissions import PUBLIC, ROLE_PERMISSIONS, ROUTE_PERMISSIONS
from web.ui.rendering import UiRoute

#: Strings only an admin may ever see; a denied page must not contain them.
SENTINELS = ("sentinel_person", "sentinel-key-name")


def flatten(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route of the table, looking into included routers (FastAPI keeps them nested)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from flatten(included.routes)
        else:
            yield route


def ui_routes(app: FastAPI) -> list[UiRoute]:
    return [route for route in flatten(app.routes) if isinstance(route, UiRoute)]


def calls(app: FastAPI, params: dict[str, str]) -> list[tuple[UiRoute, str, str]]:
    """(route, method, concrete path) for every method of every UI route."""
    return [(route, method, route.path.format(**params))
            for route in ui_routes(app) for method in sorted(route.methods)]


@pytest.fixture
def params(session: Session) -> dict[str, str]:
    """Real values for every path parameter, so a permitted role would reach real data."""
    channel = make_channel(session, key="web")
    campaign = make_campaign(session)
    key = create_api_key(session, name="sentinel-key-name", scope="storefront", actor="test")
    make_user(session, role=Role.ADMIN, username="sentinel_person")
    return {"key": channel.key, "api_key_id": str(key.api_key.id),
            "campaign_id": str(campaign.id)}


class TestRouteTable:
    def test_every_route_is_in_the_table_and_the_table_has_no_stale_entry(self, ui_app
                                                                            ) -> None:
        names = [route.name for route in ui_routes(ui_app)]
        assert len(names) == len(set(names))
        assert set(names) == set(ROUTE_PERMISSIONS)
        assert len(names) >= 20

    def test_only_the_sign_in_page_is_public(self, ui_app) -> None:
        public = {route.name for route in ui_routes(ui_app) if route.permission is PUBLIC}
        assert public == {"ui.login", "ui.login.submit"}


class TestAnonymous:
    def test_every_route_redirects_to_sign_in(self, ui_app, new_client, params) -> None:
        client = new_client()
        checked = 0
        for route, method, path in calls(ui_app, params):
            if route.permission is PUBLIC:
                continue
            response = client.request(method, path, data={"name": "x"})
            assert response.status_code == 303, (method, path, response.status_code)
            location = urlsplit(response.headers["location"])
            assert location.path == "/login", (method, path)
            if method == "GET" and path != "/":
                assert parse_qs(location.query)["next"] == [path]
            assert not any(sentinel in response.text for sentinel in SENTINELS)
            checked += 1
        assert checked >= 20

    def test_htmx_requests_get_a_full_page_redirect(self, new_client, params) -> None:
        response = new_client().get(f"/dashboard/campaigns/{params['campaign_id']}/headline",
                                    headers={"HX-Request": "true"})
        assert response.status_code == 401
        assert response.headers["HX-Redirect"].startswith("/login?next=")


class TestWrongRole:
    def test_every_route_answers_403_without_data(self, ui_app, as_role, params) -> None:
        checked = set()
        for route, method, path in calls(ui_app, params):
            if route.permission is PUBLIC:
                continue
            for role, granted in ROLE_PERMISSIONS.items():
                if route.permission in granted:
                    continue
                # No CSRF token either: the role check comes first and says why.
                response = as_role(role).request(method, path, data={"name": "x"})
                assert response.status_code == 403, (role, method, path, response.status_code)
                assert "Access denied" in response.text
                assert f"({role.value})" in response.text
                assert not any(sentinel in response.text for sentinel in SENTINELS), path
                checked.add((route.name, method, role))
        # Every role but admin is refused somewhere; configuration routes refuse two roles.
        assert {role for _, _, role in checked} == {Role.MARKETER, Role.ANALYST, Role.VIEWER}
        assert len(checked) >= 30

    def test_permitted_roles_open_every_page(self, ui_app, as_role, params) -> None:
        opened = 0
        for route, method, path in calls(ui_app, params):
            if method != "GET" or route.permission is PUBLIC:
                continue
            for role, granted in ROLE_PERMISSIONS.items():
                if route.permission in granted:
                    response = as_role(role).get(path)
                    assert response.status_code == 200, (role, path, response.text[:500])
                    opened += 1
        assert opened >= 20

    def test_permitted_roles_pass_the_role_check_on_every_form(self, ui_app, as_role, params
                                                               ) -> None:
        """Unsafe routes: a permitted role is stopped only by a missing CSRF token.

        With the token, the request reaches the page itself (which may still refuse the
        made-up form, but never with 403 or a trip to the sign-in page).
        """
        checked = set()
        tokens: dict[Role, str] = {}
        for route, method, path in calls(ui_app, params):
            if method == "GET" or route.permission is PUBLIC:
                continue
            for role, granted in ROLE_PERMISSIONS.items():
                if route.permission not in granted:
                    continue
                browser = as_role(role)
                if role not in tokens:
                    tokens[role] = csrf_token(browser.get("/goals").text)
                refused = browser.request(method, path, data={"name": "x"})
                assert refused.status_code == 403, (role, method, path, refused.status_code)
                assert "This form could not be accepted" in refused.text, (role, path)
                assert "Access denied" not in refused.text
                if route.name != "ui.logout":  # signing out is tested in test_sessions
                    response = browser.request(method, path, data={"name": "x"},
                                               headers={CSRF_HEADER: tokens[role]})
                    assert response.status_code not in (401, 403, 500), (role, path,
                                                                    response.text[:300])
                    location = urlsplit(response.headers.get("location", ""))
                    assert location.path != "/login", (role, path)
                checked.add((route.name, method, role))
        assert {role for _, _, role in checked} == set(ROLE_PERMISSIONS)
        assert len(checked) >= 20

    def test_navigation_offers_only_permitted_pages(self, as_role) -> None:
        viewer = as_role(Role.VIEWER).get("/").text
        assert 'href="/channels"' in viewer and 'href="/users"' not in viewer
        assert 'href="/api-keys"' not in viewer
        admin = as_role(Role.ADMIN).get("/").text
        assert 'href="/users"' in admin and 'href="/api-keys"' in admin
        channels = as_role(Role.VIEWER).get("/channels").text
        assert "New channel" not in channels


class TestEveryRouteForEveryRole:
    """The walks above leave no (route, method, visitor) out: anonymous and all four roles."""

    def test_the_matrix_is_complete(self, ui_app, params) -> None:
        visitors: list[Role | None] = [None, *ROLE_PERMISSIONS]
        matrix = {(route.name, method, visitor): walk_for(route, method, visitor)
                  for route, method, _ in calls(ui_app, params) for visitor in visitors}
        assert "unchecked" not in matrix.values(), [
            cell for cell, walk in matrix.items() if walk == "unchecked"]
        assert set(ROLE_PERMISSIONS) == set(Role)
        assert len(matrix) == 5 * len(calls(ui_app, params))


def walk_for(route: UiRoute, method: str, visitor: Role | None) -> str:
    """Which test of this file checks what ``visitor`` gets from ``method route``."""
    if route.permission is PUBLIC:
        return "TestPublic"
    if visitor is None:
        return "TestAnonymous"
    if route.permission not in ROLE_PERMISSIONS[visitor]:
        return "TestWrongRole.test_every_route_answers_403_without_data"
    if method == "GET":
        return "TestWrongRole.test_permitted_roles_open_every_page"
    if method == "POST":
        return "TestWrongRole.test_permitted_roles_pass_the_role_check_on_every_form"
    return "unchecked"


class TestPublic:
    def test_the_sign_in_page_is_open_to_anonymous_visitors(self, new_client) -> None:
        anonymous = new_client()
        assert anonymous.get("/login").status_code == 200
        # a sign-in form without its token is refused, not processed
        refused = anonymous.post("/login", data={"username": "x", "password": "y"})
        assert refused.status_code == 403
        assert "This form could not be accepted" in refused.text


class TestPolicy:
    """The roles of issue 5, spelled out: admin everything, marketer configures, analyst and
    viewer read (the analyst also exports), users and API keys for admins only."""

    @pytest.mark.parametrize(("role", "path", "status"), [
        (Role.VIEWER, "/users", 403),
        (Role.MARKETER, "/users", 403),
        (Role.ANALYST, "/api-keys", 403),
        (Role.MARKETER, "/api-keys/new", 403),
        (Role.ANALYST, "/channels/new", 403),
        (Role.VIEWER, "/goals/new", 403),
        (Role.MARKETER, "/channels/new", 200),
        (Role.MARKETER, "/goals/new", 200),
        (Role.VIEWER, "/goals", 200),
        (Role.ANALYST, "/channels", 200),
        (Role.ADMIN, "/users/new", 200),
    ])
    def test_role_and_page(self, as_role, role, path, status) -> None:
        assert as_role(role).get(path).status_code == status
