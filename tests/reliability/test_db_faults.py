"""Database faults under load: the database cut off, unreachable, or its connections killed.

A real server (uvicorn, two workers) talks to PostgreSQL through :class:`PgProxy`, which the
test cuts and restores while twenty clients keep sending offers, redemptions (each with an
Idempotency-Key) and coupon validations. The promises:

* while the database is down, every request that fails is a 503 with ``Retry-After`` and the
  usual JSON error body, and it fails fast (never a 500, never a hang);
* after the database is back, the service answers 2xx again at once, ``/readyz`` too;
* nothing is lost or doubled: every acknowledged redemption exists exactly once, the budget
  spent equals the sum of live redemptions, no coupon is used twice, and retrying each
  request that got a 503 with its Idempotency-Key has exactly one effect.

The "restart" variant kills the server's database sessions with ``pg_terminate_backend``
(only those of this test's server, found by the application name in its database URL): the
pooled connections go stale, and none of them may turn into an error once it is idle.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from campaigns.models import Campaign, CouponCode, Redemption
from campaigns.services.apikeys import create_api_key
from tests.builders import (
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    make_running_campaign,
    percent_arm,
)
from tests.liveserver import LiveServer, live_server
from tests.reliability.pgproxy import PgProxy

pytestmark = [pytest.mark.reliability, pytest.mark.postgres_only, pytest.mark.slow]

CLIENTS = 20
#: A failing request must fail within this many seconds (the server's connect timeout is 3).
FAIL_FAST_SECONDS = 10.0
#: Requests that start this long after the database is back must all succeed.
RECOVERY_GRACE_SECONDS = 1.5
#: /readyz must answer 200 again within this long after the database is back.
READY_AGAIN_SECONDS = 6.0
PERCENT_CUSTOMERS = 40
COUPON_CUSTOMERS = 50
VALIDATION_CODES = 10


# --------------------------------------------------------------------------- fixtures


@dataclass
class Rig:
    server: LiveServer
    proxy: PgProxy
    application_name: str

    @property
    def log_path(self) -> Path:
        return Path(self.server.env["CHANNELSHIFT_DATA_DIR"]) / "server.log"

    def terminate_backends(self) -> int:
        """Kill this server's PostgreSQL sessions (a restart, as its pool sees it)."""
        with self.server.engine.begin() as connection:
            return len(connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"),
                {"name": self.application_name}).all())


@pytest.fixture(scope="module")
def rig(database, tmp_path_factory) -> Iterator[Rig]:
    url, _ = database
    if not url.startswith("postgresql"):
        raise AssertionError("database fault tests need PostgreSQL (run with "
                             "CHANNELSHIFT_TEST_DATABASE_URL=postgresql)")
    application_name = f"cs_dbfaults_{secrets.token_hex(4)}"
    with PgProxy() as proxy, \
            live_server(url, tmp_path_factory.mktemp("dbfaults"), workers=2) as server:
        # Restart the server with its database URL pointing at the proxy; the test's own
        # engine (server.engine) still talks to PostgreSQL directly, for setup and checks.
        server.stop()
        proxied = make_url(url).set(host="127.0.0.1", port=proxy.port).update_query_dict(
            {"application_name": application_name})
        server.env["CHANNELSHIFT_DATABASE_URL"] = proxied.render_as_string(
            hide_password=False)
        server.start()
        yield Rig(server=server, proxy=proxy, application_name=application_name)


@dataclass
class World:
    campaign_id: int
    api_key_id: int
    headers: dict[str, str]
    percent_customers: list[str]
    redeemable_codes: list[tuple[str, str]]  # (customer, code), each redeemed once at most
    validation_codes: list[tuple[str, str]]  # never redeemed: validations stay "valid"


def _customers_in_arm(session: Session, campaign: Campaign, arm: str, prefix: str,
                      count: int) -> list[str]:
    found: list[str] = []
    start = 0
    while len(found) < count:
        external_id = customer_id_in_arm(session, campaign, arm, prefix=prefix, start=start)
        found.append(external_id)
        start = int(external_id.removeprefix(prefix)) + 1
    return found


@pytest.fixture(scope="module")
def world(rig: Rig) -> World:
    with Session(rig.server.engine, expire_on_commit=False) as session:
        key = create_api_key(session, name="dbfaults", scope="storefront", actor="test")
        campaign = make_running_campaign(
            session, name="db faults", budget_minor=1_000_000_000, priority=50,
            arms=[control_arm(weight=2), percent_arm(weight=49), coupon_arm(weight=49)])
        percent = _customers_in_arm(session, campaign, "ten percent", "P", PERCENT_CUSTOMERS)
        coupon = _customers_in_arm(session, campaign, "web coupon", "K", COUPON_CUSTOMERS)
        session.commit()
        assert campaign.id is not None and key.api_key.id is not None
        campaign_id, api_key_id = campaign.id, key.api_key.id
        headers = {"Authorization": f"Bearer {key.secret}"}
    time.sleep(0.6)  # the workers pick up the new campaign (epoch checked every 0.2 s)
    codes: list[tuple[str, str]] = []
    with httpx.Client(base_url=rig.server.url, headers=headers, timeout=30) as client:
        for customer in percent + coupon:
            response = client.get(f"/api/v1/customers/{customer}/offers")
            assert response.status_code == 200, response.text
            offers = response.json()["offers"]
            assert [o["campaign_id"] for o in offers] == [campaign_id], offers
            if offers[0]["code"]:
                codes.append((customer, offers[0]["code"]))
    assert len(codes) == COUPON_CUSTOMERS
    return World(campaign_id=campaign_id, api_key_id=api_key_id, headers=headers,
                 percent_customers=percent, redeemable_codes=codes[VALIDATION_CODES:],
                 validation_codes=codes[:VALIDATION_CODES])


# --------------------------------------------------------------------------- the load


@dataclass
class Outcome:
    kind: str  # offers | redeem | validate | readyz
    started: float
    finished: float
    status: int | None  # None: no HTTP answer at all (transport error or timeout)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str | None = None
    idempotency_key: str | None = None
    request_body: dict[str, Any] | None = None


@dataclass
class Fault:
    name: str
    began: float
    ended: float  # when the database was back (for a kill: the kill itself)


class Load:
    """``CLIENTS`` clients, each sending one request after another until told to stop."""

    def __init__(self, rig: Rig, world: World, *, seed: int,
                 codes: list[tuple[str, str]]) -> None:
        self.rig = rig
        self.world = world
        self.random = random.Random(seed)
        self.codes = list(codes)  # each redeemed by one request (and its retries) at most
        self.random.shuffle(self.codes)
        self.outcomes: list[Outcome] = []
        self.stopping = asyncio.Event()

    def _next_request(self) -> tuple[str, str, str, dict[str, Any] | None, dict[str, str]]:
        roll = self.random.random()
        if roll < 0.35:
            customer = self.random.choice(self.world.percent_customers)
            return "offers", "GET", f"/api/v1/customers/{customer}/offers", None, {}
        if roll < 0.8:
            if self.codes and self.random.random() < 0.25:
                customer, code = self.codes.pop()
                body: dict[str, Any] = {"customer_id": customer, "channel": "web",
                                        "code": code, "order_amount_minor": 2000}
            else:
                body = {"customer_id": self.random.choice(self.world.percent_customers),
                        "channel": "web", "campaign_id": self.world.campaign_id,
                        "order_amount_minor": self.random.randrange(500, 5000)}
            return "redeem", "POST", "/api/v1/redemptions", body, \
                {"Idempotency-Key": uuid.uuid4().hex}
        customer, code = self.random.choice(self.world.validation_codes)
        return "validate", "POST", "/api/v1/coupons/validate", \
            {"code": code, "customer_id": customer, "order_amount_minor": 2000}, {}

    async def send(self, client: httpx.AsyncClient, kind: str, method: str, path: str,
                   body: dict[str, Any] | None, headers: dict[str, str]) -> Outcome:
        started = time.monotonic()
        key = headers.get("Idempotency-Key")
        try:
            response = await client.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as error:
            return Outcome(kind, started, time.monotonic(), None,
                           error=f"{type(error).__name__}: {error}", idempotency_key=key,
                           request_body=body)
        try:
            payload: Any = response.json()
        except ValueError:
            payload = response.text[:500]
        return Outcome(kind, started, time.monotonic(), response.status_code,
                       dict(response.headers), payload, idempotency_key=key,
                       request_body=body)

    async def _client(self, client: httpx.AsyncClient) -> None:
        while not self.stopping.is_set():
            self.outcomes.append(await self.send(client, *self._next_request()))

    async def _readiness(self, client: httpx.AsyncClient) -> None:
        while not self.stopping.is_set():
            self.outcomes.append(await self.send(client, "readyz", "GET", "/readyz", None, {}))
            await asyncio.sleep(0.25)

    async def run(self, script: Any) -> list[Fault]:
        """Run the clients while ``script(load)`` injects faults; returns the faults."""
        limits = httpx.Limits(max_connections=CLIENTS + 5)
        timeout = httpx.Timeout(FAIL_FAST_SECONDS * 2)
        async with httpx.AsyncClient(base_url=self.rig.server.url, headers=self.world.headers,
                                     limits=limits, timeout=timeout) as client, \
                httpx.AsyncClient(base_url=self.rig.server.url, timeout=timeout) as probe:
            workers = [asyncio.create_task(self._client(client)) for _ in range(CLIENTS)]
            workers.append(asyncio.create_task(self._readiness(probe)))
            try:
                faults: list[Fault] = await script(self)
            finally:
                self.stopping.set()
                await asyncio.gather(*workers)
        return faults


# --------------------------------------------------------------------------- the checks


SUCCESS = {"offers": {200}, "redeem": {201}, "validate": {200}, "readyz": {200}}


def _clean_503(outcome: Outcome) -> str | None:
    """Why this 503 is not the promised one, or None when it is."""
    body = outcome.body
    retry_after = outcome.headers.get("retry-after", "")
    if not retry_after.isdigit() or int(retry_after) < 1:
        return f"503 without a usable Retry-After ({retry_after!r})"
    if not isinstance(body, dict) or body.get("code") != "database_unavailable":
        return f"503 body is not the database_unavailable error: {body!r}"
    if not {"code", "message", "errors", "request_id"} <= set(body) or body["errors"] != []:
        return f"503 body lacks the error shape: {body!r}"
    if body["request_id"] != outcome.headers.get("x-request-id"):
        return "503 body's request_id differs from the X-Request-ID header"
    return None


def violations_of(outcomes: list[Outcome], faults: list[Fault]) -> list[str]:
    """Every way the responses broke the promises (an empty list when they kept them)."""
    found = []

    def near_fault(outcome: Outcome) -> bool:
        return any(outcome.finished >= fault.began
                   and outcome.started <= fault.ended + RECOVERY_GRACE_SECONDS
                   for fault in faults)

    for outcome in outcomes:
        label = f"{outcome.kind} at +{outcome.started - faults[0].began:.2f}s"
        if outcome.status is None:
            found.append(f"{label}: no answer ({outcome.error})")
        elif outcome.status in SUCCESS[outcome.kind]:
            continue
        elif outcome.status != 503:
            found.append(f"{label}: status {outcome.status}: {outcome.body!r:.300}")
        elif not near_fault(outcome):
            found.append(f"{label}: 503 with the database up (long after any fault)")
        elif reason := _clean_503(outcome):
            found.append(f"{label}: {reason}")
        elif outcome.finished - outcome.started > FAIL_FAST_SECONDS:
            found.append(f"{label}: 503 only after {outcome.finished - outcome.started:.1f}s")
    for fault in faults:
        ready = sorted((o.finished, o.status) for o in outcomes
                       if o.kind == "readyz" and o.started >= fault.ended)
        if not any(status == 200 and when - fault.ended <= READY_AGAIN_SECONDS
                   for when, status in ready):
            found.append(f"{fault.name}: /readyz not 200 within {READY_AGAIN_SECONDS}s after")
        served = [o for o in outcomes if o.kind != "readyz" and o.started >= fault.ended
                  and o.status in SUCCESS[o.kind]]
        if not served:
            found.append(f"{fault.name}: no request served after the database came back")
    return found


def outage_503s(outcomes: list[Outcome], fault: Fault) -> list[Outcome]:
    return [o for o in outcomes if o.status == 503 and o.kind != "readyz"
            and o.finished >= fault.began and o.started <= fault.ended]


async def retry_unanswered(load: Load) -> list[Outcome]:
    """Send each redemption that got no 2xx again, same Idempotency-Key and body."""
    pending = [o for o in load.outcomes if o.kind == "redeem" and o.status != 201]
    async with httpx.AsyncClient(base_url=load.rig.server.url, headers=load.world.headers,
                                 timeout=FAIL_FAST_SECONDS * 2) as client:
        return list(await asyncio.gather(*(
            load.send(client, "redeem", "POST", "/api/v1/redemptions", o.request_body,
                      {"Idempotency-Key": o.idempotency_key or ""}) for o in pending)))


def reconcile(rig: Rig, world: World, load: Load, retries: list[Outcome]) -> list[str]:
    """Compare what clients were told with what the database holds."""
    found = []
    prefix = f"{world.api_key_id}:"
    acknowledged: dict[str, int] = {}  # idempotency key -> redemption id told to the client
    for outcome in [*load.outcomes, *retries]:
        if outcome.kind != "redeem" or outcome.status not in (200, 201):
            continue
        key = prefix + (outcome.idempotency_key or "")
        redemption_id = outcome.body["redemption_id"]
        if acknowledged.setdefault(key, redemption_id) != redemption_id:
            found.append(f"key {key}: told two redemption ids, {acknowledged[key]} and "
                         f"{redemption_id}")
    for retry in retries:
        if retry.status not in (200, 201):
            found.append(f"retry of {retry.idempotency_key}: status {retry.status} "
                         f"{retry.body!r:.200}")
    attempted = {prefix + (o.idempotency_key or "") for o in load.outcomes
                 if o.kind == "redeem"}
    with Session(rig.server.engine) as session:
        stored = {row.idempotency_key: row for row in session.exec(
            select(Redemption).where(Redemption.campaign_id == world.campaign_id,
                                     col(Redemption.idempotency_key).in_(attempted))).all()}
        for key, redemption_id in acknowledged.items():
            row = stored.get(key)
            if row is None:
                found.append(f"acknowledged redemption {redemption_id} ({key}) is missing")
            elif row.id != redemption_id or row.status != "applied":
                found.append(f"redemption for {key} is {row.id}/{row.status}, client was "
                             f"told {redemption_id}")
        for key in stored.keys() - acknowledged.keys():
            found.append(f"redemption {stored[key].id} ({key}) exists but no client was "
                         "ever told about it")
        campaign = session.get(Campaign, world.campaign_id)
        assert campaign is not None
        spent = campaign.spent_minor
        applied = session.exec(select(func.coalesce(func.sum(Redemption.cost_minor), 0)).where(
            Redemption.campaign_id == world.campaign_id,
            Redemption.status == "applied")).one()
        if spent != applied:
            found.append(f"campaign spent {spent} but its live redemptions cost {applied}")
        uses = session.exec(select(CouponCode.code, CouponCode.uses,
                                   func.count(col(Redemption.id)))
                            .join(Redemption, col(Redemption.coupon_code_id)
                                  == col(CouponCode.id), isouter=True)
                            .where(CouponCode.campaign_id == world.campaign_id)
                            .group_by(col(CouponCode.code), col(CouponCode.uses))).all()
        for code, counted, redeemed in uses:
            if redeemed > 1 or counted != redeemed:
                found.append(f"coupon {code[:4]}…: {redeemed} redemptions, uses={counted}")
    return found


async def replays_match(load: Load, sample: int = 40) -> list[str]:
    """A retry of an acknowledged redemption returns the stored answer and does nothing."""
    done = [o for o in load.outcomes if o.kind == "redeem" and o.status == 201]
    chosen = load.random.sample(done, min(sample, len(done)))
    async with httpx.AsyncClient(base_url=load.rig.server.url, headers=load.world.headers,
                                 timeout=FAIL_FAST_SECONDS * 2) as client:
        replays = await asyncio.gather(*(
            load.send(client, "redeem", "POST", "/api/v1/redemptions", o.request_body,
                      {"Idempotency-Key": o.idempotency_key or ""}) for o in chosen))
    return [f"replay of {o.idempotency_key}: {r.status} {r.body!r:.200}"
            for o, r in zip(chosen, replays, strict=True)
            if r.status != 200 or r.body != o.body
            or r.headers.get("idempotent-replayed") != "true"]


def server_log_problems(rig: Rig) -> list[str]:
    lines = rig.log_path.read_text(errors="replace").splitlines()
    return [line[:300] for line in lines if "unhandled error" in line or "Traceback" in line]


def summary(name: str, load: Load, retries: list[Outcome], faults: list[Fault],
            violations: list[str]) -> str:
    api = [o for o in load.outcomes if o.kind != "readyz"]
    statuses = Counter(o.status for o in api)
    slowest_503 = max((o.finished - o.started for o in api if o.status == 503), default=0.0)
    replayed = sum(1 for r in retries if r.status == 200)
    ok = statuses[200] + statuses[201]
    return (f"{name}: requests={len(api)} ok={ok} 503s={statuses[503]} "
            f"other={len(api) - ok - statuses[503]} "
            f"faults={len(faults)} outage_seconds="
            f"{sum(f.ended - f.began for f in faults):.1f} slowest_503={slowest_503:.2f}s "
            f"retried={len(retries)} (replayed {replayed}) violations={len(violations)}")


def check(name: str, rig: Rig, world: World, load: Load, faults: list[Fault],
          violations: list[str]) -> None:
    """Retry, reconcile and fail with every violation found (``violations`` holds earlier ones)."""
    retries = asyncio.run(retry_unanswered(load))
    violations += violations_of(load.outcomes, faults)
    violations += reconcile(rig, world, load, retries)
    violations += asyncio.run(replays_match(load))
    violations += [f"server log: {line}" for line in server_log_problems(rig)]
    counts = rig.proxy.counts
    line = summary(name, load, retries, faults, violations) + (
        f" (proxy so far: connections cut={counts.cut_live} refused={counts.refused} "
        f"blackholed={counts.blackholed})")
    print(line)
    assert not violations, line + "\n" + "\n".join(violations[:30])


# --------------------------------------------------------------------------- the tests


class TestDatabaseOutage:
    def test_down_then_back_under_load(self, rig: Rig, world: World) -> None:
        """Refused connections for 3 s, then a host that answers nothing for 3 s."""

        async def script(load: Load) -> list[Fault]:
            faults = []
            await asyncio.sleep(1.5)
            for mode in ("refuse", "blackhole"):
                began = time.monotonic()
                killed = await asyncio.to_thread(rig.proxy.cut, mode)
                assert killed > 0, "the server had no live database connection to cut"
                await asyncio.sleep(3.0)
                await asyncio.to_thread(rig.proxy.restore)
                faults.append(Fault(f"cut ({mode})", began, time.monotonic()))
                await asyncio.sleep(3.0)
            return faults

        codes = world.redeemable_codes
        load = Load(rig, world, seed=6, codes=codes[:len(codes) // 2])
        faults = asyncio.run(load.run(script))
        # Proof that the outage happened: the clients and the readiness probe saw it.
        violations = [f"{fault.name}: no 503 during the outage" for fault in faults
                      if not outage_503s(load.outcomes, fault)]
        if not any(o.kind == "readyz" and o.status == 503 for o in load.outcomes):
            violations.append("/readyz never answered 503 while the database was cut")
        check("database outage", rig, world, load, faults, violations)


class TestDatabaseRestart:
    def test_backends_killed_under_load_and_while_idle(self, rig: Rig, world: World) -> None:
        """pg_terminate_backend on the server's sessions: once under load, once while idle."""

        async def script(load: Load) -> list[Fault]:
            await asyncio.sleep(1.5)
            began = time.monotonic()
            killed = await asyncio.to_thread(rig.terminate_backends)
            assert killed > 0, "no session of the server's application name to kill"
            faults = [Fault(f"terminate {killed} backends under load", began,
                            time.monotonic())]
            await asyncio.sleep(3.0)
            return faults

        codes = world.redeemable_codes
        load = Load(rig, world, seed=7, codes=codes[len(codes) // 2:])
        faults = asyncio.run(load.run(script))

        # Now every pooled connection is idle. Kill them all: the next requests must not
        # notice (the pool pings a connection before handing it out), not even with a 503.
        time.sleep(0.5)
        began = time.monotonic()
        idle_killed = rig.terminate_backends()
        assert idle_killed > 0
        ended = time.monotonic()

        async def after_idle_kill() -> list[Outcome]:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=rig.server.url, headers=world.headers,
                                         limits=limits, timeout=FAIL_FAST_SECONDS * 2) as client:
                requests = [load._next_request() for _ in range(CLIENTS * 3)]
                requests.append(("readyz", "GET", "/readyz", None, {}))
                return list(await asyncio.gather(*(load.send(client, *r) for r in requests)))

        stale = asyncio.run(after_idle_kill())
        load.outcomes += stale
        violations = [f"after {idle_killed} idle pooled connections were killed: {o.kind} "
                      f"answered {o.status} {o.body!r:.200}" for o in stale
                      if o.status not in SUCCESS[o.kind]]
        faults.append(Fault(f"terminate {idle_killed} idle backends", began, ended))
        check("database restart", rig, world, load, faults, violations)
