"""A mixed storefront workload against a live server, and its reconciliation with the database.

:func:`run_workload` drives concurrent clients (asyncio + httpx) through the storefront API:
offers, coupon validations, redemptions (each with its own Idempotency-Key, some replayed),
rollbacks and event batches (some sent again with the same event ids). Every attempt is
recorded with its status and body. Given a :class:`Crash`, the server is killed once a
number of answers have arrived and restarted; a client whose request got no answer waits
for the restart and sends the very same request again (same Idempotency-Key, same event
ids), as a storefront that follows the API's retry advice does.

:func:`reconcile` then compares what the clients were told with what the database holds
and returns every broken promise as a sentence; an empty list means the books balance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from campaigns.models import (
    Assignment,
    Campaign,
    ChannelEvent,
    Conversion,
    CouponCode,
    Customer,
    Redemption,
)
from campaigns.services.apikeys import create_api_key
from tests.builders import (
    control_arm,
    coupon_arm,
    incentive_arm,
    make_running_campaign,
    percent_arm,
)

OFFERS = "offers"
VALIDATE = "validate"
REDEEM = "redeem"
REPLAY = "replay"  # a redemption sent again with its Idempotency-Key after its 2xx
ROLLBACK = "rollback"
EVENTS = "events"
EVENTS_RESEND = "events_resend"  # an acknowledged batch sent again, same event ids

#: Share of each kind in the mix, in percent.
MIX = {OFFERS: 20, VALIDATE: 10, REDEEM: 40, REPLAY: 5, ROLLBACK: 8, EVENTS: 13,
       EVENTS_RESEND: 4}

#: The statuses a first attempt of each kind may get; anything else is a violation.
EXPECTED = {OFFERS: {200}, VALIDATE: {200, 429}, REDEEM: {201, 409}, REPLAY: {200},
            ROLLBACK: {200}, EVENTS: {200}, EVENTS_RESEND: {200}}
#: A redemption retried after a crash may find its first attempt committed: a 200 replay.
EXPECTED_ON_RETRY = {**EXPECTED, REDEEM: {200, 201, 409}}

#: Attempts at one request after the server restarted, before the client gives up.
MAX_RETRIES = 3


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class CampaignSpec:
    key: str
    treatment: dict[str, Any]
    budget_minor: int
    per_customer_limit: int | None


#: Budgets small enough that redemptions are refused for budget well before the load ends;
#: single-use codes (one per customer) that several clients redeem; per-customer limits.
CAMPAIGNS = (
    CampaignSpec("coupon", coupon_arm(weight=90), budget_minor=8_000, per_customer_limit=None),
    CampaignSpec("percent", percent_arm(weight=90), budget_minor=20_000, per_customer_limit=2),
    CampaignSpec("fixed", incentive_arm("four off", "fixed_discount", {"amount_minor": 400},
                                        weight=90), budget_minor=12_000, per_customer_limit=3),
)


@dataclass(frozen=True)
class Client:
    index: int
    api_key_id: int
    authorization: dict[str, str]
    #: its own loopback source address: coupon validation is rate-limited per address
    address: str


@dataclass(frozen=True)
class World:
    name: str
    campaigns: dict[str, int]  # spec key -> campaign id
    customers: tuple[str, ...]
    clients: tuple[Client, ...]
    #: the first customers are picked five times as often, so clients collide on them
    hot_customers: int


def build_world(engine: Engine, *, name: str, clients: int = 50, customers: int = 80) -> World:
    """Running stackable campaigns (see :data:`CAMPAIGNS`) and one storefront key per client."""
    with Session(engine, expire_on_commit=False) as session:
        campaigns = {spec.key: make_running_campaign(
            session, name=f"{name} {spec.key}", budget_minor=spec.budget_minor,
            per_customer_limit=spec.per_customer_limit, stacking="stackable",
            arms=[control_arm(weight=10), spec.treatment]).id for spec in CAMPAIGNS}
        keys = [create_api_key(session, name=f"{name} client {i}", scope="storefront",
                               actor="reliability") for i in range(clients)]
        session.commit()
    assert all(campaign_id is not None for campaign_id in campaigns.values())
    return World(
        name=name, campaigns={k: int(v) for k, v in campaigns.items() if v is not None},
        customers=tuple(f"{name}-C{i:03d}" for i in range(customers)),
        clients=tuple(Client(index=i, api_key_id=int(key.api_key.id or 0),
                             authorization={"Authorization": f"Bearer {key.secret}"},
                             address=f"127.0.{1 + i // 200}.{10 + i % 200}")
                      for i, key in enumerate(keys)),
        hot_customers=max(1, customers // 8))


# --------------------------------------------------------------------------- the record


@dataclass
class Call:
    """One HTTP attempt. Retries of a request share its ``seq`` and count ``attempt`` up."""

    seq: int
    attempt: int
    client: int
    kind: str
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    api_key_id: int
    #: for a replay or a resent batch: the call whose answer it repeats
    replay_of: Call | None = None
    started: float = 0.0
    ended: float = 0.0
    status: int | None = None
    answer: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def stored_key(self) -> str:
        """The redemption's key as the server stores it (scoped to the API key)."""
        return f"{self.api_key_id}:{self.headers['Idempotency-Key']}"

    @property
    def event_ids(self) -> list[str]:
        return [event["event_id"] for event in self.body["events"]]

    @property
    def redemption_id(self) -> int:
        """The redemption a rollback is for."""
        return int(self.path.split("/")[-2])

    def retry(self) -> Call:
        return dataclasses.replace(self, attempt=self.attempt + 1, started=0.0, ended=0.0,
                                   status=None, answer=None, error=None)

    def describe(self) -> str:
        outcome = self.error if self.status is None else f"{self.status} {self.answer}"
        return (f"{self.kind} #{self.seq}.{self.attempt} {self.method} {self.path} "
                f"-> {str(outcome)[:240]}")


@dataclass
class Crash:
    """Kill the server once ``after`` answers have arrived, then restart it.

    ``kill`` returns how many processes it killed.
    """

    after: int
    kill: Callable[[], int]
    restart: Callable[[], None]
    killed_at: float | None = None
    restarted_at: float | None = None
    killed_processes: int = 0

    def lost(self, call: Call) -> bool:
        """Did this attempt go unanswered because of the crash (sent before the restart,
        failed after the kill)?"""
        return (call.status is None and self.killed_at is not None
                and call.ended >= self.killed_at
                and (self.restarted_at is None or call.started < self.restarted_at))


@dataclass
class Run:
    world: World
    calls: list[Call]
    elapsed: float
    crash: Crash | None = None

    def lost(self, call: Call) -> bool:
        return self.crash is not None and self.crash.lost(call)


# --------------------------------------------------------------------------- the load


class Workload:
    def __init__(self, world: World, url: str, *, seed: int, crash: Crash | None) -> None:
        self.world = world
        self.url = url
        self.seed = seed
        self.crash = crash
        self.calls: list[Call] = []
        self.answers = 0
        self.offers: dict[str, dict[int, dict[str, Any]]] = {}
        self.redeemed: list[Call] = []  # first 201s
        self.rollbacks_sent: set[int] = set()
        self.batches: list[Call] = []  # acknowledged first sends
        self._seq = itertools.count()
        self._event_ids = itertools.count()
        self._restarted = asyncio.Event()
        self._crash_task: asyncio.Task[None] | None = None

    async def run(self, requests: int) -> None:
        clients = self.world.clients
        shares = [requests // len(clients) + (i < requests % len(clients))
                  for i in range(len(clients))]
        await asyncio.gather(*(self._client(client, count)
                               for client, count in zip(clients, shares, strict=True)))
        if self._crash_task is not None:
            await self._crash_task  # re-raises a failed restart

    async def replay(self, originals: list[Call]) -> None:
        """Send these acknowledged redemptions again, same key and body, from their clients."""
        async def one(original: Call) -> None:
            client = self.world.clients[original.client]
            async with self._http(client) as http:
                await self._until_answered(http, self._replay_of(original, client))

        await asyncio.gather(*(one(original) for original in originals))

    def _http(self, client: Client) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=client.address)
        return httpx.AsyncClient(base_url=self.url, transport=transport, timeout=60)

    async def _client(self, client: Client, count: int) -> None:
        rng = random.Random(f"{self.seed}:{client.index}")
        async with self._http(client) as http:
            for _ in range(count):
                await self._until_answered(http, self._next_call(rng, client))

    async def _until_answered(self, http: httpx.AsyncClient, call: Call) -> None:
        await self._send(http, call)
        while self.crash is not None and self.crash.lost(call) and call.attempt < MAX_RETRIES:
            await self._restarted.wait()
            call = call.retry()
            await self._send(http, call)

    async def _send(self, http: httpx.AsyncClient, call: Call) -> None:
        call.started = time.monotonic()
        try:
            response = await http.request(call.method, call.path, json=call.body,
                                          headers=call.headers)
        except httpx.TransportError as error:
            call.error = f"{type(error).__name__}: {error}"
        else:
            call.status = response.status_code
            try:
                call.answer = response.json()
            except ValueError:
                call.answer = response.text
        call.ended = time.monotonic()
        self.calls.append(call)
        if call.status is not None:
            self._learn(call)
            self.answers += 1
            if self.crash is not None and self.crash.killed_at is None \
                    and self.answers >= self.crash.after:
                self.crash.killed_at = time.monotonic()
                self._crash_task = asyncio.create_task(self._kill_and_restart(self.crash))

    async def _kill_and_restart(self, crash: Crash) -> None:
        try:
            crash.killed_processes = await asyncio.to_thread(crash.kill)
            await asyncio.to_thread(crash.restart)
            crash.restarted_at = time.monotonic()
        finally:
            self._restarted.set()  # a failed restart must not leave the clients waiting

    def _learn(self, call: Call) -> None:
        """What a storefront remembers from an answer."""
        if call.kind == OFFERS and call.status == 200:
            customer = call.path.split("/")[4]
            known = self.offers.setdefault(customer, {})
            # Offers that disappear (budget spent, limit reached) stay known: storefronts
            # keep pages open, so redemptions keep arriving after the budget is gone.
            known.update({offer["campaign_id"]: offer for offer in call.answer["offers"]})
        elif call.kind == REDEEM and call.status == 201:
            self.redeemed.append(call)
        elif call.kind == EVENTS and call.ok:
            self.batches.append(call)

    # ----------------------------------------------------------------- choosing requests

    def _next_call(self, rng: random.Random, client: Client) -> Call:
        kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if kind in (REPLAY, ROLLBACK) and not self.redeemed:
            kind = REDEEM
        if kind == EVENTS_RESEND and not self.batches:
            kind = EVENTS
        customer = self._customer(rng)
        if kind in (REDEEM, VALIDATE) and not self.offers.get(customer):
            kind = OFFERS  # a storefront shows the offers before anything else
        if kind == OFFERS:
            return self._call(client, OFFERS, "GET",
                              f"/api/v1/customers/{customer}/offers?channel=web", None)
        if kind == VALIDATE:
            return self._validation(rng, client, customer)
        if kind == REDEEM:
            return self._redemption(rng, client, customer)
        if kind == REPLAY:
            return self._replay_of(rng.choice(self.redeemed), client)
        if kind == ROLLBACK:
            return self._rollback(rng, client)
        if kind == EVENTS_RESEND:
            original = rng.choice(self.batches)
            return self._call(client, EVENTS_RESEND, "POST", "/api/v1/events", original.body,
                              replay_of=original)
        return self._call(client, EVENTS, "POST", "/api/v1/events",
                          {"events": self._events(rng, client)})

    def _customer(self, rng: random.Random) -> str:
        customers = self.world.customers
        weights = [5 if i < self.world.hot_customers else 1 for i in range(len(customers))]
        return rng.choices(customers, weights=weights)[0]

    def _call(self, client: Client, kind: str, method: str, path: str, body: Any, *,
              headers: dict[str, str] | None = None, api_key_id: int | None = None,
              replay_of: Call | None = None) -> Call:
        return Call(seq=next(self._seq), attempt=0, client=client.index, kind=kind,
                    method=method, path=path, body=body,
                    headers=headers or dict(client.authorization),
                    api_key_id=client.api_key_id if api_key_id is None else api_key_id,
                    replay_of=replay_of)

    def _validation(self, rng: random.Random, client: Client, customer: str) -> Call:
        codes = [offer["code"] for offer in self.offers[customer].values() if offer["code"]]
        code = rng.choice(codes) if codes and rng.random() < 0.9 else f"NOPE{rng.randrange(10**8)}"
        return self._call(client, VALIDATE, "POST", "/api/v1/coupons/validate", {
            "code": code, "customer_id": customer,
            "order_amount_minor": rng.randrange(1_000, 6_001, 50)})

    def _redemption(self, rng: random.Random, client: Client, customer: str) -> Call:
        offer = rng.choice(list(self.offers[customer].values()))
        seq = next(self._seq)
        body: dict[str, Any] = {
            "customer_id": customer, "channel": "web", "campaign_id": offer["campaign_id"],
            "order_id": f"{self.world.name}-order-{seq}",
            "order_amount_minor": rng.randrange(1_000, 6_001, 50)}
        if offer["code"]:
            body["code"] = offer["code"]
        headers = {**client.authorization,
                   "Idempotency-Key": f"{self.world.name}-{client.index}-{seq}"}
        return Call(seq=seq, attempt=0, client=client.index, kind=REDEEM, method="POST",
                    path="/api/v1/redemptions", body=body, headers=headers,
                    api_key_id=client.api_key_id)

    def _replay_of(self, original: Call, client: Client) -> Call:
        # The same key under the same API key: idempotency keys are scoped to the caller.
        return self._call(client, REPLAY, original.method, original.path, original.body,
                          headers=original.headers, api_key_id=original.api_key_id,
                          replay_of=original)

    def _rollback(self, rng: random.Random, client: Client) -> Call:
        fresh = [c for c in self.redeemed if c.answer["redemption_id"] not in self.rollbacks_sent]
        # Mostly new rollbacks; some of a redemption already rolled back (must change nothing).
        target = rng.choice(fresh if fresh and rng.random() < 0.8 else self.redeemed)
        redemption_id = int(target.answer["redemption_id"])
        self.rollbacks_sent.add(redemption_id)
        # Sent with the key that redeemed: a rollback belongs to its redeemer (another
        # storefront key gets 404, see tests/web/api/test_rollback_ownership.py).
        return self._call(client, ROLLBACK, "POST",
                          f"/api/v1/redemptions/{redemption_id}/rollback", None,
                          headers={"Authorization": target.headers["Authorization"]},
                          api_key_id=target.api_key_id)

    def _events(self, rng: random.Random, client: Client) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        events = []
        for _ in range(rng.randint(3, 12)):
            event_id = f"{self.world.name}-e{client.index}-{next(self._event_ids)}"
            customer = self._customer(rng)
            occurred_at = (now - timedelta(minutes=rng.randint(1, 600))).isoformat()
            if rng.random() < 0.2:
                events.append({"type": "conversion", "event_id": event_id,
                               "customer_id": customer, "occurred_at": occurred_at,
                               "kind": "purchase", "revenue_minor": rng.randrange(500, 9_000),
                               "channel": "web"})
            else:
                events.append({"type": "interaction", "event_id": event_id,
                               "customer_id": customer,
                               "channel": rng.choice(("web", "call_centre")),
                               "stage": "after_sale", "occurred_at": occurred_at})
        return events


def run_workload(world: World, url: str, *, requests: int, seed: int = 6,
                 crash: Crash | None = None, replay_acknowledged: int = 0) -> Run:
    """Send ``requests`` mixed requests from the world's clients at once; then, if asked,
    replay up to ``replay_acknowledged`` redemptions acknowledged before the crash (or any)."""
    async def main() -> Workload:
        workload = Workload(world, url, seed=seed, crash=crash)
        await workload.run(requests)
        if replay_acknowledged:
            before = crash.killed_at if crash is not None and crash.killed_at else float("inf")
            acknowledged = [c for c in workload.redeemed if c.ended < before]
            await workload.replay(random.Random(seed).sample(
                acknowledged, min(replay_acknowledged, len(acknowledged))))
        return workload

    started = time.monotonic()
    workload = asyncio.run(main())
    return Run(world=world, calls=workload.calls, elapsed=time.monotonic() - started,
               crash=crash)


# --------------------------------------------------------------------------- the books


@dataclass(frozen=True)
class Books:
    """What the database holds, read after the load."""

    campaigns: dict[int, Campaign]
    redemptions: list[Redemption]
    customers: dict[int, str]  # id -> external id
    assignments: list[Assignment]
    codes: list[CouponCode]
    event_ids: Counter[str]

    @property
    def live(self) -> list[Redemption]:
        return [r for r in self.redemptions if r.status == "applied"]


def read_books(engine: Engine, world: World) -> Books:
    ids = list(world.campaigns.values())
    with Session(engine) as session:
        return Books(
            campaigns={c.id: c for c in session.exec(
                select(Campaign).where(col(Campaign.id).in_(ids))) if c.id is not None},
            redemptions=list(session.exec(select(Redemption).order_by(col(Redemption.id)))),
            customers={i: e for i, e in session.exec(select(Customer.id, Customer.external_id))
                       if i is not None},
            assignments=list(session.exec(select(Assignment).where(
                col(Assignment.campaign_id).in_(ids)))),
            codes=list(session.exec(select(CouponCode).where(
                col(CouponCode.campaign_id).in_(ids)))),
            event_ids=Counter([*session.exec(select(ChannelEvent.client_event_id)),
                               *session.exec(select(Conversion.client_event_id))]))


def reconcile(engine: Engine, run: Run) -> list[str]:
    """Every way the database disagrees with what the clients were told (empty: none)."""
    books = read_books(engine, run.world)
    violations: list[str] = []
    for check in (_answers, _redemptions, _rollbacks, _budgets, _codes, _limits, _events):
        violations.extend(check(run, books))
    return violations


def _attempts(run: Run, kinds: Iterable[str]) -> dict[int, list[Call]]:
    by_request: dict[int, list[Call]] = defaultdict(list)
    for call in run.calls:
        if call.kind in kinds:
            by_request[call.seq].append(call)
    return by_request


def _answers(run: Run, books: Books) -> Iterable[str]:
    """No 5xx, no status a request of its kind should not get, no request left unanswered."""
    for call in run.calls:
        if call.status is None:
            if not run.lost(call):
                yield f"no answer without a crash: {call.describe()}"
        elif call.status >= 500:
            yield f"server error: {call.describe()}"
        elif call.status not in (EXPECTED_ON_RETRY if call.attempt else EXPECTED)[call.kind]:
            yield f"unexpected status: {call.describe()}"
    for attempts in _attempts(run, MIX).values():
        if all(a.status is None for a in attempts):
            yield (f"never answered, {len(attempts)} attempts: {attempts[-1].describe()}")


def _redemptions(run: Run, books: Books) -> Iterable[str]:
    """Each key: one redemption exactly when a client was told 2xx, with what it was told."""
    rows = {r.idempotency_key: r for r in books.redemptions}
    answered: dict[str, list[Call]] = defaultdict(list)
    for call in run.calls:
        if call.kind in (REDEEM, REPLAY) and call.status is not None:
            answered[call.stored_key].append(call)
    told = set()
    for key, calls in answered.items():
        calls.sort(key=lambda c: c.ended)
        row = rows.get(key)
        first = next((c for c in calls if c.ok), None)
        if first is None:
            if row is not None:
                yield (f"redemption #{row.id} exists though its request was refused: "
                       f"{calls[-1].describe()}")
            continue
        told.add(key)
        answer = first.answer
        if row is None:
            yield f"acknowledged redemption missing from the database: {first.describe()}"
        else:
            found = (row.id, row.benefit_minor, row.cost_minor, row.campaign_id,
                     books.customers.get(row.customer_id))
            promised = (answer["redemption_id"], answer["benefit_minor"], answer["cost_minor"],
                        answer["campaign_id"], first.body["customer_id"])
            if found != promised:
                yield (f"redemption {key}: database has (id, benefit, cost, campaign, "
                       f"customer) {found}, the client was told {promised}")
        if sum(c.status == 201 for c in calls) > 1:
            yield f"key {key} created a redemption {sum(c.status == 201 for c in calls)} times"
        # A replay after the redemption's rollback says so, in its status and since when.
        rolled_back = None if row is None or row.rolled_back_at is None else {
            **answer, "status": "rolled_back",
            "rolled_back_at": row.rolled_back_at.isoformat()}
        for later in calls[calls.index(first) + 1:]:
            if later.status != 200 or later.answer not in (answer, rolled_back):
                yield (f"replay of {key} does not return the original answer "
                       f"{answer.get('redemption_id')}: {later.describe()}")
    for key, row in rows.items():
        if key not in told:
            yield (f"redemption #{row.id} (key {key}, {row.status}) exists but no client "
                   "was told it succeeded")


def _rollbacks(run: Run, books: Books) -> Iterable[str]:
    """An acknowledged rollback is applied, exactly once; nothing else is rolled back."""
    rows = {r.id: r for r in books.redemptions}
    acknowledged: dict[int, list[Call]] = defaultdict(list)
    lost: set[int] = set()
    for call in run.calls:
        if call.kind != ROLLBACK:
            continue
        if call.ok:
            acknowledged[call.redemption_id].append(call)
        elif run.lost(call):
            lost.add(call.redemption_id)
    for redemption_id, calls in acknowledged.items():
        row = rows.get(redemption_id)
        if row is None or row.status != "rolled_back":
            yield (f"rollback of #{redemption_id} acknowledged, but the redemption is "
                   f"{row.status if row else 'missing'}")
        applied = [c for c in calls if not c.answer["already_rolled_back"]]
        if len(applied) > 1:
            yield f"rollback of #{redemption_id} applied {len(applied)} times"
        if not applied and redemption_id not in lost:
            yield (f"#{redemption_id} was only ever told 'already rolled back', but no "
                   "rollback of it was applied")
    for row in books.redemptions:
        if row.status == "rolled_back" and row.id not in acknowledged:
            yield f"redemption #{row.id} is rolled back but no rollback was acknowledged"


def _budgets(run: Run, books: Books) -> Iterable[str]:
    """Spent equals the cost of live redemptions and never exceeds the budget."""
    live_cost: Counter[int] = Counter()
    for row in books.live:
        live_cost[row.campaign_id] += row.cost_minor
    for campaign_id, campaign in books.campaigns.items():
        if campaign.spent_minor != live_cost[campaign_id]:
            yield (f"campaign {campaign.name!r}: spent {campaign.spent_minor} but its live "
                   f"redemptions cost {live_cost[campaign_id]}")
        budget = campaign.budget_minor
        if budget is not None and max(campaign.spent_minor, live_cost[campaign_id]) > budget:
            yield (f"campaign {campaign.name!r}: budget overspent: spent "
                   f"{campaign.spent_minor}, live redemptions cost {live_cost[campaign_id]}, "
                   f"budget {budget}")


def _codes(run: Run, books: Books) -> Iterable[str]:
    """A code's use count is its live redemptions, within its maximum (1: single use)."""
    live: Counter[int] = Counter(r.coupon_code_id for r in books.live
                                 if r.coupon_code_id is not None)
    for code in books.codes:
        assert code.id is not None
        shown = f"code #{code.id} (...{code.code[-3:]})"
        if code.uses != live[code.id]:
            yield f"{shown}: uses {code.uses} but {live[code.id]} live redemptions"
        if code.max_uses is not None and live[code.id] > code.max_uses:
            yield f"{shown} redeemed {live[code.id]} times; at most {code.max_uses} allowed"


def _limits(run: Run, books: Books) -> Iterable[str]:
    """A customer's redemption count is their live redemptions, within the campaign's limit."""
    live: Counter[tuple[int, int]] = Counter((r.campaign_id, r.customer_id) for r in books.live)
    for assignment in books.assignments:
        key = (assignment.campaign_id, assignment.customer_id)
        campaign = books.campaigns[assignment.campaign_id]
        who = f"customer {books.customers.get(assignment.customer_id)} in {campaign.name!r}"
        if assignment.redemption_count != live[key]:
            yield (f"{who}: redemption_count {assignment.redemption_count} but "
                   f"{live[key]} live redemptions")
        limit = campaign.per_customer_limit
        if limit is not None and live[key] > limit:
            yield f"{who}: {live[key]} live redemptions, limit {limit}"


def _events(run: Run, books: Books) -> Iterable[str]:
    """Acknowledged events are stored once, resent ones not counted again, nothing else."""
    stored = books.event_ids
    for event_id, count in stored.items():
        if count > 1:
            yield f"event {event_id} stored {count} times"
    acknowledged: set[str] = set()
    accepted = 0
    for call in run.calls:
        if call.kind not in (EVENTS, EVENTS_RESEND) or not call.ok:
            continue
        ids = call.event_ids
        acknowledged.update(ids)
        accepted += call.answer["accepted"]
        missing = [i for i in ids if i not in stored]
        if missing:
            yield f"acknowledged events missing: {missing[:5]} ({len(missing)}): {call.describe()}"
        if call.answer["accepted"] + call.answer["duplicates"] != len(ids):
            yield f"batch of {len(ids)} answered {call.answer}: {call.describe()}"
        if call.kind == EVENTS_RESEND and call.answer["accepted"] != 0:
            yield f"a resent batch was accepted again: {call.describe()}"
    for event_id in stored.keys() - acknowledged:
        yield f"event {event_id} stored but never acknowledged"
    # A batch whose first answer was lost in the crash may have been stored then: its retry
    # counts those events as duplicates, not accepted.
    unsure = sum(len(attempts[0].event_ids) for attempts in _attempts(run, [EVENTS]).values()
                 if any(run.lost(a) for a in attempts))
    if not len(stored) - unsure <= accepted <= len(stored):
        yield (f"the answers accepted {accepted} events in all, the database holds "
               f"{len(stored)} ({unsure} in batches interrupted by the crash)")


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figures:
    sent: Counter[str]
    attempts: int
    statuses: Counter[str]
    created: int
    replayed: int
    refusals: Counter[str]
    contested_codes: int
    rollbacks_applied: int
    events_accepted: int
    events_duplicates: int
    live: int
    rolled_back: int
    spent: dict[str, str] = field(default_factory=dict)
    lost: Counter[str] = field(default_factory=Counter)
    lost_outcomes: Counter[str] = field(default_factory=Counter)


def figures(engine: Engine, run: Run) -> Figures:
    calls = run.calls
    ok = [c for c in calls if c.ok]
    code_clients: dict[str, set[int]] = defaultdict(set)
    for call in calls:
        if call.kind == REDEEM and call.attempt == 0 and "code" in call.body:
            code_clients[call.body["code"]].add(call.client)
    books = read_books(engine, run.world)
    lost = [c for c in calls if run.lost(c) and c.attempt == 0]
    lost_seqs = {c.seq for c in lost}
    outcome: Counter[str] = Counter()
    for call in calls:
        if call.seq in lost_seqs and call.attempt > 0 and call.status is not None:
            outcome[f"{call.kind}:{call.status}"] += 1
    return Figures(
        sent=Counter(c.kind for c in calls if c.attempt == 0),
        attempts=len(calls),
        statuses=Counter(str(c.status) if c.status else "none" for c in calls),
        created=sum(c.kind == REDEEM and c.status == 201 for c in calls),
        replayed=sum(c.kind in (REDEEM, REPLAY) and c.status == 200 for c in calls),
        refusals=Counter(c.answer.get("code") for c in calls
                         if c.kind == REDEEM and c.status == 409),
        contested_codes=sum(len(clients) > 1 for clients in code_clients.values()),
        rollbacks_applied=sum(c.kind == ROLLBACK and not c.answer["already_rolled_back"]
                              for c in ok),
        events_accepted=sum(c.answer["accepted"] for c in ok if c.kind in (EVENTS, EVENTS_RESEND)),
        events_duplicates=sum(c.answer["duplicates"] for c in ok
                              if c.kind in (EVENTS, EVENTS_RESEND)),
        live=len(books.live),
        rolled_back=sum(r.status == "rolled_back" for r in books.redemptions),
        spent={key: f"{books.campaigns[i].spent_minor}/{books.campaigns[i].budget_minor}"
               for key, i in run.world.campaigns.items()},
        lost=Counter(c.kind for c in lost),
        lost_outcomes=outcome,
    )


def _counts(counter: Counter[str]) -> str:
    return ",".join(f"{key}:{value}" for key, value in sorted(counter.items()))


def summary(name: str, run: Run, numbers: Figures, violations: list[str]) -> str:
    """One line of figures, as docs/RELIABILITY.md quotes them."""
    line = (f"{name}: sent={sum(numbers.sent.values())} ({_counts(numbers.sent)}) "
            f"clients={len(run.world.clients)} attempts={numbers.attempts} "
            f"statuses={_counts(numbers.statuses)} "
            f"redemptions: created={numbers.created} replayed={numbers.replayed} "
            f"refused={_counts(numbers.refusals)} contested_codes={numbers.contested_codes} "
            f"live={numbers.live} rolled_back={numbers.rolled_back} "
            f"spent/budget={_counts(Counter(numbers.spent))} "
            f"rollbacks_applied={numbers.rollbacks_applied} "
            f"events: accepted={numbers.events_accepted} "
            f"duplicates={numbers.events_duplicates}")
    if run.crash is not None and run.crash.killed_at is not None:
        downtime = (run.crash.restarted_at or run.crash.killed_at) - run.crash.killed_at
        line += (f" crash: killed_processes={run.crash.killed_processes} "
                 f"after_answers={run.crash.after} downtime={downtime:.1f}s "
                 f"in_flight={_counts(numbers.lost)} "
                 f"retried={_counts(numbers.lost_outcomes)}")
    return line + f" elapsed={run.elapsed:.1f}s violations={len(violations)}"
