"""API test fixtures: the app on the test's own transaction, and keys of every scope."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from campaigns.services.apikeys import create_api_key
from campaigns.settings import Settings
from web.app import create_app
from web.deps import SessionRunner, async_database, get_session


@pytest.fixture
def app(engine, session: Session) -> FastAPI:
    """The app, with every request's unit of work run inside the test's transaction.

    A request's commit releases a savepoint and its rollback undoes only that request,
    so "bad input changes nothing" is observable, and the test still rolls back at the end.
    """
    app = create_app(engine=engine, check_schema=False,
                     settings=Settings(config_refresh_seconds=0))

    def test_session() -> Iterator[Session]:
        session.commit()  # what the test set up is "committed" before the request starts
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise

    app.dependency_overrides[get_session] = test_session
    if engine.dialect.name == "postgresql":
        app.dependency_overrides[async_database] = lambda: SessionRunner(session)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def storefront_key(session: Session) -> dict[str, str]:
    return bearer(create_api_key(session, name="shop", scope="storefront", actor="test").secret)


@pytest.fixture
def management_key(session: Session) -> dict[str, str]:
    return bearer(create_api_key(session, name="ops", scope="management", actor="test").secret)


@pytest.fixture
def analytics_key(session: Session) -> dict[str, str]:
    return bearer(create_api_key(session, name="bi", scope="analytics", actor="test").secret)
