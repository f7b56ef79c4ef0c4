"""Campaigns: create, edit, arms, weights, the lifecycle and the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response
from sqlmodel import col, select

from campaigns.models import AuditLog, Campaign, CampaignStatus
from campaigns.schemas import ArmCreate, ArmWeights, CampaignCreate, CampaignUpdate
from campaigns.services.campaigns import (
    add_arm,
    create_campaign,
    delete_campaign,
    remove_arm,
    set_weights,
    transition,
    update_campaign,
)
from campaigns.services.coupons import arm_in_campaign
from campaigns.services.incentives import get_incentive
from web.api.management.common import CurrentCampaign, PageDep, errors, paginate
from web.api.management.present import arm_public, campaign_public, campaigns_public
from web.api.schemas import (
    MAX_ID,
    ArmPublic,
    AuditEntryPublic,
    CampaignPublic,
    Page,
    TransitionRequest,
)
from web.deps import ManagementCaller, SessionDep

router = APIRouter(tags=["campaigns"])

ArmIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The arm's id.")]

CAMPAIGN_CREATE_EXAMPLES = {
    "with_arms": {
        "summary": "A draft with a control group and an inline coupon arm",
        "value": {
            "name": "Spring self-service push", "goal_id": 1,
            "starts_at": "2026-04-01T00:00:00Z", "ends_at": "2026-05-01T00:00:00Z",
            "budget_minor": 500000, "per_customer_limit": 1, "priority": 10,
            "arms": [
                {"name": "control", "weight": 50, "is_control": True},
                {"name": "web coupon", "weight": 50, "incentive": {
                    "name": "10% web coupon", "type": "coupon",
                    "config": {"mode": "batch", "prefix": "WEB-",
                               "benefit": {"kind": "percent", "percent_bp": 1000}}}},
            ]}},
    "existing_incentive": {
        "summary": "Arms that reuse an existing incentive",
        "value": {"name": "Autumn push", "goal_id": 1, "budget_minor": 100000,
                  "arms": [{"name": "control", "weight": 20, "is_control": True},
                           {"name": "discount", "weight": 80, "incentive_id": 7}]}},
}


@router.get("/campaigns", response_model=Page[CampaignPublic], summary="List campaigns",
            description="Campaigns in creation order, each with its arms; optionally only "
            "those in one status.", responses=errors(422))
def list_campaigns(
    caller: ManagementCaller, session: SessionDep, page: PageDep,
    status: Annotated[CampaignStatus | None, Query(description="Only this status.")] = None,
) -> Page[CampaignPublic]:
    statement = select(Campaign).order_by(col(Campaign.id))
    if status is not None:
        statement = statement.where(Campaign.status == status.value)
    rows, total = paginate(session, statement, page)
    return Page(items=campaigns_public(session, rows), total=total)


@router.post("/campaigns", response_model=CampaignPublic, status_code=201,
             summary="Create a draft campaign with its arms",
             description="Arms may define their incentive inline (`incentive`) or reuse one "
             "(`incentive_id`). Every campaign needs a control arm unless it opts out with a "
             "reason; that, the weights and the schedule are checked when it leaves draft.",
             responses=errors(404, 409, body=True))
def create_campaign_route(
    caller: ManagementCaller, session: SessionDep,
    campaign_create: Annotated[CampaignCreate, Body(openapi_examples=CAMPAIGN_CREATE_EXAMPLES)],
) -> CampaignPublic:
    campaign = create_campaign(session, campaign_create=campaign_create, actor=caller.actor)
    return campaign_public(session, campaign)


@router.get("/campaigns/{campaign_id}", response_model=CampaignPublic,
            summary="Get a campaign with its arms, weights, incentives and budget",
            responses=errors(404))
def get_campaign_route(caller: ManagementCaller, session: SessionDep,
                       campaign: CurrentCampaign) -> CampaignPublic:
    return campaign_public(session, campaign)


@router.patch("/campaigns/{campaign_id}", response_model=CampaignPublic,
              summary="Change a campaign",
              description="Only the fields sent change. A running or paused campaign may "
              "change only its name, description, end time, budget and priority (409 names "
              "the others); an ended one nothing.", responses=errors(404, 409, body=True))
def update_campaign_route(
    caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
    campaign_update: Annotated[CampaignUpdate, Body(openapi_examples={
        "budget": {"summary": "Raise the budget", "value": {"budget_minor": 750000}},
        "schedule": {"summary": "Move the schedule",
                     "value": {"starts_at": "2026-04-15T00:00:00Z",
                               "ends_at": "2026-05-15T00:00:00Z"}},
    })],
) -> CampaignPublic:
    campaign = update_campaign(session, campaign=campaign, campaign_update=campaign_update,
                               actor=caller.actor)
    return campaign_public(session, campaign)


@router.delete("/campaigns/{campaign_id}", status_code=204, response_class=Response,
               response_model=None, summary="Delete a draft campaign",
               description="Deletes the campaign with its arms and generated codes. Only "
               "drafts (409 otherwise): a campaign that went live is ended, never deleted.",
               responses=errors(404, 409))
def delete_campaign_route(caller: ManagementCaller, session: SessionDep,
                          campaign: CurrentCampaign) -> Response:
    delete_campaign(session, campaign=campaign, actor=caller.actor)
    return Response(status_code=204)


@router.post("/campaigns/{campaign_id}/arms", response_model=ArmPublic, status_code=201,
             summary="Add an arm to a draft campaign",
             description="Only while the campaign is a draft (409 otherwise). The weights "
             "must add up to 100 again before the campaign is scheduled.",
             responses=errors(404, 409, body=True))
def add_arm_route(
    caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
    arm_create: Annotated[ArmCreate, Body(openapi_examples={
        "inline": {"summary": "An arm with its own incentive",
                   "value": {"name": "five percent", "weight": 20, "incentive": {
                       "name": "5% off", "type": "percent_discount",
                       "config": {"percent_bp": 500}}}},
        "control": {"summary": "A control arm", "value": {"name": "control", "weight": 20,
                                                          "is_control": True}},
    })],
) -> ArmPublic:
    arm = add_arm(session, campaign=campaign, arm_create=arm_create, actor=caller.actor)
    incentive = get_incentive(session, arm.incentive_id) if arm.incentive_id else None
    return arm_public(arm, incentive, currency=campaign.currency)


@router.delete("/campaigns/{campaign_id}/arms/{arm_id}", status_code=204,
               response_class=Response, response_model=None,
               summary="Remove an arm from a draft campaign", responses=errors(404, 409))
def remove_arm_route(caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
                     arm_id: ArmIdPath) -> Response:
    arm = arm_in_campaign(session, campaign=campaign, arm_id=arm_id)
    remove_arm(session, campaign=campaign, arm=arm, actor=caller.actor)
    return Response(status_code=204)


@router.put("/campaigns/{campaign_id}/weights", response_model=CampaignPublic,
            summary="Set the arm weights",
            description="Name every arm; weights add up to 100. Before anyone is exposed the "
            "weights are replaced; afterwards a new allocation period starts: exposed "
            "customers keep their arm, newcomers are split by the new weights.",
            responses=errors(404, 409, body=True))
def set_weights_route(
    caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
    weights: Annotated[ArmWeights, Body(openapi_examples={
        "shift": {"summary": "Send more customers to the coupon",
                  "value": {"weights": {"control": 20, "web coupon": 80}}},
    })],
) -> CampaignPublic:
    campaign = set_weights(session, campaign=campaign, weights=weights, actor=caller.actor)
    return campaign_public(session, campaign)


@router.post("/campaigns/{campaign_id}/transitions", response_model=CampaignPublic,
             summary="Move a campaign through its lifecycle",
             description="draft -> scheduled -> running <-> paused -> ended (scheduled may go "
             "back to draft or be ended). Scheduling and starting run every readiness check; "
             "a refusal is a 409 whose `errors` list each reason.",
             responses=errors(404, 409, body=True))
def transition_route(
    caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
    request: Annotated[TransitionRequest, Body(openapi_examples={
        "schedule": {"summary": "Schedule a ready draft", "value": {"to": "scheduled"}},
        "pause": {"summary": "Pause with a reason",
                  "value": {"to": "paused", "reason": "complaints rising"}},
    })],
) -> CampaignPublic:
    campaign = transition(session, campaign=campaign, target=request.to, actor=caller.actor,
                          reason=request.reason)
    return campaign_public(session, campaign)


@router.get("/campaigns/{campaign_id}/audit", response_model=Page[AuditEntryPublic],
            summary="The campaign's audit trail",
            description="Every recorded change to the campaign, oldest first: who, what, "
            "when, and the values before and after.", responses=errors(404))
def campaign_audit(caller: ManagementCaller, session: SessionDep, campaign: CurrentCampaign,
                   page: PageDep) -> Page[AuditEntryPublic]:
    statement = (select(AuditLog)
                 .where(AuditLog.entity_type == "campaign", AuditLog.entity_id == campaign.id)
                 .order_by(col(AuditLog.id)))
    rows, total = paginate(session, statement, page)
    return Page(items=[AuditEntryPublic.model_validate(row, from_attributes=True)
                       for row in rows], total=total)
