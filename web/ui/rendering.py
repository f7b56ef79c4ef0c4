"""Pages: the Jinja environment, the UI route class, page headers and problem pages.

Every UI response leaves through :class:`UiRoute`, which adds the cookies the request
decided on, the page Content-Security-Policy (no ``'unsafe-inline'``: the templates carry
no inline script, handler or style; downloads get it too) and ``Cache-Control:
no-store``, and turns the problems a request can meet (anonymous, wrong role, bad CSRF
token, not found, an unexpected error) into HTML pages rather than the API's JSON bodies.
The other security headers come from :class:`web.observability.SecurityHeaders`, which
every response of the app passes through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns.errors import ChannelShiftError, NotFound
from campaigns.money import DEFAULT_CURRENCY, format_money
from campaigns.wording import plural, with_article
from web.api.docs import static_url, vendor_path
from web.deps import roll_back_request
from web.errors import (
    DATABASE_RETRY_AFTER_SECONDS,
    DatabaseUnavailable,
    is_database_unavailable,
    log_database_unavailable,
)
from web.observability import PAGE_CONTENT_SECURITY_POLICY
from web.ui.auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    SignedInUser,
    Visitor,
    pending_cookies,
)
from web.ui.permissions import Permission, roles_with, route_permission
from web.ui.problems import (
    CsrfRejected,
    PageNotFound,
    PermissionDenied,
    SignInRequired,
    UiProblem,
)

logger = logging.getLogger("channelshift.ui")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

#: The policy of every UI response, downloads included (the other security headers,
#: nosniff, frame denial and the referrer policy, come from
#: :class:`web.observability.SecurityHeaders` on every response, pages or not).
CONTENT_SECURITY_POLICY = PAGE_CONTENT_SECURITY_POLICY

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Pages show business data: never keep them in a cache (nor in the back button after
    # sign-out).
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    route: str
    permission: Permission


NAV = (
    NavItem("Dashboard", "ui.dashboard", Permission.VIEW),
    NavItem("Campaigns", "ui.campaigns", Permission.VIEW),
    NavItem("Economics", "ui.economics", Permission.VIEW),
    NavItem("Channels", "ui.channels", Permission.VIEW),
    NavItem("Goals", "ui.goals", Permission.VIEW),
    NavItem("Users", "ui.users", Permission.ADMINISTER),
    NavItem("API keys", "ui.api_keys", Permission.ADMINISTER),
)

# --- Jinja filters and globals ------------------------------------------------------


def _zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


@pass_context
def localtime(context: Any, value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> Markup:
    """A UTC time in the signed-in user's time zone, in a machine-readable <time>."""
    if value is None:
        return Markup("—")
    user: SignedInUser | None = context.get("user")
    local = value.astimezone(_zone(user.timezone if user else None))
    return Markup('<time datetime="{}">{} {}</time>').format(
        value.astimezone(UTC).isoformat(timespec="seconds"), local.strftime(fmt),
        local.tzname())


def money(minor: int | None, currency: str = DEFAULT_CURRENCY) -> str:
    """Integer minor units as text a person reads (123456 EUR -> "€1,234.56")."""
    return "—" if minor is None else format_money(minor, currency)


def percent(value: float | Decimal | None, digits: int = 1, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{float(value) * 100:{'+' if signed else ''}.{digits}f}"
    return f"{text}%"


def points(value: float | None, digits: int = 1) -> str:
    """A difference of two rates in percentage points, with its sign."""
    if value is None:
        return "—"
    return f"{value * 100:+.{digits}f} pp"


@lru_cache(maxsize=16)
def vendor_url(package: str, file: str) -> str:
    """URL of a vendored library file; its folder name carries the version."""
    return f"{vendor_path(package)}/{file}"


def _make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    env = templates.env
    env.filters.update(localtime=localtime, money=money, percent=percent, points=points,
                       plural=plural, with_article=with_article)
    env.globals.update(static_url=static_url, vendor_url=vendor_url, CSRF_FIELD=CSRF_FIELD,
                       CSRF_HEADER=CSRF_HEADER, Permission=Permission)
    env.trim_blocks = True
    env.lstrip_blocks = True
    return templates


templates = _make_templates()


def _route_name(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "name", "") or "")


def nav_for(request: Request, user: SignedInUser | None) -> list[dict[str, Any]]:
    if user is None:
        return []
    current = _route_name(request)
    return [{"label": item.label, "url": request.app.url_path_for(item.route),
             "current": current == item.route or current.startswith(f"{item.route}.")}
            for item in NAV if user.can(item.permission)]


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200) -> HTMLResponse:
    """A full page: the template with the visitor, navigation and CSRF token filled in."""
    visitor: Visitor | None = getattr(request.state, "ui_visitor", None)
    user = visitor.user if visitor else None
    page: dict[str, Any] = {
        "request": request,
        "visitor": visitor,
        "user": user,
        "csrf_token": visitor.csrf_token if visitor else "",
        "flash": visitor.flash if visitor else None,
        "nav": nav_for(request, user),
        "url": request.app.url_path_for,
    }
    page.update(context or {})
    response: HTMLResponse = templates.TemplateResponse(request, template, page,
                                                        status_code=status_code)
    return response


def see_other(url: str) -> RedirectResponse:
    """Post/Redirect/Get: after a successful form, the browser fetches the next page."""
    return RedirectResponse(url, status_code=303)


# --- problems as pages ------------------------------------------------------------


def _problem_page(request: Request, *, status_code: int, title: str, message: str,
                  hint: str | None = None) -> HTMLResponse:
    return render(request, "problem.html", {"title": title, "message": message, "hint": hint,
                                            "request_id": getattr(request.state, "request_id",
                                                                  None)},
                  status_code=status_code)


def _sign_in_redirect(request: Request) -> Response:
    query = ""
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if target != "/":
            query = "?" + urlencode({"next": target})
    location = request.app.url_path_for("ui.login") + query
    if request.headers.get("HX-Request"):
        # htmx would swap the sign-in page into a fragment; make it load the whole page.
        return Response(status_code=401, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def problem_response(request: Request, error: Exception) -> Response:
    """The page for an exception raised while serving a UI route."""
    if is_database_unavailable(error):
        if not isinstance(error, DatabaseUnavailable):
            log_database_unavailable(request, error)
        if DatabaseUnavailable.from_error(error).conflict:
            page = _problem_page(request, status_code=503, title="Not saved",
                                 message="This collided with another change made at the same "
                                 "moment and was undone.", hint="Send it again.")
        else:
            page = _problem_page(request, status_code=503, title="Temporarily unavailable",
                                 message="The database is unavailable right now.",
                                 hint="Wait a few seconds and try again.")
        page.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return page
    if isinstance(error, SignInRequired):
        return _sign_in_redirect(request)
    if isinstance(error, PermissionDenied):
        visitor: Visitor | None = getattr(request.state, "ui_visitor", None)
        who = f"You are signed in as {visitor.user.username} ({visitor.user.role.value})." \
            if visitor and visitor.user else ""
        roles = " or ".join(role.value for role in roles_with(error.permission))
        return _problem_page(request, status_code=403, title="Access denied",
                             message=f"{who} This page needs the {roles} role.".strip(),
                             hint="Ask an administrator if you need it.")
    if isinstance(error, CsrfRejected):
        return _problem_page(
            request, status_code=403, title="This form could not be accepted",
            message="It was not sent from a page of this session: the page may have been "
            "open from before you signed in again, or another site tried to send it.",
            hint="Go back, reload the page and send the form again.")
    if isinstance(error, PageNotFound | NotFound):
        return _problem_page(request, status_code=404, title="Not found",
                             message=error.message or "There is nothing at this address.")
    if isinstance(error, UiProblem | ChannelShiftError):
        return _problem_page(request, status_code=409 if isinstance(error, ChannelShiftError)
                             else error.status_code, title="This did not work",
                             message=str(error))
    if isinstance(error, RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in item.get("loc", ())[1:])
                           for item in error.errors())
        return _problem_page(request, status_code=400, title="Bad request",
                             message=f"The request was malformed ({fields}).")
    if isinstance(error, StarletteHTTPException):
        return _problem_page(request, status_code=error.status_code, title="Error",
                             message=str(error.detail))
    logger.exception("unhandled error in a UI page", extra={
        "request_id": getattr(request.state, "request_id", None), "path": request.url.path})
    return _problem_page(request, status_code=500, title="Something went wrong",
                         message="An unexpected error stopped this page. It has been logged.",
                         hint="Quote the request id below when you report it.")


def finish(request: Request, response: Response) -> Response:
    """Add the page headers and the cookies the request decided on."""
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    secure = request.url.scheme == "https"
    for change in pending_cookies(request):
        if change.value is None:
            response.delete_cookie(change.name, path="/", secure=secure, httponly=True,
                                   samesite="lax")
        else:
            response.set_cookie(change.name, change.value, max_age=change.max_age, path="/",
                                secure=secure, httponly=True, samesite="lax")
    return response


class UiRoute(APIRoute):
    """A marketer-UI route: permission from the table, HTML problem pages, security headers."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.permission = route_permission(self.name)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await handle(request)
            except Exception as error:  # every failure of a page becomes a page
                # The session dependency does not see the exception: without this it would
                # commit what the failed page had already flushed.
                roll_back_request(request)
                response = problem_response(request, error)
            return finish(request, response)

        return handler

