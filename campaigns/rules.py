"""Eligibility rules: a small, safe, declarative language over customer attributes.

A rule is text such as::

    value_tier in [bronze, silver] and preferred_channel == call_centre
    tenure_months >= 12 and not (region == "north")
    attr.newsletter == true or attr.score > 7.5

Grammar (keywords ``and or not in true false`` are lowercase and case-sensitive)::

    expr       := or_expr
    or_expr    := and_expr ('or' and_expr)*
    and_expr   := not_expr ('and' not_expr)*
    not_expr   := 'not' not_expr | '(' expr ')' | comparison
    comparison := ATTR op value | ATTR 'in' list | ATTR 'not' 'in' list
    op         := '==' | '!=' | '<' | '<=' | '>' | '>='
    value      := integer | decimal | 'quoted' | "quoted" | bare_identifier | true | false
    list       := '[' value (',' value)* ']'
    ATTR       := identifier | 'attr.' identifier

Text is tokenised and parsed by hand; nothing is ever passed to ``eval``, ``exec`` or
``ast``. Parsing also *validates* the rule against the known attributes (names, value
types, allowed values), so a stored rule cannot fail at evaluation time. Every problem is
raised as :class:`~campaigns.errors.InvalidRule` carrying one
``FieldError(loc=("rule",), msg=..., type=...)`` whose ``msg`` names the offending term and
its 0-based character position. The ``type`` is one of ``empty_rule``, ``too_long``,
``too_deep``, ``syntax_error``, ``unknown_operator``, ``unknown_attribute``,
``type_mismatch``, ``value_not_allowed`` and ``invalid_data`` (for :meth:`Rule.from_data`).

Numbers are exact: integers are ``int``, decimals (``7.5``) are :class:`decimal.Decimal`.
Strings may be quoted with ``'`` or ``"``; inside quotes ``\\\\``, ``\\'`` and ``\\"`` are the
only escapes. A bare identifier in value position is a string (``call_centre``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, Final, TypeAlias

from campaigns.errors import FieldError, InvalidRule

__all__ = [
    "ALWAYS",
    "CUSTOMER_ATTRIBUTES",
    "MAX_RULE_DEPTH",
    "MAX_RULE_LENGTH",
    "And",
    "AttributeSpec",
    "AttributeType",
    "Compare",
    "Membership",
    "Node",
    "Not",
    "Or",
    "Rule",
    "Value",
    "parse_optional_rule",
    "parse_rule",
]

#: Longest rule text :func:`parse_rule` accepts, in characters.
MAX_RULE_LENGTH: Final = 2000
#: Deepest nesting of parentheses and ``not`` that :func:`parse_rule` accepts.
MAX_RULE_DEPTH: Final = 32

#: Prefix of free-form custom attributes (``attr.<name>``), which are dynamically typed.
CUSTOM_PREFIX: Final = "attr."
#: The attribute whose allowed values are the channel keys given to :func:`parse_rule`.
CHANNEL_ATTRIBUTE: Final = "preferred_channel"

KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false"})
COMPARISON_OPS: Final = ("==", "!=", "<", "<=", ">", ">=")
ORDERING_OPS: Final = frozenset({"<", "<=", ">", ">="})

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_WORD = re.compile(r"[\w.]+")
_NUMBER_WORD = re.compile(r"-?[\w.]+")
_OPERATOR_RUN = re.compile(r"[=!<>~]+")
_WHITESPACE = frozenset(" \t\r\n\f\v")
_DIGITS = frozenset("0123456789")
_ESCAPABLE = frozenset("\\'\"")
_OPERATOR_HINTS: Final = {
    "=": "==",
    "===": "==",
    "=>": ">=",
    "=<": "<=",
    "<>": "!=",
    "><": "!=",
    "~=": "!=",
    "=!": "!=",
    "!": "!=",
    "!==": "!=",
}

#: A literal value in a rule: text, an exact number or a boolean.
Value: TypeAlias = str | int | Decimal | bool


# ---------------------------------------------------------------------------
# Attribute catalogue
# ---------------------------------------------------------------------------


class AttributeType(Enum):
    """The type of a built-in customer attribute, which fixes the values it is compared with."""

    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class AttributeSpec:
    """A customer attribute that rules may name.

    ``allowed`` lists the only values an enum-like string attribute may be compared with;
    ``None`` means any string. For ``preferred_channel`` the allowed set is the
    ``channel_keys`` given to :func:`parse_rule` (when given).
    """

    name: str
    type: AttributeType
    allowed: frozenset[str] | None = None
    description: str = ""


def _spec_map(*specs: AttributeSpec) -> dict[str, AttributeSpec]:
    return {spec.name: spec for spec in specs}


#: The built-in customer attributes, by name.
CUSTOMER_ATTRIBUTES: dict[str, AttributeSpec] = _spec_map(
    AttributeSpec("segment", AttributeType.STRING, description="Marketing segment."),
    AttributeSpec(
        "value_tier",
        AttributeType.STRING,
        frozenset({"bronze", "silver", "gold", "platinum"}),
        "Value tier of the customer.",
    ),
    AttributeSpec("loyalty_tier", AttributeType.STRING, description="Loyalty programme tier."),
    AttributeSpec(
        CHANNEL_ATTRIBUTE,
        AttributeType.STRING,
        description="Key of the customer's preferred channel (checked against channel keys).",
    ),
    AttributeSpec("region", AttributeType.STRING, description="Geographic region."),
    AttributeSpec("age_band", AttributeType.STRING, description="Age band, e.g. 25_34."),
    AttributeSpec("tenure_months", AttributeType.INTEGER, description="Months as a customer."),
    AttributeSpec("points", AttributeType.INTEGER, description="Loyalty points balance."),
    AttributeSpec(
        "lifetime_value",
        AttributeType.INTEGER,
        description="Lifetime value in minor currency units (cents).",
    ),
    AttributeSpec("is_new", AttributeType.BOOLEAN, description="Whether the customer is new."),
)


# ---------------------------------------------------------------------------
# Syntax tree
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    """``attribute op value``, e.g. ``tenure_months >= 12``."""

    attribute: str
    op: str
    value: Value


@dataclass(frozen=True)
class Membership:
    """``attribute in [values]`` or, when ``negated``, ``attribute not in [values]``."""

    attribute: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Not:
    """Logical negation of ``item``."""

    item: Node


@dataclass(frozen=True)
class And:
    """Conjunction of ``items`` (no item is itself an ``And``); empty means "always"."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Disjunction of ``items`` (at least two, no item is itself an ``Or``)."""

    items: tuple[Node, ...]


#: Any node of a rule's syntax tree.
Node: TypeAlias = Compare | Membership | Not | And | Or


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def _fail(msg: str, kind: str) -> InvalidRule:
    return InvalidRule("invalid eligibility rule", [FieldError(loc=("rule",), msg=msg, type=kind)])


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _describe_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return _format_number(value)


def _suggest(word: str, candidates: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------
# Tokeniser
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # ident number string op punct error end
    text: str  # source text of the token (for messages)
    pos: int
    value: Value = ""
    error: str = ""
    error_kind: str = "syntax_error"

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the rule"
        if self.kind == "ident" and self.text in KEYWORDS:
            return f"keyword '{self.text}'"
        return repr(self.text)


def _tokenise(text: str) -> Iterator[_Token]:
    """Yield tokens; malformed input becomes an ``error`` token so it is reported in order."""
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            yield _Token("end", "", n)
            return
        c = text[i]
        if c in "()[],":
            yield _Token("punct", c, i)
            i += 1
        elif c in "'\"":
            token = _scan_string(text, i)
            yield token
            if token.kind == "error":
                return
            i += len(token.text)
        elif c in "=!<>~":
            m = _OPERATOR_RUN.match(text, i)
            assert m is not None
            op = m.group()
            if op in COMPARISON_OPS:
                yield _Token("op", op, i)
            else:
                hint = _OPERATOR_HINTS.get(op)
                yield _Token(
                    "error",
                    op,
                    i,
                    error=f"unknown operator '{op}' at position {i}"
                    + (f"; did you mean '{hint}'?" if hint else "")
                    + "; operators are ==, !=, <, <=, >, >=, in and not in",
                    error_kind="unknown_operator",
                )
                return
            i = m.end()
        elif c.isascii() and (c.isdigit() or (c == "-" and text[i + 1 : i + 2] in _DIGITS)):
            m = _NUMBER_WORD.match(text, i)
            assert m is not None
            word = m.group()
            if not _NUMBER.fullmatch(word):
                yield _Token("error", word, i, error=f"invalid number '{word}' at position {i}")
                return
            number: int | Decimal = Decimal(word) if "." in word else int(word)
            yield _Token("number", word, i, value=number)
            i = m.end()
        elif c.isalpha() or c == "_":
            m = _WORD.match(text, i)
            assert m is not None
            word = m.group()
            if not word.isascii():
                yield _Token(
                    "error",
                    word,
                    i,
                    error=f"invalid name '{word}' at position {i}; names and bare values use "
                    "ASCII letters, digits, '_' and '.' only (quote other text)",
                )
                return
            yield _Token("ident", word, i)
            i = m.end()
        else:
            shown = c if c.isprintable() else repr(c)[1:-1]
            yield _Token("error", c, i, error=f"unexpected character '{shown}' at position {i}")
            return


def _scan_string(text: str, start: int) -> _Token:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return _Token("string", text[start : i + 1], start, value="".join(chars))
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _ESCAPABLE or not nxt:
                shown = "\\" + nxt if nxt else "\\"
                return _Token(
                    "error",
                    shown,
                    i,
                    error=f"invalid escape '{shown}' at position {i}; "
                    "only \\\\, \\' and \\\" are allowed in quoted text",
                )
            chars.append(nxt)
            i += 2
            continue
        chars.append(c)
        i += 1
    return _Token(
        "error",
        text[start:],
        start,
        error=f"unterminated string starting at position {start}; close it with {quote}",
    )


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser that validates each comparison as it builds it."""

    def __init__(
        self,
        text: str,
        attributes: Mapping[str, AttributeSpec],
        channel_keys: Collection[str] | None,
    ) -> None:
        self.tokens = _tokenise(text)
        self.current = next(self.tokens)
        self.attributes = attributes
        self.channel_keys = frozenset(channel_keys) if channel_keys is not None else None
        self.depth = 0

    # -- token helpers -------------------------------------------------------

    def peek(self) -> _Token:
        if self.current.kind == "error":
            raise _fail(self.current.error, self.current.error_kind)
        return self.current

    def advance(self) -> _Token:
        token = self.peek()
        if token.kind != "end":
            self.current = next(self.tokens)
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    # -- grammar -------------------------------------------------------------

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise _fail("the rule is empty", "empty_rule")
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            if token.text == ")":
                raise _fail(
                    f"unbalanced parentheses: unexpected ')' at position {token.pos}",
                    "syntax_error",
                )
            raise _fail(
                f"unexpected {token.describe()} at position {token.pos}; "
                "expected 'and', 'or' or the end of the rule",
                "syntax_error",
            )
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at("ident", "or"):
            self.advance()
            items.append(self.and_expr())
        return _combine(Or, items)

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.at("ident", "and"):
            self.advance()
            items.append(self.not_expr())
        return _combine(And, items)

    def not_expr(self, counted: bool = False) -> Node:
        """``not`` and ``(`` each add a nesting level, except ``not (`` which counts once."""
        token = self.peek()
        if token.kind == "ident" and token.text == "not":
            self.enter(token)
            self.advance()
            node: Node = Not(self.not_expr(counted=True))
            self.depth -= 1
            return node
        if token.kind == "punct" and token.text == "(":
            if not counted:
                self.enter(token)
            self.advance()
            node = self.or_expr()
            if not self.at("punct", ")"):
                closing = self.peek()
                raise _fail(
                    f"unbalanced parentheses: '(' at position {token.pos} is not closed; "
                    f"found {closing.describe()} at position {closing.pos}",
                    "syntax_error",
                )
            self.advance()
            if not counted:
                self.depth -= 1
            return node
        return self.comparison()

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_RULE_DEPTH:
            raise _fail(
                f"the rule nests too deeply at position {token.pos}: at most {MAX_RULE_DEPTH} "
                "levels of parentheses and 'not' are allowed",
                "too_deep",
            )

    def comparison(self) -> Node:
        token = self.advance()
        if token.kind != "ident" or token.text in KEYWORDS:
            raise _fail(
                f"expected an attribute name at position {token.pos}, got {token.describe()}",
                "syntax_error",
            )
        attribute = token.text
        spec = self.resolve_attribute(token)
        op_token = self.advance()
        if op_token.kind == "op":
            value_token = self.advance()
            value = self.value(value_token, f"after '{op_token.text}'")
            _check_compare(attribute, spec, op_token.text, op_token.pos, value, value_token.pos)
            self.check_allowed(attribute, spec, value, value_token.pos)
            return Compare(attribute, op_token.text, value)
        negated = False
        if op_token.kind == "ident" and op_token.text == "not":
            negated = True
            in_token = self.advance()
            if not (in_token.kind == "ident" and in_token.text == "in"):
                raise _fail(
                    f"expected 'in' after 'not' at position {in_token.pos}, "
                    f"got {in_token.describe()}",
                    "syntax_error",
                )
        elif not (op_token.kind == "ident" and op_token.text == "in"):
            raise _fail(
                f"expected an operator after attribute '{attribute}' at position "
                f"{op_token.pos}, got {op_token.describe()}; operators are "
                "==, !=, <, <=, >, >=, in and not in",
                "syntax_error",
            )
        values = self.value_list()
        for value, pos in values:
            _check_compare(attribute, spec, "==", None, value, pos)
            self.check_allowed(attribute, spec, value, pos)
        return Membership(attribute, tuple(v for v, _ in values), negated)

    def value_list(self) -> list[tuple[Value, int]]:
        opening = self.advance()
        if opening.text != "[" or opening.kind != "punct":
            raise _fail(
                f"expected '[' to start a list at position {opening.pos}, got {opening.describe()}",
                "syntax_error",
            )
        if self.at("punct", "]"):
            raise _fail(
                f"empty list at position {opening.pos}; a list needs at least one value",
                "syntax_error",
            )
        values: list[tuple[Value, int]] = []
        while True:
            token = self.advance()
            values.append((self.value(token, "in list"), token.pos))
            separator = self.advance()
            if separator.kind == "punct" and separator.text == "]":
                return values
            if not (separator.kind == "punct" and separator.text == ","):
                raise _fail(
                    f"expected ',' or ']' at position {separator.pos}, "
                    f"got {separator.describe()}; the list opened at position "
                    f"{opening.pos} is not closed",
                    "syntax_error",
                )

    def value(self, token: _Token, context: str) -> Value:
        if token.kind in ("number", "string"):
            return token.value
        if token.kind == "ident":
            if token.text == "true":
                return True
            if token.text == "false":
                return False
            if _IDENTIFIER.fullmatch(token.text) and token.text not in KEYWORDS:
                return token.text
            if token.text not in KEYWORDS:
                raise _fail(
                    f"invalid value {token.describe()} at position {token.pos}; "
                    "quote text that is not a plain identifier",
                    "syntax_error",
                )
        raise _fail(
            f"expected a value {context} at position {token.pos}, got {token.describe()}",
            "syntax_error",
        )

    # -- validation ----------------------------------------------------------

    def resolve_attribute(self, token: _Token) -> AttributeSpec | None:
        """The spec of a built-in attribute, ``None`` for a custom one; raise if unknown."""
        name = token.text
        if name.startswith(CUSTOM_PREFIX):
            custom = name[len(CUSTOM_PREFIX) :]
            if not _IDENTIFIER.fullmatch(custom):
                raise _fail(
                    f"invalid custom attribute '{name}' at position {token.pos}; "
                    "write attr.<name> where <name> is an identifier (letters, digits, _)",
                    "unknown_attribute",
                )
            return None
        spec = self.attributes.get(name)
        if spec is None:
            known = ", ".join(sorted(self.attributes))
            raise _fail(
                f"unknown attribute '{name}' at position {token.pos}"
                f"{_suggest(name, self.attributes)}; known attributes: {known} "
                "(custom attributes are written attr.<name>)",
                "unknown_attribute",
            )
        return spec

    def check_allowed(
        self, attribute: str, spec: AttributeSpec | None, value: Value, pos: int
    ) -> None:
        if spec is None or not isinstance(value, str):
            return
        allowed = spec.allowed
        if attribute == CHANNEL_ATTRIBUTE and self.channel_keys is not None:
            allowed = self.channel_keys
        if allowed is None or value in allowed:
            return
        listed = ", ".join(sorted(allowed)) if allowed else "(none)"
        raise _fail(
            f"value {_quote(value)} at position {pos} is not allowed for '{attribute}'"
            f"{_suggest(value, allowed)}; allowed values: {listed}",
            "value_not_allowed",
        )


def _combine(kind: type[And] | type[Or], items: list[Node]) -> Node:
    """One item stays as is; several are joined, flattening nested nodes of the same kind."""
    if len(items) == 1:
        return items[0]
    flat: list[Node] = []
    for item in items:
        if isinstance(item, kind):
            flat.extend(item.items)
        else:
            flat.append(item)
    return kind(tuple(flat))


def _value_kind(value: Value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "text"
    return "a number"


def _check_compare(
    attribute: str,
    spec: AttributeSpec | None,
    op: str,
    op_pos: int | None,
    value: Value,
    value_pos: int,
) -> None:
    """Raise if ``attribute op value`` mixes types (``op_pos`` is None inside a list)."""
    shown = _describe_value(value)
    if op in ORDERING_OPS:
        if spec is not None and spec.type is not AttributeType.INTEGER:
            raise _fail(
                f"attribute '{attribute}' is {_type_phrase(spec.type)} and cannot be compared "
                f"with '{op}' at position {op_pos}; use ==, !=, in or not in",
                "type_mismatch",
            )
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise _fail(
                f"'{op}' at position {op_pos} needs a number, but the value {shown} at "
                f"position {value_pos} is {_value_kind(value)}",
                "type_mismatch",
            )
        return
    if spec is None:
        return
    expected = {
        AttributeType.STRING: "text",
        AttributeType.INTEGER: "a number",
        AttributeType.BOOLEAN: "a boolean",
    }[spec.type]
    if _value_kind(value) != expected:
        hint = "; expected true or false" if spec.type is AttributeType.BOOLEAN else ""
        raise _fail(
            f"attribute '{attribute}' is {_type_phrase(spec.type)} but the value {shown} at "
            f"position {value_pos} is {_value_kind(value)}{hint}",
            "type_mismatch",
        )


def _type_phrase(kind: AttributeType) -> str:
    return {
        AttributeType.STRING: "text",
        AttributeType.INTEGER: "an integer",
        AttributeType.BOOLEAN: "a boolean",
    }[kind]


# ---------------------------------------------------------------------------
# Canonical text
# ---------------------------------------------------------------------------


def _format_number(value: int | Decimal) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _IDENTIFIER.fullmatch(value) and value not in KEYWORDS:
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _format_number(value)


def _render(node: Node) -> str:
    if isinstance(node, Compare):
        return f"{node.attribute} {node.op} {_format_value(node.value)}"
    if isinstance(node, Membership):
        listed = ", ".join(_format_value(v) for v in node.values)
        return f"{node.attribute} {'not in' if node.negated else 'in'} [{listed}]"
    if isinstance(node, Not):
        inner = _render(node.item)
        return f"not {inner}" if isinstance(node.item, Not) else f"not ({inner})"
    joiner = " and " if isinstance(node, And) else " or "
    parts = []
    for item in node.items:
        text = _render(item)
        # `and` binds tighter than `or`, so only an Or inside an And needs parentheses.
        parts.append(f"({text})" if isinstance(node, And) and isinstance(item, Or) else text)
    return joiner.join(parts)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

_MISSING: Final = object()


def _lookup(customer: Mapping[str, object], attribute: str) -> object:
    if attribute.startswith(CUSTOM_PREFIX):
        custom = customer.get("attributes")
        name = attribute[len(CUSTOM_PREFIX) :]
        if isinstance(custom, Mapping) and name in custom:
            return custom[name]
    return customer.get(attribute, _MISSING)


def _kind(value: object) -> str | None:
    """``"boolean"``, ``"number"``, ``"string"`` or ``None`` for missing/unusable values."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        return None if math.isnan(value) else "number"  # NaN compares with nothing
    if isinstance(value, Decimal):
        return None if value.is_nan() else "number"
    if isinstance(value, str):
        return "string"
    return None


def _equal(actual: object, kind: str, expected: Value) -> bool:
    return kind == _kind(expected) and actual == expected


def _evaluate(node: Node, customer: Mapping[str, object]) -> bool:
    if isinstance(node, And):
        return all(_evaluate(item, customer) for item in node.items)
    if isinstance(node, Or):
        return any(_evaluate(item, customer) for item in node.items)
    if isinstance(node, Not):
        return not _evaluate(node.item, customer)
    actual = _lookup(customer, node.attribute)
    kind = _kind(actual)
    if isinstance(actual, float) and kind is not None:
        actual = Decimal(repr(actual))  # compare a float as written: 0.3 == 0.3, not binary
    if kind is None:
        return False  # missing never matches, whatever the operator
    if isinstance(node, Membership):
        found = any(_equal(actual, kind, v) for v in node.values)
        return found != node.negated
    if node.op == "==":
        return _equal(actual, kind, node.value)
    if node.op == "!=":
        return not _equal(actual, kind, node.value)
    if kind != "number" or _kind(node.value) != "number":
        return False
    left: Any = actual
    right: Any = node.value
    if node.op == "<":
        return bool(left < right)
    if node.op == "<=":
        return bool(left <= right)
    if node.op == ">":
        return bool(left > right)
    return bool(left >= right)


def _attributes(node: Node) -> Iterator[str]:
    if isinstance(node, Compare | Membership):
        yield node.attribute
    elif isinstance(node, Not):
        yield from _attributes(node.item)
    else:
        for item in node.items:
            yield from _attributes(item)


# ---------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------

DATA_VERSION: Final = 1
_DECIMAL_DATA = re.compile(r"-?[0-9]+\.[0-9]+")
# Nodes may nest deeper than the text depth (an Or in an And costs one pair of parentheses),
# so this only stops runaway recursion; re-parsing the canonical text applies the real limit.
_MAX_DATA_DEPTH: Final = 2 * MAX_RULE_DEPTH + 2
# An integer of this many bits has more digits than a rule may have characters (4 bits per
# digit overestimates log2(10)), yet fewer than the 4300 Python converts to text by default.
_MAX_DATA_INT_BITS: Final = 4 * MAX_RULE_LENGTH


def _value_to_data(value: Value) -> object:
    if isinstance(value, Decimal):
        return {"decimal": _format_number(value)}
    return value


def _node_to_data(node: Node) -> dict[str, Any]:
    if isinstance(node, Compare):
        return {
            "type": "compare",
            "attribute": node.attribute,
            "op": node.op,
            "value": _value_to_data(node.value),
        }
    if isinstance(node, Membership):
        return {
            "type": "membership",
            "attribute": node.attribute,
            "values": [_value_to_data(v) for v in node.values],
            "negated": node.negated,
        }
    if isinstance(node, Not):
        return {"type": "not", "item": _node_to_data(node.item)}
    kind = "and" if isinstance(node, And) else "or"
    return {"type": kind, "items": [_node_to_data(item) for item in node.items]}


def _shown(value: object) -> str:
    """A short description of a value from outside, for a message (any value, any size)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"(an integer of {value.bit_length():,} bits)"
    if value is not None and not isinstance(value, str | int | float | Decimal):
        return f"(a {type(value).__name__})"  # its repr could be huge, or fail
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bad_data(msg: str) -> InvalidRule:
    return _fail(f"malformed rule data: {msg}", "invalid_data")


def _value_from_data(data: object, where: str) -> Value:
    if isinstance(data, int) and not isinstance(data, bool) \
            and data.bit_length() > _MAX_DATA_INT_BITS:
        # Too long for any rule text, and too long for Python to print as digits at all.
        raise _bad_data(f"{where} is a number too long for a rule "
                        f"(more than {MAX_RULE_LENGTH} digits)")
    if isinstance(data, str | bool | int):
        return data
    if isinstance(data, Mapping) and set(data) == {"decimal"}:
        text = data["decimal"]
        if isinstance(text, str) and _DECIMAL_DATA.fullmatch(text):
            return Decimal(text)
    raise _bad_data(
        f"{where} must be text, an integer, a boolean or {{'decimal': '<digits>.<digits>'}}"
    )


def _expect_keys(data: Mapping[str, Any], keys: set[str], where: str) -> None:
    if set(data) != keys:
        raise _bad_data(f"{where} must have exactly the keys {', '.join(sorted(keys))}")


def _node_from_data(data: object, where: str, depth: int) -> Node:
    if depth > _MAX_DATA_DEPTH:
        raise _bad_data(f"{where} nests too deeply")
    if not isinstance(data, Mapping):
        raise _bad_data(f"{where} must be an object")
    kind = data.get("type")
    if kind == "compare":
        _expect_keys(data, {"type", "attribute", "op", "value"}, where)
        attribute, op = data["attribute"], data["op"]
        if not isinstance(attribute, str) or not isinstance(op, str):
            raise _bad_data(f"{where}: attribute and op must be text")
        return Compare(attribute, op, _value_from_data(data["value"], f"{where}.value"))
    if kind == "membership":
        _expect_keys(data, {"type", "attribute", "values", "negated"}, where)
        attribute, values, negated = data["attribute"], data["values"], data["negated"]
        if not isinstance(attribute, str) or not isinstance(negated, bool):
            raise _bad_data(f"{where}: attribute must be text and negated a boolean")
        if not isinstance(values, list):
            raise _bad_data(f"{where}.values must be a list")
        return Membership(
            attribute,
            tuple(_value_from_data(v, f"{where}.values[{i}]") for i, v in enumerate(values)),
            negated,
        )
    if kind == "not":
        _expect_keys(data, {"type", "item"}, where)
        return Not(_node_from_data(data["item"], f"{where}.item", depth + 1))
    if kind in ("and", "or"):
        _expect_keys(data, {"type", "items"}, where)
        items = data["items"]
        if not isinstance(items, list):
            raise _bad_data(f"{where}.items must be a list")
        children = tuple(
            _node_from_data(item, f"{where}.items[{i}]", depth + 1) for i, item in enumerate(items)
        )
        return And(children) if kind == "and" else Or(children)
    raise _bad_data(f"{where}.type must be one of compare, membership, not, and, or")


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A parsed, validated eligibility rule.

    ``source`` is the canonical text of ``tree`` (what ``str(rule)`` returns); parsing it
    again gives an equal tree. Build rules with :func:`parse_rule`,
    :func:`parse_optional_rule` or :meth:`from_data` rather than directly.
    """

    source: str
    tree: Node

    def __str__(self) -> str:
        return self.source

    def evaluate(self, customer: Mapping[str, object]) -> bool:
        """Whether ``customer`` (attribute name -> value) satisfies the rule.

        Built-in attributes are read from ``customer[name]``. A custom attribute
        ``attr.<name>`` is read from the mapping ``customer["attributes"]`` when that
        mapping has ``<name>``, else from ``customer["attr.<name>"]``.

        **Missing never matches.** An attribute that is absent, ``None``, NaN or of an
        unusable type (a list, a dict...) makes its comparison False, *including* ``!=`` and
        ``not in``: ``region != north`` does not select customers with no region. ``not``
        still negates whatever its operand gives, so ``not (region == north)`` *does* select
        them. For a present value ``!=`` and ``not in`` are the exact negations of ``==`` and
        ``in``. Values only equal values of the same kind (text, number or boolean, so
        ``1`` is not ``true`` and ``"1"`` is not ``1``); ``<``, ``<=``, ``>``, ``>=`` are
        False unless the customer's value is a number. A float customer value is compared
        as its shortest decimal form (``0.3 == 0.3`` holds). Text comparison is
        case-sensitive.
        """
        return _evaluate(self.tree, customer)

    def attributes_used(self) -> frozenset[str]:
        """Names of the attributes the rule reads (custom ones as ``attr.<name>``)."""
        return frozenset(_attributes(self.tree))

    def to_data(self) -> dict[str, Any]:
        """A JSON-serialisable form: ``{"version": 1, "tree": {...}}``.

        Nodes are ``{"type": "compare", "attribute", "op", "value"}``,
        ``{"type": "membership", "attribute", "values": [...], "negated"}``,
        ``{"type": "not", "item"}`` and ``{"type": "and"|"or", "items": [...]}``. Values are
        JSON text, integers and booleans; decimals are ``{"decimal": "7.50"}`` so that they
        stay exact.
        """
        return {"version": DATA_VERSION, "tree": _node_to_data(self.tree)}

    @classmethod
    def from_data(
        cls,
        data: Mapping[str, Any],
        *,
        attributes: Mapping[str, AttributeSpec] = CUSTOMER_ATTRIBUTES,
        channel_keys: Collection[str] | None = None,
    ) -> Rule:
        """Rebuild a rule from :meth:`to_data` output, validating it like :func:`parse_rule`.

        Raises :class:`InvalidRule` (type ``invalid_data``) when ``data`` is malformed, not
        in the canonical shape :func:`parse_rule` produces, or does not validate against
        ``attributes`` / ``channel_keys``.
        """
        if not isinstance(data, Mapping):
            raise _bad_data("expected an object")
        version = data.get("version")
        if isinstance(version, bool) or version != DATA_VERSION:
            raise _bad_data(f"unsupported version {_shown(version)}; expected {DATA_VERSION}")
        _expect_keys(data, {"version", "tree"}, "the rule")
        tree = _node_from_data(data["tree"], "tree", 0)
        return _rule_from_tree(tree, attributes, channel_keys, "malformed rule data")

    @classmethod
    def from_tree(
        cls,
        tree: Node,
        *,
        attributes: Mapping[str, AttributeSpec] = CUSTOMER_ATTRIBUTES,
        channel_keys: Collection[str] | None = None,
    ) -> Rule:
        """Build a rule from a syntax tree, validating it like :func:`parse_rule`.

        The tree must be in the canonical shape the parser produces (``And``/``Or`` with at
        least two items and no directly nested node of the same kind); ``And(())`` gives
        :data:`ALWAYS`. Raises :class:`InvalidRule` (type ``invalid_data``) otherwise.
        """
        return _rule_from_tree(tree, attributes, channel_keys, "invalid rule tree")


def _check_tree_shape(tree: object, problem: str) -> None:
    """Raise unless ``tree`` is made of node objects and nests at most ``_MAX_DATA_DEPTH``."""
    stack: list[tuple[object, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DATA_DEPTH:
            raise _fail(f"{problem}: the tree nests too deeply", "invalid_data")
        if isinstance(node, Not):
            stack.append((node.item, depth + 1))
        elif isinstance(node, And | Or) and isinstance(node.items, tuple):
            stack.extend((item, depth + 1) for item in node.items)
        elif not isinstance(node, Compare | Membership):
            raise _fail(f"{problem}: {type(node).__name__} is not a rule node", "invalid_data")


def _rule_from_tree(
    tree: Node,
    attributes: Mapping[str, AttributeSpec],
    channel_keys: Collection[str] | None,
    problem: str,
) -> Rule:
    """Validate ``tree`` by parsing its canonical text, which must give the same tree back."""
    _check_tree_shape(tree, problem)
    if tree == ALWAYS.tree:
        return ALWAYS
    try:
        text = _render(tree)
        rule = _parse(text, attributes, channel_keys)
    except InvalidRule as exc:
        detail = "; ".join(e.msg for e in exc.errors)
        raise _fail(f"{problem}: {detail} (in {text!r})", "invalid_data") from exc
    except (TypeError, AttributeError) as exc:  # e.g. a Membership whose values is no tuple
        raise _fail(f"{problem}: {exc}", "invalid_data") from exc
    if rule.tree != tree:
        raise _fail(
            f"{problem}: the tree is not in canonical form (it reads {text!r})", "invalid_data"
        )
    return rule


#: The rule that matches every customer: an empty conjunction, with empty source text.
ALWAYS: Final = Rule(source="", tree=And(()))


def _parse(
    text: str,
    attributes: Mapping[str, AttributeSpec],
    channel_keys: Collection[str] | None,
) -> Rule:
    tree = _Parser(text, attributes, channel_keys).parse()
    source = _render(tree)
    if len(source) > MAX_RULE_LENGTH:
        # Checked on the canonical text too, so that str(rule) always parses again.
        raise _fail(
            f"the rule is {len(source)} characters long once normalised (one space around "
            f"operators and keywords); at most {MAX_RULE_LENGTH} are allowed",
            "too_long",
        )
    return Rule(source=source, tree=tree)


def parse_rule(
    text: str,
    *,
    attributes: Mapping[str, AttributeSpec] = CUSTOMER_ATTRIBUTES,
    channel_keys: Collection[str] | None = None,
) -> Rule:
    """Parse and validate ``text`` into a :class:`Rule`.

    ``attributes`` are the attribute names the rule may use (``attr.<name>`` custom
    attributes are always allowed, with any value type). When ``channel_keys`` is given,
    ``preferred_channel`` may only be compared with those keys.

    Raises :class:`InvalidRule` for anything that is not a valid rule: empty or over-long
    text (more than :data:`MAX_RULE_LENGTH` characters), nesting deeper than
    :data:`MAX_RULE_DEPTH`, syntax errors, unknown operators or attributes, values of the
    wrong type and values outside an attribute's allowed set. The single field error's
    message names the offending term and its 0-based position.
    """
    if not isinstance(text, str):
        raise _fail(f"a rule must be text, not {type(text).__name__}", "syntax_error")
    if len(text) > MAX_RULE_LENGTH:
        raise _fail(
            f"the rule is {len(text)} characters long; at most {MAX_RULE_LENGTH} are allowed",
            "too_long",
        )
    return _parse(text, attributes, channel_keys)


def parse_optional_rule(
    text: str | None,
    *,
    attributes: Mapping[str, AttributeSpec] = CUSTOMER_ATTRIBUTES,
    channel_keys: Collection[str] | None = None,
) -> Rule:
    """Like :func:`parse_rule`, but ``None`` or blank text gives :data:`ALWAYS`."""
    if text is None or not text.strip():
        return ALWAYS
    return parse_rule(text, attributes=attributes, channel_keys=channel_keys)
