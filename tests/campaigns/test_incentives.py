"""Incentive types: configuration validation, offers, benefit arithmetic and the registry."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from campaigns.errors import FieldError, InvalidIncentiveConfig, ValidationFailed
from campaigns.incentives import (
    INCENTIVE_TYPES,
    Benefit,
    IncentiveType,
    Offer,
    OrderContext,
    get_incentive_type,
    tier_for_points,
    total_inventory,
    validate_incentive,
)
from campaigns.incentives.base import SharedCode
from campaigns.incentives.codes import DEFAULT_CHARSET, LOOKALIKES
from campaigns.incentives.coupon import CouponConfig
from campaigns.incentives.lottery import LotteryConfig
from campaigns.incentives.loyalty import LoyaltyConfig

# --------------------------------------------------------------------------- valid configs

VALID: dict[str, dict[str, Any]] = {
    "percent_discount": {"percent_bp": 1250, "cap_minor": 2000, "min_order_minor": 5000},
    "fixed_discount": {"amount_minor": 500, "min_order_minor": 2500},
    "coupon": {
        "mode": "shared",
        "code": "SAVE10",
        "benefit": {"kind": "percent", "percent_bp": 1000, "cap_minor": 1500},
    },
    "free_trial": {"product": "Premium app", "days": 30, "cost_minor": 120, "value_minor": 999},
    "lottery": {
        "prizes": [
            {
                "key": "tablet",
                "name": "Tablet",
                "value_minor": 30000,
                "inventory": 2,
                "odds": {"numerator": 1, "denominator": 10000},
            },
            {
                "key": "voucher",
                "name": "10.00 voucher",
                "value_minor": 1000,
                "inventory": 100,
                "odds": {"numerator": 1, "denominator": 100},
            },
        ],
        "entry_rule": {"event": "conversion", "channel_key": "app", "entries_per_event": 2},
        "draw_at": "2025-12-01T18:00:00+01:00",
    },
    "loyalty": {
        "tiers": [
            {"key": "bronze", "name": "Bronze", "threshold_points": 0, "benefits": "Points"},
            {"key": "silver", "name": "Silver", "threshold_points": 1000, "benefits": "Free ship"},
            {"key": "gold", "name": "Gold", "threshold_points": 5000, "benefits": "Priority"},
        ],
        "points_per_currency_unit": 10,
        "target_channel_multiplier_bp": 20000,
        "point_value_minor_per_1000": 500,
    },
    "gift": {"item": "Tote bag", "sku": "TOTE-01", "unit_cost_minor": 350, "inventory": 500},
    "rebate": {
        "percent_bp": 500,
        "cap_minor": 1000,
        "condition": {"min_order_minor": 2000, "channel_key": "web", "payout_delay_days": 30},
    },
}


def valid(type_key: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of the valid config for ``type_key`` with top-level ``changes``."""
    raw = copy.deepcopy(VALID[type_key])
    raw.update(changes)
    return raw


def config_for(type_key: str, raw: dict[str, Any] | None = None) -> Any:
    return get_incentive_type(type_key).validate(raw if raw is not None else valid(type_key))


def errors_for(type_key: str, raw: Any) -> list[FieldError]:
    with pytest.raises(InvalidIncentiveConfig) as caught:
        get_incentive_type(type_key).validate(raw)
    assert caught.value.code == "invalid_incentive_config"
    assert caught.value.errors, "an invalid config must name at least one field"
    return list(caught.value.errors)


def error_at(type_key: str, raw: Any, *loc: str | int) -> FieldError:
    """The error located at ``("config", *loc)``; fails listing what was reported instead."""
    errors = errors_for(type_key, raw)
    wanted = ("config", *loc)
    matching = [e for e in errors if e.loc == wanted]
    assert matching, f"no error at {wanted}; got {[(e.loc, e.msg) for e in errors]}"
    error = matching[0]
    assert "Input should be" not in error.msg  # pydantic's raw wording never leaks
    return error


def order_error(type_key: str, config: Any, ctx: OrderContext) -> FieldError:
    with pytest.raises(ValidationFailed) as caught:
        get_incentive_type(type_key).compute_benefit(config, ctx)
    assert not isinstance(caught.value, InvalidIncentiveConfig)
    (error,) = caught.value.errors
    return error


def order(amount: int | None, **kwargs: Any) -> OrderContext:
    return OrderContext(order_amount_minor=amount, **kwargs)


# --------------------------------------------------------------------------- registry & shape


class TestRegistry:
    def test_all_types_registered_under_their_key(self) -> None:
        assert set(INCENTIVE_TYPES) == set(VALID)
        for key, incentive_type in INCENTIVE_TYPES.items():
            assert isinstance(incentive_type, IncentiveType)
            assert incentive_type.key == key
            assert incentive_type.label

    def test_lookup_returns_the_registered_instance(self) -> None:
        assert get_incentive_type("coupon") is INCENTIVE_TYPES["coupon"]

    def test_unknown_type_names_key_and_lists_known(self) -> None:
        with pytest.raises(InvalidIncentiveConfig) as caught:
            get_incentive_type("cashback_deluxe")
        assert "cashback_deluxe" in caught.value.message
        (error,) = caught.value.errors
        assert error.loc == ("type",)
        assert "cashback_deluxe" in error.msg
        for key in VALID:
            assert key in error.msg

    def test_validate_incentive_with_unknown_type(self) -> None:
        with pytest.raises(InvalidIncentiveConfig, match="nope"):
            validate_incentive("nope", {})

    @pytest.mark.parametrize("type_key", sorted(VALID))
    def test_every_type_accepts_its_valid_config(self, type_key: str) -> None:
        config = config_for(type_key)
        assert isinstance(config, get_incentive_type(type_key).config_model)

    @pytest.mark.parametrize("type_key", sorted(VALID))
    def test_normalized_config_is_json_and_round_trips(self, type_key: str) -> None:
        normalized = validate_incentive(type_key, valid(type_key))
        assert isinstance(normalized, dict)
        assert validate_incentive(type_key, normalized) == normalized

    @pytest.mark.parametrize("type_key", sorted(VALID))
    def test_every_type_rejects_unknown_setting(self, type_key: str) -> None:
        error = error_at(type_key, valid(type_key, colour="red"), "colour")
        assert error.type == "extra_forbidden"
        assert "'colour' is not a setting" in error.msg

    @pytest.mark.parametrize("type_key", sorted(VALID))
    def test_every_type_rejects_a_non_object(self, type_key: str) -> None:
        error = error_at(type_key, ["not", "a", "dict"])
        assert "object" in error.msg

    @pytest.mark.parametrize("type_key", sorted(VALID))
    def test_describe_and_benefit_return_the_contract_types(self, type_key: str) -> None:
        incentive_type = get_incentive_type(type_key)
        config = config_for(type_key)
        offer = incentive_type.describe(config, currency="EUR")
        assert isinstance(offer, Offer)
        assert offer.type == type_key
        assert offer.title and offer.description
        assert offer.needs_code == incentive_type.needs_code(config)
        ctx = OrderContext(order_amount_minor=10_000, channel_key="web", target_channel_key="web")
        if type_key == "lottery":
            ctx = OrderContext(order_amount_minor=10_000, channel_key="app")
        benefit = incentive_type.compute_benefit(config, ctx)
        assert isinstance(benefit, Benefit)
        assert isinstance(benefit.benefit_minor, int) and isinstance(benefit.cost_minor, int)
        assert isinstance(incentive_type.unit_cost_estimate(config), int)

    def test_only_coupons_need_a_code(self) -> None:
        needing = {k for k, t in INCENTIVE_TYPES.items() if t.needs_code(config_for(k))}
        assert needing == {"coupon"}

    def test_validate_passes_a_validated_config_through(self) -> None:
        config = config_for("coupon")
        assert get_incentive_type("coupon").validate(config) is config


class TestErrorShape:
    def test_one_field_error_per_problem(self) -> None:
        raw = {"percent_bp": 0, "cap_minor": 1.5, "min_order_minor": -1, "extra": True}
        errors = errors_for("percent_discount", raw)
        assert {e.loc for e in errors} == {
            ("config", "percent_bp"),
            ("config", "cap_minor"),
            ("config", "min_order_minor"),
            ("config", "extra"),
        }

    def test_misspelled_setting_gets_a_suggestion(self) -> None:
        error = error_at("percent_discount", {"percnt_bp": 100}, "percnt_bp")
        assert "did you mean 'percent_bp'" in error.msg

    def test_nested_unknown_setting_lists_allowed(self) -> None:
        raw = valid("coupon", benefit={"kind": "fixed", "amount_minor": 100, "percent": 5})
        error = error_at("coupon", raw, "benefit", "percent")
        assert "amount_minor" in error.msg and "kind" in error.msg

    def test_as_dict_is_the_api_shape(self) -> None:
        with pytest.raises(InvalidIncentiveConfig) as caught:
            get_incentive_type("fixed_discount").validate({})
        body = caught.value.as_dict()
        assert body["code"] == "invalid_incentive_config"
        assert body["errors"] == [
            {
                "loc": ["config", "amount_minor"],
                "msg": "amount_minor is required",
                "type": "missing",
            }
        ]

    def test_invalid_config_is_a_validation_failure(self) -> None:
        with pytest.raises(ValidationFailed):
            get_incentive_type("gift").validate({})


# --------------------------------------------------------------------------- percent discount


class TestPercentDiscount:
    T = "percent_discount"

    def test_valid_config_is_kept(self) -> None:
        config = config_for(self.T)
        assert (config.percent_bp, config.cap_minor, config.min_order_minor) == (1250, 2000, 5000)

    def test_only_percent_is_required(self) -> None:
        config = config_for(self.T, {"percent_bp": 100})
        assert config.cap_minor is None and config.min_order_minor is None

    def test_digit_strings_from_forms_are_accepted(self) -> None:
        assert config_for(self.T, {"percent_bp": "1250"}).percent_bp == 1250

    def test_missing_percent(self) -> None:
        error = error_at(self.T, {"cap_minor": 100}, "percent_bp")
        assert error.type == "missing"
        assert error.msg == "percent_bp is required"

    @pytest.mark.parametrize("bp", [0, -5, 10001])
    def test_percent_out_of_range(self, bp: int) -> None:
        error = error_at(self.T, valid(self.T, percent_bp=bp), "percent_bp")
        assert "between 0.01% and 100%" in error.msg
        assert "1..10000" in error.msg
        assert str(bp) in error.msg

    def test_percent_boundaries_are_allowed(self) -> None:
        assert config_for(self.T, valid(self.T, percent_bp=1)).percent_bp == 1
        assert config_for(self.T, valid(self.T, percent_bp=10000)).percent_bp == 10000

    def test_float_percent_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, percent_bp=12.5), "percent_bp")
        assert "basis points" in error.msg and "float" in error.msg

    def test_wrong_type_percent(self) -> None:
        error = error_at(self.T, valid(self.T, percent_bp="ten"), "percent_bp")
        assert "basis points" in error.msg

    @pytest.mark.parametrize("amount", [20.0, 19.99, "19.99"])
    def test_float_money_is_refused(self, amount: Any) -> None:
        error = error_at(self.T, valid(self.T, cap_minor=amount), "cap_minor")
        assert error.type == "money_not_integer"
        assert "minor units" in error.msg and "float" in error.msg

    def test_boolean_money_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, cap_minor=True), "cap_minor")
        assert "minor units" in error.msg

    def test_zero_cap_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, cap_minor=0), "cap_minor")
        assert "greater than 0" in error.msg

    def test_negative_minimum_order_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, min_order_minor=-1), "min_order_minor")
        assert "0 or more" in error.msg

    def test_describe(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T), currency="EUR")
        assert offer.title == "12.5% off"
        assert offer.description == "12.5% off your order, up to €20.00."
        assert offer.terms == "Minimum order €50.00. Discount capped at €20.00."
        assert offer.benefit_summary == {
            "kind": "percent",
            "percent_bp": 1250,
            "cap_minor": 2000,
            "min_order_minor": 5000,
        }
        assert offer.needs_code is False

    def test_benefit_rounds_down(self) -> None:
        config = config_for(self.T, {"percent_bp": 1250})
        benefit = get_incentive_type(self.T).compute_benefit(config, order(9999))
        assert benefit.benefit_minor == 1249  # 1249.875
        assert benefit.cost_minor == 1249
        assert benefit.details["capped"] is False

    def test_benefit_is_capped(self) -> None:
        benefit = get_incentive_type(self.T).compute_benefit(config_for(self.T), order(50_000))
        assert benefit.benefit_minor == 2000  # 6250 uncapped
        assert benefit.details["capped"] is True

    def test_order_at_minimum_qualifies(self) -> None:
        benefit = get_incentive_type(self.T).compute_benefit(config_for(self.T), order(5000))
        assert benefit.benefit_minor == 625

    def test_order_below_minimum_does_not_qualify(self) -> None:
        error = order_error(self.T, config_for(self.T), order(4999))
        assert error.loc == ("order_amount_minor",)
        assert "49.99" in error.msg and "50.00" in error.msg

    def test_missing_order_amount(self) -> None:
        error = order_error(self.T, config_for(self.T), OrderContext())
        assert error.loc == ("order_amount_minor",)
        assert error.type == "missing"

    def test_float_order_amount_is_refused(self) -> None:
        error = order_error(self.T, config_for(self.T), order(6000.5))  # type: ignore[arg-type]
        assert error.loc == ("order_amount_minor",)
        assert "whole number" in error.msg

    def test_unit_cost_estimate(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T)
        assert incentive_type.unit_cost_estimate(config) == 625  # at the minimum order
        assert incentive_type.unit_cost_estimate(config, typical_order_minor=8000) == 1000
        assert incentive_type.unit_cost_estimate(config, typical_order_minor=90_000) == 2000


# --------------------------------------------------------------------------- fixed discount


class TestFixedDiscount:
    T = "fixed_discount"

    def test_valid_config(self) -> None:
        config = config_for(self.T)
        assert (config.amount_minor, config.min_order_minor) == (500, 2500)

    def test_missing_amount(self) -> None:
        assert error_at(self.T, {"min_order_minor": 100}, "amount_minor").type == "missing"

    @pytest.mark.parametrize("amount", [0, -100])
    def test_amount_must_be_positive(self, amount: int) -> None:
        error = error_at(self.T, valid(self.T, amount_minor=amount), "amount_minor")
        assert "greater than 0" in error.msg

    def test_float_amount_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, amount_minor=5.0), "amount_minor")
        assert "1999 for 19.99" in error.msg

    def test_wrong_type_amount(self) -> None:
        error = error_at(self.T, valid(self.T, amount_minor=[5]), "amount_minor")
        assert "minor units" in error.msg

    def test_absurd_amount_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, amount_minor=10**13), "amount_minor")
        assert "at most" in error.msg

    def test_describe(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T), currency="EUR")
        assert offer.title == "€5.00 off"
        assert offer.terms.startswith("Minimum order €25.00.")
        assert offer.benefit_summary["amount_minor"] == 500

    def test_benefit_is_the_amount(self) -> None:
        benefit = get_incentive_type(self.T).compute_benefit(config_for(self.T), order(3000))
        assert (benefit.benefit_minor, benefit.cost_minor) == (500, 500)

    def test_benefit_never_exceeds_the_order(self) -> None:
        config = config_for(self.T, {"amount_minor": 500})
        benefit = get_incentive_type(self.T).compute_benefit(config, order(320))
        assert (benefit.benefit_minor, benefit.cost_minor) == (320, 320)

    def test_below_minimum_order(self) -> None:
        error = order_error(self.T, config_for(self.T), order(2499))
        assert error.loc == ("order_amount_minor",)

    def test_unit_cost_estimate(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T, {"amount_minor": 500})
        assert incentive_type.unit_cost_estimate(config) == 500
        assert incentive_type.unit_cost_estimate(config, typical_order_minor=200) == 200


# --------------------------------------------------------------------------- coupon


def batch_coupon(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "mode": "batch",
        "prefix": "SAVE-",
        "length": 10,
        "benefit": {"kind": "fixed", "amount_minor": 500, "min_order_minor": 2000},
        "expires_days": 30,
    }
    raw.update(changes)
    return raw


class TestCouponSharedMode:
    T = "coupon"

    def test_code_is_normalized_to_uppercase(self) -> None:
        config = config_for(self.T, valid(self.T, code="  save-10 "))
        assert config.code == "SAVE-10"

    def test_shared_defaults(self) -> None:
        config = config_for(self.T)
        assert config.single_use is False
        assert config.prefix is None and config.length is None and config.charset is None

    def test_max_redemptions(self) -> None:
        assert config_for(self.T, valid(self.T, max_redemptions=1000)).max_redemptions == 1000
        error = error_at(self.T, valid(self.T, max_redemptions=0), "max_redemptions")
        assert "at least 1" in error.msg

    def test_code_required(self) -> None:
        raw = valid(self.T)
        del raw["code"]
        error = error_at(self.T, raw, "code")
        assert "required" in error.msg and "shared" in error.msg

    @pytest.mark.parametrize("code", ["AB1", "X" * 33, "SAVE 10", "SAVE_10", "€URO"])
    def test_bad_code_shape(self, code: str) -> None:
        error = error_at(self.T, valid(self.T, code=code), "code")
        assert "4 to 32" in error.msg

    @pytest.mark.parametrize(("name", "value"), [("prefix", "X-"), ("length", 12)])
    def test_batch_settings_are_refused(self, name: str, value: Any) -> None:
        error = error_at(self.T, valid(self.T, **{name: value}), name)
        assert "batch" in error.msg

    def test_single_use_is_once_per_customer_within_max_redemptions(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T, valid(self.T, single_use=True, max_redemptions=5))
        assert incentive_type.shared_code(config) == SharedCode("SAVE10", 5, True)
        terms = incentive_type.describe(config, currency="EUR").terms
        assert "once per customer" in terms and "first 5 redemptions" in terms

    def test_shared_code_without_limits(self) -> None:
        assert get_incentive_type(self.T).shared_code(config_for(self.T)) \
            == SharedCode("SAVE10", None, False)

    def test_describe_shows_the_code(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T), currency="EUR")
        assert offer.title == "10% off with a code"
        assert offer.description == "10% off your order with code SAVE10."
        assert "capped at €15.00" in offer.terms
        assert offer.needs_code is True
        assert offer.benefit_summary["mode"] == "shared"


class TestCouponBatchMode:
    T = "coupon"

    def test_valid_batch_is_forced_single_use(self) -> None:
        config = config_for(self.T, batch_coupon())
        assert config.single_use is True
        assert config.charset == DEFAULT_CHARSET
        assert config.prefix == "SAVE-"

    def test_defaults(self) -> None:
        raw = batch_coupon()
        del raw["prefix"], raw["length"]
        config = config_for(self.T, raw)
        assert (config.prefix, config.length, config.charset) == ("", 10, DEFAULT_CHARSET)

    def test_prefix_is_uppercased(self) -> None:
        assert config_for(self.T, batch_coupon(prefix="vip-")).prefix == "VIP-"

    def test_explicit_single_use_false_is_refused(self) -> None:
        error = error_at(self.T, batch_coupon(single_use=False), "single_use")
        assert "always single-use" in error.msg

    def test_max_redemptions_is_refused(self) -> None:
        assert error_at(self.T, batch_coupon(max_redemptions=10), "max_redemptions")

    def test_fixed_code_is_refused(self) -> None:
        error = error_at(self.T, batch_coupon(code="SAVE10"), "code")
        assert "generate" in error.msg

    @pytest.mark.parametrize("prefix", ["TOO-LONG-PREFIX", "SAVE_"])
    def test_bad_prefix(self, prefix: str) -> None:
        error = error_at(self.T, batch_coupon(prefix=prefix), "prefix")
        assert "12 characters" in error.msg

    @pytest.mark.parametrize("length", [5, 33])
    def test_length_out_of_range(self, length: int) -> None:
        error = error_at(self.T, batch_coupon(length=length), "length")
        assert "between 6 and 32" in error.msg

    def test_lookalike_charset_names_the_characters(self) -> None:
        charset = "ABCDEFGHJKMNPQRSTUV0O"
        error = error_at(self.T, batch_coupon(charset=charset), "charset")
        assert "look-alike" in error.msg
        assert "'0'" in error.msg and "'O'" in error.msg
        assert "'1'" not in error.msg

    def test_every_lookalike_is_caught(self) -> None:
        for char in sorted(LOOKALIKES):
            error = error_at(self.T, batch_coupon(charset="ABCDEFGHJKMNPQRS" + char), "charset")
            assert f"'{char}'" in error.msg

    def test_small_charset(self) -> None:
        error = error_at(self.T, batch_coupon(charset="ABCDEFGHJK", length=32), "charset")
        assert "at least 16 distinct" in error.msg and "10" in error.msg

    def test_repeated_characters_do_not_count(self) -> None:
        error = error_at(self.T, batch_coupon(charset="ABCDEFGH" * 3, length=32), "charset")
        assert "it has 8" in error.msg

    def test_charset_outside_the_code_alphabet(self) -> None:
        error = error_at(self.T, batch_coupon(charset="ABCDEFGHJKMNPQRS-+"), "charset")
        assert "'+'" in error.msg

    def test_custom_charset_is_normalized(self) -> None:
        config = config_for(self.T, batch_coupon(charset="abcdefghjkmnpqrsaa"))
        assert config.charset == "ABCDEFGHJKMNPQRS"

    def test_too_few_bits_states_bits_and_length_needed(self) -> None:
        error = error_at(self.T, batch_coupon(length=8), "length")
        assert "39.6 bits" in error.msg  # 8 * log2(31)
        assert "40 bits" in error.msg
        assert "length 9 or more" in error.msg

    def test_minimum_entropy_boundary(self) -> None:
        assert config_for(self.T, batch_coupon(length=9)).length == 9
        config = config_for(self.T, batch_coupon(charset="ABCDEFGHJKMNPQRS", length=10))
        assert config.length == 10  # exactly 40 bits
        error = error_at(self.T, batch_coupon(charset="ABCDEFGHJKMNPQRS", length=9), "length")
        assert "36.0 bits" in error.msg and "length 10" in error.msg

    def test_describe_batch(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T, batch_coupon()),
                                                    currency="EUR")
        assert offer.title == "€5.00 off with a code"
        assert "personal code" in offer.description
        assert "used once" in offer.terms and "30 days" in offer.terms
        assert "Minimum order €20.00" in offer.terms


class TestCouponBenefit:
    T = "coupon"

    def test_missing_benefit(self) -> None:
        raw = valid(self.T)
        del raw["benefit"]
        assert error_at(self.T, raw, "benefit").type == "missing"

    def test_benefit_must_be_an_object(self) -> None:
        error = error_at(self.T, valid(self.T, benefit="10%"), "benefit")
        assert "object" in error.msg and "percent_bp" in error.msg

    def test_unknown_kind(self) -> None:
        error = error_at(self.T, valid(self.T, benefit={"kind": "bogof"}), "benefit", "kind")
        assert "'percent' or 'fixed'" in error.msg

    def test_percent_kind_needs_percent(self) -> None:
        raw = valid(self.T, benefit={"kind": "percent", "amount_minor": 100})
        assert "required" in error_at(self.T, raw, "benefit", "percent_bp").msg
        assert "fixed coupons" in error_at(self.T, raw, "benefit", "amount_minor").msg

    def test_fixed_kind_refuses_cap(self) -> None:
        raw = valid(self.T, benefit={"kind": "fixed", "amount_minor": 100, "cap_minor": 50})
        assert "percent coupons" in error_at(self.T, raw, "benefit", "cap_minor").msg

    def test_float_money_in_benefit(self) -> None:
        raw = valid(self.T, benefit={"kind": "fixed", "amount_minor": 4.99})
        error = error_at(self.T, raw, "benefit", "amount_minor")
        assert error.type == "money_not_integer"

    def test_expires_days_range(self) -> None:
        error = error_at(self.T, valid(self.T, expires_days=0), "expires_days")
        assert error.msg == "expires_days must be between 1 and 3,650 days; got 0"

    def test_percent_benefit_capped(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T)
        assert incentive_type.compute_benefit(config, order(9999)).benefit_minor == 999
        assert incentive_type.compute_benefit(config, order(100_000)).benefit_minor == 1500

    def test_fixed_benefit_and_minimum_order(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T, batch_coupon())
        benefit = incentive_type.compute_benefit(config, order(2000))
        assert (benefit.benefit_minor, benefit.cost_minor) == (500, 500)
        error = order_error(self.T, config, order(1999))
        assert error.loc == ("order_amount_minor",)

    def test_unit_cost_estimate(self) -> None:
        incentive_type = get_incentive_type(self.T)
        assert incentive_type.unit_cost_estimate(config_for(self.T, batch_coupon())) == 500
        config = config_for(self.T)
        assert incentive_type.unit_cost_estimate(config, typical_order_minor=4000) == 400

    def test_model_can_be_used_directly(self) -> None:
        config = CouponConfig.model_validate(batch_coupon())
        assert config.single_use is True


# --------------------------------------------------------------------------- free trial


class TestFreeTrial:
    T = "free_trial"

    def test_valid_config(self) -> None:
        config = config_for(self.T)
        assert (config.product, config.days, config.cost_minor) == ("Premium app", 30, 120)

    def test_missing_product(self) -> None:
        raw = valid(self.T)
        del raw["product"]
        assert error_at(self.T, raw, "product").msg == "product is required"

    @pytest.mark.parametrize(("product", "fragment"), [("", "empty"), ("x" * 101, "100")])
    def test_product_length(self, product: str, fragment: str) -> None:
        assert fragment in error_at(self.T, valid(self.T, product=product), "product").msg

    def test_product_must_be_text(self) -> None:
        assert "text" in error_at(self.T, valid(self.T, product=42), "product").msg

    @pytest.mark.parametrize("days", [0, 366])
    def test_days_out_of_range(self, days: int) -> None:
        error = error_at(self.T, valid(self.T, days=days), "days")
        assert "between 1 and 365 days" in error.msg

    def test_fractional_days(self) -> None:
        assert "whole number" in error_at(self.T, valid(self.T, days=7.5), "days").msg

    def test_float_cost_is_refused(self) -> None:
        assert "minor units" in error_at(self.T, valid(self.T, cost_minor=1.2), "cost_minor").msg

    def test_zero_cost_is_allowed(self) -> None:
        assert config_for(self.T, valid(self.T, cost_minor=0)).cost_minor == 0

    def test_negative_cost_is_refused(self) -> None:
        assert "0 or more" in error_at(self.T, valid(self.T, cost_minor=-1), "cost_minor").msg

    def test_conversion_price_must_be_positive(self) -> None:
        raw = valid(self.T, converts_to_paid_price_minor=0)
        assert error_at(self.T, raw, "converts_to_paid_price_minor")

    def test_describe(self) -> None:
        raw = valid(self.T, converts_to_paid_price_minor=999)
        offer = get_incentive_type(self.T).describe(config_for(self.T, raw), currency="EUR")
        assert offer.title == "30 days of Premium app free"
        assert offer.description == "Try Premium app free for 30 days (worth €9.99)."
        assert "€9.99 unless cancelled" in offer.terms
        assert offer.benefit_summary["trial_days"] == 30

    def test_benefit_is_list_value_and_cost_is_trial_cost(self) -> None:
        benefit = get_incentive_type(self.T).compute_benefit(config_for(self.T), OrderContext())
        assert benefit == Benefit(999, 120, {"product": "Premium app", "trial_days": 30})

    def test_benefit_without_list_value_is_zero(self) -> None:
        raw = valid(self.T)
        del raw["value_minor"]
        benefit = get_incentive_type(self.T).compute_benefit(config_for(self.T, raw), order(0))
        assert (benefit.benefit_minor, benefit.cost_minor) == (0, 120)

    def test_unit_cost_estimate(self) -> None:
        assert get_incentive_type(self.T).unit_cost_estimate(config_for(self.T)) == 120


# --------------------------------------------------------------------------- lottery


def prize(key: str, numerator: int, denominator: int, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "key": key,
        "name": key.title(),
        "value_minor": 1000,
        "inventory": 1,
        "odds": {"numerator": numerator, "denominator": denominator},
    }
    raw.update(changes)
    return raw


class TestLotteryConfig:
    T = "lottery"

    def test_valid_config(self) -> None:
        config = config_for(self.T)
        assert [p.key for p in config.prizes] == ["tablet", "voucher"]
        assert config.draw_at is not None and config.draw_at.utcoffset() is not None

    def test_entry_rule_defaults(self) -> None:
        raw = valid(self.T, entry_rule={"event": "interaction"})
        rule = config_for(self.T, raw).entry_rule
        assert (rule.entries_per_event, rule.max_entries_per_customer) == (1, None)

    def test_missing_prizes(self) -> None:
        raw = valid(self.T)
        del raw["prizes"]
        assert error_at(self.T, raw, "prizes").type == "missing"

    def test_empty_prize_list(self) -> None:
        assert "at least 1" in error_at(self.T, valid(self.T, prizes=[]), "prizes").msg

    def test_too_many_prizes(self) -> None:
        prizes = [prize(f"p{i}", 1, 1000) for i in range(51)]
        assert "at most 50" in error_at(self.T, valid(self.T, prizes=prizes), "prizes").msg

    def test_odds_summing_over_one_gives_the_total(self) -> None:
        prizes = [prize("a", 3, 4), prize("b", 1, 2)]
        error = error_at(self.T, valid(self.T, prizes=prizes), "prizes")
        assert "5/4" in error.msg and "125%" in error.msg
        assert "at most 1" in error.msg

    def test_odds_summing_to_exactly_one_are_allowed(self) -> None:
        prizes = [prize("a", 1, 3), prize("b", 2, 3)]
        assert len(config_for(self.T, valid(self.T, prizes=prizes)).prizes) == 2

    def test_odds_are_exact_not_floating_point(self) -> None:
        # 0.1 + 0.2 > 0.3 in floats; exact fractions sum to 3/10 and must pass against 7/10.
        prizes = [prize("a", 1, 10), prize("b", 2, 10), prize("c", 7, 10)]
        assert len(config_for(self.T, valid(self.T, prizes=prizes)).prizes) == 3

    def test_numerator_above_denominator(self) -> None:
        prizes = [prize("a", 3, 2)]
        error = error_at(self.T, valid(self.T, prizes=prizes), "prizes", 0, "odds", "numerator")
        assert "must not exceed denominator" in error.msg

    @pytest.mark.parametrize("field", ["numerator", "denominator"])
    def test_zero_odds_parts(self, field: str) -> None:
        raw_prize = prize("a", 1, 2)
        raw_prize["odds"][field] = 0
        error = error_at(self.T, valid(self.T, prizes=[raw_prize]), "prizes", 0, "odds", field)
        assert f"prizes.0.odds.{field} must be" in error.msg
        assert "at least 1" in error.msg or "between 1 and" in error.msg

    def test_float_odds_are_refused(self) -> None:
        raw_prize = prize("a", 1, 2)
        raw_prize["odds"] = {"numerator": 0.5, "denominator": 1}
        error = error_at(
            self.T, valid(self.T, prizes=[raw_prize]), "prizes", 0, "odds", "numerator"
        )
        assert "whole number" in error.msg

    def test_missing_odds(self) -> None:
        raw_prize = prize("a", 1, 2)
        del raw_prize["odds"]
        error = error_at(self.T, valid(self.T, prizes=[raw_prize]), "prizes", 0, "odds")
        assert error.msg == "prizes.0.odds is required"

    def test_prize_value_float_and_zero(self) -> None:
        prizes = [prize("a", 1, 10, value_minor=99.5), prize("b", 1, 10, value_minor=0)]
        raw = valid(self.T, prizes=prizes)
        assert error_at(self.T, raw, "prizes", 0, "value_minor").type == "money_not_integer"
        assert "greater than 0" in error_at(self.T, raw, "prizes", 1, "value_minor").msg

    def test_prize_inventory_at_least_one(self) -> None:
        prizes = [prize("a", 1, 10, inventory=0)]
        error = error_at(self.T, valid(self.T, prizes=prizes), "prizes", 0, "inventory")
        assert error.msg == "prizes.0.inventory must be at least 1; got 0"

    def test_duplicate_prize_keys_name_the_index(self) -> None:
        prizes = [prize("a", 1, 10), prize("b", 1, 10), prize("A", 1, 10)]
        error = error_at(self.T, valid(self.T, prizes=prizes), "prizes", 2, "key")
        assert "'a' is already used by prize 0" in error.msg

    def test_prize_key_must_be_a_slug(self) -> None:
        prizes = [prize("grand prize!", 1, 10)]
        error = error_at(self.T, valid(self.T, prizes=prizes), "prizes", 0, "key")
        assert "lowercase letters" in error.msg

    def test_unknown_event(self) -> None:
        raw = valid(self.T, entry_rule={"event": "click"})
        error = error_at(self.T, raw, "entry_rule", "event")
        assert "'interaction', 'conversion' or 'redemption'" in error.msg
        assert "'click'" in error.msg

    @pytest.mark.parametrize("entries", [0, 101])
    def test_entries_per_event_range(self, entries: int) -> None:
        raw = valid(self.T, entry_rule={"event": "conversion", "entries_per_event": entries})
        error = error_at(self.T, raw, "entry_rule", "entries_per_event")
        assert "between 1 and 100" in error.msg

    def test_customer_cap_below_one_event_is_inconsistent(self) -> None:
        rule = {"event": "conversion", "entries_per_event": 5, "max_entries_per_customer": 2}
        error = error_at(
            self.T, valid(self.T, entry_rule=rule), "entry_rule", "max_entries_per_customer"
        )
        assert "(2)" in error.msg and "(5)" in error.msg

    def test_min_amount_float(self) -> None:
        rule = {"event": "conversion", "min_amount_minor": 10.0}
        error = error_at(self.T, valid(self.T, entry_rule=rule), "entry_rule", "min_amount_minor")
        assert error.type == "money_not_integer"

    def test_naive_draw_time_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, draw_at="2025-12-01T18:00:00"), "draw_at")
        assert "timezone" in error.msg

    def test_garbage_draw_time(self) -> None:
        assert "date and time" in error_at(self.T, valid(self.T, draw_at="soon"), "draw_at").msg

    def test_model_can_be_used_directly(self) -> None:
        assert LotteryConfig.model_validate(valid(self.T)).entry_rule.entries_per_event == 2


class TestLotteryBehaviour:
    T = "lottery"

    def test_entering_costs_nothing_and_grants_entries(self) -> None:
        benefit = get_incentive_type(self.T).compute_benefit(
            config_for(self.T), OrderContext(channel_key="app")
        )
        assert benefit == Benefit(0, 0, {})
        assert get_incentive_type(self.T).entry_cap(config_for(self.T)) is None

    def test_a_redemption_rule_grants_its_entries_on_redemption(self) -> None:
        rule = {"event": "redemption", "entries_per_event": 3, "max_entries_per_customer": 6}
        config = config_for(self.T, valid(self.T, entry_rule=rule))
        incentive_type = get_incentive_type(self.T)
        assert incentive_type.redemption_response(config) == {"lottery_entries": 3}
        assert incentive_type.entry_cap(config) == 6

    def test_an_event_rule_redemption_says_it_earns_nothing(self) -> None:
        answer = get_incentive_type(self.T).redemption_response(config_for(self.T))
        assert answer["lottery_entries"] == 0 and answer["counts_toward_limit"] is False
        assert "conversions on app" in answer["lottery_entries_note"]

    def test_wrong_channel_does_not_enter(self) -> None:
        error = order_error(self.T, config_for(self.T), OrderContext(channel_key="call_centre"))
        assert error.loc == ("channel_key",)
        assert "'app'" in error.msg and "'call_centre'" in error.msg

    def test_minimum_amount(self) -> None:
        rule = {"event": "conversion", "min_amount_minor": 2000}
        config = config_for(self.T, valid(self.T, entry_rule=rule))
        incentive_type = get_incentive_type(self.T)
        assert incentive_type.compute_benefit(config, order(2000)).cost_minor == 0
        assert order_error(self.T, config, order(1999)).loc == ("order_amount_minor",)

    def test_unit_cost_is_expected_value_per_entry_rounded_down(self) -> None:
        # 30000/10000 + 1000/100 = 3 + 10 = 13 exactly
        assert get_incentive_type(self.T).unit_cost_estimate(config_for(self.T)) == 13
        # 1000 * 1/3 + 100 * 1/7 = 347.619... -> 347
        prizes = [prize("a", 1, 3, value_minor=1000), prize("b", 1, 7, value_minor=100)]
        config = config_for(self.T, valid(self.T, prizes=prizes))
        assert get_incentive_type(self.T).unit_cost_estimate(config) == 347

    def test_total_inventory(self) -> None:
        assert total_inventory(config_for(self.T)) == 102

    def test_describe(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T), currency="EUR")
        assert offer.title == "Win Tablet"
        assert offer.description.startswith("Get 2 entries for every order on app.")
        assert "Tablet (worth €300.00)" in offer.description
        assert "102 prizes in total." in offer.terms
        assert "Tablet 1 in 10000" in offer.terms
        assert "Draw on 2025-12-01 17:00 UTC." in offer.terms
        assert offer.benefit_summary["prize_count"] == 102


# --------------------------------------------------------------------------- loyalty


def tiers(*thresholds: int) -> list[dict[str, Any]]:
    return [
        {"key": f"t{i}", "name": f"Tier {i}", "threshold_points": t, "benefits": "Perks"}
        for i, t in enumerate(thresholds)
    ]


class TestLoyaltyConfig:
    T = "loyalty"

    def test_valid_config(self) -> None:
        config = config_for(self.T)
        assert [t.key for t in config.tiers] == ["bronze", "silver", "gold"]
        assert config.target_channel_multiplier_bp == 20000

    def test_multiplier_defaults_to_1x(self) -> None:
        raw = valid(self.T)
        del raw["target_channel_multiplier_bp"]
        assert config_for(self.T, raw).target_channel_multiplier_bp == 10000

    def test_non_increasing_threshold_names_the_index(self) -> None:
        raw = valid(self.T, tiers=tiers(0, 1000, 1000))
        error = error_at(self.T, raw, "tiers", 2, "threshold_points")
        assert "strictly increase" in error.msg and "1000" in error.msg

    def test_decreasing_threshold(self) -> None:
        raw = valid(self.T, tiers=tiers(0, 500, 400, 600))
        errors = errors_for(self.T, raw)
        assert [e.loc for e in errors] == [("config", "tiers", 2, "threshold_points")]

    def test_first_threshold_must_be_zero(self) -> None:
        error = error_at(
            self.T, valid(self.T, tiers=tiers(100, 200)), "tiers", 0, "threshold_points"
        )
        assert "start at 0" in error.msg

    def test_duplicate_tier_keys(self) -> None:
        ladder = tiers(0, 100)
        ladder[1]["key"] = "t0"
        error = error_at(self.T, valid(self.T, tiers=ladder), "tiers", 1, "key")
        assert "'t0' is already used by tier 0" in error.msg

    def test_ladder_size(self) -> None:
        assert "at least 1" in error_at(self.T, valid(self.T, tiers=[]), "tiers").msg
        eleven = tiers(*range(0, 1100, 100))
        assert "at most 10" in error_at(self.T, valid(self.T, tiers=eleven), "tiers").msg

    def test_negative_threshold(self) -> None:
        raw = valid(self.T, tiers=tiers(0, -5))
        assert "at least 0" in error_at(self.T, raw, "tiers", 1, "threshold_points").msg

    def test_missing_tier_benefits(self) -> None:
        ladder = tiers(0)
        del ladder[0]["benefits"]
        assert error_at(self.T, valid(self.T, tiers=ladder), "tiers", 0, "benefits")

    @pytest.mark.parametrize("bp", [9999, 100001, 0])
    def test_multiplier_out_of_range(self, bp: int) -> None:
        raw = valid(self.T, target_channel_multiplier_bp=bp)
        error = error_at(self.T, raw, "target_channel_multiplier_bp")
        assert "between 1x and 10x" in error.msg and "10000..100000" in error.msg

    def test_float_multiplier_is_refused(self) -> None:
        raw = valid(self.T, target_channel_multiplier_bp=1.5)
        assert "basis points" in error_at(self.T, raw, "target_channel_multiplier_bp").msg

    def test_negative_points_rate(self) -> None:
        raw = valid(self.T, points_per_currency_unit=-1)
        assert "at least 0" in error_at(self.T, raw, "points_per_currency_unit").msg

    def test_float_point_value_is_refused(self) -> None:
        raw = valid(self.T, point_value_minor_per_1000=0.5)
        error = error_at(self.T, raw, "point_value_minor_per_1000")
        assert error.type == "money_not_integer"

    def test_model_can_be_used_directly(self) -> None:
        assert len(LoyaltyConfig.model_validate(valid(self.T)).tiers) == 3


class TestLoyaltyBehaviour:
    T = "loyalty"

    def benefit(self, ctx: OrderContext, **changes: Any) -> Benefit:
        config = config_for(self.T, valid(self.T, **changes))
        return get_incentive_type(self.T).compute_benefit(config, ctx)

    def test_points_off_the_target_channel(self) -> None:
        ctx = order(2599, channel_key="call_centre", target_channel_key="app")
        benefit = self.benefit(ctx)
        assert benefit.details == {"points": 259, "multiplier_applied": False}  # 259.9
        assert benefit.cost_minor == 129  # 259 * 500 / 1000 = 129.5
        assert benefit.benefit_minor == 129

    def test_multiplier_on_the_target_channel(self) -> None:
        ctx = order(2599, channel_key="app", target_channel_key="app")
        benefit = self.benefit(ctx)
        assert benefit.details == {"points": 519, "multiplier_applied": True}  # 519.8
        assert benefit.cost_minor == 259

    def test_fractional_multiplier(self) -> None:
        ctx = order(1000, channel_key="app", target_channel_key="app")
        assert self.benefit(ctx, target_channel_multiplier_bp=15000).details["points"] == 150

    def test_no_target_channel_means_no_multiplier(self) -> None:
        benefit = self.benefit(order(1000, channel_key="app"))
        assert benefit.details == {"points": 100, "multiplier_applied": False}

    def test_1x_multiplier_is_not_reported_as_applied(self) -> None:
        ctx = order(1000, channel_key="app", target_channel_key="app")
        benefit = self.benefit(ctx, target_channel_multiplier_bp=10000)
        assert benefit.details == {"points": 100, "multiplier_applied": False}

    def test_points_base_overrides_the_order_amount(self) -> None:
        ctx = OrderContext(points_base=75, channel_key="app", target_channel_key="app")
        assert self.benefit(ctx).details == {"points": 150, "multiplier_applied": True}

    def test_negative_points_base(self) -> None:
        config = config_for(self.T)
        error = order_error(self.T, config, OrderContext(points_base=-1))
        assert error.loc == ("points_base",)

    def test_missing_order_amount(self) -> None:
        error = order_error(self.T, config_for(self.T), OrderContext(channel_key="app"))
        assert error.loc == ("order_amount_minor",)

    @pytest.mark.parametrize(
        ("points", "expected"),
        [
            (0, "bronze"),
            (999, "bronze"),
            (1000, "silver"),
            (4999, "silver"),
            (5000, "gold"),
            (10**9, "gold"),
        ],
    )
    def test_tier_for_points(self, points: int, expected: str) -> None:
        assert tier_for_points(config_for(self.T), points) == expected

    def test_tier_for_negative_points(self) -> None:
        with pytest.raises(ValueError):
            tier_for_points(config_for(self.T), -1)

    def test_describe(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T), currency="EUR")
        assert offer.description == (
            "Earn 10 points per €1.00 spent, 2x when you use the recommended channel."
        )
        assert "Silver from 1,000 points: Free ship" in offer.terms
        assert offer.benefit_summary["target_channel_multiplier_bp"] == 20000

    def test_describe_in_the_campaign_currency_and_the_singular(self) -> None:
        one = config_for(self.T, valid(self.T, points_per_currency_unit=1))
        offer = get_incentive_type(self.T).describe(one, currency="JPY")
        assert offer.description.startswith("Earn 1 point per ¥100 spent")
        assert "from 0 points" in offer.terms

    def test_unit_cost_estimate(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T)
        assert incentive_type.unit_cost_estimate(config) == 0
        # 5000 minor units -> 500 points x2 = 1000 points -> 500
        assert incentive_type.unit_cost_estimate(config, typical_order_minor=5000) == 500


# --------------------------------------------------------------------------- gift


class TestGift:
    T = "gift"

    def test_valid_config(self) -> None:
        config = config_for(self.T)
        assert (config.item, config.sku, config.inventory) == ("Tote bag", "TOTE-01", 500)

    def test_missing_item(self) -> None:
        raw = valid(self.T)
        del raw["item"]
        assert error_at(self.T, raw, "item").msg == "item is required"

    def test_inventory_at_least_one(self) -> None:
        assert "at least 1" in error_at(self.T, valid(self.T, inventory=0), "inventory").msg

    def test_boolean_inventory_is_refused(self) -> None:
        assert "whole number" in error_at(self.T, valid(self.T, inventory=True), "inventory").msg

    def test_float_unit_cost_is_refused(self) -> None:
        error = error_at(self.T, valid(self.T, unit_cost_minor=3.5), "unit_cost_minor")
        assert error.type == "money_not_integer"

    def test_sku_too_long(self) -> None:
        assert "64" in error_at(self.T, valid(self.T, sku="X" * 65), "sku").msg

    def test_describe(self) -> None:
        offer = get_incentive_type(self.T).describe(
            config_for(self.T, valid(self.T, value_minor=1200)), currency="EUR"
        )
        assert offer.title == "Free Tote bag"
        assert offer.description == "Get Tote bag free with your order (worth €12.00)."
        assert "500 available" in offer.terms

    def test_value_defaults_to_unit_cost(self) -> None:
        benefit = get_incentive_type(self.T).compute_benefit(config_for(self.T), OrderContext())
        assert benefit == Benefit(350, 350, {"item": "Tote bag", "sku": "TOTE-01"})

    def test_retail_value(self) -> None:
        config = config_for(self.T, valid(self.T, value_minor=1200))
        benefit = get_incentive_type(self.T).compute_benefit(config, OrderContext())
        assert (benefit.benefit_minor, benefit.cost_minor) == (1200, 350)

    def test_minimum_order(self) -> None:
        config = config_for(self.T, valid(self.T, min_order_minor=3000))
        incentive_type = get_incentive_type(self.T)
        assert incentive_type.compute_benefit(config, order(3000)).cost_minor == 350
        assert order_error(self.T, config, order(2999)).loc == ("order_amount_minor",)
        assert order_error(self.T, config, OrderContext()).type == "missing"

    def test_unit_cost_estimate(self) -> None:
        assert get_incentive_type(self.T).unit_cost_estimate(config_for(self.T)) == 350


# --------------------------------------------------------------------------- rebate


class TestRebate:
    T = "rebate"

    def test_valid_config(self) -> None:
        config = config_for(self.T)
        assert (config.percent_bp, config.condition.channel_key) == (500, "web")

    def test_condition_is_optional(self) -> None:
        config = config_for(self.T, {"percent_bp": 300})
        assert config.condition.payout_delay_days == 0
        assert config.condition.channel_key is None

    def test_missing_percent(self) -> None:
        assert error_at(self.T, {"cap_minor": 100}, "percent_bp").type == "missing"

    def test_percent_out_of_range(self) -> None:
        error = error_at(self.T, valid(self.T, percent_bp=20000), "percent_bp")
        assert "between 0.01% and 100%" in error.msg

    def test_float_percent(self) -> None:
        assert "float" in error_at(self.T, valid(self.T, percent_bp=5.5), "percent_bp").msg

    def test_condition_must_be_an_object(self) -> None:
        error = error_at(self.T, valid(self.T, condition="web only"), "condition")
        assert "payout_delay_days" in error.msg

    def test_unknown_condition_setting(self) -> None:
        raw = valid(self.T, condition={"channel": "web"})
        error = error_at(self.T, raw, "condition", "channel")
        assert "did you mean 'channel_key'" in error.msg

    @pytest.mark.parametrize("days", [-1, 366])
    def test_payout_delay_range(self, days: int) -> None:
        raw = valid(self.T, condition={"payout_delay_days": days})
        error = error_at(self.T, raw, "condition", "payout_delay_days")
        assert "between 0 and 365 days" in error.msg

    def test_bad_channel_key(self) -> None:
        raw = valid(self.T, condition={"channel_key": "web shop"})
        assert "lowercase" in error_at(self.T, raw, "condition", "channel_key").msg

    def test_channel_key_is_lowercased(self) -> None:
        config = config_for(self.T, valid(self.T, condition={"channel_key": "WEB"}))
        assert config.condition.channel_key == "web"

    def test_describe(self) -> None:
        offer = get_incentive_type(self.T).describe(config_for(self.T), currency="EUR")
        assert offer.title == "5% cashback"
        assert offer.description == (
            "Get 5% of your order back, up to €10.00, when you order on web.")
        assert "Paid out 30 days after the order." in offer.terms

    def test_benefit_rounds_down_and_caps(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T)
        benefit = incentive_type.compute_benefit(config, order(2999, channel_key="web"))
        assert (benefit.benefit_minor, benefit.cost_minor) == (149, 149)  # 149.95
        assert benefit.details == {"payout_delay_days": 30, "capped": False}
        capped = incentive_type.compute_benefit(config, order(100_000, channel_key="web"))
        assert capped.benefit_minor == 1000
        assert capped.details["capped"] is True

    def test_wrong_channel_names_the_channel(self) -> None:
        error = order_error(self.T, config_for(self.T), order(5000, channel_key="call_centre"))
        assert error.loc == ("channel_key",)
        assert "'web'" in error.msg and "'call_centre'" in error.msg

    def test_no_channel_given(self) -> None:
        error = order_error(self.T, config_for(self.T), order(5000))
        assert error.loc == ("channel_key",)

    def test_below_minimum_order(self) -> None:
        error = order_error(self.T, config_for(self.T), order(1999, channel_key="web"))
        assert error.loc == ("order_amount_minor",)

    def test_unit_cost_estimate(self) -> None:
        incentive_type = get_incentive_type(self.T)
        config = config_for(self.T)
        assert incentive_type.unit_cost_estimate(config) == 100  # at the 20.00 minimum
        assert incentive_type.unit_cost_estimate(config, typical_order_minor=6000) == 300
