"""Interactive API docs served entirely from local files (works offline, no CDN).

The page carries no inline script: Swagger UI is started by ``js/docs.js``, so the
Content-Security-Policy every page gets (``script-src 'self'``) holds here too.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
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


@lru_cache(maxsize=64)
def static_url(path: str) -> str:
    """URL of one of our own static files, with a content hash so caches refresh on change."""
    content = (STATIC_DIR / path).read_bytes()
    return f"/static/{path}?v={hashlib.sha256(content).hexdigest()[:12]}"


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>ChannelShift API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" href="{favicon}">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{bundle}"></script>
  <script src="{start}"></script>
</body>
</html>
"""


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    swagger = vendor_path("swagger-ui-dist")
    urls = {"css": f"{swagger}/swagger-ui.css", "favicon": f"{swagger}/favicon-32x32.png",
            "bundle": f"{swagger}/swagger-ui-bundle.js", "start": static_url("js/docs.js"),
            "openapi": request.app.openapi_url or "/openapi.json"}
    return HTMLResponse(DOCS_PAGE.format(**{name: escape(url) for name, url in urls.items()}))
