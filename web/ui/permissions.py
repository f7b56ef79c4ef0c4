"""Who may do what in the marketer UI: one table from route to permission, one from role.

Every UI route is built by :class:`web.ui.rendering.UiRoute`, which looks its name up in
:data:`ROUTE_PERMISSIONS` when the route is declared: a route missing from the table
fails at import, so no page can be added without deciding who may see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from campaigns.models import Role


class Permission(StrEnum):
    VIEW = "view"  # read channels, goals, campaigns and the dashboard
    CONFIGURE = "configure"  # channels, costs, goals, campaigns, coupon batches, draws
    EXPORT = "export"  # download reports and exports
    ADMINISTER = "administer"  # users and API keys


#: A route anyone may open, signed in or not (the sign-in page itself).
PUBLIC = None

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MARKETER: frozenset({Permission.VIEW, Permission.CONFIGURE}),
    Role.ANALYST: frozenset({Permission.VIEW, Permission.EXPORT}),
    Role.VIEWER: frozenset({Permission.VIEW}),
}

ROUTE_PERMISSIONS: Mapping[str, Permission | None] = {
    "ui.login": PUBLIC,
    "ui.login.submit": PUBLIC,
    "ui.logout": Permission.VIEW,
    "ui.dashboard": Permission.VIEW,
    "ui.dashboard.headline": Permission.VIEW,
    "ui.channels": Permission.VIEW,
    "ui.channels.new": Permission.CONFIGURE,
    "ui.channels.create": Permission.CONFIGURE,
    "ui.channels.edit": Permission.CONFIGURE,
    "ui.channels.update": Permission.CONFIGURE,
    "ui.channels.costs": Permission.CONFIGURE,
    "ui.channels.costs.save": Permission.CONFIGURE,
    "ui.goals": Permission.VIEW,
    "ui.goals.new": Permission.CONFIGURE,
    "ui.goals.create": Permission.CONFIGURE,
    "ui.users": Permission.ADMINISTER,
    "ui.users.new": Permission.ADMINISTER,
    "ui.users.create": Permission.ADMINISTER,
    "ui.api_keys": Permission.ADMINISTER,
    "ui.api_keys.new": Permission.ADMINISTER,
    "ui.api_keys.create": Permission.ADMINISTER,
    "ui.api_keys.revoke_confirm": Permission.ADMINISTER,
    "ui.api_keys.revoke": Permission.ADMINISTER,
    # campaign pages, live report, coupon batches, draws (web/ui/pages/campaigns.py, reports.py)
    "ui.campaigns": Permission.VIEW,
    "ui.campaigns.show": Permission.VIEW,
    "ui.campaigns.status_confirm": Permission.CONFIGURE,
    "ui.campaigns.status": Permission.CONFIGURE,
    "ui.campaigns.edit": Permission.CONFIGURE,
    "ui.campaigns.update": Permission.CONFIGURE,
    "ui.campaigns.coupons.generate": Permission.CONFIGURE,
    "ui.campaigns.coupons.csv": Permission.CONFIGURE,  # unissued codes are redeemable
    "ui.campaigns.draws": Permission.VIEW,
    "ui.campaigns.draws.run": Permission.CONFIGURE,
    "ui.campaigns.report": Permission.VIEW,
    "ui.campaigns.report.live": Permission.VIEW,
    "ui.campaigns.report.csv": Permission.EXPORT,
    "ui.campaigns.report.xlsx": Permission.EXPORT,
    "ui.campaigns.report.html": Permission.EXPORT,
    # channel economics overview (web/ui/pages/economics.py)
    "ui.economics": Permission.VIEW,
    "ui.economics.csv": Permission.EXPORT,
    "ui.economics.xlsx": Permission.EXPORT,
    # the campaign wizard (web/ui/pages/wizard.py)
    "ui.wizard": Permission.CONFIGURE,
    "ui.wizard.step": Permission.CONFIGURE,
    "ui.wizard.audience_count": Permission.CONFIGURE,
}


def route_permission(route_name: str) -> Permission | None:
    """The permission a UI route needs (None: public); unknown names are a programming error."""
    try:
        return ROUTE_PERMISSIONS[route_name]
    except KeyError:
        raise LookupError(f"UI route '{route_name}' is missing from ROUTE_PERMISSIONS in "
                          "web/ui/permissions.py: decide who may open it") from None


def allows(role: Role | str, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[Role(role)]


def roles_with(permission: Permission) -> list[Role]:
    """The roles holding ``permission``, for telling a denied user whom to ask."""
    return [role for role, granted in ROLE_PERMISSIONS.items() if permission in granted]
