"""Structured JSON logs with request ids, Prometheus metrics, and security headers.

Logs name the route template (``/api/v1/customers/{customer_id}/offers``), never the raw
path or body, so no API key, password or coupon code can end up in them. With several
worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (``channelshift serve`` does) and
``/metrics`` aggregates all of them.

:func:`outermost_layers` wraps the whole application, Starlette's own 500 handler
included, so every response leaves with a request id and the security headers.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import secrets
import time
from typing import Any

from fastapi import Depends, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic_core import to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campaigns.models import ApiScope
from web.deps import require_scope

SAFE_EXTRA = ("request_id", "method", "route", "status", "duration_ms", "caller", "path",
              "campaign_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, to the microsecond), level, logger, message
    and the :data:`SAFE_EXTRA` fields the record carries.

    Every request writes one (the access log), so the line is built the cheap way: the
    time's date and seconds are formatted once per second, and the object is serialised by
    pydantic-core (a fifth of ``json.dumps``'s time). A line with text outside ASCII is
    written as ``json.dumps`` writes it, with ``\\u`` escapes, so it survives a stream of
    any encoding.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        whole = int(created)
        second = self._second  # one read: another thread may replace it meanwhile
        if second[0] != whole:
            second = self._second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                          time.gmtime(whole)))
        return f"{second[1]}.{int((created - whole) * 1_000_000):06d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in SAFE_EXTRA:
            if key in fields:
                entry[key] = fields[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = to_json(entry, fallback=str).decode()
        return line if line.isascii() else json.dumps(entry, default=str)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """Logging for a served app, as uvicorn applies it in every worker (``log_config``).

    One JSON line per record on stdout, for ChannelShift's loggers (the access log with
    request ids among them) and uvicorn's own. uvicorn's plain access log is off: ours has
    the request id, the route template rather than the full URL, and the caller's key id.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "web.observability.JsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stdout"}},
        "loggers": {
            "channelshift": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """Apply :func:`log_config` in this process."""
    logging.config.dictConfig(log_config(level))


class Metrics:
    """The application's Prometheus metrics, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "channelshift_http_request_duration_seconds", "HTTP request latency",
            ["method", "route", "status"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.redemptions = Counter(
            "channelshift_redemptions_total", "Redemptions applied",
            ["campaign_id", "incentive_type"], registry=self.registry)
        self.budget_spent = Counter(
            "channelshift_budget_spent_minor_total", "Budget spent by redemptions (minor units)",
            ["campaign_id", "currency"], registry=self.registry)

    def redemption(self, body: dict[str, Any]) -> None:
        campaign = str(body.get("campaign_id"))
        self.redemptions.labels(campaign, str(body.get("incentive_type"))).inc()
        self.budget_spent.labels(campaign, str(body.get("currency"))).inc(
            int(body.get("cost_minor", 0)))

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class RequestContext:
    """Request id, latency histogram and one JSON access-log line per request (pure ASGI).

    The request id is taken from a well-formed ``X-Request-ID`` header or made up, put in
    ``request.state.request_id`` for error bodies, and echoed in the response.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.access = logging.getLogger("channelshift.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 8 <= len(incoming) <= 64 and incoming.isascii() \
            and incoming.replace("-", "").isalnum() else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = str(getattr(scope.get("route"), "path", None) or "unmatched")
            if route != "/metrics":
                self.metrics.latency.labels(scope["method"], route, str(status)).observe(elapsed)
            caller = scope["state"].get("caller")
            if self.access.isEnabledFor(logging.INFO):
                # The record made and handed to the handlers directly: Logger.info would
                # also walk the stack for the caller's file and line, which the line does
                # not show (a quarter of the access log's cost).
                self.access.handle(self.access.makeRecord(
                    self.access.name, logging.INFO, __file__, 0, "request", (), None,
                    func="RequestContext", extra={
                        "request_id": request_id, "method": scope["method"], "route": route,
                        "status": status, "duration_ms": round(elapsed * 1000, 2),
                        "caller": caller.actor if caller else None}))


def install_observability(app: FastAPI) -> None:
    """Metrics and the /metrics route; the request layers come from :func:`outermost_layers`.

    The metrics name campaigns, their redemptions and their spend: ``/metrics`` wants an
    API key of the analytics or the management scope as a bearer token, which Prometheus
    sends with ``authorization: {credentials: ...}`` in its scrape configuration.
    """
    app.state.metrics = Metrics()
    monitoring = Depends(require_scope(ApiScope.ANALYTICS, ApiScope.MANAGEMENT))

    @app.get("/metrics", include_in_schema=False, dependencies=[monitoring])
    def metrics() -> Response:
        return Response(app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


#: Pages (the marketer UI, /docs): scripts, styles, images and fonts from this site only,
#: no inline script or handler, no plugins, no framing.
PAGE_CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

#: Everything that is not a page (JSON, CSV, exports, static files, redirects): a browser
#: that opens one directly may run, load or frame nothing from it.
RESOURCE_CONTENT_SECURITY_POLICY = "default-src 'none'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'"

#: Sent with every response unless the route set the header itself.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class SecurityHeaders:
    """Security headers on every response, whoever made it (pure ASGI).

    HTML gets :data:`PAGE_CONTENT_SECURITY_POLICY`, anything else the stricter
    :data:`RESOURCE_CONTENT_SECURITY_POLICY`. A header the route already set is left as it
    is: a route that needs something stricter (or different) says so itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _with_defaults(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        present = {name.lower(): value for name, value in headers}
        content_type = present.get(b"content-type", b"").lower()
        policy = PAGE_CONTENT_SECURITY_POLICY if content_type.startswith(b"text/html") \
            else RESOURCE_CONTENT_SECURITY_POLICY
        defaults = {"content-security-policy": policy, **SECURITY_HEADERS}
        return headers + [(name.encode(), value.encode()) for name, value in defaults.items()
                          if name.encode() not in present]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._with_defaults(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def outermost_layers(app: FastAPI, inner: ASGIApp) -> ASGIApp:
    """The layers around everything, Starlette's 500 handler included.

    ``add_middleware`` puts a layer *inside* ServerErrorMiddleware, so the response it
    makes for an unexpected exception would leave without a request id or security
    headers; :class:`web.app.ChannelShiftApp` wraps its stack in these instead.
    """
    return SecurityHeaders(RequestContext(inner, metrics=app.state.metrics))
