"""Oversized bodies and batches are refused with 413, before they are read, changing nothing.

Each route has its limit (web/admission.py: a few KiB for a redemption, more for
configuration, most for an events batch); tests/reliability/test_body_limits.py holds the
promise of the small ones.

Already covered elsewhere: ``POST /api/v1/coupons/validate`` over the limit with and without
Content-Length (tests/web/api/test_docs.py), and the events batch over the limit both ways,
of 10,001 events, and the largest batch of 10,000 accepted (tests/web/api/test_events.py).
Here: the same limits on the routes that move money or configuration (a redemption, a new
campaign, a new channel) and on the events batch, each with nothing written; a body just
under the limit still reaches the route (so the limit is where it is said to be); and,
against a real server, a declared length over the limit answered at once, without the
server waiting for a body it will not read.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from campaigns.services.apikeys import create_api_key
from tests.builders import ACTOR, make_goal
from tests.liveserver import LiveServer, live_server
from tests.web.api.conftest import app, client  # noqa: F401  (fixtures)
from web.admission import BULK_BYTES, body_limit

pytestmark = pytest.mark.reliability


#: (scope of key, route, extra headers, a JSON body the route would take or refuse as such)
ROUTES: dict[str, tuple[str, str, dict[str, str], dict[str, Any]]] = {
    "redemption": ("storefront", "/api/v1/redemptions", {"Idempotency-Key": "limits-0001"},
                   {"customer_id": "C1", "channel": "web", "code": "WEB0000000"}),
    "new campaign": ("management", "/api/v1/campaigns", {},
                     {"name": "Too big", "goal_id": 1, "arms": []}),
    "new channel": ("management", "/api/v1/channels", {},
                    {"key": "kiosk", "name": "Kiosk", "kind": "store"}),
    "events batch": ("storefront", "/api/v1/events", {},
                     {"events": [{"type": "interaction", "event_id": "big-1",
                                  "customer_id": "C1", "channel": "web", "stage": "after_sale",
                                  "occurred_at": "2026-01-31T09:00:00Z"}]}),
}


@pytest.fixture
def keys(session: Session) -> dict[str, str]:
    make_goal(session)
    return {scope: create_api_key(session, name=f"limits {scope}", scope=scope,
                                  actor=ACTOR).secret for scope in ("storefront", "management")}


def row_counts(session: Session) -> dict[str, int]:
    return {name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in SQLModel.metadata.tables.items()}


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON followed by spaces, ``size`` bytes in all (still valid JSON)."""
    text = json.dumps(body).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


def headers_for(route: str, keys: dict[str, str]) -> dict[str, str]:
    scope, _, extra, _ = ROUTES[route]
    return {"Authorization": f"Bearer {keys[scope]}", "Content-Type": "application/json",
            **extra}


def assert_refused(response: Any, limit: int) -> None:
    assert response.status_code == 413, response.text[:300]
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert str(limit) in body["message"] or "16 MiB" in body["message"], body["message"]


@pytest.mark.parametrize("route", list(ROUTES))
class TestBodyLimit:
    def test_declared_length_over_the_limit(self, client: TestClient, session: Session,  # noqa: F811
                                            keys: dict[str, str], route: str) -> None:
        before = row_counts(session)
        limit = body_limit(ROUTES[route][1])
        content = padded(ROUTES[route][3], limit + 1)
        response = client.post(ROUTES[route][1], content=content,
                               headers=headers_for(route, keys))
        assert_refused(response, limit)
        assert row_counts(session) == before

    def test_streamed_body_over_the_limit(self, client: TestClient, session: Session,  # noqa: F811
                                          keys: dict[str, str], route: str) -> None:
        """No Content-Length (chunked): the limit holds while the body is read."""
        before = row_counts(session)
        head = json.dumps(ROUTES[route][3]).encode()
        limit = body_limit(ROUTES[route][1])

        def chunks() -> Iterator[bytes]:
            yield head
            for _ in range(limit // 1024 + 1):
                yield b" " * 1024

        response = client.post(ROUTES[route][1], content=chunks(),
                               headers=headers_for(route, keys))
        assert_refused(response, limit)
        assert row_counts(session) == before

    def test_just_under_the_limit_reaches_the_route(self, client: TestClient,  # noqa: F811
                                                    keys: dict[str, str], route: str) -> None:
        response = client.post(ROUTES[route][1],
                               content=padded(ROUTES[route][3], body_limit(ROUTES[route][1])),
                               headers=headers_for(route, keys))
        # Whatever the route makes of it (created, not found, conflict): not "too large".
        assert response.status_code not in (413, 500), response.text[:300]
        assert response.status_code in (200, 201, 404, 409, 422), response.text[:300]


@pytest.fixture(scope="module")
def server(database, tmp_path_factory) -> Iterator[LiveServer]:
    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("the live-server limit test needs PostgreSQL (run it with "
                             "CHANNELSHIFT_TEST_DATABASE_URL=postgresql)")
    with live_server(url, tmp_path_factory.mktemp("limits"), workers=1) as live:
        yield live


@pytest.mark.postgres_only
class TestRealServer:
    def test_declared_length_refused_without_waiting_for_the_body(self, server: LiveServer
                                                                  ) -> None:
        """Only the request head is sent: a server that read the body first would hang."""
        with Session(server.engine) as session:
            secret = create_api_key(session, name="limits", scope="storefront",
                                    actor=ACTOR).secret
            session.commit()
            before = row_counts(session)
        address = urlsplit(server.url)
        head = (f"POST /api/v1/redemptions HTTP/1.1\r\nHost: {address.netloc}\r\n"
                f"Authorization: Bearer {secret}\r\nIdempotency-Key: limits-live-1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {BULK_BYTES + 1}\r\n"
                "\r\n").encode()
        with socket.create_connection((address.hostname, address.port), timeout=15) as conn:
            conn.sendall(head)
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
        with Session(server.engine) as session:
            assert row_counts(session) == before
