"""Reading what a marketer types into the wizard: percentages, multipliers and local times.

Money goes through :func:`web.ui.forms.parse_money`. Each parser here returns the exact
value or puts a message on the field; none of them rounds, and none accepts a float.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation

from web.ui.forms import FormState

#: Basis points in 100% and in a multiplier of 1x.
BP_SCALE = 10_000
#: How a datetime-local input writes a time (and reads one back).
LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_percent_bp(text: str, *, name: str, form: FormState) -> int | None:
    """A percentage typed as "12.5" (or "12.5%") as basis points (1250), exactly.

    The range is left to the caller (an incentive type says what it accepts, in its words).
    """
    value = _decimal(text.strip().removesuffix("%").strip())
    if value is None:
        form.add(name, f"'{text}' is not a number; write a percentage like 12.5.")
        return None
    basis_points = value * 100
    if basis_points != basis_points.to_integral_value():
        form.add(name, "Use at most 2 decimals (0.01% is the smallest step).")
        return None
    return int(basis_points)


def parse_multiplier_bp(text: str, *, name: str, form: FormState) -> int | None:
    """A multiplier typed as "2" or "1.5x" as basis points of 1x (20000, 15000), exactly."""
    value = _decimal(text.strip().lower().removesuffix("x").strip())
    if value is None:
        form.add(name, f"'{text}' is not a number; write a multiplier like 2 or 1.5.")
        return None
    basis_points = value * BP_SCALE
    if basis_points != basis_points.to_integral_value():
        form.add(name, "Use at most 4 decimals.")
        return None
    return int(basis_points)


def format_percent_bp(basis_points: int) -> str:
    """1250 -> "12.5", 1000 -> "10": how a percentage field shows basis points."""
    return _plain(Decimal(basis_points) / 100)


def format_multiplier_bp(basis_points: int) -> str:
    """20000 -> "2", 15000 -> "1.5"."""
    return _plain(Decimal(basis_points) / BP_SCALE)


def _plain(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_local_time(text: str, *, zone: tzinfo, name: str, form: FormState,
                     required: bool = True) -> datetime | None:
    """A datetime-local value typed in the user's zone, as an aware UTC time.

    A wall-clock time that does not exist in the zone (skipped when clocks go forward) is
    refused rather than silently moved by an hour.
    """
    text = text.strip()
    if not text:
        if required:
            form.add(name, "Enter a date and time.")
        return None
    try:
        naive = datetime.strptime(text, LOCAL_INPUT_FORMAT)  # noqa: DTZ007 (zone added below)
    except ValueError:
        form.add(name, f"'{text}' is not a date and time; use the picker or write "
                 "2026-03-01T09:00.")
        return None
    local = naive.replace(tzinfo=zone)
    moment = local.astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) != naive:
        form.add(name, f"{naive:%Y-%m-%d %H:%M} does not exist in {zone} (the clocks skip "
                 "it); choose another time.")
        return None
    return moment


def format_local_time(moment: datetime | None, zone: tzinfo) -> str:
    """An aware time as the value of a datetime-local input in the user's zone."""
    return "" if moment is None else moment.astimezone(zone).strftime(LOCAL_INPUT_FORMAT)
