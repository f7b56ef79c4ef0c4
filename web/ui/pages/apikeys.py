"""API keys (administrators only): create with a scope, show the secret once, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Path, Request
from fastapi.responses import Response
from sqlmodel import Session

from campaigns.models import ApiKey, ApiScope
from campaigns.services.apikeys import create_api_key, list_api_keys, revoke_api_key
from web.deps import SessionDep
from web.ui.auth import SignedIn, flash
from web.ui.forms import FormState, attempt
from web.ui.pages import page_router
from web.ui.problems import PageNotFound
from web.ui.rendering import render, see_other

router = page_router()

ApiKeyId = Annotated[int, Path(ge=1)]
SCOPES = {
    ApiScope.STOREFRONT: "storefronts and channel systems: offers, redemptions, events",
    ApiScope.MANAGEMENT: "scripts that configure channels, goals and campaigns",
    ApiScope.ANALYTICS: "analysts' tools: reports and exports",
}


def _api_key(session: Session, api_key_id: int) -> ApiKey:
    api_key = session.get(ApiKey, api_key_id)
    if api_key is None:
        raise PageNotFound(f"There is no API key {api_key_id}.")
    return api_key


@router.get("/api-keys", name="ui.api_keys")
def api_keys_page(request: Request, session: SessionDep, user: SignedIn) -> Response:
    return render(request, "api_keys/list.html", {"title": "API keys",
                                                  "api_keys": list_api_keys(session)})


def _key_form(request: Request, form: FormState, *, status_code: int = 200) -> Response:
    return render(request, "api_keys/form.html", {"title": "New API key", "form": form,
                                                  "scopes": SCOPES}, status_code=status_code)


@router.get("/api-keys/new", name="ui.api_keys.new")
def new_api_key_page(request: Request, user: SignedIn) -> Response:
    return _key_form(request, FormState(values={"name": "", "scope": ""}))


@router.post("/api-keys", name="ui.api_keys.create")
def create_api_key_submit(
    request: Request, session: SessionDep, user: SignedIn,
    name: Annotated[str, Form(max_length=500)] = "",
    scope: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Create the key and show its secret on this response only (never stored, never again)."""
    form = FormState(values={"name": name.strip(), "scope": scope})
    if not scope:
        form.add("scope", "Choose what the key may do.")
        return _key_form(request, form, status_code=422)
    created = attempt(session, form, lambda: create_api_key(
        session, name=form.values["name"], scope=scope, actor=user.actor))
    if created is None:
        return _key_form(request, form, status_code=422)
    return render(request, "api_keys/created.html", {
        "title": "API key created", "api_key": created.api_key, "secret": created.secret},
        status_code=201)


@router.get("/api-keys/{api_key_id}/revoke", name="ui.api_keys.revoke_confirm")
def revoke_api_key_page(request: Request, session: SessionDep, user: SignedIn,
                        api_key_id: ApiKeyId) -> Response:
    """The confirmation page (the list opens the same question in a dialog when it can)."""
    return render(request, "api_keys/revoke.html", {
        "title": "Revoke API key", "api_key": _api_key(session, api_key_id)})


@router.post("/api-keys/{api_key_id}/revoke", name="ui.api_keys.revoke")
def revoke_api_key_submit(request: Request, session: SessionDep, user: SignedIn,
                          api_key_id: ApiKeyId) -> Response:
    api_key = _api_key(session, api_key_id)
    was_revoked = api_key.revoked_at is not None
    revoke_api_key(session, api_key_id=api_key_id, actor=user.actor)
    flash(request, f"Key {api_key.prefix} was already revoked." if was_revoked else
          f"Key {api_key.prefix} ({api_key.name}) revoked; callers using it are refused "
          "within seconds.")
    return see_other(request.app.url_path_for("ui.api_keys"))
