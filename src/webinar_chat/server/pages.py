"""The browser pages: `/` (log-in), `/webinars/{id}` (the chat) and `/static/…` (their files).

The files live in `webinar_chat/web/` and are served as they are (plain ES modules, no build
step). Every answer carries the security headers of SPEC §7: a Content-Security-Policy that allows
scripts, styles and connections only from this origin (plus the realtime origin of the configured
PUBLIC_URL — never one taken from the request's Host header) and no inline script at all. How
the client works: docs/client.md.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from ..settings import Settings
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
_FRAME_SOURCE = re.compile(r"^(?:'self'|'none'|https://[A-Za-z0-9*.-]+(?::\d{1,5})?)$")


def realtime_origin(public_url: str, *, development: bool) -> str | None:
    """The socket origin of PUBLIC_URL: `https://host` → `wss://host`; `http://host` only in
    development (→ `ws://host`). Never from the request's Host header: a client can send any."""
    if not public_url:
        return None
    parts = urlsplit(public_url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"PUBLIC_URL must be https://host[:port], not {public_url!r}")
    if parts.scheme == "http" and not development:
        raise ValueError("PUBLIC_URL must be https:// (http:// only with "
                         "WEBINAR_CHAT_ENV=development)")
    return ("wss://" if parts.scheme == "https" else "ws://") + parts.netloc


def frame_ancestors(value: str) -> str:
    sources = value.split()
    bad = [s for s in sources if not _FRAME_SOURCE.match(s)]
    if not sources or bad or ("'none'" in sources and len(sources) > 1):
        raise ValueError(f"FRAME_ANCESTORS: 'none', 'self' or https:// origins, not {value!r}")
    return " ".join(sources)


def content_security_policy(settings: Settings) -> str:
    """Raises ValueError for a PUBLIC_URL or FRAME_ANCESTORS that cannot be used (create_app
    checks at start-up)."""
    return _csp(settings.public_url, settings.development, settings.frame_ancestors)


@functools.lru_cache(maxsize=8)
def _csp(public_url: str, development: bool, ancestors: str) -> str:
    # 'self' covers this origin's ws:/wss: too (CSP Level 3); PUBLIC_URL names the public one
    # when a proxy in front makes it differ from what the browser calls 'self'.
    connect = ["'self'"]
    origin = realtime_origin(public_url, development=development)
    if origin:
        connect.append(origin)
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
        f"frame-ancestors {frame_ancestors(ancestors)}",
    ))


def security_headers(settings: Settings, *, cache: str) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cache-Control": cache,
    }
    if settings.frame_ancestors.split() == ["'none'"]:
        headers["X-Frame-Options"] = "DENY"  # (older browsers; it cannot name allowed hosts)
    return headers


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.chat.settings
    return settings


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    path = WEB_DIR / name

    async def page(request: Request) -> Response:
        # Pages are tiny and name the current static files: never cache them.
        return FileResponse(path, media_type=_MEDIA_TYPES[".html"],
                            headers=security_headers(_settings(request), cache="no-store"))

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
                                  headers=security_headers(_settings(request), cache="no-store"))
        # Revalidated on every load (ETag / Last-Modified): an upgrade is picked up at once.
        return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix],
                            headers=security_headers(_settings(request), cache="no-cache"))

    return [
        Route("/", login, methods=["GET", "HEAD"]),
        Route("/webinars/{webinar_id:int}", chat, methods=["GET", "HEAD"]),
        Route("/static/{path:path}", static, methods=["GET", "HEAD"]),
    ]
