"""The wizard's steps: which inputs each owns, how they are read, and what makes them valid.

Each step copies its inputs from a submitted form into the :class:`WizardState`
(:func:`collect`) and checks them (:func:`validate`), returning a :class:`FormState`
with a message per input and the parsed values the campaign is made of. The final
:func:`campaign_payload` is what :func:`campaigns.services.campaigns.create_campaign`
receives; :func:`place_service_errors` sends its refusals (a name taken meanwhile) back
to the step and input they concern.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from sqlmodel import Session, select
from starlette.datastructures import FormData

from campaigns.errors import ChannelShiftError, InvalidIncentiveConfig, InvalidRule
from campaigns.incentives import INCENTIVE_TYPES, get_incentive_type
from campaigns.models import Campaign, GuardrailMetric, MigrationGoal, StackingPolicy
from campaigns.rules import Rule
from campaigns.services.audience import parse_audience_rule, stored_rule
from web.ui.forms import FormState, parse_money
from web.ui.wizard.fields import parse_local_time, parse_percent_bp
from web.ui.wizard.incentive_form import (
    ConfigList,
    ConfigNode,
    config_form,
    containers_of,
    default_values,
    fields_of,
    place_errors,
    read_config,
)
from web.ui.wizard.state import MAX_TREATMENT_ARMS, ArmDraft, WizardState

STEPS = ("goal", "audience", "arms", "budget", "schedule", "policy", "review")
TITLES = {
    "goal": "Goal",
    "audience": "Audience",
    "arms": "Arms and incentives",
    "budget": "Budget and limits",
    "schedule": "Schedule",
    "policy": "Stacking and guardrails",
    "review": "Review",
}
#: The plain inputs each step owns (the arms step also owns every arm's inputs).
STEP_FIELDS: Mapping[str, tuple[str, ...]] = {
    "goal": ("goal_id", "name", "description"),
    "audience": ("eligibility_rule",),
    "arms": ("control_name", "control_weight"),
    "budget": ("budget", "per_customer_limit"),
    "schedule": ("starts_at", "ends_at"),
    "policy": ("stacking", "priority", "guardrails"),
    "review": ("expected_audience", "baseline_points", "typical_order"),
}
LIST_FIELDS = frozenset({"guardrails"})
WEIGHT_TOTAL = 100
NAME_LENGTH = 200
ARM_NAME_LENGTH = 100
DESCRIPTION_LENGTH = 5000
MAX_PRIORITY = 1000
MAX_PER_CUSTOMER = 1000
#: The slot of messages about all the weights together (their sum).
WEIGHTS = "weights"


#: A submitted form: one value or all values of a name (``get``, ``getlist``).
Submitted = FormData


@dataclass(frozen=True)
class WizardContext:
    session: Session
    zone: tzinfo
    now: datetime


@dataclass
class StepResult:
    form: FormState
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.form.failed


def step_index(step: str) -> int:
    return STEPS.index(step)


# --------------------------------------------------------------------------- arm inputs


def arm_prefix(index: int) -> str:
    return f"arm{index}-"


def config_name(index: int, key: str) -> str:
    return f"{arm_prefix(index)}cfg-{key}"


def arm_nodes(arm: ArmDraft) -> tuple[ConfigNode, ...]:
    return config_form(arm.type, rows=arm.rows)


def arm_values(state: WizardState) -> dict[str, Any]:
    """The arms step's inputs by form name, as typed."""
    values: dict[str, Any] = {name: state.text(name) for name in STEP_FIELDS["arms"]}
    for index, arm in enumerate(state.arms):
        prefix = arm_prefix(index)
        values.update({f"{prefix}name": arm.name, f"{prefix}weight": arm.weight,
                       f"{prefix}type": arm.type})
        values.update({config_name(index, key): text for key, text in arm.fields.items()})
        values.update({config_name(index, item.key): arm.fields.get(item.key, "")
                       for item in fields_of(arm_nodes(arm))})
    return values


def step_values(step: str, state: WizardState) -> dict[str, Any]:
    """What a step's inputs show: the text typed (or the default) for each."""
    if step == "arms":
        return arm_values(state)
    return {name: state.choices(name) if name in LIST_FIELDS else state.text(name)
            for name in STEP_FIELDS[step]}


# --------------------------------------------------------------------------- collecting


def collect(step: str, state: WizardState, submitted: Submitted) -> None:
    """Copy the step's inputs from the form into the state, as typed (even when wrong)."""
    for name in STEP_FIELDS[step]:
        if name in LIST_FIELDS:
            state.values[name] = [str(v) for v in submitted.getlist(name)]
        else:
            state.values[name] = str(submitted.get(name) or "")
    if step == "arms":
        for index, arm in enumerate(state.arms):
            _collect_arm(index, arm, submitted)


def _collect_arm(index: int, arm: ArmDraft, submitted: Submitted) -> None:
    prefix = arm_prefix(index)
    if f"{prefix}name" not in submitted:
        return  # the arm was added after the page was drawn
    arm.name = str(submitted.get(f"{prefix}name") or "")
    arm.weight = str(submitted.get(f"{prefix}weight") or "")
    # The inputs on the page are those of the type it was drawn with; read them all, so an
    # unticked checkbox (absent from the form) is remembered as unticked.
    for item in fields_of(arm_nodes(arm)):
        arm.fields[item.key] = str(submitted.get(config_name(index, item.key)) or "")
    chosen = str(submitted.get(f"{prefix}type") or arm.type)
    if chosen != arm.type and chosen in INCENTIVE_TYPES:
        arm.type = chosen
        for key, text in default_values(arm_nodes(arm)).items():
            arm.fields.setdefault(key, text)


def _even_split(count: int) -> list[int]:
    """Weights for the control and ``count - 1`` arms; the control takes the remainder."""
    share = WEIGHT_TOTAL // count
    return [WEIGHT_TOTAL - share * (count - 1), *[share] * (count - 1)]


def _weights(state: WizardState) -> list[str]:
    return [state.text("control_weight"), *(arm.weight for arm in state.arms)]


def _rebalance_if_even(state: WizardState, before: list[str]) -> None:
    """Keep an even split even when an arm comes or goes; typed weights stay as typed."""
    if before != [str(w) for w in _even_split(len(before))]:
        return
    control, *arms = _even_split(len(state.arms) + 1)
    state.values["control_weight"] = str(control)
    for arm, weight in zip(state.arms, arms, strict=True):
        arm.weight = str(weight)


def add_arm(state: WizardState) -> bool:
    if len(state.arms) >= MAX_TREATMENT_ARMS:
        return False
    before = _weights(state)
    taken = {arm.name for arm in state.arms}
    number = len(state.arms) + 1
    while f"treatment {number}" in taken:
        number += 1
    state.arms.append(ArmDraft(name=f"treatment {number}"))
    _rebalance_if_even(state, before)
    return True


def remove_arm(state: WizardState, index: int) -> bool:
    if len(state.arms) <= 1 or not 0 <= index < len(state.arms):
        return False
    before = _weights(state)
    del state.arms[index]
    _rebalance_if_even(state, before)
    return True


def change_rows(state: WizardState, index: int, key: str, delta: int) -> bool:
    """Show one more (or one fewer) row of an arm's list setting (prizes, tiers)."""
    if not 0 <= index < len(state.arms):
        return False
    arm = state.arms[index]
    lists = {node.key: node for node in _lists(arm_nodes(arm))}
    current = lists.get(key)
    if current is None:
        return False
    count = len(current.rows) + delta
    if not current.min_rows <= count <= current.max_rows:
        return False
    arm.rows[key] = count
    if delta < 0:  # forget what the removed row held
        gone = f"{key}-{count}-"
        arm.fields = {k: v for k, v in arm.fields.items() if not k.startswith(gone)}
    return True


def _lists(nodes: tuple[ConfigNode, ...]) -> list[ConfigList]:
    return [node for node in containers_of(nodes) if isinstance(node, ConfigList)]


# --------------------------------------------------------------------------- validating


def _sentence(message: str) -> str:
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else f"{message}."


def _whole(form: FormState, name: str, *, low: int, high: int, required: bool = True,
           what: str = "a whole number") -> int | None:
    text = str(form.values.get(name, "")).strip()
    if not text:
        if required:
            form.add(name, f"Enter {what}.")
        return None
    try:
        value = int(text)
    except ValueError:
        form.add(name, f"'{text}' is not a whole number.")
        return None
    if not low <= value <= high:
        form.add(name, f"Enter {what} from {low:,} to {high:,}.")
        return None
    return value


def validate_goal(state: WizardState, ctx: WizardContext) -> StepResult:
    form = FormState(values=step_values("goal", state))
    text = form.values["goal_id"].strip()
    goal_id = int(text) if text.isdigit() else None
    goal = ctx.session.get(MigrationGoal, goal_id) if goal_id is not None else None
    if goal_id is None:
        form.add("goal_id", "Choose the migration goal this campaign works towards.")
    elif goal is None:
        form.add("goal_id", "This goal no longer exists; choose another.")
    name = form.values["name"].strip()
    if not name:
        form.add("name", "Enter a name for the campaign.")
    elif len(name) > NAME_LENGTH:
        form.add("name", f"Use at most {NAME_LENGTH} characters.")
    elif ctx.session.exec(select(Campaign.id).where(Campaign.name == name)).first():
        form.add("name", "A campaign with this name already exists; choose another name.")
    description = form.values["description"].strip()
    if len(description) > DESCRIPTION_LENGTH:
        form.add("description", f"Use at most {DESCRIPTION_LENGTH:,} characters.")
    return StepResult(form, {"goal_id": goal_id, "name": name, "description": description,
                             "goal": goal})


def goal_rules(session: Session, goal: MigrationGoal | None) -> list[Rule]:
    """The goal's own eligibility rule (empty when it has none or it cannot be read)."""
    if goal is None:
        return []
    try:
        return [stored_rule(goal.eligibility_tree, session=session)]
    except InvalidRule:
        return []


def validate_audience(state: WizardState, ctx: WizardContext) -> StepResult:
    form = FormState(values=step_values("audience", state))
    text = form.values["eligibility_rule"].strip()
    rule: Rule | None = None
    try:
        rule = parse_audience_rule(ctx.session, text)
    except InvalidRule as error:
        for item in error.errors:
            form.add("eligibility_rule", _sentence(item.msg))
    return StepResult(form, {"eligibility_rule": text or None, "rule": rule})


def validate_arms(state: WizardState, ctx: WizardContext) -> StepResult:
    form = FormState(values=arm_values(state))
    control_name = form.values["control_name"].strip()
    if not control_name:
        form.add("control_name", "Name the control group (e.g. control).")
    control_weight = _whole(form, "control_weight", low=1, high=WEIGHT_TOTAL,
                            what="the control group's weight")
    arms: list[dict[str, Any]] = [{"name": control_name, "weight": control_weight,
                                   "is_control": True}]
    seen = {control_name}
    offers: list[tuple[str, str, dict[str, Any]]] = []
    for index, arm in enumerate(state.arms):
        built = _validate_arm(index, arm, form, ctx, seen)
        arms.append(built)
        if "incentive" in built and built["incentive"] is not None:
            offers.append((built["name"], arm.type, built["incentive"]["config"]))
    weights = [arm["weight"] for arm in arms]
    if None not in weights and sum(weights) != WEIGHT_TOTAL:
        form.add(WEIGHTS, f"The weights add up to {sum(weights)}; they must add up to "
                 f"{WEIGHT_TOTAL} (every customer lands in exactly one arm).")
    return StepResult(form, {"arms": arms, "offers": offers,
                             "control_weight": control_weight})


def _validate_arm(index: int, arm: ArmDraft, form: FormState, ctx: WizardContext,
                  seen: set[str]) -> dict[str, Any]:
    prefix = arm_prefix(index)
    name = arm.name.strip()
    if not name:
        form.add(f"{prefix}name", "Name this arm (e.g. ten percent off).")
    elif len(name) > ARM_NAME_LENGTH:
        form.add(f"{prefix}name", f"Use at most {ARM_NAME_LENGTH} characters.")
    elif name in seen:
        form.add(f"{prefix}name", f"Another arm is already called '{name}'.")
    seen.add(name)
    weight = _whole(form, f"{prefix}weight", low=1, high=WEIGHT_TOTAL,
                    what="this arm's weight")
    built: dict[str, Any] = {"name": name, "weight": weight, "incentive": None}
    if arm.type not in INCENTIVE_TYPES:
        form.add(f"{prefix}type", "Choose an incentive type.")
        return built
    nodes = arm_nodes(arm)
    read = read_config(nodes, arm.fields, zone=ctx.zone, form=form,
                       name=lambda key: config_name(index, key))
    incentive_type = get_incentive_type(arm.type)
    try:
        config = incentive_type.dump(incentive_type.validate(read.config))
    except InvalidIncentiveConfig as error:
        place_errors(error.errors, nodes, form=form, name=lambda key: config_name(index, key),
                     fallback=f"{prefix}type", unreadable=read.unreadable)
        return built
    if not read.unreadable:
        built["incentive"] = {"name": name or incentive_type.label, "type": arm.type,
                              "config": config}
    return built


def validate_budget(state: WizardState, ctx: WizardContext) -> StepResult:
    form = FormState(values=step_values("budget", state))
    text = form.values["budget"].strip()
    budget = parse_money(text, name="budget", form=form) if text else None
    if not text:
        form.add("budget", "Enter a budget: a campaign cannot be scheduled without one.")
    elif budget == 0:
        form.add("budget", "Enter a budget above zero: a campaign cannot be scheduled "
                 "without one.")
    limit = _whole(form, "per_customer_limit", low=1, high=MAX_PER_CUSTOMER, required=False,
                   what="the number of redemptions per customer")
    return StepResult(form, {"budget_minor": budget, "per_customer_limit": limit})


def validate_schedule(state: WizardState, ctx: WizardContext) -> StepResult:
    form = FormState(values=step_values("schedule", state))
    starts = parse_local_time(form.values["starts_at"], zone=ctx.zone, name="starts_at",
                              form=form)
    ends = parse_local_time(form.values["ends_at"], zone=ctx.zone, name="ends_at", form=form)
    if starts is not None and starts < ctx.now:
        form.add("starts_at", "The start is in the past; choose a time from now on (a "
                 "campaign started by hand starts at once anyway).")
    if ends is not None and ends <= ctx.now:
        form.add("ends_at", "The end is in the past.")
    elif starts is not None and ends is not None and ends <= starts:
        form.add("ends_at", "The end must be after the start.")
    return StepResult(form, {"starts_at": starts, "ends_at": ends})


def validate_policy(state: WizardState, ctx: WizardContext) -> StepResult:
    form = FormState(values=step_values("policy", state))
    stacking = form.values["stacking"]
    if stacking not in {policy.value for policy in StackingPolicy}:
        form.add("stacking", "Choose whether this campaign's offers combine with others.")
    priority = _whole(form, "priority", low=0, high=MAX_PRIORITY, what="a priority")
    known = [metric.value for metric in GuardrailMetric]
    chosen = list(form.values["guardrails"])
    unknown = [name for name in chosen if name not in known]
    if unknown:
        form.add("guardrails", f"Unknown guardrail {', '.join(unknown)}; choose among "
                 f"{', '.join(known)}.")
    guardrails = [name for name in known if name in chosen]  # each once, in a fixed order
    return StepResult(form, {"stacking": stacking, "priority": priority,
                             "guardrails": guardrails})


def validate_review(state: WizardState, ctx: WizardContext) -> StepResult:
    """The review's planning inputs; blank means "use the measured figure"."""
    form = FormState(values=step_values("review", state))
    audience = _whole(form, "expected_audience", low=0, high=10**12, required=False,
                      what="the expected number of customers")
    baseline: float | None = None
    text = form.values["baseline_points"].strip()
    if text:
        basis_points = parse_percent_bp(text, name="baseline_points", form=form)
        if basis_points is not None and not 0 < basis_points < 10_000:
            form.add("baseline_points", "Enter a share above 0% and below 100%.")
        elif basis_points is not None:
            baseline = basis_points / 10_000
    order_text = form.values["typical_order"].strip()
    order = parse_money(order_text, name="typical_order", form=form) if order_text else None
    return StepResult(form, {"expected_audience": audience, "baseline": baseline,
                             "typical_order_minor": order})


VALIDATORS = {
    "goal": validate_goal,
    "audience": validate_audience,
    "arms": validate_arms,
    "budget": validate_budget,
    "schedule": validate_schedule,
    "policy": validate_policy,
    "review": validate_review,
}


def validate(step: str, state: WizardState, ctx: WizardContext) -> StepResult:
    return VALIDATORS[step](state, ctx)


def first_failure(state: WizardState, ctx: WizardContext, steps: Sequence[str]
                  ) -> tuple[str, StepResult] | None:
    """The first of ``steps`` whose inputs are not valid, with its messages."""
    for step in steps:
        result = validate(step, state, ctx)
        if not result.ok:
            return step, result
    return None


# --------------------------------------------------------------------------- creating


def campaign_payload(results: Mapping[str, StepResult]) -> dict[str, Any]:
    """The ``CampaignCreate`` input of a wizard whose every step is valid."""
    goal, audience, arms = results["goal"].data, results["audience"].data, results["arms"].data
    budget, schedule, policy = (results["budget"].data, results["schedule"].data,
                                results["policy"].data)
    return {
        "name": goal["name"], "description": goal["description"], "goal_id": goal["goal_id"],
        "eligibility_rule": audience["eligibility_rule"],
        "arms": [{key: value for key, value in arm.items() if value is not None}
                 for arm in arms["arms"]],
        "budget_minor": budget["budget_minor"],
        "per_customer_limit": budget["per_customer_limit"],
        "starts_at": schedule["starts_at"], "ends_at": schedule["ends_at"],
        "stacking": policy["stacking"], "priority": policy["priority"],
        "guardrails": policy["guardrails"],
    }


#: Where the campaign service's field errors belong: (step, input) by the loc's first part.
SERVICE_FIELDS = {
    "name": ("goal", "name"),
    "description": ("goal", "description"),
    "goal_id": ("goal", "goal_id"),
    "eligibility_rule": ("audience", "eligibility_rule"),
    "budget_minor": ("budget", "budget"),
    "per_customer_limit": ("budget", "per_customer_limit"),
    "starts_at": ("schedule", "starts_at"),
    "ends_at": ("schedule", "ends_at"),
    "stacking": ("policy", "stacking"),
    "priority": ("policy", "priority"),
    "guardrails": ("policy", "guardrails"),
}


def _arm_input(loc: tuple[str | int, ...]) -> str:
    """The arms step input a service loc (``arms, 2, incentive, config, ...``) names."""
    if len(loc) < 2 or not isinstance(loc[1], int):
        return WEIGHTS
    index = loc[1]
    rest = [str(part) for part in loc[2:]]
    if index == 0:
        return "control_weight" if rest[:1] == ["weight"] else "control_name"
    prefix = arm_prefix(index - 1)
    if rest[:2] == ["incentive", "config"] and len(rest) > 2:
        return config_name(index - 1, "-".join(rest[2:]))
    if rest[:1] in (["name"], ["weight"]):
        return f"{prefix}{rest[0]}"
    return f"{prefix}type"


def place_service_errors(error: ChannelShiftError, state: WizardState
                         ) -> tuple[str, FormState]:
    """The step to show again, with the service's messages on its inputs."""
    target = "review"
    placed: list[tuple[str, str | None, str]] = []
    for item in error.errors:
        head = str(item.loc[0]) if item.loc else ""
        if head == "arms":
            placed.append(("arms", _arm_input(item.loc), item.msg))
        elif head in SERVICE_FIELDS:
            placed.append((*SERVICE_FIELDS[head], item.msg))
        else:
            placed.append(("review", None, item.msg))
    if placed:
        target = min((step for step, _, _ in placed), key=step_index)
    form = FormState(values=step_values(target, state))
    for step, input_name, message in placed:
        if step == target:
            form.add(input_name, _sentence(message))
    if not form.failed:
        form.add(None, _sentence(error.message))
    return target, form
