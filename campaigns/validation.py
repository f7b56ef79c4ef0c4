"""Turning pydantic validation errors into domain errors with ``{loc, msg, type}`` entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from campaigns.errors import FieldError, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)


def field_errors(error: ValidationError, *, prefix: tuple[str | int, ...] = ()) -> list[FieldError]:
    """One FieldError per pydantic error, with readable messages."""
    result = []
    for item in error.errors(include_url=False):
        loc = prefix + tuple(item["loc"])
        msg = item["msg"]
        kind = item["type"]
        if kind == "extra_forbidden":
            msg = f"unknown field '{loc[-1]}'" if loc else "unknown field"
        elif kind == "missing":
            msg = "this field is required"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        result.append(FieldError(loc=loc, msg=msg, type=kind))
    return result


def parse_input(
    model: type[ModelT], data: Mapping[str, Any] | BaseModel, *, what: str | None = None
) -> ModelT:
    """Validate ``data`` as ``model``; raise :class:`ValidationFailed` naming each bad field."""
    if isinstance(data, model):
        return data
    raw = data.model_dump() if isinstance(data, BaseModel) else data
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        label = what or model.__name__
        raise ValidationFailed(f"{label} is not valid", field_errors(error)) from None
