"""What every API route refuses before its input reaches the database: NUL characters.

PostgreSQL cannot store the NUL character (U+0000) in text; a request carrying one in a
name, a code or a query parameter made the driver fail mid-request, a 500 on PostgreSQL
where SQLite stored the text. No business value contains it, so the API refuses it up
front with a 422 that names where it was, on both databases alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request

from web.errors import MAX_LISTED_ERRORS, ApiError

NUL = "\x00"


def _nul_locations(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    """The location of every text (value or object key) in ``value`` that contains NUL."""
    stack = [(loc, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            if NUL in node:
                yield where
        elif isinstance(node, dict):
            for key, item in reversed(list(node.items())):
                if isinstance(key, str) and NUL in key:
                    yield (*where, key)
                stack.append(((*where, key), item))
        elif isinstance(node, list):
            stack.extend(((*where, index), item) for index, item in reversed(list(
                enumerate(node))))


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def refuse_nul_characters(request: Request) -> None:
    """422 if a path parameter, a query parameter or the JSON body holds a NUL character.

    A route's JSON body has been read and parsed before its dependencies run, so looking
    at it here costs no second read or parse. Routes that read their body themselves
    (the events batch) check it where they parse it.
    """
    locations: list[tuple[str | int, ...]] = []
    for name, value in request.path_params.items():
        if NUL in str(value):
            locations.append(("path", name))
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            locations.append(("query", name.replace(NUL, "\\u0000")))
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is not None and _is_json(request) \
            and await request.body():
        locations.extend(_nul_locations(await request.json(), ("body",)))
    if locations:
        raise ApiError(
            422, "validation_failed",
            "invalid request: text cannot contain the NUL character (\\u0000): "
            + ", ".join(".".join(map(str, loc)) for loc in locations[:MAX_LISTED_ERRORS]),
            [{"loc": [str(part) if isinstance(part, str) else part for part in loc],
              "msg": "text cannot contain the NUL character (\\u0000)", "type": "nul_character"}
             for loc in locations])
