"""Why a UI request was not served; :mod:`web.ui.rendering` turns each into a page."""

from __future__ import annotations

from web.ui.permissions import Permission


class UiProblem(Exception):
    status_code = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class SignInRequired(UiProblem):
    """Anonymous (or expired) visitor on a page that needs a user: off to the sign-in page."""

    status_code = 303


class PermissionDenied(UiProblem):
    """Signed in, but the role lacks the page's permission."""

    status_code = 403

    def __init__(self, permission: Permission) -> None:
        super().__init__(f"this page needs the '{permission.value}' permission")
        self.permission = permission


class CsrfRejected(UiProblem):
    """An unsafe request without this session's CSRF token: not sent by one of our forms."""

    status_code = 403


class BadInput(UiProblem):
    """Input no form of ours can send and no page could store (a NUL character)."""

    status_code = 400


class PageNotFound(UiProblem):
    status_code = 404
