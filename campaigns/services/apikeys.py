"""API keys: made by an admin, shown once, stored as a hash, one scope each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from campaigns.errors import FieldError, NotFound, ValidationFailed
from campaigns.models import ApiKey, ApiScope
from campaigns.security import generate_api_key, hash_api_key
from campaigns.services.audit import record_audit
from campaigns.types import utcnow


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str  # shown to the creator once, never stored


def create_api_key(session: Session, *, name: str, scope: ApiScope | str, actor: str
                   ) -> CreatedApiKey:
    try:
        scope = ApiScope(scope)
    except ValueError:
        raise ValidationFailed("the API key is not valid", [FieldError(
            ("scope",), f"unknown scope '{scope}'; use one of "
            f"{', '.join(s.value for s in ApiScope)}", "enum")]) from None
    if not name.strip() or len(name) > 100:
        raise ValidationFailed("the API key is not valid",
                               [FieldError(("name",), "give a name of 1-100 characters")])
    new = generate_api_key()
    api_key = ApiKey(name=name.strip(), prefix=new.prefix, key_hash=new.key_hash,
                     scope=scope.value, created_by=actor)
    session.add(api_key)
    session.flush()
    record_audit(session, actor=actor, action="api_key.create", entity_type="api_key",
                 entity_id=api_key.id, details={"name": api_key.name, "scope": scope.value,
                                                "prefix": new.prefix})
    return CreatedApiKey(api_key=api_key, secret=new.secret)


def find_api_key(session: Session, secret: str) -> ApiKey | None:
    """The active key with this secret, or None (unknown or revoked)."""
    api_key = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret))).first()
    if api_key is None or api_key.revoked_at is not None:
        return None
    return api_key


def revoke_api_key(session: Session, *, api_key_id: int, actor: str) -> ApiKey:
    api_key = session.get(ApiKey, api_key_id)
    if api_key is None:
        raise NotFound(f"API key {api_key_id} does not exist", code="api_key_not_found")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.add(api_key)
        session.flush()
        record_audit(session, actor=actor, action="api_key.revoke", entity_type="api_key",
                     entity_id=api_key.id, details={"prefix": api_key.prefix})
    return api_key


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))).all())
