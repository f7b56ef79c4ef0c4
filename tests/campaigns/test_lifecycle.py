"""Campaign creation, edits, weights and lifecycle transitions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from campaigns.errors import (
    Conflict,
    InvalidIncentiveConfig,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from campaigns.models import ArmAllocation, Assignment, AuditLog, CampaignStatus, Customer
from campaigns.services.campaigns import (
    add_arm,
    advance_schedules,
    campaign_arms,
    set_weights,
    transition,
    update_campaign,
)
from campaigns.types import utcnow
from tests.builders import ACTOR, control_arm, make_campaign, make_goal, percent_arm

S = CampaignStatus


def go(session: Session, campaign, *targets: S, **kwargs):
    for target in targets:
        transition(session, campaign=campaign, target=target, actor=ACTOR, **kwargs)
    return campaign


def audit_actions(session: Session, campaign_id: int) -> list[str]:
    return list(session.exec(select(AuditLog.action).where(
        AuditLog.entity_type == "campaign", AuditLog.entity_id == campaign_id
    ).order_by(AuditLog.id)).all())


class TestCreate:
    def test_creates_draft_with_arms_and_incentives(self, session: Session) -> None:
        campaign = make_campaign(session)
        assert campaign.status == "draft"
        arms = campaign_arms(session, campaign)
        assert [(a.name, a.weight, a.is_control) for a in arms] == [
            ("control", 50, True), ("ten percent", 50, False)]
        assert arms[0].incentive_id is None and arms[1].incentive_id is not None
        assert len(campaign.salt) == 32
        assert audit_actions(session, campaign.id)[0] == "campaign.create"

    def test_bad_incentive_names_arm_and_field(self, session: Session) -> None:
        with pytest.raises(InvalidIncentiveConfig) as caught:
            make_campaign(session, arms=[control_arm(), percent_arm(percent_bp=0)])
        locs = [e.loc for e in caught.value.errors]
        assert any(loc[:3] == ("arms", 1, "incentive") and "percent_bp" in loc for loc in locs)

    def test_two_controls_refused(self, session: Session) -> None:
        arms = [control_arm(weight=50), {**control_arm(weight=50), "name": "other"}]
        with pytest.raises(ValidationFailed) as caught:
            make_campaign(session, arms=arms)
        assert caught.value.errors[0].loc == ("arms", 1, "is_control")

    def test_control_with_incentive_refused(self, session: Session) -> None:
        arm = {**percent_arm(), "is_control": True}
        with pytest.raises(ValidationFailed, match="control arm gets no incentive"):
            make_campaign(session, arms=[arm])

    def test_duplicate_name_refused(self, session: Session) -> None:
        goal = make_goal(session)
        make_campaign(session, goal=goal)
        with pytest.raises(Conflict) as caught:
            make_campaign(session, goal=goal)
        assert caught.value.errors[0].loc == ("name",)

    def test_unknown_goal_refused(self, session: Session) -> None:
        goal = make_goal(session)
        with pytest.raises(NotFound, match="goal 987654 does not exist") as caught:
            make_campaign(session, goal=goal, goal_id=987654)
        assert caught.value.errors[0].loc == ("goal_id",)

    def test_money_must_be_integer_minor_units(self, session: Session) -> None:
        with pytest.raises(ValidationFailed) as caught:
            make_campaign(session, budget_minor=100.5)
        assert caught.value.errors[0].loc == ("budget_minor",)

    def test_naive_schedule_refused(self, session: Session) -> None:
        with pytest.raises(ValidationFailed) as caught:
            make_campaign(session, starts_at=utcnow().replace(tzinfo=None))
        assert caught.value.errors[0].loc == ("starts_at",)
        assert "timezone" in caught.value.errors[0].msg

    def test_opt_out_needs_reason(self, session: Session) -> None:
        with pytest.raises(ValidationFailed, match="control_opt_out_reason"):
            make_campaign(session, control_opt_out=True, arms=[percent_arm(weight=100)])


class TestTransitions:
    def test_happy_path(self, session: Session) -> None:
        campaign = make_campaign(session)
        go(session, campaign, S.SCHEDULED, S.RUNNING, S.PAUSED, S.RUNNING, S.ENDED)
        assert campaign.status == "ended"
        assert audit_actions(session, campaign.id) == [
            "campaign.create", "campaign.scheduled", "campaign.running", "campaign.paused",
            "campaign.running", "campaign.ended"]

    @pytest.mark.parametrize(("path", "target"), [
        ((), S.RUNNING), ((), S.PAUSED), ((), S.ENDED), ((), S.DRAFT),
        ((S.SCHEDULED,), S.PAUSED), ((S.SCHEDULED, S.RUNNING), S.DRAFT),
        ((S.SCHEDULED, S.RUNNING), S.SCHEDULED), ((S.SCHEDULED, S.RUNNING, S.PAUSED), S.DRAFT),
        ((S.SCHEDULED, S.RUNNING, S.ENDED), S.RUNNING),
        ((S.SCHEDULED, S.RUNNING, S.ENDED), S.DRAFT),
    ])
    def test_invalid_transition_refused_with_reason(self, session: Session, path, target) -> None:
        campaign = make_campaign(session)
        go(session, campaign, *path)
        before = campaign.status
        with pytest.raises(InvalidTransition) as caught:
            go(session, campaign, target)
        article = "an" if before == S.ENDED else "a"  # "an ended campaign"
        assert f"{article} {before} campaign cannot become {target.value}" in caught.value.message
        assert "allowed from" in caught.value.message
        assert campaign.status == before

    def test_unknown_status(self, session: Session) -> None:
        campaign = make_campaign(session)
        with pytest.raises(InvalidTransition, match="not a campaign status"):
            transition(session, campaign=campaign, target="launched", actor=ACTOR)

    @pytest.mark.parametrize(("overrides", "loc", "words"), [
        ({"arms": [control_arm(weight=100)]}, ("arms",), "at least one arm with an incentive"),
        ({"arms": [percent_arm(weight=100)]}, ("arms",), "add a control arm"),
        ({"arms": [control_arm(weight=40), percent_arm(weight=50)]}, ("arms",),
         "add up to 100 (they add up to 90)"),
        ({"arms": [control_arm(weight=0), percent_arm(weight=100)]},
         ("arms", "control", "weight"), "has no weight"),
        ({"budget_minor": None}, ("budget_minor",), "set a budget"),
        ({"budget_minor": 0}, ("budget_minor",), "set a budget"),
    ])
    def test_readiness_checks(self, session: Session, overrides, loc, words) -> None:
        campaign = make_campaign(session, **overrides)
        with pytest.raises(InvalidTransition) as caught:
            go(session, campaign, S.SCHEDULED)
        assert any(e.loc == loc and words in e.msg for e in caught.value.errors), \
            caught.value.errors
        assert campaign.status == "draft"

    def test_schedule_must_be_set_and_in_future(self, session: Session) -> None:
        campaign = make_campaign(session)
        update_campaign(session, campaign=campaign, actor=ACTOR,
                        campaign_update={"ends_at": utcnow() - timedelta(days=1),
                                         "starts_at": utcnow() - timedelta(days=3)})
        with pytest.raises(InvalidTransition) as caught:
            go(session, campaign, S.SCHEDULED)
        assert caught.value.errors[0].loc == ("ends_at",)
        assert "in the past" in caught.value.errors[0].msg

    def test_opt_out_with_reason_can_run(self, session: Session) -> None:
        campaign = make_campaign(session, control_opt_out=True,
                                 control_opt_out_reason="legal requires everyone gets the offer",
                                 arms=[percent_arm(weight=100)])
        go(session, campaign, S.SCHEDULED, S.RUNNING)
        assert campaign.status == "running"

    def test_resume_refused_when_budget_spent(self, session: Session) -> None:
        campaign = make_campaign(session, budget_minor=500)
        go(session, campaign, S.SCHEDULED, S.RUNNING, S.PAUSED)
        campaign.spent_minor = 500
        with pytest.raises(InvalidTransition, match="budget is spent"):
            go(session, campaign, S.RUNNING)
        update_campaign(session, campaign=campaign, actor=ACTOR,
                        campaign_update={"budget_minor": 1_000})
        go(session, campaign, S.RUNNING)

    def test_pause_records_reason(self, session: Session) -> None:
        campaign = make_campaign(session)
        go(session, campaign, S.SCHEDULED, S.RUNNING)
        transition(session, campaign=campaign, target="paused", actor=ACTOR,
                   reason="complaints up")
        assert campaign.pause_reason == "complaints up"
        entry = session.exec(select(AuditLog).where(AuditLog.action == "campaign.paused")).one()
        assert entry.details == {"from": "running", "to": "paused", "reason": "complaints up"}

    def test_scheduler_starts_and_ends(self, session: Session) -> None:
        campaign = make_campaign(session)
        go(session, campaign, S.SCHEDULED)
        assert advance_schedules(session, now=utcnow()) == []
        assert advance_schedules(session, now=campaign.starts_at + timedelta(seconds=1)) \
            == [campaign]
        assert campaign.status == "running"
        advance_schedules(session, now=campaign.ends_at + timedelta(seconds=1))
        assert campaign.status == "ended"

    def test_every_change_bumps_config_version(self, session: Session) -> None:
        campaign = make_campaign(session)
        version = campaign.config_version
        go(session, campaign, S.SCHEDULED)
        assert campaign.config_version == version + 1


class TestEdits:
    def test_live_campaign_refuses_structural_edit(self, session: Session) -> None:
        campaign = make_campaign(session)
        go(session, campaign, S.SCHEDULED, S.RUNNING)
        with pytest.raises(Conflict) as caught:
            update_campaign(session, campaign=campaign, actor=ACTOR,
                            campaign_update={"stacking": "stackable", "budget_minor": 200_000})
        assert [e.loc for e in caught.value.errors] == [("stacking",)]
        update_campaign(session, campaign=campaign, actor=ACTOR,
                        campaign_update={"budget_minor": 200_000})
        assert campaign.budget_minor == 200_000

    def test_budget_cannot_drop_below_spent(self, session: Session) -> None:
        campaign = make_campaign(session)
        campaign.spent_minor = 5_000
        with pytest.raises(ValidationFailed) as caught:
            update_campaign(session, campaign=campaign, actor=ACTOR,
                            campaign_update={"budget_minor": 4_999})
        assert caught.value.errors[0].loc == ("budget_minor",)

    def test_ended_campaign_is_frozen(self, session: Session) -> None:
        campaign = make_campaign(session)
        go(session, campaign, S.SCHEDULED, S.ENDED)
        with pytest.raises(Conflict, match="ended"):
            update_campaign(session, campaign=campaign, actor=ACTOR,
                            campaign_update={"description": "x"})

    def test_add_arm_only_in_draft(self, session: Session) -> None:
        campaign = make_campaign(session, arms=[control_arm(weight=50)])
        add_arm(session, campaign=campaign, actor=ACTOR, arm_create=percent_arm())
        assert len(campaign_arms(session, campaign)) == 2
        go(session, campaign, S.SCHEDULED)
        with pytest.raises(Conflict, match="draft"):
            add_arm(session, campaign=campaign, actor=ACTOR,
                    arm_create=percent_arm("another", weight=0))


class TestWeights:
    def test_before_exposure_weights_are_replaced(self, session: Session) -> None:
        campaign = make_campaign(session)
        set_weights(session, campaign=campaign, actor=ACTOR,
                    weights={"weights": {"control": 30, "ten percent": 70}})
        assert campaign.allocation_period == 1
        rows = session.exec(select(ArmAllocation.weight).where(
            ArmAllocation.campaign_id == campaign.id).order_by(ArmAllocation.arm_id)).all()
        assert list(rows) == [30, 70]

    def test_after_exposure_a_new_period_starts_and_assignments_stay(self, session) -> None:
        campaign = make_campaign(session)
        go(session, campaign, S.SCHEDULED, S.RUNNING)
        control, _treatment = campaign_arms(session, campaign)
        customer = Customer(external_id="C-exposed")
        session.add(customer)
        session.flush()
        session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                               arm_id=control.id))
        session.flush()
        set_weights(session, campaign=campaign, actor=ACTOR,
                    weights={"weights": {"control": 10, "ten percent": 90}})
        assert campaign.allocation_period == 2
        periods = session.exec(select(ArmAllocation.period, ArmAllocation.weight).where(
            ArmAllocation.campaign_id == campaign.id).order_by(ArmAllocation.period,
                                                               ArmAllocation.arm_id)).all()
        assert list(periods) == [(1, 50), (1, 50), (2, 10), (2, 90)]
        assignment = session.exec(select(Assignment)).one()
        assert assignment.arm_id == control.id

    @pytest.mark.parametrize(("weights", "loc"), [
        ({"control": 50}, ("weights", "ten percent")),
        ({"control": 50, "ten percent": 50, "ghost": 0}, ("weights", "ghost")),
        ({"control": 50, "ten percent": 60}, ("weights",)),
        ({"control": -1, "ten percent": 101}, ("weights", "control")),
    ])
    def test_bad_weights_change_nothing(self, session: Session, weights, loc) -> None:
        campaign = make_campaign(session)
        with pytest.raises(ValidationFailed) as caught:
            set_weights(session, campaign=campaign, actor=ACTOR, weights={"weights": weights})
        assert loc in [e.loc for e in caught.value.errors]
        assert [a.weight for a in campaign_arms(session, campaign)] == [50, 50]
