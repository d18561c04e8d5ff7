"""uvicorn's httptools HTTP protocol plus a long-poll fast path that needs no ASGI request cycle.

A long-poll answer through ASGI costs a task, Starlette's routing, a `Request`, a `Response` and
uvicorn's send path: ~200 µs. At 10,000 fallback attendees every chat message wakes every poller,
and each re-polls at once, so that cost decides whether one process keeps up (docs/benchmarks.md).
This protocol recognises the *hot* long-poll when uvicorn is about to start the ASGI task for it —
`GET /api/webinars/{id}/changes?…&wait=S` with a token and a read permission both already in
their caches, for a room that is loaded — and answers it itself: it queues the poll in the room
at once when the room already has newer changes, or parks it there (longpoll.ParkedPolls) until a
flush or its timeout queues it; the queue is answered a slice per loop pass, one prebuilt
response per body written straight to each transport. Anything else —
cache misses, bad parameters, a room not loaded yet, a poll the ring cannot answer — goes to
Starlette unchanged, which stays the only place that builds an error answer. The bytes written are
exactly those of the slow path (tests/api/test_long_poll_fast_path.py compares them).

Coupling to uvicorn's internals (uvicorn==0.54.0 is pinned; re-check on every upgrade): the fast
path hooks `_start_asgi_task`, so uvicorn still parses the request and builds its
`RequestResponseCycle`, which keeps pipelining, keep-alive, `connection_lost` and `shutdown`
bookkeeping in uvicorn's hands. Answering finishes that cycle the way `RequestResponseCycle.send`
does (`response_complete`, close unless keep-alive, `on_response()`). Select it with
`uvicorn.Config(http=WebinarChatHttpProtocol)` (server/runner.py does).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from .longpoll import PollKey, parse_poll, ring_body, viewer_key
from .middleware import log_request

if TYPE_CHECKING:
    from .hub import Room
    from .state import AppState

_CLOSE = b"connection: close\r\n"
CHANGES_ROUTE = "/api/webinars/{webinar_id}/changes"


class FastPoll:
    """One long-poll answered by the fast path: parked in `room` until a flush, its timeout, the
    client leaving or shutdown."""

    __slots__ = ("protocol", "cycle", "app", "room", "key", "slot", "request_id", "user_id",
                 "started")

    def __init__(self, protocol: WebinarChatHttpProtocol, cycle: RequestResponseCycle, app: Any,
                 room: Room, key: PollKey, request_id: bytes, user_id: int) -> None:
        self.protocol = protocol
        self.cycle = cycle
        self.app = app
        self.room = room
        self.key = key
        self.slot = 0
        self.request_id = request_id
        self.user_id = user_id
        self.started = time.perf_counter()

    def answer(self) -> None:
        """Answer with what the room has now — the slow path's answer after its wait."""
        if self.cycle.disconnected:
            return
        state = self.protocol.chat_state()
        if state is not None:
            state.hub.settle(self.room)  # a hide/delete in the pending tick redacts the ring first
        key = viewer_key(self.room, self.key, self.user_id)
        body = ring_body(self.room, key)
        if body is None:
            self.protocol.to_slow_path(self)  # older than the ring: the database answers
        else:
            self.protocol.finish(self, self.room.parked.response(key, body, self.request_id))

    def recheck(self) -> None:
        self.protocol.to_slow_path(self)

    def abort(self) -> None:
        if self.protocol.parked_poll is self:
            self.protocol.parked_poll = None
        self.protocol.transport.abort()


class WebinarChatHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parked_poll: FastPoll | None = None
        self._chat: AppState | None = None
        # Keep-alive after fast answers: one lazy timer per connection instead of uvicorn's
        # call_later per response (a poller re-polls at once, so that timer is nearly always
        # cancelled right away — at 10,000 pollers it was ~8 % of the server's CPU).
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def chat_state(self) -> AppState | None:
        """The application's state once its lifespan started (None before: no fast path)."""
        if self._chat is None:
            app_state = getattr(self.config.app, "state", None)  # the Starlette app (runner.py)
            self._chat = getattr(app_state, "chat", None)
        return self._chat

    # --- uvicorn hooks ---------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # A fast answer completes the previous request synchronously, inside the parser's
        # callbacks, so uvicorn may already have armed the keep-alive timer although the next
        # pipelined request is being handled now (uvicorn itself only disarms it on new data).
        self._unset_keepalive_if_required()
        if app is self.app and self._try_fast(cycle, app):
            return
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The WebSocket protocol has the transport now, and this one is dropped. Its parser holds
        # its callbacks (bound methods of this protocol): a cycle, which only the garbage
        # collector would free, with ~20 more objects per socket. Thousands of sockets joining at
        # once made that a collection every few hundred joins (docs/benchmarks.md).
        self.parser = None  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        poll = self.parked_poll
        if poll is not None:
            self.parked_poll = None
            poll.room.parked.remove(poll)
        super().connection_lost(exc)

    # --- the fast path ---------------------------------------------------------------------------

    def _try_fast(self, cycle: RequestResponseCycle, app: Any) -> bool:
        """Serve `cycle` without ASGI if it is a hot long-poll; False hands it to Starlette."""
        state = self.chat_state()
        if state is None:
            return False
        scope = cycle.scope
        request = parse_poll(scope["method"], scope["path"], scope["query_string"],
                             scope["headers"], state.settings.long_poll_max_wait_s)
        if request is None:
            return False
        claims = state.tokens.cached(request.token)
        if claims is None:
            return False
        now = time.monotonic()
        access = state.access.for_fast_path(request.webinar_id, claims.user_id, now)
        if access is None:
            return False
        room = state.hub.rooms.get(request.webinar_id)
        if room is None or room.sequencer is None:
            return False
        released = room.released_seq
        if request.after_seq > released:
            return False  # ahead of this process: the feed decides (slow path)
        room.last_used = now
        if state.presence is not None:
            state.presence.polled(request.webinar_id, claims.user_id)
        key = (access.audience, request.after_seq, request.limit, 0)
        request_id = request.request_id or state.request_ids.new().encode()
        poll = FastPoll(self, cycle, app, room, key, request_id, claims.user_id)
        self.parked_poll = poll
        if request.after_seq < released:
            room.parked.answer_soon(poll, self.server_state, self.loop)
        else:
            room.parked.park(poll, self.server_state, self.loop, request.wait)
        return True

    def finish(self, poll: FastPoll, response: bytes) -> None:
        """Write a complete answer and finish the request as uvicorn's `send` would."""
        if self.parked_poll is poll:
            self.parked_poll = None
        if self._chat is not None:
            self._chat.fast_polls += 1
            self.access_logged(poll)
        cycle = poll.cycle
        cycle.response_started = True
        cycle.response_complete = True
        if cycle.disconnected or self.transport.is_closing():
            return
        if not cycle.keep_alive:  # HTTP/1.0, `Connection: close`, or the server shutting down
            end = response.index(b"\r\n\r\n") + 2
            response = response[:end] + _CLOSE + response[end:]
            self.transport.write(response)
            self.transport.close()
        else:
            self.transport.write(response)
        self._response_complete()

    def access_logged(self, poll: FastPoll) -> None:
        """The line and the counts the middleware writes for requests that go through ASGI."""
        state = self._chat
        assert state is not None
        scope = poll.cycle.scope
        if state.settings.access_log:
            log_request("GET", scope["path"], CHANGES_ROUTE, 200, poll.started,
                        request_id=poll.request_id.decode("ascii"), user_id=poll.user_id,
                        webinar_id=poll.room.webinar_id, fast_path=True)
        state.metrics.http_request(CHANGES_ROUTE, "GET", 200, time.perf_counter() - poll.started)

    def _response_complete(self) -> None:
        """uvicorn's `on_response_complete`, but with the lazy keep-alive timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # a request came since (its own answer re-arms a timer)
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_check)
        else:
            self.timeout_keep_alive_handler()

    def to_slow_path(self, poll: FastPoll) -> None:
        if self.parked_poll is poll:
            self.parked_poll = None
        if not poll.cycle.disconnected:
            super()._start_asgi_task(poll.cycle, poll.app)
