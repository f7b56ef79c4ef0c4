"""Routes that skip FastAPI's per-request dependency solving, for the busiest endpoint."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class DirectRoute(APIRoute):
    """A route whose endpoint takes only the request and does the rest itself.

    FastAPI solves a route's dependencies and parameters anew for every request, with a lot
    of Python per dependency: on the offers route that was about a third of the route's CPU
    (1.66 against 1.08 ms per request, driven in-process). A direct route's endpoint is
    awaited with the request alone; it reads its parameters with :func:`parameters`
    (documented through ``openapi_extra``, see :func:`documented`), authenticates with
    :func:`web.deps.admit` and opens the request's session only if it needs one
    (:class:`web.deps.OnDemand`). It is documented, matched and guarded by the middleware
    like any other route.

    An endpoint that declares anything FastAPI would have to solve (a dependency, a
    parameter, a body) is refused when the route is made: it would be silently ignored.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        declared = [*dependant.path_params, *dependant.query_params, *dependant.header_params,
                    *dependant.cookie_params, *dependant.body_params, *dependant.dependencies]
        if declared or dependant.request_param_name is None \
                or not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{self.name}: a DirectRoute's endpoint is a coroutine function "
                            "taking only the request (it declares "
                            f"{[getattr(d, 'name', d) for d in declared]})")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def documented(model: type[BaseModel], where: str, names: tuple[str, ...], *,
               description: str | None = None) -> list[dict[str, Any]]:
    """OpenAPI entries for the ``where`` ("path" or "query") parameters named ``names``,
    from ``model``'s fields: what a :class:`DirectRoute` reads with :func:`parameters`."""
    properties = model.model_json_schema()["properties"]
    return [{"name": name, "in": where, "required": where == "path",
             "schema": properties[name],
             "description": description or properties[name].get("description", "")}
            for name in names]


def parameters(values: Any, model: type[ModelT], where: str, names: tuple[str, ...],
               errors: list[dict[str, Any]]) -> ModelT | None:
    """``model`` from the ``where`` parameters (``request.path_params`` or
    ``request.query_params``) named ``names``, or None with the problems added to
    ``errors``, each located like FastAPI's (``["query", "channel"]``). Once every parameter
    has been read, the route raises :class:`~fastapi.exceptions.RequestValidationError` with
    them: answered like FastAPI's own parameter errors."""
    try:
        return model.model_validate({name: values[name] for name in names if name in values})
    except ValidationError as error:
        errors.extend({"loc": (where, *item["loc"]), "msg": item["msg"], "type": item["type"]}
                      for item in error.errors())
        return None

