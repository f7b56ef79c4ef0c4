"""Channels, stage costs and migration goals."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from campaigns.errors import Conflict, InvalidRule, NotFound, ValidationFailed
from campaigns.models import AuditLog, GoalSourceChannel
from campaigns.services.channels import (
    cost_table,
    create_channel,
    create_stage,
    ensure_default_stages,
    set_channel_cost,
    update_channel,
)
from campaigns.services.goals import source_channels
from tests.builders import ACTOR, make_channel, make_goal


class TestChannels:
    def test_create_and_update(self, session: Session) -> None:
        channel = create_channel(session, actor=ACTOR, channel_create={
            "key": "call_centre", "name": "Call centre", "kind": "call_centre"})
        update_channel(session, channel=channel, actor=ACTOR,
                       channel_update={"name": "Contact centre"})
        assert channel.name == "Contact centre"
        actions = session.exec(select(AuditLog.action).where(
            AuditLog.entity_type == "channel")).all()
        assert list(actions) == ["channel.create", "channel.update"]

    @pytest.mark.parametrize(("data", "loc"), [
        ({"key": "Web Shop", "name": "Web", "kind": "web"}, ("key",)),
        ({"key": "web", "name": "", "kind": "web"}, ("name",)),
        ({"key": "web", "name": "Web", "kind": "telepathy"}, ("kind",)),
        ({"key": "web", "name": "Web"}, ("kind",)),
        ({"key": "web", "name": "Web", "kind": "web", "colour": "red"}, ("colour",)),
    ])
    def test_bad_channel_names_field(self, session: Session, data, loc) -> None:
        with pytest.raises(ValidationFailed) as caught:
            create_channel(session, actor=ACTOR, channel_create=data)
        assert [e.loc for e in caught.value.errors] == [loc]

    def test_duplicate_key(self, session: Session) -> None:
        make_channel(session, key="web")
        with pytest.raises(Conflict) as caught:
            create_channel(session, actor=ACTOR,
                           channel_create={"key": "web", "name": "Web 2", "kind": "web"})
        assert caught.value.errors[0].loc == ("key",)


class TestStageCosts:
    def test_default_stages_exist_once(self, session: Session) -> None:
        first = ensure_default_stages(session)
        second = ensure_default_stages(session)
        assert [s.key for s in first] == ["pre_sale", "purchase", "after_sale"]
        assert [s.id for s in first] == [s.id for s in second]

    def test_stages_are_extensible(self, session: Session) -> None:
        ensure_default_stages(session)
        create_stage(session, actor=ACTOR, stage_create={"key": "onboarding",
                                                         "name": "Onboarding", "position": 4})
        make_channel(session, key="app")
        set_channel_cost(session, actor=ACTOR,
                         cost={"channel": "app", "stage": "onboarding", "cost_minor": 12})
        assert cost_table(session)[("app", "onboarding")] == 12

    def test_set_replaces_cost(self, session: Session) -> None:
        ensure_default_stages(session)
        make_channel(session, key="call_centre")
        set_channel_cost(session, actor=ACTOR,
                         cost={"channel": "call_centre", "stage": "after_sale", "cost_minor": 700})
        set_channel_cost(session, actor=ACTOR,
                         cost={"channel": "call_centre", "stage": "after_sale", "cost_minor": 650})
        assert cost_table(session) == {("call_centre", "after_sale"): 650}

    @pytest.mark.parametrize(("cost", "error", "loc"), [
        ({"channel": "web", "stage": "after_sale", "cost_minor": 2.5}, ValidationFailed,
         ("cost_minor",)),
        ({"channel": "web", "stage": "after_sale", "cost_minor": -1}, ValidationFailed,
         ("cost_minor",)),
        ({"channel": "fax", "stage": "after_sale", "cost_minor": 1}, NotFound, ("channel",)),
        ({"channel": "web", "stage": "afterlife", "cost_minor": 1}, NotFound, ("stage",)),
    ])
    def test_bad_cost(self, session: Session, cost, error, loc) -> None:
        ensure_default_stages(session)
        make_channel(session, key="web")
        with pytest.raises(error) as caught:
            set_channel_cost(session, actor=ACTOR, cost=cost)
        assert caught.value.errors[0].loc == loc
        assert cost_table(session) == {}


class TestGoals:
    def test_create_with_sources_and_rule(self, session: Session) -> None:
        goal = make_goal(session, sources=("call_centre", "ivr"),
                         rule="value_tier in [bronze, silver] and preferred_channel == call_centre")
        assert [c.key for c in source_channels(session, goal)] == ["call_centre", "ivr"]
        assert goal.eligibility_tree is not None and goal.eligibility_tree["version"] == 1
        assert goal.metric == "adoption" and goal.window_days == 30

    def test_rule_errors_name_the_field_and_term(self, session: Session) -> None:
        with pytest.raises(InvalidRule) as caught:
            make_goal(session, rule="colour == red")
        assert caught.value.errors[0].loc == ("eligibility_rule",)
        assert "colour" in caught.value.errors[0].msg

    def test_rule_checks_channel_keys(self, session: Session) -> None:
        with pytest.raises(InvalidRule, match="fax"):
            make_goal(session, rule="preferred_channel == fax")

    def test_target_cannot_be_a_source(self, session: Session) -> None:
        with pytest.raises(ValidationFailed, match="cannot also be a source"):
            make_goal(session, sources=("web",), target="web")

    @pytest.mark.parametrize(("overrides", "loc"), [
        ({"target_uplift": "0"}, ("target_uplift",)),
        ({"target_uplift": "1.5"}, ("target_uplift",)),
        ({"window_days": 0}, ("window_days",)),
        ({"metric": "vibes"}, ("metric",)),
        ({"source_channels": []}, ("source_channels",)),
    ])
    def test_bad_goal_names_field(self, session: Session, overrides, loc) -> None:
        with pytest.raises(ValidationFailed) as caught:
            make_goal(session, **overrides)
        assert loc in [e.loc for e in caught.value.errors]

    def test_unknown_channel_changes_nothing(self, session: Session) -> None:
        with pytest.raises(NotFound) as caught:
            make_goal(session, sources=("call_centre",), target="web",
                      source_channels=["call_centre", "pigeon"])
        assert caught.value.errors[0].loc == ("source_channels",)
        assert session.exec(select(GoalSourceChannel)).all() == []
