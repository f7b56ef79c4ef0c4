"""Mapping domain errors to HTTP responses, once.

Every error body has the same shape: ``{"code", "message", "errors": [{loc, msg, type}]}``.
Unexpected exceptions become a 500 that carries the request id and is logged with its
traceback; nothing is swallowed into a vague 400.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from campaigns import errors as domain

logger = logging.getLogger("channelshift.errors")

STATUS_BY_ERROR: list[tuple[type[domain.ChannelShiftError], int]] = [
    (domain.NotFound, 404),
    (domain.BudgetExhausted, 409),
    (domain.CustomerLimitReached, 409),
    (domain.CodeAlreadyRedeemed, 409),
    (domain.InvalidTransition, 409),
    (domain.Conflict, 409),
    (domain.ValidationFailed, 422),
    (domain.SchemaOutOfDate, 503),
]


class ApiError(Exception):
    """An HTTP-level error raised by the web layer itself (auth, rate limits, bad headers)."""

    def __init__(self, status_code: int, code: str, message: str,
                 errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}


def status_for(error: domain.ChannelShiftError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 400


def error_body(code: str, message: str, errors: list[dict[str, Any]] | None = None,
               request: Request | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "errors": errors or []}
    request_id = getattr(request.state, "request_id", None) if request else None
    if request_id:
        body["request_id"] = request_id
    return body


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, domain.ChannelShiftError)
    headers = {"Retry-After": "5"} if isinstance(error, domain.SchemaOutOfDate) else None
    return JSONResponse(
        error_body(error.code, error.message, [e.as_dict() for e in error.errors], request),
        status_code=status_for(error), headers=headers,
    )


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return JSONResponse(error_body(error.code, error.message, error.errors, request),
                        status_code=error.status_code, headers=error.headers)


async def _request_validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = []
    for item in error.errors():
        msg = item.get("msg", "invalid")
        if item.get("type") == "missing":
            msg = "this field is required"
        elif item.get("type") == "extra_forbidden":
            msg = "unknown field"
        errors.append({"loc": [str(p) for p in item.get("loc", ())],
                       "msg": msg.removeprefix("Value error, "), "type": item.get("type")})
    fields = ", ".join(".".join(e["loc"]) for e in errors)
    return JSONResponse(error_body("validation_failed", f"invalid request: {fields}", errors,
                                   request), status_code=422)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        error.status_code, "http_error")
    return JSONResponse(error_body(code, str(error.detail), None, request),
                        status_code=error.status_code, headers=getattr(error, "headers", None))


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    logger.exception("unhandled error", extra={"request_id": request_id,
                                               "path": request.url.path})
    return JSONResponse(error_body("internal_error",
                                   "internal error; quote the request id when reporting it",
                                   None, request), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(domain.ChannelShiftError, _domain_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
