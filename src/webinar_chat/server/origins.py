"""Which pages may open `/realtime`: the Origin allow-list (docs/realtime.md, "Origin").

A browser sends the page's origin with every WebSocket handshake, and it cannot be forged by the
page. Allowed: this server's own pages (the Origin's host and port equal the request's `Host`),
the origin of `PUBLIC_URL`, and `REALTIME_ALLOWED_ORIGINS` ("*": any). A handshake without an
Origin header is not from a browser page (the SDK, bots, curl) and is allowed: cross-site
WebSocket hijacking is a browser attack, and every socket still needs a valid token to see
anything.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Origin = tuple[str, str, int]  # (scheme, host, port), lower case, port made explicit


def parse_origin(value: str) -> Origin | None:
    """`scheme://host[:port]` → (scheme, host, port); None for anything else ("null", paths)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username is not None:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def _host_port(host_header: str, default_port: int) -> tuple[str, int] | None:
    """The `Host` header as (host, port); a Host without a port means `default_port`."""
    try:
        parts = urlsplit("//" + host_header.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else default_port


@dataclass(frozen=True)
class OriginPolicy:
    allowed: frozenset[Origin]
    any_origin: bool = False

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser page (see the module's docstring)
        if self.any_origin:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False  # "null" (sandboxed frames, file:) or garbage
        if parsed in self.allowed:
            return True
        # Same origin: the page came from the host:port this request was sent to.
        return host is not None and _host_port(host, parsed[2]) == parsed[1:]


@functools.lru_cache(maxsize=8)
def origin_policy(public_url: str, allowed_origins: tuple[str, ...]) -> OriginPolicy:
    """The policy of these settings (`Settings.public_url`, `.realtime_allowed_origins`).
    Raises ValueError for an entry that is not an origin (create_app calls it at start)."""
    allowed: set[Origin] = set()
    for value in allowed_origins:
        if value == "*":
            return OriginPolicy(frozenset(), any_origin=True)
        parsed = parse_origin(value)
        if parsed is None:
            raise ValueError("REALTIME_ALLOWED_ORIGINS: comma-separated scheme://host[:port] "
                             f"origins or *, not {value!r}")
        allowed.add(parsed)
    if public_url:
        parsed = parse_origin(public_url)
        if parsed is not None:  # PUBLIC_URL itself is checked by pages.realtime_origin
            allowed.add(parsed)
    return OriginPolicy(frozenset(allowed))
