"""HMAC signatures for the UI's cookies and CSRF tokens, one purpose per use.

Each value is signed for a named purpose, so a signature made for one use (a flash
message) can never be replayed as another (a session cookie).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, purpose: str, value: str) -> str:
        """``value.signature``; ``value`` must not contain a dot."""
        if "." in value:
            raise ValueError("a signed value cannot contain '.'")
        return f"{value}.{self.mac(purpose, value)}"

    def unsign(self, purpose: str, signed: str | None) -> str | None:
        """The value if the signature is good, else None (tampered, truncated or absent)."""
        if not signed:
            return None
        value, _, signature = signed.rpartition(".")
        if not value or not hmac.compare_digest(signature, self.mac(purpose, value)):
            return None
        return value

    def csrf_token(self, binding: str) -> str:
        """The synchronizer token of a session (or pre-sign-in visit): derived, not stored."""
        return self.mac("csrf", binding)

    def csrf_valid(self, binding: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(binding))
