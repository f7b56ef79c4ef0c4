"""A database that fails under a request gives a clean 503 with Retry-After, on both backends.

The fast, in-process half of the database-fault promises (``test_db_faults`` is the live
half): an app whose database cannot be reached, one that does not answer at all, a statement
that fails mid-request and a commit that fails. API routes answer the usual JSON error body,
UI pages an HTML page with status 503, and ``/readyz`` says not ready; other database errors
are still 500s, so the mapping hides no bug.
"""

from __future__ import annotations

import logging
import re
import socket
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, select

from campaigns.db import CONNECT_TIMEOUT_SECONDS, build_engine
from campaigns.models import Channel
from campaigns.settings import Settings
from tests.web.api.conftest import app, client, management_key  # noqa: F401
from web.app import create_app
from web.errors import (
    DATABASE_RETRY_AFTER_SECONDS,
    DatabaseUnavailable,
    is_concurrency_conflict,
    is_database_unavailable,
)

pytestmark = pytest.mark.reliability

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
BEARER = {"Authorization": "Bearer cs_sf_not_checked_because_the_database_is_down"}
REDEMPTION = {"customer_id": "C1", "campaign_id": 1, "channel": "web",
              "order_amount_minor": 1000}


def assert_clean_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
    body = response.json()
    assert body == {"code": "database_unavailable", "message": body["message"], "errors": [],
                    "request_id": response.headers["x-request-id"]}
    assert "database is unavailable" in body["message"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine of the run's backend whose database cannot be opened."""
    if backend == "postgresql":
        engine = build_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/none")
    else:
        folder = tmp_path / "a-folder-not-a-database"
        folder.mkdir()
        engine = build_engine(f"sqlite:///{folder.as_posix()}")
    yield engine
    engine.dispose()


def app_on(engine: Engine, tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path / "data", config_refresh_seconds=0)
    return TestClient(create_app(engine=engine, settings=settings, check_schema=False),
                      raise_server_exceptions=False)


class TestDatabaseUnreachable:
    def test_api_routes_answer_503(self, dead_engine, tmp_path) -> None:
        with app_on(dead_engine, tmp_path) as web:
            assert_clean_503(web.get("/api/v1/customers/C1/offers", headers=BEARER))
            assert_clean_503(web.post("/api/v1/redemptions", json=REDEMPTION,
                                      headers={**BEARER, "Idempotency-Key": "k" * 16}))
            assert_clean_503(web.post("/api/v1/coupons/validate", json={"code": "WEBX"},
                                      headers=BEARER))
            assert_clean_503(web.get("/api/v1/campaigns", headers=BEARER))

    def test_failures_do_not_use_up_the_request_gate(self, dead_engine, tmp_path) -> None:
        # The gate admits as many API requests at once as the pool has connections; a
        # failed request that kept its place would leave the next ones waiting forever.
        with app_on(dead_engine, tmp_path) as web, ThreadPoolExecutor(1) as pool:
            statuses = pool.submit(lambda: [
                web.get(f"/api/v1/customers/C{i}/offers", headers=BEARER).status_code
                for i in range(60)]).result(timeout=120)
        assert statuses == [503] * 60

    def test_readyz_not_ready_healthz_alive(self, dead_engine, tmp_path) -> None:
        with app_on(dead_engine, tmp_path) as web:
            ready = web.get("/readyz")
            assert web.get("/healthz").status_code == 200
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
        body = ready.json()
        assert body["status"] == "not_ready"
        assert body["reason"].startswith("database unreachable")
        assert body["code"] == "database_unavailable"
        assert body["request_id"] == ready.headers["x-request-id"]

    def test_ui_page_answers_503_page(self, dead_engine, tmp_path) -> None:
        with app_on(dead_engine, tmp_path) as web:
            page = web.get("/login")  # an anonymous visitor's page needs no database
            assert page.status_code == 200, page.text
            token = CSRF_INPUT.search(page.text)
            assert token
            response = web.post("/login", data={"username": "ana", "password": "secret",
                                                "csrf_token": token.group(1)})
        assert response.status_code == 503, response.text[:500]
        assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
        assert response.headers["content-type"].startswith("text/html")
        assert "database is unavailable" in response.text
        assert "Something went wrong" not in response.text

    def test_logged_as_one_warning_without_traceback(self, dead_engine, tmp_path) -> None:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = records.append  # type: ignore[method-assign]
        # On the app's logger itself: JSON logging (configure_logging) turns propagation off.
        logger = logging.getLogger("channelshift")
        logger.addHandler(handler)
        try:
            with app_on(dead_engine, tmp_path) as web:
                response = web.get("/api/v1/customers/C1/offers", headers=BEARER)
        finally:
            logger.removeHandler(handler)
        # The access log's line is there too when an earlier test turned it on.
        records = [r for r in records if r.name != "channelshift.access"]
        assert [r.getMessage().split(":")[0] for r in records] == ["database unavailable"]
        assert records[0].levelname == "WARNING" and records[0].exc_info is None
        assert getattr(records[0], "request_id", None) == response.headers["x-request-id"]
        assert getattr(records[0], "route", None) == "/api/v1/customers/{customer_id}/offers"


class TestDatabaseNotAnswering:
    def test_fails_within_the_connect_timeout(self, tmp_path) -> None:
        """A host that accepts nothing and answers nothing (the listener never accepts).

        PostgreSQL's driver would wait 130 s by default; every request would hang that long.
        Needs no PostgreSQL server, so it runs in the SQLite pass too.
        """
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            port = listener.getsockname()[1]
            engine = build_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/none")
            with app_on(engine, tmp_path) as web, ThreadPoolExecutor(1) as pool:
                future = pool.submit(web.get, "/api/v1/customers/C1/offers", headers=BEARER)
                try:
                    response = future.result(timeout=CONNECT_TIMEOUT_SECONDS * 5)
                except FutureTimeout:
                    listener.close()  # resets the pending connection so the thread ends
                    raise AssertionError("the request hung instead of failing at the "
                                         "connect timeout") from None
            engine.dispose()
        assert_clean_503(response)


@pytest.fixture
def failing_statement(engine: Engine) -> Iterator[dict[str, Any]]:
    """Make the audit entry's INSERT fail (with the DBAPI error put in the dict).

    Creating a channel writes the channel, then its audit entry: the failure comes after
    a write, so "nothing changed" can be checked.

    Request it before ``client``: a connection only runs the engine's listeners that
    existed when it was opened, and the test's connection is opened for ``client``.
    """
    plan: dict[str, Any] = {"error": None}

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if plan["error"] is not None and statement.startswith("INSERT INTO audit_log "):
            raise plan["error"]

    event.listen(engine, "before_cursor_execute", fail)
    yield plan
    event.remove(engine, "before_cursor_execute", fail)


class TestStatementFails:
    def test_disconnect_mid_request_is_503_and_changes_nothing(
            self, failing_statement, client, management_key, engine,  # noqa: F811
            session: Session) -> None:
        dbapi = engine.dialect.loaded_dbapi
        failing_statement["error"] = dbapi.OperationalError(
            "database is locked" if engine.dialect.name == "sqlite"
            else "server closed the connection unexpectedly")
        kiosk = {"key": "kiosk", "name": "Kiosk", "kind": "store"}
        assert_clean_503(client.post("/api/v1/channels", json=kiosk, headers=management_key))
        assert session.exec(select(Channel).where(Channel.key == "kiosk")).first() is None
        failing_statement["error"] = None
        response = client.post("/api/v1/channels", json=kiosk, headers=management_key)
        assert response.status_code == 201, response.text

    def test_other_database_errors_stay_500(
            self, failing_statement, client, management_key, engine) -> None:  # noqa: F811
        dbapi = engine.dialect.loaded_dbapi
        failing_statement["error"] = dbapi.IntegrityError("a constraint nobody expected")
        response = client.post("/api/v1/channels", headers=management_key,
                               json={"key": "kiosk", "name": "Kiosk", "kind": "store"})
        assert response.status_code == 500, response.text
        assert response.json()["code"] == "internal_error"
        assert "retry-after" not in response.headers


class TestCommitFails:
    def test_commit_lost_is_503(self, engine, tmp_path, monkeypatch) -> None:
        """The commit runs after the page is built, so its failure replaces the page."""
        dbapi = engine.dialect.loaded_dbapi

        class LostCommit(Session):
            def in_transaction(self) -> bool:
                return True  # as if the page had read or written something

            def commit(self) -> None:
                raise sa_exc.OperationalError("COMMIT", None, dbapi.OperationalError(
                    "disk I/O error" if engine.dialect.name == "sqlite" else "connection lost"))

        monkeypatch.setattr("web.deps.Session", LostCommit)
        with app_on(engine, tmp_path) as web:
            response = web.get("/login")
        assert_clean_503(response)


class TestClassification:
    @pytest.mark.parametrize(("error", "unavailable"), [
        (sa_exc.OperationalError("SELECT 1", None, Exception("connection refused")), True),
        (sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"), True),
        (sa_exc.DBAPIError("SELECT 1", None, Exception("gone"), connection_invalidated=True),
         True),
        (sa_exc.IntegrityError("INSERT", None, Exception("duplicate key")), False),
        (sa_exc.ProgrammingError("SELECT", None, Exception("syntax error")), False),
        (sa_exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled "
                                     "back", code="8s2b"), True),
        (sa_exc.PendingRollbackError("This Session's transaction has been rolled back due "
                                     "to a previous exception during flush", code="7s2a"),
         False),
        (DatabaseUnavailable(), True),
        (ValueError("not a database error"), False),
        (sa_exc.OperationalError("UPDATE", None, sqlite3.OperationalError(
            "database is locked")), True),
        (sa_exc.OperationalError("SELECT", None, sqlite3.OperationalError(
            "too many SQL variables")), False),
    ], ids=["operational", "pool-timeout", "invalidated", "integrity", "programming",
            "lost-mid-transaction", "failed-flush", "typed", "other", "sqlite-locked",
            "sqlite-bug"])
    def test_is_database_unavailable(self, error: BaseException, unavailable: bool) -> None:
        assert is_database_unavailable(error) is unavailable

    def test_raised_from_a_database_error(self) -> None:
        try:
            try:
                raise sa_exc.OperationalError("SELECT 1", None, Exception("refused"))
            except sa_exc.OperationalError as cause:
                raise RuntimeError("while loading the catalog") from cause
        except RuntimeError as error:
            assert is_database_unavailable(error)

    @pytest.mark.parametrize(("error", "conflict"), [
        (sa_exc.OperationalError("UPDATE", None, psycopg.errors.DeadlockDetected(
            "deadlock detected")), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (sa_exc.OperationalError("SELECT 1", None, psycopg.OperationalError(
            "connection refused")), False),
        (DatabaseUnavailable(), False),
    ], ids=["deadlock", "serialization", "refused", "typed"])
    def test_concurrency_conflict(self, error: BaseException, conflict: bool) -> None:
        """Both are a 503 with Retry-After, but a conflict says so: the database is fine,
        and the request only needs to be sent again."""
        assert is_database_unavailable(error)
        assert is_concurrency_conflict(error) is conflict
        answer = DatabaseUnavailable.from_error(error)
        assert answer.status_code == 503
        assert answer.code == ("concurrency_conflict" if conflict else "database_unavailable")
