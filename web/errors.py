"""Mapping domain errors to HTTP responses, once.

Every error body has the same shape: ``{"code", "message", "errors": [{loc, msg, type}]}``.
Unexpected exceptions become a 500 that carries the request id and is logged with its
traceback; nothing is swallowed into a vague 400. A database that cannot be reached (down,
restarting, connection cut, pool exhausted) is not a bug in the request: it is a 503 with
``Retry-After``, and the client retries (with the same Idempotency-Key where it sent one).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
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


#: What a 503 for an unreachable database tells clients to wait before retrying.
DATABASE_RETRY_AFTER_SECONDS = 2
DATABASE_UNAVAILABLE_MESSAGE = "the database is unavailable right now; try again in a few seconds"
CONFLICT_MESSAGE = ("the request collided with concurrent requests and was undone; "
                    "send it again")


class DatabaseUnavailable(StarletteHTTPException):
    """The database could not be reached while serving the request: 503 with Retry-After.

    The session dependency raises it (from the driver's error, already logged) when the
    database fails under a request. It is an HTTP exception so that the marketer UI's pages,
    which render HTTP exceptions with their status, answer 503 too; the API answers with
    the usual JSON error body. Whether a write that failed this way took effect is unknown
    to the server: a redemption retried with the same Idempotency-Key has exactly one.
    """

    def __init__(self, *, conflict: bool = False) -> None:
        #: PostgreSQL undid the request's work to break a deadlock or a serialization
        #: failure: the database is fine, and sending the request again will work.
        self.conflict = conflict
        super().__init__(503, CONFLICT_MESSAGE if conflict else DATABASE_UNAVAILABLE_MESSAGE,
                         headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})

    @property
    def code(self) -> str:
        return "concurrency_conflict" if self.conflict else "database_unavailable"

    @classmethod
    def from_error(cls, error: BaseException) -> DatabaseUnavailable:
        """The answer to a database error :func:`is_database_unavailable` admits."""
        if isinstance(error, DatabaseUnavailable):
            return error
        return cls(conflict=is_concurrency_conflict(error))


#: Errors that mean "the database is not reachable or not answering", not "bad request".
#: OperationalError covers refused and timed-out connections, connections cut mid-query
#: and server shutdown; the pool's TimeoutError means every connection is stuck.
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.TimeoutError, psycopg.OperationalError)
#: SQLite's OperationalError also means "too many SQL variables" and other bugs; only these
#: say the file cannot be used right now.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error",
                       "database or disk is full")


def is_database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) says the database is unreachable."""
    if isinstance(error, DatabaseUnavailable):
        return True
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        sqlite_error = getattr(seen, "orig", None) if isinstance(seen, sa_exc.DBAPIError) \
            else seen
        if isinstance(sqlite_error, sqlite3.OperationalError):
            return any(text in str(sqlite_error).lower() for text in _SQLITE_UNAVAILABLE)
        if isinstance(seen, _UNAVAILABLE):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sa_exc.PendingRollbackError) and seen.code == "8s2b":
            # The connection was lost mid-transaction, and the transaction is used again:
            # a UI page's commit after its page already showed the disconnect.
            return True
        seen = seen.__cause__
    return False


def is_concurrency_conflict(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is PostgreSQL undoing a transaction to
    break a deadlock or a serialization failure: the request may simply be sent again."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        # SQLSTATE class 40, "transaction rollback": 40001 serialization failure, 40P01
        # deadlock detected.
        if str(getattr(getattr(seen, "orig", None) or seen, "sqlstate", "") or "") \
                .startswith("40"):
            return True
        seen = seen.__cause__
    return False


def log_database_unavailable(request: Request | None, error: BaseException) -> None:
    """One warning line, no traceback: an outage makes many of these and none is a bug."""
    # The driver's first line only: SQLAlchemy's full text carries the statement's
    # parameters, which may hold coupon codes.
    original = getattr(error, "orig", None) or error
    first_line = (str(original).strip().splitlines() or [""])[0][:200]
    what = "concurrency conflict" if is_concurrency_conflict(error) else "database unavailable"
    logger.warning("%s: %s: %s", what, type(original).__name__, first_line,
                   extra={"request_id": getattr(request.state, "request_id", None)
                          if request is not None else None,
                          "route": str(getattr(request.scope.get("route"), "path", None)
                                       or "unmatched") if request is not None else None})


def status_for(error: domain.ChannelShiftError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 400


def _printable(value: Any) -> Any:
    """``value`` with every text in it encodable as UTF-8: a message that quotes the client's
    input may hold a lone surrogate (``\\ud800``), which a JSON answer cannot carry."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    return value


#: The most problems one error body lists; how many more there were is ``more_errors``.
MAX_LISTED_ERRORS = 20


def error_body(code: str, message: str, errors: list[dict[str, Any]] | None = None,
               request: Request | None = None) -> dict[str, Any]:
    """Every error answer's body. A body with thousands of bad fields gets an answer of the
    first :data:`MAX_LISTED_ERRORS`, the count of the others, and a message saying so."""
    errors = errors or []
    message = _printable(message)
    body: dict[str, Any] = {"code": code, "message": message,
                            "errors": [_printable(item) for item in errors[:MAX_LISTED_ERRORS]]}
    if len(errors) > MAX_LISTED_ERRORS:
        more = len(errors) - MAX_LISTED_ERRORS
        body["more_errors"] = more
        body["message"] = f"{message} (and {more} more problems not listed)"
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
    fields = ", ".join(".".join(e["loc"]) for e in errors[:MAX_LISTED_ERRORS])
    return JSONResponse(error_body("validation_failed", f"invalid request: {fields}", errors,
                                   request), status_code=422)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        error.status_code, "http_error")
    return JSONResponse(error_body(code, str(error.detail), None, request),
                        status_code=error.status_code, headers=getattr(error, "headers", None))


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    if not is_database_unavailable(error):
        return await _unexpected(request, error)
    if not isinstance(error, DatabaseUnavailable):
        log_database_unavailable(request, error)
    answer = DatabaseUnavailable.from_error(error)
    return JSONResponse(error_body(answer.code, str(answer.detail), None, request),
                        status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


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
    # DBAPIError: only those whose connection was invalidated; the rest go on to a 500.
    for unavailable in (DatabaseUnavailable, sa_exc.DBAPIError, *_UNAVAILABLE):
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
