"""Bad input never gives a 5xx, and changes nothing, on any route of the API.

Every operation of the OpenAPI document is sent its documented example (or an empty
object) with one value made bad at a time: each text of the path, the query and the body
with a NUL character and with a lone surrogate (``\\ud800``, which JSON can carry and no
database can store), each time with a year outside 1-9999 once converted to UTC
(``0001-01-01T00:00:00+01:00``, ``9999-12-31T23:59:59-01:00``), and the whole body nested
10,000 deep. A redemption also gets an ``Idempotency-Key`` one character over its documented
maximum (refused), and one of exactly the maximum (taken like any other). Every answer must
be below 500, and no table may gain or lose a row. The key sent always has the route's
scope, so the input is what is refused, not the caller. The marketer UI's forms get the
same values, as an admin with a valid CSRF token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from campaigns.db import build_engine
from campaigns.models import Role
from campaigns.services.apikeys import create_api_key
from campaigns.services.campaigns import campaign_arms
from campaigns.settings import Settings
from tests.builders import ACTOR, control_arm, coupon_arm, make_running_campaign
from tests.web.api.conftest import app, client  # noqa: F401  (fixtures)
from tests.web.ui.conftest import (  # noqa: F401  (fixtures)
    as_role,
    csrf_token,
    new_client,
    ui_app,
    users,
)
from tests.web.ui.test_access import calls, params  # noqa: F401  (a fixture)
from web.app import create_app
from web.ui.auth import CSRF_HEADER

pytestmark = pytest.mark.reliability

OPENAPI = create_app(engine=build_engine("sqlite://"), check_schema=False,
                     settings=Settings(config_refresh_seconds=0)).openapi()

SCOPE_BY_TAG: dict[str, str | None] = {
    "operations": None, "storefront": "storefront", "events": "storefront",
    "lotteries": "management", "channels": "management", "goals": "management",
    "incentives": "management", "campaigns": "management",
    "coupon codes and exports": "management", "analytics": "analytics",
    "reports": "analytics",
}

BAD_TEXT = {"NUL": "a\x00b", "lone surrogate": "a\ud800b"}
BAD_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
TIME_PARAMETERS = ("since", "until")
LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")
DEEP = ("[" * 10_000 + "]" * 10_000).encode()
MAX_IDEMPOTENCY_KEY = 200


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in OPENAPI["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def example_body(operation: dict[str, Any]) -> Any:
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if media is None:
        return None
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return next(iter(media["examples"].values()))["value"]
    schema = media.get("schema", {})
    if "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return (schema.get("examples") or [{}])[0]


def leaves(value: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*where, index))
    else:
        yield where, value


def replaced(value: Any, where: tuple[Any, ...], new: Any) -> Any:
    if not where:
        return new
    copy = json.loads(json.dumps(value))
    node = copy
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = new
    return copy


class World:
    def __init__(self, session: Session) -> None:
        campaign = make_running_campaign(session, name="bad input",
                                         arms=[control_arm(weight=10), coupon_arm(weight=90)])
        arm = campaign_arms(session, campaign)[1]
        self.path_values = {"campaign_id": campaign.id, "arm_id": arm.id, "draw_id": 1,
                            "goal_id": campaign.goal_id, "incentive_id": arm.incentive_id,
                            "redemption_id": 1, "key": "web", "customer_id": "C1"}
        self.keys = {scope: create_api_key(session, name=f"bad {scope}", scope=scope,
                                           actor=ACTOR).secret
                     for scope in ("storefront", "management", "analytics")}
        session.commit()


def row_counts(session: Session) -> list[int]:
    tables = sorted(SQLModel.metadata.tables)
    query = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{name}")' for name in tables)
    return list(session.execute(text(query)).one())


def requests(method: str, path: str, operation: dict[str, Any], world: World
             ) -> Iterator[tuple[str, str, dict[str, Any], bytes | None, dict[str, str]]]:
    """(what is bad, url, query, body, headers) for each bad request of an operation."""
    parameters = operation.get("parameters", [])
    values = {p["name"]: world.path_values.get(p["name"], "x") for p in parameters
              if p["in"] == "path"}
    url = path.format(**values)
    headers = {"Content-Type": "application/json"}
    if any(p["name"] == "Idempotency-Key" for p in parameters):
        headers["Idempotency-Key"] = "bad-input-0001"
    body = example_body(operation)
    encoded = None if body is None else json.dumps(body).encode()
    for parameter in parameters:
        if parameter["in"] not in ("path", "query"):
            continue
        # Times where a time is asked for; elsewhere a text that looks like one is fine.
        times = BAD_TIMES if parameter["name"] in TIME_PARAMETERS else []
        for label, bad in [("NUL", BAD_TEXT["NUL"]), *(("time " + t, t) for t in times)]:
            if parameter["in"] == "path":
                if not isinstance(values[parameter["name"]], str) or label != "NUL":
                    continue
                yield (f"path {parameter['name']}: {label}",
                       path.format(**{**values, parameter["name"]: quote(bad)}), {}, encoded,
                       headers)
            else:
                yield f"query {parameter['name']}: {label}", url, {parameter["name"]: bad}, \
                    encoded, headers
    if body is not None:
        for where, value in leaves(body):
            if not isinstance(value, str):
                continue
            for label, bad in BAD_TEXT.items():
                yield (f"body {list(where)}: {label}", url, {},
                       json.dumps(replaced(body, where, bad)).encode(), headers)
            if LOOKS_LIKE_TIME.match(value):
                for bad in BAD_TIMES:
                    yield (f"body {list(where)}: {bad}", url, {},
                           json.dumps(replaced(body, where, bad)).encode(), headers)
        yield "body nested 10,000 deep", url, {}, DEEP, headers
    if "Idempotency-Key" in headers:
        yield "Idempotency-Key over the maximum", url, {}, encoded, \
            {**headers, "Idempotency-Key": "k" * (MAX_IDEMPOTENCY_KEY + 1)}


@pytest.mark.parametrize(("method", "path", "operation"), list(operations()),
                         ids=[f"{m} {p}" for m, p, _ in operations()])
def test_bad_input_is_refused_without_a_server_error(
        client: TestClient, session: Session, method: str, path: str,  # noqa: F811
        operation: dict[str, Any]) -> None:
    world = World(session)
    scope = SCOPE_BY_TAG[operation["tags"][0]]
    auth = {"Authorization": f"Bearer {world.keys[scope]}"} if scope else {}
    problems = []
    for what, url, query, body, headers in requests(method, path, operation, world):
        before = row_counts(session)
        response = client.request(method, url, params=query, content=body,
                                  headers={**headers, **auth})
        if response.status_code >= 500:
            problems.append(f"{what} -> {response.status_code} {response.text[:150]}")
        elif row_counts(session) != before:
            problems.append(f"{what} -> {response.status_code} and rows changed")
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems)


def test_an_idempotency_key_of_the_maximum_length_is_taken(
        client: TestClient, session: Session) -> None:  # noqa: F811
    world = World(session)
    key = "k" * MAX_IDEMPOTENCY_KEY
    response = client.post("/api/v1/redemptions",
                           json={"customer_id": "C1", "channel": "web", "code": "WEB0000000"},
                           headers={"Authorization": f"Bearer {world.keys['storefront']}",
                                    "Idempotency-Key": key})
    # Not a customer of this world: refused for that, not for its key.
    assert response.status_code in (404, 409), response.text
    assert response.json()["code"] != "validation_failed"


# --- the marketer UI's forms ----------------------------------------------------------------

#: Each bad value as a form sends it (URL-encoded UTF-8; a lone surrogate has none, so its
#: would-be bytes, which are not UTF-8).
FORM_TEXT = {"NUL": "a%00b", "lone surrogate": "a%ED%A0%80b"}
FORM_TIMES = [quote(t) for t in BAD_TIMES]


def ui_forms(admin: TestClient, pages: list[str]) -> dict[str, dict[str, str]]:
    """action path -> {field: value as the page filled it}, for every form that posts, on
    every page of ``pages`` (the CSRF token left out)."""
    forms: dict[str, dict[str, str]] = {}
    for page in pages:
        response = admin.get(page)
        if response.status_code != 200:
            continue
        for attributes, inner in re.findall(r"<form\b([^>]*)>(.*?)</form>", response.text,
                                            re.DOTALL):
            if 'method="post"' not in attributes.lower():
                continue
            action = re.search(r'action="([^"]*)"', attributes)
            target = action.group(1) if action and action.group(1) else page
            fields = {name: value for name, value in re.findall(
                r'name="([^"]+)"(?:[^>]*?value="([^"]*)")?', inner) if name != "csrf_token"}
            if fields and target.startswith("/") and target != "/logout":
                forms.setdefault(target.split("?")[0], {}).update(fields)
    return forms


def test_every_ui_form_refuses_bad_input_without_a_server_error(
        ui_app, as_role, params, session: Session) -> None:  # noqa: F811
    """Every form that posts, found on every page of the UI, sent by an admin with a valid
    CSRF token: all its fields bad at once (NUL, a lone surrogate), then its time fields bad
    one at a time with the others as the page filled them; never a 500, never a row
    changed."""
    admin = as_role(Role.ADMIN)
    token = csrf_token(admin.get("/goals").text)
    pages = [path for route, method, path in calls(ui_app, params) if method == "GET"]
    forms = ui_forms(admin, pages)
    problems, sent = [], 0
    for action, fields in sorted(forms.items()):
        variants = [(label, {name: bad for name in fields}) for label, bad in FORM_TEXT.items()]
        for name in fields:
            if name.endswith("_at") or name in ("since", "until"):
                variants += [(f"{name}: {bad}", {**{k: quote(v) for k, v in fields.items()},
                                                  name: bad}) for bad in FORM_TIMES]
        for label, form in variants:
            before = row_counts(session)
            response = admin.post(action, content="&".join(
                f"{quote(name)}={value}" for name, value in form.items()),
                headers={CSRF_HEADER: token,
                         "Content-Type": "application/x-www-form-urlencoded"})
            sent += 1
            if response.status_code >= 500:
                problems.append(f"POST {action} {label} -> {response.status_code}")
            elif row_counts(session) != before:
                problems.append(f"POST {action} {label} -> {response.status_code}, rows "
                                "changed")
    print(f"\nUI forms: {sent} requests with bad input to {len(forms)} forms: {sorted(forms)}")
    assert len(forms) >= 8
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems)
