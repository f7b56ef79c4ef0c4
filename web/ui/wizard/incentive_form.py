"""Forms for incentive configurations, generated from each type's pydantic config model.

Adding an incentive type must not mean writing a form: :func:`config_form` walks the
type's ``config_model`` and yields one input per setting, a fieldset per nested model
and a repeatable fieldset per list of models (prizes, tiers). What a setting is comes
from its annotation, not its name: money (``NonNegativeMoney``/``PositiveMoney``) is
typed in major units, basis points as a percentage (or a multiplier), ``Literal`` as a
choice, ``bool`` as a checkbox, an aware datetime in the user's time zone.

:func:`read_config` turns the typed text back into the raw configuration the type
validates; :func:`place_errors` puts each of the type's own messages (located under
``config``) next to the input it names.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from campaigns.errors import FieldError
from campaigns.incentives import INCENTIVE_TYPES, get_incentive_type
from campaigns.incentives.fields import BasisPoints, Count, NonNegativeMoney, PositiveMoney
from web.ui.forms import FormState, format_money, parse_money
from web.ui.wizard.fields import (
    format_multiplier_bp,
    format_percent_bp,
    parse_local_time,
    parse_multiplier_bp,
    parse_percent_bp,
)

Path = tuple[str | int, ...]


class FieldKind(StrEnum):
    TEXT = "text"
    WHOLE = "whole"
    MONEY = "money"
    PERCENT = "percent"
    MULTIPLIER = "multiplier"
    CHOICE = "choice"
    FLAG = "flag"
    MOMENT = "moment"


def _parser(alias: Any) -> Any:
    """The BeforeValidator function of one of the incentive package's field aliases."""
    return next(meta.func for meta in typing.get_args(alias)[1:] if hasattr(meta, "func"))


_KIND_BY_PARSER = {
    _parser(NonNegativeMoney): FieldKind.MONEY,
    _parser(PositiveMoney): FieldKind.MONEY,
    _parser(BasisPoints): FieldKind.PERCENT,
    _parser(Count): FieldKind.WHOLE,
}

#: Labels for settings whose name reads badly once humanized; others are derived.
LABELS = {
    "percent_bp": "Percent",
    "amount_minor": "Amount",
    "cap_minor": "Cap",
    "min_order_minor": "Minimum order",
    "min_amount_minor": "Minimum spend per entry",
    "unit_cost_minor": "Cost of one item to you",
    "value_minor": "Value to the customer",
    "cost_minor": "Cost to you per customer",
    "converts_to_paid_price_minor": "Price once the trial ends",
    "point_value_minor_per_1000": "Cost to you of 1000 points",
    "target_channel_multiplier_bp": "Points multiplier on the target channel",
    "points_per_currency_unit": "Points per 1.00 spent",
    "channel_key": "Only on channel (key)",
    "sku": "SKU",
    "max_redemptions": "Maximum redemptions",
    "expires_days": "Expires after (days)",
    "payout_delay_days": "Payout delay (days)",
    "single_use": "Each customer can use the shared code once",
    "numerator": "Wins",
    "denominator": "Out of (entries)",
}
UNITS = {FieldKind.MONEY: " (EUR)", FieldKind.PERCENT: " (%)", FieldKind.MULTIPLIER: " (times)"}


def humanize(name: str) -> str:
    text = LABELS.get(name) or name.removesuffix("_minor").removesuffix("_bp").replace("_", " ")
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class ConfigField:
    """One input: ``path`` locates its setting inside the configuration."""

    path: Path
    kind: FieldKind
    label: str
    required: bool
    hint: str | None = None
    choices: tuple[str, ...] = ()
    default: str = ""
    element = "field"

    @property
    def key(self) -> str:
        return key_of(self.path)

    @property
    def options(self) -> list[tuple[str, str]]:
        """(value, text) of a choice's options."""
        return [(choice, choice.replace("_", " ").capitalize()) for choice in self.choices]


@dataclass(frozen=True)
class ConfigGroup:
    """A nested model (a coupon's benefit, a rebate's condition) or one row of a list."""

    path: Path
    label: str
    required: bool
    items: tuple[ConfigNode, ...]
    element = "group"

    @property
    def key(self) -> str:
        return key_of(self.path)


@dataclass(frozen=True)
class ConfigList:
    """A list of models shown as ``rows`` fieldsets, between ``min_rows`` and ``max_rows``."""

    path: Path
    label: str
    item_label: str
    min_rows: int
    max_rows: int
    rows: tuple[ConfigGroup, ...] = field(default_factory=tuple)
    element = "list"

    @property
    def key(self) -> str:
        return key_of(self.path)


ConfigNode = ConfigField | ConfigGroup | ConfigList


def key_of(path: Path) -> str:
    """The form name of a setting, relative to its arm: ``("benefit", "percent_bp")`` ->
    ``benefit-percent_bp`` (dots would break the element ids the messages point at)."""
    return "-".join(str(part) for part in path)


# --------------------------------------------------------------------------- the walk


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The annotation without ``Annotated`` and ``None``, and the metadata found on the way."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            args = typing.get_args(annotation)
            metadata.extend(args[1:])
            annotation = args[0]
        elif origin is typing.Union or origin is types.UnionType:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _bounds(metadata: list[Any]) -> tuple[int | None, int | None]:
    low = next((m.ge for m in metadata if isinstance(getattr(m, "ge", None), int)), None)
    high = next((m.le for m in metadata if isinstance(getattr(m, "le", None), int)), None)
    return low, high


def _length(metadata: list[Any], attribute: str, default: int) -> int:
    return next((getattr(m, attribute) for m in metadata
                 if isinstance(getattr(m, attribute, None), int)), default)


def _kind(name: str, annotation: Any, metadata: list[Any]) -> FieldKind:
    if typing.get_origin(annotation) is typing.Literal:
        return FieldKind.CHOICE
    if annotation is bool:
        return FieldKind.FLAG
    if annotation is AwareDatetime or (isinstance(annotation, type)
                                       and issubclass(annotation, datetime)):
        return FieldKind.MOMENT
    for meta in metadata:
        kind = _KIND_BY_PARSER.get(getattr(meta, "func", None))
        if kind is FieldKind.PERCENT and "multiplier" in name:
            return FieldKind.MULTIPLIER
        if kind is not None:
            return kind
    return FieldKind.WHOLE if annotation is int else FieldKind.TEXT


def _hint(kind: FieldKind, metadata: list[Any]) -> str | None:
    low, high = _bounds(metadata)
    if kind is FieldKind.MONEY:
        return "In euros, e.g. 6.50."
    if kind is FieldKind.PERCENT:
        return "e.g. 12.5 for 12.5%."
    if kind is FieldKind.MULTIPLIER:
        return "e.g. 2 for double points."
    if kind is FieldKind.MOMENT:
        return "In your time zone."
    if kind is FieldKind.WHOLE and low is not None and high is not None:
        return f"A whole number from {low:,} to {high:,}."
    if kind is FieldKind.WHOLE and low is not None:
        return f"A whole number, {low:,} or more."
    return None


def _display(kind: FieldKind, value: Any) -> str:
    """A model default as the text its input shows."""
    if value is None or value is PydanticUndefined:
        return ""
    if kind is FieldKind.MONEY:
        return format_money(int(value))
    if kind is FieldKind.PERCENT:
        return format_percent_bp(int(value))
    if kind is FieldKind.MULTIPLIER:
        return format_multiplier_bp(int(value))
    if kind is FieldKind.FLAG:
        return "on" if value else ""
    return str(value)


def _node(name: str, info: FieldInfo, path: Path, rows: Mapping[str, int]) -> ConfigNode:
    annotation, metadata = _unwrap(info.annotation)
    metadata = [*info.metadata, *metadata]
    if _is_model(annotation):
        return ConfigGroup(path=path, label=humanize(name), required=info.is_required(),
                           items=_walk(annotation, path, rows))
    if typing.get_origin(annotation) is list:
        item, _ = _unwrap(typing.get_args(annotation)[0])
        if _is_model(item):
            return _list(name, item, metadata, path, rows)
    kind = _kind(name, annotation, metadata)
    choices = tuple(str(choice) for choice in typing.get_args(annotation)) \
        if kind is FieldKind.CHOICE else ()
    return ConfigField(path=path, kind=kind, label=humanize(name) + UNITS.get(kind, ""),
                       required=info.is_required(),
                       # the type's own words when it has them (a bound the metadata cannot
                       # state, such as a code's length for its randomness)
                       hint=info.description or _hint(kind, metadata),
                       choices=choices, default=_display(kind, info.default))


def _list(name: str, item: type[BaseModel], metadata: list[Any], path: Path,
          rows: Mapping[str, int]) -> ConfigList:
    min_rows = max(_length(metadata, "min_length", 0), 1)
    max_rows = _length(metadata, "max_length", 50)
    count = min(max(rows.get(key_of(path), min_rows), min_rows), max_rows)
    item_label = humanize(name.removesuffix("s"))
    return ConfigList(
        path=path, label=humanize(name), item_label=item_label, min_rows=min_rows,
        max_rows=max_rows,
        rows=tuple(ConfigGroup(path=(*path, index), label=f"{item_label} {index + 1}",
                               required=True, items=_walk(item, (*path, index), rows))
                   for index in range(count)))


def _walk(model: type[BaseModel], prefix: Path, rows: Mapping[str, int]
          ) -> tuple[ConfigNode, ...]:
    return tuple(_node(name, info, (*prefix, name), rows)
                 for name, info in model.model_fields.items())


def config_form(type_key: str, *, rows: Mapping[str, int] | None = None
                ) -> tuple[ConfigNode, ...]:
    """The inputs of an incentive type's configuration (``rows``: rows shown per list key)."""
    return _walk(get_incentive_type(type_key).config_model, (), rows or {})


def type_choices() -> list[tuple[str, str]]:
    """(key, label) of every registered incentive type, for the type select."""
    return [(key, incentive_type.label.capitalize())
            for key, incentive_type in sorted(INCENTIVE_TYPES.items())]


def fields_of(nodes: tuple[ConfigNode, ...]) -> Iterator[ConfigField]:
    for node in nodes:
        if isinstance(node, ConfigField):
            yield node
        elif isinstance(node, ConfigGroup):
            yield from fields_of(node.items)
        else:
            yield from fields_of(node.rows)


def containers_of(nodes: tuple[ConfigNode, ...]) -> Iterator[ConfigGroup | ConfigList]:
    """Every fieldset (nested model, list and list row): messages about them go there."""
    for node in nodes:
        if isinstance(node, ConfigGroup):
            yield node
            yield from containers_of(node.items)
        elif isinstance(node, ConfigList):
            yield node
            yield from containers_of(node.rows)


def default_values(nodes: tuple[ConfigNode, ...]) -> dict[str, str]:
    """The text every input starts with: the model's default, if it has one."""
    return {item.key: item.default for item in fields_of(nodes) if item.default}


# --------------------------------------------------------------------------- reading


@dataclass
class ReadConfig:
    """The raw configuration read from the inputs, and the inputs that could not be read."""

    config: dict[str, Any]
    unreadable: set[str]


def read_config(nodes: tuple[ConfigNode, ...], values: Mapping[str, str], *, zone: tzinfo,
                form: FormState, name: Callable[[str], str]) -> ReadConfig:
    """The configuration the inputs describe, for the type to validate.

    A blank input is left out, so the type's default applies (or the type says the
    setting is required). An input whose text is not a value of its kind (a percentage of
    "ten") gets a message here, at ``name(key)``, and is left out too.
    """
    unreadable: set[str] = set()
    config = _read_items(nodes, values, zone=zone, form=form, name=name, unreadable=unreadable)
    return ReadConfig(config=config, unreadable=unreadable)


def _read_items(nodes: tuple[ConfigNode, ...], values: Mapping[str, str], **kwargs: Any
                ) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for node in nodes:
        setting = str(node.path[-1])
        if isinstance(node, ConfigField):
            value = _read_field(node, values.get(node.key, ""), **kwargs)
            if value is not None:
                config[setting] = value
        elif isinstance(node, ConfigGroup):
            nested = _read_items(node.items, values, **kwargs)
            if nested or node.required:
                config[setting] = nested
        else:
            # Every row, even a blank one, so the type's row numbers are the form's.
            config[setting] = [_read_items(row.items, values, **kwargs) for row in node.rows]
    return config


def _read_field(item: ConfigField, text: str, *, zone: tzinfo, form: FormState,
                name: Callable[[str], str], unreadable: set[str]) -> Any:
    text = text.strip()
    if item.kind is FieldKind.FLAG:
        return True if text else None
    if not text:
        return None
    field_name = name(item.key)
    before = len(form.errors.get(field_name, []))
    value: Any
    if item.kind is FieldKind.MONEY:
        value = parse_money(text, name=field_name, form=form)
    elif item.kind is FieldKind.PERCENT:
        value = parse_percent_bp(text, name=field_name, form=form)
    elif item.kind is FieldKind.MULTIPLIER:
        value = parse_multiplier_bp(text, name=field_name, form=form)
    elif item.kind is FieldKind.MOMENT:
        moment = parse_local_time(text, zone=zone, name=field_name, form=form)
        value = moment.isoformat() if moment else None
    else:
        value = text  # the type's own validator reads whole numbers and says what is wrong
    if len(form.errors.get(field_name, [])) > before:
        unreadable.add(item.key)
        return None
    return value


# --------------------------------------------------------------------------- messages


def place_errors(errors: Sequence[FieldError], nodes: tuple[ConfigNode, ...],
                 *, form: FormState, name: Callable[[str], str], fallback: str,
                 unreadable: Collection[str] = ()) -> None:
    """Put each of the type's messages next to the input (or fieldset) its ``loc`` names.

    ``loc`` starts with ``"config"``; a location without an input of its own (the odds of
    all prizes together) goes to the nearest enclosing fieldset, else to ``fallback``.
    Inputs already marked unreadable keep their own message only.
    """
    inputs = {item.key: item for item in fields_of(nodes)}
    keys = set(inputs) | {box.key for box in containers_of(nodes)}
    for error in errors:
        loc = tuple(error.loc[1:] if error.loc[:1] == ("config",) else error.loc)
        if key_of(loc) in unreadable:
            continue
        path, target = loc, fallback
        while path:
            if key_of(path) in keys:
                target = name(key_of(path))
                break
            path = path[:-1]
        item = inputs.get(key_of(loc))
        form.add(target, _sentence(_named(error.msg, loc, item) if item else error.msg))


def _named(message: str, loc: Path, item: ConfigField) -> str:
    """The type's message, its opening setting path (``prizes.0.key``) put as the label.

    The message sits under the input, whose label the marketer reads; the rest of the
    type's words (ranges, units, what it got) stay as the type wrote them.
    """
    label = item.label
    for unit in UNITS.values():
        label = label.removesuffix(unit)
    for opening in (".".join(str(part) for part in loc), str(loc[-1])):
        if message.startswith(f"{opening} "):
            return f"{label}{message[len(opening):]}"
    return message


def _sentence(message: str) -> str:
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else f"{message}."
