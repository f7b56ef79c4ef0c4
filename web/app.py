"""The FastAPI application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.types import ASGIApp

from campaigns.db import check_schema_current, get_engine
from campaigns.services.catalog import Catalog
from campaigns.settings import Settings, get_settings
from web.admission import DatabaseGate, Gate, RequestBodies
from web.api import docs, economics, events, health, lotteries, management, reports, storefront
from web.api.direct import DirectDispatch
from web.api.schemas import with_links
from web.deps import ApiKeyCache, AsyncPool, SharedReads
from web.errors import install_error_handlers
from web.observability import install_observability, outermost_layers
from web.scheduler import lifecycle_scheduler
from web.ui import install_ui

logger = logging.getLogger("channelshift")

def _pool_capacity(engine: Engine) -> int:
    pool = engine.pool
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", 0)
    if callable(size):
        return max(1, int(size()) + max(0, int(overflow)))
    return 10


class ChannelShiftApp(FastAPI):
    """FastAPI with the request id, access log and security headers around everything.

    Starlette's ServerErrorMiddleware (the 500 handler) sits outside every
    ``add_middleware`` layer; wrapping the built stack puts these layers outside it too.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return outermost_layers(self, super().build_middleware_stack())

    def openapi(self) -> dict[str, Any]:
        # With links from what an operation creates to what can be done with it next.
        if self.openapi_schema is None:
            self.openapi_schema = with_links(super().openapi())
        return self.openapi_schema


def create_app(*, engine: Engine | None = None, settings: Settings | None = None,
               check_schema: bool = True) -> FastAPI:
    """Build the app. It refuses to start when the database schema is not current."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AsyncPool | SharedReads | None]]:
        if check_schema:
            # Raises SchemaOutOfDate with the command to run; uvicorn then exits non-zero.
            check_schema_current(app.state.engine)
        # Starts and ends campaigns on their schedule, runs due prize draws, pauses spent or
        # harmful campaigns (off with CHANNELSHIFT_SCHEDULER=false, e.g. when cron does it).
        scheduler = lifecycle_scheduler(app.state.engine, settings)
        app.state.scheduler = scheduler
        scheduler.start()
        # Lifespan state (request.state.async_pool), not app state: a pool belongs to the
        # event loop that opened it, and tests run several lifespans of one app at once.
        pool = AsyncPool(app.state.engine, size=settings.database_pool_size) \
            if app.state.engine.dialect.name == "postgresql" else None
        if pool is not None:
            await pool.open()
        # Everything imported and built so far lives as long as the process: moved out of
        # the collector's reach, a full collection under load no longer walks the few
        # hundred thousand objects of pandas, SciPy and statsmodels (a pause of tens of
        # milliseconds for every request in flight).
        if not gc.get_freeze_count():  # once per process (tests start many lifespans)
            gc.collect()
            gc.freeze()
        try:
            yield {"async_pool": pool, "shared_reads": SharedReads()}
        finally:
            await scheduler.stop()
            if pool is not None:
                await pool.close()

    app = ChannelShiftApp(
        title="ChannelShift",
        version="0.1.0",
        summary="Incentive campaigns that move customers to the right channel, "
        "with randomized proof of what they moved.",
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine or get_engine(settings)
    app.state.settings = settings
    app.state.catalog = Catalog(refresh_interval=settings.config_refresh_seconds)
    app.state.api_key_cache = ApiKeyCache(ttl_seconds=10.0 if settings.config_refresh_seconds
                                          else 0.0)
    install_error_handlers(app)
    # The storefront's routes first: a request is matched against the routes in order,
    # and these are the busiest.
    app.include_router(storefront.router)
    install_observability(app)
    # ChannelShiftApp's own layers, then the 500 handler, then these: each added layer
    # goes around those added before it. Innermost, the storefront's direct routes are
    # answered without FastAPI's router; around them the gate and the body's limits.
    app.add_middleware(DirectDispatch, routes=storefront.router.routes,
                       handlers=app.exception_handlers)
    # Outside the gate: a request's key is checked and its body read before it may wait
    # for the database (web/admission.py).
    app.state.database_gate = Gate(_pool_capacity(app.state.engine))
    app.add_middleware(DatabaseGate, gate=app.state.database_gate)
    app.add_middleware(RequestBodies, gate=app.state.database_gate,
                       handlers=app.exception_handlers,
                       deadline_seconds=settings.body_timeout_seconds)
    app.mount("/static", StaticFiles(directory=docs.STATIC_DIR), name="static")
    app.include_router(docs.router)
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(lotteries.router)
    # before management: /channels/economics must not be taken for /channels/{key}
    app.include_router(economics.router)
    app.include_router(management.router)
    app.include_router(reports.router)
    install_ui(app)
    return app
