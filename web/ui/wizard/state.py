"""What the wizard remembers between steps: everything typed so far, in one signed field.

Why a hidden field and not a server-side draft: the wizard writes nothing until the
marketer presses *Create*, so abandoning it halfway leaves no half-made campaign, no
draft table to clean up and nothing to expire; two tabs hold two independent wizards;
and every step's page carries the whole state, so *Back* (and the browser re-posting a
step) always finds what the user typed. The state is the raw text of every input, not
parsed values: a step shown again shows exactly what was typed, mistakes included.

The field is JSON, compressed and signed (HMAC, purpose ``wizard``) with the UI's key
and bound to the user: a state edited in the browser, or made for someone else, is
refused rather than trusted. Signing is not what keeps data valid, though: every step is
validated again before the campaign is created.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from datetime import datetime, time, timedelta, tzinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from campaigns.models import DEFAULT_GUARDRAILS, StackingPolicy
from web.ui.problems import UiProblem
from web.ui.signing import Signer
from web.ui.wizard.fields import format_local_time

PURPOSE = "wizard"
#: Largest state accepted once decompressed: far above any real campaign, far below harm.
MAX_STATE_BYTES = 256 * 1024
#: A campaign has a control arm and at most this many arms with an incentive.
MAX_TREATMENT_ARMS = 9
DEFAULT_INCENTIVE_TYPE = "percent_discount"
DEFAULT_DURATION = timedelta(days=28)


class ArmDraft(BaseModel):
    """One arm with an incentive, as typed: its config inputs by key (see incentive_form)."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    weight: str = ""
    type: str = DEFAULT_INCENTIVE_TYPE
    fields: dict[str, str] = Field(default_factory=dict)
    #: rows shown per list setting (a lottery's prizes, a loyalty programme's tiers)
    rows: dict[str, int] = Field(default_factory=dict)


class WizardState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    user_id: int
    #: index of the furthest step the user has reached (steps up to it can be jumped to)
    reached: int = 0
    #: every plain input of every step, by name, as typed (a checkbox group is a list)
    values: dict[str, str | list[str]] = Field(default_factory=dict)
    arms: list[ArmDraft] = Field(default_factory=list)

    def text(self, name: str) -> str:
        value = self.values.get(name, "")
        return value if isinstance(value, str) else ""

    def choices(self, name: str) -> list[str]:
        value = self.values.get(name, [])
        return value if isinstance(value, list) else [value]


class WizardStateUnreadable(UiProblem):
    """The hidden state was altered, truncated, or signed for another user."""

    status_code = 400


def new_state(*, user_id: int, zone: tzinfo, now: datetime) -> WizardState:
    """A fresh wizard: sensible defaults, a start tomorrow at 09:00 in the user's zone."""
    local_now = now.astimezone(zone)
    start = datetime.combine(local_now.date() + timedelta(days=1), time(9, 0), tzinfo=zone)
    return WizardState(
        user_id=user_id,
        values={
            "goal_id": "", "name": "", "description": "", "eligibility_rule": "",
            "control_name": "control", "control_weight": "50",
            "budget": "", "per_customer_limit": "",
            "starts_at": format_local_time(start, zone),
            "ends_at": format_local_time(start + DEFAULT_DURATION, zone),
            "stacking": StackingPolicy.EXCLUSIVE.value, "priority": "0",
            "guardrails": list(DEFAULT_GUARDRAILS),
            "expected_audience": "", "baseline_points": "", "typical_order": "",
        },
        arms=[ArmDraft(name="treatment 1", weight="50")],
    )


def encode_state(state: WizardState, signer: Signer) -> str:
    packed = zlib.compress(state.model_dump_json().encode(), level=6)
    text = base64.urlsafe_b64encode(packed).rstrip(b"=").decode()
    return signer.sign(PURPOSE, text)


def decode_state(token: str, signer: Signer, *, user_id: int) -> WizardState:
    """The state a page carried; :class:`WizardStateUnreadable` if it cannot be trusted."""
    text = signer.unsign(PURPOSE, token)
    if text is None:
        raise WizardStateUnreadable(
            "The wizard's saved answers could not be read: the page was changed, or it "
            "belongs to another session. Start the campaign wizard again.")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_STATE_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError("state too large")
        state = WizardState.model_validate_json(raw)
    except (binascii.Error, zlib.error, ValueError, ValidationError):
        raise WizardStateUnreadable(
            "The wizard's saved answers are damaged. Start the campaign wizard again.") from None
    if state.user_id != user_id:
        raise WizardStateUnreadable(
            "These wizard answers belong to another user. Start the campaign wizard again.")
    return state
