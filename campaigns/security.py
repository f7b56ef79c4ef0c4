"""Password hashing (argon2id) and API key secrets (stored as SHA-256 only)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

API_KEY_PREFIX = "cs"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made key: ``secret`` is shown once; only ``key_hash`` is stored."""

    secret: str
    prefix: str
    key_hash: str


def hash_api_key(secret: str) -> str:
    # API keys carry 256 bits of randomness, so a fast hash is safe here (unlike passwords)
    # and lets every request be authenticated without a slow KDF on the hot path.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_api_key() -> NewApiKey:
    prefix = f"{API_KEY_PREFIX}_{secrets.token_hex(4)}"
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    return NewApiKey(secret=secret, prefix=prefix, key_hash=hash_api_key(secret))


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
