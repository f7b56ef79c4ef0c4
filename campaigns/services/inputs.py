"""Guards for values that came from outside (a URL, a form, a request body)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from sqlmodel import Session

from campaigns.errors import FieldError, ValidationFailed

RowT = TypeVar("RowT")

#: Ids are 64-bit on both databases; nothing has a larger (or a non-positive) one.
MAX_ID = 2**63 - 1


def get_row(session: Session, model: type[RowT], row_id: Any) -> RowT | None:
    """The row of ``model`` with this id, or None.

    An id outside 1..2**63-1 matches nothing, and is answered without asking the database:
    SQLite cannot even bind an integer beyond 64 bits (the driver raises OverflowError).
    """
    if isinstance(row_id, bool) or not isinstance(row_id, int) or not 1 <= row_id <= MAX_ID:
        return None
    return session.get(model, row_id)


def refuse_nulls(changes: Mapping[str, Any], *, nullable: Collection[str], what: str) -> None:
    """Raise :class:`ValidationFailed` naming each change to null of a field that needs a value.

    In a partial update a field left out keeps its value; a field sent as null would not
    clear a column that must have a value, it would break its NOT NULL constraint.
    """
    nulls = [FieldError((name,), f"{name} cannot be null; leave it out to keep the current "
                        "value", "null_not_allowed")
             for name, value in changes.items() if value is None and name not in nullable]
    if nulls:
        raise ValidationFailed(f"the {what} change is not valid", nulls)
