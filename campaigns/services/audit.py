"""The audit trail: who changed what, when."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from campaigns.models import AuditLog
from campaigns.services.epoch import bump_config_epoch


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    details: dict[str, Any] | None = None,
    config_change: bool = True,
) -> AuditLog:
    """Record a change; configuration changes also bump the epoch so caches reload."""
    entry = AuditLog(
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        details=details or {},
    )
    session.add(entry)
    if config_change:
        bump_config_epoch(session)
    return entry
