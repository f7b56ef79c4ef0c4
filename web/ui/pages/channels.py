"""Channels and the cost to serve one interaction on each channel at each stage."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Form, Path, Request
from fastapi.responses import Response
from sqlmodel import Session, col, select

from campaigns.errors import ChannelShiftError, NotFound
from campaigns.models import Channel, ChannelKind, Stage
from campaigns.services.channels import (
    channel_by_key,
    cost_table,
    create_channel,
    set_channel_cost,
    update_channel,
)
from web.deps import SessionDep
from web.ui.auth import SignedIn, flash
from web.ui.forms import FormFields, FormState, attempt, format_money, parse_money
from web.ui.pages import page_router
from web.ui.problems import PageNotFound
from web.ui.rendering import render, see_other

router = page_router()

ChannelKey = Annotated[str, Path(min_length=1, max_length=40)]
KINDS = [(kind.value, kind.value.replace("_", " ").capitalize()) for kind in ChannelKind]


def _stages(session: Session) -> list[Stage]:
    return list(session.exec(select(Stage).order_by(col(Stage.position), col(Stage.key))).all())


def _channel(session: Session, key: str) -> Channel:
    try:
        return channel_by_key(session, key, field="key")
    except NotFound:
        raise PageNotFound(f"There is no channel with the key '{key}'.") from None


def cost_chart(channels: list[Channel], stages: list[Stage],
               costs: dict[tuple[str, str], int]) -> dict[str, Any]:
    """Data for the grouped bar chart: cost per interaction (major units) by stage."""
    return {
        "type": "bar",
        "labels": [channel.name for channel in channels],
        "datasets": [
            {"label": stage.name,
             "data": [costs[(channel.key, stage.key)] / 100
                      if (channel.key, stage.key) in costs else None for channel in channels]}
            for stage in stages],
        "yTitle": "EUR per interaction",
    }


@router.get("/channels", name="ui.channels")
def channels_page(request: Request, session: SessionDep, user: SignedIn) -> Response:
    channels = list(session.exec(select(Channel).order_by(col(Channel.key))).all())
    stages = _stages(session)
    costs = cost_table(session)
    return render(request, "channels/list.html", {
        "title": "Channels", "channels": channels, "stages": stages, "costs": costs,
        "chart": json.dumps(cost_chart(channels, stages, costs)) if costs else None})


def _channel_form(request: Request, form: FormState, *, channel: Channel | None = None,
                  status_code: int = 200) -> Response:
    title = f"Edit channel {channel.name}" if channel else "New channel"
    return render(request, "channels/form.html", {
        "title": title, "form": form, "channel": channel, "kinds": KINDS},
        status_code=status_code)


@router.get("/channels/new", name="ui.channels.new")
def new_channel_page(request: Request, user: SignedIn) -> Response:
    return _channel_form(request, FormState(values={"key": "", "name": "", "kind": ""}))


@router.post("/channels", name="ui.channels.create")
def create_channel_submit(
    request: Request, session: SessionDep, user: SignedIn,
    key: Annotated[str, Form(max_length=200)] = "",
    name: Annotated[str, Form(max_length=500)] = "",
    kind: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    form = FormState(values={"key": key.strip(), "name": name.strip(), "kind": kind})
    channel = attempt(session, form, lambda: create_channel(
        session, channel_create=form.values, actor=user.actor))
    if channel is None:
        return _channel_form(request, form, status_code=422)
    flash(request, f"Channel '{channel.name}' created. Now set what an interaction costs.")
    return see_other(request.app.url_path_for("ui.channels.costs", key=channel.key))


@router.get("/channels/{key}/edit", name="ui.channels.edit")
def edit_channel_page(request: Request, session: SessionDep, user: SignedIn, key: ChannelKey
                      ) -> Response:
    channel = _channel(session, key)
    return _channel_form(request, FormState(values={
        "name": channel.name, "kind": channel.kind, "active": channel.active}), channel=channel)


@router.post("/channels/{key}/edit", name="ui.channels.update")
def update_channel_submit(
    request: Request, session: SessionDep, user: SignedIn, key: ChannelKey,
    name: Annotated[str, Form(max_length=500)] = "",
    kind: Annotated[str, Form(max_length=40)] = "",
    active: Annotated[str | None, Form(max_length=10)] = None,
) -> Response:
    channel = _channel(session, key)
    form = FormState(values={"name": name.strip(), "kind": kind, "active": active is not None})
    updated = attempt(session, form, lambda: update_channel(
        session, channel=channel, channel_update=form.values, actor=user.actor))
    if updated is None:
        return _channel_form(request, form, channel=channel, status_code=422)
    flash(request, f"Channel '{updated.name}' saved.")
    return see_other(request.app.url_path_for("ui.channels"))


def _costs_form(request: Request, form: FormState, *, channel: Channel, stages: list[Stage],
                status_code: int = 200) -> Response:
    return render(request, "channels/costs.html", {
        "title": f"Costs of {channel.name}", "form": form, "channel": channel,
        "stages": stages}, status_code=status_code)


def _cost_field(stage: Stage) -> str:
    return f"cost_{stage.key}"


@router.get("/channels/{key}/costs", name="ui.channels.costs")
def channel_costs_page(request: Request, session: SessionDep, user: SignedIn,
                       key: ChannelKey) -> Response:
    channel = _channel(session, key)
    stages = _stages(session)
    costs = cost_table(session)
    values = {_cost_field(stage): format_money(costs.get((channel.key, stage.key)))
              for stage in stages}
    return _costs_form(request, FormState(values=values), channel=channel, stages=stages)


def _cost_changes(channel: Channel, stages: list[Stage], costs: dict[tuple[str, str], int],
                  form: FormState) -> list[tuple[Stage, int]]:
    """The stages whose typed cost differs from the stored one; problems go on ``form``."""
    changes: list[tuple[Stage, int]] = []
    for stage in stages:
        name = _cost_field(stage)
        text = form.values[name]
        if not text and (channel.key, stage.key) not in costs:
            continue  # no cost yet and none given: leave the stage without one
        minor = parse_money(text, name=name, form=form)
        if minor is not None and minor != costs.get((channel.key, stage.key)):
            changes.append((stage, minor))
    return changes


def _save_costs(session: Session, *, channel: Channel, changes: list[tuple[Stage, int]],
                form: FormState, actor: str) -> None:
    """Set every changed cost in one savepoint: all of them, or none and a message."""
    current: Stage | None = None
    try:
        with session.begin_nested():
            for current, minor in changes:
                set_channel_cost(session, cost={"channel": channel.key, "stage": current.key,
                                                "cost_minor": minor}, actor=actor)
    except ChannelShiftError as error:
        form.absorb(error, fields={"cost_minor": _cost_field(current)} if current else None)


@router.post("/channels/{key}/costs", name="ui.channels.costs.save")
def channel_costs_submit(request: Request, session: SessionDep, user: SignedIn,
                         key: ChannelKey, values: FormFields) -> Response:
    """Set the costs that changed, all or none; a blank stays blank only if it was."""
    channel = _channel(session, key)
    stages = _stages(session)
    form = FormState(values={_cost_field(stage): values.get(_cost_field(stage), "").strip()
                             for stage in stages})
    changes = _cost_changes(channel, stages, cost_table(session), form)
    if not form.failed:
        _save_costs(session, channel=channel, changes=changes, form=form, actor=user.actor)
    if form.failed:
        return _costs_form(request, form, channel=channel, stages=stages, status_code=422)
    flash(request, f"Costs of {channel.name} saved ({len(changes)} changed)."
          if changes else f"Costs of {channel.name} unchanged.")
    return see_other(request.app.url_path_for("ui.channels"))
