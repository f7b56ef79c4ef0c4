"""Marketer-UI sign-in sessions: a random token in the browser, only its hash in the database.

Sessions live on the server rather than in the cookie alone so that signing out, an
idle timeout or an admin deactivating a user ends them at once, on every worker. The
token carries 256 random bits, so a fast SHA-256 is a safe way to store it (unlike a
password, it cannot be guessed from a dictionary) and looking it up costs one indexed
query per page.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from campaigns.models import UiSession, User
from campaigns.services.audit import record_audit
from campaigns.types import utcnow


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lives: ``idle`` after the last request, ``absolute`` in all."""

    idle: timedelta = timedelta(hours=2)
    absolute: timedelta = timedelta(hours=12)
    #: ``last_seen_at`` is written at most this often, so reading pages is rarely a write.
    touch_interval: timedelta = timedelta(minutes=1)
    #: revoked and expired sessions are deleted this long after they ended (kept for
    #: looking into an incident, not forever)
    keep_ended: timedelta = timedelta(days=7)


DEFAULT_POLICY = SessionPolicy()


@dataclass(frozen=True)
class StartedSession:
    ui_session: UiSession
    token: str  # handed to the browser once; only its hash is stored


@dataclass(frozen=True)
class ActiveSession:
    ui_session: UiSession
    user: User


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_actor(user: User) -> str:
    """How the audit log names a person acting through the UI."""
    return f"user:{user.username}"


def start_session(session: Session, *, user: User, replaces: str | None = None,
                  now: datetime | None = None, policy: SessionPolicy = DEFAULT_POLICY
                  ) -> StartedSession:
    """Sign ``user`` in with a fresh token.

    Whatever session token the browser held before (``replaces``) is revoked: a token
    planted in the browser before sign-in (session fixation) is worthless afterwards.
    The user's long-dead sessions are pruned here, where it costs one indexed DELETE.
    """
    now = now or utcnow()
    if replaces:
        revoke_session(session, token=replaces, now=now)
    assert user.id is not None
    _prune_user_sessions(session, user_id=user.id, now=now, policy=policy)
    token = secrets.token_urlsafe(32)
    ui_session = UiSession(token_hash=token_hash(token), user_id=user.id, created_at=now,
                           last_seen_at=now, expires_at=now + policy.absolute)
    session.add(ui_session)
    session.flush()
    record_audit(session, actor=user_actor(user), action="user.sign_in", entity_type="user",
                 entity_id=user.id, details={"session_id": ui_session.id},
                 config_change=False)
    return StartedSession(ui_session=ui_session, token=token)


def active_session(session: Session, *, token: str, now: datetime | None = None,
                   policy: SessionPolicy = DEFAULT_POLICY) -> ActiveSession | None:
    """The live session behind ``token`` and its user, or None.

    None when the token is unknown or revoked, past its absolute expiry, idle for longer
    than the policy allows, or its user has been deactivated. A live session's
    ``last_seen_at`` moves forward (at most once per ``touch_interval``).
    """
    now = now or utcnow()
    row = session.exec(
        select(UiSession, User).join(User, col(User.id) == UiSession.user_id)
        .where(UiSession.token_hash == token_hash(token))).first()
    if row is None:
        return None
    ui_session, user = row
    if (ui_session.revoked_at is not None or ui_session.expires_at <= now
            or ui_session.last_seen_at + policy.idle <= now or not user.active):
        return None
    if now - ui_session.last_seen_at >= policy.touch_interval:
        ui_session.last_seen_at = now
        session.add(ui_session)
        session.flush()
    return ActiveSession(ui_session=ui_session, user=user)


def revoke_session(session: Session, *, token: str, now: datetime | None = None) -> bool:
    """Revoke the session behind ``token``; whether a live one was revoked."""
    result = session.execute(
        update(UiSession)
        .where(col(UiSession.token_hash) == token_hash(token),
               col(UiSession.revoked_at).is_(None))
        .values(revoked_at=now or utcnow()))
    return bool(getattr(result, "rowcount", 0))


def end_session(session: Session, *, token: str, user: User,
                now: datetime | None = None) -> bool:
    """Sign out: revoke the session and record it in the audit trail."""
    revoked = revoke_session(session, token=token, now=now)
    if revoked:
        record_audit(session, actor=user_actor(user), action="user.sign_out",
                     entity_type="user", entity_id=user.id, config_change=False)
    return revoked


def revoke_user_sessions(session: Session, *, user_id: int, now: datetime | None = None
                         ) -> int:
    """Sign a user out everywhere (after a password change or deactivation); how many."""
    result = session.execute(
        update(UiSession)
        .where(col(UiSession.user_id) == user_id, col(UiSession.revoked_at).is_(None))
        .values(revoked_at=now or utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def _prune_user_sessions(session: Session, *, user_id: int, now: datetime,
                         policy: SessionPolicy) -> None:
    cutoff = now - policy.keep_ended
    session.execute(
        delete(UiSession).where(
            col(UiSession.user_id) == user_id,
            or_(col(UiSession.expires_at) < cutoff, col(UiSession.revoked_at) < cutoff,
                col(UiSession.last_seen_at) < cutoff - policy.idle)))
