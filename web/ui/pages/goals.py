"""Migration goals: which customers to move from which channels to which, at what stage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from campaigns.models import Channel, GoalMetric, MigrationGoal, Stage
from campaigns.services.goals import create_goal, source_channel_keys
from web.deps import SessionDep
from web.ui.auth import SignedIn, flash
from web.ui.forms import FormState, attempt, parse_int, parse_percentage_points
from web.ui.pages import page_router
from web.ui.rendering import render, see_other

router = page_router()

METRICS = [
    (GoalMetric.ADOPTION.value, "Adoption: used the target channel for the stage"),
    (GoalMetric.SHARE.value, "Share: of the stage's interactions on the target channel"),
]
#: The service names the field ``target_uplift``; the form takes percentage points.
FIELD_NAMES = {"stage": "stage", "target_uplift": "target_uplift_points"}


def _choices(session: Session) -> dict[str, Any]:
    stages = session.exec(select(Stage).order_by(col(Stage.position))).all()
    channels = session.exec(select(Channel).where(col(Channel.active))
                            .order_by(col(Channel.key))).all()
    return {
        "stage_options": [(stage.key, stage.name) for stage in stages],
        "channel_options": [(channel.key, f"{channel.name} ({channel.key})")
                            for channel in channels],
        "metrics": METRICS,
    }


@router.get("/goals", name="ui.goals")
def goals_page(request: Request, session: SessionDep, user: SignedIn) -> Response:
    goals = list(session.exec(select(MigrationGoal).order_by(col(MigrationGoal.name))).all())
    sources = source_channel_keys(session, [goal.id for goal in goals if goal.id is not None])
    channels = {channel.id: channel for channel in session.exec(select(Channel)).all()}
    stages = {stage.id: stage for stage in session.exec(select(Stage)).all()}
    return render(request, "goals/list.html", {
        "title": "Migration goals", "goals": goals, "sources": sources,
        "channels": channels, "stages": stages})


def _goal_form(request: Request, session: Session, form: FormState, *, status_code: int = 200
               ) -> Response:
    return render(request, "goals/form.html", {
        "title": "New migration goal", "form": form, **_choices(session)},
        status_code=status_code)


@router.get("/goals/new", name="ui.goals.new")
def new_goal_page(request: Request, session: SessionDep, user: SignedIn) -> Response:
    return _goal_form(request, session, FormState(values={
        "name": "", "description": "", "stage": "", "source_channels": [],
        "target_channel": "", "metric": GoalMetric.ADOPTION.value, "window_days": "30",
        "target_uplift_points": "", "eligibility_rule": ""}))


@router.post("/goals", name="ui.goals.create")
def create_goal_submit(
    request: Request, session: SessionDep, user: SignedIn,
    name: Annotated[str, Form(max_length=500)] = "",
    description: Annotated[str, Form(max_length=5000)] = "",
    stage: Annotated[str, Form(max_length=40)] = "",
    source_channels: Annotated[list[str] | None, Form()] = None,
    target_channel: Annotated[str, Form(max_length=40)] = "",
    metric: Annotated[str, Form(max_length=20)] = GoalMetric.ADOPTION.value,
    window_days: Annotated[str, Form(max_length=20)] = "",
    target_uplift_points: Annotated[str, Form(max_length=20)] = "",
    eligibility_rule: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    form = FormState(values={
        "name": name.strip(), "description": description.strip(), "stage": stage,
        "source_channels": list(source_channels or []), "target_channel": target_channel,
        "metric": metric, "window_days": window_days.strip(),
        "target_uplift_points": target_uplift_points.strip(),
        "eligibility_rule": eligibility_rule.strip()})
    days = parse_int(window_days, name="window_days", form=form)
    uplift = parse_percentage_points(target_uplift_points, name="target_uplift_points",
                                     form=form)
    if not form.values["source_channels"]:
        form.add("source_channels", "Choose at least one channel to move customers away from.")
    if not stage:
        form.add("stage", "Choose the stage of the relationship.")
    if not target_channel:
        form.add("target_channel", "Choose the channel to move customers to.")
    elif target_channel in form.values["source_channels"]:
        form.add("target_channel", "The target cannot also be a channel to move away from.")
    goal = None
    if not form.failed:
        goal = attempt(session, form, lambda: create_goal(session, actor=user.actor, goal_create={
            "name": form.values["name"], "description": form.values["description"],
            "stage": stage, "source_channels": form.values["source_channels"],
            "target_channel": target_channel, "metric": metric, "window_days": days,
            "target_uplift": uplift,
            "eligibility_rule": form.values["eligibility_rule"] or None,
        }), fields=FIELD_NAMES)
    if goal is None:
        return _goal_form(request, session, form, status_code=422)
    flash(request, f"Goal '{goal.name}' created.")
    return see_other(request.app.url_path_for("ui.goals"))
