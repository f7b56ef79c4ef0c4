"""Migration goals: which customers to move, from which channels to which, at what stage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path
from sqlmodel import col, select

from campaigns.models import MigrationGoal
from campaigns.schemas import GoalCreate
from campaigns.services.goals import create_goal, get_goal
from web.api.management.common import PageDep, errors, paginate
from web.api.management.present import goal_public, goals_public
from web.api.schemas import MAX_ID, GoalPublic, Page
from web.deps import ManagementCaller, SessionDep

router = APIRouter(tags=["goals"])

GOAL_CREATE_EXAMPLE = {
    "name": "After-sale self-service on the web",
    "description": "Move service queries from the call centre and IVR to the web.",
    "stage": "after_sale", "source_channels": ["call_centre", "ivr"],
    "target_channel": "web", "metric": "adoption", "window_days": 30,
    "target_uplift": "0.05", "eligibility_rule": "value_tier != 'platinum'",
}


@router.get("/goals", response_model=Page[GoalPublic], summary="List migration goals",
            description="Goals in creation order.", responses=errors())
def list_goals(caller: ManagementCaller, session: SessionDep, page: PageDep
               ) -> Page[GoalPublic]:
    rows, total = paginate(session, select(MigrationGoal).order_by(col(MigrationGoal.id)), page)
    return Page(items=goals_public(session, rows), total=total)


@router.post("/goals", response_model=GoalPublic, status_code=201,
             summary="Create a migration goal",
             description="Channels and the stage are named by key. `target_uplift` is an "
             "absolute fraction (0.05 = +5 percentage points); send it as a string to keep "
             "it exact. The eligibility rule is checked against known attributes and channels.",
             responses=errors(404, 409, body=True))
def create_goal_route(
    caller: ManagementCaller, session: SessionDep,
    goal_create: Annotated[GoalCreate, Body(openapi_examples={
        "self_service": {"summary": "Move after-sale queries to the web",
                         "value": GOAL_CREATE_EXAMPLE},
    })],
) -> GoalPublic:
    goal = create_goal(session, goal_create=goal_create, actor=caller.actor)
    return goal_public(session, goal)


@router.get("/goals/{goal_id}", response_model=GoalPublic, summary="Get a migration goal",
            responses=errors(404))
def get_goal_route(caller: ManagementCaller, session: SessionDep,
                   goal_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> GoalPublic:
    return goal_public(session, get_goal(session, goal_id))
