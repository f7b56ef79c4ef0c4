"""Fixed-window counters kept in the database, so every worker process shares them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from campaigns.models import RateLimitBucket


@dataclass(frozen=True)
class Limit:
    max_events: int
    window_seconds: int

    def window_start(self, now: datetime) -> datetime:
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self.window_seconds, tz=now.tzinfo)

    def retry_after(self, now: datetime) -> int:
        elapsed = int(now.timestamp()) % self.window_seconds
        return max(1, self.window_seconds - elapsed)


def count_in_window(session: Session, *, subject: str, limit: Limit, now: datetime) -> int:
    value = session.exec(select(RateLimitBucket.count).where(
        RateLimitBucket.subject == subject,
        RateLimitBucket.window_start == limit.window_start(now))).first()
    return int(value or 0)


def record_event(session: Session, *, subject: str, limit: Limit, now: datetime) -> int:
    """Count one event for ``subject`` in the current window (atomic upsert); the new count."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = RateLimitBucket.__table__  # type: ignore[attr-defined]
    statement = dialect.insert(table).values(
        subject=subject, window_start=limit.window_start(now), count=1)
    statement = statement.on_conflict_do_update(
        index_elements=["subject", "window_start"],
        set_={"count": table.c.count + 1},
    ).returning(table.c.count)
    return int(session.execute(statement).scalar_one())


def prune(session: Session, *, before: datetime) -> None:
    session.execute(RateLimitBucket.__table__.delete().where(  # type: ignore[attr-defined]
        col(RateLimitBucket.window_start) < before))
