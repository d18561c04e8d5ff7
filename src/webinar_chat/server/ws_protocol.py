"""uvicorn's sans-I/O WebSocket protocol plus a raw-frame fast path for fan-out.

The ASGI `send()` path costs an `await`, an event dict and a frame build per message per client.
Fan-out sends the *same* frame to thousands of clients, so the hub builds the frame once and this
protocol exposes, through the ASGI scope extension `webinar_chat.raw_frames`, a writer that puts
those bytes straight on the transport: no await, no copy, and the transport's buffer size tells
whether the client keeps up (../PERFORMANCE.md: 2–3× the per-client `send_text` throughput).
Select it with `uvicorn.Config(ws=WebinarChatWebSocketProtocol)` (the CLI does).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlencode

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

RAW_FRAMES_EXTENSION = "webinar_chat.raw_frames"
# `?token=` moved out of the query string (which uvicorn logs) into this scope extension.
TOKEN_EXTENSION = "webinar_chat.token"

# How long a closing slow consumer may take to drain before the connection is cut.
SLOW_CLOSE_GRACE_S = 5.0


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked server→client text frame carrying `payload` (UTF-8 JSON)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


class RawFrameWriter:
    """Non-blocking writes of prebuilt frames on one WebSocket connection."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebinarChatWebSocketProtocol) -> None:
        self._protocol = protocol

    def write(self, wire: bytes) -> bool:
        """Queue a prebuilt frame. False when the connection is closing or gone."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            return False
        protocol.transport.write(wire)
        return True

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The connection's transport, for the hub's fan-out fast path, which writes prebuilt
        frames to it directly. It skips transports that are closing; the connection unsubscribes
        before it sends a close frame of its own (RealtimeConnection.close)."""
        return self._protocol.transport

    def buffered(self) -> int:
        return self._protocol.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after what is already queued and cut the connection if the peer does
        not finish the closing handshake in time (a slow consumer may never drain)."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected:
            return
        protocol.conn.send_close(code, reason)
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        protocol.close_sent = True
        protocol.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        protocol.close_timer = protocol.loop.call_later(SLOW_CLOSE_GRACE_S, protocol.transport.abort)


class WebinarChatWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None:
            return  # the handshake was rejected
        extensions = scope["extensions"]
        assert extensions is not None
        extensions[RAW_FRAMES_EXTENSION] = RawFrameWriter(self)
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        token = next((value for key, value in query if key == "token"), None)
        if token is not None:
            # Access tokens must not end up in logs: the accept log line prints the query string.
            extensions[TOKEN_EXTENSION] = token
            scope["query_string"] = urlencode([(k, v) for k, v in query if k != "token"]).encode()
