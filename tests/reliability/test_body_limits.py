"""Per-route body limits and bounded errors.

* A redemption or a code validation names one thing: a body of a few KiB is plenty, and one
  of 16 KiB is refused with 413 at once, declared by ``Content-Length`` or streamed
  chunked, with nothing written. Bulk routes keep room for bulk: an events batch, a new
  campaign.
* A validation error lists at most 20 problems and says how many more there were, whether
  the route's body was checked by FastAPI (a new channel) or by the service (a redemption,
  a new campaign).
* A JSON object of a million keys, sent with a valid key to the routes that take the
  largest bodies (an events batch, a new campaign), is refused with a 4xx, the worker lives
  on, and a probe that asks the same worker for ``/healthz`` every few milliseconds meanwhile
  never waits long (the stall is printed for docs/RELIABILITY.md; the assertion is generous
  because the machine is shared).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from campaigns.services.apikeys import create_api_key
from tests.builders import ACTOR, make_goal
from tests.liveserver import LiveServer, live_server
from tests.web.api.conftest import app, client  # noqa: F401  (fixtures)

pytestmark = pytest.mark.reliability

KIB = 1024
#: Over "a few KiB": what a single-item route must refuse.
SINGLE_ITEM_REFUSED = 16 * KIB
#: Each route that names one thing, with a body it would otherwise take.
SINGLE_ITEM_ROUTES: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "redemption": ("/api/v1/redemptions", {"Idempotency-Key": "limits-0001"},
                   {"customer_id": "C1", "channel": "web", "code": "WEB0000000"}),
    "code validation": ("/api/v1/coupons/validate", {}, {"code": "WEB0000000"}),
}
#: The most problems one error answer lists.
LISTED = 20
#: A stall of the worker's other clients over this fails (the promise is 100 ms; the
#: machine running the tests is shared and noisy). Today's parse takes seconds.
STALL_ASSERTED_SECONDS = 0.5


def row_counts(session: Session) -> dict[str, int]:
    return {name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in SQLModel.metadata.tables.items()}


def padded(body: dict[str, Any], size: int) -> bytes:
    text = json.dumps(body).encode()
    return text + b" " * (size - len(text))


@pytest.fixture
def keys(session: Session) -> dict[str, str]:
    make_goal(session)
    return {scope: "Bearer " + create_api_key(session, name=f"limits {scope}", scope=scope,
                                              actor=ACTOR).secret
            for scope in ("storefront", "management")}


@pytest.mark.parametrize("route", list(SINGLE_ITEM_ROUTES))
class TestSingleItemBodies:
    def test_a_few_kib_is_the_most_declared(self, client: TestClient,  # noqa: F811
                                            session: Session, keys: dict[str, str],
                                            route: str) -> None:
        path, extra, body = SINGLE_ITEM_ROUTES[route]
        before = row_counts(session)
        response = client.post(path, content=padded(body, SINGLE_ITEM_REFUSED),
                               headers={"Authorization": keys["storefront"],
                                        "Content-Type": "application/json", **extra})
        assert response.status_code == 413, response.text[:300]
        assert response.json()["code"] == "payload_too_large"
        assert "KiB" in response.json()["message"]
        assert row_counts(session) == before

    def test_a_few_kib_is_the_most_streamed(self, client: TestClient,  # noqa: F811
                                            session: Session, keys: dict[str, str],
                                            route: str) -> None:
        path, extra, body = SINGLE_ITEM_ROUTES[route]
        before = row_counts(session)

        def chunks() -> Iterator[bytes]:
            yield json.dumps(body).encode()
            for _ in range(SINGLE_ITEM_REFUSED // KIB):
                yield b" " * KIB

        response = client.post(path, content=chunks(),
                               headers={"Authorization": keys["storefront"],
                                        "Content-Type": "application/json", **extra})
        assert response.status_code == 413, response.text[:300]
        assert row_counts(session) == before


class TestBulkBodiesKeepTheirRoom:
    def test_a_new_campaign_of_100_kib_reaches_the_route(self, client: TestClient,  # noqa: F811
                                                         keys: dict[str, str]) -> None:
        body = {"name": "Roomy", "goal_id": 1, "description": "x" * (100 * KIB), "arms": []}
        response = client.post("/api/v1/campaigns", json=body,
                               headers={"Authorization": keys["management"]})
        # Whatever the route makes of it (its goal may not exist): not "too large".
        assert response.status_code in (201, 404, 422), response.text[:300]


def assert_bounded(body: dict[str, Any], total: int) -> None:
    assert body["code"] == "validation_failed", body
    assert len(body["errors"]) == LISTED, len(body["errors"])
    assert body["more_errors"] == total - LISTED, body.get("more_errors")
    assert str(total - LISTED) in body["message"], body["message"]


class TestBoundedErrors:
    def test_checked_by_fastapi(self, client: TestClient, keys: dict[str, str]  # noqa: F811
                                ) -> None:
        """A new channel with 5,000 unknown fields."""
        body = {"key": "kiosk", "name": "Kiosk", "kind": "store",
                **{f"extra{n}": n for n in range(5_000)}}
        response = client.post("/api/v1/channels", json=body,
                               headers={"Authorization": keys["management"]})
        assert response.status_code == 422, response.text[:300]
        assert_bounded(response.json(), 5_000)

    def test_checked_by_the_service(self, client: TestClient, keys: dict[str, str]  # noqa: F811
                                    ) -> None:
        """A new campaign with 3,000 unknown fields (and its required ones)."""
        body = {"name": "Many", "goal_id": 1, "arms": [],
                **{f"extra{n}": n for n in range(3_000)}}
        response = client.post("/api/v1/campaigns", json=body,
                               headers={"Authorization": keys["management"]})
        assert response.status_code == 422, response.text[:300]
        total = response.json()["more_errors"] + LISTED if "more_errors" in response.json() \
            else len(response.json()["errors"])
        assert total >= 3_000
        assert_bounded(response.json(), total)

    def test_a_redemption(self, client: TestClient, keys: dict[str, str]  # noqa: F811
                          ) -> None:
        body = {"customer_id": "C1", "channel": "web",
                **{f"x{n}": 0 for n in range(500)}}
        response = client.post("/api/v1/redemptions", json=body,
                               headers={"Authorization": keys["storefront"],
                                        "Idempotency-Key": "bounded-0001"})
        assert response.status_code == 422, response.text[:300]
        total = response.json().get("more_errors", 0) + len(response.json()["errors"])
        assert total >= 500
        assert_bounded(response.json(), total)


# --- a million keys against a real worker ------------------------------------------------

MILLION_KEYS = ("{" + ",".join(f'"k{n}":0' for n in range(1_000_000)) + "}").encode()


@pytest.fixture(scope="module")
def server(database, tmp_path_factory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("the live-server tests need PostgreSQL (run with "
                             "CHANNELSHIFT_TEST_DATABASE_URL=postgresql)")
    with live_server(url, tmp_path_factory.mktemp("bodylimits"), workers=1) as live:
        with Session(live.engine) as session:
            secrets = {scope: create_api_key(session, name=f"big {scope}", scope=scope,
                                             actor=ACTOR).secret
                       for scope in ("storefront", "management")}
            session.commit()
        yield live, secrets


class Probe:
    """Asks ``/healthz`` one request after another on its own thread; keeps the slowest."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    response = http.get("/healthz")
                    if response.status_code != 200:
                        self.failures.append(str(response.status_code))
                except httpx.TransportError as error:
                    self.failures.append(type(error).__name__)
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.answers += 1
                time.sleep(0.005)

    def __enter__(self) -> Probe:
        self.thread.start()
        time.sleep(0.3)
        self.slowest = 0.0  # the probe's own warm-up does not count
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self.stopping.set()
        self.thread.join()


@pytest.mark.postgres_only
@pytest.mark.parametrize(("path", "scope"), [("/api/v1/events", "storefront"),
                                             ("/api/v1/campaigns", "management")])
def test_a_million_keys_never_stall_the_worker(server: tuple[LiveServer, dict[str, str]],
                                               path: str, scope: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    live, secrets = server
    with Probe(live.url) as probe:
        started = time.perf_counter()
        response = httpx.post(f"{live.url}{path}", content=MILLION_KEYS, timeout=120,
                              headers={"Authorization": f"Bearer {secrets[scope]}",
                                       "Content-Type": "application/json"})
        took = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nmillion keys ({len(MILLION_KEYS) // 1024} KiB) to {path}: "
              f"{response.status_code} in {took * 1000:.0f} ms; /healthz probe "
              f"{probe.answers} answers, slowest {probe.slowest * 1000:.0f} ms")
    assert 400 <= response.status_code < 500, response.text[:300]
    assert not probe.failures, probe.failures[:5]
    assert probe.slowest < STALL_ASSERTED_SECONDS, \
        f"the worker stalled {probe.slowest * 1000:.0f} ms"
    assert httpx.get(f"{live.url}/healthz", timeout=5).status_code == 200
