"""Security headers on every response, and cookies a script or another site cannot use.

Every response (UI pages, API JSON, errors 401 to 500, /docs, /openapi.json, /metrics,
the probes, static files, redirects, downloads) carries a Content-Security-Policy that
allows no inline script, ``X-Content-Type-Options: nosniff``, frame denial (both
``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``) and a Referrer-Policy. The
headers come from one pure-ASGI layer (``web.observability.SecurityHeaders``) outside
everything, Starlette's 500 handler included; the walk takes its routes from the app.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html.parser import HTMLParser

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import sync_playwright
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from campaigns.models import ApiScope, Role
from campaigns.services.apikeys import create_api_key
from tests.reliability.test_api_access import (
    OPEN_ROUTES,
    REQUIRED_SCOPES,
    World,
    app_routes,
    world,  # noqa: F401  (fixture)
)
from tests.web.api.conftest import app, bearer, client  # noqa: F401  (fixtures)
from tests.web.ui.conftest import (  # noqa: F401  (fixtures)
    PASSWORD,
    as_role,
    csrf_token,
    make_user,
    new_client,
    sign_in,
    ui_app,
    users,
)
from tests.web.ui.test_browser import CHROMIUM
from web.observability import SecurityHeaders
from web.ui.auth import FLASH_COOKIE, SESSION_COOKIE, VISIT_COOKIE
from web.ui.rendering import UiRoute

pytestmark = pytest.mark.reliability

REFERRER_POLICIES = {"no-referrer", "same-origin", "strict-origin",
                     "strict-origin-when-cross-origin"}


def csp_directives(policy: str) -> dict[str, list[str]]:
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def header_problems(response: httpx.Response) -> list[str]:
    """What is missing or too weak among the security headers of ``response``."""
    where = f"{response.request.method} {response.request.url.path} " \
            f"({response.status_code})"
    policy = response.headers.get("content-security-policy")
    if not policy:
        return [f"{where}: no Content-Security-Policy"]
    if len(response.headers.get_list("content-security-policy")) != 1:
        return [f"{where}: several Content-Security-Policy headers"]
    directives = csp_directives(policy)
    problems = []
    scripts = directives.get("script-src", directives.get("default-src"))
    if scripts is None:
        problems.append(f"{where}: the CSP does not restrict scripts")
    elif {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"} & set(scripts):
        problems.append(f"{where}: the CSP allows inline or foreign scripts: {scripts}")
    if directives.get("frame-ancestors") != ["'none'"]:
        problems.append(f"{where}: the CSP lets other sites frame the response")
    if response.headers.get("x-frame-options") != "DENY":
        problems.append(f"{where}: X-Frame-Options is not DENY")
    if response.headers.get("x-content-type-options") != "nosniff":
        problems.append(f"{where}: X-Content-Type-Options is not nosniff")
    if response.headers.get("referrer-policy") not in REFERRER_POLICIES:
        problems.append(f"{where}: Referrer-Policy is {response.headers.get('referrer-policy')}")
    return problems


class Recorder:
    """Every response a set of clients got, for one check at the end."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def watch(self, browser: TestClient) -> TestClient:
        browser.event_hooks["response"].append(self.responses.append)
        return browser

    def problems(self) -> list[str]:
        return [problem for response in self.responses for problem in header_problems(response)]

    def statuses(self) -> set[int]:
        return {response.status_code for response in self.responses}


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    import web.api.health

    # /readyz opens a connection of its own; on SQLite it would wait out the lock the
    # test's open transaction holds. Its headers are what matters here.
    monkeypatch.setattr(web.api.health, "check_schema_current", lambda engine: None)
    return Recorder()


@pytest.fixture
def browsers(ui_app, new_client, as_role, recorder: Recorder  # noqa: F811
             ) -> dict[str, TestClient]:
    """An anonymous browser, a signed-in admin and a plain API client, all recorded."""
    return {"anonymous": recorder.watch(new_client()),
            "admin": recorder.watch(as_role(Role.ADMIN)),
            "api": recorder.watch(TestClient(ui_app, raise_server_exceptions=False,
                                             follow_redirects=False))}


def ui_params(session: Session, walk: World) -> dict[str, str]:
    key = create_api_key(session, name="headers walk", scope="analytics", actor="test")
    return {**walk.path_values, "api_key_id": str(key.api_key.id)}


class TestEveryRoute:
    def test_every_route_and_method(self, ui_app, session, world, browsers,  # noqa: F811
                                    recorder) -> None:
        params = ui_params(session, world)
        anonymous, admin, api = browsers["anonymous"], browsers["admin"], browsers["api"]
        endpoints, _ = app_routes(ui_app)
        expected = 0
        for endpoint in endpoints:
            path = endpoint.template.format(**params)
            if isinstance(endpoint.route, UiRoute):
                anonymous.request(endpoint.method, path)  # a redirect to sign in
                if endpoint.method == "GET":
                    admin.get(path)
                else:
                    admin.request(endpoint.method, path, data={})  # no CSRF token: 403
                expected += 2
            elif (endpoint.method, endpoint.template) in REQUIRED_SCOPES:
                api.request(endpoint.method, path)  # 401
                expected += 1
                if endpoint.method == "GET":
                    scope = min(REQUIRED_SCOPES[(endpoint.method, endpoint.template)])
                    api.get(path, headers=bearer(world.keys[scope]))
                    expected += 1
            else:
                assert (endpoint.method, endpoint.template) in OPEN_ROUTES
                api.request(endpoint.method, path)
                expected += 1
        assert recorder.problems() == []
        assert {200, 303, 401, 403} <= recorder.statuses()
        assert len(recorder.responses) == expected

    def test_open_routes_static_files_and_downloads(self, ui_app, world, browsers,  # noqa: F811
                                                    recorder) -> None:
        api, admin = browsers["api"], browsers["admin"]
        management = bearer(world.keys[ApiScope.MANAGEMENT])
        campaign = world.path_values["campaign_id"]
        responses = [
            api.get("/docs"), api.get("/openapi.json"), api.head("/openapi.json"),
            api.get("/metrics", headers=management), api.get("/readyz"),
            api.get("/healthz"),
            api.get("/static/css/app.css"), api.get("/static/js/app.mjs"),
            api.get("/static/js/docs.js"), api.get("/static/img/favicon.svg"),
            api.get(f"/api/v1/campaigns/{campaign}/coupon-codes.csv", headers=management),
            api.get("/api/v1/channels/economics?format=xlsx", headers=management),
            admin.get(f"/campaigns/{campaign}/report.csv"),
            admin.get(f"/campaigns/{campaign}/report.html"),
        ]
        for link in re.findall(r'(?:src|href)="([^"]+)"', responses[0].text):
            responses.append(api.get(link))
        etag = responses[6].headers["etag"]
        not_modified = api.get("/static/css/app.css", headers={"If-None-Match": etag})
        assert not_modified.status_code == 304
        assert [r.status_code for r in responses] == [200] * len(responses)
        assert recorder.problems() == []

    def test_errors_and_redirects(self, ui_app, world, browsers, recorder,  # noqa: F811
                                  monkeypatch) -> None:
        import web.api.storefront
        import web.ui.pages.goals

        api, admin = browsers["api"], browsers["admin"]
        storefront = bearer(world.keys[ApiScope.STOREFRONT])
        expected = {
            404: [api.get("/api/v1/no-such-thing"), api.get("/no-such-page"),
                  api.get("/static/no-such-file.js"), admin.get("/campaigns/999999")],
            405: [api.delete("/healthz"), api.put("/api/v1/coupons/validate",
                                                   headers=storefront)],
            413: [api.post("/api/v1/coupons/validate", headers={
                **storefront, "Content-Length": str(17 * 1024 * 1024)}, content=b"{}")],
            422: [api.get(f"/api/v1/customers/{'x' * 101}/offers", headers=storefront),
                  api.post("/api/v1/coupons/validate", json={"code": ""},
                           headers=storefront)],
        }
        # the ORM path (SQLite) and the async one (PostgreSQL)
        monkeypatch.setattr(web.api.storefront, "customer_offers", explode)
        monkeypatch.setattr(web.api.storefront, "offers_postgresql", explode)
        monkeypatch.setattr(web.ui.pages.goals, "_choices", explode)
        expected[500] = [api.get("/api/v1/customers/C1/offers", headers=storefront),
                         admin.get("/goals/new")]
        monkeypatch.setattr(web.api.storefront, "customer_offers", database_gone)
        monkeypatch.setattr(web.api.storefront, "offers_postgresql", database_gone)
        expected[503] = [api.get("/api/v1/customers/C1/offers", headers=storefront)]
        expected[307] = [api.get("/healthz/"), api.get("/api/v1/channels/")]  # trailing slash
        expected[303] = [browsers["anonymous"].get("/goals")]  # to the sign-in page
        for status, responses in expected.items():
            assert [r.status_code for r in responses] == [status] * len(responses), status
        api_500 = expected[500][0]
        assert api_500.headers["x-request-id"] == api_500.json()["request_id"]
        assert recorder.problems() == []

    def test_rate_limited_answers(self, ui_app, world, browsers, recorder,  # noqa: F811
                                  monkeypatch) -> None:
        import web.api.storefront

        monkeypatch.setattr(web.api.storefront, "VALIDATION_FLOOR_SECONDS", 0)
        monkeypatch.setattr(web.api.storefront, "utcnow",  # mid-window: no boundary to cross
                            lambda: datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC))
        storefront = bearer(world.keys[ApiScope.STOREFRONT])
        statuses = [browsers["api"].post("/api/v1/coupons/validate", headers=storefront,
                                         json={"code": f"NOPE{i:04d}"}).status_code
                    for i in range(22)]
        assert statuses[-1] == 429
        assert recorder.problems() == []


def explode(*args: object, **kwargs: object) -> None:
    raise RuntimeError("an unexpected failure")


def database_gone(*args: object, **kwargs: object) -> None:
    raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))


class TestTheLayer:
    """SecurityHeaders on its own: defaults where missing, a route's own header kept."""

    @staticmethod
    def wrapped(headers: dict[str, str], media_type: str) -> TestClient:
        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            response = PlainTextResponse("hi", headers=headers, media_type=media_type)
            await response(scope, receive, send)

        return TestClient(SecurityHeaders(endpoint))

    def test_pages_and_other_responses_get_their_policy(self) -> None:
        page = self.wrapped({}, "text/html").get("/")
        other = self.wrapped({}, "application/json").get("/")
        assert csp_directives(page.headers["content-security-policy"])["script-src"] \
            == ["'self'"]
        assert csp_directives(other.headers["content-security-policy"])["default-src"] \
            == ["'none'"]
        assert header_problems(page) == [] and header_problems(other) == []

    def test_a_header_the_route_set_is_kept(self) -> None:
        strict = "default-src 'none'; sandbox; frame-ancestors 'none'"
        response = self.wrapped({"Content-Security-Policy": strict,
                                 "Referrer-Policy": "no-referrer"}, "text/html").get("/")
        assert response.headers.get_list("content-security-policy") == [strict]
        assert response.headers.get_list("referrer-policy") == ["no-referrer"]
        assert response.headers["x-frame-options"] == "DENY"

    def test_the_check_notices_a_missing_or_weak_header(self) -> None:
        weak = self.wrapped({"Content-Security-Policy": "script-src 'self' 'unsafe-inline'; "
                             "frame-ancestors 'none'"}, "text/html").get("/")
        assert [p for p in header_problems(weak) if "inline" in p]
        bare = TestClient(PlainTextResponse("hi")).get("/")
        assert header_problems(bare) == ["GET / (200): no Content-Security-Policy"]


# --- /docs without inline script --------------------------------------------------------


class ScriptsAndHandlers(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"{tag} {name}" for name, _ in attrs
                          if name.startswith("on") or name == "style"]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data.strip()[:80])


class TestDocsPage:
    def test_no_inline_script_handler_or_style(self, client) -> None:  # noqa: F811
        page = client.get("/docs")
        parsed = ScriptsAndHandlers()
        parsed.feed(page.text)
        assert parsed.inline == [] and parsed.handlers == []
        assert len(parsed.scripts) == 2
        for script in parsed.scripts:
            source = client.get(str(script["src"]))
            assert source.status_code == 200
            assert "javascript" in source.headers["content-type"]
        assert 'data-openapi-url="/openapi.json"' in page.text
        assert csp_directives(page.headers["content-security-policy"])["script-src"] \
            == ["'self'"]

    @pytest.mark.slow
    def test_swagger_ui_runs_under_the_policy_in_a_browser(self, app) -> None:  # noqa: F811
        """Chromium reports a blocked inline script or asset as a console error."""
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                        "(`apt-get install chromium`; `make test` does it)")
        with served(app) as base_url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page()
                problems: list[str] = []
                outside: list[str] = []
                page.on("console", lambda message: problems.append(message.text)
                        if message.type in ("error", "warning") else None)
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on("request", lambda request: None if request.url.startswith(base_url)
                        else outside.append(request.url))
                page.goto(f"{base_url}/docs")
                page.wait_for_selector(".opblock", timeout=30_000)
                operations = page.locator(".opblock").count()
            finally:
                browser.close()
        assert problems == [] and outside == []
        # The API and the two probes; /metrics is for Prometheus, not in the document.
        assert operations == len(REQUIRED_SCOPES) - 1 + 2


@contextmanager
def served(application: FastAPI) -> Iterator[str]:
    """The app on a real socket (uvicorn in a thread) for the browser; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --- cookies ------------------------------------------------------------------------------


def set_cookies(response: httpx.Response) -> dict[str, str]:
    return {value.split("=", 1)[0]: value.lower()
            for value in response.headers.get_list("set-cookie")}


class TestCookies:
    """Every cookie the UI sets (sign-in binding, session, flash), and its deletion."""

    def cookies_of_a_visit(self, session: Session, new_client, base_url: str  # noqa: F811
                           ) -> list[tuple[str, str]]:
        make_user(session, role=Role.ADMIN, username="cookie_admin")
        key = create_api_key(session, name="to revoke", scope="storefront", actor="test")
        browser = new_client(base_url=base_url)
        seen: list[tuple[str, str]] = []
        browser.event_hooks["response"].append(
            lambda response: seen.extend(set_cookies(response).items()))
        sign_in(browser, "cookie_admin")
        browser.post(f"/api-keys/{key.api_key.id}/revoke",
                     data={"csrf_token": csrf_token(browser.get("/api-keys").text)})
        browser.get("/api-keys")  # shows and deletes the flash
        browser.post("/logout", data={"csrf_token": csrf_token(browser.get("/").text)})
        return seen

    @pytest.mark.parametrize("scheme", ["https", "http"])
    def test_every_cookie_is_http_only_same_site_and_secure_on_https(
            self, session, new_client, scheme) -> None:  # noqa: F811
        seen = self.cookies_of_a_visit(session, new_client, f"{scheme}://testserver")
        names = {name for name, _ in seen}
        assert {SESSION_COOKIE, VISIT_COOKIE, FLASH_COOKIE} <= names
        deleted = {name for name, value in seen if "max-age=0" in value}
        assert {SESSION_COOKIE, VISIT_COOKIE, FLASH_COOKIE} <= deleted
        for name, value in seen:
            attributes = [part.strip() for part in value.split(";")[1:]]
            assert "httponly" in attributes, (name, value)
            assert "samesite=lax" in attributes, (name, value)
            assert ("secure" in attributes) == (scheme == "https"), (name, value)
