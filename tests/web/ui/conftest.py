"""UI test fixtures: the app on the test's transaction (from the API tests), users of every
role, and browsers (TestClients) signed in as them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from campaigns.models import Role, User
from campaigns.security import hash_password
from tests.web.api.conftest import app  # noqa: F401  (the app on the test's transaction)
from web.ui.auth import UiState
from web.ui.settings import UiSettings

PASSWORD = "correct horse battery"
SECRET_KEY = "k" * 48
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@lru_cache(maxsize=4)
def password_hash(password: str) -> str:
    # argon2 is slow on purpose; one hash per password per run is enough for tests.
    return hash_password(password)


def make_user(session: Session, *, role: Role | str, username: str | None = None,
              password: str = PASSWORD, timezone: str = "UTC", active: bool = True) -> User:
    role = Role(role)
    user = User(username=username or f"{role.value}_user", password_hash=password_hash(password),
                role=role.value, timezone=timezone, active=active)
    session.add(user)
    session.flush()
    return user


def csrf_token(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    page = client.get("/login")
    assert page.status_code == 200, page.text
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": csrf_token(page.text)})
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def ui_app(app: FastAPI, tmp_path: Path) -> FastAPI:  # noqa: F811
    """The app with a fixed signing key (tests never write a key file into the repository)."""
    app.state.ui = UiState(UiSettings(secret_key=SECRET_KEY), tmp_path)
    return app


@pytest.fixture
def new_client(ui_app: FastAPI) -> Callable[..., TestClient]:
    """Make independent browsers (cookie jars) on the app; none follows redirects."""
    clients: list[TestClient] = []

    def make(*, base_url: str = "http://testserver") -> TestClient:
        client = TestClient(ui_app, raise_server_exceptions=False, follow_redirects=False,
                            base_url=base_url)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def users(session: Session) -> dict[Role, User]:
    return {role: make_user(session, role=role) for role in Role}


@pytest.fixture
def as_role(new_client: Callable[..., TestClient], users: dict[Role, User]
            ) -> Callable[[Role], TestClient]:
    """A browser signed in with the given role (one browser per role, made on demand)."""
    signed: dict[Role, TestClient] = {}

    def get(role: Role) -> TestClient:
        if role not in signed:
            signed[role] = sign_in(new_client(), users[role].username)
        return signed[role]

    return get


@pytest.fixture
def admin(as_role: Callable[[Role], TestClient]) -> Iterator[TestClient]:
    yield as_role(Role.ADMIN)
