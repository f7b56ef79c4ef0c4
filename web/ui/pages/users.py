"""Users of the marketer UI (administrators only)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated
from zoneinfo import available_timezones

from fastapi import Form, Request
from fastapi.responses import Response
from sqlmodel import col, select

from campaigns.models import Role, User
from campaigns.services.users import create_user
from web.deps import SessionDep
from web.ui.auth import SignedIn, flash
from web.ui.forms import FormState, attempt
from web.ui.pages import page_router
from web.ui.permissions import ROLE_PERMISSIONS
from web.ui.rendering import render, see_other

router = page_router()

ROLE_DESCRIPTIONS = {
    Role.ADMIN: "everything, including users and API keys",
    Role.MARKETER: "channels, goals, campaigns, coupon batches and draws",
    Role.ANALYST: "reports and exports; read-only elsewhere",
    Role.VIEWER: "read-only",
}
assert set(ROLE_DESCRIPTIONS) == set(ROLE_PERMISSIONS)


@lru_cache(maxsize=1)
def timezones() -> list[str]:
    return sorted(available_timezones())


@router.get("/users", name="ui.users")
def users_page(request: Request, session: SessionDep, user: SignedIn) -> Response:
    users = list(session.exec(select(User).order_by(col(User.username))).all())
    return render(request, "users/list.html", {"title": "Users", "users": users})


def _user_form(request: Request, form: FormState, *, status_code: int = 200) -> Response:
    return render(request, "users/form.html", {
        "title": "New user", "form": form, "roles": ROLE_DESCRIPTIONS,
        "timezones": timezones()}, status_code=status_code)


@router.get("/users/new", name="ui.users.new")
def new_user_page(request: Request, user: SignedIn) -> Response:
    return _user_form(request, FormState(values={
        "username": "", "role": Role.VIEWER.value, "timezone": user.timezone}))


@router.post("/users", name="ui.users.create")
def create_user_submit(
    request: Request, session: SessionDep, user: SignedIn,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=500)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    timezone: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    # The password is never sent back into the form, even when something else is wrong.
    form = FormState(values={"username": username.strip(), "password": "", "role": role,
                             "timezone": timezone.strip() or "UTC"})
    created = attempt(session, form, lambda: create_user(session, actor=user.actor, user_create={
        "username": form.values["username"], "password": password, "role": role,
        "timezone": form.values["timezone"]}))
    if created is None:
        return _user_form(request, form, status_code=422)
    flash(request, f"User '{created.username}' ({created.role}) created.")
    return see_other(request.app.url_path_for("ui.users"))
