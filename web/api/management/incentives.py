"""Incentives and the registry of incentive types."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from sqlmodel import col, select

from campaigns.incentives import INCENTIVE_TYPES
from campaigns.models import Incentive
from campaigns.schemas import IncentiveCreate
from campaigns.services.incentives import create_incentive, get_incentive
from web.api.management.common import PageDep, errors, paginate
from web.api.management.present import incentive_public
from web.api.schemas import MAX_ID, IncentivePublic, IncentiveTypePublic, Page
from web.deps import ManagementCaller, SessionDep

router = APIRouter(tags=["incentives"])

INCENTIVE_CREATE_EXAMPLES = {
    "batch_coupon": {
        "summary": "10% off with a unique single-use code",
        "value": {"name": "10% web coupon", "type": "coupon",
                  "config": {"mode": "batch", "prefix": "WEB-", "length": 10,
                             "benefit": {"kind": "percent", "percent_bp": 1000,
                                         "cap_minor": 2000},
                             "expires_days": 30}}},
    "percent_discount": {
        "summary": "5% off orders placed on the web",
        "value": {"name": "5% on the web", "type": "percent_discount",
                  "config": {"percent_bp": 500}}},
}


@router.get("/incentive-types", response_model=Page[IncentiveTypePublic],
            summary="List incentive types with the JSON schema of their configuration",
            description="Every type an incentive can have; `config_schema` describes the "
            "`config` an incentive of that type takes.", responses=errors())
def list_incentive_types(caller: ManagementCaller, page: PageDep) -> Page[IncentiveTypePublic]:
    types = [IncentiveTypePublic(key=key, label=incentive_type.label,
                                 config_schema=incentive_type.config_model.model_json_schema())
             for key, incentive_type in sorted(INCENTIVE_TYPES.items())]
    return Page(items=types[page.offset:page.offset + page.limit], total=len(types))


@router.get("/incentives", response_model=Page[IncentivePublic], summary="List incentives",
            description="Incentives in creation order, optionally of one type.",
            responses=errors(422))
def list_incentives(
    caller: ManagementCaller, session: SessionDep, page: PageDep,
    incentive_type: Annotated[str | None, Query(alias="type", max_length=40,
                                                description="Only this type.")] = None,
) -> Page[IncentivePublic]:
    statement = select(Incentive).order_by(col(Incentive.id))
    if incentive_type is not None:
        statement = statement.where(Incentive.type == incentive_type)
    rows, total = paginate(session, statement, page)
    return Page(items=[incentive_public(row) for row in rows], total=total)


@router.post("/incentives", response_model=IncentivePublic, status_code=201,
             summary="Create an incentive",
             description="`config` is validated by the incentive's type (see "
             "`GET /api/v1/incentive-types`); each problem is reported at its `loc` under "
             "`config`.", responses=errors(body=True))
def create_incentive_route(
    caller: ManagementCaller, session: SessionDep,
    incentive_create: Annotated[IncentiveCreate,
                                Body(openapi_examples=INCENTIVE_CREATE_EXAMPLES)],
) -> IncentivePublic:
    incentive = create_incentive(session, incentive_create=incentive_create, actor=caller.actor)
    return incentive_public(incentive)


@router.get("/incentives/{incentive_id}", response_model=IncentivePublic,
            summary="Get an incentive", responses=errors(404))
def get_incentive_route(caller: ManagementCaller, session: SessionDep,
                        incentive_id: Annotated[int, Path(ge=1, le=MAX_ID)]
                        ) -> IncentivePublic:
    return incentive_public(get_incentive(session, incentive_id))
