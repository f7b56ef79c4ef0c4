"""What a request must pass before it may hold anything scarce: the database gate, a body.

Two pure ASGI layers, outermost first:

* :class:`RequestBodies` reads a request's body before any other layer sees it, refusing it
  with 413 past its route's limit (:func:`body_limit`; a declared ``Content-Length`` at
  once, a chunked body as soon as it passes) and with 408 when the client has not sent it
  all within the deadline. An API request with a body is authenticated first, so a client
  without a valid key gets its 401 without a byte of its body being read. The body is then
  handed on from memory.
* :class:`DatabaseGate` lets at most as many API requests use the database at once as the
  connection pool holds. A request enters it only once its body is all here, so a client
  that sends half a body holds a coroutine and a socket, nothing another request waits for.

The :class:`Gate` keeps how long its oldest waiter has waited: ``/readyz`` answers 503 when
requests have queued for the database longer than :data:`SATURATED_AFTER_SECONDS`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.api.direct import ExceptionHandler, handler_for
from web.deps import authenticate, bearer_secret
from web.errors import error_body

KIB = 1024
MIB = 1024 * KIB

#: The largest body of a request that names one thing: a redemption, a code to validate, a
#: rollback, an offers request. Beyond it, 413 at once.
SINGLE_ITEM_BYTES = 8 * KIB
#: The largest body of a management request (a campaign with its arms and incentives, a
#: goal, an incentive's configuration, costs).
CONFIGURATION_BYTES = 256 * KIB
#: The largest body anywhere: an events batch of the most events it may hold, a file
#: uploaded to the marketer UI.
BULK_BYTES = 16 * MIB

#: Path prefixes of the storefront's single-item routes.
SINGLE_ITEM_PATHS = ("/api/v1/redemptions", "/api/v1/coupons/", "/api/v1/customers/")
BULK_PATHS = ("/api/v1/events",)

#: How long a client may take to send a whole request body (408 after that).
BODY_DEADLINE_SECONDS = 10.0
#: A worker whose requests have waited this long for the database gate is not ready.
SATURATED_AFTER_SECONDS = 1.0


def body_limit(path: str) -> int:
    """The largest body a request for ``path`` may send."""
    if not path.startswith("/api/"):
        return BULK_BYTES  # the marketer UI's forms and uploads
    if path.startswith(SINGLE_ITEM_PATHS):
        return SINGLE_ITEM_BYTES
    if path.startswith(BULK_PATHS):
        return BULK_BYTES
    return CONFIGURATION_BYTES


def describe_bytes(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // KIB} KiB"


class Gate:
    """At most ``limit`` holders at once; remembers since when each waiter waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self._waiting: dict[int, float] = {}

    async def __aenter__(self) -> None:
        # A class, not a generator: the offers route passes here on every request.
        if not self._semaphore.locked():
            await self._semaphore.acquire()
            return
        token = object()
        self._waiting[id(token)] = time.monotonic()
        try:
            await self._semaphore.acquire()
        finally:
            del self._waiting[id(token)]

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()

    def saturation(self) -> str | None:
        """Why the worker is saturated (requests waiting too long for the gate), or None."""
        if not self._waiting:
            return None
        waited = time.monotonic() - min(self._waiting.values())
        if waited < SATURATED_AFTER_SECONDS:
            return None
        return (f"{len(self._waiting)} requests waiting for one of the {self.limit} database "
                f"slots of this worker, the oldest for {waited:.1f} s")


class DatabaseGate:
    """Let at most the gate's limit of API requests use the database at once in this worker.

    Sync routes and their session dependency run on a thread pool larger than the
    connection pool. Without this gate, threads waiting for a connection can fill the
    thread pool while the requests that hold connections wait for a thread to commit:
    a deadlock that ends in pool timeouts. Waiting here costs no thread.
    """

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        async with self.gate:
            await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class RequestBodies:
    """Per-route body limits, authentication before the body, a deadline to send it.

    ``handlers`` are the app's exception handlers: a refusal of the key (or a database
    that cannot be reached to check it) is answered as the route would have answered it.
    """

    def __init__(self, app: ASGIApp, *, gate: Gate, handlers: Mapping[Any, ExceptionHandler],
                 deadline_seconds: float = BODY_DEADLINE_SECONDS) -> None:
        self.app = app
        self.gate = gate
        self.handlers = handlers
        self.deadline = deadline_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and (declared is None or declared == b"0"):
            await self.app(scope, receive, send)  # no body: nothing to wait for
            return
        limit = body_limit(scope["path"])
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, 413, "payload_too_large",
                               f"the request body is larger than {describe_bytes(limit)} "
                               f"({limit} bytes), the most this route takes")
            return
        if scope["path"].startswith("/api/") and not await self._admitted(scope, receive, send):
            return
        try:
            async with asyncio.timeout(self.deadline):
                body = await self._read(receive, limit)
        except TimeoutError:
            await self._refuse(scope, receive, send, 408, "request_timeout",
                               f"the request body did not arrive within {self.deadline:g} s")
            return
        except BodyTooLarge:
            await self._refuse(scope, receive, send, 413, "payload_too_large",
                               f"the request body is larger than {describe_bytes(limit)} "
                               f"({limit} bytes), the most this route takes")
            return
        if body is None:
            return  # the client went away
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether the request carries a valid API key; answered (401, 503) if not."""
        request = Request(scope, receive, send)
        try:
            bearer_secret(request)  # a missing or malformed key costs no database slot
            async with self.gate:
                await authenticate(request)
        except Exception as error:
            handler = handler_for(self.handlers, error)
            if handler is None:
                raise
            response = await handler(request, error) if inspect.iscoroutinefunction(handler) \
                else await run_in_threadpool(handler, request, error)
            # The body is left unread: the connection cannot carry another request.
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return False
        return True

    @staticmethod
    async def _read(receive: Receive, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                      message: str) -> None:
        request = Request(scope, receive, send)
        response = JSONResponse(error_body(code, message, None, request), status_code=status,
                                headers={"connection": "close"})
        await response(scope, receive, send)
