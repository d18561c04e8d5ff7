"""Running the app under uvicorn: the one configuration the CLI, the tests and the benchmarks use.

`build_server(settings)` is the whole production set-up of a server — logging included — and
`webinar-chat serve` is `build_server` + `tune_gc` + `run`; every test server is built by the same
function (tests/helpers.py), so a configuration that breaks production breaks the tests first.

`ChatServer` drains the application before uvicorn's own shutdown: long-polls in progress are
answered at once (empty) instead of being cancelled after the grace period, and sockets are closed
with 1001 "server shutting down" so clients reconnect with backoff and replay from `last_seq`.
"""

from __future__ import annotations

import asyncio
import gc
import socket

import uvicorn
from starlette.applications import Starlette

from ..logs import configure_logging
from ..settings import Settings
from .app import create_app
from .http_protocol import WebinarChatHttpProtocol
from .ws_protocol import WebinarChatWebSocketProtocol


class ChatServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.chat_app = app
        self.ready = asyncio.Event()  # set once the sockets listen (embedders and tests await it)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.chat_app.state, "chat", None)
        if state is not None:
            state.drain()
        await super().shutdown(sockets)


# Allocations between young-generation collections (CPython's default: 700). A server with
# thousands of connections keeps hundreds of thousands of long-lived objects, and every request
# promotes a few more, so the default thresholds ran a full collection every few seconds: at
# 10,000 long-pollers ~40 % of the server's CPU went to the collector, with pauses up to 0.8 s.
# With these, ~10 % and pauses ≤ ~0.3 s (bench/findings.md, long-poll).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """For a long-running server process (`webinar-chat serve`): fewer collections, and the
    objects that exist after start-up (modules, the app) never scanned again."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def build_server(settings: Settings) -> ChatServer:
    """The server `webinar-chat serve` runs: installs the process's logging (LOG_LEVEL,
    LOG_FORMAT; uvicorn's loggers go through the same pipeline) and builds the app."""
    configure_logging(settings.log_level, json=settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # httptools + a long-poll fast path that answers parked polls without ASGI (docs/realtime.md)
        http=WebinarChatHttpProtocol,
        ws=WebinarChatWebSocketProtocol,
        ws_per_message_deflate=False,  # costs GBs at thousands of sockets (docs/performance-targets.md)
        # Incoming messages until the socket authenticates (then REALTIME_MAX_FRAME): an
        # oversized frame is refused from its header, before its payload is buffered.
        ws_max_size=settings.realtime_max_frame_unauthenticated,
        ws_ping_interval=None,  # the app sends its own heartbeats (browsers cannot see pings)
        lifespan="on",
        log_config=None,  # logs.configure_logging owns the handlers (one pipeline)
        log_level=settings.log_level.lower(),
        access_log=False,  # our own line per request (middleware.py, http_protocol.py)
        # The scope's client stays the peer: uvicorn would otherwise believe X-Forwarded-For
        # from 127.0.0.1 (FORWARDED_ALLOW_IPS). TRUSTED_PROXIES alone says whose to believe
        # (server/rate_limits.py, client_ip).
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        backlog=settings.listen_backlog,
    )
    return ChatServer(config, app)
