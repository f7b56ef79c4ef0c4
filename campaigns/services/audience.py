"""Audiences: the customers an eligibility rule selects, counted by the database.

A rule (:mod:`campaigns.rules`) is compiled into a SQL condition on the ``customer``
table that selects exactly the customers :meth:`Rule.evaluate` accepts, so a count is
one ``SELECT count(*)`` on SQLite and PostgreSQL alike and never loads customers into
Python. The compiled condition keeps the rule language's semantics, which differ from
SQL's three-valued logic:

- a missing attribute (NULL column, absent or null JSON key, a list or object) never
  matches, *including* ``!=`` and ``not in``, while ``not (...)`` does negate it: every
  comparison is therefore compiled to a two-valued condition (never NULL), so that SQL's
  ``NOT`` is the rule's ``not``;
- values only equal values of the same kind (text, number, boolean), so a custom
  attribute ``attr.x`` is compared only after checking its JSON type;
- numbers are exact: an integer column compared with a decimal (``tenure_months >= 7.5``)
  is compared with the whole number that gives the same answer, never through a float.

The planning queries the campaign wizard needs (overlap between two audiences, the
baseline adoption of a goal's target channel, a typical order) use the same condition.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Numeric,
    String,
    and_,
    case,
    cast,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session, col

from campaigns.errors import FieldError, InvalidRule
from campaigns.models import (
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    ChannelEvent,
    Conversion,
    Customer,
    EventKind,
    MigrationGoal,
)
from campaigns.rules import (
    ALWAYS,
    CUSTOM_PREFIX,
    And,
    Compare,
    Membership,
    Node,
    Not,
    Or,
    Rule,
    Value,
)
from campaigns.services.channels import channel_keys
from campaigns.services.goals import validate_rule

CU = Customer.__table__  # type: ignore[attr-defined]
EV = ChannelEvent.__table__  # type: ignore[attr-defined]
CV = Conversion.__table__  # type: ignore[attr-defined]

#: Rule attribute -> customer column (see campaigns.services.customers.customer_attributes).
ATTRIBUTE_COLUMNS = {
    "segment": "segment",
    "value_tier": "value_tier",
    "loyalty_tier": "loyalty_tier",
    "preferred_channel": "preferred_channel",
    "region": "region",
    "age_band": "age_band",
    "tenure_months": "tenure_months",
    "points": "points",
    "lifetime_value": "lifetime_value_minor",
    "is_new": "is_new",
}
INTEGER_COLUMNS = frozenset({"tenure_months", "points", "lifetime_value_minor"})

#: Campaigns whose offers are (or will be) shown: the ones a new campaign can clash with.
LIVE_STATUSES = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.SCHEDULED)


# --------------------------------------------------------------------------- compiling


def rule_condition(rule: Rule, *, dialect: str) -> ColumnElement[bool]:
    """A two-valued SQL condition on ``customer`` that holds exactly when the rule does."""
    return _Compiler(dialect).node(rule.tree)


def audience_condition(rules: Iterable[Rule], *, dialect: str) -> ColumnElement[bool]:
    """Customers every rule accepts (a goal's rule and its campaign's rule, typically)."""
    conditions = [rule_condition(rule, dialect=dialect) for rule in rules if rule != ALWAYS]
    return and_(true(), *conditions) if conditions else true()


class _Compiler:
    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"

    def node(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(true(), *(self.node(item) for item in node.items))
        if isinstance(node, Or):
            return or_(false(), *(self.node(item) for item in node.items))
        if isinstance(node, Not):
            return not_(self.node(node.item))
        if node.attribute.startswith(CUSTOM_PREFIX):
            return _CustomAttribute(node.attribute[len(CUSTOM_PREFIX):], self.postgres).test(node)
        return _column_test(node, postgres=self.postgres)


def _unstorable(value: Value, *, postgres: bool) -> bool:
    """Text PostgreSQL cannot store (it holds NUL), so no stored value equals it.

    It is left out of the statement rather than bound: the driver refuses to send it.
    """
    return postgres and isinstance(value, str) and "\x00" in value


def _column_test(node: Compare | Membership, *, postgres: bool) -> ColumnElement[bool]:
    """A comparison on a built-in attribute; the parser has checked the value types."""
    column_name = ATTRIBUTE_COLUMNS[node.attribute]
    column = CU.c[column_name]
    integer = column_name in INTEGER_COLUMNS
    if isinstance(node, Membership):
        values = _whole_values(node.values) if integer else [
            value for value in node.values if not _unstorable(value, postgres=postgres)]
        found = column.in_(values) if values else false()
        return and_(column.is_not(None), not_(found) if node.negated else found)
    if integer:
        return and_(column.is_not(None), _integer_compare(column, node.op, node.value))
    if _unstorable(node.value, postgres=postgres):
        return and_(column.is_not(None), true() if node.op == "!=" else false())
    return and_(column.is_not(None), _compare(column, node.op, node.value))


#: Integer columns (and SQLite's JSON integers) are 64-bit: no stored value lies outside.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _whole_values(values: Iterable[Value]) -> list[int]:
    """The values an integer can equal: whole numbers (``2.0`` is 2, ``2.5`` matches none).

    Whole numbers beyond 64 bits are left out: no stored integer equals them (and SQLite
    could not even bind them).
    """
    whole = []
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            number = value
        elif isinstance(value, Decimal) and value == value.to_integral_value():
            number = int(value)
        else:
            continue
        if INT64_MIN <= number <= INT64_MAX:
            whole.append(number)
    return whole


def _integer_compare(column: Any, op: str, value: Value) -> ColumnElement[bool]:
    """``integer op number`` exactly, rewritten as a comparison with a 64-bit whole number."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return true() if op == "!=" else false()
    if isinstance(value, int) or value == value.to_integral_value():
        whole = int(value)
        if whole > INT64_MAX:  # above every stored integer
            return true() if op in ("<", "<=", "!=") else false()
        if whole < INT64_MIN:  # below every stored integer
            return true() if op in (">", ">=", "!=") else false()
        return _compare(column, op, whole)
    floor, ceiling = math.floor(value), math.ceil(value)
    if op == "==":
        return false()
    if op == "!=":
        return true()
    # No integer equals a fractional value: x < 7.5 is x <= 7, x > 7.5 is x >= 8.
    return {"<": _integer_compare(column, "<=", floor), "<=": _integer_compare(column, "<=", floor),
            ">": _integer_compare(column, ">=", ceiling),
            ">=": _integer_compare(column, ">=", ceiling)}[op]


def _float_compare(column: Any, op: str, value: int | Decimal) -> ColumnElement[bool]:
    """``double op number`` as the rule means it: the double read as its shortest decimal.

    :meth:`Rule.evaluate` compares a float by its shortest decimal form (``0.3`` is 0.3, not
    the binary fraction nearest to it). Let ``f`` be the double nearest to ``value`` and
    ``r`` the shortest decimal of ``f``. Reading doubles as their shortest decimals keeps
    their order, so a double ``d`` compares with ``value`` as ``d`` compares with ``f``,
    except when ``d == f`` and ``r`` is not ``value`` (``0.30000000000000001`` has
    ``f = 0.3``, whose shortest decimal ``0.3`` is smaller): then no double equals
    ``value``, and ``f`` itself lies on the side of ``value`` that ``r`` does.
    """
    try:
        nearest = float(value)
    except OverflowError:  # beyond every double
        nearest = math.inf if value > 0 else -math.inf
    if math.isinf(nearest):
        above = nearest > 0
        if op in ("==",):
            return false()
        if op == "!=":
            return true()
        return true() if (op in ("<", "<=")) == above else false()
    shortest = Decimal(repr(nearest))
    if shortest == value:
        return _compare(column, op, nearest)
    if op == "==":
        return false()
    if op == "!=":
        return true()
    if op in ("<", "<="):
        return column <= nearest if shortest < value else column < nearest
    return column >= nearest if shortest > value else column > nearest


def _compare(left: Any, op: str, right: Any) -> ColumnElement[bool]:
    result: ColumnElement[bool] = _OPERATORS[op](left, right)
    return result


_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge}


class _CustomAttribute:
    """``attr.<name>``: a key of the customer's JSON ``attributes``, typed per customer.

    SQLite's ``json_type`` says ``text``, ``integer``, ``real``, ``true`` or ``false``;
    PostgreSQL's ``jsonb_typeof`` says ``string``, ``number`` or ``boolean``. Anything else
    (no key, ``null``, a list, an object) is missing. Every test is wrapped in
    ``coalesce(..., false)`` so a missing key gives false, never NULL.
    """

    def __init__(self, name: str, postgres: bool) -> None:
        self.postgres = postgres
        self.kinds: dict[str, tuple[str, ...]]
        if postgres:
            self.type = func.jsonb_typeof(CU.c.attributes.op("->")(name))
            self.text = CU.c.attributes.op("->>", return_type=String())(name)
            self.kinds = {"string": ("string",), "number": ("number",),
                          "boolean": ("boolean",)}
        else:
            path = f'$."{name}"'
            self.type = func.json_type(CU.c.attributes, path)
            self.text = func.json_extract(CU.c.attributes, path)
            self.kinds = {"string": ("text",), "number": ("integer", "real"),
                          "boolean": ("true", "false")}

    def _is(self, kind: str) -> ColumnElement[bool]:
        return self.type.in_(self.kinds[kind])

    def present(self) -> ColumnElement[bool]:
        return func.coalesce(self.type.in_([t for kinds in self.kinds.values() for t in kinds]),
                             false())

    def number(self) -> Any:
        if self.postgres:
            # Cast only numbers: PostgreSQL does not promise to test the type first in AND.
            return case((self._is("number"), cast(self.text, Numeric())), else_=None)
        return self.text

    def equals(self, value: Value) -> ColumnElement[bool]:
        if isinstance(value, bool):
            if self.postgres:
                test = and_(self._is("boolean"), self.text == ("true" if value else "false"))
            else:
                test = self.type == ("true" if value else "false")
        elif isinstance(value, str):
            test = false() if _unstorable(value, postgres=self.postgres) \
                else and_(self._is("string"), self.text == value)
        else:
            test = self.number_test("==", value)
        return func.coalesce(test, false())

    def number_test(self, op: str, value: int | Decimal) -> ColumnElement[bool]:
        """The attribute is a number and ``number op value`` holds, as the rule means it."""
        if self.postgres:
            # jsonb keeps a number's decimal digits: compared exactly, whatever their count.
            return and_(self._is("number"), _compare(self.number(), op,
                                                     cast(str(value), Numeric())))
        # SQLite keeps a JSON number as a 64-bit integer or a double: each is compared
        # exactly with the rule's number (a double as its shortest decimal, as evaluate does).
        return or_(and_(self.type == "integer", _integer_compare(self.text, op, value)),
                   and_(self.type == "real", _float_compare(self.text, op, value)))

    def test(self, node: Compare | Membership) -> ColumnElement[bool]:
        if isinstance(node, Membership):
            found = or_(false(), *(self.equals(value) for value in node.values))
            return and_(self.present(), not_(found)) if node.negated else found
        if node.op == "==":
            return self.equals(node.value)
        if node.op == "!=":
            return and_(self.present(), not_(self.equals(node.value)))
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            return false()
        return func.coalesce(self.number_test(node.op, value), false())


# --------------------------------------------------------------------------- counting


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def parse_audience_rule(session: Session, text: str | None, *,
                        field: str = "eligibility_rule") -> Rule:
    """The rule typed by a marketer; :class:`InvalidRule` carries the rule's own message."""
    return validate_rule(session, text, field=field)


def stored_rule(tree: dict[str, Any] | None, *, session: Session | None = None) -> Rule:
    """A goal's or campaign's stored rule (:data:`ALWAYS` when it has none).

    Raises :class:`InvalidRule` if the stored tree no longer validates (e.g. a channel it
    names was renamed), which callers report instead of guessing an audience.
    """
    if not tree:
        return ALWAYS
    keys = channel_keys(session) if session is not None else None
    return Rule.from_data(tree, channel_keys=keys)


def count_customers(session: Session, rules: Iterable[Rule] = ()) -> int:
    """Customers every one of ``rules`` accepts (all customers when there is none)."""
    condition = audience_condition(rules, dialect=_dialect(session))
    return int(session.execute(select(func.count()).select_from(CU).where(condition))
               .scalar_one())


def count_matching(session: Session, rule_text: str | None, *,
                   within: Sequence[Rule] = (), field: str = "eligibility_rule") -> int:
    """Customers matching the rule typed as ``rule_text`` (and every rule of ``within``).

    A blank rule matches everyone. A rule that does not parse raises
    :class:`InvalidRule` whose field error (at ``field``) is the parser's message, naming
    the offending term and its position.
    """
    rule = parse_audience_rule(session, rule_text, field=field)
    return count_customers(session, [*within, rule])


def overlap_count(session: Session, first: Sequence[Rule], second: Sequence[Rule]) -> int:
    """Customers in both audiences (each given as the rules that must all hold)."""
    return count_customers(session, [*first, *second])


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class LiveCampaign:
    """A campaign that shows offers (or will) while a new one would run, with its goal."""

    campaign: Campaign
    goal: MigrationGoal

    def rules(self, session: Session) -> list[Rule]:
        """The campaign's audience; :class:`InvalidRule` if a stored rule no longer reads."""
        try:
            return [stored_rule(self.goal.eligibility_tree, session=session),
                    stored_rule(self.campaign.eligibility_tree, session=session)]
        except InvalidRule as error:
            raise InvalidRule(
                f"the audience of campaign '{self.campaign.name}' cannot be read",
                [FieldError(("eligibility_rule",), e.msg, e.type) for e in error.errors],
            ) from None


def live_campaigns(session: Session, *, starts_at: datetime | None,
                   ends_at: datetime | None) -> list[LiveCampaign]:
    """Running, paused and scheduled campaigns whose schedule overlaps ``[starts_at, ends_at)``.

    An open end on either side overlaps everything on that side.
    """
    statement = (
        select(Campaign, MigrationGoal)
        .join(MigrationGoal, col(MigrationGoal.id) == col(Campaign.goal_id))
        .where(col(Campaign.status).in_([status.value for status in LIVE_STATUSES]),
               col(Campaign.origin) == CampaignOrigin.LIVE.value)
        .order_by(col(Campaign.priority).desc(), col(Campaign.name))
    )
    if starts_at is not None:
        statement = statement.where(or_(col(Campaign.ends_at).is_(None),
                                        col(Campaign.ends_at) > starts_at))
    if ends_at is not None:
        statement = statement.where(or_(col(Campaign.starts_at).is_(None),
                                        col(Campaign.starts_at) < ends_at))
    return [LiveCampaign(campaign=campaign, goal=goal)
            for campaign, goal in session.execute(statement).all()]


@dataclass(frozen=True)
class StageAdoption:
    """Audience customers active at a stage in a period, and those who used a channel there.

    ``rate`` is the share of active customers who used the channel at least once: the
    adoption metric's value without any campaign, which a campaign's lift adds to.
    """

    active: int
    adopted: int

    @property
    def rate(self) -> float | None:
        return self.adopted / self.active if self.active else None


def stage_adoption(session: Session, *, rules: Sequence[Rule], stage_id: int,
                   channel_id: int, since: datetime, until: datetime) -> StageAdoption:
    """How many audience customers interacted at the stage, and how many of them on the channel.

    Counts customers, not interactions, with one grouped query over ``channel_event``.
    """
    per_customer = (
        select(EV.c.customer_id,
               func.max(case((EV.c.channel_id == channel_id, 1), else_=0)).label("adopted"))
        .select_from(EV.join(CU, CU.c.id == EV.c.customer_id))
        .where(EV.c.stage_id == stage_id, EV.c.kind == EventKind.INTERACTION.value,
               EV.c.occurred_at >= since, EV.c.occurred_at < until,
               audience_condition(rules, dialect=_dialect(session)))
        .group_by(EV.c.customer_id)
    ).subquery("per_customer")
    active, adopted = session.execute(
        select(func.count(), func.coalesce(func.sum(per_customer.c.adopted), 0))
        .select_from(per_customer)).one()
    return StageAdoption(active=int(active), adopted=int(adopted))


def typical_order_minor(session: Session, *, rules: Sequence[Rule], since: datetime,
                        until: datetime) -> int | None:
    """The audience's mean order (conversion revenue) in the period, rounded to a cent.

    None when the audience bought nothing in the period. Summed and counted in SQL and
    divided here in integers, so no float touches the money.
    """
    total, orders = session.execute(
        select(func.coalesce(func.sum(CV.c.revenue_minor), 0), func.count(CV.c.id))
        .select_from(CV.join(CU, CU.c.id == CV.c.customer_id))
        .where(CV.c.occurred_at >= since, CV.c.occurred_at < until,
               audience_condition(rules, dialect=_dialect(session)))).one()
    total, orders = int(total), int(orders)
    if not orders:
        return None
    return (2 * total + orders) // (2 * orders)  # round half up

