"""Amounts as people read them: minor units with their currency, written the CLDR way by
Babel (``500 EUR`` -> ``€5.00``, ``1234 JPY`` -> ``¥1,234``).

This is the one formatter for amounts a marketer or a customer reads (pages, offer texts);
a currency's number of decimals comes from ISO 4217 through Babel.
"""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision

#: The language of every text ChannelShift writes.
LOCALE = "en"
#: The currency of a campaign made without naming one (the ``campaign.currency`` default).
DEFAULT_CURRENCY = "EUR"


def format_money(minor: int, currency: str) -> str:
    """Integer minor units with the currency's symbol or code: ``-123456 EUR`` -> ``-€1,234.56``."""
    digits = get_currency_precision(currency)
    return format_currency(Decimal(minor).scaleb(-digits), currency, locale=LOCALE)
