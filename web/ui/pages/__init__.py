"""The marketer UI's pages, one module per area; each module has a ``router``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from web.ui.auth import guard
from web.ui.rendering import UiRoute


def page_router() -> APIRouter:
    """A router whose every route is a :class:`UiRoute` guarded by :func:`guard`."""
    return APIRouter(route_class=UiRoute, dependencies=[Depends(guard)],
                     include_in_schema=False)
