"""Schemathesis against every route of the OpenAPI document: no 5xx, no undocumented answer.

Requests are generated from ``app.openapi()`` -- valid and invalid ones (schemathesis'
positive and negative modes, in its examples, coverage and fuzzing phases) -- and sent
in-process to the ASGI app with an API key of the scope each route needs. They run against
a seeded world: the demo's ended, running and draft campaigns, plus running coupon,
lottery, loyalty, trial and gift campaigns with issued and unissued codes, redemptions,
events and a prize draw. Ids, customer ids, channel keys and codes in the generated
requests are often swapped for ones of that world (deterministically, from the generated
value), so requests get past "not found" into the code behind it.

The world lives in a database of its own (a scratch SQLite file or PostgreSQL schema), and
every case runs in a transaction rolled back afterwards: each request sees the same world
whatever the cases before it did (deleted the draft, ended a campaign...), which keeps
the run deterministic (``derandomize=True``) on SQLite and PostgreSQL alike.

Each response must: not be a 5xx; have a status the operation documents; carry a body
matching the schema documented for that status and media type, and the documented
headers; answer a schema-invalid request with a 4xx; and never be 401/403 (the key always
has the route's scope, so one would mean the key is wrong and nothing deep was tested).
The last test prints ``schemathesis: operations=N cases=M failures=F`` for
docs/RELIABILITY.md.

``test_api_stateful`` runs schemathesis' state machine over the document's links (create,
then act on what was created), each scenario in a transaction rolled back at its end, with
the same keys and checks; it prints the steps taken and how often each link was followed,
and fails if any link never was.
"""

from __future__ import annotations

import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis.stateful import Bundle
from schemathesis import checks as st_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.feedback import NO_FEEDBACK
from schemathesis.generation.meta import TestPhase
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput, normalize_name
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.stateful import is_root_allowed
from schemathesis.specs.openapi.stateful import transition as stateful_transition
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from campaigns.db import build_engine
from campaigns.models import (
    Arm,
    Campaign,
    Channel,
    CouponCode,
    Customer,
    Incentive,
    LotteryDraw,
    LotteryEntry,
    MigrationGoal,
    Redemption,
    Stage,
)
from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import campaign_arms
from campaigns.services.coupons import generate_coupon_batch
from campaigns.services.epoch import read_config_epoch
from campaigns.settings import Settings
from seeds.demo import seed_demo_world
from tests.builders import (
    ACTOR,
    control_arm,
    coupon_arm,
    incentive_arm,
    make_campaign,
    make_running_campaign,
    percent_arm,
)
from tests.scratch import scratch_database
from web import deps
from web.api import storefront
from web.app import create_app

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

#: Generated cases per operation in the fuzzing phase (the examples and coverage phases
#: add their own: about 7,100 cases in all). 200 gave 10,300 cases for 60% more time;
#: 120 keeps one database pass of this module near two minutes.
MAX_EXAMPLES = 120
#: Every operation must have been exercised at least this often for the summary to pass.
MIN_CASES_PER_OPERATION = 100

#: The scope of key each tag's routes take (web/deps.py: StorefrontCaller, ManagementCaller,
#: AnalyticsCaller; the economics overview also admits management keys). Checked on every
#: response: a 401 or 403 fails the case, so a wrong entry here cannot go unnoticed.
SCOPE_BY_TAG: dict[str, str | None] = {
    "operations": None,
    "storefront": "storefront",
    "events": "storefront",
    "lotteries": "management",
    "channels": "management",
    "goals": "management",
    "incentives": "management",
    "campaigns": "management",
    "coupon codes and exports": "management",
    "analytics": "analytics",
    "reports": "analytics",
}

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
]

#: A schema-invalid request must get one of these. 413 is right for a batch over the
#: documented maximum of events; 5xx never is (not_a_server_error says so on its own).
REJECTION_STATUSES = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

#: The documented API, read from the application itself.
OPENAPI = create_app(engine=build_engine("sqlite://"), check_schema=False,
                     settings=Settings(config_refresh_seconds=0)).openapi()
SCHEMA = schemathesis.openapi.from_dict(
    OPENAPI, config=SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": REJECTION_STATUSES}}}))

CASES: Counter[str] = Counter()
FAILED: set[str] = set()
#: CPU seconds per operation in requests and checks (generation comes on top).
CPU_SECONDS: Counter[str] = Counter()


@SCHEMA.hook
def filter_failure(context: schemathesis.HookContext, failure: Failure,
                   case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """Keep every failure but "invalid data accepted" that the API's documented leniency
    explains; every other negative case (ranges, lengths, patterns, enums, missing or
    unknown fields) still must be refused.

    - The API's models validate in pydantic's lax mode, so ``false`` is taken for the
      integer 0, ``0`` for the boolean false and ``"5"`` for 5, where the schema says
      integer or boolean. The same models read the marketer UI's forms, which send numbers
      as text, so this is deliberate, neither a crash nor a wrong answer.
    - Text in a JSON body is stripped of surrounding whitespace before it is checked, so a
      code of 64 characters plus a leading tab is a valid code of 64 characters.
    """
    if not isinstance(failure, AcceptedNegativeData):
        return True
    reasons = [line for line in failure.message.splitlines()
               if line.startswith("Invalid component") or line.startswith("  - ")]
    if reasons and all(line.endswith("Incorrect type") for line in reasons):
        return False
    return not _valid_once_stripped(case)


def _stripped(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {key: _stripped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stripped(item) for item in value]
    return value


def _valid_once_stripped(case: schemathesis.Case) -> bool:
    """Whether the case's JSON body, its text stripped, is valid (and the only bad part)."""
    operation = OPENAPI["paths"][case.path][case.method.lower()]
    schema = operation.get("requestBody", {}).get("content", {}).get(
        "application/json", {}).get("schema")
    if schema is None or case.meta is None or not isinstance(case.body, dict | list) \
            or not case.meta.is_negative_at(ParameterLocation.BODY) \
            or any(case.meta.is_negative_at(location) for location in ParameterLocation
                   if location is not ParameterLocation.BODY):
        return False
    validator = jsonschema_rs.Draft202012Validator({**schema,
                                                    "components": OPENAPI["components"]})
    return bool(validator.is_valid(_stripped(case.body)))


# --- the world ------------------------------------------------------------------------------


@dataclass
class World:
    """What the generated requests are aimed at, and the keys to send."""

    app: FastAPI
    sessions: CaseSessions
    keys: dict[str, str]
    epoch: int  # the configuration epoch of the world, which every case returns to
    campaign_ids: list[int]
    arms: list[tuple[int, int]]  # (campaign_id, arm_id)
    draws: list[tuple[int, int]]  # (campaign_id, draw_id)
    goal_ids: list[int]
    incentive_ids: list[int]
    redemption_ids: list[int]
    customer_ids: list[str]
    codes: list[str]
    channel_keys: list[str]
    stage_keys: list[str]


class CaseSessions:
    """The app's unit of work: one rolled-back transaction per generated case.

    ``case()`` opens a connection and a transaction, and the app's session dependency works
    in a savepoint of it (committing or rolling back as it would its own transaction); the
    transaction is rolled back afterwards, so every case sees the same world.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.current: Session | None = None

    @contextmanager
    def case(self) -> Iterator[Session]:
        with self.engine.connect() as connection:
            transaction = connection.begin()
            session = Session(bind=connection, join_transaction_mode="create_savepoint",
                              expire_on_commit=False)
            self.current = session
            try:
                yield session
            finally:
                self.current = None
                session.close()
                transaction.rollback()

    @contextmanager
    def committed(self) -> Iterator[Session]:
        """A unit of work that is kept (to build the world)."""
        with Session(self.engine, expire_on_commit=False) as session:
            self.current = session
            try:
                yield session
                session.commit()
            finally:
                self.current = None

    def dependency(self) -> Iterator[Session]:
        session = self.current
        assert session is not None, "a request outside CaseSessions.case()"
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


LOTTERY = {"prizes": [{"key": "tablet", "name": "Tablet", "value_minor": 29_900, "inventory": 3,
                       "odds": {"numerator": 1, "denominator": 100}}],
           "entry_rule": {"event": "redemption"}}
TRIAL = {"product": "Premium", "days": 30, "cost_minor": 500}
LOYALTY = {"tiers": [{"key": "base", "name": "Base", "threshold_points": 0, "benefits": "-"},
                     {"key": "gold", "name": "Gold", "threshold_points": 150,
                      "benefits": "More"}],
           "points_per_currency_unit": 1, "target_channel_multiplier_bp": 20000,
           "point_value_minor_per_1000": 10}
GIFT = {"item": "Mug", "unit_cost_minor": 300, "inventory": 5}


def _configure(session: Session) -> dict[str, Campaign]:
    """The demo world plus one running campaign per kind of incentive and a draft."""
    seed_demo_world(session, customers=200)
    stackable = {"stacking": "stackable", "per_customer_limit": 3, "budget_minor": 1_000_000}
    campaigns = {
        "coupon": make_running_campaign(session, name="fuzz coupon",
                                        arms=[control_arm(weight=10), coupon_arm(weight=90)],
                                        **stackable),
        "lottery": make_running_campaign(session, name="fuzz lottery", arms=[
            control_arm(weight=10), incentive_arm("draw", "lottery", LOTTERY, weight=90)],
            **stackable),
        "trial": make_running_campaign(session, name="fuzz trial", arms=[
            control_arm(weight=10), incentive_arm("trial", "free_trial", TRIAL, weight=90)],
            **stackable),
        "loyalty": make_running_campaign(session, name="fuzz loyalty", arms=[
            control_arm(weight=10), incentive_arm("points", "loyalty", LOYALTY, weight=90)],
            **stackable),
        "gift": make_running_campaign(session, name="fuzz gift", arms=[
            control_arm(weight=10), incentive_arm("mug", "gift", GIFT, weight=90)],
            **stackable),
        "draft": make_campaign(session, name="fuzz draft",
                               arms=[control_arm(), percent_arm(), coupon_arm(weight=0)]),
    }
    for name in ("coupon", "draft"):
        campaign = campaigns[name]
        arm = next(a for a in campaign_arms(session, campaign) if a.name == "web coupon")
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=40, actor=ACTOR)
    return campaigns


def _activity(client: TestClient, keys: dict[str, str], campaigns: dict[str, Campaign],
              session: Session) -> None:
    """Storefront traffic through the API: exposures, codes, redemptions, events, a draw."""
    store = {"Authorization": f"Bearer {keys['storefront']}"}
    customers = [f"F{n}" for n in range(16)]
    for customer in customers:
        response = client.get(f"/api/v1/customers/{customer}/offers", headers=store,
                              params={"channel": "web", "value_tier": "gold"})
        assert response.status_code == 200, response.text
        for offer in response.json()["offers"][:2]:
            body = {"customer_id": customer, "channel": "web", "order_amount_minor": 12_000,
                    "campaign_id": offer["campaign_id"]}
            if offer["code"]:
                body["code"] = offer["code"]
            redeemed = client.post("/api/v1/redemptions", json=body,
                                   headers={**store, "Idempotency-Key": uuid.uuid4().hex})
            assert redeemed.status_code in (201, 409), redeemed.text
    events = [{"type": "interaction", "event_id": f"fz-i{n}", "customer_id": customer,
               "channel": "call_centre", "stage": "after_sale",
               "occurred_at": "2026-01-31T09:12:00Z"} for n, customer in enumerate(customers)]
    events += [{"type": "conversion", "event_id": f"fz-c{n}", "customer_id": customer,
                "occurred_at": "2026-02-01T09:40:00+01:00", "kind": "trial_to_paid",
                "revenue_minor": 4999, "margin_minor": 1250, "channel": "web"}
               for n, customer in enumerate(customers)]
    reported = client.post("/api/v1/events", json={"events": events}, headers=store)
    assert reported.status_code == 200, reported.text
    lottery = campaigns["lottery"]
    arm = campaign_arms(session, lottery)[1]
    for n, customer in enumerate(session.exec(select(Customer).order_by(col(Customer.id))
                                              .limit(12)).all()):
        session.add(LotteryEntry(campaign_id=lottery.id, incentive_id=arm.incentive_id,
                                 customer_id=customer.id, entries=1 + n % 3,
                                 source_ref=f"fuzz:{n}"))
    session.commit()
    drawn = client.post(f"/api/v1/campaigns/{lottery.id}/draws",
                        json={"seed": "0123456789abcdef"},
                        headers={"Authorization": f"Bearer {keys['management']}"})
    assert drawn.status_code == 201, drawn.text


def _ids(session: Session, column: Any) -> list[Any]:
    return list(session.exec(select(column).order_by(column)).all())


@pytest.fixture(scope="module")
def world(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    with scratch_database(database, tmp_path_factory.mktemp("schemathesis")) as scratch:
        engine = scratch.engine
        sessions = CaseSessions(engine)
        app = create_app(engine=engine, check_schema=False,
                         settings=Settings(config_refresh_seconds=0))
        app.dependency_overrides[deps.get_session] = sessions.dependency
        if engine.dialect.name == "postgresql":
            app.dependency_overrides[deps.async_database] = \
                lambda: deps.SessionRunner(sessions.current)
        # Every validation answer waits 50 ms so timing reveals nothing; not needed here.
        floor = storefront.VALIDATION_FLOOR_SECONDS
        storefront.VALIDATION_FLOOR_SECONDS = 0.0
        try:
            with sessions.committed() as session:
                campaigns = _configure(session)
                keys = {scope: create_api_key(session, name=f"fuzz {scope}", scope=scope,
                                              actor=ACTOR).secret
                        for scope in ("storefront", "management", "analytics")}
            with sessions.committed() as session:
                _activity(TestClient(app), keys, campaigns, session)
            with sessions.committed() as session:
                built = World(
                    app=app, sessions=sessions, keys=keys,
                    epoch=read_config_epoch(session),
                    campaign_ids=_ids(session, Campaign.id),
                    arms=[(c, a) for c, a in session.exec(
                        select(Arm.campaign_id, Arm.id).order_by(col(Arm.id))).all()],
                    draws=[(c, d) for c, d in session.exec(
                        select(LotteryDraw.campaign_id, LotteryDraw.id)
                        .order_by(col(LotteryDraw.id))).all()],
                    goal_ids=_ids(session, MigrationGoal.id),
                    incentive_ids=_ids(session, Incentive.id),
                    redemption_ids=_ids(session, Redemption.id),
                    customer_ids=list(session.exec(select(Customer.external_id)
                                                   .order_by(col(Customer.id)).limit(60))),
                    codes=list(session.exec(select(CouponCode.code)
                                            .order_by(col(CouponCode.id)).limit(80))),
                    channel_keys=_ids(session, Channel.key),
                    stage_keys=_ids(session, Stage.key),
                )
            yield built
        finally:
            storefront.VALIDATION_FLOOR_SECONDS = floor


# --- aiming generated values at the world -------------------------------------------------


def _hit(value: Any) -> int:
    """A stable number derived from a generated value (no randomness of our own)."""
    return zlib.crc32(repr(value).encode())


def _pick(options: list[Any], value: Any) -> Any:
    """One of ``options`` for three values in four; None (keep the value) otherwise."""
    number = _hit(value)
    if not options or number % 4 == 0:
        return None
    return options[number % len(options)]


CUSTOMER_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")


def _aim_value(name: str, value: Any, world: World) -> Any:
    """``value`` or, often, a value of the world for a field called ``name``."""
    is_id = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    is_text = isinstance(value, str)
    choices: dict[str, tuple[bool, list[Any]]] = {
        "campaign_id": (is_id, world.campaign_ids),
        "goal_id": (is_id, world.goal_ids),
        "incentive_id": (is_id, world.incentive_ids),
        "redemption_id": (is_id, world.redemption_ids),
        "customer_id": (is_text and bool(CUSTOMER_ID.match(value)), world.customer_ids),
        "code": (is_text and 1 <= len(value) <= 64, world.codes),
        "channel": (is_text, world.channel_keys),
        "target_channel": (is_text, world.channel_keys),
        "preferred_channel": (is_text, world.channel_keys),
        "key": (is_text and 1 <= len(value) <= 40, world.channel_keys),
        "stage": (is_text, world.stage_keys),
    }
    if name in choices:
        applies, options = choices[name]
        chosen = _pick(options, value) if applies else None
        return value if chosen is None else chosen
    if name == "source_channels" and isinstance(value, list) and value:
        chosen = _pick(world.channel_keys, value)
        return value if chosen is None else [chosen]
    if name == "count" and is_id:
        # A coupon batch of up to a million codes is valid, but writing one per case would
        # spend the run's time budget on a few cases: cap the positive ones.
        return min(value, 500)
    return value


def _aim_body(body: Any, world: World) -> Any:
    if isinstance(body, dict):
        return {key: _aim_body(_aim_value(key, value, world), world)
                for key, value in body.items()}
    if isinstance(body, list):
        return [_aim_body(item, world) for item in body]
    return body


def aim(case: schemathesis.Case, world: World) -> None:
    """Point the case's ids, keys and codes at the seeded world (in place, deterministic).

    Only cases generated as valid: an invalid value swapped for a valid one would no longer
    test the rejection it was generated for.
    """
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return
    path = case.path_parameters
    if path:
        if isinstance(path.get("draw_id"), int) and path["draw_id"] >= 1:
            pair = _pick(world.draws, path["draw_id"])
            if pair is not None:
                path["campaign_id"], path["draw_id"] = pair
        elif isinstance(path.get("arm_id"), int) and path["arm_id"] >= 1:
            pair = _pick(world.arms, path["arm_id"])
            if pair is not None:
                path["campaign_id"], path["arm_id"] = pair
        for name in list(path):
            if name not in ("draw_id", "arm_id"):
                path[name] = _aim_value(name, path[name], world)
    if case.query:
        for name in ("channel", "stage", "preferred_channel"):
            if name in case.query:
                case.query[name] = _aim_value(name, case.query[name], world)
    if isinstance(case.body, dict | list):
        aimed = _aim_body(case.body, world)
        if isinstance(case.body, dict):
            case.body.clear()
            case.body.update(aimed)
        else:
            case.body[:] = aimed


def auth_headers(case: schemathesis.Case, world: World) -> dict[str, str]:
    tags = case.operation.tags or []
    assert len(tags) == 1 and tags[0] in SCOPE_BY_TAG, \
        f"{case.operation.label}: tag {tags} has no scope in SCOPE_BY_TAG"
    scope = SCOPE_BY_TAG[tags[0]]
    return {"Authorization": f"Bearer {world.keys[scope]}"} if scope else {}


# --- the tests --------------------------------------------------------------------------------


@SCHEMA.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
def test_api(case: schemathesis.Case, world: World) -> None:
    label = case.operation.label
    CASES[label] += 1
    started = time.process_time()
    aim(case, world)
    headers = auth_headers(case, world)
    try:
        if headers:
            with world.sessions.case():
                response = case.call(app=world.app, headers=headers)
        else:  # the probes use no session; /readyz reads the database on its own
            response = case.call(app=world.app)
        catalog = world.app.state.catalog
        if catalog.cached_epoch != world.epoch:
            # The case changed the configuration and was rolled back: the epoch it cached
            # will be reached again by another change, so forget it.
            catalog.invalidate()
        assert response.status_code not in (401, 403), (
            f"{label} answered {response.status_code} to a key of its scope: "
            f"{response.text[:300]}")
        case.validate_response(response, checks=CHECKS)
    except BaseException:
        FAILED.add(label)
        raise
    finally:
        CPU_SECONDS[label] += time.process_time() - started


# --- stateful: create, then act on what was created --------------------------------------------

#: The same document and checks, for the state machine. Only the document's own links
#: (web/api/schemas.py: LINKS) are followed: schemathesis' inferred links (from Location
#: headers and from names such as ``campaign_id`` in list answers) would add transitions
#: whose availability depends on what earlier scenarios answered, which breaks the
#: determinism Hypothesis checks.
STATEFUL_SCHEMA = schemathesis.openapi.from_dict(
    OPENAPI, config=SchemathesisConfig.from_dict({
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTION_STATUSES}},
        "phases": {"stateful": {"inference": {"algorithms": []}}}}))
STATEFUL_SCHEMA.hook(filter_failure)

#: Scenarios and steps per scenario of the stateful run.
STATEFUL_SCENARIOS = 150
STATEFUL_STEPS = 12

#: Links followed (the link's values used) and those answered 2xx, by link name.
LINKS_FOLLOWED: Counter[str] = Counter()
LINKS_SUCCEEDED: Counter[str] = Counter()
STATEFUL_STEPS_TAKEN: Counter[str] = Counter()
STATEFUL_FAILED: set[str] = set()
STATEFUL_CUT_SHORT: list[int] = []


#: Ids of the cases made of the world (see :func:`_workflow`), which are not aimed.
FROM_WORLD: set[str] = set()


def _from_world(operation: APIOperation, parameters: dict[str, Any], body: dict[str, Any]
                ) -> StepInput:
    """A new case of ``operation`` made of the world, to start a scenario with."""
    case = operation.Case(path_parameters=dict(parameters), body=dict(body),
                          headers={"Idempotency-Key": f"world-{_hit(body):08x}"})
    FROM_WORLD.add(case.id)
    return StepInput.initial(case)


def _document_links() -> set[str]:
    return {name for methods in OPENAPI["paths"].values() for operation in methods.values()
            for response in operation.get("responses", {}).values()
            for name in response.get("links", {})}


def _workflow(world: World) -> type[Any]:
    """The state machine of the document's links, run against ``world``.

    Every scenario runs in one transaction rolled back at its end (each request in a
    session of its own within it), so each scenario starts from the same world; on
    PostgreSQL the id sequences, which a rollback does not rewind, are set back too. Root
    steps are aimed at the world like the stateless cases; a step that follows a link keeps
    the values the link gave it.
    """
    # Without the constants schemathesis harvests from the Python modules loaded (the app
    # imports some on first use, so the strategies would change during the run).
    base = STATEFUL_SCHEMA.build_state_machine(feedback=NO_FEEDBACK, link_calibration=None)
    # schemathesis starts scenarios only from the creations it deems likely to succeed
    # when there are any, which leaves out new campaigns and draws (whose bodies name
    # other resources) and so nine of the links: start scenarios from them too.
    extra: dict[str, Any] = {}
    for path in ("/api/v1/campaigns", "/api/v1/campaigns/{campaign_id}/draws"):
        operation = STATEFUL_SCHEMA[path]["POST"]
        name = normalize_name(f"RANDOM -> {operation.label}")
        if name not in base.root_rules:
            extra[name] = stateful_transition(
                name=name, target=Bundle("catch_all"),
                precondition=is_root_allowed(operation.label),
                input=operation.as_strategy(phase=TestPhase.STATEFUL).map(StepInput.initial))
    # Scenarios also start from creations made of the world that succeed: random ones
    # seldom do (the offer was never made to that customer, the campaign has no prize
    # draw, the channel's key is taken, the goal does not exist...), and a link from a
    # refused creation is never followed. A customer may redeem a stackable offer again
    # (up to three times).
    with world.sessions.committed() as session:
        again = session.exec(
            select(Customer.external_id, Redemption.campaign_id, Redemption.order_amount_minor)
            .join(Customer, col(Customer.id) == col(Redemption.customer_id))
            .where(col(Redemption.coupon_code_id).is_(None)).order_by(col(Redemption.id))).all()
    seeded: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
        "/api/v1/redemptions": ({}, [
            {"customer_id": customer, "channel": "web", "campaign_id": campaign,
             "order_amount_minor": amount} for customer, campaign, amount in again]),
        "/api/v1/channels": ({}, [{"key": f"kiosk_{n}", "name": f"Kiosk {n}", "kind": "store"}
                                  for n in range(4)]),
        "/api/v1/campaigns": ({}, [
            {"name": f"World campaign {n}", "goal_id": goal, "budget_minor": 100_000 * n,
             "arms": [control_arm(), percent_arm()]}
            for n, goal in enumerate(world.goal_ids[:3], start=1)]),
        "/api/v1/incentives": ({}, [
            {"name": f"World {kind}", "type": kind, "config": config}
            for kind, config in (("gift", GIFT), ("free_trial", TRIAL), ("lottery", LOTTERY))]),
        "/api/v1/goals": ({}, [
            {"name": f"World goal {n}", "stage": "after_sale", "source_channels": ["store"],
             "target_channel": "web", "target_uplift": 0.1, "window_days": 30 + n}
            for n in range(3)]),
        "/api/v1/campaigns/{campaign_id}/draws": ({"campaign_id": world.draws[0][0]}, [
            {"seed": f"{n:016x}"} for n in range(1, 5)]),
    }
    for path, (parameters, bodies) in seeded.items():
        operation = STATEFUL_SCHEMA[path]["POST"]
        name = normalize_name(f"WORLD -> {operation.label}")

        extra[name] = stateful_transition(
            name=name, target=Bundle("catch_all"),
            precondition=is_root_allowed(operation.label),
            input=st.sampled_from(bodies).map(partial(_from_world, operation, parameters)))

    sequences: dict[str, int | None] = {}

    class Workflow(base):  # type: ignore[valid-type, misc]
        root_rules = base.root_rules | set(extra)
        _root_labels = base._root_labels | {  # type: ignore[attr-defined]
            STATEFUL_SCHEMA[p]["POST"].label for p in (
                "/api/v1/campaigns", "/api/v1/campaigns/{campaign_id}/draws")}

        def setup(self) -> None:
            self.scenario = ExitStack()
            self.connection = self.scenario.enter_context(world.sessions.engine.connect())
            self.scenario.callback(self.connection.begin().rollback)
            try:
                self._rewind_sequences()
            except BaseException:
                self.scenario.close()  # a setup that fails gets no teardown
                raise

        def _rewind_sequences(self) -> None:
            if self.connection.dialect.name == "postgresql":
                if not sequences:  # as the world left them, before any scenario
                    sequences.update((name, value) for name, value in self.connection.execute(
                        text("SELECT sequencename, last_value FROM pg_sequences "
                             "WHERE schemaname = current_schema()")))
                for sequence, last_value in sequences.items():
                    self.connection.execute(text(
                        "SELECT setval(CAST(:sequence AS regclass), :value, :called)"), {
                        "sequence": sequence, "value": last_value or 1,
                        "called": last_value is not None})

        def teardown(self) -> None:
            self.scenario.close()
            world.app.state.catalog.invalidate()

        def step(self, input: StepInput) -> StepOutput:
            case = input.case
            label = case.operation.label
            STATEFUL_STEPS_TAKEN[label] += 1
            linked = {name: case.path_parameters[name] for location, name in
                      input.applied_parameters
                      if location is ParameterLocation.PATH and name is not None}
            # Not aimed: a new channel's key (it would be taken) and cases made of the world.
            if label != "POST /api/v1/channels" and case.id not in FROM_WORLD:
                aim(case, world)
            if case.path_parameters is not None:
                case.path_parameters.update(linked)
            positive = case.meta is None or not case.meta.generation.mode.is_negative
            if label == "POST /api/v1/redemptions" and positive:
                # The key the API asks of every redemption (the document leaves it
                # optional, so valid cases often come without one): a stable one per body.
                headers_sent = case.headers if case.headers is not None else {}
                if not isinstance(headers_sent.get("Idempotency-Key"), str):
                    headers_sent["Idempotency-Key"] = f"stateful-{_hit(case.body):08x}"
                    case.headers = headers_sent
            headers = auth_headers(case, world)
            session = Session(bind=self.connection, join_transaction_mode="create_savepoint",
                              expire_on_commit=False)
            world.sessions.current = session
            try:
                response = case.call(app=world.app, headers=headers)
            finally:
                world.sessions.current = None
                session.close()
            followed = input.transition is not None and input.is_applied
            if followed:
                assert input.transition is not None
                # "POST /api/v1/campaigns -> [201] GetCampaign -> GET /api/v1/..."
                link = input.transition.id.split("] ", 1)[1].split(" -> ", 1)[0]
                LINKS_FOLLOWED[link] += 1
                if 200 <= response.status_code < 300:
                    LINKS_SUCCEEDED[link] += 1
            try:
                assert response.status_code not in (401, 403), (
                    f"{label} answered {response.status_code} to a key of its scope: "
                    f"{response.text[:300]}")
                case.validate_response(response, checks=CHECKS)
            except BaseException:
                STATEFUL_FAILED.add(label)
                raise
            return StepOutput(response, case)

    for name, rule in extra.items():
        setattr(Workflow, name, rule)
    return Workflow


def test_api_stateful(world: World) -> None:
    """Create, then act on what was created: every link of the document is followed."""
    workflow = _workflow(world)
    for _ in range(3):
        try:
            workflow.run(settings=settings(
                max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS,
                derandomize=True, deadline=None, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck)))
            break
        except FlakyStrategyDefinition:
            # The API is not a pure function of the requests (new campaigns get a random salt,
            # coupon batches random codes), so a rule's precondition may answer differently on
            # a later scenario with the same start, which Hypothesis takes for a flaky
            # strategy. Schemathesis' own runner ends the run there as a success too; every
            # step's checks ran (and a failure is kept in STATEFUL_FAILED), and the links must
            # still all have been followed.
            STATEFUL_CUT_SHORT.append(sum(STATEFUL_STEPS_TAKEN.values()))
    links = _document_links()
    print(f"\nschemathesis stateful: steps={sum(STATEFUL_STEPS_TAKEN.values())} "
          f"links={len(links)} followed={sum(LINKS_FOLLOWED.values())} "
          f"answered_2xx={sum(LINKS_SUCCEEDED.values())} failures={len(STATEFUL_FAILED)} "
          f"cut_short_at={STATEFUL_CUT_SHORT}")
    for name in sorted(links):
        print(f"  {name}: followed {LINKS_FOLLOWED[name]}, 2xx {LINKS_SUCCEEDED[name]}")
    assert set(LINKS_FOLLOWED) <= links, f"links not in the document: {set(LINKS_FOLLOWED)}"
    assert not links - set(LINKS_FOLLOWED), f"never followed: {sorted(links - set(LINKS_FOLLOWED))}"
    assert not STATEFUL_FAILED, f"failed: {sorted(STATEFUL_FAILED)}"


@pytest.mark.parametrize(("method", "path", "scope", "body", "loc"), [
    ("GET", "/api/v1/customers/F1/offers?age_band=a%00b", "storefront", None,
     ["query", "age_band"]),
    ("GET", "/api/v1/channels/we%00b", "management", None, ["path", "key"]),
    ("GET", "/api/v1/incentives?type=coupon%00", "management", None, ["query", "type"]),
    ("POST", "/api/v1/channels", "management",
     {"key": "kiosk", "name": "Kiosk\u0000", "kind": "store"}, ["body", "name"]),
    ("POST", "/api/v1/redemptions", "storefront",
     {"customer_id": "F1", "channel": "web", "code": "WEB\u0000"}, ["body", "code"]),
    ("POST", "/api/v1/events", "storefront",
     {"events": [{"type": "conversion", "event_id": "nul\u0000", "customer_id": "F1",
                  "occurred_at": "2026-01-31T09:00:00Z", "revenue_minor": 1}]},
     ["events", "0", "event_id"]),
])
def test_nul_characters_refused(world: World, method: str, path: str, scope: str,
                                body: dict[str, Any] | None, loc: list[str]) -> None:
    """PostgreSQL cannot store NUL: refused with a 422 naming where it was, on both
    databases (schemathesis found the 500s it caused on PostgreSQL)."""
    headers = {"Authorization": f"Bearer {world.keys[scope]}",
               "Idempotency-Key": "nul-test-0001"}
    with world.sessions.case(), TestClient(world.app) as client:
        response = client.request(method, path, headers=headers, json=body)
    assert response.status_code == 422, response.text
    assert loc in [[str(part) for part in error["loc"]] for error in response.json()["errors"]]


def test_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Every documented operation was fuzzed, often, and none failed."""
    # An operation without parameters or body has only a handful of distinct requests.
    takes_input = {f"{method.upper()} {path}": bool(operation.get("parameters")
                                                    or operation.get("requestBody"))
                   for path, methods in OPENAPI["paths"].items()
                   for method, operation in methods.items()}
    with capsys.disabled():
        print(f"\nschemathesis: operations={len(CASES)} cases={sum(CASES.values())} "
              f"failures={len(FAILED)} cpu_seconds={sum(CPU_SECONDS.values()):.0f}")
        fewest = sorted((count, label) for label, count in CASES.items()
                        if takes_input.get(label))[:3]
        print("  fewest cases: " + ", ".join(f"{label}: {count}" for count, label in fewest))
        for label, seconds in CPU_SECONDS.most_common(3):
            print(f"  {label}: {CASES[label]} cases, {seconds:.1f} s CPU in requests")
    assert set(CASES) == set(takes_input), \
        f"not fuzzed: {sorted(set(takes_input) - set(CASES))}"
    thin = {label: count for label, count in CASES.items()
            if count < (MIN_CASES_PER_OPERATION if takes_input[label] else 1)}
    assert not thin, f"fewer than {MIN_CASES_PER_OPERATION} cases: {thin}"
    assert not FAILED, f"failed: {sorted(FAILED)}"
