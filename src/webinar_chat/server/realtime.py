"""The `/realtime` WebSocket endpoint: a thin adapter around `protocol.session.Session`.

It reads frames, feeds the session, and performs the actions the session returns: writes (never
awaited), room (un)subscription, access checks and feed reads (as tasks), and the token-expiry
timer. Protocol: docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth.permissions import Denied, check_access
from ..auth.tokens import TokenError, TokenService
from ..protocol.session import (
    Action,
    Batch,
    CheckAccess,
    Close,
    Identity,
    LoadChanges,
    Send,
    Session,
    Subscribe,
    Subscription,
    TokenRejected,
    Unsubscribe,
    WatchTokenExpiry,
)
from .deadlines import Deadline
from .identities import frame_token
from .origins import origin_policy
from .ws_protocol import RAW_FRAMES_EXTENSION, TOKEN_EXTENSION, RawFrameWriter, text_frame

if TYPE_CHECKING:
    from ..protocol.events import Change
    from .hub import Hub
    from .state import AppState

log = structlog.get_logger(__name__)

# Feed page size for replays: big enough that a typical reconnect is one read.
REPLAY_PAGE = 500
# Without the raw fast path, frames wait in a bounded per-connection queue drained by a writer task.
MAX_QUEUED_FRAMES = 1000
SLOW_CONSUMER = 4008  # the close code of a socket whose buffer outgrew REALTIME_MAX_BUFFER
# Close codes of the socket limits (docs/realtime.md, "Limits"). 44xx mirror HTTP statuses, as
# 4400 (protocol error) does: 4401 no valid token in time, 4429 too many sockets of one user
# (in this process, or connects beyond RATE_LIMIT_WS_CONNECT_USER).
AUTH_TIMEOUT = 4401
TOO_MANY_SOCKETS = 4429
MESSAGE_TOO_BIG = 1009  # RFC 6455's code; websockets' parser sends it (ws_protocol.py)

HEARTBEAT_PAYLOAD = b'{"type":"heartbeat"}'
HEARTBEAT_WIRE = text_frame(HEARTBEAT_PAYLOAD)
# A connection that was sent any frame within this fraction of the heartbeat interval gets no
# heartbeat this round (docs/realtime.md: silence stays below 1.5 intervals, the client allows 2).
HEARTBEAT_SKIP_WITHIN = 0.5


@functools.lru_cache(maxsize=16)
def token_verifier(tokens: TokenService) -> Any:
    """The session's `verify_token` for `tokens`: one function for every connection of the
    server (it reads `tokens` at each call, so a later `tokens.external` applies)."""

    def verify(token: str) -> Identity:
        try:
            claims = tokens.verify_access(token)
        except TokenError as exc:
            raise TokenRejected(exc.code, str(exc)) from exc
        return Identity(claims.user_id, claims.expires_at)

    return verify


@functools.lru_cache(maxsize=16)
def shared_replay_frames(hub: Hub) -> Callable[[Subscription, list[Change]], bytes | None]:
    """The session's `shared_frame` for `hub`: a replay from the room's ring is encoded once
    for every socket that resumes from the same seq (a reconnect storm), not once per socket.
    A function of the hub, not a method of the connection: the session keeps no way back to it."""

    def frame(sub: Subscription, changes: list[Change]) -> bytes | None:
        room = hub.rooms.get(sub.webinar_id)
        return room.replay_frame(sub.audience, sub.viewer_id, changes) if room else None

    return frame


class RealtimeConnection:
    def __init__(self, state: AppState, websocket: WebSocket, *,
                 connect_user: int | None = None) -> None:
        self.state = state
        self.websocket = websocket
        self.session = Session(verify_token=token_verifier(state.tokens), owner=self,
                               max_topics=state.settings.realtime_max_topics,
                               shared_frame=shared_replay_frames(state.hub))
        raw = websocket.scope.get("extensions", {}).get(RAW_FRAMES_EXTENSION)
        self.raw: RawFrameWriter | None = raw
        # The hub writes room frames straight to this transport (server/hub.py, fan-out).
        self.fanout_transport: asyncio.WriteTransport | None = raw.transport if raw else None
        # The generic path's bounded queue and its writer's wake-up (see `_writer`); None on the
        # raw path, which writes at once (an idle socket would pay ~1.6 KB for the two).
        self.queue: collections.deque[bytes] | None = None
        self.queue_ready: asyncio.Event | None = None
        if raw is None:
            self.queue = collections.deque()
            self.queue_ready = asyncio.Event()
        self.closed = False
        self.last_received = time.monotonic()
        self.last_sent = 0.0  # time.monotonic() of the last frame written (also set by the hub)
        self.expiry_timer: Deadline | None = None  # on the app's one timer (server/deadlines.py)
        self.tasks: set[asyncio.Task[Any]] | None = None  # in flight (`_spawn`); made on first use
        self.max_buffer = state.settings.realtime_max_buffer
        # The socket limits follow the session's user (`_track_user`): the frame limit, the
        # authentication deadline and the per-user count of this process.
        self.max_frame = state.settings.realtime_max_frame_unauthenticated
        self.auth_timer: asyncio.TimerHandle | None = None
        self.counted_user: int | None = None  # the user this socket counts for in sockets_per_user
        # The user whose `ws_connect_user` token this socket took: at the handshake (a token in
        # the URL, server/rate_limits.py) or when a frame gave it that user.
        self.connect_user = connect_user
        # For the one `realtime_session` log line when the connection ends.
        self.opened_at = time.monotonic()
        self.frames_in = 0
        self.frames_out = 0
        self.close_code: int | None = None  # ours, or the client's
        self.close_reason = ""

    # --- the read loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        if not await self._origin_allowed():
            return
        await self.websocket.accept()
        self.state.connections.add(self)
        writer = None if self.raw else asyncio.create_task(self._writer())
        try:
            self._arm_auth_deadline()
            token = self.connect_token()
            await self._prepare_token(token)
            self.perform(self.session.on_connect(token, time.time(),
                                                 self.state.settings.heartbeat_interval_s))
            self._track_user()
            await self._take_user_connect()
            while not self.closed:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if self.close_code is None:
                        self.close_code = message.get("code")
                        self.close_reason = str(message.get("reason") or "")
                        if self.raw is not None and self.raw.message_too_big:
                            self._count_close(MESSAGE_TOO_BIG, self.close_reason)
                    break
                self.frames_in += 1
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                if self.raw is None and len((text or "").encode()) > self.max_frame:
                    # Without our protocol the server buffered it already; refuse it all the same.
                    self.close(MESSAGE_TOO_BIG, "message too big")
                    break
                self.last_received = time.monotonic()
                await self._prepare_token(self.frame_token(text or ""))
                self.perform(self.session.on_text(text or "", time.time()))
                self._track_user()
                if self.counted_user != self.connect_user:  # a new user: not on every frame
                    await self._take_user_connect()
        except WebSocketDisconnect:
            pass
        except Exception as exc:
            # One bad frame or a bug in its handling closes this connection, never the server's
            # others; the client reconnects and resumes from its last seq.
            self.state.metrics.background_failure("realtime_read", exc, user_id=self.user_id)
            self.abort()
        finally:
            self.closed = True
            self.state.connections.discard(self)
            for sub in list(self.session.subscriptions.values()):
                self.state.hub.unsubscribe(sub)
            if self.expiry_timer:
                self.state.deadlines.cancel(self.expiry_timer)
                self.expiry_timer = None
            if self.auth_timer:
                self.auth_timer.cancel()
            self._uncount()
            for task in list(self.tasks or ()):
                task.cancel()
            if writer:
                writer.cancel()
            self._log_session()
            # The session and its subscriptions point back here (`owner`): without these cycles
            # a closed connection is freed at once, not by the garbage collector (ws_protocol.py,
            # `_release`).
            self.session.end()

    def frame_token(self, text: str) -> str | None:
        """The token a client frame carries (for `_prepare_token`), in this protocol's frames."""
        return frame_token(text)

    async def _prepare_token(self, token: str | None) -> None:
        """Awaited before the session sees a token: the URL's before `on_connect`, and a
        frame's (`auth`, a join's `token`) before that frame's `on_text`. The session verifies
        synchronously (`token_verifier`), so a token from the host platform is resolved here
        first — verified with a JWKS refetch for an unknown `kid`, its user provisioned on first
        use (server/identities.py). A refusal is left to the session, which answers it with its
        error frame and code. A subclass with frames of its own (another protocol) awaits this
        for each token it is about to hand to its session."""
        identities = self.state.identities
        if token and identities is not None and identities.enabled:
            await identities.prepare(token)

    def connect_token(self) -> str | None:
        """The token the client connected with (subprotocol or `?token=`), if any."""
        return (self.websocket.scope.get("extensions", {}).get(TOKEN_EXTENSION)
                or self.websocket.query_params.get("token"))

    def internal_error_frames(self) -> list[bytes]:
        """What the client is told before the socket is closed after an internal error."""
        return [orjson.dumps({"type": "error", "code": "internal",
                              "message": "Internal error; reconnect"})]

    def _log_session(self) -> None:
        heartbeats = self.raw.heartbeats_in if self.raw is not None else 0
        log.info("realtime_session", user_id=self.user_id,
                 duration_s=round(time.monotonic() - self.opened_at, 3),
                 frames_in=self.frames_in + heartbeats, frames_out=self.frames_out,
                 close_code=self.close_code, close_reason=self.close_reason,
                 webinar_ids=sorted(self.session.subscriptions) or None)

    async def _writer(self) -> None:
        """Generic ASGI path (no raw writer): drain the bounded queue in order."""
        assert self.queue is not None and self.queue_ready is not None
        while True:
            await self.queue_ready.wait()
            self.queue_ready.clear()
            while self.queue:
                await self.websocket.send_text(self.queue.popleft().decode())

    # --- the socket's limits (docs/realtime.md, "Limits") ----------------------------------------

    async def _origin_allowed(self) -> bool:
        """Refuse the handshake (403, before accept) of a page from an origin not allowed."""
        settings = self.state.settings
        headers = self.websocket.headers
        origin = headers.get("origin")
        policy = origin_policy(settings.public_url, settings.realtime_allowed_origins)
        if policy.allows(origin, headers.get("host")):
            return True
        log.info("realtime_origin_refused", origin=origin[:200] if origin else origin,
                 host=(headers.get("host") or "")[:200])
        await self.websocket.close(1008)  # before accept: uvicorn answers 403 Forbidden
        return False

    def _arm_auth_deadline(self) -> None:
        if self.auth_timer is None:
            self.auth_timer = asyncio.get_running_loop().call_later(
                self.state.settings.realtime_auth_timeout_s, self._auth_due)

    def _auth_due(self) -> None:
        self.auth_timer = None
        try:
            if self.session.user_id is None:
                self.close(AUTH_TIMEOUT, "authentication timeout")
        except Exception as exc:
            self.state.metrics.background_failure("auth_timeout", exc)
            self.abort()

    def _track_user(self) -> None:
        """After each client frame: the limits follow whose socket this is (`Session.user_id`).
        A socket with a user may send larger frames and has no deadline, and counts for its
        user; one that has none (yet, or after a log-out) has the small limit and the deadline."""
        user = self.session.user_id
        if user == self.counted_user or self.closed:
            return
        self._uncount()
        settings = self.state.settings
        if user is None:
            self._limit_frames(settings.realtime_max_frame_unauthenticated)
            self._arm_auth_deadline()
            return
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        per_user = self.state.sockets_per_user
        if per_user.get(user, 0) >= settings.realtime_max_sockets_per_user:
            self.close(TOO_MANY_SOCKETS, "too many connections")
            return
        per_user[user] = per_user.get(user, 0) + 1
        self.counted_user = user
        self._limit_frames(settings.realtime_max_frame)

    async def _take_user_connect(self) -> None:
        """The per-user connect limit (`ws_connect_user`) for a socket whose user came in a frame
        (`auth`, a join's `token`) rather than in the URL: one connect from that user's bucket
        when the socket first counts for them, as the handshake takes one for a URL token. A
        refreshed token of the same user takes nothing, nor does the same user again after a
        log-out; a switch to another user takes one of theirs. Refused: closed with 4429 right
        after its `auth_ok`, like a socket beyond REALTIME_MAX_SOCKETS_PER_USER.

        Awaited in the read loop before the next frame is read, after the frame's actions were
        performed, so the session's synchronous order is untouched. The in-process limiter
        decides without giving up the loop, so the socket is closed before an access check of
        that frame can finish; with Redis (one round trip) a join may be answered first — its
        token is valid, so nothing is shown that its user may not see."""
        user = self.counted_user
        if user is None or user == self.connect_user or self.closed:
            return
        self.connect_user = user
        decision = await self.state.limits.take("ws_connect_user", str(user))
        if not decision.allowed and not self.closed:
            self.close(TOO_MANY_SOCKETS, "too many connections")

    def _uncount(self) -> None:
        user, self.counted_user = self.counted_user, None
        if user is not None:
            left = self.state.sockets_per_user.get(user, 0) - 1
            if left > 0:
                self.state.sockets_per_user[user] = left
            else:
                self.state.sockets_per_user.pop(user, None)

    def _limit_frames(self, max_size: int) -> None:
        self.max_frame = max_size
        if self.raw is not None:
            self.raw.limit_messages(max_size)

    # --- writing (never awaits) ------------------------------------------------------------------

    def write(self, payload: bytes, wire: bytes | None = None) -> None:
        if self.closed:
            return
        self.last_sent = time.monotonic()
        self.frames_out += 1
        if self.raw is not None:
            if not self.raw.write(wire if wire is not None else text_frame(payload)):
                # Closing (the peer's close frame, or a lost connection): nothing more is
                # written, and the read loop goes on to the disconnect, which says how and
                # counts what the client sent before it (the session's log line).
                return
            if self.raw.buffered() > self.max_buffer:
                self.close(SLOW_CONSUMER, "slow consumer")
        else:
            assert self.queue is not None and self.queue_ready is not None
            if len(self.queue) >= MAX_QUEUED_FRAMES:
                self.close(SLOW_CONSUMER, "slow consumer")
                return
            self.queue.append(payload)
            self.queue_ready.set()

    @property
    def user_id(self) -> int | None:
        return self.session.identity.user_id if self.session.identity else None

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        if code == SLOW_CONSUMER:
            self.state.metrics.slow_consumers.inc()
        for sub in list(self.session.subscriptions.values()):
            self.state.hub.unsubscribe(sub)
        self._uncount()
        if self.raw is not None:
            self.raw.close(code, reason)
        else:
            self._spawn(self.websocket.close(code, reason))
        self._count_close(code, reason)

    def _count_close(self, code: int, reason: str) -> None:
        """A close of ours: the metric by code and the `realtime_close` line."""
        self.state.metrics.realtime_closes.labels(code=str(code)).inc()
        log.info("realtime_close", code=code, reason=reason, user_id=self.user_id)

    def abort(self) -> None:
        """Close after an internal error, whatever state the connection is in: a close that
        cannot fail (the transport is dropped if the closing handshake cannot be started)."""
        try:
            self.close(1011, "internal error")
        except Exception:
            self.closed = True
            transport = self.raw.transport if self.raw is not None else None
            if transport is not None:  # None: the connection is over (ws_protocol `_release`)
                transport.abort()
        finally:
            self.state.connections.discard(self)
            for sub in list(self.session.subscriptions.values()):
                self.state.hub.unsubscribe(sub)

    def on_batch(self, sub: Subscription, batch: Batch) -> None:
        self.perform(self.session.on_batch(sub, batch))

    # --- performing the session's actions --------------------------------------------------------

    def perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.write(action.data)
            elif isinstance(action, Subscribe):
                self.state.hub.subscribe(action.subscription)
                if self.state.presence is not None:
                    self.state.presence.joined(action.subscription)
            elif isinstance(action, Unsubscribe):
                self.state.hub.unsubscribe(action.subscription)
            elif isinstance(action, CheckAccess):
                self._spawn(self._check_access(action))
            elif isinstance(action, LoadChanges):
                self._spawn(self._load_changes(action))
            elif isinstance(action, WatchTokenExpiry):
                self._watch_expiry(action.expires_at)
            elif isinstance(action, Close):
                self.close(action.code, action.reason)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self.tasks is not None:
            self.tasks.discard(task)
            if not self.tasks:
                self.tasks = None
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.state.metrics.background_failure("connection_task", error, user_id=self.user_id)
            try:
                for frame in self.internal_error_frames():
                    self.write(frame)
            finally:
                self.abort()

    async def _check_access(self, action: CheckAccess) -> None:
        hub = self.state.hub
        # A grant from the read path's cache, up to the long-poll fast path's age (refusals are
        # checked fresh: a join that fails is rare, and a new registration must work at once). A
        # reconnect storm comes back more than TTL_S after the joins it repeats; each of its
        # thousands of joins must not wait for a query on the database's one thread.
        access = self.state.access.for_fast_path(action.webinar_id, action.user_id,
                                                 time.monotonic())
        if access is not None:
            # The cached decision is as fresh as the long-poll fast path's (same cache, same
            # ages, cleared by bans and registrations); its webinar row is not, so the head comes
            # from the room, which has released every change this process published.
            room = await hub.room(action.webinar_id)
            head_seq = max(access.webinar.last_seq, room.released_seq)
            sub = self.session.subscriptions.get(action.webinar_id)
            requested = sub.requested_seq if sub is not None else None
            if requested is not None and requested > head_seq:
                access = None  # maybe beyond a stale head, maybe a reset database: ask the store
        if access is None:
            try:
                access = await self.state.access.check(action.webinar_id, action.user_id,
                                                       cached=False)
            except Denied as exc:
                self.state.metrics.joins.labels(outcome="denied").inc()
                self.perform(self.session.on_access_denied(action.webinar_id, action.generation,
                                                           exc.code, exc.message, exc.extra))
                return
            head_seq = access.webinar.last_seq
        # The room must exist before the session subscribes to it (synchronously, below).
        await hub.room(action.webinar_id)
        if self.closed:
            return
        self.state.metrics.joins.labels(outcome="ok").inc()
        self.perform(self.session.on_access(action.webinar_id, action.generation, access.audience,
                                            access.role, head_seq))

    def recheck_access(self, webinar_id: int) -> None:
        """What this user may see in the webinar changed (server/access_changes.py): check the
        live subscription again, fresh from the database."""
        sub = self.session.subscriptions.get(webinar_id)
        if sub is not None and self.user_id is not None:
            self._spawn(self._recheck(sub, self.user_id))

    async def _recheck(self, sub: Subscription, user_id: int) -> None:
        try:
            access = await check_access(self.state.store, sub.webinar_id, user_id)
        except Denied as exc:
            if self.session.subscriptions.get(sub.webinar_id) is sub and not self.closed:
                self.perform(self.session.on_access_denied(sub.webinar_id, sub.generation,
                                                           exc.code, exc.message, exc.extra))
            return
        if self.session.subscriptions.get(sub.webinar_id) is sub:
            sub.audience = access.audience  # a role change: redaction from the next frame on

    async def _load_changes(self, action: LoadChanges) -> None:
        room = self.state.hub.rooms.get(action.webinar_id)
        changes = None
        if room is not None:
            self.state.hub.settle(room)
        if room is not None and room.ring and room.ring[0].seq <= action.after_seq + 1:
            # Short reconnects and reconnect storms are served from memory, with the encodings
            # the live fan-out already made.
            changes = [c for c in room.ring if c.seq > action.after_seq][:REPLAY_PAGE]
            has_more = bool(changes) and changes[-1].seq < room.released_seq
            source = "memory"
        if changes is None:
            page = await self.state.store.changes_after(action.webinar_id, action.after_seq,
                                                        REPLAY_PAGE)
            changes, has_more = page.changes, page.has_more
            source = "database"
        if changes:
            self.state.metrics.replayed.labels(source=source).inc(len(changes))
        if not self.closed:
            self.perform(self.session.on_changes(action.webinar_id, action.generation, changes,
                                                 has_more))

    def _watch_expiry(self, expires_at: float) -> None:
        deadlines = self.state.deadlines
        if self.expiry_timer:
            deadlines.cancel(self.expiry_timer)
        delay = max(0.0, expires_at - time.time())
        self.expiry_timer = deadlines.call_later(delay, self._expiry_due)

    def _expiry_due(self) -> None:
        self.expiry_timer = None
        try:
            self.perform(self.session.on_token_expiry_due(time.time()))
            # Woken a little before the token's end (clocks, timer granularity) and nothing
            # renewed it: watch again, or that token would never be enforced as expired.
            identity = self.session.identity
            if identity is not None and self.expiry_timer is None and not self.closed:
                self._watch_expiry(identity.expires_at)
        except Exception as exc:
            self.state.metrics.background_failure("token_expiry", exc, user_id=self.user_id)
            self.abort()

    # --- heartbeats (called by the app's heartbeat task) -----------------------------------------

    def heartbeat(self, now: float, idle_timeout: float, interval: float) -> None:
        if self.raw is not None:  # client heartbeats that skipped the read loop (ws_protocol.py)
            self.last_received = max(self.last_received, self.raw.heartbeat_at)
        if now - self.last_received > idle_timeout:
            self.close(4000, "heartbeat timeout")
        elif now - self.last_sent >= interval * HEARTBEAT_SKIP_WITHIN:
            self.write(HEARTBEAT_PAYLOAD, HEARTBEAT_WIRE)
        # else: a frame went out less than half an interval ago, and the next round comes within
        # an interval, so the socket is never silent for more than ~1.5 intervals (7.5 s) — well
        # inside the client's 10 s dead-socket rule — while a busy room sends no heartbeats.


async def realtime_endpoint(websocket: WebSocket) -> None:
    from .rate_limits import admit_websocket

    state: AppState = websocket.app.state.chat
    # Connect rate limits before the handshake is accepted: per client IP, and per user when the
    # token is in the URL; refused → an HTTP 429 answer to the upgrade (server/rate_limits.py).
    # A token sent in a frame pays the user's connect later (`_take_user_connect`): 4429.
    admitted = await admit_websocket(state, websocket)
    if admitted is None:
        return
    await RealtimeConnection(state, websocket, connect_user=admitted.connect_user).run()


async def heartbeat_loop(state: AppState) -> None:
    """Every heartbeat interval: heartbeats and idle closes, the idle-room sweep, and the expiry
    of the read-access cache. Runs for the life of the app: nothing one connection or room does
    may stop it (docs/operations.md, "Background work")."""
    interval = state.settings.heartbeat_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            heartbeat_round(state, time.monotonic())
        except Exception as exc:  # heartbeat_round contains its own; this is the last line
            state.metrics.background_failure("heartbeat", exc)


def heartbeat_round(state: AppState, now: float) -> None:
    settings = state.settings
    for connection in list(state.connections):
        try:
            connection.heartbeat(now, settings.client_idle_timeout_s, settings.heartbeat_interval_s)
        except Exception as exc:
            state.metrics.background_failure("heartbeat", exc, user_id=connection.user_id)
            connection.abort()
    try:
        state.hub.sweep()
        state.access.expire(now)
    except Exception as exc:
        state.metrics.background_failure("idle_sweep", exc)
