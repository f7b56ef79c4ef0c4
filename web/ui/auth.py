"""Who is asking: the session cookie, the permission check and the CSRF check of every page.

Every UI route runs :func:`guard` (declared once on the router). It resolves the
visitor from the signed session cookie, sends anonymous visitors to the sign-in page,
answers 403 to a role without the route's permission (before any data is read), and
refuses an unsafe method whose CSRF token does not match the session's.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlmodel import Session

from campaigns.models import Role, User
from campaigns.services.ratelimit import Limit
from campaigns.services.sessions import (
    SessionPolicy,
    active_session,
    end_session,
    start_session,
)
from web.api.guards import NUL
from web.deps import SessionDep
from web.ui.permissions import PUBLIC, Permission, allows
from web.ui.problems import BadInput, CsrfRejected, PermissionDenied, SignInRequired
from web.ui.settings import UiSettings, signing_key
from web.ui.signing import Signer

SESSION_COOKIE = "cs_session"
#: Before sign-in there is no session to bind a CSRF token to; this random cookie stands in.
VISIT_COOKIE = "cs_visit"
FLASH_COOKIE = "cs_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class SignedInUser:
    """The signed-in user as plain values (safe to use after the request's rollback)."""

    id: int
    username: str
    role: Role
    timezone: str

    @classmethod
    def of(cls, user: User) -> SignedInUser:
        assert user.id is not None
        return cls(id=user.id, username=user.username, role=Role(user.role),
                   timezone=user.timezone)

    def can(self, permission: Permission) -> bool:
        return allows(self.role, permission)

    @property
    def actor(self) -> str:
        return f"user:{self.username}"


@dataclass(frozen=True)
class Visitor:
    user: SignedInUser | None
    session_token: str | None
    csrf_token: str
    flash: str | None = None


@dataclass
class CookieChange:
    name: str
    value: str | None  # None deletes the cookie
    max_age: int | None = None


class UiState:
    """The UI's per-application state: settings, and the signer made on first use.

    The key is read lazily so building the app (as every API test does) never touches
    the data folder.
    """

    def __init__(self, settings: UiSettings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.policy: SessionPolicy = settings.session_policy()
        self.login_limit = Limit(max_events=settings.login_attempts,
                                 window_seconds=settings.login_window_minutes * 60)
        self._signer: Signer | None = None
        self._lock = threading.Lock()

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            with self._lock:
                if self._signer is None:
                    self._signer = Signer(signing_key(self.settings, self.data_dir))
        return self._signer


def ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


def pending_cookies(request: Request) -> list[CookieChange]:
    if not hasattr(request.state, "ui_cookies"):
        request.state.ui_cookies = []
    changes: list[CookieChange] = request.state.ui_cookies
    return changes


def set_cookie(request: Request, name: str, value: str | None, *, max_age: int | None = None
               ) -> None:
    """Set (or, with None, delete) a cookie on whatever response this request ends with."""
    changes = pending_cookies(request)
    changes[:] = [change for change in changes if change.name != name]
    changes.append(CookieChange(name, value, max_age))


def load_visitor(request: Request, session: SessionDep) -> Visitor:
    """The visitor behind the request's cookies (anonymous if none is valid)."""
    existing: Visitor | None = getattr(request.state, "ui_visitor", None)
    if existing is not None:
        return existing
    state = ui_state(request)
    signer = state.signer
    token = signer.unsign("session", request.cookies.get(SESSION_COOKIE))
    user: SignedInUser | None = None
    if token is not None:
        active = active_session(session, token=token, policy=state.policy)
        if active is None:
            token = None
            set_cookie(request, SESSION_COOKIE, None)
        else:
            user = SignedInUser.of(active.user)
    binding = token or _visit_binding(request, signer)
    flash = signer.unsign("flash", request.cookies.get(FLASH_COOKIE))
    if request.cookies.get(FLASH_COOKIE) is not None:
        set_cookie(request, FLASH_COOKIE, None)
    visitor = Visitor(user=user, session_token=token, csrf_token=signer.csrf_token(binding),
                      flash=_decode_flash(flash))
    request.state.ui_visitor = visitor
    return visitor


def _visit_binding(request: Request, signer: Signer) -> str:
    nonce = signer.unsign("visit", request.cookies.get(VISIT_COOKIE))
    if nonce is None:
        nonce = secrets.token_urlsafe(24)
        set_cookie(request, VISIT_COOKIE, signer.sign("visit", nonce))
    return f"visit:{nonce}"


async def guard(request: Request, visitor: Annotated[Visitor, Depends(load_visitor)]
                ) -> Visitor:
    """Admit the visitor to this route, or raise the problem that explains why not."""
    permission: Permission | None = request.scope["route"].permission
    if permission is not PUBLIC:
        if visitor.user is None:
            raise SignInRequired("sign in to see this page")
        if not visitor.user.can(permission):
            raise PermissionDenied(permission)
    if request.method not in SAFE_METHODS:
        await _check_csrf(request, visitor)
    await _refuse_nul_characters(request)
    return visitor


async def _refuse_nul_characters(request: Request) -> None:
    """A 400 page naming the fields if a path or query parameter, or a form field, holds a
    NUL character: PostgreSQL cannot store one in text, and would answer with an error
    after the page had done half its work."""
    names = [name for name, value in request.path_params.items() if NUL in str(value)]
    names += [name for name, value in request.query_params.multi_items()
              if NUL in name or NUL in value]
    if request.method not in SAFE_METHODS and request.headers.get(
            "content-type", "").startswith(("application/x-www-form-urlencoded",
                                            "multipart/form-data")):
        names += [name for name, value in (await request.form()).multi_items()
                  if NUL in name or (isinstance(value, str) and NUL in value)]
    if names:
        listed = ", ".join(sorted({name.replace(NUL, "\\0") for name in names}))
        raise BadInput(f"text cannot contain the NUL character (\\0); found in: {listed}")


async def _check_csrf(request: Request, visitor: Visitor) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded",
                                    "multipart/form-data")):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not sent or not secrets.compare_digest(sent, visitor.csrf_token):
        raise CsrfRejected("the form's security token is missing or does not match "
                           "this session")


def signed_in(visitor: Annotated[Visitor, Depends(guard)]) -> SignedInUser:
    if visitor.user is None:  # guard lets anonymous visitors through only on public routes
        raise SignInRequired("sign in to see this page")
    return visitor.user


VisitorDep = Annotated[Visitor, Depends(guard)]
SignedIn = Annotated[SignedInUser, Depends(signed_in)]


# --- signing in and out -------------------------------------------------------------


def sign_in(request: Request, session: Session, *, user: User, visitor: Visitor) -> None:
    """Start a new session for ``user`` (revoking the one the browser had) and set its cookie."""
    state = ui_state(request)
    started = start_session(session, user=user, replaces=visitor.session_token,
                            policy=state.policy)
    set_cookie(request, SESSION_COOKIE, state.signer.sign("session", started.token),
               max_age=int(state.policy.absolute.total_seconds()))
    set_cookie(request, VISIT_COOKIE, None)


def sign_out(request: Request, session: Session, *, visitor: Visitor, user: User) -> None:
    if visitor.session_token is not None:
        end_session(session, token=visitor.session_token, user=user)
    set_cookie(request, SESSION_COOKIE, None)


def login_subject(username: str, address: str) -> str:
    """The rate-limit bucket of sign-in failures for one username from one address."""
    return f"ui-login:{username.strip().lower()[:100]}:{address[:64]}"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after sign-in: a path on this site only, never another host."""
    if not target:
        return default
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target):
        return default
    return target


# --- flash messages ---------------------------------------------------------------------


def flash(request: Request, message: str) -> None:
    """A one-line message for the next page (after a redirect), in a signed cookie."""
    encoded = message.encode().hex()
    set_cookie(request, FLASH_COOKIE, ui_state(request).signer.sign("flash", encoded),
               max_age=120)


def _decode_flash(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value).decode()
    except ValueError:
        return None

