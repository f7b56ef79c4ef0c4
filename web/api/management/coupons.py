"""Coupon code batches and the CSV exports marketers hand to e-mail and SMS tools."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from fastapi.responses import StreamingResponse

from campaigns.services.coupons import (
    MAX_BATCH,
    arm_in_campaign,
    audience_rows,
    coupon_code_rows,
    generate_coupon_batch,
)
from web.api.management.common import (
    CurrentCampaign,
    StreamSessionDep,
    csv_response,
    errors,
    streamed,
)
from web.api.schemas import MAX_ID, CouponBatchCreate, CouponBatchPublic
from web.deps import ManagementCaller, SessionDep

router = APIRouter(tags=["coupon codes and exports"])

CODES_HEADER = ("code", "arm", "customer_id", "issued_at", "uses")
AUDIENCE_HEADER = ("external_id", "arm", "is_control", "first_exposed_at", "code")


def _csv_docs(example: str, what: str) -> dict[int | str, dict[str, object]]:
    return {200: {"description": what, "content": {"text/csv": {
        "schema": {"type": "string"}, "example": example}}}, **errors(404)}


@router.post(
    "/campaigns/{campaign_id}/arms/{arm_id}/coupon-batches", response_model=CouponBatchPublic,
    status_code=201, summary="Generate a batch of unique coupon codes for an arm",
    description=f"Generates `count` (1 to {MAX_BATCH:,}) new single-use codes for the arm's "
    "coupon, which must be in batch mode (409 otherwise). Codes follow the coupon's prefix, "
    "length and look-alike-free charset and are unique across all campaigns. They are not "
    "issued yet: a customer gets one on first exposure, which is also when its expiry "
    "starts.", responses=errors(404, 409, body=True))
def create_coupon_batch(
    caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
    arm_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The arm's id.")],
    batch: Annotated[CouponBatchCreate, Body(openapi_examples={
        "mailing": {"summary": "Codes for a mailing of 50,000", "value": {"count": 50000}},
    })],
) -> CouponBatchPublic:
    arm = arm_in_campaign(session, campaign=campaign, arm_id=arm_id)
    total = generate_coupon_batch(session, campaign=campaign, arm=arm, count=batch.count,
                                  actor=caller.actor)
    return CouponBatchPublic(generated=batch.count, total_codes=total)


@router.get(
    "/campaigns/{campaign_id}/coupon-codes.csv", response_class=StreamingResponse,
    response_model=None, summary="Download the campaign's coupon codes as CSV",
    description="One row per code in generation order: the code, its arm, the customer it "
    "was issued to (external id, empty while unissued), when, and how often it was used. "
    "Streamed, so any number of codes can be downloaded.",
    responses=_csv_docs("code,arm,customer_id,issued_at,uses\r\n"
                        "WEB-K7M2Q9XHTA,web coupon,C000042,2026-04-02T10:15:00Z,1\r\n"
                        "WEB-3NP8RVW4ZC,web coupon,,,0\r\n", "The codes, as CSV"))
def export_coupon_codes(caller: ManagementCaller, campaign: CurrentCampaign,
                        stream_session: StreamSessionDep) -> StreamingResponse:
    rows = streamed(stream_session, lambda view: coupon_code_rows(view, campaign=campaign))
    return csv_response(CODES_HEADER, rows, filename=f"campaign-{campaign.id}-coupon-codes.csv")


@router.get(
    "/campaigns/{campaign_id}/audience.csv", response_class=StreamingResponse,
    response_model=None, summary="Download the assigned customers as CSV",
    description="One row per customer assigned in the campaign, in exposure order: external "
    "id, arm, whether it is the control arm, first exposure time and the coupon code issued "
    "to them (empty if none). For e-mail and SMS tools; streamed.",
    responses=_csv_docs("external_id,arm,is_control,first_exposed_at,code\r\n"
                        "C000042,web coupon,false,2026-04-02T10:15:00Z,WEB-K7M2Q9XHTA\r\n"
                        "C000043,control,true,2026-04-02T10:16:30Z,\r\n", "The audience, as CSV"))
def export_audience(caller: ManagementCaller, campaign: CurrentCampaign,
                    stream_session: StreamSessionDep) -> StreamingResponse:
    rows = streamed(stream_session, lambda view: audience_rows(view, campaign=campaign))
    return csv_response(AUDIENCE_HEADER, rows, filename=f"campaign-{campaign.id}-audience.csv")
