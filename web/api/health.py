"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from campaigns.db import check_schema_current
from campaigns.errors import SchemaOutOfDate

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database is reachable and its schema is current",
    responses={503: {"description": "Not ready; the body says why"}},
)
def readyz(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    try:
        check_schema_current(engine)
    except SchemaOutOfDate as error:
        return JSONResponse({"status": "not_ready", "reason": error.message}, status_code=503,
                            headers={"Retry-After": "5"})
    except SQLAlchemyError as error:
        return JSONResponse(
            {"status": "not_ready", "reason": f"database unreachable: {type(error).__name__}"},
            status_code=503, headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ready", "database": engine.dialect.name})
