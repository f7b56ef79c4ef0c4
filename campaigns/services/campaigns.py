"""Campaigns and arms: creation, edits, weights and the lifecycle.

Lifecycle::

    draft -> scheduled -> running <-> paused
      ^          |           |          |
      +----------+           +--> ended <+   (scheduled -> ended cancels)

Leaving draft runs every readiness check; every change is written to the audit log.
Each change also bumps ``config_version`` so caches of campaign configuration (the
storefront's hot path) know to reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from campaigns.assignment import new_salt
from campaigns.errors import (
    CampaignNotFound,
    Conflict,
    FieldError,
    InvalidIncentiveConfig,
    InvalidTransition,
    ValidationFailed,
)
from campaigns.incentives import get_incentive_type, validate_incentive
from campaigns.models import (
    Arm,
    ArmAllocation,
    Assignment,
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    Incentive,
)
from campaigns.schemas import ArmCreate, ArmWeights, CampaignCreate, CampaignUpdate
from campaigns.services.audit import record_audit
from campaigns.services.goals import get_goal, validate_rule
from campaigns.services.incentives import create_incentive, get_incentive
from campaigns.services.inputs import get_row, refuse_nulls
from campaigns.types import utcnow
from campaigns.validation import parse_input
from campaigns.wording import with_article

S = CampaignStatus

ALLOWED_TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED}),
    S.SCHEDULED: frozenset({S.DRAFT, S.RUNNING, S.ENDED}),
    S.RUNNING: frozenset({S.PAUSED, S.ENDED}),
    S.PAUSED: frozenset({S.RUNNING, S.ENDED}),
    S.ENDED: frozenset(),
}

#: Fields that may change while a campaign is live (running or paused).
LIVE_EDITABLE = frozenset({"name", "description", "ends_at", "budget_minor", "priority",
                           "guardrails"})

WEIGHT_TOTAL = 100

#: Settings a campaign may be without (null clears them); the others always have a value.
NULLABLE_SETTINGS = frozenset({"starts_at", "ends_at", "budget_minor", "per_customer_limit",
                               "eligibility_rule", "control_opt_out_reason"})


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = get_row(session, Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    return campaign


def campaign_arms(session: Session, campaign: Campaign) -> list[Arm]:
    return list(session.exec(
        select(Arm).where(Arm.campaign_id == campaign.id).order_by(col(Arm.position),
                                                                   col(Arm.id))
    ).all())


def exposure_count(session: Session, campaign: Campaign) -> int:
    return session.exec(
        select(func.count()).select_from(Assignment).where(Assignment.campaign_id == campaign.id)
    ).one()


def _touch(campaign: Campaign) -> None:
    campaign.updated_at = utcnow()
    campaign.config_version += 1


def _check_arm_list(arms: list[ArmCreate]) -> None:
    errors = []
    seen: set[str] = set()
    controls = 0
    for index, arm in enumerate(arms):
        if arm.name in seen:
            errors.append(FieldError(("arms", index, "name"),
                                     f"arm name '{arm.name}' is used twice", "duplicate"))
        seen.add(arm.name)
        if arm.is_control:
            controls += 1
            if controls > 1:
                errors.append(FieldError(("arms", index, "is_control"),
                                         "a campaign has at most one control arm", "duplicate"))
    if errors:
        raise ValidationFailed("the arms are not valid", errors)


def _add_arm(
    session: Session, *, campaign: Campaign, arm_create: ArmCreate, position: int, actor: str,
    loc: tuple[str | int, ...],
) -> Arm:
    incentive_id = arm_create.incentive_id
    if arm_create.incentive is not None:
        incentive = create_incentive(session, incentive_create=arm_create.incentive, actor=actor,
                                     loc=(*loc, "incentive"))
        incentive_id = incentive.id
    elif incentive_id is not None:
        get_incentive(session, incentive_id, field=".".join(map(str, (*loc, "incentive_id"))))
    assert campaign.id is not None
    arm = Arm(campaign_id=campaign.id, name=arm_create.name, weight=arm_create.weight,
              is_control=arm_create.is_control, incentive_id=incentive_id, position=position)
    session.add(arm)
    session.flush()
    return arm


def _record_allocation(session: Session, campaign: Campaign, arms: list[Arm]) -> None:
    assert campaign.id is not None
    for arm in arms:
        assert arm.id is not None
        session.add(ArmAllocation(campaign_id=campaign.id, period=campaign.allocation_period,
                                  arm_id=arm.id, weight=arm.weight))
    session.flush()


def create_campaign(
    session: Session, *, campaign_create: CampaignCreate | Mapping[str, Any], actor: str
) -> Campaign:
    """Create a draft campaign with its arms (and their incentives, when given inline)."""
    data = parse_input(CampaignCreate, campaign_create, what="campaign")
    if session.exec(select(Campaign).where(Campaign.name == data.name)).first():
        raise Conflict(f"a campaign named '{data.name}' already exists",
                       [FieldError(("name",), "a campaign with this name already exists",
                                   "duplicate")])
    get_goal(session, data.goal_id)
    rule = validate_rule(session, data.eligibility_rule, field="eligibility_rule")
    _check_arm_list(data.arms)
    campaign = Campaign(
        name=data.name,
        description=data.description,
        goal_id=data.goal_id,
        starts_at=data.starts_at,
        ends_at=data.ends_at,
        budget_minor=data.budget_minor,
        per_customer_limit=data.per_customer_limit,
        stacking=data.stacking.value,
        priority=data.priority,
        salt=new_salt(),
        control_opt_out=data.control_opt_out,
        control_opt_out_reason=data.control_opt_out_reason,
        eligibility_rule=str(rule) if data.eligibility_rule else None,
        eligibility_tree=rule.to_data() if data.eligibility_rule else None,
        guardrails=[metric.value for metric in data.guardrails],
    )
    session.add(campaign)
    session.flush()
    arms = [
        _add_arm(session, campaign=campaign, arm_create=arm, position=index, actor=actor,
                 loc=("arms", index))
        for index, arm in enumerate(data.arms)
    ]
    _record_allocation(session, campaign, arms)
    record_audit(session, actor=actor, action="campaign.create", entity_type="campaign",
                 entity_id=campaign.id, details=data.model_dump(mode="json"))
    return campaign


def update_campaign(
    session: Session, *, campaign: Campaign, campaign_update: CampaignUpdate | Mapping[str, Any],
    actor: str,
) -> Campaign:
    data = parse_input(CampaignUpdate, campaign_update, what="campaign")
    changes = data.model_dump(exclude_unset=True)
    refuse_nulls(changes, nullable=NULLABLE_SETTINGS, what="campaign")
    status = CampaignStatus(campaign.status)
    if status is S.ENDED:
        raise Conflict("an ended campaign cannot be changed", code="campaign_ended")
    if campaign.origin == CampaignOrigin.IMPORTED.value:
        raise Conflict("an imported experiment cannot be changed", code="campaign_imported")
    if status in (S.RUNNING, S.PAUSED):
        frozen = sorted(set(changes) - LIVE_EDITABLE)
        if frozen:
            raise Conflict(
                f"a {status.value} campaign cannot change {', '.join(frozen)}; pause and end it, "
                "or copy it into a new draft",
                [FieldError((name,), f"cannot change while the campaign is {status.value}",
                            "frozen") for name in frozen],
                code="campaign_live",
            )
    errors = []
    if "name" in changes and changes["name"] != campaign.name and session.exec(
        select(Campaign).where(Campaign.name == changes["name"])
    ).first():
        errors.append(FieldError(("name",), "a campaign with this name already exists",
                                 "duplicate"))
    starts_at = changes.get("starts_at", campaign.starts_at)
    ends_at = changes.get("ends_at", campaign.ends_at)
    if starts_at and ends_at and ends_at <= starts_at:
        errors.append(FieldError(("ends_at",), "must be after starts_at", "schedule"))
    if changes.get("control_opt_out") and not (
        changes.get("control_opt_out_reason") or campaign.control_opt_out_reason
    ):
        errors.append(FieldError(("control_opt_out_reason",),
                                 "opting out of a control group needs a reason", "missing"))
    if errors:
        raise ValidationFailed("the campaign change is not valid", errors)
    if "eligibility_rule" in changes:
        text = changes["eligibility_rule"]
        rule = validate_rule(session, text, field="eligibility_rule")
        changes["eligibility_rule"] = str(rule) if text else None
        campaign.eligibility_tree = rule.to_data() if text else None
    if "stacking" in changes:
        changes["stacking"] = changes["stacking"].value
    if "guardrails" in changes:
        changes["guardrails"] = [metric.value for metric in changes["guardrails"] or []]
    before = {name: getattr(campaign, name) for name in changes}
    if "budget_minor" in changes:
        _set_budget(session, campaign=campaign, budget_minor=changes["budget_minor"])
    for name, value in changes.items():
        if name != "budget_minor":
            setattr(campaign, name, value)
    _touch(campaign)
    session.add(campaign)
    session.flush()
    record_audit(session, actor=actor, action="campaign.update", entity_type="campaign",
                 entity_id=campaign.id,
                 details={"changes": data.model_dump(mode="json", exclude_unset=True),
                          "before": {k: _jsonable(v) for k, v in before.items()}})
    return campaign


def _set_budget(session: Session, *, campaign: Campaign, budget_minor: int | None) -> None:
    """Set the budget if it covers what is spent, decided on the row by one conditional
    UPDATE: redemptions commit between an edit's read and its write, so a budget checked
    against the spend read first could end below the spend by then (the CHECK constraint
    refused it with a 500) and a budget written from that read would be stale."""
    statement = update(Campaign).where(col(Campaign.id) == campaign.id)
    if budget_minor is not None:
        statement = statement.where(col(Campaign.spent_minor) <= budget_minor)
    spent = session.execute(statement.values(budget_minor=budget_minor)
                            .returning(col(Campaign.spent_minor))).scalar_one_or_none()
    if spent is None:
        spent = session.exec(select(Campaign.spent_minor)
                             .where(Campaign.id == campaign.id)).one()
        raise ValidationFailed("the campaign change is not valid", [FieldError(
            ("budget_minor",), f"cannot be below what is already spent ({spent})",
            "too_small")])
    set_committed_value(campaign, "budget_minor", budget_minor)
    set_committed_value(campaign, "spent_minor", spent)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def add_arm(
    session: Session, *, campaign: Campaign, arm_create: ArmCreate | Mapping[str, Any], actor: str
) -> Arm:
    """Add an arm to a draft campaign."""
    data = parse_input(ArmCreate, arm_create, what="arm")
    if campaign.status != S.DRAFT.value:
        raise Conflict("arms can only be added while the campaign is a draft",
                       code="campaign_not_draft")
    arms = campaign_arms(session, campaign)
    _check_arm_list([ArmCreate(name=a.name, weight=a.weight, is_control=a.is_control,
                               incentive_id=a.incentive_id) for a in arms] + [data])
    arm = _add_arm(session, campaign=campaign, arm_create=data, position=len(arms), actor=actor,
                   loc=())
    _replace_allocation(session, campaign)
    _touch(campaign)
    record_audit(session, actor=actor, action="arm.create", entity_type="campaign",
                 entity_id=campaign.id, details={"arm": data.model_dump(mode="json")})
    return arm


def remove_arm(session: Session, *, campaign: Campaign, arm: Arm, actor: str) -> None:
    if campaign.status != S.DRAFT.value:
        raise Conflict("arms can only be removed while the campaign is a draft",
                       code="campaign_not_draft")
    for allocation in session.exec(select(ArmAllocation).where(ArmAllocation.arm_id == arm.id)):
        session.delete(allocation)
    session.flush()  # allocations first, so the arm's cascade finds nothing left to delete
    session.delete(arm)
    session.flush()
    _replace_allocation(session, campaign)
    _touch(campaign)
    record_audit(session, actor=actor, action="arm.delete", entity_type="campaign",
                 entity_id=campaign.id, details={"arm": arm.name})


def _replace_allocation(session: Session, campaign: Campaign) -> None:
    for allocation in session.exec(select(ArmAllocation).where(
        ArmAllocation.campaign_id == campaign.id,
        ArmAllocation.period == campaign.allocation_period,
    )):
        session.delete(allocation)
    session.flush()
    _record_allocation(session, campaign, campaign_arms(session, campaign))


def set_weights(
    session: Session, *, campaign: Campaign, weights: ArmWeights | Mapping[str, Any], actor: str
) -> Campaign:
    """Change arm weights.

    Before anyone is exposed the weights are simply replaced. Once customers are
    exposed, a new allocation period starts: exposed customers keep their arm (their
    assignment is stored), newcomers are split by the new weights.
    """
    data = parse_input(ArmWeights, weights, what="weights")
    if campaign.status == S.ENDED.value:
        raise Conflict("an ended campaign cannot change its weights", code="campaign_ended")
    arms = {arm.name: arm for arm in campaign_arms(session, campaign)}
    errors = [FieldError(("weights", name), f"no arm named '{name}'", "not_found")
              for name in data.weights if name not in arms]
    errors += [FieldError(("weights", name), "missing: give a weight for every arm", "missing")
               for name in arms if name not in data.weights]
    if not errors and sum(data.weights.values()) != WEIGHT_TOTAL:
        errors.append(FieldError(("weights",), f"must add up to {WEIGHT_TOTAL} "
                                 f"(they add up to {sum(data.weights.values())})", "sum"))
    if errors:
        raise ValidationFailed("the weights are not valid", errors)
    before = {name: arm.weight for name, arm in arms.items()}
    new_period = exposure_count(session, campaign) > 0
    for name, weight in data.weights.items():
        arms[name].weight = weight
        session.add(arms[name])
    if new_period:
        campaign.allocation_period += 1
        session.flush()
        _record_allocation(session, campaign, list(arms.values()))
    else:
        _replace_allocation(session, campaign)
    _touch(campaign)
    session.add(campaign)
    session.flush()
    record_audit(session, actor=actor, action="campaign.weights", entity_type="campaign",
                 entity_id=campaign.id,
                 details={"before": before, "after": data.weights,
                          "allocation_period": campaign.allocation_period,
                          "new_period": new_period})
    return campaign


def readiness_problems(session: Session, campaign: Campaign, *, now: datetime) -> list[FieldError]:
    """Everything that stops a campaign from being scheduled or started."""
    problems: list[FieldError] = []
    arms = campaign_arms(session, campaign)
    controls = [arm for arm in arms if arm.is_control]
    treatments = [arm for arm in arms if not arm.is_control]
    if not treatments:
        problems.append(FieldError(("arms",), "add at least one arm with an incentive",
                                   "no_treatment"))
    if campaign.control_opt_out:
        if controls:
            problems.append(FieldError(("control_opt_out",),
                                       "the campaign opted out of a control group but has a "
                                       "control arm", "inconsistent"))
        if not (campaign.control_opt_out_reason or "").strip():
            problems.append(FieldError(("control_opt_out_reason",),
                                       "opting out of a control group needs a recorded reason",
                                       "missing"))
    elif not controls:
        problems.append(FieldError(("arms",), "add a control arm (a randomized holdout), or opt "
                                   "out explicitly with a reason", "no_control"))
    total = sum(arm.weight for arm in arms)
    if arms and total != WEIGHT_TOTAL:
        problems.append(FieldError(("arms",), f"arm weights must add up to {WEIGHT_TOTAL} "
                                   f"(they add up to {total})", "weights_sum"))
    for arm in arms:
        if arm.weight <= 0:
            problems.append(FieldError(("arms", arm.name, "weight"),
                                       f"arm '{arm.name}' has no weight", "weight_zero"))
        if arm.incentive_id is not None:
            incentive = session.get(Incentive, arm.incentive_id)
            assert incentive is not None
            try:
                validate_incentive(incentive.type, incentive.config)
            except InvalidIncentiveConfig as error:
                problems.extend(FieldError(("arms", arm.name, *e.loc), e.msg, e.type)
                                for e in error.errors)
    if campaign.starts_at is None:
        problems.append(FieldError(("starts_at",), "set a start time", "missing"))
    if campaign.ends_at is None:
        problems.append(FieldError(("ends_at",), "set an end time", "missing"))
    elif campaign.ends_at <= now:
        problems.append(FieldError(("ends_at",), "the end time is in the past", "past"))
    if campaign.budget_minor is None or campaign.budget_minor <= 0:
        problems.append(FieldError(("budget_minor",), "set a budget above zero", "missing"))
    if campaign.eligibility_rule:
        try:
            validate_rule(session, campaign.eligibility_rule, field="eligibility_rule")
        except ValidationFailed as error:
            problems.extend(error.errors)
    return problems


def transition(
    session: Session, *, campaign: Campaign, target: CampaignStatus | str, actor: str,
    reason: str | None = None, now: datetime | None = None,
) -> Campaign:
    """Move a campaign to ``target`` if the lifecycle allows it and its checks pass."""
    now = now or utcnow()
    current = CampaignStatus(campaign.status)
    try:
        wanted = CampaignStatus(target)
    except ValueError:
        raise InvalidTransition(
            f"'{target}' is not a campaign status; use one of "
            f"{', '.join(s.value for s in CampaignStatus)}",
            [FieldError(("status",), f"unknown status '{target}'", "enum")],
        ) from None
    if wanted not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[current])) or "none"
        raise InvalidTransition(
            f"{with_article(current.value)} campaign cannot become {wanted.value} "
            f"(allowed from {current.value}: {allowed})",
            [FieldError(("status",), f"{current.value} -> {wanted.value} is not allowed",
                        "transition")],
        )
    if wanted in (S.SCHEDULED, S.RUNNING):
        problems = readiness_problems(session, campaign, now=now)
        if wanted is S.RUNNING and budget_shortfall(session, campaign) is not None:
            problems.append(FieldError(("budget_minor",),
                                       "the budget is spent (what is left cannot pay one more "
                                       "redemption); raise it before resuming",
                                       "budget_exhausted"))
        if problems:
            raise InvalidTransition(
                f"the campaign cannot become {wanted.value}: "
                + "; ".join(p.msg for p in problems),
                problems,
            )
    if wanted is S.RUNNING and campaign.starts_at and campaign.starts_at > now:
        campaign.starts_at = now  # starting by hand starts now
    if wanted is S.ENDED and (campaign.ends_at is None or campaign.ends_at > now):
        campaign.ends_at = now
        if campaign.starts_at and campaign.starts_at >= now:
            campaign.starts_at = None  # cancelled before it began
    campaign.status = wanted.value
    campaign.pause_reason = reason if wanted is S.PAUSED else None
    _touch(campaign)
    session.add(campaign)
    session.flush()
    record_audit(session, actor=actor, action=f"campaign.{wanted.value}",
                 entity_type="campaign", entity_id=campaign.id,
                 details={"from": current.value, "to": wanted.value, "reason": reason})
    return campaign


@dataclass(frozen=True)
class ScheduleChange:
    """A transition a campaign's schedule calls for at a given time."""

    campaign_id: int
    campaign_name: str
    target: CampaignStatus
    reason: str


def _schedule_change(campaign: Campaign, now: datetime) -> ScheduleChange | None:
    """What the schedule asks of ``campaign`` at ``now``: start it, end it, or nothing.

    A scheduled campaign whose end has passed too (the scheduler was off for its whole run)
    is ended, not started.
    """
    assert campaign.id is not None
    status = CampaignStatus(campaign.status)
    ended = campaign.ends_at is not None and campaign.ends_at <= now
    if status in (S.RUNNING, S.PAUSED) and ended:
        return ScheduleChange(campaign.id, campaign.name, S.ENDED, "end time reached")
    if status is S.SCHEDULED and ended:
        return ScheduleChange(campaign.id, campaign.name, S.ENDED,
                              "end time reached before it started")
    if status is S.SCHEDULED and campaign.starts_at is not None and campaign.starts_at <= now:
        return ScheduleChange(campaign.id, campaign.name, S.RUNNING, "start time reached")
    return None


def due_schedule_changes(session: Session, *, now: datetime) -> list[ScheduleChange]:
    """The live campaigns whose start or end time has come, as read now (no lock)."""
    candidates = session.exec(select(Campaign).where(
        Campaign.origin == CampaignOrigin.LIVE.value,
        or_(and_(col(Campaign.status) == S.SCHEDULED.value,
                 or_(col(Campaign.starts_at) <= now, col(Campaign.ends_at) <= now)),
            and_(col(Campaign.status).in_([S.RUNNING.value, S.PAUSED.value]),
                 col(Campaign.ends_at) <= now))).order_by(col(Campaign.id))).all()
    return [change for campaign in candidates
            if (change := _schedule_change(campaign, now)) is not None]


def advance_schedule(session: Session, *, campaign_id: int, now: datetime,
                     actor: str = "system:scheduler") -> ScheduleChange | None:
    """Make the transition the campaign's schedule calls for at ``now``, exactly once.

    The campaign row is locked first and the schedule read again under the lock (FOR
    UPDATE on PostgreSQL; SQLite's writers are serialised by its IMMEDIATE transactions), so
    of several schedulers arriving together one moves the campaign and the others find
    nothing left to do (None). A campaign that cannot start at its start time (it was made
    unready while scheduled) goes back to draft, with the reasons in the audit trail,
    instead of being retried on every tick.
    """
    campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
    if campaign is None or campaign.origin != CampaignOrigin.LIVE.value:
        return None
    change = _schedule_change(campaign, now)
    if change is None:
        return None
    try:
        transition(session, campaign=campaign, target=change.target, actor=actor,
                   reason=change.reason, now=now)
    except InvalidTransition as error:  # refused before anything was written
        reason = f"could not start at its start time: {error.message}"
        transition(session, campaign=campaign, target=S.DRAFT, actor=actor, reason=reason,
                   now=now)
        return ScheduleChange(change.campaign_id, change.campaign_name, S.DRAFT, reason)
    return change


def advance_schedules(session: Session, *, now: datetime | None = None,
                      actor: str = "system:scheduler") -> list[Campaign]:
    """Start scheduled campaigns whose start time has come and end those whose end has
    passed, in the caller's transaction (the scheduler gives each campaign its own)."""
    now = now or utcnow()
    changed = []
    for due in due_schedule_changes(session, now=now):
        if advance_schedule(session, campaign_id=due.campaign_id, now=now, actor=actor):
            changed.append(get_campaign(session, due.campaign_id))
    return changed


# ------------------------------------------------------------------------------ budget


def can_pay_one_more(*, budget_minor: int | None, spent_minor: int, unit_cost_minor: int
                     ) -> bool:
    """Whether what is left of a budget pays one more redemption costing ``unit_cost_minor``.

    The one rule for "budget spent": offers leave out an arm it refuses, and the budget
    check pauses a campaign it refuses for every arm.
    """
    if budget_minor is None:
        return True
    remaining = budget_minor - spent_minor
    return remaining > 0 and remaining >= unit_cost_minor


@dataclass(frozen=True)
class BudgetShortfall:
    """A campaign whose remaining budget cannot pay one more redemption of any arm."""

    budget_minor: int
    spent_minor: int
    cheapest_arm: str
    cheapest_cost_minor: int

    @property
    def remaining_minor(self) -> int:
        return self.budget_minor - self.spent_minor


def budget_shortfall(session: Session, campaign: Campaign) -> BudgetShortfall | None:
    """The shortfall when the campaign's budget cannot pay one more redemption of any of its
    incentive arms (each costed by its incentive type), else None."""
    if campaign.budget_minor is None:
        return None
    costs = []
    for arm in campaign_arms(session, campaign):
        if arm.is_control or arm.incentive_id is None:
            continue
        incentive = session.get(Incentive, arm.incentive_id)
        assert incentive is not None
        kind = get_incentive_type(incentive.type)
        cost = kind.unit_cost_estimate(kind.validate(incentive.config))
        if can_pay_one_more(budget_minor=campaign.budget_minor,
                            spent_minor=campaign.spent_minor, unit_cost_minor=cost):
            return None
        costs.append((cost, arm.position, arm.name))
    if not costs:
        return None
    cost, _, name = min(costs)
    return BudgetShortfall(budget_minor=campaign.budget_minor, spent_minor=campaign.spent_minor,
                           cheapest_arm=name, cheapest_cost_minor=cost)


def delete_campaign(session: Session, *, campaign: Campaign, actor: str) -> None:
    """Delete a draft campaign with its arms, allocations and generated coupon codes.

    Only drafts: a campaign that ran has assignments and redemptions that the analysis
    needs, so it is ended, never deleted. The schema cascades the delete to the rows that
    belong to the campaign; the incentives stay (other campaigns may use them).
    """
    if campaign.status != S.DRAFT.value:
        raise Conflict(f"only draft campaigns can be deleted; this one is {campaign.status} "
                       "(end it instead)", code="campaign_not_draft")
    if exposure_count(session, campaign):
        raise Conflict("this campaign has exposed customers and cannot be deleted",
                       code="campaign_has_exposures")
    details = {"name": campaign.name, "goal_id": campaign.goal_id}
    campaign_id = campaign.id
    session.delete(campaign)
    session.flush()
    record_audit(session, actor=actor, action="campaign.delete", entity_type="campaign",
                 entity_id=campaign_id, details=details)
