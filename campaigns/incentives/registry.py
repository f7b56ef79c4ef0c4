"""The registry of incentive types, keyed by ``IncentiveType.key``.

Every module of this package that defines a module-level ``INCENTIVE_TYPE`` is registered, so
adding a type means adding one module (and its tests); nothing here changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from campaigns.errors import FieldError, InvalidIncentiveConfig
from campaigns.incentives.base import IncentiveType

_PACKAGE = __name__.rpartition(".")[0]
_NOT_TYPES = frozenset({"base", "codes", "fields", "registry"})


def _discover() -> dict[str, IncentiveType[Any]]:
    package = importlib.import_module(_PACKAGE)
    found: dict[str, IncentiveType[Any]] = {}
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module_info.name in _NOT_TYPES or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_PACKAGE}.{module_info.name}")
        incentive_type = getattr(module, "INCENTIVE_TYPE", None)
        if not isinstance(incentive_type, IncentiveType):
            continue
        if incentive_type.key in found:
            raise RuntimeError(f"two incentive types use the key {incentive_type.key!r}")
        found[incentive_type.key] = incentive_type
    return found


INCENTIVE_TYPES: dict[str, IncentiveType[Any]] = _discover()


def get_incentive_type(key: str) -> IncentiveType[Any]:
    """The type registered under ``key``; :class:`InvalidIncentiveConfig` if there is none."""
    try:
        return INCENTIVE_TYPES[key]
    except (KeyError, TypeError):
        known = ", ".join(sorted(INCENTIVE_TYPES))
        raise InvalidIncentiveConfig(
            f"unknown incentive type {key!r}",
            [
                FieldError(
                    ("type",),
                    f"unknown incentive type {key!r}; known types: {known}",
                    "unknown_incentive_type",
                )
            ],
        ) from None


def validate_incentive(type_key: str, raw_config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``raw_config`` for ``type_key`` and return its normalized JSON-able form."""
    incentive_type = get_incentive_type(type_key)
    return incentive_type.dump(incentive_type.validate(raw_config))
