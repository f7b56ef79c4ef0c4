"""Signing in and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import Response
from sqlmodel import Session

from campaigns.models import User
from campaigns.services.ratelimit import count_in_window, record_event
from campaigns.services.users import authenticate
from campaigns.types import utcnow
from campaigns.wording import plural
from web.deps import SessionDep
from web.ui.auth import (
    SignedIn,
    Visitor,
    VisitorDep,
    client_address,
    flash,
    login_subject,
    safe_next,
    sign_in,
    sign_out,
    ui_state,
)
from web.ui.forms import FormState
from web.ui.pages import page_router
from web.ui.rendering import render, see_other

router = page_router()


def _login_page(request: Request, form: FormState, *, status_code: int = 200) -> Response:
    return render(request, "login.html", {"form": form, "title": "Sign in"},
                  status_code=status_code)


@router.get("/login", name="ui.login")
def login_page(request: Request, visitor: VisitorDep, next: str = "") -> Response:
    if visitor.user is not None:
        return see_other(safe_next(next))
    return _login_page(request, FormState(values={"username": "", "next": safe_next(next, "")}))


@router.post("/login", name="ui.login.submit")
def login(
    request: Request, session: SessionDep, visitor: VisitorDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check the password, unless this username has failed too often from this address.

    Failures are counted per (username, address) in the database, so every worker sees
    them; the check comes before the password hash, so a blocked guesser learns nothing.
    """
    form = FormState(values={"username": username.strip(), "next": safe_next(next, "")})
    state = ui_state(request)
    limit, now = state.login_limit, utcnow()
    subject = login_subject(username, client_address(request))
    if count_in_window(session, subject=subject, limit=limit, now=now) >= limit.max_events:
        minutes = -(-limit.retry_after(now) // 60)
        form.add(None, f"Too many failed sign-ins for this username from your address. "
                 f"Try again in {plural(minutes, 'minute')}.")
        return _login_page(request, form, status_code=429)
    if not username.strip() or not password:
        if not username.strip():
            form.add("username", "Enter your username.")
        if not password:
            form.add("password", "Enter your password.")
        return _login_page(request, form, status_code=422)
    user = authenticate(session, username=username.strip(), password=password)
    if user is None:
        record_event(session, subject=subject, limit=limit, now=now)
        form.add(None, "Wrong username or password.")
        return _login_page(request, form, status_code=401)
    sign_in(request, session, user=user, visitor=visitor)
    return see_other(safe_next(next))


@router.post("/logout", name="ui.logout")
def logout(request: Request, session: SessionDep, visitor: VisitorDep, user: SignedIn
           ) -> Response:
    _sign_out(request, session, visitor, user.id)
    flash(request, "You have signed out.")
    return see_other(request.app.url_path_for("ui.login"))


def _sign_out(request: Request, session: Session, visitor: Visitor, user_id: int) -> None:
    user = session.get(User, user_id)
    assert user is not None  # the guard just found the session's active user
    sign_out(request, session, visitor=visitor, user=user)
