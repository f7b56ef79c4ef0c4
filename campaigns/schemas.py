"""Input and output shapes shared by the API, the UI forms, the CLI and the seeds.

``XCreate`` validates what a caller may send to create an X, ``XUpdate`` what it may
change (every field optional), ``XPublic`` what is returned. Table models live in
:mod:`campaigns.models`; these never touch the database.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from campaigns.models import (
    DEFAULT_GUARDRAILS,
    ChannelKind,
    GoalMetric,
    GuardrailMetric,
    Role,
    StackingPolicy,
)
from campaigns.types import in_utc

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


def _key(value: str) -> str:
    if not KEY_PATTERN.match(value):
        raise ValueError(
            "must be 2-40 characters: lowercase letters, digits and underscores, "
            "starting with a letter (e.g. call_centre)"
        )
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError("must include a timezone (e.g. 2026-01-31T09:00:00Z)")
    if value is not None:
        in_utc(value)  # stored in UTC: it must have a UTC time
    return value


Key = Annotated[str, AfterValidator(_key)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
#: Money in integer minor units (cents). Strict: a float or "12.50" is refused, not rounded.
MinorUnits = Annotated[StrictInt, Field(ge=0, le=10**15)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- channels -------------------------------------------------------------------


class ChannelCreate(InputModel):
    key: Key
    name: Annotated[str, Field(min_length=1, max_length=100)]
    kind: ChannelKind


class ChannelUpdate(InputModel):
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    kind: ChannelKind | None = None
    active: bool | None = None


class StageCreate(InputModel):
    key: Key
    name: Annotated[str, Field(min_length=1, max_length=100)]
    position: StrictInt = 0


class ChannelCostSet(InputModel):
    channel: Key
    stage: Key
    cost_minor: MinorUnits


# --- goals ----------------------------------------------------------------------


class GoalCreate(InputModel):
    name: Name
    description: str = ""
    stage: Key
    source_channels: Annotated[list[Key], Field(min_length=1)]
    target_channel: Key
    metric: GoalMetric = GoalMetric.ADOPTION
    window_days: Annotated[StrictInt, Field(ge=1, le=730)] = 30
    target_uplift: Annotated[Decimal, Field(gt=0, le=1, max_digits=6, decimal_places=4)]
    eligibility_rule: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("target_uplift", mode="before")
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        # A float like 0.1 is not exactly 0.1; take the marketer's text instead.
        if isinstance(value, float):
            return Decimal(repr(value))
        return value

    @model_validator(mode="after")
    def _target_not_a_source(self) -> GoalCreate:
        if self.target_channel in self.source_channels:
            raise ValueError(
                f"target_channel '{self.target_channel}' cannot also be a source channel"
            )
        if len(set(self.source_channels)) != len(self.source_channels):
            raise ValueError("source_channels lists a channel twice")
        return self


# --- incentives -----------------------------------------------------------------


class IncentiveCreate(InputModel):
    name: Name
    type: Annotated[str, Field(min_length=1, max_length=40)]
    config: dict[str, Any]


# --- campaigns ------------------------------------------------------------------


class ArmCreate(InputModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    weight: Annotated[StrictInt, Field(ge=0, le=100)]
    is_control: bool = False
    incentive: IncentiveCreate | None = None
    incentive_id: StrictInt | None = None

    @model_validator(mode="after")
    def _control_has_no_incentive(self) -> ArmCreate:
        has_incentive = self.incentive is not None or self.incentive_id is not None
        if self.is_control and has_incentive:
            raise ValueError("the control arm gets no incentive")
        if not self.is_control and not has_incentive:
            raise ValueError(f"arm '{self.name}' needs an incentive (or mark it as control)")
        if self.incentive is not None and self.incentive_id is not None:
            raise ValueError("give either incentive or incentive_id, not both")
        return self


#: The guardrail metrics a campaign watches (each at most once; empty turns monitoring off).
def _distinct(metrics: list[GuardrailMetric]) -> list[GuardrailMetric]:
    if len(set(metrics)) != len(metrics):
        raise ValueError("name each guardrail metric at most once")
    return metrics


Guardrails = Annotated[list[GuardrailMetric], AfterValidator(_distinct)]


class CampaignCreate(InputModel):
    name: Name
    description: str = ""
    goal_id: StrictInt
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    budget_minor: MinorUnits | None = None
    per_customer_limit: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None
    stacking: StackingPolicy = StackingPolicy.EXCLUSIVE
    priority: Annotated[StrictInt, Field(ge=0, le=1000)] = 0
    eligibility_rule: Annotated[str, Field(max_length=2000)] | None = None
    control_opt_out: bool = False
    control_opt_out_reason: str | None = None
    guardrails: Guardrails = Field(
        default_factory=lambda: [GuardrailMetric(m) for m in DEFAULT_GUARDRAILS])
    arms: list[ArmCreate] = Field(default_factory=list)

    @model_validator(mode="after")
    def _schedule_and_control(self) -> CampaignCreate:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.control_opt_out and not (self.control_opt_out_reason or "").strip():
            raise ValueError("opting out of a control group needs a control_opt_out_reason")
        return self


class CampaignUpdate(InputModel):
    name: Name | None = None
    description: str | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    budget_minor: MinorUnits | None = None
    per_customer_limit: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None
    stacking: StackingPolicy | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    eligibility_rule: Annotated[str, Field(max_length=2000)] | None = None
    control_opt_out: bool | None = None
    control_opt_out_reason: str | None = None
    guardrails: Guardrails | None = None


class ArmWeights(InputModel):
    """New weights by arm name; every arm of the campaign must be named."""

    weights: dict[str, Annotated[StrictInt, Field(ge=0, le=100)]]


# --- users ----------------------------------------------------------------------


class UserCreate(InputModel):
    username: Annotated[str, Field(min_length=3, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]
    password: Annotated[str, Field(min_length=10, max_length=200)]
    role: Role
    timezone: str = "UTC"
