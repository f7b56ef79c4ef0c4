"""Counts and articles in the texts people read (pages, messages, offer texts): one rule for
"1 point" and "2 points", "a storefront key" and "an analytics key"."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` and the noun that agrees with it: ``1 point``, ``1,000 points``, ``2 entries``.

    ``plural_form`` when the plural is not the singular with an ``s`` (``entry``/``entries``).
    """
    noun = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {noun}"


def with_article(phrase: str) -> str:
    """``phrase`` after the indefinite article its sound takes: ``an analytics``, ``a draft``.

    By its first letter, which holds for the words the application puts there (scopes,
    statuses, incentive types).
    """
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"
