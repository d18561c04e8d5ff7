"""`AppState`: what one running application holds (settings, store, bus, hub, caches,
connections). Its own module, outside the routes' import circle: the routes, the realtime
endpoint and the protocols import it; it imports none of them at run time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..auth.access_cache import AccessCache
from ..auth.tokens import TokenService
from ..bus import Bus
from ..settings import Settings
from ..store import Store
from .client_events import ClientEventLedger
from .deadlines import Deadlines
from .hub import Hub
from .metrics import Metrics
from .rate_limits import RateLimiter
from .request_ids import RequestIds

if TYPE_CHECKING:
    from .identities import Identities
    from .presence import Presence
    from .realtime import RealtimeConnection


@dataclass
class AppState:
    settings: Settings
    store: Store
    bus: Bus
    hub: Hub
    tokens: TokenService
    metrics: Metrics
    request_ids: RequestIds
    access: AccessCache
    client_events: ClientEventLedger
    limits: RateLimiter  # server/rate_limits.py
    connections: set[RealtimeConnection] = field(default_factory=set)
    # Open sockets per user in this process (REALTIME_MAX_SOCKETS_PER_USER; realtime.py).
    sockets_per_user: dict[int, int] = field(default_factory=dict)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    fast_polls: int = 0  # long-polls answered without ASGI (http_protocol.py; a metrics seam)
    slow_polls: int = 0  # long-polls (wait > 0) answered through Starlette (http_api.py)
    openapi: bytes | None = None  # the OpenAPI document, built on its first request (app.py)
    presence: Presence | None = None  # connected users per webinar (presence.py)
    # Tokens from the host platform (identities.py): resolves them before the synchronous
    # checks of `tokens` see them. None in states built without it (tests of other parts).
    identities: Identities | None = None
    # One loop timer for every socket's token-expiry watch (deadlines.py; realtime.py).
    deadlines: Deadlines = field(default_factory=Deadlines)

    def drain(self) -> None:
        """Shutdown has begun: close every socket with 1001 and answer every long-poll now."""
        for connection in list(self.connections):
            connection.close(1001, "server shutting down")
        self.hub.wake_waiters()
