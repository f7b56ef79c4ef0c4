"""Marketer-UI users: argon2id password hashes, one role each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel import Session, select

from campaigns.errors import Conflict, FieldError, NotFound, ValidationFailed
from campaigns.models import User
from campaigns.schemas import UserCreate
from campaigns.security import hash_password, needs_rehash, verify_password
from campaigns.services.audit import record_audit
from campaigns.validation import parse_input


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed("the user is not valid", [
            FieldError(("timezone",), f"unknown time zone '{name}' (e.g. Europe/Paris)",
                       "timezone")]) from None


def create_user(session: Session, *, user_create: UserCreate | Mapping[str, Any],
                actor: str) -> User:
    data = parse_input(UserCreate, user_create, what="user")
    _check_timezone(data.timezone)
    if session.exec(select(User).where(User.username == data.username)).first():
        raise Conflict(f"user '{data.username}' already exists",
                       [FieldError(("username",), "this username is taken", "duplicate")])
    user = User(username=data.username, password_hash=hash_password(data.password),
                role=data.role.value, timezone=data.timezone)
    session.add(user)
    session.flush()
    record_audit(session, actor=actor, action="user.create", entity_type="user",
                 entity_id=user.id, details={"username": data.username, "role": data.role.value})
    return user


def user_by_name(session: Session, username: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFound(f"user '{username}' does not exist", code="user_not_found")
    return user


def set_password(session: Session, *, user: User, password: str, actor: str) -> None:
    parse_input(UserCreate, {"username": user.username, "password": password, "role": user.role})
    user.password_hash = hash_password(password)
    session.add(user)
    session.flush()
    record_audit(session, actor=actor, action="user.password", entity_type="user",
                 entity_id=user.id)


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    """The active user with these credentials, or None. Rehashes outdated hashes."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        # Hash anyway so an unknown username takes as long as a wrong password.
        verify_password(hash_password("x" * 12), password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.add(user)
    return user
