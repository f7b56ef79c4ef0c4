"""Redemption codes: generation from a look-alike-free alphabet, normalization and masking.

Codes are ``prefix + random part``. The random part is drawn with :mod:`secrets` from a charset
without characters people confuse when reading or typing (0/O, 1/I/L), and must carry at least
:data:`MIN_ENTROPY_BITS` bits so codes cannot be guessed.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Container

#: Uppercase letters and digits without the look-alikes 0, O, 1, I, L (31 characters).
DEFAULT_CHARSET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
#: Characters never used in the random part of a generated code.
LOOKALIKES = frozenset("0O1IL")
#: Minimum randomness of a generated code.
MIN_ENTROPY_BITS = 40
#: A custom charset needs at least this many distinct characters.
MIN_CHARSET_SIZE = 16
#: Characters allowed anywhere in a code (prefix included).
CODE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

_CHARSET_ALPHABET = CODE_ALPHABET - {"-"}
_PREFIX = re.compile(r"[A-Z0-9-]*")


def entropy_bits(length: int, charset: str) -> float:
    """Bits of randomness in ``length`` characters drawn uniformly from ``charset``."""
    size = len(set(charset))
    if length <= 0 or size <= 1:
        return 0.0
    return length * math.log2(size)


def has_min_entropy(length: int, charset: str, bits: int = MIN_ENTROPY_BITS) -> bool:
    """Exact check (no float rounding) that ``len(charset) ** length >= 2 ** bits``."""
    return length > 0 and len(set(charset)) ** length >= 2**bits


def min_length_for(charset: str, bits: int = MIN_ENTROPY_BITS) -> int:
    """Shortest length giving at least ``bits`` bits from ``charset`` (exact integers)."""
    size = len(set(charset))
    if size <= 1:
        raise ValueError("a charset needs at least 2 distinct characters")
    length = 1
    while size**length < 2**bits:
        length += 1
    return length


def charset_problems(charset: str) -> list[str]:
    """Why ``charset`` is unfit for generated codes (empty when it is fine)."""
    problems: list[str] = []
    foreign = sorted(set(charset) - _CHARSET_ALPHABET)
    if foreign:
        problems.append(
            "charset may only use uppercase letters A-Z and digits; remove "
            + ", ".join(repr(c) for c in foreign)
        )
    lookalikes = sorted(set(charset) & LOOKALIKES)
    if lookalikes:
        problems.append(
            "charset must not contain look-alike characters "
            + ", ".join(repr(c) for c in lookalikes)
            + " (0/O and 1/I/L are confused when codes are read or typed)"
        )
    distinct = len(set(charset))
    if distinct < MIN_CHARSET_SIZE:
        problems.append(
            f"charset needs at least {MIN_CHARSET_SIZE} distinct characters; it has {distinct}"
        )
    return problems


def _check(prefix: str, length: int, charset: str) -> None:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix may only use A-Z, 0-9 and '-': {prefix!r}")
    if length < 1:
        raise ValueError(f"length must be at least 1: {length}")
    if len(set(charset)) != len(charset) or len(charset) < 2:
        raise ValueError("charset must have at least 2 characters, none repeated")


def _encode(number: int, length: int, charset: str) -> str:
    base = len(charset)
    chars = []
    for _ in range(length):
        number, digit = divmod(number, base)
        chars.append(charset[digit])
    return "".join(chars)


def generate_code(*, prefix: str = "", length: int = 10, charset: str = DEFAULT_CHARSET) -> str:
    """One code: ``prefix`` followed by ``length`` random characters from ``charset``."""
    _check(prefix, length, charset)
    return prefix + _encode(secrets.randbelow(len(charset) ** length), length, charset)


def generate_codes(
    n: int,
    *,
    prefix: str = "",
    length: int = 10,
    charset: str = DEFAULT_CHARSET,
    existing: Container[str] = (),
) -> list[str]:
    """``n`` codes, unique within the batch and none of them in ``existing``.

    Raises ``ValueError`` when the code space cannot hold ``n`` codes, and ``RuntimeError``
    if collisions with ``existing`` keep the batch from filling (the space is nearly used up).
    """
    if n < 0:
        raise ValueError(f"n must not be negative: {n}")
    _check(prefix, length, charset)
    space = len(charset) ** length
    if n > space:
        raise ValueError(f"only {space} distinct codes exist for length {length}; asked for {n}")
    codes: dict[str, None] = {}  # insertion-ordered set
    attempts = 0
    max_attempts = 20 * n + 10_000
    randbelow = secrets.randbelow
    while len(codes) < n:
        attempts += 1
        if attempts > max_attempts:
            raise RuntimeError(
                f"generated only {len(codes)} of {n} unique codes after {max_attempts} attempts; "
                "use a longer length or a different prefix"
            )
        code = prefix + _encode(randbelow(space), length, charset)
        if code not in codes and code not in existing:
            codes[code] = None
    return list(codes)


def normalize_code(text: str) -> str:
    """How a code is stored and compared: surrounding spaces removed, uppercase."""
    return text.strip().upper()


def mask_code(code: str, *, prefix: str | None = None) -> str:
    """A code safe for logs: the prefix and the last 2 characters stay, the rest becomes ``*``.

    ``"SAVE-AB3D7K"`` -> ``"SAVE-****7K"``. Without an explicit ``prefix`` everything up to and
    including the last ``-`` counts as the prefix. Random parts of 2 characters or fewer are
    masked entirely.
    """
    if prefix is None or not code.startswith(prefix):
        prefix = code[: code.rfind("-") + 1]
    rest = code[len(prefix) :]
    if len(rest) <= 2:
        return prefix + "*" * len(rest)
    return prefix + "*" * (len(rest) - 2) + rest[-2:]
