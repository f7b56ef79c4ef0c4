"""Routes that skip FastAPI's per-request dependency solving, for the busiest endpoint."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

ModelT = TypeVar("ModelT", bound=BaseModel)


class DirectRoute(APIRoute):
    """A route whose endpoint takes only the request and does the rest itself.

    FastAPI solves a route's dependencies and parameters anew for every request, with a lot
    of Python per dependency: on the offers route that was about a third of the route's CPU
    (1.66 against 1.08 ms per request, driven in-process). A direct route's endpoint is
    awaited with the request alone; it reads its parameters with :func:`parameters`
    (documented through ``openapi_extra``, see :func:`documented`), authenticates with
    :func:`web.deps.admit` and opens the request's session only if it needs one
    (:class:`web.deps.OnDemand`). It is documented and guarded by the middleware like any
    other route; :class:`DirectDispatch` matches it before FastAPI's router does.

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


ExceptionHandler = Callable[[Request, Exception], Any]


def handler_for(handlers: Mapping[Any, ExceptionHandler], error: Exception
                ) -> ExceptionHandler | None:
    """The handler of ``handlers`` (an app's exception handlers) that Starlette's exception
    middleware would choose for ``error``: an HTTP error's status first, then the most
    specific class; None for what only the 500 handler (Exception), outermost, takes."""
    if isinstance(error, HTTPException) and error.status_code in handlers:
        return handlers[error.status_code]
    for cls in type(error).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class DirectDispatch:
    """Direct routes answered without FastAPI's router (pure ASGI, the innermost layer).

    FastAPI 0.165 matches a request through its included routers and hands it on through
    the exception middleware, the exit stack and the route's request wrapper, with a lot
    of Python at each step: on the offers route that was about a quarter of the worker's
    CPU per request (1.0 against 0.75 ms, driven in-process). A request for one of
    ``routes`` (a :class:`DirectRoute`, by method and path) is answered here: its endpoint
    is awaited with the request, and what it raises goes to the handler the exception
    middleware would have chosen (``handlers``, the app's exception handlers, by the
    exception's class). An exception no handler takes goes on, out to the 500 handler
    around every layer, as from any route. Everything else goes on to ``app``.

    These routes are matched before every other route, so their paths must not overlap
    any other route's.
    """

    def __init__(self, app: ASGIApp, *, routes: Iterable[DirectRoute],
                 handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self.routes = [route for route in routes if isinstance(route, DirectRoute)]
        self.handlers = handlers  # the app's own: read per error, once all are installed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Behind a root path, the router's own matching (which strips it) takes over.
        if scope["type"] == "http" and not scope.get("root_path"):
            for route in self.routes:
                match = route.path_regex.match(scope["path"])
                if match is not None and scope["method"] in route.methods:
                    await self._answer(route, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, route: DirectRoute, values: dict[str, str], scope: Scope,
                      receive: Receive, send: Send) -> None:
        scope["route"], scope["endpoint"] = route, route.endpoint
        scope["path_params"] = {name: route.param_convertors[name].convert(value)
                                for name, value in values.items()}
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as error:
            handler = handler_for(self.handlers, error)
            if handler is None:
                raise
            response = await handler(request, error) if inspect.iscoroutinefunction(handler) \
                else await run_in_threadpool(handler, request, error)
        await response(scope, receive, send)


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

