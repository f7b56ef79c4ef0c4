"""Prize draws (management scope): draw with a recorded seed, read and verify a draw."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from campaigns.schemas import InputModel
from campaigns.services.lotteries import draw_result, run_draw, verify_draw
from campaigns.types import utcnow
from web.api.schemas import MAX_ID, error_responses
from web.deps import ManagementCaller, SessionDep

router = APIRouter(prefix="/api/v1/campaigns/{campaign_id}/draws", tags=["lotteries"])

CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="The campaign's id.")]
DrawId = Annotated[int, Path(ge=1, le=MAX_ID, description="The draw's id.")]


class DrawIn(InputModel):
    seed: Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[0-9a-fA-F]+$")] | None = (
        None)

    model_config = {"json_schema_extra": {"examples": [{}, {"seed": "9f2c4e0a7b1d3c5e"}]}}


class WinnerPublic(BaseModel):
    customer_id: str = Field(description="The winner's id in your systems.")
    prize: str = Field(description="Key of the prize won.")
    value_minor: int


class DrawPublic(BaseModel):
    """A draw as recorded: re-running it from ``seed`` over the same entries gives the same
    winners."""

    draw_id: int
    campaign_id: int
    seed: str
    algorithm: str
    entries_digest: str = Field(description="SHA-256 of the entries the draw was made from.")
    drawn_at: datetime
    drawn_by: str
    winners: list[WinnerPublic]


class DrawVerificationPublic(BaseModel):
    draw_id: int
    verified: bool = Field(description="The re-run gave the recorded winners from the "
                           "recorded entries.")
    entries_digest: str
    winners: int


DRAW_EXAMPLE = {"draw_id": 3, "campaign_id": 1, "seed": "9f2c4e0a7b1d3c5e",
                "algorithm": "weighted-mt19937-v1", "entries_digest": "5d41402abc4b2a76...",
                "drawn_at": "2026-11-22T10:00:00+00:00", "drawn_by": "api_key:2:ops",
                "winners": [{"customer_id": "C000042", "prize": "tablet", "value_minor": 29900}]}


@router.post(
    "", status_code=201, response_model=DrawPublic, summary="Draw winners now",
    description="Draws winners without replacement (at most one prize per customer per "
    "draw), weighted by entries, against the remaining prize inventory. The seed (given or "
    "generated) is recorded so the draw can be re-run and verified. Never more winners than "
    "prizes, even with concurrent draws. A lottery whose configuration announces `draw_at` "
    "cannot be drawn before that time (409 `draw_not_due`, naming it); the server draws it "
    "itself when it comes, from the entries made up to it.",
    responses={201: {"content": {"application/json": {"example": DRAW_EXAMPLE}}},
               **error_responses(404, 409, body=True, descriptions={
                   404: "Unknown campaign",
                   409: "Not a prize-draw campaign, every prize is awarded, or the "
                        "announced draw date has not come (`draw_not_due`)"})},
)
def post_draw(session: SessionDep, caller: ManagementCaller, campaign_id: CampaignId,
              data: DrawIn | None = None) -> dict[str, Any]:
    draw = run_draw(session, campaign_id=campaign_id, actor=caller.actor,
                    seed=data.seed if data else None, now=utcnow())
    assert draw.id is not None
    return draw_result(session, campaign_id=campaign_id, draw_id=draw.id)


@router.get("/{draw_id}", response_model=DrawPublic,
            summary="A draw: seed, entries digest and winners",
            responses={200: {"content": {"application/json": {"example": DRAW_EXAMPLE}}},
                       **error_responses(404, descriptions={404: "Unknown draw"})})
def get_draw(session: SessionDep, caller: ManagementCaller, campaign_id: CampaignId,
             draw_id: DrawId) -> dict[str, Any]:
    return draw_result(session, campaign_id=campaign_id, draw_id=draw_id)


@router.post("/{draw_id}/verify", response_model=DrawVerificationPublic,
             summary="Re-run a draw from its seed and compare",
             responses={200: {"content": {"application/json": {"example": {
                 "draw_id": 3, "verified": True, "entries_digest": "5d41402abc4b2a76...",
                 "winners": 1}}}}, **error_responses(404, descriptions={404: "Unknown draw"})})
def post_verify(session: SessionDep, caller: ManagementCaller, campaign_id: CampaignId,
                draw_id: DrawId) -> dict[str, Any]:
    return verify_draw(session, campaign_id=campaign_id, draw_id=draw_id)
