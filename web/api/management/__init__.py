"""The management API: channels, goals, incentives, campaigns, coupon codes and exports.

Every route needs an API key of the management scope. Lists return
``{"items": [...], "total": n}`` and take ``limit`` (at most 500) and ``offset``.
"""

from fastapi import APIRouter

from web.api.management import campaigns, channels, coupons, goals, incentives

router = APIRouter(prefix="/api/v1")
for module in (channels, goals, incentives, campaigns, coupons):
    router.include_router(module.router)

__all__ = ["router"]
