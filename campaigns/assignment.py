"""Deterministic, sticky arm assignment.

The hash
--------
``bucket = int.from_bytes(sha256(f"{salt}:{period}:{customer_id}".encode("utf-8"))[:8], "big")``

The first 8 bytes of SHA-256, read as an unsigned big-endian 64-bit integer, give a
number uniform on ``[0, 2**64)``. It is scaled to ``[0, total_weight)`` by
``(bucket * total_weight) >> 64`` (exact integer arithmetic, no modulo bias worth
naming, no floats) and the arm is the first whose cumulative weight exceeds it, with
arms ordered by their position. SHA-256 and UTF-8 are the same on every machine and
in every language, so any system can recompute an assignment from the salt, the
allocation period and the customer's external id.

Assignment is recorded at first exposure; the stored row, not the hash, is what
counts afterwards. Editing weights while customers are exposed starts a new allocation
period (``period`` enters the hash), so exposed customers keep their arm.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import TypeVar

ArmT = TypeVar("ArmT")


def new_salt() -> str:
    return secrets.token_hex(16)


def bucket_of(*, salt: str, customer_id: str, period: int = 1) -> int:
    """The 64-bit hash bucket of a customer in a campaign's allocation period."""
    digest = hashlib.sha256(f"{salt}:{period}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def choose_arm(
    *, salt: str, customer_id: str, arms: Sequence[tuple[ArmT, int]], period: int = 1
) -> ArmT:
    """Pick an arm from ``(arm, weight)`` pairs (in position order) for a customer."""
    total = sum(weight for _, weight in arms)
    if total <= 0:
        raise ValueError("arm weights must add up to more than zero")
    if any(weight < 0 for _, weight in arms):
        raise ValueError("arm weights cannot be negative")
    point = (bucket_of(salt=salt, customer_id=customer_id, period=period) * total) >> 64
    cumulative = 0
    for arm, weight in arms:
        cumulative += weight
        if point < cumulative:
            return arm
    raise AssertionError("unreachable: point is always below the total weight")
