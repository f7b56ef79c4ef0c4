"""Form state for the UI: what the user typed, and each message next to its field.

Services raise :class:`~campaigns.errors.ValidationFailed` (or ``Conflict``) whose
``FieldError.loc`` names the input field; :meth:`FormState.failed` sorts those messages
by field so the template can print each under its input, and keeps the values so the
page comes back exactly as the user left it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlmodel import Session

from campaigns.errors import ChannelShiftError, FieldError

T = TypeVar("T")

#: Largest amount a money field takes, in major units (matches the schemas' 10**15 minor).
MAX_MAJOR_UNITS = Decimal(10) ** 13


@dataclass
class FormState:
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    #: a message about the form as a whole (no single field to blame)
    problem: str | None = None

    def value(self, name: str, default: Any = "") -> Any:
        value = self.values.get(name)
        return default if value is None else value

    def error(self, name: str) -> str | None:
        messages = self.errors.get(name)
        return "; ".join(messages) if messages else None

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.problem)

    def add(self, name: str | None, message: str) -> None:
        if name is None:
            self.problem = f"{self.problem} {message}" if self.problem else message
        else:
            self.errors.setdefault(name, []).append(message)

    def absorb(self, error: ChannelShiftError, *, fields: Mapping[str, str] | None = None
               ) -> None:
        """Place each of the error's field messages on its input (``fields`` renames locs)."""
        fields = fields or {}
        placed = False
        for item in error.errors:
            name = _field_name(item, fields)
            if name is None or name not in self.values:
                self.add(None, _sentence(item.msg))
            else:
                self.add(name, _sentence(item.msg))
            placed = True
        if not placed:
            self.add(None, _sentence(error.message))


async def form_fields(request: Request) -> dict[str, str]:
    """Every text field of a submitted form, for forms whose fields are data (one per stage)."""
    submitted = await request.form()
    return {name: value for name, value in submitted.items() if isinstance(value, str)}


FormFields = Annotated[dict[str, str], Depends(form_fields)]


def _field_name(item: FieldError, fields: Mapping[str, str]) -> str | None:
    names = [str(part) for part in item.loc if not isinstance(part, int)]
    if not names:
        return None
    dotted = ".".join(names)
    return fields.get(dotted) or fields.get(names[0]) or names[0]


def _sentence(message: str) -> str:
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else f"{message}."


def parse_money(text: str, *, name: str, form: FormState, decimals: int = 2) -> int | None:
    """Major units typed by a person ("6.50") as integer minor units (650), exactly.

    Anything that is not a plain non-negative number with at most ``decimals`` decimals
    is refused with a message on the field, never rounded.
    """
    text = text.strip().replace(" ", "")
    if not text:
        form.add(name, "Enter an amount (0 if it costs nothing).")
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        form.add(name, f"'{text}' is not an amount; write it like 6.50.")
        return None
    if not amount.is_finite() or amount < 0:
        form.add(name, "Enter an amount of 0 or more.")
        return None
    if amount >= MAX_MAJOR_UNITS:
        form.add(name, "This amount is too large.")
        return None
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > decimals:
        form.add(name, f"Use at most {decimals} decimals (the smallest unit is a cent).")
        return None
    return int(amount.scaleb(decimals))


def format_money(minor: int | None, decimals: int = 2) -> str:
    """Minor units as the major-unit text a money field shows (650 -> "6.50")."""
    if minor is None:
        return ""
    return f"{Decimal(minor).scaleb(-decimals):.{decimals}f}"


def parse_percentage_points(text: str, *, name: str, form: FormState) -> Decimal | None:
    """Percentage points typed by a person ("5" or "2.5") as a fraction (0.05, 0.025)."""
    text = text.strip().removesuffix("%").strip()
    if not text:
        form.add(name, "Enter the uplift in percentage points, e.g. 5.")
        return None
    try:
        points = Decimal(text)
    except InvalidOperation:
        form.add(name, f"'{text}' is not a number; write it like 5 or 2.5.")
        return None
    if not points.is_finite() or points <= 0 or points > 100:
        form.add(name, "Enter more than 0 and at most 100 percentage points.")
        return None
    exponent = points.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > 2:
        form.add(name, "Use at most 2 decimals.")
        return None
    return points / 100


def parse_int(text: str, *, name: str, form: FormState) -> int | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        form.add(name, "Enter a whole number." if text else "This field is required.")
        return None


@contextmanager
def _savepoint(session: Session) -> Iterator[None]:
    with session.begin_nested():
        yield


def attempt(session: Session, form: FormState, action: Callable[[], T], *,
            fields: Mapping[str, str] | None = None) -> T | None:
    """Run ``action`` in a savepoint; on a domain error undo all of it and fill ``form``.

    A form's service calls may write several rows before one of them is refused; the
    savepoint makes the page all-or-nothing even though the request itself goes on (to
    show the form again) and commits.
    """
    try:
        with _savepoint(session):
            return action()
    except ChannelShiftError as error:
        form.absorb(error, fields=fields)
        return None
