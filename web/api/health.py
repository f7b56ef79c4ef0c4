"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from campaigns.db import check_schema_current
from campaigns.errors import SchemaOutOfDate
from web.errors import DATABASE_RETRY_AFTER_SECONDS, error_body

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database is reachable, its schema is current and requests are "
    "not queueing for it",
    responses={503: {"description": "Not ready; the body says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    # Asked first, on the event loop: a worker whose requests queue for the database says
    # so at once, whether or not a thread is free to read the schema.
    gate = getattr(request.app.state, "database_gate", None)
    saturation = gate.saturation() if gate is not None else None
    if saturation is not None:
        return _not_ready(request, "saturated", saturation, retry_after=1)
    engine = request.app.state.engine
    try:
        await run_in_threadpool(check_schema_current, engine)
    except SchemaOutOfDate as error:
        return _not_ready(request, error.code, error.message, retry_after=5)
    except SQLAlchemyError as error:
        # Unreachable, restarting, or every pooled connection busy: a load balancer stops
        # sending traffic here until the database answers again.
        return _not_ready(request, "database_unavailable",
                          f"database unreachable: {type(error).__name__}",
                          retry_after=DATABASE_RETRY_AFTER_SECONDS)
    return JSONResponse({"status": "ready", "database": engine.dialect.name})


def _not_ready(request: Request, code: str, reason: str, *, retry_after: int) -> JSONResponse:
    """A 503 whose body is the API's usual error body plus the probe's status and reason."""
    return JSONResponse({"status": "not_ready", "reason": reason,
                         **error_body(code, reason, None, request)},
                        status_code=503, headers={"Retry-After": str(retry_after)})
