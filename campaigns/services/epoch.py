"""The configuration epoch: one counter that tells worker processes to reload caches."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, select

from campaigns.models import ConfigEpoch


def read_config_epoch(session: Session) -> int:
    value = session.exec(select(ConfigEpoch.value).where(ConfigEpoch.id == 1)).first()
    return int(value or 0)


def bump_config_epoch(session: Session) -> None:
    """Increment the epoch inside the caller's transaction (visible when it commits)."""
    session.execute(update(ConfigEpoch).where(ConfigEpoch.id == 1)  # type: ignore[arg-type]
                    .values(value=ConfigEpoch.value + 1))
