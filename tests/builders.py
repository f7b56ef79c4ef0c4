"""Small typed builders for test data; every argument has a sensible default."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from campaigns.models import Campaign, Channel, Customer, MigrationGoal
from campaigns.services.campaigns import create_campaign
from campaigns.services.channels import create_channel, ensure_default_stages, set_channel_cost
from campaigns.services.goals import create_goal
from campaigns.types import utcnow

ACTOR = "test"


def make_channel(session: Session, *, key: str = "web", kind: str | None = None,
                 name: str | None = None) -> Channel:
    existing = session.exec(select(Channel).where(Channel.key == key)).first()
    if existing:
        return existing
    kind = kind or {"web": "web", "app": "app", "call_centre": "call_centre", "ivr": "ivr",
                    "store": "store"}.get(key, "partner")
    return create_channel(session, actor=ACTOR,
                          channel_create={"key": key, "name": name or key.title(), "kind": kind})


def make_goal(session: Session, *, name: str = "Self-service after sale",
              stage: str = "after_sale", sources: tuple[str, ...] = ("call_centre",),
              target: str = "web", rule: str | None = None, **overrides: Any) -> MigrationGoal:
    existing = session.exec(select(MigrationGoal).where(MigrationGoal.name == name)).first()
    if existing:
        return existing
    ensure_default_stages(session)
    for key in (*sources, target):
        make_channel(session, key=key)
    data = {"name": name, "stage": stage, "source_channels": list(sources),
            "target_channel": target, "target_uplift": "0.05", "eligibility_rule": rule}
    data.update(overrides)
    return create_goal(session, actor=ACTOR, goal_create=data)


def make_import_world(session: Session) -> None:
    """What imported events are checked against: web, app and call-centre channels, the
    after-sale goal from the call centre to the web, and a configured web cost (40)."""
    make_goal(session, target="web", sources=("call_centre",))
    make_channel(session, key="app")
    set_channel_cost(session, actor=ACTOR,
                     cost={"channel": "web", "stage": "after_sale", "cost_minor": 40})


def percent_arm(name: str = "ten percent", *, weight: int = 50, percent_bp: int = 1000
                ) -> dict[str, Any]:
    return {"name": name, "weight": weight,
            "incentive": {"name": f"{name} off", "type": "percent_discount",
                          "config": {"percent_bp": percent_bp}}}


def control_arm(*, weight: int = 50) -> dict[str, Any]:
    return {"name": "control", "weight": weight, "is_control": True}


def make_campaign(
    session: Session, *, name: str = "Spring push", goal: MigrationGoal | None = None,
    arms: list[dict[str, Any]] | None = None, starts_at: datetime | None = None,
    ends_at: datetime | None = None, budget_minor: int | None = 100_000, **overrides: Any,
) -> Campaign:
    goal = goal or make_goal(session)
    now = utcnow()
    data: dict[str, Any] = {
        "name": name, "goal_id": goal.id,
        "starts_at": starts_at or now + timedelta(hours=1),
        "ends_at": ends_at or now + timedelta(days=30),
        "budget_minor": budget_minor,
        "arms": arms if arms is not None else [control_arm(), percent_arm()],
    }
    data.update(overrides)
    return create_campaign(session, actor=ACTOR, campaign_create=data)


def make_customer(session: Session, *, external_id: str = "C1", **attributes: Any) -> Customer:
    customer = Customer(external_id=external_id, **attributes)
    session.add(customer)
    session.flush()
    return customer


def coupon_arm(name: str = "web coupon", *, weight: int = 50, percent_bp: int = 1000,
               expires_days: int | None = None, min_order_minor: int | None = None
               ) -> dict[str, Any]:
    benefit: dict[str, Any] = {"kind": "percent", "percent_bp": percent_bp}
    if min_order_minor is not None:
        benefit["min_order_minor"] = min_order_minor
    config: dict[str, Any] = {"mode": "batch", "prefix": "WEB", "length": 10,
                              "benefit": benefit}
    if expires_days:
        config["expires_days"] = expires_days
    return {"name": name, "weight": weight,
            "incentive": {"name": name, "type": "coupon", "config": config}}


def incentive_arm(name: str, type_: str, config: dict[str, Any], *, weight: int = 50
                  ) -> dict[str, Any]:
    return {"name": name, "weight": weight,
            "incentive": {"name": name, "type": type_, "config": config}}


def make_running_campaign(session: Session, **kwargs: Any) -> Campaign:
    from campaigns.services.campaigns import transition

    campaign = make_campaign(session, **kwargs)
    transition(session, campaign=campaign, target="scheduled", actor=ACTOR)
    transition(session, campaign=campaign, target="running", actor=ACTOR)
    return campaign


def customer_id_in_arm(session: Session, campaign: Campaign, arm_name: str, *,
                       prefix: str = "C", start: int = 0) -> str:
    """An external id that the campaign's assignment function puts in ``arm_name``."""
    from campaigns.assignment import choose_arm
    from campaigns.services.campaigns import campaign_arms

    arms = [(arm.name, arm.weight) for arm in campaign_arms(session, campaign)]
    for i in range(start, start + 10_000):
        external_id = f"{prefix}{i}"
        if choose_arm(salt=campaign.salt, customer_id=external_id, arms=arms,
                      period=campaign.allocation_period) == arm_name:
            return external_id
    raise AssertionError(f"no customer lands in {arm_name}")
