"""uvicorn's sans-I/O WebSocket protocol plus a raw-frame fast path for fan-out.

The ASGI `send()` path costs an `await`, an event dict and a frame build per message per client.
Fan-out sends the *same* frame to thousands of clients, so the hub builds the frame once and this
protocol exposes, through the ASGI scope extension `webinar_chat.raw_frames`, a writer that puts
those bytes straight on the transport: no await, no copy, and the transport's buffer size tells
whether the client keeps up (docs/performance-targets.md: 2–3× the per-client `send_text` throughput).
Since the hub writes to the transport itself (server/hub.py), the writer also hands it the transport.
In the other direction, a client heartbeat that arrives alone is counted without the frame parser,
the ASGI queue and the session (`heartbeat_at`), which is where bursts of them used to cost.
Incoming messages are limited by websockets' parser (`max_message_size`, checked from each
frame's header, before its payload is read: close 1009): `uvicorn.Config(ws_max_size=…)` is the
limit of a socket without a user (REALTIME_MAX_FRAME_UNAUTHENTICATED), and the connection raises
it once the socket authenticated (`RawFrameWriter.limit_messages`, REALTIME_MAX_FRAME).
Select it with `uvicorn.Config(ws=WebinarChatWebSocketProtocol)` (the CLI does).

An idle socket costs what its objects cost (docs/benchmarks.md, "Idle connections"), so the
protocol keeps less per connection than uvicorn's: the ASGI receive queue and the `writable` event
create their deques only while something waits or is queued (`LeanQueue`, `LeanEvent`; an
`asyncio.Queue` holds four, an `asyncio.Event` one, ~760 bytes each), the values every connection
of a server shares live in one `_Shared` object (so that the instance's attributes fit in
CPython's shared-key inline values instead of a dict of their own), and the handshake's request
and response objects are dropped once the handshake is over.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
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
    def transport(self) -> asyncio.WriteTransport | None:
        """The connection's transport, for the hub's fan-out fast path, which writes prebuilt
        frames to it directly. It skips transports that are closing; the connection unsubscribes
        before it sends a close frame of its own (RealtimeConnection.close). None once the
        connection and its app are both over (`_release`)."""
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


class LeanQueue:
    """The part of `asyncio.Queue` uvicorn's protocol uses (`put_nowait`, `get`, `empty`), with
    the same order and wake-up rules, and no container while nothing is queued or waiting: an
    idle socket's receive queue is two `None`s instead of four deques (one inside its `Event`)."""

    __slots__ = ("_items", "_getters")

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        # Waiting `get()`s in order: nearly always the one read loop of the app (a list of one is
        # ~90 bytes, a deque ~760).
        self._getters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._wakeup_next()

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # just in case getter is not done yet
                getters = self._getters
                if getters is not None:
                    try:
                        getters.remove(getter)
                    except ValueError:
                        pass
                    if not getters:
                        self._getters = None
                if self._items and not getter.cancelled():
                    self._wakeup_next()
                raise
        return self.get_nowait()

    def _wakeup_next(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break
        if not getters:
            self._getters = None


class LeanEvent:
    """`asyncio.Event` (`set`, `clear`, `is_set`, `wait`) whose list of waiters exists only while
    someone waits: uvicorn's `writable` event of every socket is set nearly always."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._waiters or ():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
            return True
        finally:
            waiters = self._waiters
            if waiters is not None:
                waiters.remove(fut)
                if not waiters:
                    self._waiters = None


class HandshakeLogger:
    """uvicorn.error as the WebSocket protocol and websockets' parser use it, minus the two info
    lines of every accepted socket, which are not even built: `logs._HandshakeLines` would drop
    them at its filter, after the logging module made a record of each (~5 % of the server's
    CPU while 10,000 sockets reconnect). Every other line goes to the logger as before, where
    that filter still strips the query string from a refused handshake's line."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg == ACCEPTED_LINE or msg == "connection open":
            return
        self._logger.info(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


# uvicorn's line for an accepted handshake (websockets_sansio_impl.py, `send`).
ACCEPTED_LINE = '%s - "WebSocket %s" [accepted]'


class _Shared:
    """What every WebSocket connection of one server shares (uvicorn keeps a copy of each on
    every connection)."""

    __slots__ = ("config", "app", "loop", "logger", "root_path", "asgi_version", "app_state",
                 "connections", "tasks", "ping_interval", "ping_timeout")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.app = config.loaded_app
        self.loop = loop
        self.logger = HandshakeLogger(logging.getLogger("uvicorn.error"))
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout


# One `_Shared` per uvicorn server (its ServerState), rebuilt if the app state or loop differs.
_SHARED: weakref.WeakKeyDictionary[ServerState, _Shared] = weakref.WeakKeyDictionary()


def _shared_for(config: Config, server_state: ServerState, app_state: dict[str, Any],
                loop: asyncio.AbstractEventLoop) -> _Shared:
    shared = _SHARED.get(server_state)
    if (shared is None or shared.config is not config or shared.app_state is not app_state
            or shared.loop is not loop or shared.app is not config.loaded_app):
        shared = _SHARED[server_state] = _Shared(config, server_state, app_state, loop)
    return shared


def _shared_attribute(name: str) -> property:
    def get(self: WebinarChatWebSocketProtocol) -> Any:
        return getattr(self._shared, name)

    return property(get, doc=f"uvicorn's `{name}`, shared by the server's connections")


class WebinarChatWebSocketProtocol(WebSocketsSansIOProtocol):
    close_timeout = 10.0  # uvicorn's constant

    config = _shared_attribute("config")
    app = _shared_attribute("app")
    loop = _shared_attribute("loop")
    logger = _shared_attribute("logger")
    root_path = _shared_attribute("root_path")
    asgi_version = _shared_attribute("asgi_version")
    app_state = _shared_attribute("app_state")
    connections = _shared_attribute("connections")
    tasks = _shared_attribute("tasks")

    ping_interval = _shared_attribute("ping_interval")
    ping_timeout = _shared_attribute("ping_timeout")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        # uvicorn's __init__ (0.54.0) without what the server's connections share (above), plus
        # every attribute set later on, so that each instance keeps its ~25 attributes in
        # CPython's inline values. With more than 30 names per class, or a name first set after
        # the class's first few instances (3.11 freezes its shared keys as instances are made),
        # every instance gets a dict of its own instead (~0.8–1.6 KB; uvicorn sets 37).
        # tests/realtime/test_idle_memory.py compares every attribute with uvicorn's own.
        if not config.loaded:
            config.load()  # pragma: no cover
        self._shared = _shared_for(config, server_state, app_state,
                                   _loop or asyncio.get_event_loop())
        self.default_headers = server_state.default_headers

        # Connection state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = None  # type: ignore[assignment]

        # WebSocket state
        self.queue: LeanQueue = LeanQueue()  # type: ignore[assignment]
        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None

        if config.ws_per_message_deflate:
            # Not ours (build_server turns it off), but kept working: uvicorn's own set-up.
            from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

            extensions: list[Any] = [ServerPerMessageDeflateFactory(
                server_max_window_bits=12, client_max_window_bits=12,
                compress_settings={"memLevel": 5})]
        else:
            extensions = []
        self.conn = ServerProtocol(extensions=extensions, max_size=config.ws_max_size,
                                   logger=cast(logging.Logger, self._shared.logger))

        self.read_paused = False
        self.writable = LeanEvent(True)  # type: ignore[assignment]

        # Keepalive state. WebSocket pings are off in build_server (the app heartbeats instead):
        # then only stop_keepalive sets one of these, and the rest stay class attributes.
        self.pending_ping_payload: bytes | None = None
        if config.ws_ping_interval is not None:
            self.ping_timer = None
            self.pong_timer = None
            self.ping_sent_at = 0.0
            self.last_ping_rtt = 0.0

        # Incoming message state
        self.frames: list[bytes] = []
        self.curr_msg_data_type = "bytes"

        # Set by handle_connect (uvicorn), and ours
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        self.heartbeat_at = 0.0
        self.heartbeats_in = 0
        self.message_too_big = False
        self.app_done = False  # the ASGI app returned (`on_task_complete`)

    # Without pings (ws_ping_interval=None) only stop_keepalive reads these.
    ping_timer = None
    pong_timer = None
    ping_sent_at = 0.0
    last_ping_rtt = 0.0

    # --- a connection that ended is freed by reference counting ----------------------------------

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)  # the app's task (run_asgi) ended
        self.app_done = True
        self._release()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release()

    def _release(self) -> None:
        """Once both the app and the connection are over, nothing uses the transport, the scope
        or the parser again: drop the references that make cycles (the transport holds this
        protocol; the scope holds the raw writer, which holds this protocol; websockets' parser
        is a generator that holds its `ServerProtocol`). Then the ~35 objects of a closed socket
        go when its last reference does, instead of waiting for the garbage collector: after a
        reconnect storm, 10,000 dead sockets sat in the oldest generation, which only a full
        collection scans, and their fresh replacements' garbage made the collections that
        stalled the loop (docs/benchmarks.md)."""
        if not (self.app_done and self.disconnected):
            return
        self.transport = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        conn = self.conn
        if conn is not None:
            conn.parser = None  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        # Called once, right after the 101 response went out: the handshake's response (its
        # headers and all) is not read again.
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()

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
        # Nothing reads the request again, but websockets' parser keeps it (a local of its
        # generator) for the life of the connection: let go of its headers (~2 KB), which the
        # scope and the response have copied.
        self.request = None  # type: ignore[assignment]
        event.headers.clear()
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
