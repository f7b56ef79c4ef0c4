"""Typed domain errors.

Each error carries a stable machine-readable ``code`` and a human message, and
optionally a list of field errors in the ``{loc, msg, type}`` shape that forms
and API clients use to put a message next to the field that caused it. No HTTP
status lives here: ``web/errors.py`` maps classes to statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``loc`` is the path to it (``("config", "percent")``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


@dataclass
class ChannelShiftError(Exception):
    """Base of every domain error."""

    message: str
    errors: Sequence[FieldError] = field(default_factory=tuple)
    code: str = "channelshift_error"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        details = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in self.errors)
        return f"{self.message} ({details})"

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return body




class NotFound(ChannelShiftError):
    """A referenced entity does not exist."""

    def __init__(self, message: str, errors: Sequence[FieldError] = (), code: str = "not_found"):
        super().__init__(message=message, errors=tuple(errors), code=code)


class ValidationFailed(ChannelShiftError):
    """Input is malformed or inconsistent; ``errors`` names each bad field."""

    def __init__(
        self, message: str, errors: Sequence[FieldError] = (), code: str = "validation_failed"
    ):
        super().__init__(message=message, errors=tuple(errors), code=code)


class Conflict(ChannelShiftError):
    """The request is valid but clashes with the current state (duplicate, wrong status)."""

    def __init__(self, message: str, errors: Sequence[FieldError] = (), code: str = "conflict"):
        super().__init__(message=message, errors=tuple(errors), code=code)


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: int | str):
        super().__init__(f"campaign {campaign_id} does not exist", code="campaign_not_found")


class InvalidIncentiveConfig(ValidationFailed):
    """An incentive's configuration does not validate; ``errors`` locate each problem."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()):
        super().__init__(message, errors, code="invalid_incentive_config")


class InvalidRule(ValidationFailed):
    """An eligibility rule does not parse or names something unknown."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()):
        super().__init__(message, errors, code="invalid_rule")


class InvalidTransition(Conflict):
    """A lifecycle transition is not allowed from the current status, or its checks fail."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()):
        super().__init__(message, errors, code="invalid_transition")


class BudgetExhausted(Conflict):
    def __init__(self, message: str = "the campaign's budget cannot cover this benefit"):
        super().__init__(message, code="budget_exhausted")


class CustomerLimitReached(Conflict):
    def __init__(self, message: str = "the customer has reached this campaign's limit"):
        super().__init__(message, code="customer_limit_reached")


class CodeAlreadyRedeemed(Conflict):
    def __init__(self, message: str = "this code has already been redeemed"):
        super().__init__(message, code="code_already_redeemed")


class SchemaOutOfDate(ChannelShiftError):
    """The database schema is not at the revision this code expects."""

    def __init__(self, message: str):
        super().__init__(message=message, code="schema_out_of_date")
