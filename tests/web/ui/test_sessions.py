"""Server-side sessions: signed cookies, hashed tokens, rotation, expiry, sign-out, throttling."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from campaigns.models import AuditLog, Role, UiSession
from campaigns.services.sessions import (
    DEFAULT_POLICY,
    active_session,
    revoke_user_sessions,
    start_session,
    token_hash,
)
from campaigns.types import utcnow
from tests.web.ui.conftest import PASSWORD, csrf_token, make_user, sign_in
from web.ui.auth import SESSION_COOKIE


def session_cookie(response) -> str:
    values = [value for value in response.headers.get_list("set-cookie")
              if value.startswith(f"{SESSION_COOKIE}=")]
    assert len(values) == 1, response.headers.get_list("set-cookie")
    return values[0]


def attempt_login(client, username: str, password: str):
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_token(page.text)})


def live_sessions(session: Session, user_id: int) -> list[UiSession]:
    session.expire_all()
    return list(session.exec(select(UiSession).where(UiSession.user_id == user_id,
                                                     UiSession.revoked_at == None)).all())  # noqa: E711


class TestCookie:
    def test_flags_over_http(self, session, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="vera")
        response = attempt_login(new_client(), "vera", PASSWORD)
        assert response.status_code == 303
        cookie = session_cookie(response).lower()
        assert "httponly" in cookie
        assert "samesite=lax" in cookie
        assert "path=/" in cookie
        assert f"max-age={int(DEFAULT_POLICY.absolute.total_seconds())}" in cookie
        assert "secure" not in cookie  # a plain-http demo must still be able to sign in

    def test_secure_over_https(self, session, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="vera")
        response = attempt_login(new_client(base_url="https://testserver"), "vera", PASSWORD)
        assert "; secure" in session_cookie(response).lower()

    def test_token_is_stored_hashed_and_signed_in_the_cookie(self, session, new_client
                                                              ) -> None:
        user = make_user(session, role=Role.VIEWER, username="vera")
        response = attempt_login(new_client(), "vera", PASSWORD)
        value = session_cookie(response).split(";")[0].split("=", 1)[1]
        token, _, signature = value.rpartition(".")
        assert len(token) >= 43 and signature
        stored = live_sessions(session, user.id)
        assert [row.token_hash for row in stored] == [hashlib.sha256(token.encode()).hexdigest()]
        assert token not in {row.token_hash for row in stored}

    def test_tampered_cookie_is_anonymous(self, session, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="vera")
        client = sign_in(new_client(), "vera")
        value = client.cookies[SESSION_COOKIE]
        token, _, signature = value.rpartition(".")
        forged = ("A" if token[0] != "A" else "B") + token[1:]
        client.cookies.set(SESSION_COOKIE, f"{forged}.{signature}")
        assert client.get("/").status_code == 303
        client.cookies.set(SESSION_COOKIE, token)  # the token without its signature
        assert client.get("/").status_code == 303


class TestSignInAndOut:
    def test_sign_in_lands_on_next_page(self, session, new_client) -> None:
        make_user(session, role=Role.MARKETER, username="mia")
        client = new_client()
        first = client.get("/goals")
        assert first.headers["location"] == "/login?next=%2Fgoals"
        page = client.get(first.headers["location"])
        response = client.post("/login", data={"username": "mia", "password": PASSWORD,
                                               "next": "/goals",
                                               "csrf_token": csrf_token(page.text)})
        assert response.headers["location"] == "/goals"
        assert client.get("/goals").status_code == 200

    @pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x",
                                        "/\\evil.example", "javascript:alert(1)"])
    def test_next_never_leaves_the_site(self, session, new_client, target) -> None:
        make_user(session, role=Role.MARKETER, username="mia")
        client = new_client()
        page = client.get("/login")
        response = client.post("/login", data={"username": "mia", "password": PASSWORD,
                                               "next": target,
                                               "csrf_token": csrf_token(page.text)})
        assert response.headers["location"] == "/"

    def test_wrong_password_keeps_username_and_says_nothing_more(self, session, new_client
                                                                 ) -> None:
        make_user(session, role=Role.MARKETER, username="mia")
        for username in ("mia", "nobody"):
            response = attempt_login(new_client(), username, "not the password")
            assert response.status_code == 401
            assert "Wrong username or password." in response.text
            assert f'value="{username}"' in response.text
            assert "not the password" not in response.text
            assert SESSION_COOKIE not in response.headers.get("set-cookie", "")

    def test_sign_in_rotates_the_session(self, session, new_client) -> None:
        user = make_user(session, role=Role.MARKETER, username="mia")
        client = sign_in(new_client(), "mia")
        before = client.cookies[SESSION_COOKIE]
        # Signing in again from the same browser (or over a planted cookie) replaces it.
        again = client.post("/login", data={"username": "mia", "password": PASSWORD,
                                            "csrf_token": csrf_token(client.get("/").text)})
        assert again.status_code == 303
        after = client.cookies[SESSION_COOKIE]
        assert after != before
        assert len(live_sessions(session, user.id)) == 1
        replay = new_client()
        replay.cookies.set(SESSION_COOKIE, before)
        assert replay.get("/").status_code == 303

    def test_sign_out_revokes_the_session(self, session, new_client) -> None:
        user = make_user(session, role=Role.MARKETER, username="mia")
        client = sign_in(new_client(), "mia")
        stolen = client.cookies[SESSION_COOKIE]
        home = client.get("/")
        response = client.post("/logout", data={"csrf_token": csrf_token(home.text)})
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert 'cs_session=""' in response.headers.get("set-cookie", "")
        assert live_sessions(session, user.id) == []
        replay = new_client()
        replay.cookies.set(SESSION_COOKIE, stolen)
        assert replay.get("/").status_code == 303
        actions = session.exec(select(AuditLog.action).where(
            AuditLog.actor == "user:mia")).all()
        assert actions == ["user.sign_in", "user.sign_out"]
        assert "You have signed out." in client.get("/login").text


class TestExpiry:
    def test_idle_session_ends(self, session, new_client) -> None:
        user = make_user(session, role=Role.VIEWER, username="vera")
        client = sign_in(new_client(), "vera")
        (row,) = live_sessions(session, user.id)
        row.last_seen_at = utcnow() - DEFAULT_POLICY.idle - timedelta(seconds=1)
        session.add(row)
        session.flush()
        assert client.get("/").status_code == 303

    def test_activity_keeps_it_alive_until_the_absolute_limit(self, session, new_client
                                                              ) -> None:
        user = make_user(session, role=Role.VIEWER, username="vera")
        client = sign_in(new_client(), "vera")
        (row,) = live_sessions(session, user.id)
        row.last_seen_at = utcnow() - DEFAULT_POLICY.idle + timedelta(minutes=5)
        session.add(row)
        session.flush()
        assert client.get("/").status_code == 200
        session.refresh(row)
        assert utcnow() - row.last_seen_at < timedelta(minutes=1)  # touched
        row.expires_at = utcnow() - timedelta(seconds=1)
        row.created_at = row.expires_at - timedelta(hours=1)
        session.add(row)
        session.flush()
        assert client.get("/").status_code == 303

    def test_deactivated_user_is_signed_out(self, session, new_client) -> None:
        user = make_user(session, role=Role.VIEWER, username="vera")
        client = sign_in(new_client(), "vera")
        user.active = False
        session.add(user)
        session.flush()
        assert client.get("/").status_code == 303


class TestSessionService:
    def test_policy_decides_liveness(self, session) -> None:
        user = make_user(session, role=Role.VIEWER, username="vera")
        now = utcnow()
        started = start_session(session, user=user, now=now)
        assert started.ui_session.token_hash == token_hash(started.token)
        assert active_session(session, token=started.token, now=now) is not None
        assert active_session(session, token=started.token + "x", now=now) is None
        late = now + DEFAULT_POLICY.idle
        assert active_session(session, token=started.token, now=late) is None
        assert revoke_user_sessions(session, user_id=user.id, now=now) == 1
        assert active_session(session, token=started.token, now=now) is None

    def test_dead_sessions_are_pruned_at_sign_in(self, session) -> None:
        user = make_user(session, role=Role.VIEWER, username="vera")
        long_ago = utcnow() - DEFAULT_POLICY.keep_ended - DEFAULT_POLICY.absolute - \
            timedelta(days=1)
        start_session(session, user=user, now=long_ago)
        start_session(session, user=user)
        count = session.exec(select(func.count()).select_from(UiSession)
                             .where(UiSession.user_id == user.id)).one()
        assert count == 1


class TestThrottling:
    def test_blocks_after_repeated_failures_even_with_the_right_password(
            self, session, ui_app, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="vera")
        make_user(session, role=Role.VIEWER, username="victor")
        client = new_client()
        limit = ui_app.state.ui.login_limit.max_events
        for _ in range(limit):
            assert attempt_login(client, "vera", "wrong password").status_code == 401
        blocked = attempt_login(client, "VERA", PASSWORD)
        assert blocked.status_code == 429
        assert "Too many failed sign-ins" in blocked.text
        assert SESSION_COOKIE not in blocked.headers.get("set-cookie", "")
        # Another username from the same address is not punished for vera's guesser.
        assert attempt_login(client, "victor", PASSWORD).status_code == 303
