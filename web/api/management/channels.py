"""Channels, stages and the cost to serve one interaction on a channel at a stage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from sqlmodel import col, select

from campaigns.models import Channel, ChannelCost, Stage
from campaigns.schemas import ChannelCostSet, ChannelCreate, ChannelUpdate, StageCreate
from campaigns.services.channels import (
    channel_by_key,
    create_channel,
    create_stage,
    set_channel_cost,
    stage_by_key,
    update_channel,
)
from web.api.management.common import PageDep, errors, paginate
from web.api.management.present import channel_cost_public
from web.api.schemas import ChannelCostPublic, ChannelPublic, Page, StagePublic
from web.deps import ManagementCaller, SessionDep

router = APIRouter(tags=["channels"])

ChannelKeyPath = Annotated[str, Path(min_length=1, max_length=40,
                                     description="The channel's key, e.g. call_centre.")]


@router.get("/channels", response_model=Page[ChannelPublic], summary="List channels",
            description="Channels ordered by key.", responses=errors())
def list_channels(caller: ManagementCaller, session: SessionDep, page: PageDep
                  ) -> Page[ChannelPublic]:
    rows, total = paginate(session, select(Channel).order_by(col(Channel.key)), page)
    return Page(items=[ChannelPublic.model_validate(row, from_attributes=True) for row in rows],
                total=total)


@router.post("/channels", response_model=ChannelPublic, status_code=201,
             summary="Create a channel", responses=errors(409, body=True))
def create_channel_route(
    caller: ManagementCaller, session: SessionDep,
    channel_create: Annotated[ChannelCreate, Body(openapi_examples={
        "web": {"summary": "The web shop",
                "value": {"key": "web", "name": "Web shop", "kind": "web"}},
        "call_centre": {"summary": "A call centre",
                        "value": {"key": "call_centre", "name": "Call centre",
                                  "kind": "call_centre"}},
    })],
) -> ChannelPublic:
    channel = create_channel(session, channel_create=channel_create, actor=caller.actor)
    return ChannelPublic.model_validate(channel, from_attributes=True)


@router.get("/channels/{key}", response_model=ChannelPublic, summary="Get a channel by key",
            responses=errors(404))
def get_channel(caller: ManagementCaller, session: SessionDep, key: ChannelKeyPath
                ) -> ChannelPublic:
    return ChannelPublic.model_validate(channel_by_key(session, key, field="key"),
                                        from_attributes=True)


@router.patch("/channels/{key}", response_model=ChannelPublic,
              summary="Rename, re-kind, or (de)activate a channel",
              description="Only the fields sent change; the key never changes.",
              responses=errors(404, body=True))
def update_channel_route(
    caller: ManagementCaller, session: SessionDep, key: ChannelKeyPath,
    channel_update: Annotated[ChannelUpdate, Body(openapi_examples={
        "deactivate": {"summary": "Stop using a channel", "value": {"active": False}},
        "rename": {"summary": "Rename", "value": {"name": "Web shop (new)"}},
    })],
) -> ChannelPublic:
    channel = channel_by_key(session, key, field="key")
    channel = update_channel(session, channel=channel, channel_update=channel_update,
                             actor=caller.actor)
    return ChannelPublic.model_validate(channel, from_attributes=True)


@router.get("/stages", response_model=Page[StagePublic], summary="List stages",
            description="Stages of the customer relationship, in their order.",
            responses=errors())
def list_stages(caller: ManagementCaller, session: SessionDep, page: PageDep
                ) -> Page[StagePublic]:
    rows, total = paginate(session, select(Stage).order_by(col(Stage.position),
                                                           col(Stage.key)), page)
    return Page(items=[StagePublic.model_validate(row, from_attributes=True) for row in rows],
                total=total)


@router.post("/stages", response_model=StagePublic, status_code=201, summary="Create a stage",
             responses=errors(409, body=True))
def create_stage_route(
    caller: ManagementCaller, session: SessionDep,
    stage_create: Annotated[StageCreate, Body(openapi_examples={
        "onboarding": {"summary": "An extra stage",
                       "value": {"key": "onboarding", "name": "Onboarding", "position": 4}},
    })],
) -> StagePublic:
    stage = create_stage(session, stage_create=stage_create, actor=caller.actor)
    return StagePublic.model_validate(stage, from_attributes=True)


@router.get("/channel-costs", response_model=Page[ChannelCostPublic],
            summary="List the cost to serve per channel and stage",
            description="One row per channel and stage that has a cost, ordered by channel "
            "key and stage order.", responses=errors())
def list_channel_costs(caller: ManagementCaller, session: SessionDep, page: PageDep
                       ) -> Page[ChannelCostPublic]:
    statement = (select(ChannelCost, Channel.key, Stage.key)
                 .join(Channel, col(Channel.id) == ChannelCost.channel_id)
                 .join(Stage, col(Stage.id) == ChannelCost.stage_id)
                 .order_by(col(Channel.key), col(Stage.position), col(Stage.key)))
    rows, total = paginate(session, statement, page)
    return Page(items=[channel_cost_public(cost, channel, stage) for cost, channel, stage in rows],
                total=total)


@router.put("/channel-costs", response_model=ChannelCostPublic,
            summary="Set the cost of one interaction on a channel at a stage",
            description="Creates the cost or replaces it; the previous value is kept in the "
            "audit log.", responses=errors(404, body=True))
def set_channel_cost_route(
    caller: ManagementCaller, session: SessionDep,
    cost: Annotated[ChannelCostSet, Body(openapi_examples={
        "call_centre": {"summary": "A call-centre query after the sale costs 6.50",
                        "value": {"channel": "call_centre", "stage": "after_sale",
                                  "cost_minor": 650}},
    })],
) -> ChannelCostPublic:
    row = set_channel_cost(session, cost=cost, actor=caller.actor)
    return channel_cost_public(row, cost.channel, stage_by_key(session, cost.stage).key)
