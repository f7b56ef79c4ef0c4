"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from campaigns.db import check_schema_current, get_engine
from web.api import health

logger = logging.getLogger("channelshift")


def create_app(*, engine: Engine | None = None, check_schema: bool = True) -> FastAPI:
    """Build the app. It refuses to start when the database schema is not current."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if check_schema:
            # Raises SchemaOutOfDate with the command to run; uvicorn then exits non-zero.
            check_schema_current(app.state.engine)
        yield

    app = FastAPI(
        title="ChannelShift",
        version="0.1.0",
        summary="Incentive campaigns that move customers to the right channel, "
        "with randomized proof of what they moved.",
        lifespan=lifespan,
    )
    app.state.engine = engine or get_engine()
    app.include_router(health.router)
    return app
