"""Reporting channel events and conversions in batches (storefront API)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from campaigns.errors import FieldError, ValidationFailed
from campaigns.services.events import (
    MAX_BATCH_EVENTS,
    ConversionIn,
    InteractionIn,
    ingest_events,
)
from web.admission import BULK_BYTES
from web.api.schemas import error_responses, inline_refs
from web.deps import SessionDep, StorefrontCaller
from web.errors import ApiError
from web.jsonshape import Shape, body_problem

router = APIRouter(prefix="/api/v1", tags=["events"])

#: A full batch of 10,000 events is about 3 MiB of JSON; this leaves ample room. The
#: admission layer holds every body to its route's limit, this one's included, before the
#: route runs; the route's own check below is what an app without that layer would need.
MAX_BODY_BYTES = BULK_BYTES


#: What a batch may hold before it is parsed here (checked aside for a large body, see
#: web/jsonshape.py): its events with room for unknown fields (refused by name later),
#: one more event than allowed (refused by count later).
BATCH_SHAPE = Shape(members=64, items=MAX_BATCH_EVENTS + 1, depth=4,
                    values=(MAX_BATCH_EVENTS + 1) * 32)


class EventBatchPublic(BaseModel):
    accepted: int
    duplicates: int
    batch_size: int


def _too_large(detail: str) -> ApiError:
    return ApiError(413, "payload_too_large",
                    f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB "
                    f"({detail}); send at most {MAX_BATCH_EVENTS:,} events per request")


async def batch_body(request: Request) -> bytes:
    """The raw body, refused with 413 once it passes the limit (without reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(f"Content-Length {int(declared):,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large("more than the limit was sent")
        chunks.append(chunk)
    body = b"".join(chunks)
    refusal = await body_problem(body, BATCH_SHAPE)
    if refusal is not None and refusal.invalid_json:
        raise ValidationFailed("the request body is not valid JSON",
                               [FieldError(("body",), refusal.message, "json_invalid")])
    if refusal is not None:
        raise ApiError(413, "payload_too_large",
                       f"an events batch holds at most {MAX_BATCH_EVENTS:,} events of at most "
                       f"{BATCH_SHAPE.members} fields each; this body has {refusal.message}")
    return body


def raw_events(body: bytes) -> list[Any]:
    """The ``events`` list of a batch body: 422 if it is not one, 413 if it is too long."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ValidationFailed("the request body is nested too deeply",
                               [FieldError(("body",), "JSON nested too deeply",
                                           "json_invalid")]) from None
    except ValueError as error:
        # Not JSON, not UTF-8, or a number of more digits than Python reads (4,300).
        raise ValidationFailed("the request body is not valid JSON",
                               [FieldError(("body",), f"not valid JSON: {error}",
                                           "json_invalid")]) from None
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be an object: {\"events\": [...]}",
                               [FieldError(("body",), "must be an object with an 'events' list",
                                           "model_type")])
    unknown = [FieldError((name,), f"unknown field '{name}'; the body has only 'events'",
                          "extra_forbidden") for name in data if name != "events"]
    events = data.get("events")
    if "events" not in data:
        unknown.append(FieldError(("events",), "events is required", "missing"))
    elif not isinstance(events, list):
        unknown.append(FieldError(("events",), "events must be a list of events", "list_type"))
    elif not events:
        unknown.append(FieldError(("events",), "a batch needs at least one event",
                                  "too_short"))
    if unknown:
        raise ValidationFailed("the batch is not valid", unknown, code="invalid_events")
    assert isinstance(events, list)
    if len(events) > MAX_BATCH_EVENTS:
        raise ApiError(413, "too_many_events",
                       f"a batch holds at most {MAX_BATCH_EVENTS:,} events; this one has "
                       f"{len(events):,}: split it into several requests",
                       [{"loc": ["events"], "msg": f"at most {MAX_BATCH_EVENTS:,} events "
                         f"per batch; got {len(events):,}", "type": "too_long"}])
    return events


BatchBody = Annotated[bytes, Depends(batch_body)]


# The body is read and checked by hand (413 before validation, errors located as
# ["events", index, field]), so its schema is declared for the OpenAPI document here.
BATCH_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {
        "type": "object", "required": ["events"], "additionalProperties": False,
        "properties": {"events": {
            "type": "array", "minItems": 1, "maxItems": MAX_BATCH_EVENTS,
            "items": {"oneOf": [inline_refs(InteractionIn.model_json_schema()),
                                inline_refs(ConversionIn.model_json_schema())]}}},
    },
    "example": {"events": [
        {"type": "interaction", "event_id": "desk-20260131-0001", "customer_id": "C1042",
         "channel": "call_centre", "stage": "after_sale",
         "occurred_at": "2026-01-31T09:12:00Z", "kind": "interaction"},
        {"type": "conversion", "event_id": "order-88121", "customer_id": "C1042",
         "occurred_at": "2026-01-31T09:40:00+01:00", "kind": "purchase",
         "revenue_minor": 4999, "margin_minor": 1250, "channel": "web"},
    ]},
}}}}


@router.post(
    "/events",
    response_model=EventBatchPublic,
    summary="Report a batch of channel events and conversions",
    openapi_extra=BATCH_BODY_DOC,
    responses=error_responses(413, descriptions={
        403: "The key is not a storefront key",
        413: f"More than {MAX_BATCH_EVENTS:,} events, or a body over 16 MiB",
        422: "Some event is bad; errors name each one as [\"events\", index, field]. "
             "Nothing was recorded."}),
)
def report_events(request: Request, session: SessionDep, caller: StorefrontCaller,
                  body: BatchBody) -> EventBatchPublic:
    """Record up to 10,000 events in one all-or-nothing batch.

    Body: `{"events": [...]}`. Each event is either

    - an **interaction**: `{"type": "interaction", "event_id", "customer_id", "channel",
      "stage", "occurred_at", "kind" (interaction | complaint | churn | acquisition, default
      interaction), "cost_minor" (default: the channel's cost at the stage), "revenue_minor"}`
    - a **conversion**: `{"type": "conversion", "event_id", "customer_id", "occurred_at",
      "kind" (e.g. purchase, trial_to_paid), "revenue_minor", "margin_minor", "channel"}`

    `event_id` is the sender's id, unique across all events: sending a batch again (after a
    timeout, say) records nothing twice; the response counts those as `duplicates`. Money is
    whole minor units (cents); times are ISO-8601 with a timezone. Unknown customers are
    created. New events earn lottery entries and loyalty points in running campaigns the
    customer is assigned to, and a `trial_to_paid` conversion marks their trials converted.
    """
    events = raw_events(body)
    snapshot = request.app.state.catalog.snapshot(session)
    result = ingest_events(session, raw_events=events, snapshot=snapshot)
    return EventBatchPublic(accepted=result.accepted, duplicates=result.duplicates,
                            batch_size=result.batch_size)
