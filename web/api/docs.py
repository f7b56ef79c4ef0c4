"""Interactive API docs served entirely from local files (works offline, no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


def vendor_path(package: str) -> str:
    """URL folder of a vendored npm package (its version is in the folder name)."""
    matches = sorted((STATIC_DIR / "vendor").glob(f"{package}-*"))
    if not matches:
        raise RuntimeError(f"{package} is not vendored under web/static/vendor; "
                           "run `npm ci && node vendor.mjs` in web/static")
    return f"/static/vendor/{matches[-1].name}"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    swagger = vendor_path("swagger-ui-dist")
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title="ChannelShift API",
        swagger_js_url=f"{swagger}/swagger-ui-bundle.js",
        swagger_css_url=f"{swagger}/swagger-ui.css",
        swagger_favicon_url=f"{swagger}/favicon-32x32.png",
    )
