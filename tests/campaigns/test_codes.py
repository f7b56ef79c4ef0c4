"""Redemption codes: generation, entropy, normalization and masking."""

from __future__ import annotations

import itertools
import string

import pytest

from campaigns.incentives import (
    DEFAULT_CHARSET,
    LOOKALIKES,
    entropy_bits,
    generate_code,
    generate_codes,
    mask_code,
    normalize_code,
)
from campaigns.incentives.codes import (
    MIN_ENTROPY_BITS,
    charset_problems,
    has_min_entropy,
    min_length_for,
)

SIXTEEN = "ABCDEFGHJKMNPQRS"


class TestDefaultCharset:
    def test_has_no_lookalikes(self) -> None:
        assert not set(DEFAULT_CHARSET) & LOOKALIKES

    def test_is_31_distinct_uppercase_letters_and_digits(self) -> None:
        assert len(DEFAULT_CHARSET) == len(set(DEFAULT_CHARSET)) == 31
        assert all(c.isupper() or c.isdigit() for c in DEFAULT_CHARSET)

    def test_lookalikes_are_the_five_confusable_characters(self) -> None:
        assert frozenset("0O1IL") == LOOKALIKES

    def test_default_charset_passes_its_own_rules(self) -> None:
        assert charset_problems(DEFAULT_CHARSET) == []


@pytest.fixture(scope="module")
def batch() -> list[str]:
    """100,000 batch codes."""
    return generate_codes(100_000, prefix="SAVE-", length=10, charset=DEFAULT_CHARSET)


class TestBatchOf100000:
    """The brief's scenario: a large batch is unique, clean and well-formed (how fast it
    reaches the database is measured by ``benchmarks/codes.py``, not asserted here)."""

    def test_count_and_uniqueness(self, batch: list[str]) -> None:
        codes = batch
        assert len(codes) == 100_000
        assert len(set(codes)) == 100_000

    def test_no_lookalike_characters(self, batch: list[str]) -> None:
        codes = batch
        offending = [c for c in codes if set(c) & LOOKALIKES]
        assert offending == []

    def test_all_have_prefix_and_length(self, batch: list[str]) -> None:
        codes = batch
        assert all(c.startswith("SAVE-") and len(c) == len("SAVE-") + 10 for c in codes)
        assert all(set(c[5:]) <= set(DEFAULT_CHARSET) for c in codes)

    def test_every_charset_character_is_used(self, batch: list[str]) -> None:
        codes = batch
        used = set(itertools.chain.from_iterable(c[5:] for c in codes))
        assert used == set(DEFAULT_CHARSET)

    def test_configuration_has_at_least_40_bits(self) -> None:
        assert entropy_bits(10, DEFAULT_CHARSET) >= MIN_ENTROPY_BITS
        assert has_min_entropy(10, DEFAULT_CHARSET)


class TestGenerateCodes:
    def test_avoids_existing_codes(self) -> None:
        # 16 ** 2 = 256 possible codes; 200 taken leaves exactly 56.
        everything = {"X" + a + b for a in SIXTEEN for b in SIXTEEN}
        existing = set(sorted(everything)[:200])
        codes = generate_codes(56, prefix="X", length=2, charset=SIXTEEN, existing=existing)
        assert set(codes) == everything - existing

    def test_more_codes_than_the_space_holds_is_refused(self) -> None:
        with pytest.raises(ValueError, match="256"):
            generate_codes(257, length=2, charset=SIXTEEN)

    def test_exhausted_space_stops_instead_of_looping(self) -> None:
        everything = {a + b for a in SIXTEEN for b in SIXTEEN}
        with pytest.raises(RuntimeError, match="unique codes"):
            generate_codes(1, length=2, charset=SIXTEEN, existing=everything)

    def test_zero_codes(self) -> None:
        assert generate_codes(0) == []

    def test_negative_count_is_refused(self) -> None:
        with pytest.raises(ValueError):
            generate_codes(-1)


class TestGenerateCode:
    def test_shape(self) -> None:
        code = generate_code(prefix="VIP-", length=12, charset=DEFAULT_CHARSET)
        assert code.startswith("VIP-")
        assert len(code) == 16
        assert set(code[4:]) <= set(DEFAULT_CHARSET)

    def test_defaults_use_default_charset(self) -> None:
        code = generate_code()
        assert len(code) == 10
        assert set(code) <= set(DEFAULT_CHARSET)

    def test_codes_differ(self) -> None:
        assert len({generate_code() for _ in range(100)}) == 100

    @pytest.mark.parametrize(
        ("kwargs", "fragment"),
        [
            ({"prefix": "save-"}, "prefix"),
            ({"length": 0}, "length"),
            ({"charset": "AAB"}, "charset"),
            ({"charset": "A"}, "charset"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, object], fragment: str) -> None:
        with pytest.raises(ValueError, match=fragment):
            generate_code(**kwargs)  # type: ignore[arg-type]


class TestEntropy:
    def test_exact_values(self) -> None:
        assert entropy_bits(10, string.ascii_uppercase + "234567") == 50.0
        assert entropy_bits(10, SIXTEEN) == 40.0

    def test_repeated_characters_add_nothing(self) -> None:
        assert entropy_bits(10, SIXTEEN + SIXTEEN) == entropy_bits(10, SIXTEEN)

    def test_degenerate_inputs(self) -> None:
        assert entropy_bits(0, DEFAULT_CHARSET) == 0.0
        assert entropy_bits(5, "A") == 0.0

    def test_default_charset_needs_9_characters(self) -> None:
        assert min_length_for(DEFAULT_CHARSET) == 9
        assert has_min_entropy(9, DEFAULT_CHARSET)
        assert not has_min_entropy(8, DEFAULT_CHARSET)
        assert entropy_bits(8, DEFAULT_CHARSET) < MIN_ENTROPY_BITS

    def test_boundary_is_exact_for_powers_of_two(self) -> None:
        assert min_length_for(SIXTEEN) == 10  # 4 bits each: exactly 40
        assert has_min_entropy(10, SIXTEEN)
        assert not has_min_entropy(9, SIXTEEN)


class TestCharsetProblems:
    def test_names_each_lookalike(self) -> None:
        (problem,) = charset_problems("ABCDEFGHJKMNPQRS0O")
        assert "look-alike" in problem
        assert "'0'" in problem and "'O'" in problem

    def test_too_few_characters(self) -> None:
        (problem,) = charset_problems("ABCDEFGHJK")
        assert "16" in problem and "10" in problem

    def test_foreign_characters(self) -> None:
        problems = charset_problems(SIXTEEN + "a-")
        assert any("'-'" in p and "'a'" in p for p in problems)


class TestNormalizeCode:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [(" save10 ", "SAVE10"), ("Save-ab3d\n", "SAVE-AB3D"), ("ABC", "ABC")],
    )
    def test_strip_and_uppercase(self, text: str, expected: str) -> None:
        assert normalize_code(text) == expected


class TestMaskCode:
    def test_keeps_prefix_and_last_two(self) -> None:
        assert mask_code("SAVE-AB3D7K") == "SAVE-****7K"

    def test_hides_the_middle_of_generated_codes(self) -> None:
        code = generate_code(prefix="SAVE-", length=10)
        masked = mask_code(code)
        assert masked.startswith("SAVE-")
        assert masked.endswith(code[-2:])
        assert masked[5:-2] == "*" * 8
        assert len(masked) == len(code)

    def test_explicit_prefix_without_dash(self) -> None:
        assert mask_code("VIPAB3D7K", prefix="VIP") == "VIP****7K"

    def test_code_without_prefix(self) -> None:
        assert mask_code("AB3D7K") == "****7K"

    def test_tiny_random_part_is_fully_masked(self) -> None:
        assert mask_code("SAVE-7K") == "SAVE-**"
