"""uvicorn's sans-I/O WebSocket protocol plus a raw-frame fast path for fan-out.

The ASGI `send()` path costs an `await`, an event dict and a frame build per message per client.
Fan-out sends the *same* frame to thousands of clients, so the hub builds the frame once and this
protocol exposes, through the ASGI scope extension `webinar_chat.raw_frames`, a writer that puts
those bytes straight on the transport: no await, no copy, and the transport's buffer size tells
whether the client keeps up (../PERFORMANCE.md: 2–3× the per-client `send_text` throughput).
Since the hub writes to the transport itself (server/hub.py), the writer also hands it the transport.
In the other direction, a client heartbeat that arrives alone is counted without the frame parser,
the ASGI queue and the session (`heartbeat_at`), which is where bursts of them used to cost.
Incoming messages are limited by websockets' parser (`max_message_size`, checked from each
frame's header, before its payload is read: close 1009): `uvicorn.Config(ws_max_size=…)` is the
limit of a socket without a user (REALTIME_MAX_FRAME_UNAUTHENTICATED), and the connection raises
it once the socket authenticated (`RawFrameWriter.limit_messages`, REALTIME_MAX_FRAME).
Select it with `uvicorn.Config(ws=WebinarChatWebSocketProtocol)` (the CLI does).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python build of websockets
    from websockets.utils import apply_mask

RAW_FRAMES_EXTENSION = "webinar_chat.raw_frames"
# `?token=` moved out of the query string (which uvicorn logs) into this scope extension.
TOKEN_EXTENSION = "webinar_chat.token"

# How long a closing slow consumer may take to drain before the connection is cut.
SLOW_CLOSE_GRACE_S = 5.0

# Client heartbeats as the clients send them (browser and bench: compact JSON; Python's json module:
# with a space). A read that is exactly one such masked text frame only proves the client is alive:
# it is counted here instead of going through the frame parser, the ASGI queue and the session
# (~50 µs each; thousands of sockets heartbeat in bursts, which held the loop for ~250 ms).
HEARTBEAT_PAYLOADS = frozenset({b'{"type":"heartbeat"}', b'{"type": "heartbeat"}'})
_AT_EOF_CODE = StreamReader.at_eof.__code__


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

    @property
    def heartbeat_at(self) -> float:
        """`time.monotonic()` of the last client heartbeat taken by the fast path (0: none)."""
        return self._protocol.heartbeat_at

    @property
    def heartbeats_in(self) -> int:
        """Client heartbeats the fast path took (frames the session never saw)."""
        return self._protocol.heartbeats_in

    def limit_messages(self, max_size: int) -> None:
        """The largest incoming message (bytes) from the next frame header the parser reads
        on: a frame that announces more is refused before its payload is read (close 1009)."""
        self._protocol.conn.max_message_size = max_size

    @property
    def message_too_big(self) -> bool:
        """True once the parser refused a message over the limit (it sent close 1009)."""
        return self._protocol.message_too_big

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
    heartbeat_at = 0.0
    heartbeats_in = 0
    message_too_big = False

    def handle_parser_exception(self) -> None:
        # uvicorn's handler sends websockets' close frame (1009 for an oversized frame, whose
        # payload was never read), tells the app and closes the transport.
        if isinstance(self.conn.parser_exc, PayloadTooBig):
            self.message_too_big = True
        super().handle_parser_exception()

    def data_received(self, data: bytes) -> None:
        if 26 <= len(data) <= 27 and data[0] == 0x81 and data[1] == 0x80 | (len(data) - 6) \
                and self._at_frame_boundary() \
                and apply_mask(data[6:], data[2:6]) in HEARTBEAT_PAYLOADS:
            self.heartbeat_at = time.monotonic()
            self.heartbeats_in += 1
            return
        super().data_received(data)

    def _at_frame_boundary(self) -> bool:
        """True when the parser waits for the first byte of a new frame outside a fragmented
        message, on an open connection: only then may one whole frame bypass it."""
        conn = self.conn
        if (conn.state is not State.OPEN or conn.expect_continuation_frame or conn.reader.buffer
                or conn.reader.eof or not self.handshake_complete or self.close_sent):
            return False
        # The parser is a chain of generators (handshake, then frames); at a frame boundary the
        # innermost one is StreamReader.at_eof, waiting for the first byte.
        waiting_in = conn.parser
        for _ in range(4):
            inner = getattr(waiting_in, "gi_yieldfrom", None)
            if inner is None:
                break
            waiting_in = inner
        return getattr(waiting_in, "gi_code", None) is _AT_EOF_CODE

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
