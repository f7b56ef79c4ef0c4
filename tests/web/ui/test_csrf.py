"""Every form needs this session's CSRF token: missing, wrong or foreign tokens change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from campaigns.models import AuditLog, Role, UiSession
from campaigns.services.apikeys import create_api_key
from tests.builders import make_campaign, make_channel
from tests.web.ui.conftest import csrf_token, make_user, sign_in
from tests.web.ui.test_access import ui_routes
from web.ui.permissions import PUBLIC

#: A plausible body for each form, so only the token decides.
FORMS = {
    "ui.logout": {},
    "ui.channels.create": {"key": "app", "name": "App", "kind": "app"},
    "ui.channels.update": {"name": "Web shop", "kind": "web", "active": "on"},
    "ui.channels.costs.save": {"cost_after_sale": "0.20"},
    "ui.goals.create": {"name": "G", "stage": "after_sale", "source_channels": "call_centre",
                        "target_channel": "web", "window_days": "30",
                        "target_uplift_points": "5"},
    "ui.users.create": {"username": "newbie", "password": "a long password", "role": "viewer",
                        "timezone": "UTC"},
    "ui.api_keys.create": {"name": "shop", "scope": "storefront"},
    "ui.api_keys.revoke": {},
    "ui.campaigns.status": {"to": "scheduled"},
    "ui.campaigns.update": {"name": "Renamed", "budget": "2000.00", "priority": "1"},
    "ui.campaigns.coupons.generate": {"arm_id": "1", "count_1": "5"},
    "ui.campaigns.draws.run": {"seed": "00ff00ff00ff"},
    "ui.wizard.step": {"step": "goal", "nav": "next", "goal_id": "1", "name": "Wizard-made"},
}


def state(session: Session) -> tuple[int, int, int]:
    """What any form would change: the audit trail, live sessions, all sessions."""
    session.expire_all()
    return (session.exec(select(func.count()).select_from(AuditLog)).one(),
            session.exec(select(func.count()).select_from(UiSession)
                         .where(UiSession.revoked_at == None)).one(),  # noqa: E711
            session.exec(select(func.count()).select_from(UiSession)).one())


@pytest.fixture
def params(session: Session) -> dict[str, str]:
    make_channel(session, key="web")
    make_campaign(session)  # also makes the goal's channels and the stages
    key = create_api_key(session, name="shop", scope="storefront", actor="test")
    return {"key": "web", "api_key_id": str(key.api_key.id), "campaign_id": "1"}


def post_routes(app) -> list:
    return [route for route in ui_routes(app) if "POST" in route.methods]


class TestEveryForm:
    def test_every_post_route_has_a_plausible_body_here(self, ui_app) -> None:
        names = {route.name for route in post_routes(ui_app) if route.permission is not PUBLIC}
        assert names == set(FORMS)

    @pytest.mark.parametrize("token", ["missing", "wrong", "other session", "empty"])
    def test_rejected_without_this_sessions_token(self, ui_app, session, as_role, new_client,
                                                  params, token) -> None:
        admin = as_role(Role.ADMIN)
        other = sign_in(new_client(), make_user(session, role=Role.ADMIN,
                                                username="other_admin").username)
        tokens = {"missing": None, "wrong": "x" * 43, "empty": "",
                  "other session": csrf_token(other.get("/").text)}
        rejected = 0
        for route in post_routes(ui_app):
            if route.permission is PUBLIC:
                continue
            body = dict(FORMS[route.name])
            if tokens[token] is not None:
                body["csrf_token"] = tokens[token]
            before = state(session)
            response = admin.post(route.path.format(**params), data=body)
            assert response.status_code == 403, (route.name, response.status_code)
            assert "This form could not be accepted" in response.text
            assert state(session) == before, route.name
            rejected += 1
        assert rejected == len(FORMS)
        # and the same browser is still signed in and can use its real token
        assert admin.get("/").status_code == 200

    def test_accepted_with_the_token_in_the_form_or_the_htmx_header(self, as_role, params
                                                                    ) -> None:
        admin = as_role(Role.ADMIN)
        token = csrf_token(admin.get("/channels/new").text)
        created = admin.post("/channels", data={**FORMS["ui.channels.create"],
                                                "csrf_token": token})
        assert created.status_code == 303
        header = admin.post("/channels/web/edit", data=FORMS["ui.channels.update"],
                            headers={"X-CSRF-Token": token, "HX-Request": "true"})
        assert header.status_code == 303

    def test_the_page_carries_the_token_for_htmx(self, as_role) -> None:
        page = as_role(Role.ADMIN).get("/").text
        token = csrf_token(page)
        assert f'hx-headers=\'{{"X-CSRF-Token": "{token}"}}\'' in page


class TestSignInForm:
    def test_sign_in_needs_the_visit_token(self, session, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="vera")
        client = new_client()
        client.get("/login")
        before = state(session)
        response = client.post("/login", data={"username": "vera",
                                               "password": "correct horse battery"})
        assert response.status_code == 403
        assert state(session) == before
        # A token from another browser's visit does not fit this one either.
        foreign = csrf_token(new_client().get("/login").text)
        response = client.post("/login", data={"username": "vera", "csrf_token": foreign,
                                               "password": "correct horse battery"})
        assert response.status_code == 403

    def test_token_changes_at_sign_in(self, session, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="vera")
        client = new_client()
        before = csrf_token(client.get("/login").text)
        sign_in(client, "vera")
        after = csrf_token(client.get("/").text)
        assert before != after
