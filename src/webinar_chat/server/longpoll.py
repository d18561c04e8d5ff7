"""Long-poll answers of `GET /api/webinars/{id}/changes`: the shared body builder and the parked-poll
bookkeeping of the protocol-level fast path (http_protocol.py).

A change wakes every long-poller of a room at once, and the woken pollers share their `after_seq`,
so the room answers them from one body per (audience, after_seq, limit) — `Room.poll_bodies`. The
fast path goes further: a hot long-poll is *parked* here, in its room, without an ASGI request
cycle; the hub's flush moves the groups that have something new to the room's answer queue, which
is drained ANSWER_SLICE polls per loop pass, each written one prebuilt HTTP response (status
line, headers, body). Everything here but `ParkedPolls` is pure: no I/O, no event loop.
Design: docs/realtime.md ("Long-poll fallback").
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..logs import detached
from ..protocol.events import Audience
from .request_ids import NOSNIFF, REQUEST_ID_HEADER, sane_request_id

if TYPE_CHECKING:
    from .hub import Room

# (audience, after_seq, limit, viewer): pollers that share one body. `viewer` is 0 except for an
# attendee whose own staff-only message is in the ring (`viewer_key`): that answer is theirs.
PollKey = tuple[Audience, int, int, int]


def viewer_key(room: Room, key: PollKey, user_id: int) -> PollKey:
    """The body key for `user_id`'s answer: the shared one unless the ring holds a staff-only
    message of theirs (docs/webinar-features.md, "Chat modes"). Decided when answering, not when
    parking: the message may arrive in the very flush that answers the poll."""
    if key[0] is Audience.ATTENDEE and user_id in room.private_authors:
        return (key[0], key[1], key[2], user_id)
    return key

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
MAX_SEQ = 2**63 - 1
_PATH = re.compile(r"/api/webinars/(\d{1,18})/changes")
_INT = re.compile(rb"\d{1,19}")
# A plain decimal: anything fancier ("1e1", "inf", " 2") is left to the slow path's float().
_SECONDS = re.compile(rb"\d{1,6}(?:\.\d{1,6})?")


@dataclass(frozen=True, slots=True)
class PollRequest:
    """A `/changes` request the fast path may serve: every parameter already valid."""

    webinar_id: int
    token: str
    after_seq: int
    limit: int
    wait: float
    request_id: bytes | None = None  # a sane incoming X-Request-ID, else one is generated


def parse_poll(method: str, path: str, query: bytes, headers: Iterable[tuple[bytes, bytes]],
               max_wait: float) -> PollRequest | None:
    """The long-poll in a request, or None for anything else — also for every request the slow
    path would refuse or might read differently (unknown or repeated parameters, escapes, a
    body, an odd `Authorization`). None means "hand it to Starlette", which stays the only place
    that builds an error answer; so this only has to be *strict*, never complete."""
    if method != "GET":
        return None
    match = _PATH.fullmatch(path)
    if match is None:
        return None
    params: dict[bytes, bytes] = {}
    if query:
        for part in query.split(b"&"):
            name, eq, value = part.partition(b"=")
            if not eq or name in params or name not in (b"after_seq", b"limit", b"wait"):
                return None
            params[name] = value
    raw_wait = params.get(b"wait")
    if raw_wait is None or _SECONDS.fullmatch(raw_wait) is None:
        return None
    wait = float(raw_wait)
    if not 0 < wait <= max_wait:
        return None
    after_seq, limit = 0, DEFAULT_LIMIT
    raw = params.get(b"after_seq")
    if raw is not None:
        if _INT.fullmatch(raw) is None or int(raw) > MAX_SEQ:
            return None
        after_seq = int(raw)
    raw = params.get(b"limit")
    if raw is not None:
        if _INT.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_LIMIT:
            return None
        limit = int(raw)
    token = None
    request_id: bytes | None = None
    seen_request_id = False
    for name, value in headers:
        if name == b"authorization":
            if token is None:
                token = value  # Starlette reads the first one
        elif name == REQUEST_ID_HEADER:
            if not seen_request_id:  # the middleware reads the first one too
                seen_request_id = True
                request_id = sane_request_id(value)
        elif name in (b"content-length", b"transfer-encoding", b"expect"):
            return None  # a GET with a body: rare, and the slow path knows what to do
    if token is None:
        return None
    scheme, _, credentials = token.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return PollRequest(int(match[1]), credentials, after_seq, limit, wait, request_id)


# --- bodies --------------------------------------------------------------------------------------

def changes_body(encoded: list[bytes], last_seq: int, has_more: bool) -> bytes:
    """The JSON body of a `/changes` answer from already encoded events."""
    return b"".join((b'{"success":true,"changes":[', b",".join(encoded), b'],"last_seq":',
                     str(last_seq).encode(), b',"has_more":', b"true" if has_more else b"false",
                     b"}"))


def ring_body(room: Room, key: PollKey) -> bytes | None:
    """The answer for `key` from the room's memory (memoized until the room's next flush), or
    None when the ring does not reach back to `after_seq` (then the database must answer).
    Call `Hub.settle(room)` first unless inside the flush."""
    body = room.poll_bodies.get(key)
    if body is not None:
        return body
    audience, after_seq, limit, viewer = key
    encoded = room.ring_after(after_seq, audience, limit, viewer or None)
    if encoded is None:
        return None
    last_seq = after_seq + len(encoded)
    body = changes_body(encoded, last_seq, last_seq < room.released_seq)
    room.poll_bodies[key] = body
    return body


def response_parts(default_headers: Iterable[tuple[bytes, bytes]], body: bytes
                   ) -> tuple[bytes, bytes]:
    """The answer for `body` cut where the per-request `x-request-id` line goes: the status line
    and headers as uvicorn writes them for Starlette's `JSONResponse(body)` (errors.py) —
    uvicorn's default headers (date, server), then content-length and content-type as
    Starlette's `Response.init_headers` orders them — and the blank line + body. The middleware
    appends `x-content-type-options` and `x-request-id` after Starlette's headers, so they go
    between the two parts."""
    parts = [b"HTTP/1.1 200 OK\r\n"]
    for name, value in default_headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"content-length: ", str(len(body)).encode(), b"\r\n",
              b"content-type: application/json\r\n")
    return b"".join(parts), b"\r\n" + body


_NOSNIFF_LINE = NOSNIFF[0] + b": " + NOSNIFF[1] + b"\r\n"


def with_request_id(head: bytes, tail: bytes, request_id: bytes) -> bytes:
    return b"".join((head, _NOSNIFF_LINE, REQUEST_ID_HEADER, b": ", request_id, b"\r\n", tail))


def json_response(default_headers: Iterable[tuple[bytes, bytes]], body: bytes, *,
                  request_id: bytes, keep_alive: bool = True) -> bytes:
    """The exact bytes the slow path writes for `body`, with `connection: close` where uvicorn
    adds it (the fast path inserts that line itself: http_protocol.py `finish`)."""
    head, tail = response_parts(default_headers, body)
    if not keep_alive:
        tail = b"connection: close\r\n" + tail
    return with_request_id(head, tail, request_id)


# --- parked polls --------------------------------------------------------------------------------

class ParkedPoll(Protocol):
    """A long-poll waiting in a room, as http_protocol.py implements it."""

    key: PollKey
    slot: int  # its timeout's EXPIRY_SLOT_S slot, set by park()
    user_id: int

    def answer(self) -> None:
        """Answer now with what the room has (`ParkedPolls.response`), or hand the request to the
        slow path if the ring cannot answer it. Called once, after the poll left the room."""

    def abort(self) -> None:
        """Drop the request's connection (its answer raised; the client re-polls)."""

    def recheck(self) -> None:
        """Hand the request to the slow path, which checks the permission fresh. Called once,
        after the poll left the room."""


class HeaderSource(Protocol):
    """uvicorn's `ServerState`: its `default_headers` (date, server) are replaced every second."""

    default_headers: list[tuple[bytes, bytes]]


# Parked polls time out in slots of this length: one timer per slot and room instead of one per
# poll (uvloop's call_later + cancel was ~16 % of the server's CPU at 10,000 pollers). A poll's
# empty answer comes at most this much after its `wait`; clients allow far more (wait + their
# HTTP timeout).
EXPIRY_SLOT_S = 0.05
# Answers written per loop pass. Woken, timed-out and immediately answerable polls all queue in
# the room and are answered this many at a time, one slice per pass (call_soon): each pass then
# stays a few ms long — the slice, plus the re-polls the previous slice caused — so a send's
# database hops run between slices instead of behind 10,000 answers (asyncio gives writes no
# priority over reads). Answering at the slice's time, not the wake-up's, also gives each poller
# the newest changes, so it re-polls once per slice instead of once per message.
ANSWER_SLICE = 100


class ParkedPolls:
    """The fast-path long-polls of one room: parked (grouped by the body they will get) or ready
    to be answered (`ready`, drained ANSWER_SLICE per loop pass).

    The hub calls `release()` at the end of each flush and `expire_all()` at shutdown; a poll that
    leaves early (disconnect) calls `remove()`; timeouts fire per slot. `room.waiters` counts
    parked polls as well as slow-path waiters (the idle sweep and the tests read it)."""

    __slots__ = ("room", "groups", "slots", "ready", "draining", "headers", "loop", "responses")

    def __init__(self, room: Room) -> None:
        self.room = room
        self.groups: dict[PollKey, dict[ParkedPoll, None]] = {}
        self.slots: dict[int, dict[ParkedPoll, None]] = {}
        self.ready: collections.deque[ParkedPoll] = collections.deque()
        self.draining = False
        self.headers: HeaderSource | None = None  # set by the first park()/answer_soon()
        self.loop: asyncio.AbstractEventLoop | None = None  # likewise
        self.responses: dict[PollKey, tuple[bytes, list[tuple[bytes, bytes]],
                                            tuple[bytes, bytes]]] = {}

    def __bool__(self) -> bool:
        return bool(self.groups)

    def park(self, poll: ParkedPoll, headers: HeaderSource, loop: asyncio.AbstractEventLoop,
             wait: float) -> None:
        """Park `poll` until a flush has something newer for it, or `wait` seconds."""
        self.headers = headers
        self.loop = loop
        group = self.groups.get(poll.key)
        if group is None:
            group = self.groups[poll.key] = {}
        group[poll] = None
        poll.slot = slot = math.ceil((loop.time() + wait) / EXPIRY_SLOT_S)
        expiring = self.slots.get(slot)
        if expiring is None:
            expiring = self.slots[slot] = {}
            loop.call_at(slot * EXPIRY_SLOT_S, self._expire_slot, slot, context=detached())
        expiring[poll] = None
        self.room.waiters += 1

    def answer_soon(self, poll: ParkedPoll, headers: HeaderSource,
                    loop: asyncio.AbstractEventLoop) -> None:
        """Queue a poll the room can already answer (its turn comes within a few slices)."""
        self.headers = headers
        self.loop = loop
        self.ready.append(poll)
        self._drain_soon()

    def remove(self, poll: ParkedPoll) -> bool:
        """Take a parked `poll` out; False if it was not parked (answered or queued)."""
        group = self.groups.get(poll.key)
        if group is None or poll not in group:
            return False
        del group[poll]
        if not group:
            del self.groups[poll.key]
        self._unslot(poll)
        self._left(1)
        return True

    def response(self, key: PollKey, body: bytes, request_id: bytes) -> bytes:
        """The full HTTP answer for `body`; all but the request id is built once per body and
        `date`."""
        assert self.headers is not None
        headers = self.headers.default_headers
        memo = self.responses.get(key)
        if memo is not None and memo[0] is body and memo[1] is headers:
            head, tail = memo[2]
        else:
            head, tail = response_parts(headers, body)
            self.responses[key] = (body, headers, (head, tail))
        return with_request_id(head, tail, request_id)

    def _unslot(self, poll: ParkedPoll) -> None:
        expiring = self.slots.get(poll.slot)
        if expiring is not None:
            expiring.pop(poll, None)

    def _left(self, count: int) -> None:
        self.room.waiters -= count
        self.room.last_used = time.monotonic()

    def recheck(self, user_id: int) -> None:
        """`user_id`'s permission changed: their parked polls leave the room for the slow path
        (server/access_changes.py)."""
        mine = [poll for group in self.groups.values() for poll in group
                if poll.user_id == user_id]
        for poll in mine:
            if self.remove(poll):
                try:
                    poll.recheck()
                except Exception as exc:
                    self.room.metrics.background_failure("longpoll_answer", exc,
                                                         webinar_id=self.room.webinar_id)

    def _expire_slot(self, slot: int) -> None:
        try:
            for poll in list(self.slots.pop(slot, ())):
                if self.remove(poll):
                    self.ready.append(poll)
        finally:
            self._drain_soon()

    def release(self) -> None:
        """After a flush put new changes in the ring: queue every group that has something new.
        Groups already up to date (their `after_seq` is past what this flush carried) stay."""
        newest = self.room.ring[-1].seq if self.room.ring else -1
        for key in [key for key in self.groups if key[1] < newest]:
            group = self.groups.pop(key)
            self._left(len(group))
            for poll in group:
                self._unslot(poll)
            self.ready.extend(group)
        self._drain_soon()

    def _drain_soon(self) -> None:
        if self.ready and not self.draining and self.loop is not None:
            self.draining = True
            self.loop.call_soon(self._drain, context=detached())

    def _drain(self) -> None:
        self.draining = False
        ready = self.ready
        try:
            for _ in range(min(ANSWER_SLICE, len(ready))):
                self._answer(ready.popleft())
        finally:
            self._drain_soon()

    def _answer(self, poll: ParkedPoll) -> None:
        try:
            poll.answer()
        except Exception as exc:
            # One poll whose answer failed loses its connection (the client re-polls from its
            # last seq); the rest of the queue is answered as usual.
            self.room.metrics.background_failure("longpoll_answer", exc,
                                                 webinar_id=self.room.webinar_id)
            try:
                poll.abort()
            except Exception as abort_error:
                self.room.metrics.background_failure("longpoll_answer", abort_error,
                                                     webinar_id=self.room.webinar_id)

    def expire_all(self) -> None:
        """Answer every parked and queued poll now, with what it has (shutdown)."""
        groups, self.groups = self.groups, {}
        self.slots.clear()
        for group in groups.values():
            self._left(len(group))
            self.ready.extend(group)
        while self.ready:
            self._answer(self.ready.popleft())
