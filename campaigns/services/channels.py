"""Channels, stages and the cost to serve one interaction on a channel at a stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, select

from campaigns.errors import Conflict, FieldError, NotFound, ValidationFailed
from campaigns.models import Channel, ChannelCost, Stage
from campaigns.schemas import ChannelCostSet, ChannelCreate, ChannelUpdate, StageCreate
from campaigns.services.audit import record_audit
from campaigns.services.inputs import refuse_nulls
from campaigns.types import utcnow
from campaigns.validation import parse_input

#: A stage's position is a 32-bit integer column.
MIN_POSITION, MAX_POSITION = -(2**31), 2**31 - 1

DEFAULT_STAGES = (
    ("pre_sale", "Pre-sale", 1),
    ("purchase", "Purchase", 2),
    ("after_sale", "After-sale", 3),
)


def channel_by_key(session: Session, key: str, *, field: str = "channel") -> Channel:
    channel = session.exec(select(Channel).where(Channel.key == key)).first()
    if channel is None:
        raise NotFound(
            f"channel '{key}' does not exist",
            [FieldError((field,), f"unknown channel '{key}'", "not_found")],
            code="channel_not_found",
        )
    return channel


def stage_by_key(session: Session, key: str, *, field: str = "stage") -> Stage:
    stage = session.exec(select(Stage).where(Stage.key == key)).first()
    if stage is None:
        raise NotFound(
            f"stage '{key}' does not exist",
            [FieldError((field,), f"unknown stage '{key}'", "not_found")],
            code="stage_not_found",
        )
    return stage


def channel_keys(session: Session) -> list[str]:
    return list(session.exec(select(Channel.key).order_by(col(Channel.key))).all())


def ensure_default_stages(session: Session) -> list[Stage]:
    """Create the standard stages that do not exist yet; return all stages in order."""
    existing = {stage.key for stage in session.exec(select(Stage)).all()}
    for key, name, position in DEFAULT_STAGES:
        if key not in existing:
            session.add(Stage(key=key, name=name, position=position))
    session.flush()
    return list(session.exec(select(Stage).order_by(col(Stage.position))).all())


def create_stage(session: Session, *, stage_create: StageCreate | Mapping[str, Any],
                 actor: str) -> Stage:
    data = parse_input(StageCreate, stage_create, what="stage")
    if not MIN_POSITION <= data.position <= MAX_POSITION:
        # The column is a 32-bit integer: PostgreSQL would refuse a larger one mid-insert.
        raise ValidationFailed("the stage is not valid", [FieldError(
            ("position",), f"position must be between {MIN_POSITION:,} and {MAX_POSITION:,}",
            "out_of_range")])
    if session.exec(select(Stage).where(Stage.key == data.key)).first():
        raise Conflict(f"stage '{data.key}' already exists",
                       [FieldError(("key",), "a stage with this key already exists", "duplicate")])
    stage = Stage(key=data.key, name=data.name, position=data.position)
    session.add(stage)
    session.flush()
    record_audit(session, actor=actor, action="stage.create", entity_type="stage",
                 entity_id=stage.id, details=data.model_dump(mode="json"))
    return stage


def create_channel(
    session: Session, *, channel_create: ChannelCreate | Mapping[str, Any], actor: str
) -> Channel:
    data = parse_input(ChannelCreate, channel_create, what="channel")
    if session.exec(select(Channel).where(Channel.key == data.key)).first():
        raise Conflict(
            f"channel '{data.key}' already exists",
            [FieldError(("key",), "a channel with this key already exists", "duplicate")],
        )
    channel = Channel(key=data.key, name=data.name, kind=data.kind.value)
    session.add(channel)
    session.flush()
    record_audit(session, actor=actor, action="channel.create", entity_type="channel",
                 entity_id=channel.id, details=data.model_dump(mode="json"))
    return channel


def update_channel(
    session: Session, *, channel: Channel, channel_update: ChannelUpdate | Mapping[str, Any],
    actor: str,
) -> Channel:
    data = parse_input(ChannelUpdate, channel_update, what="channel")
    changes = data.model_dump(exclude_unset=True, mode="json")
    refuse_nulls(changes, nullable=(), what="channel")
    for name, value in changes.items():
        setattr(channel, name, value)
    session.add(channel)
    session.flush()
    record_audit(session, actor=actor, action="channel.update", entity_type="channel",
                 entity_id=channel.id, details=changes)
    return channel


def set_channel_cost(
    session: Session, *, cost: ChannelCostSet | Mapping[str, Any], actor: str,
    currency: str = "EUR",
) -> ChannelCost:
    """Create or replace the cost of one interaction on a channel at a stage."""
    data = parse_input(ChannelCostSet, cost, what="channel cost")
    channel = channel_by_key(session, data.channel)
    stage = stage_by_key(session, data.stage)
    row = session.exec(
        select(ChannelCost).where(ChannelCost.channel_id == channel.id,
                                  ChannelCost.stage_id == stage.id)
    ).first()
    before = row.cost_minor if row else None
    if row is None:
        assert channel.id is not None and stage.id is not None
        row = ChannelCost(channel_id=channel.id, stage_id=stage.id, cost_minor=data.cost_minor,
                          currency=currency)
    else:
        row.cost_minor = data.cost_minor
        row.updated_at = utcnow()
    session.add(row)
    session.flush()
    record_audit(session, actor=actor, action="channel_cost.set", entity_type="channel_cost",
                 entity_id=row.id, details={"channel": data.channel, "stage": data.stage,
                                            "cost_minor": data.cost_minor, "before": before})
    return row


def cost_table(session: Session) -> dict[tuple[str, str], int]:
    """Cost per interaction keyed by (channel key, stage key)."""
    rows = session.exec(
        select(Channel.key, Stage.key, ChannelCost.cost_minor)
        .join(Channel, col(Channel.id) == ChannelCost.channel_id)
        .join(Stage, col(Stage.id) == ChannelCost.stage_id)
    ).all()
    return {(channel, stage): cost for channel, stage, cost in rows}
