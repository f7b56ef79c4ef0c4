"""Persisting incentives: configs validated by their type, inventory rows for stocked items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from campaigns.errors import FieldError, InvalidIncentiveConfig, NotFound
from campaigns.incentives import get_incentive_type, validate_incentive
from campaigns.models import CouponCode, Incentive, IncentiveStock
from campaigns.schemas import IncentiveCreate
from campaigns.services.audit import record_audit
from campaigns.services.inputs import get_row
from campaigns.validation import parse_input


def stock_items(type_key: str, config: Mapping[str, Any]) -> dict[str, int]:
    """Inventory a type keeps in the database: gift items and lottery prizes."""
    if type_key == "gift":
        return {"gift": int(config["inventory"])}
    if type_key == "lottery":
        return {prize["key"]: int(prize["inventory"]) for prize in config["prizes"]}
    return {}


def create_incentive(
    session: Session, *, incentive_create: IncentiveCreate | Mapping[str, Any], actor: str,
    loc: tuple[str | int, ...] = (),
) -> Incentive:
    data = parse_input(IncentiveCreate, incentive_create, what="incentive")
    try:
        config = validate_incentive(data.type, data.config)
    except InvalidIncentiveConfig as error:
        if not loc:
            raise
        raise InvalidIncentiveConfig(
            error.message, [FieldError(loc + tuple(e.loc), e.msg, e.type) for e in error.errors]
        ) from None
    incentive = Incentive(name=data.name, type=data.type, config=config)
    session.add(incentive)
    session.flush()
    assert incentive.id is not None
    for item_key, total in stock_items(data.type, config).items():
        session.add(IncentiveStock(incentive_id=incentive.id, item_key=item_key, total=total))
    session.flush()
    _add_shared_code(session, incentive=incentive, loc=loc)
    record_audit(session, actor=actor, action="incentive.create", entity_type="incentive",
                 entity_id=incentive.id, details={"name": data.name, "type": data.type,
                                                  "config": config})
    return incentive


def _add_shared_code(session: Session, *, incentive: Incentive,
                     loc: tuple[str | int, ...]) -> None:
    """The coupon_code row of a type's shared code, which redemptions charge like any code.

    It belongs to no campaign: every campaign offering the incentive shares it, and
    ``max_uses`` (its total cap) with it. The code is unique across all codes, so one
    already taken by another coupon (or a generated code) is refused at ``config.code``.
    """
    incentive_type = get_incentive_type(incentive.type)
    shared = incentive_type.shared_code(incentive_type.validate(incentive.config))
    if shared is None:
        return
    assert incentive.id is not None
    try:
        with session.begin_nested():
            session.add(CouponCode(code=shared.code, incentive_id=incentive.id,
                                   campaign_id=None, customer_id=None,
                                   max_uses=shared.max_redemptions))
            session.flush()
    except IntegrityError:
        message = f"the code {shared.code} is already used by another coupon; choose another"
        raise InvalidIncentiveConfig(message, [FieldError(
            (*loc, "config", "code"), message, "code_taken")]) from None


def get_incentive(session: Session, incentive_id: int, *, field: str = "incentive_id"
                  ) -> Incentive:
    incentive = get_row(session, Incentive, incentive_id)
    if incentive is None:
        raise NotFound(f"incentive {incentive_id} does not exist",
                       [FieldError((field,), f"unknown incentive {incentive_id}", "not_found")],
                       code="incentive_not_found")
    return incentive
