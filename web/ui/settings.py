"""Settings of the marketer UI, and the key its cookies are signed with.

The key comes from ``CHANNELSHIFT_SECRET_KEY`` (set it, the same on every host, in
production). Without it, a random key is made once and kept in the data folder, so
the embedded demo needs no configuration and a restart signs nobody out.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaigns.services.sessions import SessionPolicy

KEY_FILE_NAME = "secret_key"
MIN_KEY_LENGTH = 32


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHANNELSHIFT_", env_file=".env", extra="ignore")

    secret_key: SecretStr | None = Field(
        default=None, min_length=MIN_KEY_LENGTH,
        description="Key for signing UI cookies (at least 32 characters). Unset: a random "
        "key kept in data_dir/secret_key.")
    session_idle_minutes: int = Field(default=120, ge=1, le=7 * 24 * 60,
                                      description="Sign out after this long without a request.")
    session_max_hours: int = Field(default=12, ge=1, le=30 * 24,
                                   description="Sign out this long after signing in, whatever.")
    login_attempts: int = Field(
        default=5, ge=1, le=1000,
        description="Failed sign-ins allowed per username and address in one window; "
        "further attempts are refused until the window ends.")
    login_window_minutes: int = Field(default=15, ge=1, le=24 * 60,
                                      description="Length of that window.")

    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(idle=timedelta(minutes=self.session_idle_minutes),
                             absolute=timedelta(hours=self.session_max_hours))


def signing_key(settings: UiSettings, data_dir: Path) -> bytes:
    """The configured key, else the one kept in ``data_dir`` (made on first use)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return _stored_key(data_dir / KEY_FILE_NAME)


def _stored_key(path: Path) -> bytes:
    """Read the key file, creating it atomically if it does not exist yet.

    Several worker processes may start at once: each writes a complete candidate to its
    own temporary file and hard-links it into place; the link fails for all but the first,
    and everyone then reads the winner's key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            # Fails if another process was first; its key is then the one everyone uses.
            with contextlib.suppress(FileExistsError):
                os.link(candidate, path)
        finally:
            candidate.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise RuntimeError(f"the UI signing key in {path} is shorter than {MIN_KEY_LENGTH} "
                           "characters; delete the file to make a new one (everyone is "
                           "signed out) or set CHANNELSHIFT_SECRET_KEY")
    return key.encode()
