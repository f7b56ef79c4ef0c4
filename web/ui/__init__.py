"""The marketer UI: server-rendered pages (Jinja2) with htmx, behind sign-in and roles.

:func:`install_ui` adds the pages to the application. Every page is a
:class:`~web.ui.rendering.UiRoute`: it needs the permission the table in
:mod:`web.ui.permissions` gives it, checks the CSRF token on unsafe methods, answers
with HTML problem pages and sends the security headers (see :mod:`web.ui.rendering`).
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from web.ui.auth import UiState
from web.ui.pages import apikeys, channels, dashboard, goals, session, users
from web.ui.pages import campaigns as campaign_pages
from web.ui.pages import economics as economics_pages
from web.ui.pages import reports as report_pages
from web.ui.pages import wizard as wizard_pages
from web.ui.problems import PageNotFound
from web.ui.rendering import finish, problem_response
from web.ui.settings import UiSettings

PAGE_MODULES = (session, dashboard, channels, goals, users, apikeys)
# The wizard first: "/campaigns/new" must not be read as a campaign id.
PAGE_MODULES += (wizard_pages,)
PAGE_MODULES += (campaign_pages, report_pages, economics_pages)
#: Addresses that belong to the JSON API: their unknown URLs keep the API's JSON 404.
API_PREFIX = "/api/"


def install_ui(app: FastAPI, *, settings: UiSettings | None = None) -> None:
    """Mount the UI's pages; its signing key is read on the first page served."""
    app.state.ui = UiState(settings or UiSettings(), app.state.settings.data_dir)
    for module in PAGE_MODULES:
        app.include_router(module.router)
    _answer_unknown_pages_with_a_page(app)


def _answer_unknown_pages_with_a_page(app: FastAPI) -> None:
    """An address no route matches is the UI's "Not found" page, unless it is the API's."""
    api_handler = app.exception_handlers[StarletteHTTPException]

    async def not_found(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
        if error.status_code != 404 or path.startswith(API_PREFIX):
            return await api_handler(request, error)
        return finish(request, problem_response(request, PageNotFound()))

    app.add_exception_handler(StarletteHTTPException, not_found)
