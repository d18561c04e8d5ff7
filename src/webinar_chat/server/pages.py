"""The browser pages: `/` (log-in), `/webinars/{id}` (the chat) and `/static/…` (their files).

The files live in `webinar_chat/web/` and are served as they are (plain ES modules, no build
step). Every answer carries the security headers of SPEC §7: a Content-Security-Policy that allows
scripts, styles and connections only from this origin (plus its own ws/wss endpoint) and no inline
script at all. How the client works: docs/client.md.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from .errors import error_response

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
# A Host header goes into the CSP; anything that is not a plain host[:port] is left out.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def content_security_policy(host: str | None) -> str:
    connect = ["'self'"]
    if host and _HOST_RE.match(host):
        # 'self' does not cover ws:/wss: in every browser; name this host's socket explicitly.
        connect += [f"ws://{host}", f"wss://{host}"]
    return "; ".join((
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src {' '.join(connect)}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ))


def security_headers(request: Request, *, cache: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(request.headers.get("host")),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cache-Control": cache,
    }


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    path = WEB_DIR / name

    async def page(request: Request) -> Response:
        # Pages are tiny and name the current static files: never cache them.
        return FileResponse(path, media_type=_MEDIA_TYPES[".html"],
                            headers=security_headers(request, cache="no-store"))

    return page


def _static_files() -> dict[str, Path]:
    """The files `/static/` may serve: exactly those shipped in web/, nothing reachable by `..`."""
    files: dict[str, Path] = {}
    for path in WEB_DIR.rglob("*"):
        if path.is_file() and path.suffix in _MEDIA_TYPES and path.suffix != ".html":
            files[path.relative_to(WEB_DIR).as_posix()] = path
    return files


def page_routes() -> list[BaseRoute]:
    """Routes for the pages; `server.app.build_routes` appends them after the API."""
    files = _static_files()
    login = _page("login.html")
    chat = _page("chat.html")

    async def static(request: Request) -> Response:
        path = files.get(request.path_params["path"])
        if path is None:
            return error_response(404, "not_found", "Not found",
                                  headers=security_headers(request, cache="no-store"))
        # Revalidated on every load (ETag / Last-Modified): an upgrade is picked up at once.
        return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix],
                            headers=security_headers(request, cache="no-cache"))

    return [
        Route("/", login, methods=["GET", "HEAD"]),
        Route("/webinars/{webinar_id:int}", chat, methods=["GET", "HEAD"]),
        Route("/static/{path:path}", static, methods=["GET", "HEAD"]),
    ]
