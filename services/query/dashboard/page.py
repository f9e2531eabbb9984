"""``GET /dashboard``: one HTML page, a script and a stylesheet, package data.

The page and its two assets are served without an API key; the data they
show is not. They hold no data and no key (a configured key is never written
into them), so there is nothing to guard, and a browser cannot add a header
to the request for a page or a ``<script src>`` anyway. The script takes the
key from the page's address, ``#key=...`` (a fragment: never sent to the
server, so never in access logs, proxies or Referer headers) or ``?key=...``,
keeps it in the tab's sessionStorage, removes it from the address bar, and
sends it as ``X-API-Key`` on every data request; without one, a 401 makes the
page ask for it.

Every URL in the page is relative, so it also works under a path prefix (a
reverse proxy, or Dapr service invocation's ``/v1.0/invoke/query/method/``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Response

# Route -> (file beside this module, media type). One route per file, not a
# path parameter: nothing a client sends is ever turned into a file name.
FILES = {
    "/dashboard": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

# Defence in depth behind the script's escaping: no inline script, no script
# or style from elsewhere, no requests to other origins (the page must work
# offline anyway: no CDN, no map tiles), no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # A key given as ?key= must not leave in a Referer header.
    "Referrer-Policy": "no-referrer",
    # Small files: revalidating each load is cheap and shows a new version at once.
    "Cache-Control": "no-cache",
}


def _serve(content: bytes, media_type: str) -> Callable[[], Response]:
    # A handler without parameters: FastAPI would read any as query parameters.
    def serve() -> Response:
        return Response(content, media_type=media_type, headers=HEADERS)

    return serve


def page_router() -> APIRouter:
    """The page and its assets, read once: a file missing from the install
    fails at start, not on the first visit."""
    api = APIRouter(include_in_schema=False)
    for route, (name, media_type) in FILES.items():
        content = (Path(__file__).parent / name).read_bytes()
        api.add_api_route(route, _serve(content, media_type), methods=["GET"], name=f"dashboard:{name}")
    return api
