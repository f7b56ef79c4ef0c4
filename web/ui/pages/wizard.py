"""The campaign wizard: goal, audience, arms and incentives, budget, schedule, stacking and
guardrails, then a review with the power of the design and the clashes with other campaigns.

Every step posts to one route with the whole wizard state in a signed hidden field (see
:mod:`web.ui.wizard.state` for why) and the button pressed in ``nav``: ``next``,
``back``, ``goto:<step>``, arm and row edits, ``recalc`` and ``create``. Moving forward
validates the steps on the way and shows the first one that fails, with each message
next to its input (422); moving back never validates, and keeps what was typed. *Create*
validates everything again and makes the draft through
:func:`campaigns.services.campaigns.create_campaign`, then redirects to its page.

The audience step counts matching customers as the marketer types (an htmx GET of
``/campaigns/new/audience-count``), with SQL on the customer table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select
from starlette.datastructures import FormData

from campaigns.errors import ChannelShiftError, InvalidRule
from campaigns.models import (
    Channel,
    GuardrailMetric,
    MigrationGoal,
    StackingPolicy,
    Stage,
)
from campaigns.money import DEFAULT_CURRENCY
from campaigns.services.audience import (
    count_customers,
    count_matching,
    stage_adoption,
    typical_order_minor,
)
from campaigns.services.campaigns import create_campaign
from campaigns.services.goals import source_channel_keys
from campaigns.types import utcnow
from web.deps import SessionDep, read_session
from web.ui.auth import SignedIn, SignedInUser, flash, ui_state
from web.ui.forms import FormState
from web.ui.pages import page_router
from web.ui.rendering import money, render, see_other
from web.ui.wizard.incentive_form import type_choices
from web.ui.wizard.planning import (
    DraftAudience,
    PowerPlan,
    arm_offer,
    find_conflicts,
    power_plan,
)
from web.ui.wizard.state import (
    MAX_TREATMENT_ARMS,
    WizardState,
    decode_state,
    encode_state,
    new_state,
)
from web.ui.wizard.steps import (
    STEPS,
    TITLES,
    StepResult,
    WizardContext,
    add_arm,
    arm_nodes,
    campaign_payload,
    change_rows,
    collect,
    first_failure,
    goal_rules,
    place_service_errors,
    remove_arm,
    step_index,
    step_values,
    validate,
    validate_review,
)

router = page_router()

STATE_FIELD = "wizard_state"
GUARDRAILS = [
    (GuardrailMetric.COMPLAINTS.value, "Complaints: pause if treated customers complain more"),
    (GuardrailMetric.CHURN.value, "Churn: pause if treated customers leave more often"),
    (GuardrailMetric.REVENUE.value, "Revenue: pause if treated customers spend less"),
]
STACKING = [
    (StackingPolicy.EXCLUSIVE.value,
     "Exclusive: a customer sees only the highest-priority exclusive offer"),
    (StackingPolicy.STACKABLE.value, "Stackable: combines with other stackable offers"),
]


def _zone(user: SignedInUser) -> tzinfo:
    try:
        return ZoneInfo(user.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _context(session: Session, user: SignedInUser) -> WizardContext:
    return WizardContext(session=session, zone=_zone(user), now=utcnow())


async def submitted_form(request: Request) -> FormData:
    """The posted form with every value of every name (the guardrail boxes repeat a name)."""
    return await request.form()


Submitted = Annotated[FormData, Depends(submitted_form)]


# --------------------------------------------------------------------------- rendering


def _progress(state: WizardState, current: str) -> list[dict[str, Any]]:
    here = step_index(current)
    return [{"step": step, "title": TITLES[step], "number": index + 1,
             "current": step == current, "done": index < here,
             "reachable": index != here and index <= max(state.reached, here)}
            for index, step in enumerate(STEPS)]


def _goal_options(session: Session) -> list[dict[str, Any]]:
    goals = list(session.exec(select(MigrationGoal).order_by(col(MigrationGoal.name))).all())
    sources = source_channel_keys(session, [goal.id for goal in goals if goal.id is not None])
    channels = {channel.id: channel for channel in session.exec(select(Channel)).all()}
    stages = {stage.id: stage for stage in session.exec(select(Stage)).all()}
    options = []
    for goal in goals:
        assert goal.id is not None
        target = channels[goal.target_channel_id]
        summary = (f"{stages[goal.stage_id].name}: {', '.join(sources[goal.id])} → "
                   f"{target.key}, +{float(goal.target_uplift) * 100:g} pp")
        options.append({"goal": goal, "stage": stages[goal.stage_id], "target": target,
                        "sources": sources[goal.id], "summary": summary,
                        "option": (str(goal.id), f"{goal.name} ({summary})")})
    return options


def _selected_goal(session: Session, state: WizardState) -> MigrationGoal | None:
    text = state.text("goal_id")
    return session.get(MigrationGoal, int(text)) if text.isdigit() else None


@dataclass(frozen=True)
class AudienceCount:
    matching: int | None
    total: int
    problem: str | None
    goal_rule: str | None


def audience_count(session: Session, *, rule_text: str, goal: MigrationGoal | None
                   ) -> AudienceCount:
    """Customers matching the goal's rule and the typed one, or the typed rule's problem."""
    total = count_customers(session)
    try:
        matching: int | None = count_matching(session, rule_text,
                                              within=goal_rules(session, goal))
        problem = None
    except InvalidRule as error:
        matching = None
        problem = "; ".join(item.msg for item in error.errors) or error.message
    return AudienceCount(matching=matching, total=total, problem=problem,
                         goal_rule=goal.eligibility_rule if goal else None)


def _step_context(ctx: WizardContext, state: WizardState, step: str) -> dict[str, Any]:
    if step in ("audience", "review"):
        # These count customers (the whole table for a broad rule): in a read view, which
        # on SQLite does not keep offers, redemptions and events waiting meanwhile.
        with read_session(ctx.session) as view:
            return _reading_step_context(replace(ctx, session=view), state, step)
    return _reading_step_context(ctx, state, step)


def _reading_step_context(ctx: WizardContext, state: WizardState, step: str
                          ) -> dict[str, Any]:
    session = ctx.session
    if step == "goal":
        return {"goals": _goal_options(session)}
    if step == "audience":
        goal = _selected_goal(session, state)
        return {"goal": goal, "count": audience_count(
            session, rule_text=state.text("eligibility_rule"), goal=goal)}
    if step == "arms":
        return {"arms": [{"index": index, "draft": arm, "nodes": arm_nodes(arm),
                          "prefix": f"arm{index}-"} for index, arm in enumerate(state.arms)],
                "types": type_choices(), "can_add": len(state.arms) < MAX_TREATMENT_ARMS}
    if step == "schedule":
        return {"zone": str(ctx.zone)}
    if step == "policy":
        return {"guardrail_options": GUARDRAILS, "stacking_options": STACKING}
    if step == "review":
        return _review_context(ctx, state)
    return {}


def render_step(request: Request, ctx: WizardContext, state: WizardState, step: str, *,
                form: FormState | None = None, status_code: int = 200) -> Response:
    state.reached = max(state.reached, step_index(step))
    form = form or FormState(values=step_values(step, state))
    return render(request, "wizard/page.html", {
        "title": f"New campaign: {TITLES[step]}", "step": step, "step_title": TITLES[step],
        # "steps", not "count": the audience step's context has a "count" of its own.
        "number": step_index(step) + 1, "steps": len(STEPS), "progress": _progress(state, step),
        "form": form, "wizard_state": encode_state(state, ui_state(request).signer),
        "state_field": STATE_FIELD, "first": step == STEPS[0], **_step_context(ctx, state, step),
    }, status_code=status_code)


# --------------------------------------------------------------------------- review


@dataclass(frozen=True)
class Baseline:
    rate: float | None
    measured: float | None
    active: int
    adopted: int
    window_days: int
    typed: bool


def _review_context(ctx: WizardContext, state: WizardState) -> dict[str, Any]:
    """Everything the review shows: the campaign as it will be made, its power, its clashes.

    Only reached when every earlier step is valid, so each result carries its data.
    """
    session = ctx.session
    results = {step: validate(step, state, ctx) for step in STEPS[:-1]}
    planning = validate_review(state, ctx).data
    goal: MigrationGoal = results["goal"].data["goal"]
    rules = [*goal_rules(session, goal), results["audience"].data["rule"]]
    live_count = count_customers(session, rules)
    since = ctx.now - timedelta(days=goal.window_days)
    measured = stage_adoption(session, rules=rules, stage_id=goal.stage_id,
                              channel_id=goal.target_channel_id, since=since, until=ctx.now)
    baseline = Baseline(rate=planning["baseline"] if planning["baseline"] is not None
                        else measured.rate, measured=measured.rate, active=measured.active,
                        adopted=measured.adopted, window_days=goal.window_days,
                        typed=planning["baseline"] is not None)
    audience = planning["expected_audience"]
    audience = live_count if audience is None else audience
    arms = results["arms"].data
    plan: PowerPlan | None = None
    if baseline.rate is not None:
        plan = power_plan(audience=audience, baseline=baseline.rate,
                          target_uplift=float(goal.target_uplift),
                          control_weight=arms["control_weight"],
                          arms=[(arm["name"], arm["weight"]) for arm in arms["arms"][1:]])
    measured_order = typical_order_minor(session, rules=rules, since=since, until=ctx.now)
    order = planning["typical_order_minor"]
    order = measured_order if order is None else order
    target = session.get(Channel, goal.target_channel_id)
    target_key = target.key if target else None
    # The wizard makes campaigns in the default currency (its money inputs say so).
    offers = [arm_offer(name, type_key, config, order_minor=order, channel_key=target_key,
                        currency=DEFAULT_CURRENCY)
              for name, type_key, config in arms["offers"]]
    schedule = results["schedule"].data
    conflicts = find_conflicts(session, DraftAudience(
        goal=goal, rules=rules, starts_at=schedule["starts_at"], ends_at=schedule["ends_at"],
        offers=offers, stacking=results["policy"].data["stacking"]),
        order_minor=order, money=money)
    return {
        "results": {step: result.data for step, result in results.items()},
        "goal": goal, "stage": session.get(Stage, goal.stage_id), "target": target,
        "live_count": live_count, "audience": audience, "baseline": baseline, "plan": plan,
        "target_uplift": float(goal.target_uplift), "offers": offers,
        "order": order, "measured_order": measured_order, "conflicts": conflicts,
        "arm_weights": [(arm["name"], arm["weight"], arm.get("is_control", False))
                        for arm in arms["arms"]],
    }


# --------------------------------------------------------------------------- moving


def _advance(request: Request, ctx: WizardContext, state: WizardState, *, current: str,
             target: str) -> Response:
    """Validate the steps from ``current`` up to ``target``; show the first that fails."""
    on_the_way = STEPS[step_index(current):step_index(target)]
    failure = first_failure(state, ctx, on_the_way)
    if failure is not None:
        step, result = failure
        return render_step(request, ctx, state, step, form=result.form, status_code=422)
    return render_step(request, ctx, state, target)


def _create(request: Request, ctx: WizardContext, state: WizardState, *, user: SignedInUser
            ) -> Response:
    results: dict[str, StepResult] = {}
    for step in STEPS:
        result = validate(step, state, ctx)
        if not result.ok:
            return render_step(request, ctx, state, step, form=result.form, status_code=422)
        results[step] = result
    try:
        # A savepoint: a refusal (the name taken meanwhile) leaves no incentive behind.
        with ctx.session.begin_nested():
            campaign = create_campaign(ctx.session, campaign_create=campaign_payload(results),
                                       actor=user.actor)
    except ChannelShiftError as error:
        step, form = place_service_errors(error, state)
        return render_step(request, ctx, state, step, form=form, status_code=422)
    flash(request, f"Campaign '{campaign.name}' created as a draft. Check it, then schedule "
          "or start it.")
    return see_other(f"/campaigns/{campaign.id}")


def _edit_arms(state: WizardState, action: str, argument: str) -> None:
    """Add or remove an arm, or a row of an arm's list setting (prizes, tiers)."""
    index_text, _, key = argument.partition(":")
    index = int(index_text) if index_text.isdigit() else -1
    if action == "add_arm":
        add_arm(state)
    elif action == "remove_arm":
        remove_arm(state, index)
    elif action == "add_row":
        change_rows(state, index, key, +1)
    elif action == "remove_row":
        change_rows(state, index, key, -1)


ARM_ACTIONS = frozenset({"add_arm", "remove_arm", "add_row", "remove_row", "refresh"})


# --------------------------------------------------------------------------- routes


@router.get("/campaigns/new", name="ui.wizard")
def wizard_start(request: Request, session: SessionDep, user: SignedIn,
                 goal: Annotated[int | None, Query(ge=1)] = None) -> Response:
    """The first step, on a fresh state (``?goal=`` preselects a goal)."""
    ctx = _context(session, user)
    state = new_state(user_id=user.id, zone=ctx.zone, now=ctx.now)
    if goal is not None and session.get(MigrationGoal, goal) is not None:
        state.values["goal_id"] = str(goal)
    return render_step(request, ctx, state, STEPS[0])


@router.post("/campaigns/new", name="ui.wizard.step")
def wizard_step(request: Request, session: SessionDep, user: SignedIn,
                submitted: Submitted) -> Response:
    """One press of a wizard button: keep what was typed, then go where it says."""
    ctx = _context(session, user)
    token = submitted.get(STATE_FIELD)
    state = decode_state(token, ui_state(request).signer, user_id=user.id) \
        if isinstance(token, str) and token else new_state(user_id=user.id, zone=ctx.zone,
                                                           now=ctx.now)
    step = str(submitted.get("step") or STEPS[0])
    if step not in STEPS or step_index(step) > state.reached:
        step = STEPS[min(state.reached, len(STEPS) - 1)]
    collect(step, state, submitted)
    action, _, argument = str(submitted.get("nav") or "next").partition(":")
    here = step_index(step)
    if action == "back":
        return render_step(request, ctx, state, STEPS[max(here - 1, 0)])
    if action == "goto" and argument in STEPS:
        if step_index(argument) <= here:
            return render_step(request, ctx, state, argument)
        target = STEPS[min(step_index(argument), state.reached)]
        return _advance(request, ctx, state, current=step, target=target)
    if action in ARM_ACTIONS and step == "arms":
        _edit_arms(state, action, argument)
        return render_step(request, ctx, state, "arms")
    if step == "review" and action in ("recalc", "create"):
        review = validate_review(state, ctx)
        if not review.ok:
            return render_step(request, ctx, state, "review", form=review.form,
                               status_code=422)
        if action == "create":
            return _create(request, ctx, state, user=user)
        return render_step(request, ctx, state, "review")
    if here == len(STEPS) - 1:
        return render_step(request, ctx, state, step)
    return _advance(request, ctx, state, current=step, target=STEPS[here + 1])


@router.get("/campaigns/new/audience-count", name="ui.wizard.audience_count")
def wizard_audience_count(
    request: Request, session: SessionDep, user: SignedIn,
    eligibility_rule: Annotated[str, Query(max_length=4000)] = "",
    goal: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The live count under the rule input (an htmx fragment): matches, or the rule's error."""
    # Asked as the marketer types: in a read view, so that counting a large customer table
    # keeps no writer waiting on SQLite.
    with read_session(session) as view:
        goal_row = view.get(MigrationGoal, goal) if goal is not None else None
        count = audience_count(view, rule_text=eligibility_rule, goal=goal_row)
    return render(request, "wizard/audience_count.html", {"count": count})
