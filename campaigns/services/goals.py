"""Migration goals: which customers to move from which channels to which, at what stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, select

from campaigns.errors import Conflict, FieldError, InvalidRule, NotFound
from campaigns.models import Channel, GoalSourceChannel, MigrationGoal
from campaigns.rules import Rule, parse_optional_rule
from campaigns.schemas import GoalCreate
from campaigns.services.audit import record_audit
from campaigns.services.channels import channel_by_key, channel_keys, stage_by_key
from campaigns.services.inputs import get_row
from campaigns.validation import parse_input


def validate_rule(session: Session, text: str | None, *, field: str) -> Rule:
    """Parse an eligibility rule against the known attributes and channel keys."""
    try:
        return parse_optional_rule(text, channel_keys=channel_keys(session))
    except InvalidRule as error:
        raise InvalidRule(
            error.message,
            [FieldError((field,), e.msg, e.type) for e in error.errors],
        ) from None


def get_goal(session: Session, goal_id: int) -> MigrationGoal:
    goal = get_row(session, MigrationGoal, goal_id)
    if goal is None:
        raise NotFound(f"migration goal {goal_id} does not exist",
                       [FieldError(("goal_id",), f"unknown goal {goal_id}", "not_found")],
                       code="goal_not_found")
    return goal


def source_channels(session: Session, goal: MigrationGoal) -> list[Channel]:
    return list(session.exec(
        select(Channel)
        .join(GoalSourceChannel, col(GoalSourceChannel.channel_id) == Channel.id)
        .where(GoalSourceChannel.goal_id == goal.id)
        .order_by(col(Channel.key))
    ).all())


def create_goal(
    session: Session, *, goal_create: GoalCreate | Mapping[str, Any], actor: str
) -> MigrationGoal:
    data = parse_input(GoalCreate, goal_create, what="migration goal")
    if session.exec(select(MigrationGoal).where(MigrationGoal.name == data.name)).first():
        raise Conflict(f"a goal named '{data.name}' already exists",
                       [FieldError(("name",), "a goal with this name already exists",
                                   "duplicate")])
    stage = stage_by_key(session, data.stage)
    target = channel_by_key(session, data.target_channel, field="target_channel")
    sources = [channel_by_key(session, key, field="source_channels")
               for key in data.source_channels]
    rule = validate_rule(session, data.eligibility_rule, field="eligibility_rule")
    assert stage.id is not None and target.id is not None
    goal = MigrationGoal(
        name=data.name,
        description=data.description,
        stage_id=stage.id,
        target_channel_id=target.id,
        metric=data.metric.value,
        window_days=data.window_days,
        target_uplift=data.target_uplift,
        eligibility_rule=str(rule) if data.eligibility_rule else None,
        eligibility_tree=rule.to_data() if data.eligibility_rule else None,
    )
    session.add(goal)
    session.flush()
    assert goal.id is not None
    for source in sources:
        assert source.id is not None
        session.add(GoalSourceChannel(goal_id=goal.id, channel_id=source.id))
    session.flush()
    record_audit(session, actor=actor, action="goal.create", entity_type="migration_goal",
                 entity_id=goal.id, details=data.model_dump(mode="json"))
    return goal


def source_channel_keys(session: Session, goal_ids: list[int]) -> dict[int, list[str]]:
    """Source channel keys of several goals in one query, keyed by goal id."""
    keys: dict[int, list[str]] = {goal_id: [] for goal_id in goal_ids}
    if not goal_ids:
        return keys
    rows = session.exec(
        select(GoalSourceChannel.goal_id, Channel.key)
        .join(Channel, col(Channel.id) == GoalSourceChannel.channel_id)
        .where(col(GoalSourceChannel.goal_id).in_(goal_ids))
        .order_by(col(Channel.key))
    ).all()
    for goal_id, key in rows:
        keys[goal_id].append(key)
    return keys
