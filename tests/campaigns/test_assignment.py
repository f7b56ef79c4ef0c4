"""Deterministic, weighted, sticky assignment."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from scipy.stats import chisquare

from campaigns.assignment import bucket_of, choose_arm

SALT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


class TestSplit:
    def test_split_of_100k_ids_matches_weights(self) -> None:
        weights = [("control", 20), ("coupon", 50), ("lottery", 30)]
        counts = Counter(choose_arm(salt=SALT, customer_id=f"C{i}", arms=weights)
                         for i in range(100_000))
        observed = [counts[arm] for arm, _ in weights]
        expected = [100_000 * w / 100 for _, w in weights]
        result = chisquare(observed, expected)
        assert result.pvalue > 0.001, (observed, result)
        # and the split is really weighted, not uniform
        assert counts["coupon"] > 2 * counts["control"]

    def test_skewed_split_is_detected_by_the_same_check(self) -> None:
        counts = Counter(choose_arm(salt=SALT, customer_id=f"C{i}",
                                    arms=[("a", 50), ("b", 50)]) for i in range(100_000))
        # Against a wrong expectation the test statistic must reject.
        assert chisquare([counts["a"], counts["b"]], [55_000, 45_000]).pvalue < 1e-10

    def test_zero_weight_arm_gets_nobody(self) -> None:
        arms = [("a", 0), ("b", 100)]
        assert {choose_arm(salt=SALT, customer_id=str(i), arms=arms) for i in range(2000)} == {"b"}


class TestDeterminism:
    def test_same_inputs_same_arm(self) -> None:
        arms = [("control", 50), ("treatment", 50)]
        first = [choose_arm(salt=SALT, customer_id=f"C{i}", arms=arms) for i in range(5000)]
        second = [choose_arm(salt=SALT, customer_id=f"C{i}", arms=arms) for i in range(5000)]
        assert first == second

    def test_ids_never_move_between_runs_and_processes(self) -> None:
        code = (
            "from campaigns.assignment import choose_arm\n"
            "arms=[('control',34),('coupon',33),('lottery',33)]\n"
            f"print(','.join(choose_arm(salt={SALT!r}, customer_id=f'C{{i}}', arms=arms)"
            " for i in range(3000)))"
        )
        other = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                               text=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
                               cwd=".").stdout.strip().split(",")
        here = [choose_arm(salt=SALT, customer_id=f"C{i}",
                           arms=[("control", 34), ("coupon", 33), ("lottery", 33)])
                for i in range(3000)]
        assert other == here

    def test_documented_hash_is_pinned(self) -> None:
        # first 8 bytes of sha256(b"salt:1:C42"), big-endian: pinned so any change is noticed
        assert bucket_of(salt="salt", customer_id="C42", period=1) == 0xA662AC1EB45C7B78
        # with total weight 100 that bucket lands at point 64: third arm of 30/30/40
        assert choose_arm(salt="salt", customer_id="C42",
                          arms=[("a", 30), ("b", 30), ("c", 40)]) == "c"

    def test_salt_and_period_change_the_assignment(self) -> None:
        arms = [("a", 50), ("b", 50)]
        base = [choose_arm(salt=SALT, customer_id=str(i), arms=arms) for i in range(2000)]
        other_salt = [choose_arm(salt="other", customer_id=str(i), arms=arms) for i in range(2000)]
        next_period = [choose_arm(salt=SALT, customer_id=str(i), arms=arms, period=2)
                       for i in range(2000)]
        assert 800 < sum(x != y for x, y in zip(base, other_salt, strict=True)) < 1200
        assert 800 < sum(x != y for x, y in zip(base, next_period, strict=True)) < 1200
