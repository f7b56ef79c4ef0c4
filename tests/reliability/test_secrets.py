"""Secrets stay secret: hashes at rest, nothing in the logs, guessing codes is throttled.

- API keys are stored as SHA-256 and passwords as argon2id: after keys and users are made
  (by the services the CLI calls, and through the UI), no column of any table holds a
  secret or a password.
- Logs never carry API keys, passwords, session tokens or full coupon codes: every record
  of every logger, at DEBUG, is captured (the structured JSON access log included) while a
  session signs in, makes a key and a user, calls the API with keys good and bad,
  validates and redeems codes (valid, unknown, used), fails a sign-in, sends a 422 and
  meets an unexpected database error (a 500).
- Failed code validations are limited per key and per client address, whichever runs out
  first; ``X-Forwarded-For`` does not change the address; the limit resets each window.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlmodel import Session, SQLModel

from campaigns import models  # noqa: F401  (every table registered on the metadata)
from campaigns.models import ApiKey, Role, User
from campaigns.security import verify_password
from campaigns.services.apikeys import create_api_key
from campaigns.services.users import create_user
from tests.builders import control_arm, coupon_arm, customer_id_in_arm, make_running_campaign
from tests.web.api.conftest import app, bearer, client  # noqa: F401  (fixtures)
from tests.web.ui.conftest import csrf_token, new_client, ui_app  # noqa: F401  (fixtures)
from web.observability import JsonFormatter

pytestmark = pytest.mark.reliability

ADMIN_PASSWORD = f"Adm1n-pass-phrase-{uuid.uuid4().hex[:8]}"
WRONG_PASSWORD = f"Wr0ng-guess-{uuid.uuid4().hex[:8]}"
NEW_USER_PASSWORD = f"N3w-user-pass-{uuid.uuid4().hex[:8]}"
SECRET_KEY_PATTERN = re.compile(r"cs_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


def all_rows(session: Session) -> list[tuple[str, str, str]]:
    """(table, column, value as text) for every value in the database."""
    session.expire_all()
    found = []
    for table in SQLModel.metadata.sorted_tables:
        for row in session.execute(select(table)).mappings():
            found += [(table.name, column, str(value)) for column, value in row.items()
                      if value is not None]
    return found


def holding(rows: list[tuple[str, str, str]], secrets: list[str]) -> list[str]:
    return [f"{table}.{column}" for table, column, value in rows for secret in secrets
            if secret.lower() in value.lower()]


# --- at rest -----------------------------------------------------------------------------


class TestStoredOnlyAsHashes:
    def test_api_keys_and_passwords_made_like_the_cli_does(self, session) -> None:
        password = "Sufficiently-long-secret-" + uuid.uuid4().hex
        user = create_user(session, actor="cli", user_create={
            "username": "hash_check", "password": password, "role": "analyst"})
        created = {scope: create_api_key(session, name=f"hash {scope}", scope=scope,
                                         actor="cli") for scope in ("storefront", "analytics")}
        rows = all_rows(session)
        secrets = [password, *(key.secret for key in created.values())]
        # the random part alone must not be stored either (the prefix is, to identify a key)
        # (what follows the prefix: the random part may itself contain "_", and cutting at
        # the last one left a few characters that turned up in any column, 1 run in ~10)
        secrets += [key.secret.removeprefix(f"{key.api_key.prefix}_")
                    for key in created.values()]
        assert all(len(secret) >= 40 for secret in secrets)
        assert holding(rows, secrets) == []
        assert len(rows) > 10  # the scan did read the rows it was meant to

        stored_user = session.get(User, user.id)
        assert stored_user is not None
        assert stored_user.password_hash.startswith("$argon2id$")
        assert verify_password(stored_user.password_hash, password)
        assert not verify_password(stored_user.password_hash, password + "x")
        for key in created.values():
            stored_key = session.get(ApiKey, key.api_key.id)
            assert stored_key is not None
            assert stored_key.key_hash == hashlib.sha256(key.secret.encode()).hexdigest()
            assert key.secret.startswith(stored_key.prefix + "_")
            assert len(key.secret) - len(stored_key.prefix) >= 40

    def test_the_scan_finds_a_secret_that_is_stored(self, session) -> None:
        leaked = "cs_deadbeef_" + uuid.uuid4().hex
        create_api_key(session, name=leaked, scope="storefront", actor="cli")
        assert holding(all_rows(session), [leaked]) == ["api_key.name", "audit_log.details"]


# --- in the logs ------------------------------------------------------------------------


class CapturedLogs(logging.Handler):
    """Every record of every logger, kept whole: message, arguments, extras, traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        lines = []
        for record in self.records:
            lines.append(self.json.format(record))  # the structured line production writes
            lines.append(repr({key: value for key, value in vars(record).items()
                               if key not in ("exc_info", "exc_text")}))
        return "\n".join(lines)


@pytest.fixture
def captured() -> Iterator[CapturedLogs]:
    """Everything at DEBUG, the app's loggers included even if they stop propagating.

    Except SQLAlchemy's statement echo, which stays off as in production: it is a
    developer's tool that prints every row read (coupon codes included).
    """
    handler = CapturedLogs()
    root = logging.getLogger()
    loggers = [root, logging.getLogger("channelshift"), logging.getLogger("uvicorn")]
    sql_echo = logging.getLogger("sqlalchemy")
    saved = [(logger, logger.level) for logger in [*loggers, sql_echo]]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    sql_echo.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)


def fail_statements_with(engine: Engine, marker: str) -> Callable[[], None]:
    """Make the database refuse the next statement whose parameters contain ``marker``.

    The refusal is the driver's own IntegrityError, raised where the driver would raise
    it, so SQLAlchemy wraps it with the statement and its parameters as for a real one.
    """

    def refuse(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        if marker in str(parameters):
            raise engine.dialect.loaded_dbapi.IntegrityError(
                "duplicate key value violates unique constraint (injected)")
        return False

    event.listen(engine, "do_execute", refuse)
    return lambda: event.remove(engine, "do_execute", refuse)


class TestNothingSecretInTheLogs:
    def test_a_whole_session_of_work(self, ui_app, session, engine, captured,  # noqa: F811
                                     new_client, monkeypatch) -> None:  # noqa: F811
        import web.api.storefront

        monkeypatch.setattr(web.api.storefront, "VALIDATION_FLOOR_SECONDS", 0)
        create_user(session, actor="cli", user_create={
            "username": "log_admin", "password": ADMIN_PASSWORD, "role": Role.ADMIN.value})
        storefront = create_api_key(session, name="shop", scope="storefront",
                                    actor="cli").secret
        campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm()],
                                         per_customer_limit=5)
        customer = customer_id_in_arm(session, campaign, "web coupon")
        other_customer = customer_id_in_arm(session, campaign, "web coupon", start=5_000)
        secrets: list[str] = [ADMIN_PASSWORD, WRONG_PASSWORD, NEW_USER_PASSWORD, storefront]
        statuses: dict[str, list[int]] = {}

        def note(name: str, response: httpx.Response) -> httpx.Response:
            statuses.setdefault(name, []).append(response.status_code)
            return response

        captured.records.clear()
        # --- the marketer UI: a failed and a good sign-in, a new key, a new user
        browser = new_client()
        token = csrf_token(browser.get("/login").text)
        note("login", browser.post("/login", data={
            "username": "log_admin", "password": WRONG_PASSWORD, "csrf_token": token}))
        note("login", browser.post("/login", data={
            "username": "log_admin", "password": ADMIN_PASSWORD, "csrf_token": token}))
        secrets.append(browser.cookies["cs_session"])
        token = csrf_token(browser.get("/api-keys/new").text)
        made = note("ui key", browser.post("/api-keys", data={
            "name": "made in the UI", "scope": "management", "csrf_token": token}))
        management = SECRET_KEY_PATTERN.search(made.text)
        assert management, made.text[:500]
        secrets.append(management.group(0))
        note("ui user", browser.post("/users", data={
            "username": "made_in_ui", "password": NEW_USER_PASSWORD, "role": "viewer",
            "timezone": "UTC", "csrf_token": token}))

        # --- the API: keys good and bad, codes valid, used and unknown, a 422
        api = TestClient(ui_app, raise_server_exceptions=False)
        shop = bearer(storefront)
        note("channels", api.get("/api/v1/channels", headers=bearer(management.group(0))))
        note("bad key", api.get("/api/v1/channels", headers=bearer(storefront + "x")))
        note("bad key", api.get("/api/v1/channels", headers={"Authorization": storefront}))
        code = note("offers", api.get(f"/api/v1/customers/{customer}/offers",
                                      headers=shop)).json()["offers"][0]["code"]
        second = note("offers", api.get(f"/api/v1/customers/{other_customer}/offers",
                                        headers=shop)).json()["offers"][0]["code"]
        unknown = "WEB" + uuid.uuid4().hex[:10].upper()
        secrets += [code, second, unknown]

        def validate(body: dict[str, Any]) -> httpx.Response:
            return note("validate", api.post("/api/v1/coupons/validate", json=body,
                                             headers=shop))

        assert validate({"code": code, "customer_id": customer}).json()["valid"] is True
        assert validate({"code": unknown}).json()["reason"] == "unknown"
        assert validate({"code": code, "order_amount_minor": "lots"}).status_code == 422
        redemption = {"customer_id": customer, "channel": "web", "code": code,
                      "order_amount_minor": 5000}
        note("redeem", api.post("/api/v1/redemptions", json=redemption, headers=shop))
        note("redeem", api.post("/api/v1/redemptions", json=redemption, headers={
            **shop, "Idempotency-Key": uuid.uuid4().hex}))
        note("redeem", api.post("/api/v1/redemptions", json={**redemption, "code": unknown},
                                headers={**shop, "Idempotency-Key": uuid.uuid4().hex}))
        assert validate({"code": code}).json()["reason"] == "used"
        # --- the database fails under a validation: an unexpected error, logged
        restore = fail_statements_with(engine, second)
        try:
            assert validate({"code": second}).status_code == 500
        finally:
            restore()

        assert statuses == {
            "login": [401, 303], "ui key": [201], "ui user": [303], "channels": [200],
            "bad key": [401, 401], "offers": [200, 200],
            "validate": [200, 200, 422, 200, 500], "redeem": [422, 201, 404]}
        text = captured.text()
        # The capture works: the access log names each route, the 500 is there in full.
        routes = {getattr(record, "route", None) for record in captured.records}
        assert {"/login", "/api-keys", "/users", "/api/v1/coupons/validate",
                "/api/v1/redemptions", "/api/v1/customers/{customer_id}/offers"} <= routes
        assert any(record.exc_info for record in captured.records
                   if record.getMessage() == "unhandled error")
        assert "IntegrityError" in text
        leaked = [secret for secret in secrets if secret.lower() in text.lower()]
        assert leaked == [], "\n".join(line for line in text.splitlines()
                                       if any(s.lower() in line.lower() for s in leaked))[:3000]
        # and none of it went into the database either
        assert holding(all_rows(session), [s for s in secrets if s not in (code, second)]
                       ) == []

    def test_the_capture_sees_a_leak(self, session, captured) -> None:
        code = "WEB" + uuid.uuid4().hex[:10].upper()
        logging.getLogger("channelshift.test").debug("validated %s", code.lower())
        assert code.lower() in captured.text().lower()


# --- rate limits on code validation ------------------------------------------------------


#: The hour the rate-limit tests pin the validation route's clock in: tomorrow's, so the
#: campaigns they start now are within their schedule at every pinned moment.
_HOUR = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def _at(minute: int, second: int) -> datetime:
    return _HOUR + timedelta(minutes=minute, seconds=second)


class TestValidationRateLimit:
    """20 failed validations a minute per key and per client address (web/api/storefront)."""

    @pytest.fixture
    def at(self, monkeypatch) -> Callable[[datetime], None]:
        """Pin the clock of the validation route (fixed windows, so no boundary flakes)."""
        import web.api.storefront

        monkeypatch.setattr(web.api.storefront, "VALIDATION_FLOOR_SECONDS", 0)

        def pin(moment: datetime) -> None:
            monkeypatch.setattr(web.api.storefront, "utcnow", lambda: moment)

        pin(_at(0, 30))
        return pin

    @pytest.fixture
    def keys(self, session) -> list[dict[str, str]]:
        return [bearer(create_api_key(session, name=f"shop {i}", scope="storefront",
                                      actor="test").secret) for i in range(3)]

    @staticmethod
    def from_address(app: FastAPI, address: str) -> TestClient:  # noqa: F811
        return TestClient(app, raise_server_exceptions=False, client=(address, 50_000))

    @staticmethod
    def fail(client: TestClient, key: dict[str, str], times: int = 1,  # noqa: F811
             headers: dict[str, str] | None = None) -> list[int]:
        return [client.post("/api/v1/coupons/validate",
                            json={"code": f"NOPE{uuid.uuid4().hex[:8]}"},
                            headers={**key, **(headers or {})}).status_code
                for _ in range(times)]

    def test_two_keys_from_one_address_share_its_limit(self, app, keys, at) -> None:  # noqa: F811
        shop = self.from_address(app, "198.51.100.7")
        assert self.fail(shop, keys[0], 10) + self.fail(shop, keys[1], 10) == [200] * 20
        limited = shop.post("/api/v1/coupons/validate", json={"code": "NOPE1"},
                            headers=keys[2])
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "30"
        assert limited.json()["code"] == "rate_limited"
        # the same key from elsewhere still works: it was the address that ran out
        assert self.fail(self.from_address(app, "198.51.100.8"), keys[2]) == [200]

    def test_one_key_from_two_addresses_has_one_limit(self, app, keys, at) -> None:  # noqa: F811
        first, second = (self.from_address(app, f"203.0.113.{i}") for i in (1, 2))
        assert self.fail(first, keys[0], 10) + self.fail(second, keys[0], 10) == [200] * 20
        third = self.from_address(app, "203.0.113.3")
        assert self.fail(third, keys[0]) == [429]
        # another key from that third address is not limited: the key ran out
        assert self.fail(third, keys[1]) == [200]

    def test_x_forwarded_for_does_not_change_the_address(self, app, keys, at  # noqa: F811
                                                         ) -> None:
        shop = self.from_address(app, "192.0.2.10")
        statuses = []
        for i in range(20):
            statuses += self.fail(shop, keys[i % 2], headers={
                "X-Forwarded-For": f"10.0.{i}.1", "X-Real-IP": f"10.1.{i}.1",
                "Forwarded": f"for=10.2.{i}.1"})
        assert statuses == [200] * 20
        assert self.fail(shop, keys[2], headers={"X-Forwarded-For": "10.9.9.9"}) == [429]

    def test_the_limit_resets_each_window(self, app, keys, at) -> None:  # noqa: F811
        shop = self.from_address(app, "198.51.100.20")
        assert self.fail(shop, keys[0], 21)[-1] == 429
        at(_at(0, 59))
        limited = shop.post("/api/v1/coupons/validate", json={"code": "NOPE2"},
                            headers=keys[0])
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        at(_at(1, 0))
        assert self.fail(shop, keys[0], 20) == [200] * 20
        assert self.fail(shop, keys[0]) == [429]

    def test_successful_validations_do_not_count(self, app, session, keys, at  # noqa: F811
                                                 ) -> None:
        campaign = make_running_campaign(session, arms=[control_arm(), coupon_arm()])
        customer = customer_id_in_arm(session, campaign, "web coupon")
        shop = self.from_address(app, "198.51.100.30")
        code = shop.get(f"/api/v1/customers/{customer}/offers",
                        headers=keys[0]).json()["offers"][0]["code"]
        for _ in range(25):
            answer = shop.post("/api/v1/coupons/validate", json={"code": code},
                               headers=keys[0])
            assert answer.status_code == 200 and answer.json()["valid"] is True
        assert self.fail(shop, keys[0], 20) == [200] * 20
        assert self.fail(shop, keys[0]) == [429]

