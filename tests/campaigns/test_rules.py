"""Unit tests of the eligibility rule language (``campaigns.rules``); no database needed."""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import rules
from campaigns.errors import FieldError, InvalidRule
from campaigns.rules import (
    ALWAYS,
    CUSTOMER_ATTRIBUTES,
    MAX_RULE_DEPTH,
    MAX_RULE_LENGTH,
    And,
    AttributeSpec,
    AttributeType,
    Compare,
    Membership,
    Node,
    Not,
    Or,
    Rule,
    parse_optional_rule,
    parse_rule,
)

PROPERTY_SETTINGS = settings(
    database=None,  # write nothing to the working tree
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def rejection(text: str, **kwargs: Any) -> FieldError:
    """Parse ``text``, expecting InvalidRule; return its single field error."""
    with pytest.raises(InvalidRule) as caught:
        parse_rule(text, **kwargs)
    errors = list(caught.value.errors)
    assert len(errors) == 1
    assert errors[0].loc == ("rule",)
    return errors[0]


def matches(text: str, customer: Mapping[str, object], **kwargs: Any) -> bool:
    return parse_rule(text, **kwargs).evaluate(customer)


class TestPrecedence:
    def test_and_binds_tighter_than_or(self) -> None:
        rule = parse_rule("segment == a or segment == b and region == north")
        assert rule.tree == Or(
            (
                Compare("segment", "==", "a"),
                And((Compare("segment", "==", "b"), Compare("region", "==", "north"))),
            )
        )
        # (a or b) and north would reject this customer; a or (b and north) accepts it.
        assert rule.evaluate({"segment": "a", "region": "south"})
        assert not rule.evaluate({"segment": "b", "region": "south"})

    def test_not_binds_tighter_than_and(self) -> None:
        rule = parse_rule("not segment == a and region == north")
        assert rule.tree == And(
            (Not(Compare("segment", "==", "a")), Compare("region", "==", "north"))
        )
        # not (a and north) would accept this customer; (not a) and north rejects it.
        assert not rule.evaluate({"segment": "b", "region": "south"})
        assert rule.evaluate({"segment": "b", "region": "north"})

    def test_not_binds_tighter_than_or(self) -> None:
        rule = parse_rule("not segment == a or region == north")
        assert rule.tree == Or(
            (Not(Compare("segment", "==", "a")), Compare("region", "==", "north"))
        )
        assert rule.evaluate({"segment": "a", "region": "north"})

    def test_double_not(self) -> None:
        rule = parse_rule("not not is_new == true")
        assert rule.tree == Not(Not(Compare("is_new", "==", True)))
        assert rule.evaluate({"is_new": True})
        assert not rule.evaluate({"is_new": False})

    def test_long_chains_are_flat(self) -> None:
        rule = parse_rule(
            "points > 1 and points > 2 and points > 3 or points < 0 or is_new == true"
        )
        assert isinstance(rule.tree, Or)
        assert len(rule.tree.items) == 3
        assert isinstance(rule.tree.items[0], And)
        assert len(rule.tree.items[0].items) == 3


class TestParentheses:
    def test_parentheses_override_precedence(self) -> None:
        rule = parse_rule("(segment == a or segment == b) and region == north")
        assert rule.tree == And(
            (
                Or((Compare("segment", "==", "a"), Compare("segment", "==", "b"))),
                Compare("region", "==", "north"),
            )
        )
        assert not rule.evaluate({"segment": "a", "region": "south"})
        assert rule.evaluate({"segment": "b", "region": "north"})

    def test_redundant_parentheses_vanish(self) -> None:
        assert parse_rule("((segment == a))").tree == Compare("segment", "==", "a")

    def test_same_kind_groups_are_flattened(self) -> None:
        rule = parse_rule("(points > 1 and points > 2) and (points > 3 and points > 4)")
        assert rule.tree == And(tuple(Compare("points", ">", n) for n in (1, 2, 3, 4)))

    def test_not_of_group(self) -> None:
        rule = parse_rule('tenure_months >= 12 and not (region == "north" or region == south)')
        assert rule.tree == And(
            (
                Compare("tenure_months", ">=", 12),
                Not(Or((Compare("region", "==", "north"), Compare("region", "==", "south")))),
            )
        )
        assert rule.evaluate({"tenure_months": 12, "region": "east"})
        assert not rule.evaluate({"tenure_months": 12, "region": "south"})
        assert not rule.evaluate({"tenure_months": 11, "region": "east"})

    def test_whitespace_is_optional_around_punctuation(self) -> None:
        compact = parse_rule("(points>=5)and(region==north)")
        spaced = parse_rule("( points >= 5 )\n and\t( region == north )")
        assert compact == spaced


class TestIntegerOperators:
    @pytest.mark.parametrize(
        ("op", "expected"),
        [
            ("==", [False, True, False]),
            ("!=", [True, False, True]),
            ("<", [True, False, False]),
            ("<=", [True, True, False]),
            (">", [False, False, True]),
            (">=", [False, True, True]),
        ],
    )
    def test_operator(self, op: str, expected: list[bool]) -> None:
        rule = parse_rule(f"tenure_months {op} 12")
        assert rule.tree == Compare("tenure_months", op, 12)
        assert [rule.evaluate({"tenure_months": n}) for n in (11, 12, 13)] == expected

    def test_negative_numbers(self) -> None:
        rule = parse_rule("points > -5")
        assert rule.tree == Compare("points", ">", -5)
        assert rule.evaluate({"points": -4})
        assert not rule.evaluate({"points": -5})

    def test_decimal_literal_is_exact(self) -> None:
        rule = parse_rule("lifetime_value >= 10.5")
        assert rule.tree == Compare("lifetime_value", ">=", Decimal("10.5"))
        assert isinstance(rule.tree.value, Decimal)
        assert rule.evaluate({"lifetime_value": 11})
        assert not rule.evaluate({"lifetime_value": 10})

    def test_float_customer_value_compares_as_written(self) -> None:
        assert matches("attr.score == 0.3", {"attr.score": 0.1 + 0.2}) is False
        assert matches("attr.score == 0.3", {"attr.score": 0.3})
        assert matches("attr.score < 0.3", {"attr.score": 0.29})

    def test_big_integers(self) -> None:
        big = 10**30
        assert matches(f"lifetime_value > {big}", {"lifetime_value": big + 1})
        assert not matches(f"lifetime_value > {big}", {"lifetime_value": big})


class TestStringOperators:
    def test_equal_bare_identifier(self) -> None:
        rule = parse_rule("preferred_channel == call_centre")
        assert rule.tree == Compare("preferred_channel", "==", "call_centre")
        assert rule.evaluate({"preferred_channel": "call_centre"})
        assert not rule.evaluate({"preferred_channel": "app"})

    def test_not_equal(self) -> None:
        rule = parse_rule("region != north")
        assert rule.evaluate({"region": "south"})
        assert not rule.evaluate({"region": "north"})

    def test_comparison_is_case_sensitive(self) -> None:
        assert not matches("region == north", {"region": "North"})

    @pytest.mark.parametrize(
        ("literal", "value"),
        [
            ("'north'", "north"),
            ('"north"', "north"),
            ('"north east"', "north east"),
            (r"'it\'s'", "it's"),
            (r'"say \"hi\""', 'say "hi"'),
            (r"'back\\slash'", "back\\slash"),
            ("'and'", "and"),
            ('"true"', "true"),
            ("''", ""),
            ('"Zürich"', "Zürich"),
        ],
    )
    def test_quoted_strings(self, literal: str, value: str) -> None:
        rule = parse_rule(f"region == {literal}")
        assert rule.tree == Compare("region", "==", value)
        assert rule.evaluate({"region": value})

    def test_quoted_keyword_is_text_not_boolean(self) -> None:
        rule = parse_rule('attr.flag == "true"')
        assert rule.evaluate({"attr.flag": "true"})
        assert not rule.evaluate({"attr.flag": True})


class TestMembership:
    def test_in(self) -> None:
        rule = parse_rule("value_tier in [bronze, silver] and preferred_channel == call_centre")
        assert rule.tree == And(
            (
                Membership("value_tier", ("bronze", "silver"), negated=False),
                Compare("preferred_channel", "==", "call_centre"),
            )
        )
        assert rule.evaluate({"value_tier": "silver", "preferred_channel": "call_centre"})
        assert not rule.evaluate({"value_tier": "gold", "preferred_channel": "call_centre"})

    def test_not_in(self) -> None:
        rule = parse_rule("value_tier not in [bronze, 'silver']")
        assert rule.tree == Membership("value_tier", ("bronze", "silver"), negated=True)
        assert rule.evaluate({"value_tier": "gold"})
        assert not rule.evaluate({"value_tier": "bronze"})

    def test_not_before_membership_differs_from_not_in(self) -> None:
        assert parse_rule("not value_tier in [gold]").tree == Not(
            Membership("value_tier", ("gold",), negated=False)
        )

    def test_integer_membership(self) -> None:
        rule = parse_rule("tenure_months in [1, 2, 3]")
        assert rule.evaluate({"tenure_months": 2})
        assert not rule.evaluate({"tenure_months": 4})

    def test_single_element_list(self) -> None:
        assert matches("segment in [vip]", {"segment": "vip"})

    def test_custom_attribute_mixed_list(self) -> None:
        rule = parse_rule("attr.code in [1, 'one', true]")
        assert rule.evaluate({"attr.code": 1})
        assert rule.evaluate({"attr.code": "one"})
        assert rule.evaluate({"attr.code": True})
        assert not rule.evaluate({"attr.code": "1"})


class TestBooleans:
    def test_true_and_false(self) -> None:
        assert matches("is_new == true", {"is_new": True})
        assert not matches("is_new == true", {"is_new": False})
        assert matches("is_new == false", {"is_new": False})
        assert matches("is_new != true", {"is_new": False})

    def test_boolean_is_not_an_integer(self) -> None:
        assert not matches("attr.flag == true", {"attr.flag": 1})
        assert not matches("attr.n == 1", {"attr.n": True})
        assert not matches("attr.n >= 1", {"attr.n": True})

    def test_boolean_membership(self) -> None:
        assert matches("is_new in [true]", {"is_new": True})
        assert not matches("is_new not in [true]", {"is_new": True})


class TestCustomAttributes:
    def test_read_from_attributes_mapping(self) -> None:
        rule = parse_rule("attr.newsletter == true and attr.score > 7.5")
        customer = {"attributes": {"newsletter": True, "score": 8}}
        assert rule.evaluate(customer)
        assert not rule.evaluate({"attributes": {"newsletter": True, "score": 7}})

    def test_read_from_flat_key(self) -> None:
        assert matches("attr.club == golf", {"attr.club": "golf"})

    def test_attributes_mapping_takes_priority(self) -> None:
        customer = {"attributes": {"club": "golf"}, "attr.club": "tennis"}
        assert matches("attr.club == golf", customer)

    def test_dynamic_types(self) -> None:
        for literal, value in [("5", 5), ("2.50", Decimal("2.5")), ("x", "x"), ("false", False)]:
            assert matches(f"attr.v == {literal}", {"attributes": {"v": value}}), literal

    def test_custom_attribute_keeps_its_prefix_in_attributes_used(self) -> None:
        assert parse_rule("attr.club == golf").attributes_used() == frozenset({"attr.club"})

    def test_custom_name_may_be_a_keyword(self) -> None:
        assert matches("attr.in == 1", {"attributes": {"in": 1}})


class TestMissingAttributes:
    @pytest.mark.parametrize(
        "text",
        [
            "region == north",
            "region != north",
            "points < 5",
            "points >= 0",
            "region in [north]",
            "region not in [north]",
            "is_new == false",
            "is_new != true",
            "attr.x != 1",
            "attr.x not in [1]",
        ],
    )
    @pytest.mark.parametrize(
        "customer",
        [{}, {"region": None, "points": None, "is_new": None, "attr.x": None}],
        ids=["absent", "none"],
    )
    def test_missing_never_matches(self, text: str, customer: dict[str, object]) -> None:
        assert parse_rule(text).evaluate(customer) is False

    def test_not_still_negates_a_missing_comparison(self) -> None:
        assert matches("not (region == north)", {})

    def test_wrong_type_value_only_fails_equality(self) -> None:
        assert not matches("points >= 0", {"points": "12"})
        assert not matches("points == 12", {"points": "12"})
        assert matches("points != 12", {"points": "12"})

    @pytest.mark.parametrize("value", [float("nan"), Decimal("NaN"), [1], {"a": 1}, object()])
    def test_unusable_values_count_as_missing(self, value: object) -> None:
        assert not matches("attr.x != 1", {"attr.x": value})
        assert not matches("attr.x > 1", {"attr.x": value})

    def test_custom_attribute_absent_from_both_places(self) -> None:
        assert not matches("attr.x == 1", {"attributes": {"y": 1}})
        assert not matches("attr.x == 1", {"attributes": "not a mapping"})


class TestChannelKeys:
    def test_known_channel_accepted(self) -> None:
        rule = parse_rule("preferred_channel == app", channel_keys=["app", "web"])
        assert rule.evaluate({"preferred_channel": "app"})

    def test_unknown_channel_rejected(self) -> None:
        error = rejection("preferred_channel in [app, fax]", channel_keys={"app", "web"})
        assert error.type == "value_not_allowed"
        assert "'fax'" in error.msg
        assert "position 27" in error.msg
        assert "app, web" in error.msg

    def test_any_channel_without_keys(self) -> None:
        assert parse_rule("preferred_channel == fax").evaluate({"preferred_channel": "fax"})


class TestCustomAttributeCatalogue:
    def test_own_attributes(self) -> None:
        catalogue = {
            "plan": AttributeSpec("plan", AttributeType.STRING, frozenset({"basic", "pro"})),
            "seats": AttributeSpec("seats", AttributeType.INTEGER),
        }
        rule = parse_rule("plan == pro and seats > 3", attributes=catalogue)
        assert rule.evaluate({"plan": "pro", "seats": 4})
        assert rejection("segment == a", attributes=catalogue).type == "unknown_attribute"
        assert rejection("plan == free", attributes=catalogue).type == "value_not_allowed"

    def test_builtin_catalogue(self) -> None:
        assert set(CUSTOMER_ATTRIBUTES) == {
            "segment",
            "value_tier",
            "loyalty_tier",
            "preferred_channel",
            "region",
            "age_band",
            "tenure_months",
            "points",
            "lifetime_value",
            "is_new",
        }
        assert CUSTOMER_ATTRIBUTES["value_tier"].allowed == {"bronze", "silver", "gold", "platinum"}
        assert CUSTOMER_ATTRIBUTES["is_new"].type is AttributeType.BOOLEAN
        assert CUSTOMER_ATTRIBUTES["lifetime_value"].type is AttributeType.INTEGER
        assert all(name == spec.name for name, spec in CUSTOMER_ATTRIBUTES.items())


class TestAttributesUsed:
    def test_collects_every_attribute_once(self) -> None:
        rule = parse_rule(
            "points > 1 and (region == a or not region in [b]) or attr.x == 1 or is_new == true"
        )
        assert rule.attributes_used() == frozenset({"points", "region", "attr.x", "is_new"})

    def test_always_uses_nothing(self) -> None:
        assert ALWAYS.attributes_used() == frozenset()


class TestOptionalRule:
    @pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
    def test_blank_is_always(self, text: str | None) -> None:
        rule = parse_optional_rule(text)
        assert rule is ALWAYS
        assert rule.evaluate({})
        assert str(rule) == ""

    def test_text_is_parsed(self) -> None:
        rule = parse_optional_rule("points > 1", channel_keys=["app"])
        assert rule.tree == Compare("points", ">", 1)

    def test_text_is_validated(self) -> None:
        with pytest.raises(InvalidRule):
            parse_optional_rule("colour == red")

    def test_parse_rule_rejects_blank(self) -> None:
        assert rejection("   ").type == "empty_rule"


class TestCanonicalText:
    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            (
                "value_tier in [bronze,silver]and preferred_channel==call_centre",
                "value_tier in [bronze, silver] and preferred_channel == call_centre",
            ),
            (
                "tenure_months >= 12 and not (region == 'north')",
                "tenure_months >= 12 and not (region == north)",
            ),
            (
                "(points>1 or points<0) and is_new==true",
                "(points > 1 or points < 0) and is_new == true",
            ),
            (
                "points > 1 or (points < 0 and is_new == true)",
                "points > 1 or points < 0 and is_new == true",
            ),
            ("not not region == x", "not not (region == x)"),
            ("not (points == 1 or points == 2)", "not (points == 1 or points == 2)"),
            ("region == 'a b'", 'region == "a b"'),
            ("region == 'or'", 'region == "or"'),
            ("region == '1x'", 'region == "1x"'),
            (r"region == 'q\"'", r'region == "q\""'),
            ("points == 007", "points == 7"),
            ("points == -0.50", "points == -0.50"),
            ("points == 0.0000001", "points == 0.0000001"),
            ("region not in [ a ]", "region not in [a]"),
        ],
    )
    def test_canonical_form(self, text: str, canonical: str) -> None:
        rule = parse_rule(text)
        assert str(rule) == canonical
        assert rule.source == canonical
        assert parse_rule(canonical) == rule


class TestRoundTrip:
    EXAMPLES = [
        "value_tier in [bronze, silver] and preferred_channel == call_centre",
        "tenure_months >= 12 and not (region == 'north')",
        "attr.score >= 7.50 or attr.tag not in ['a b', 1, true] or not not is_new == false",
        "(points > 1 or points < -1) and (segment == x or segment == 'y\\'z')",
    ]

    @pytest.mark.parametrize("text", EXAMPLES)
    def test_to_data_is_json_and_round_trips(self, text: str) -> None:
        rule = parse_rule(text)
        data = rule.to_data()
        assert data["version"] == 1
        encoded = json.dumps(data)
        assert Rule.from_data(json.loads(encoded)) == rule
        assert Rule.from_data(data) == rule

    @pytest.mark.parametrize("text", EXAMPLES)
    def test_str_round_trips(self, text: str) -> None:
        rule = parse_rule(text)
        again = parse_rule(str(rule))
        assert again == rule
        assert str(again) == str(rule)

    def test_data_shape(self) -> None:
        data = parse_rule("value_tier in [gold] and not points > 1.5").to_data()
        assert data == {
            "version": 1,
            "tree": {
                "type": "and",
                "items": [
                    {
                        "type": "membership",
                        "attribute": "value_tier",
                        "values": ["gold"],
                        "negated": False,
                    },
                    {
                        "type": "not",
                        "item": {
                            "type": "compare",
                            "attribute": "points",
                            "op": ">",
                            "value": {"decimal": "1.5"},
                        },
                    },
                ],
            },
        }
        assert isinstance(data["tree"]["items"], list)
        assert isinstance(data["tree"]["items"][0]["values"], list)

    def test_decimal_keeps_its_digits(self) -> None:
        rule = parse_rule("attr.x == 1.50")
        again = Rule.from_data(json.loads(json.dumps(rule.to_data())))
        assert str(again) == "attr.x == 1.50"

    def test_always_round_trips(self) -> None:
        assert Rule.from_data(ALWAYS.to_data()) is ALWAYS
        assert json.loads(json.dumps(ALWAYS.to_data())) == ALWAYS.to_data()

    def test_from_tree(self) -> None:
        tree = And((Compare("points", ">", 1), Not(Membership("region", ("a", "b"), True))))
        rule = Rule.from_tree(tree)
        assert rule.tree == tree
        assert str(rule) == "points > 1 and not (region not in [a, b])"
        assert Rule.from_tree(And(())) is ALWAYS


def _compare(attribute: str, value: object, op: str = "==") -> dict[str, object]:
    return {"type": "compare", "attribute": attribute, "op": op, "value": value}


class TestFromDataRejections:
    GOOD = _compare("points", 1)

    @pytest.mark.parametrize(
        ("data", "needle"),
        [
            ({"tree": GOOD}, "version"),
            ({"version": 2, "tree": GOOD}, "version 2"),
            ({"version": True, "tree": GOOD}, "version"),
            ({"version": 1}, "exactly the keys"),
            ({"version": 1, "tree": GOOD, "extra": 1}, "exactly the keys"),
            ({"version": 1, "tree": "points > 1"}, "must be an object"),
            ({"version": 1, "tree": {"type": "xor", "items": []}}, "tree.type"),
            ({"version": 1, "tree": {**GOOD, "colour": 1}}, "exactly the keys"),
            ({"version": 1, "tree": _compare("points", 1.5)}, "tree.value"),
            ({"version": 1, "tree": _compare("points", None)}, "tree.value"),
            ({"version": 1, "tree": _compare("points", {"decimal": "1e5"})}, "tree.value"),
            ({"version": 1, "tree": _compare("points", 1, op="=")}, "unknown operator '='"),
            ({"version": 1, "tree": _compare("colour", "red")}, "unknown attribute 'colour'"),
            ({"version": 1, "tree": _compare("points", "many")}, "'many'"),
            ({"version": 1, "tree": _compare("value_tier", "silvr")}, "'silvr'"),
            (
                {
                    "version": 1,
                    "tree": {
                        "type": "membership",
                        "attribute": "region",
                        "values": [],
                        "negated": False,
                    },
                },
                "empty list",
            ),
            (
                {
                    "version": 1,
                    "tree": {
                        "type": "membership",
                        "attribute": "region",
                        "values": ["a"],
                        "negated": "no",
                    },
                },
                "negated",
            ),
            ({"version": 1, "tree": {"type": "and", "items": [GOOD]}}, "canonical"),
            (
                {
                    "version": 1,
                    "tree": {
                        "type": "and",
                        "items": [GOOD, {"type": "and", "items": [GOOD, GOOD]}],
                    },
                },
                "canonical",
            ),
            ({"version": 1, "tree": {"type": "or", "items": "ab"}}, "tree.items"),
        ],
    )
    def test_malformed_data(self, data: dict[str, Any], needle: str) -> None:
        with pytest.raises(InvalidRule) as caught:
            Rule.from_data(data)
        (error,) = caught.value.errors
        assert error.type == "invalid_data"
        assert needle in error.msg

    def test_too_deep_data(self) -> None:
        tree: dict[str, Any] = self.GOOD
        for _ in range(MAX_RULE_DEPTH + 1):
            tree = {"type": "not", "item": tree}
        with pytest.raises(InvalidRule, match="too deeply"):
            Rule.from_data({"version": 1, "tree": tree})

    def test_absurdly_deep_data_does_not_recurse_forever(self) -> None:
        tree: dict[str, Any] = self.GOOD
        for _ in range(10_000):
            tree = {"type": "not", "item": tree}
        with pytest.raises(InvalidRule, match="too deeply"):
            Rule.from_data({"version": 1, "tree": tree})

    def test_channel_keys_apply(self) -> None:
        data = parse_rule("preferred_channel == fax").to_data()
        with pytest.raises(InvalidRule, match="'fax'"):
            Rule.from_data(data, channel_keys=["app"])

    def test_not_a_mapping(self) -> None:
        with pytest.raises(InvalidRule):
            Rule.from_data([1, 2])  # type: ignore[arg-type]

    def test_from_tree_rejects_non_nodes(self) -> None:
        with pytest.raises(InvalidRule, match="not a rule node"):
            Rule.from_tree(And((Compare("points", ">", 1), "points > 2")))  # type: ignore[arg-type]


class TestUnknownAttribute:
    def test_names_term_position_and_known_attributes(self) -> None:
        error = rejection("colour == red")
        assert error.type == "unknown_attribute"
        assert error.msg.startswith("unknown attribute 'colour' at position 0; known attributes:")
        for name in CUSTOMER_ATTRIBUTES:
            assert name in error.msg

    def test_suggests_closest(self) -> None:
        error = rejection("points > 1 and valu_tier == gold")
        assert "'valu_tier' at position 15" in error.msg
        assert "did you mean 'value_tier'?" in error.msg

    @pytest.mark.parametrize(
        ("text", "term"),
        [("attr.1x == 1", "'attr.1x'"), ("attr. == 1", "'attr.'"), ("attr.a.b == 1", "'attr.a.b'")],
    )
    def test_bad_custom_name(self, text: str, term: str) -> None:
        error = rejection(text)
        assert error.type == "unknown_attribute"
        assert term in error.msg
        assert "position 0" in error.msg

    def test_keywords_are_case_sensitive(self) -> None:
        error = rejection("region == a AND region == b")
        assert "'AND' at position 12" in error.msg


class TestUnknownOperator:
    @pytest.mark.parametrize(
        ("op", "hint"),
        [("=", "=="), ("=>", ">="), ("=<", "<="), ("<>", "!="), ("~=", "!="), ("===", "==")],
    )
    def test_bad_operator(self, op: str, hint: str) -> None:
        error = rejection(f"points {op} 5")
        assert error.type == "unknown_operator"
        assert f"unknown operator '{op}' at position 7" in error.msg
        assert f"did you mean '{hint}'?" in error.msg

    def test_missing_operator(self) -> None:
        error = rejection("value_tier")
        assert error.type == "syntax_error"
        assert "after attribute 'value_tier' at position 10" in error.msg
        assert "end of the rule" in error.msg

    def test_word_instead_of_operator(self) -> None:
        error = rejection("value_tier is gold")
        assert "'is'" in error.msg
        assert "position 11" in error.msg

    def test_not_without_in(self) -> None:
        error = rejection("region not north")
        assert "expected 'in' after 'not' at position 11" in error.msg


class TestTypeMismatch:
    @pytest.mark.parametrize(
        ("text", "terms"),
        [
            ("region < north", ["'region'", "'<'", "position 7"]),
            ("value_tier >= gold", ["'value_tier'", "'>='", "position 11"]),
            ("is_new > false", ["'is_new'", "'>'", "position 7"]),
            ("points == abc", ["'points'", "'abc'", "position 10"]),
            ("points > 'abc'", ["'>'", "'abc'", "position 9"]),
            ("points in [1, two]", ["'points'", "'two'", "position 14"]),
            ("points == true", ["'points'", "true", "position 10"]),
            ("is_new == 1", ["'is_new'", "1", "position 10", "true or false"]),
            ("is_new == yes", ["'is_new'", "'yes'", "position 10"]),
            ("region == 5", ["'region'", "5", "position 10"]),
            ("region == true", ["'region'", "true", "position 10"]),
            ("attr.x < 'a'", ["'<'", "'a'", "position 9"]),
            ("attr.x <= true", ["'<='", "true", "position 10"]),
        ],
    )
    def test_type_mismatch(self, text: str, terms: list[str]) -> None:
        error = rejection(text)
        assert error.type == "type_mismatch"
        for term in terms:
            assert term in error.msg


class TestValueNotAllowed:
    def test_names_value_and_lists_allowed(self) -> None:
        error = rejection("value_tier == silvr")
        assert error.type == "value_not_allowed"
        assert "'silvr' at position 14" in error.msg
        assert "did you mean 'silver'?" in error.msg
        assert "allowed values: bronze, gold, platinum, silver" in error.msg

    def test_checked_inside_lists(self) -> None:
        error = rejection("value_tier in [gold, diamond]")
        assert "'diamond' at position 21" in error.msg


class TestSyntaxErrors:
    @pytest.mark.parametrize(
        ("text", "terms"),
        [
            # empty list
            ("segment in []", ["empty list", "position 11"]),
            ("segment not in [ ]", ["empty list", "position 15"]),
            # malformed lists
            ("segment in [a,]", ["expected a value", "']'", "position 14"]),
            ("segment in [a b]", ["expected ',' or ']'", "'b'", "position 14"]),
            ("segment in [a, b", ["expected ',' or ']'", "end of the rule", "position 16"]),
            ("segment in a", ["expected '['", "'a'", "position 11"]),
            # trailing garbage
            ("segment == a b", ["unexpected 'b' at position 13"]),
            ("segment == a 5", ["unexpected '5' at position 13"]),
            ("segment == a and", ["expected an attribute name at position 16", "end of the rule"]),
            ("segment == a or or segment == b", ["keyword 'or'", "position 16"]),
            # unbalanced parentheses
            ("(segment == a", ["unbalanced parentheses", "'(' at position 0", "not closed"]),
            ("((segment == a)", ["unbalanced parentheses", "'(' at position 0"]),
            ("segment == a)", ["unbalanced parentheses", "')' at position 12"]),
            ("()", ["expected an attribute name at position 1", "')'"]),
            # values
            ("segment ==", ["expected a value after '=='", "position 10"]),
            ("segment == and", ["expected a value", "keyword 'and'", "position 11"]),
            ("segment == a.b", ["invalid value", "'a.b'", "position 11"]),
            ("segment == 'abc", ["unterminated string", "position 11"]),
            ("segment == 'a\\nb'", ["invalid escape", "'\\n'", "position 13"]),
            ("points == 1.5e3", ["invalid number '1.5e3' at position 10"]),
            ("points == 12abc", ["invalid number '12abc' at position 10"]),
            ("points == .5", ["unexpected character '.' at position 10"]),
            ("points == --5", ["unexpected character '-' at position 10"]),
            # not a rule at all
            ("__import__('os')", ["unknown attribute '__import__' at position 0"]),
            ("__import__('os').system('ls')", ["'__import__' at position 0"]),
            ("1 + 1", ["expected an attribute name at position 0", "'1'"]),
            ("lambda: 1", ["unknown attribute 'lambda' at position 0"]),
            ("lambda x: x", ["unknown attribute 'lambda' at position 0"]),
            ("true", ["expected an attribute name at position 0", "keyword 'true'"]),
            ("'segment' == a", ["expected an attribute name at position 0"]),
            ("segment == a; DROP TABLE customer", ["unexpected character ';' at position 12"]),
            ("segment == 'x' OR 1=1 --", ["unexpected 'OR' at position 15"]),
            ("segment == '' or '1'='1'", ["expected an attribute name at position 17"]),
            ("segment == a -- comment", ["unexpected character '-' at position 13"]),
            ("segment == a # comment", ["unexpected character '#' at position 13"]),
            ("region == {a}", ["unexpected character '{' at position 10"]),
            ("région == a", ["invalid name 'région' at position 0"]),
            ("segment == café", ["invalid name 'café' at position 11"]),
            ("segment\x00== a", ["unexpected character '\\x00' at position 7"]),
        ],
    )
    def test_rejected(self, text: str, terms: list[str]) -> None:
        error = rejection(text)
        for term in terms:
            assert term in error.msg, error.msg


class TestLimits:
    def test_length_limit(self) -> None:
        text = "points > 1 or " * 200 + "points > 1"
        assert len(text) > MAX_RULE_LENGTH
        error = rejection(text)
        assert error.type == "too_long"
        assert str(MAX_RULE_LENGTH) in error.msg
        assert str(len(text)) in error.msg

    def test_limit_applies_to_normalised_text(self) -> None:
        text = " or ".join(["points>1"] * 150)
        assert len(text) <= MAX_RULE_LENGTH
        assert len(" or ".join(["points > 1"] * 150)) > MAX_RULE_LENGTH
        error = rejection(text)
        assert error.type == "too_long"
        assert "normalised" in error.msg

    def test_longest_allowed_text(self) -> None:
        text = "points > 1"
        text = text + " " * (MAX_RULE_LENGTH - len(text))
        assert parse_rule(text).tree == Compare("points", ">", 1)

    def test_deepest_allowed_parentheses(self) -> None:
        depth = MAX_RULE_DEPTH
        rule = parse_rule("(" * depth + "points > 1" + ")" * depth)
        assert rule.tree == Compare("points", ">", 1)

    def test_too_many_parentheses(self) -> None:
        depth = MAX_RULE_DEPTH + 1
        error = rejection("(" * depth + "points > 1" + ")" * depth)
        assert error.type == "too_deep"
        assert f"position {MAX_RULE_DEPTH}" in error.msg
        assert str(MAX_RULE_DEPTH) in error.msg

    def test_too_many_nots(self) -> None:
        assert parse_rule("not " * MAX_RULE_DEPTH + "points > 1")
        error = rejection("not " * (MAX_RULE_DEPTH + 1) + "points > 1")
        assert error.type == "too_deep"

    def test_deep_text_under_length_limit_fails_cleanly(self) -> None:
        error = rejection("(" * (MAX_RULE_LENGTH - 1))
        assert error.type == "too_deep"


class TestErrorShape:
    def test_invalid_rule_carries_code_and_field_error(self) -> None:
        with pytest.raises(InvalidRule) as caught:
            parse_rule("colour == red")
        body = caught.value.as_dict()
        assert body["code"] == "invalid_rule"
        assert body["errors"][0]["loc"] == ["rule"]
        assert body["errors"][0]["type"] == "unknown_attribute"
        assert "'colour'" in str(caught.value)

    def test_non_text_rejected(self) -> None:
        with pytest.raises(InvalidRule):
            parse_rule(42)  # type: ignore[arg-type]


class TestNoDynamicEvaluation:
    def test_module_never_calls_eval_exec_or_ast(self) -> None:
        tree = ast.parse(inspect.getsource(rules))
        called = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):
                    called.add(func.id)
                elif isinstance(func, ast.Attribute) and func.attr == "literal_eval":
                    called.add(func.attr)
        imports = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {"eval", "exec", "compile", "__import__", "literal_eval"} & called
        assert not {"ast", "builtins", "importlib"} & imports


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

TOKENS = [
    "segment", "value_tier", "points", "is_new", "attr.x", "attr.", "colour", "==", "!=", "<",
    "<=", ">", ">=", "=", "=>", "<>", "and", "or", "not", "in", "true", "false", "(", ")", "[",
    "]", ",", "1", "-2", "3.5", "'a'", '"b c"', "gold", "silvr", "'", "\\", ";", "--",
]  # fmt: skip


def assert_parses_or_rejects(text: str) -> None:
    try:
        rule = parse_rule(text)
    except InvalidRule as exc:
        (error,) = exc.errors
        assert error.loc == ("rule",)
        assert error.msg
        return
    assert isinstance(rule, Rule)
    assert parse_rule(str(rule)) == rule
    rule.evaluate({})


class TestPropertyAnyText:
    @PROPERTY_SETTINGS
    @given(st.text(max_size=300))
    def test_random_text(self, text: str) -> None:
        assert_parses_or_rejects(text)

    @PROPERTY_SETTINGS
    @given(st.lists(st.sampled_from(TOKENS), max_size=25), st.sampled_from([" ", ""]))
    def test_token_soup(self, tokens: list[str], separator: str) -> None:
        assert_parses_or_rejects(separator.join(tokens))


IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
DECIMALS = st.from_regex(r"-?[0-9]{1,6}\.[0-9]{1,4}", fullmatch=True).map(Decimal)
NUMBERS = st.one_of(st.integers(), DECIMALS)
TEXTS = st.one_of(st.text(max_size=12), IDENTIFIERS)
ANY_VALUE = st.one_of(TEXTS, NUMBERS, st.booleans())
STRING_ATTRIBUTES = ["segment", "loyalty_tier", "preferred_channel", "region", "age_band"]
INTEGER_ATTRIBUTES = ["tenure_months", "points", "lifetime_value"]
TIERS = sorted(CUSTOMER_ATTRIBUTES["value_tier"].allowed or ())
CUSTOM = IDENTIFIERS.map(lambda name: f"attr.{name}")


def leaf(attribute: st.SearchStrategy[str], ops: list[str], values: st.SearchStrategy[Any]) -> Any:
    compare = st.builds(Compare, attribute, st.sampled_from(ops), values)
    membership = st.builds(
        Membership,
        attribute,
        st.lists(values, min_size=1, max_size=3).map(tuple),
        st.booleans(),
    )
    return st.one_of(compare, membership)


EQUALITY = ["==", "!="]
ALL_OPS = ["==", "!=", "<", "<=", ">", ">="]
LEAVES = st.one_of(
    leaf(st.sampled_from(STRING_ATTRIBUTES), EQUALITY, TEXTS),
    leaf(st.just("value_tier"), EQUALITY, st.sampled_from(TIERS)),
    leaf(st.sampled_from(INTEGER_ATTRIBUTES), ALL_OPS, NUMBERS),
    leaf(st.just("is_new"), EQUALITY, st.booleans()),
    leaf(CUSTOM, EQUALITY, ANY_VALUE),
    st.builds(Compare, CUSTOM, st.sampled_from(ALL_OPS), NUMBERS),
)


def compound(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    not_and = children.filter(lambda node: not isinstance(node, And))
    not_or = children.filter(lambda node: not isinstance(node, Or))
    return st.one_of(
        children.map(Not),
        st.lists(not_and, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(not_or, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    )


TREES = st.recursive(LEAVES, compound, max_leaves=8)

CUSTOMER_VALUES = st.one_of(st.none(), ANY_VALUE, st.floats(allow_nan=True))


def reference(node: Node, customer: Mapping[str, object]) -> bool:
    """A direct restatement of the documented semantics, to check ``evaluate`` against."""
    if isinstance(node, And):
        return all(reference(item, customer) for item in node.items)
    if isinstance(node, Or):
        return any(reference(item, customer) for item in node.items)
    if isinstance(node, Not):
        return not reference(node.item, customer)
    actual = customer.get(node.attribute)
    if actual is None or actual != actual:  # missing or NaN
        return False
    if isinstance(actual, float):
        actual = Decimal(repr(actual))

    def same(expected: object) -> bool:
        kinds_match = isinstance(actual, bool) == isinstance(expected, bool) and isinstance(
            actual, str
        ) == isinstance(expected, str)
        return kinds_match and actual == expected

    if isinstance(node, Membership):
        return any(same(v) for v in node.values) != node.negated
    if node.op == "==":
        return same(node.value)
    if node.op == "!=":
        return not same(node.value)
    if isinstance(actual, bool | str) or isinstance(node.value, bool | str):
        return False
    left: Any = actual
    return bool(
        {
            "<": left < node.value,
            "<=": left <= node.value,
            ">": left > node.value,
            ">=": left >= node.value,
        }[node.op]
    )


class TestPropertyTrees:
    @PROPERTY_SETTINGS
    @given(TREES)
    def test_tree_round_trips_through_text(self, tree: Node) -> None:
        rule = Rule.from_tree(tree)
        assert rule.tree == tree
        again = parse_rule(str(rule))
        assert again.tree == tree
        assert str(again) == str(rule)

    @PROPERTY_SETTINGS
    @given(TREES)
    def test_tree_round_trips_through_json(self, tree: Node) -> None:
        rule = Rule.from_tree(tree)
        data = json.loads(json.dumps(rule.to_data()))
        again = Rule.from_data(data)
        assert again == rule
        assert str(again) == str(rule)

    @PROPERTY_SETTINGS
    @given(TREES, st.data())
    def test_evaluate_matches_reference(self, tree: Node, data: st.DataObject) -> None:
        rule = Rule.from_tree(tree)
        names = sorted(rule.attributes_used())
        customer = {
            name: data.draw(CUSTOMER_VALUES, label=name)
            for name in names
            if data.draw(st.booleans(), label=f"has {name}")
        }
        assert rule.evaluate(customer) == reference(tree, customer)
