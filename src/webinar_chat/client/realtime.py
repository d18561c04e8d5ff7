"""The WebSocket side of the SDK: one socket for all joined rooms, kept alive by a supervisor
that reconnects with backoff, re-sends the token and re-joins every room with its `last_seq`
(the server replays what was missed), and tells the client when to turn the long-poll fallback
on and off. Decisions come from `policy.LinkState`; this module only does the I/O.
Protocol: docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog
from websockets.asyncio.client import connect as ws_connect

from .config import ClientConfig
from .errors import (
    BAN_CODES,
    ApiError,
    AuthenticationError,
    JoinError,
    TransientError,
    parse_banned_until,
)
from .policy import LinkState, backoff_delay

if TYPE_CHECKING:
    from .client import ChatClient
    from .room import Room

log = structlog.get_logger("webinar_chat.client")

# Replay frames carry up to 200 events of up to 2000 characters (≤ 4 bytes each in UTF-8).
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Closing a dead socket must not hold up the reconnect.
CLOSE_TIMEOUT_S = 1.0

# Renewed tokens refused in a row before giving up (a server whose signing key changed while we
# hold credentials that keep producing refused tokens): renewing forever would only spin.
MAX_AUTH_REFUSALS = 3
AUTH_ERRORS = frozenset({"token_expired", "invalid_token", "unauthorized"})
HEARTBEAT = orjson.dumps({"type": "heartbeat"}).decode()


class RealtimeSocket(Protocol):
    """What the SDK needs from a WebSocket connection (websockets' `ClientConnection` fits)."""

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


ConnectFn = Callable[[str], Awaitable[RealtimeSocket]]


def websocket_connector(config: ClientConfig) -> ConnectFn:
    """The default `connect`: python-websockets, without its own pings (the protocol has
    application heartbeats) and without compression (the server does not negotiate it)."""

    async def connect(url: str) -> RealtimeSocket:
        return await ws_connect(url, open_timeout=config.connect_timeout, ping_interval=None,
                                compression=None, max_size=MAX_FRAME_BYTES,
                                close_timeout=CLOSE_TIMEOUT_S)

    return connect


class SocketSilent(Exception):
    """No frame for the silence threshold: the socket is dead (or black-holed by a proxy)."""


class RealtimeLink:
    def __init__(self, client: ChatClient, url: str, connect: ConnectFn, config: ClientConfig,
                 rng: random.Random) -> None:
        self._client = client
        self._url = url
        self._connect = connect
        self._config = config
        self._rng = rng
        self.state = LinkState(fallback_after_failures=config.fallback_after_failures,
                               silence_timeout=config.silence_timeout, now=time.monotonic())
        self._ws: RealtimeSocket | None = None
        self._authed = False
        self._joined: set[int] = set()  # webinar ids joined on the current socket
        self._joining: dict[str, tuple[int, int]] = {}  # ref → (webinar id, last_seq sent)
        self._refs = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._renewing: asyncio.Task[None] | None = None
        self._sent_token: str | None = None
        self._auth_refusals = 0  # token refusals since the last auth_ok

    # --- called by the client --------------------------------------------------------------------

    def join(self, room: Room) -> None:
        if self._ws is not None and self._authed:
            self._send_join(self._ws, room)

    def leave(self, room: Room) -> None:
        self._joined.discard(room.webinar_id)
        if self._ws is not None:
            self._spawn(self._send(self._ws, {"type": "leave", "topic": room.topic}))
        self._check_live()

    def push_token(self, token: str) -> None:
        """A renewed token takes effect on the open socket without reconnecting."""
        if self._ws is not None:
            self._sent_token = token
            self._spawn(self._send(self._ws, {"type": "auth", "token": token}))

    async def aclose(self) -> None:
        self.state.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the supervisor --------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a socket up until cancelled."""
        watchdog = asyncio.create_task(self._watch_silence(), name="sdk-silence-watchdog")
        try:
            while not self.state.closed:
                silent = await self._attempt()
                if self.state.closed:
                    return
                self._client.stats.socket_failures += 1
                if self.state.on_failure(time.monotonic(), silent=silent):
                    self._client._fallback_on(
                        "socket silent" if silent else f"{self.state.failures} socket failures",
                        code="silence" if silent else "socket_failures")
                delay = backoff_delay(self.state.failures, self._config.reconnect_base,
                                      self._config.reconnect_cap, self._config.jitter, self._rng)
                self._client.stats.reconnect_attempts += 1
                self._client._report_link_event(
                    "reconnect_attempt", reconnectTries=self.state.failures,
                    delayMs=round(delay * 1000), silent=silent, fallback=self.state.fallback)
                log.info("sdk_reconnect_attempt", attempt=self.state.failures,
                         delay=round(delay, 3), fallback=self.state.fallback)
                await asyncio.sleep(delay)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watch_silence(self) -> None:
        """Turn the fallback on when no socket has been heard from for the silence threshold,
        including while connect attempts hang or fail slowly."""
        while True:
            now = time.monotonic()
            remaining = self.state.silence_deadline() - now
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if self.state.check_silence(now):
                self._client._fallback_on("no live socket for "
                                          f"{self.state.silence_timeout:g} s", code="silence")
            await asyncio.sleep(self.state.silence_timeout)

    async def _attempt(self) -> bool:
        """Connect and run one socket until it fails. Returns True if it died of silence."""
        try:
            token = await self._client._auth.token()
            async with asyncio.timeout(self._config.connect_timeout):
                ws = await self._connect(self._url)
        except asyncio.CancelledError:
            raise
        except AuthenticationError as exc:
            self._client._fatal(exc)
            return False
        except Exception as exc:  # refused, DNS, TLS, handshake, proxy, timeout, a custom connect
            log.info("sdk_socket_connect_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        self._ws = ws
        heartbeat = asyncio.create_task(self._heartbeats(ws), name="sdk-heartbeat")
        try:
            await self._session(ws, token)
            return False
        except SocketSilent:
            log.warning("sdk_socket_silent", after_s=self.state.silence_timeout)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # closed by the server, reset, protocol violation
            log.info("sdk_socket_lost", error=f"{type(exc).__name__}: {exc}")
            return False
        finally:
            heartbeat.cancel()
            self._ws = None
            self._authed = False
            self._joined.clear()
            self._joining.clear()
            self.state.live = False
            # Closed in the background: the failure, and the fallback it may turn on, count now,
            # not after up to CLOSE_TIMEOUT_S of a closing handshake with a peer that may never
            # answer (a frozen server: the fallback came ~1 s after the silence was noticed).
            self._spawn(_close_quietly(ws))

    async def _session(self, ws: RealtimeSocket, token: str) -> None:
        # The token goes in the first frame, not the URL: URLs end up in proxy and access logs.
        self._sent_token = token
        await self._send(ws, {"type": "auth", "token": token})
        opened = time.monotonic()
        while True:
            now = time.monotonic()
            timeout = self.state.silence_timeout
            if not self.state.live:
                # A socket that does not get live (auth + joins) in time is as good as dead.
                timeout = min(timeout, opened + self.state.silence_timeout - now)
            if timeout <= 0:
                raise SocketSilent()
            try:
                async with asyncio.timeout(timeout):
                    raw = await ws.recv()
            except TimeoutError:
                raise SocketSilent() from None
            self.state.on_frame(time.monotonic())
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("sdk_protocol_error", error="non-JSON frame")
                continue
            if isinstance(frame, dict):
                self._handle(ws, frame)

    async def _heartbeats(self, ws: RealtimeSocket) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self._config.heartbeat_interval)
                await ws.send(HEARTBEAT)

    # --- frames ----------------------------------------------------------------------------------

    def _handle(self, ws: RealtimeSocket, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        rooms = self._client._rooms
        if kind == "changes":
            webinar_id = _topic_id(frame.get("topic"))
            room = rooms.get(webinar_id) if webinar_id is not None else None
            if room is not None:
                room.ingest(frame.get("events"))
        elif kind == "hello":
            interval = frame.get("heartbeat_interval")
            if isinstance(interval, int | float) and interval > 0:
                # Two missed server heartbeats, never less than configured.
                self.state.silence_timeout = max(self._config.silence_timeout, 2.0 * interval)
        elif kind == "auth_ok":
            self._authed = True
            self._auth_refusals = 0
            for room in list(rooms.values()):
                if room.webinar_id not in self._joined and not self._is_joining(room):
                    self._send_join(ws, room)
            self._check_live()
        elif kind == "joined":
            pending = self._joining.pop(str(frame.get("ref")), None)
            if pending is not None and pending[0] in rooms:
                self._joined.add(pending[0])
                rooms[pending[0]].on_joined(frame.get("role"), pending[1],
                                            frame.get("resume_from"))
            self._check_live()
        elif kind == "error":
            self._on_error(frame)
        elif kind == "presence":
            webinar_id = _topic_id(frame.get("topic"))
            room = rooms.get(webinar_id) if webinar_id is not None else None
            count = frame.get("count")
            if (room is not None and isinstance(count, int) and not isinstance(count, bool)
                    and count >= 0):
                room.presence = count

    def _on_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        message = str(frame.get("message"))
        ref = frame.get("ref")
        pending = self._joining.pop(str(ref), None) if ref is not None else None
        if code in AUTH_ERRORS:
            # Delivery is suspended (or the join was refused) until a valid token arrives:
            # renew it; the renewal pushes it on this socket and auth_ok re-sends missing joins.
            self._authed = False
            self._auth_refusals += 1
            log.info("sdk_socket_token_refused", code=code)
            if self._auth_refusals > MAX_AUTH_REFUSALS:
                self._client._fatal(AuthenticationError(401, code, "the server keeps refusing "
                                                        "renewed tokens: " + message))
                return
            if self._renewing is None or self._renewing.done():
                self._renewing = self._spawn(self._renew_token())
            return
        webinar_id = pending[0] if pending else _topic_id(frame.get("topic"))
        room = self._client._rooms.get(webinar_id) if webinar_id is not None else None
        # too_many_topics: this socket joined REALTIME_MAX_TOPICS rooms already (docs/realtime.md).
        if room is not None and code in ("forbidden", "not_found", "bad_request",
                                         "too_many_topics", *BAN_CODES):
            self._client._room_failed(room, JoinError(
                403 if code == "forbidden" or code in BAN_CODES else
                404 if code == "not_found" else 400, code, message,
                banned_until=parse_banned_until(frame.get("banned_until"))))
            return
        log.warning("sdk_socket_error", code=code, message=message)

    async def _renew_token(self) -> None:
        auth = self._client._auth
        failures = 0
        while self._ws is not None:
            if self._sent_token != auth.access_token:
                self.push_token(auth.access_token)  # renewed meanwhile (e.g. by an HTTP 401)
                return
            try:
                await auth.renew(self._sent_token or auth.access_token)  # listener pushes it
                return
            except AuthenticationError as exc:
                self._client._fatal(exc)
                return
            except (TransientError, ApiError) as exc:
                failures += 1
                log.info("sdk_token_renewal_failed", error=str(exc))
                await asyncio.sleep(backoff_delay(failures, self._config.reconnect_base,
                                                  self._config.reconnect_cap,
                                                  self._config.jitter, self._rng))

    def _send_join(self, ws: RealtimeSocket, room: Room) -> None:
        ref = str(next(self._refs))
        self._joining[ref] = (room.webinar_id, room.last_seq)
        self._spawn(self._send(ws, {"type": "join", "topic": room.topic,
                                    "last_seq": room.last_seq, "ref": ref}))

    def _is_joining(self, room: Room) -> bool:
        return any(w == room.webinar_id for w, _ in self._joining.values())

    def _check_live(self) -> None:
        rooms = self._client._rooms
        if not self._authed or self._ws is None or any(w not in self._joined for w in rooms):
            return
        if not self.state.live:
            turn_off = self.state.on_live(time.monotonic())
            self._client.stats.socket_connects += 1
            log.info("sdk_socket_live", rooms=len(rooms))
            if turn_off:
                self._client._fallback_off()

    async def _send(self, ws: RealtimeSocket, payload: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a failed write shows up as a failed read
            await ws.send(orjson.dumps(payload).decode())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _close_quietly(ws: RealtimeSocket) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close()


def _topic_id(topic: Any) -> int | None:
    if not isinstance(topic, str):
        return None
    parts = topic.split(":")
    if len(parts) == 3 and parts[0] == "webinar" and parts[2] == "messages" and parts[1].isdigit():
        return int(parts[1])
    return None
