"""What every management route shares: paging, the current campaign, documented errors, CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import func
from sqlmodel import Session, select

from campaigns.models import Campaign
from campaigns.services.campaigns import get_campaign
from web.api.schemas import MAX_ID, error_responses
from web.deps import ManagementCaller, SessionDep, get_session, read_session

T = TypeVar("T")

#: Largest page a list endpoint returns.
MAX_LIMIT = 500
DEFAULT_LIMIT = 50

#: A session that stays open until a streamed response has been sent (the request's own
#: session is committed and closed when the route returns, before the body streams).
StreamSessionDep = Annotated[Session, Depends(get_session, scope="request")]


def streamed(session: Session, rows: Callable[[Session], Iterator[T]]) -> Iterator[T]:
    """``rows(view)`` for a streamed export, read in a read view opened as the body starts.

    An export of a large campaign streams for as long as the client reads. On the stream's
    own session it would hold, on SQLite, the write lock that session's transaction took,
    and offers, redemptions and events would wait for the download;
    :func:`web.deps.read_view` holds nothing a writer waits for, and the whole file is one
    state of the database. Opened lazily: while the route runs, the request's own session
    still holds that lock.
    """
    with read_session(session) as view:
        yield from rows(view)


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT,
                                description=f"Rows per page, at most {MAX_LIMIT}.")]
    = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip.")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


def paginate(session: Session, statement: Any, page: PageParams) -> tuple[list[Any], int]:
    """One page of the select ``statement``'s rows (it must be ordered) and their total."""
    total = session.exec(
        select(func.count()).select_from(statement.order_by(None).subquery())
    ).one()
    rows = session.exec(statement.limit(page.limit).offset(page.offset)).all()
    return list(rows), int(total)


def current_campaign(
    campaign_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The campaign's id.")],
    session: SessionDep, caller: ManagementCaller,
) -> Campaign:
    """The campaign named in the path (404 if there is none), for a management caller only.

    Depending on the caller first means an unauthenticated request learns nothing about
    which campaigns exist.
    """
    return get_campaign(session, campaign_id)


CurrentCampaign = Annotated[Campaign, Depends(current_campaign)]


# --- documented errors ------------------------------------------------------------------


def errors(*statuses: int, body: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a management route: auth errors, 422, 503 and ``statuses``.

    Every management route takes a parameter or a body, so every one can answer 422; it is
    documented with the body the API really sends instead of FastAPI's default shape.
    ``body=True`` for routes that read a JSON body (they can also answer 400 and 413).
    """
    return error_responses(*statuses, body=body, descriptions={
        403: "An API key of another scope (management routes need a management key)"})


# --- CSV ----------------------------------------------------------------------------------


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_value(value: object) -> object:
    """Datetimes as ISO 8601 UTC with ``Z``, None as an empty cell, the rest as it is.

    Text that a spreadsheet would run as a formula (a marketer-typed arm name such as
    ``=HYPERLINK(...)``) is prefixed with a quote so it opens as plain text.
    """
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[object]], *,
              rows_per_chunk: int = 1_000) -> Iterator[str]:
    """CSV text in chunks of ``rows_per_chunk`` rows: memory stays flat however many rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    pending = 0
    for row in rows:
        writer.writerow([csv_value(value) for value in row])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate(0)
            pending = 0
    yield buffer.getvalue()


def csv_response(header: Sequence[str], rows: Iterable[Sequence[object]], *,
                 filename: str) -> StreamingResponse:
    return StreamingResponse(
        csv_lines(header, rows), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "no-store"})
