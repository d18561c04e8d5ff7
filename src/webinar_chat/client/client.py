"""`ChatClient`: the Python SDK of SPEC §6 — log in, join webinars, send with idempotent retry,
receive every change once and in order over WebSocket or, when that fails, long-polling.

    async with ChatClient("http://127.0.0.1:8000", email=…, password=…) as chat:
        room = await chat.join(webinar_id)
        await room.send("Hello!")
        async for event in room:
            ...

Guide: docs/sdk.md. Guarantees: docs/delivery.md. Wire protocol: docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from .api import Api, AuthSession, Tokens, decode_body, error_of
from .config import ClientConfig
from .errors import (
    BAN_CODES,
    ApiError,
    AuthenticationError,
    Banned,
    ChatError,
    ClientClosed,
    JoinError,
    ProtocolError,
    SendGaveUp,
    SendRejected,
    TransientError,
    parse_banned_until,
)
from .feed import CHAT_MODES, QUESTION_STATUSES, ChangeEvent, ChatMessage, Question, RoomState
from .monitor import EventReporter, api_poster
from .policy import ConnectionStatus, LinkState, backoff_delay
from .realtime import ConnectFn, RealtimeLink, websocket_connector
from .room import ChangeCallback, Room
from .sending import RenewToken, RetryLater, SendOutcome, Stored, classify_send_response

log = structlog.get_logger("webinar_chat.client")

USER_AGENT = "webinar-chat-python-sdk/0.1"
# A log-out on close must not hold up the exit when the server is gone.
LOGOUT_TIMEOUT_S = 2.0
# Token renewals for one send before giving up: one can race with an expiry, but a 401 right
# after a second fresh token means the server rejects our tokens and retrying cannot help.
MAX_SEND_RENEWALS = 2


@dataclass
class ClientStats:
    """Counters for monitoring and tests (SPEC §7 names in comments)."""

    socket_connects: int = 0  # sockets that became live
    socket_failures: int = 0  # connect failures + lost sockets
    reconnect_attempts: int = 0  # reconnect_attempt
    fallback_activations: int = 0  # fallback_activated
    polls: int = 0  # successful long-polls
    gap_fetches: int = 0  # /changes reads to fill a gap or catch up
    sends_ok: int = 0  # send_success
    send_duplicates: int = 0  # sends answered 409 / resolved by the feed
    send_retries: int = 0
    send_timeouts: int = 0  # send_timeout
    send_errors: int = 0  # send_error (permanent)


def realtime_url_for(base_url: str) -> str:
    """`http(s)://host[/prefix]` → `ws(s)://host[/prefix]/realtime`."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/realtime", "", ""))


class ChatClient:
    """An `async with` chat session for one user.

    Give either `email` + `password` (the client logs in, renews its session by refresh token or
    by logging in again, and logs out on close) or an `access_token` (+ `refresh_token` to renew
    it). Seams for tests and special networks: `http_transport` (any httpx async transport) and
    `connect` (a coroutine function `url → socket`, see `realtime.RealtimeSocket`).
    """

    def __init__(self, base_url: str, *, email: str | None = None, password: str | None = None,
                 access_token: str | None = None, refresh_token: str | None = None,
                 config: ClientConfig | None = None,
                 http_transport: httpx.AsyncBaseTransport | None = None,
                 connect: ConnectFn | None = None, realtime_url: str | None = None,
                 logout_on_close: bool = True, rng: random.Random | None = None) -> None:
        if access_token is None and (email is None or password is None):
            raise ValueError("give email and password, or an access_token")
        self.base_url = base_url.rstrip("/")
        self.config = config or ClientConfig()
        self.stats = ClientStats()
        self._email, self._password = email, password
        self._initial_tokens = (Tokens(access_token, refresh_token) if access_token is not None
                                else None)
        self._transport = http_transport
        self._connect = connect or websocket_connector(self.config)
        self._realtime_url = realtime_url or realtime_url_for(self.base_url)
        self._logout_on_close = logout_on_close and access_token is None
        self._rng = rng or random.Random()
        self._rooms: dict[int, Room] = {}
        self._echo: dict[str, asyncio.Future[ChatMessage]] = {}
        self._link: RealtimeLink | None = None
        self._link_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._auth_session: AuthSession | None = None
        self._api_client: Api | None = None
        self._closed = False
        self._error: ChatError | None = None
        # Monitoring events for the server's /metrics (client/monitor.py), one session id per
        # client; config.report_events=False turns them off.
        self._reporter = EventReporter(enabled=self.config.report_events,
                                       flush_interval=self.config.metrics_flush_interval,
                                       request_timeout=self.config.http_timeout)

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Log in (or check the given token). Raises `AuthenticationError` for bad credentials,
        `TransientError` when the server cannot be reached."""
        if self._http is not None:
            raise RuntimeError("client already started")
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=self._transport,
                                       timeout=self.config.http_timeout,
                                       headers={"User-Agent": USER_AGENT})
        self._auth_session = AuthSession(self._http, email=self._email, password=self._password,
                                         tokens=self._initial_tokens,
                                         timeout=self.config.http_timeout)
        self._api_client = Api(self._http, self._auth_session, self.config.http_timeout)
        try:
            if self._initial_tokens is None:
                await self._auth_session.login()
            else:
                body = await self._api_client.get("/api/me")
                if isinstance(body.get("user"), dict):
                    self._auth_session.user = body["user"]
        except BaseException:
            await self._http.aclose()
            self._closed = True
            raise
        self._auth_session.on_token(self._token_renewed)
        self._reporter.start(api_poster(self._api_client))

    async def aclose(self) -> None:
        """Leave every room, close the socket, log out (if this client logged in) and release
        the HTTP connections. Pending sends fail with `ClientClosed`."""
        if self._closed:
            return
        self._closed = True
        closed = ClientClosed("client closed")
        for room in list(self._rooms.values()):
            room.close()
        for future in self._echo.values():
            if not future.done():
                future.set_exception(closed)
                future.exception()  # retrieved: no "never retrieved" warning if nobody waits
        tasks = [t for room in self._rooms.values() for t in room.tasks()]
        if self._link_task is not None:
            self._link_task.cancel()
            tasks.append(self._link_task)
        if self._link is not None:
            await self._link.aclose()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The events still queued, while the token is valid (before the log-out): best effort,
        # bounded by monitor.FINAL_FLUSH_TIMEOUT_S, never raises.
        await self._reporter.aclose(flush=self._http is not None and self._error is None)
        if self._logout_on_close and self._auth_session is not None:
            try:
                async with asyncio.timeout(LOGOUT_TIMEOUT_S):
                    await self._auth_session.logout()
            except TimeoutError:
                pass
        if self._http is not None:
            await self._http.aclose()

    # --- state -----------------------------------------------------------------------------------

    @property
    def user(self) -> dict[str, Any]:
        """The logged-in user: `{id, email, display_name, …}`."""
        return dict(self._auth.user or {})

    @property
    def user_id(self) -> int | None:
        uid = (self._auth.user or {}).get("id")
        return uid if isinstance(uid, int) else None

    @property
    def status(self) -> ConnectionStatus:
        if self._closed:
            return ConnectionStatus.CLOSED
        if self._link is None:
            return ConnectionStatus.CONNECTING
        return self._link.state.status

    @property
    def fallback(self) -> bool:
        """True while changes are read by long-polling because the socket is not healthy."""
        return self._link is not None and self._link.state.fallback

    @property
    def rooms(self) -> dict[int, Room]:
        return dict(self._rooms)

    # --- rooms -----------------------------------------------------------------------------------

    async def join(self, webinar_id: int, *, after_seq: int | None = None, history: bool = True,
                   events: bool = True, on_change: ChangeCallback | None = None) -> Room:
        """Join a webinar's chat and return its `Room`.

        By default the room starts with the latest `config.history_limit` messages in
        `room.messages` and yields the changes after them. With `after_seq` (a `room.last_seq`
        saved earlier) it yields every change since then instead and loads no history. Pass
        `events=False` if you will not iterate the room (only read `room.messages` or use
        `on_change`, a plain function called for each change). Raises `JoinError` if the user
        may not read this webinar.
        """
        self._check_usable()
        if webinar_id in self._rooms:
            raise ValueError(f"already joined webinar {webinar_id}")
        path = f"/api/webinars/{webinar_id}"
        try:
            webinar = (await self._api.get(path)).get("webinar") or {}
            snapshot: dict[str, Any] | None = None
            if after_seq is None and history:
                snapshot = await self._api.get(f"{path}/messages",
                                               {"limit": self.config.history_limit})
        except AuthenticationError:
            raise
        except ApiError as exc:
            raise JoinError(exc.status, exc.code, exc.message,
                            banned_until=exc.banned_until) from None
        room_seq = webinar.get("last_seq")
        if not isinstance(room_seq, int):
            raise ProtocolError(f"{path}: no last_seq to start from")
        if after_seq is not None:
            start_seq = after_seq
        elif snapshot is not None and isinstance(snapshot.get("last_seq"), int):
            # From the older of the two reads: a ROOM change between them is replayed (the
            # messages replayed again change nothing).
            start_seq = min(snapshot["last_seq"], room_seq)
        else:
            start_seq = room_seq
        role = webinar.get("role")
        room = Room(self, webinar_id, role=role if isinstance(role, str) else "attendee",
                    last_seq=start_seq, config=self.config, events=events, on_change=on_change,
                    rng=self._rng)
        try:
            room.apply_room(RoomState.from_payload(webinar), room_seq)
        except ProtocolError:
            log.warning("sdk_protocol_error", webinar_id=webinar_id,
                        error="webinar without room state (a server before chat modes)")
        if snapshot is not None:
            room.conversation.load(_parse_messages(snapshot.get("messages")))
        self._check_usable()
        self._rooms[webinar_id] = room
        room.start()
        if self._link is None:
            self._link = RealtimeLink(self, self._realtime_url, self._connect, self.config,
                                      self._rng)
            self._link_task = asyncio.create_task(self._link.run(), name="sdk-realtime")
        else:
            self._link.join(room)
            if self._link.state.fallback:
                room.start_polling()
        return room

    async def leave(self, webinar_id: int) -> None:
        """Stop receiving a webinar's changes; its iterator ends."""
        room = self._rooms.pop(webinar_id, None)
        if room is None:
            return
        room.close()
        if self._link is not None:
            self._link.leave(room)
        await asyncio.gather(*room.tasks(), return_exceptions=True)

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, webinar_id: int, content: str, *,
                   client_msg_id: str | None = None) -> ChatMessage:
        """Send a message and return it as stored.

        The message gets one `client_msg_id` (a new UUID unless given) that every retry reuses,
        so it is stored at most once. Timeouts, network errors and 5xx are retried with backoff,
        429 after its Retry-After, an expired token after renewing it — until the server stores
        it (200), says it already has it (409: the stored message is returned), or refuses it
        (`SendRejected`). `SendGaveUp` after `config.send_give_up_after` seconds, if set.
        A change seen in the feed carrying this `client_msg_id` also completes the send.
        """
        self._check_usable()
        cmid = client_msg_id or str(uuid.uuid4())
        echo = self._echo.get(cmid)
        if echo is None or echo.done():
            echo = asyncio.get_running_loop().create_future()
            self._echo[cmid] = echo
        try:
            message = await self._send_loop(webinar_id, content, cmid, echo)
        finally:
            if self._echo.get(cmid) is echo:
                del self._echo[cmid]
        room = self._rooms.get(webinar_id)
        if room is not None:
            room.conversation.reconcile(message, room.last_seq)
        return message

    async def _send_loop(self, webinar_id: int, content: str, cmid: str,
                         echo: asyncio.Future[ChatMessage]) -> ChatMessage:
        body = {"webinarId": webinar_id, "content": content, "clientMsgId": cmid}
        started = time.monotonic()
        failures = renewals = attempts = 0
        while True:
            self._check_usable()
            token = ""
            try:
                token = await self._auth.token()
                attempts += 1
                outcome = await self._attempt_send(body, token, echo, attempt=attempts)
            except TransientError as exc:  # the token renewal itself could not reach the server
                outcome = RetryLater(str(exc))
            if isinstance(outcome, ChatMessage):
                self._send_succeeded(webinar_id, cmid, via="feed", duplicate=True,
                                     attempts=attempts, started=started)
                return outcome
            if isinstance(outcome, Stored):
                try:
                    message = ChatMessage.from_payload(outcome.message)
                except ProtocolError:
                    if outcome.duplicate:
                        raise
                    outcome = RetryLater("unreadable 200 answer")
                else:
                    self._send_succeeded(webinar_id, cmid,
                                         via="http-409" if outcome.duplicate else "http",
                                         duplicate=outcome.duplicate, attempts=attempts,
                                         started=started)
                    return message
            if isinstance(outcome, RenewToken):
                renewals += 1
                if renewals > MAX_SEND_RENEWALS:
                    self._send_failed(webinar_id, cmid, status=401, code=outcome.code,
                                      error="token refused after renewal", attempts=attempts)
                    raise AuthenticationError(401, outcome.code, "token refused after renewal")
                try:
                    await self._auth.renew(token)
                    continue
                except TransientError as exc:
                    outcome = RetryLater(str(exc))
            if not isinstance(outcome, RetryLater):
                self._send_failed(webinar_id, cmid, status=outcome.status, code=outcome.code,
                                  error=outcome.message, attempts=attempts)
                log.info("sdk_send_error", webinar_id=webinar_id, client_msg_id=cmid,
                         status=outcome.status, code=outcome.code)
                raise SendRejected(outcome.status, outcome.code, outcome.message, cmid,
                                   banned_until=parse_banned_until(outcome.banned_until))
            if outcome.delay is not None:
                delay = outcome.delay
            else:
                failures += 1
                delay = backoff_delay(failures, self.config.send_retry_base,
                                      self.config.send_retry_cap, self.config.jitter, self._rng)
            limit = self.config.send_give_up_after
            if limit is not None and time.monotonic() - started + delay > limit:
                self._send_failed(webinar_id, cmid, status=None, code="gave_up",
                                  error=outcome.reason, attempts=attempts)
                raise SendGaveUp(cmid, outcome.reason)
            self.stats.send_retries += 1
            log.info("sdk_send_retry", webinar_id=webinar_id, client_msg_id=cmid,
                     reason=outcome.reason, delay=round(delay, 3))
            await asyncio.wait({echo}, timeout=delay)
            if echo.done():
                message = self._echo_result(echo)  # stored by an earlier attempt: a success
                self._send_succeeded(webinar_id, cmid, via="feed", duplicate=True,
                                     attempts=attempts, started=started)
                return message

    def _send_succeeded(self, webinar_id: int, cmid: str, *, via: str, duplicate: bool,
                        attempts: int, started: float) -> None:
        self.stats.sends_ok += 1
        self.stats.send_duplicates += int(duplicate)
        self._report("send_success", webinar_id, clientMsgId=cmid, via=via, attempts=attempts,
                     latencyMs=round((time.monotonic() - started) * 1000))

    def _send_failed(self, webinar_id: int, cmid: str, *, status: int | None, code: str,
                     error: str, attempts: int) -> None:
        self.stats.send_errors += 1
        self._report("send_error", webinar_id, clientMsgId=cmid, status=status, code=code,
                     errorMessage=error, attempts=attempts)

    def _send_timed_out(self, body: dict[str, Any], attempt: int) -> None:
        self.stats.send_timeouts += 1
        self._report("send_timeout", body["webinarId"], clientMsgId=body["clientMsgId"],
                     attempts=attempt, timeoutMs=round(self.config.send_timeout * 1000))

    async def _attempt_send(self, body: dict[str, Any], token: str,
                            echo: asyncio.Future[ChatMessage], *, attempt: int = 1
                            ) -> SendOutcome | ChatMessage:
        assert self._http is not None
        post = asyncio.ensure_future(self._http.post(
            "/api/messages/create", json=body, timeout=self.config.send_timeout,
            headers={"Authorization": f"Bearer {token}"}))
        try:
            waiting: set[asyncio.Future[Any]] = {post, echo}
            done, _ = await asyncio.wait(waiting, timeout=self.config.send_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if post in done:
                try:
                    response = post.result()
                except httpx.TimeoutException:
                    self._send_timed_out(body, attempt)
                    return RetryLater("timeout")
                except httpx.TransportError as exc:
                    return RetryLater(f"{type(exc).__name__}: {exc}")
                return classify_send_response(response.status_code, decode_body(response),
                                              response.headers.get("retry-after"))
            if echo in done:
                return self._echo_result(echo)
            self._send_timed_out(body, attempt)
            log.info("sdk_send_timeout", client_msg_id=body["clientMsgId"],
                     after_s=self.config.send_timeout)
            return RetryLater("timeout")
        finally:
            if not post.done():
                post.cancel()
                await asyncio.gather(post, return_exceptions=True)

    def _echo_result(self, echo: asyncio.Future[ChatMessage]) -> ChatMessage:
        return echo.result()  # raises ClientClosed if the client closed meanwhile

    # --- moderation ------------------------------------------------------------------------------

    async def hide(self, message_id: int, hidden: bool = True) -> ChatMessage:
        """Hide (or unhide) a message (moderators and hosts)."""
        body = await self._api.request("POST", f"/api/messages/{message_id}/hide",
                                       json={"hidden": hidden})
        return ChatMessage.from_payload(body.get("message"))

    async def delete(self, message_id: int) -> None:
        """Delete a message (moderators and hosts, or its author)."""
        await self._api.request("DELETE", f"/api/messages/{message_id}")

    async def timeout(self, webinar_id: int, user_id: int, seconds: int) -> datetime | None:
        """Time an attendee out of the webinar's chat for `seconds` (1–31536000; moderators,
        hosts, admins). Returns when the timeout ends. Their live subscriptions stop at once."""
        return await self._set_ban(webinar_id, user_id, seconds)

    async def ban(self, webinar_id: int, user_id: int) -> None:
        """Ban an attendee from the webinar's chat permanently (until `unban`)."""
        await self._set_ban(webinar_id, user_id, None)

    async def unban(self, webinar_id: int, user_id: int) -> None:
        """End a ban or a timeout early."""
        await self._api.request("DELETE", f"/api/webinars/{webinar_id}/bans/{user_id}")

    async def bans(self, webinar_id: int) -> list[dict[str, Any]]:
        """Who is banned or timed out now: `[{user_id, display_name, banned_until}]`."""
        return list((await self._api.get(f"/api/webinars/{webinar_id}/bans")).get("bans") or [])

    async def _set_ban(self, webinar_id: int, user_id: int, seconds: int | None
                       ) -> datetime | None:
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)
                                    or seconds < 1):
            raise ValueError("seconds must be a positive integer")
        body = await self._api.request("POST", f"/api/webinars/{webinar_id}/bans",
                                       json={"user_id": user_id, "duration_s": seconds})
        return parse_banned_until((body.get("ban") or {}).get("banned_until"))

    # --- room state: chat mode, slow mode, pinned announcement ------------------------------------

    async def set_chat_mode(self, webinar_id: int, mode: str) -> RoomState:
        """`everyone`, `hosts_only` (attendees' messages seen by staff and their author only) or
        `read_only` (hosts). Every viewer gets the ROOM event; returns the new state."""
        if mode not in CHAT_MODES:
            raise ValueError(f"mode must be one of {CHAT_MODES}")
        return await self._change_room(webinar_id, "PATCH", "", {"chat_mode": mode})

    async def set_slow_mode(self, webinar_id: int, seconds: int) -> RoomState:
        """Seconds an attendee waits between two messages, 0 to turn it off (hosts)."""
        return await self._change_room(webinar_id, "PATCH", "", {"slow_mode_seconds": seconds})

    async def pin(self, webinar_id: int, content: str) -> RoomState:
        """Pin an announcement above everyone's chat, replacing any earlier one (staff)."""
        return await self._change_room(webinar_id, "PUT", "/pin", {"content": content})

    async def unpin(self, webinar_id: int) -> RoomState:
        """Remove the pinned announcement (staff)."""
        return await self._change_room(webinar_id, "DELETE", "/pin", None)

    async def _change_room(self, webinar_id: int, method: str, suffix: str,
                           body: dict[str, Any] | None) -> RoomState:
        answer = await self._api.request(method, f"/api/webinars/{webinar_id}{suffix}",
                                         json=body)
        webinar = answer.get("webinar") or {}
        state = RoomState.from_payload(webinar)
        room = self._rooms.get(webinar_id)
        if room is not None and isinstance(webinar.get("last_seq"), int):
            room.apply_room(state, webinar["last_seq"])  # as its ROOM event will
        return state

    # --- Q&A (docs/webinar-features.md, "Q&A") ---------------------------------------------------

    async def ask(self, webinar_id: int, content: str, *,
                  client_msg_id: str | None = None) -> Question:
        """Ask a Q&A question. Idempotent: retried with the same `client_msg_id` (one is made if
        not given) after network trouble, and a retry of a stored question returns it."""
        cmid = client_msg_id or str(uuid.uuid4())
        path = f"/api/webinars/{webinar_id}/questions"
        for attempt in range(1, 6):
            try:
                response = await self._api.respond("POST", path,
                                                   json={"content": content, "clientMsgId": cmid})
            except TransientError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            if response.status_code in (200, 409):
                body = response.json()
                if isinstance(body, dict) and isinstance(body.get("question"), dict):
                    return self._question_seen(webinar_id, body["question"])
            if response.status_code >= 500 and attempt < 5:
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            code, message = error_of(response)
            raise (Banned if code in BAN_CODES else ApiError)(response.status_code, code,
                                                              message)
        raise AssertionError("unreachable")

    async def vote(self, question_id: int, voted: bool = True) -> Question:
        """Upvote a question (once: voting again changes nothing), or with `voted=False` take the
        vote back. Returns its state, with `voted`."""
        body = await self._api.request("POST", f"/api/questions/{question_id}/vote",
                                       json={"voted": voted})
        question = Question.from_payload(body.get("question"))
        room = self._rooms.get(question.webinar_id)
        if room is not None:
            room.questions.remember_vote(question.id, voted)
            room.questions.apply(question.id, question, question.seq)
        return replace(question, voted=voted)

    async def unvote(self, question_id: int) -> Question:
        return await self.vote(question_id, False)

    async def set_question_status(self, question_id: int, status: str) -> Question:
        """`answered`, `dismissed` (hidden from attendees) or `open` (moderators and hosts)."""
        if status not in QUESTION_STATUSES:
            raise ValueError(f"status must be one of {QUESTION_STATUSES}")
        body = await self._api.request("POST", f"/api/questions/{question_id}/status",
                                       json={"status": status})
        return self._question_seen(None, body.get("question"))

    async def questions(self, webinar_id: int, *, sort: str = "votes") -> list[Question]:
        """`GET …/questions`: every question this user may see, each with their own `voted`;
        a joined room's `room.questions` takes them too."""
        body = await self._api.get(f"/api/webinars/{webinar_id}/questions", {"sort": sort})
        found = [Question.from_payload(raw) for raw in body.get("questions") or []]
        room = self._rooms.get(webinar_id)
        if room is not None:
            room.questions.load(found)
        return found

    def _question_seen(self, webinar_id: int | None, raw: Any) -> Question:
        question = Question.from_payload(raw)
        room = self._rooms.get(question.webinar_id if webinar_id is None else webinar_id)
        if room is not None:
            room.questions.apply(question.id, question, question.seq)  # as its event will
        return question

    async def presence(self, webinar_id: int) -> int:
        """`GET …/presence`: how many users are connected to the webinar now (by socket or
        long-poll, staff included; approximate across server processes). A joined room's
        `room.presence` takes it too; with a socket it also follows the server's frames."""
        count = (await self._api.get(f"/api/webinars/{webinar_id}/presence")).get("count")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ChatError(f"presence: unexpected answer {count!r}")
        room = self._rooms.get(webinar_id)
        if room is not None:
            room.presence = count
        return count

    async def me(self) -> dict[str, Any]:
        """`GET /api/me`: `{user, webinars: [{id, title, chat_open}]}`."""
        return await self._api.get("/api/me")

    # --- called by rooms and the link ------------------------------------------------------------

    @property
    def _auth(self) -> AuthSession:
        if self._auth_session is None:
            raise RuntimeError("use `async with ChatClient(...)` (or await start()) first")
        return self._auth_session

    @property
    def _api(self) -> Api:
        if self._api_client is None:
            raise RuntimeError("use `async with ChatClient(...)` (or await start()) first")
        return self._api_client

    def _link_state(self) -> LinkState:
        assert self._link is not None
        return self._link.state

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ClientClosed("client closed")
        if self._http is None:
            raise RuntimeError("use `async with ChatClient(...)` (or await start()) first")

    def _token_renewed(self, token: str) -> None:
        if self._link is not None:
            self._link.push_token(token)

    def _on_delivered(self, event: ChangeEvent) -> None:
        new = event.new
        if new is None or new.client_msg_id is None or new.user_id != self.user_id:
            return
        echo = self._echo.get(new.client_msg_id)
        if echo is not None and not echo.done():
            echo.set_result(new)

    def _fallback_on(self, reason: str, *, code: str) -> None:
        """`code`: "socket_failures" or "silence" (the browser's reasons); `reason` says more."""
        self.stats.fallback_activations += 1
        log.warning("sdk_fallback_activated", reason=reason, rooms=len(self._rooms))
        failures = self._link.state.failures if self._link is not None else 0
        self._report_link_event("fallback_activated", reason=code, detail=reason,
                                reconnectTries=failures)
        for room in self._rooms.values():
            room.start_polling()

    def _fallback_off(self) -> None:
        log.info("sdk_fallback_off")
        for room in self._rooms.values():
            room.stop_polling()

    def _room_failed(self, room: Room, error: ApiError) -> None:
        if isinstance(error, AuthenticationError):
            self._fatal(error)
            return
        log.warning("sdk_room_failed", webinar_id=room.webinar_id, error=str(error))
        if self._rooms.get(room.webinar_id) is room:
            del self._rooms[room.webinar_id]
        room.close(error if isinstance(error, JoinError) else
                   JoinError(error.status, error.code, error.message,
                             banned_until=error.banned_until))
        if self._link is not None:
            self._link.leave(room)

    def _report(self, event_type: str, webinar_id: int | None, **metadata: Any) -> None:
        """Queue a monitoring event (client/monitor.py): never waits, never raises."""
        try:
            user = self._auth_session.user if self._auth_session is not None else None
            uid = (user or {}).get("id")
            self._reporter.track(event_type, webinar_id=webinar_id,
                                 user_id=uid if isinstance(uid, int) else None,
                                 metadata=metadata)
        except Exception as exc:  # monitoring must never break a send or the socket
            log.debug("sdk_event_not_recorded", type=event_type,
                      error=f"{type(exc).__name__}: {exc}")

    def _report_link_event(self, event_type: str, **metadata: Any) -> None:
        """An event of the shared socket: it concerns every joined room (webinarId when there
        is just one)."""
        ids = sorted(self._rooms)
        if len(ids) > 1:
            metadata["webinarIds"] = ids[:20]
        self._report(event_type, ids[0] if len(ids) == 1 else None, **metadata)

    def _fatal(self, error: ChatError) -> None:
        """The session cannot go on (its credentials are no longer accepted)."""
        if self._error is not None:
            return
        log.error("sdk_session_failed", error=str(error))
        self._error = error
        self._reporter.disable()  # its posts would only be refused
        for room in self._rooms.values():
            room.close(error)
        for future in self._echo.values():
            if not future.done():
                future.set_exception(error)
                future.exception()
        if self._link_task is not None:
            self._link_task.cancel()


def _parse_messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list):
        raise ProtocolError("messages must be a list")
    return [ChatMessage.from_payload(m) for m in raw]
