"""Running the app under uvicorn: the one configuration the CLI, the tests and the benchmarks use.

`ChatServer` drains the application before uvicorn's own shutdown: long-polls in progress are
answered at once (empty) instead of being cancelled after the grace period, and sockets are closed
with 1001 "server shutting down" so clients reconnect with backoff and replay from `last_seq`.
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from ..settings import Settings
from .app import create_app
from .http_protocol import WebinarChatHttpProtocol
from .ws_protocol import WebinarChatWebSocketProtocol


class ChatServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.chat_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.chat_app.state, "chat", None)
        if state is not None:
            state.drain()
        await super().shutdown(sockets)


def build_server(settings: Settings, *, log_level: str | None = None) -> ChatServer:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # httptools + a long-poll fast path that answers parked polls without ASGI (docs/realtime.md)
        http=WebinarChatHttpProtocol,
        ws=WebinarChatWebSocketProtocol,
        ws_per_message_deflate=False,  # costs GBs at thousands of sockets (PERFORMANCE.md)
        ws_ping_interval=None,  # the app sends its own heartbeats (browsers cannot see pings)
        lifespan="on",
        log_level=(log_level or settings.log_level).lower(),
        access_log=settings.development,
        timeout_graceful_shutdown=5,
    )
    return ChatServer(config, app)
