"""The per-connection realtime protocol as a state machine without I/O (docs/realtime.md).

The adapter (server/realtime.py) feeds it client frames, the results of the I/O it asked for, and
live batches from rooms; it answers with `Action`s for the adapter to perform, in order. Nothing
here awaits, so every rule — replay-then-live without gap or duplicate, join replacement, token
expiry suspending delivery — is unit-tested without sockets (tests/protocol/test_session.py).

Subscription states (an illegal transition raises):

    AUTHORIZING --access ok--> REPLAYING --replay done--> LIVE
         ^  \\--denied--> (removed)            ^   |  gap in live batch
         |                                     |   v
         +--- token renewed --- SUSPENDED <----+ REPLAYING (refetch)
                                   ^ token expired/invalid (from any state)
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .events import Audience, Change, changes_frame, encode_for, parse_topic, topic_name

# Topics one connection may join (the server passes REALTIME_MAX_TOPICS); one more join gets
# `too_many_topics` and the socket stays open.
MAX_TOPICS_PER_CONNECTION = 10
# Live changes buffered per topic while its replay runs; beyond this the client is too far behind
# to catch up through this socket and is better served reconnecting.
MAX_REPLAY_BUFFER = 10_000
# Events per replay frame: large enough to catch up quickly, small enough to keep frames < ~1 MB.
REPLAY_FRAME_EVENTS = 200


class SubState(enum.Enum):
    AUTHORIZING = "authorizing"
    REPLAYING = "replaying"
    LIVE = "live"
    SUSPENDED = "suspended"


_ALLOWED: dict[SubState, frozenset[SubState]] = {
    SubState.AUTHORIZING: frozenset({SubState.REPLAYING, SubState.SUSPENDED}),
    SubState.REPLAYING: frozenset({SubState.LIVE, SubState.SUSPENDED, SubState.REPLAYING}),
    SubState.LIVE: frozenset({SubState.REPLAYING, SubState.SUSPENDED}),
    SubState.SUSPENDED: frozenset({SubState.AUTHORIZING}),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Batch:
    """One room tick's changes, contiguous in seq, with frames encoded once per audience."""

    webinar_id: int
    first_seq: int
    last_seq: int
    changes: list[Change]
    frames: dict[Audience, bytes]
    sealed_at: float = 0.0  # time.monotonic() when the hub sealed it (the fan-out histogram)
    # The attendee frame as the author of a staff-only message in this batch sees it, by author
    # (docs/webinar-features.md, "Chat modes"); empty for nearly every batch.
    personal: dict[int, bytes] = field(default_factory=dict)


class Subscription:
    __slots__ = ("webinar_id", "topic", "generation", "state", "delivered_seq", "audience",
                 "viewer_id", "buffer", "ref", "requested_seq", "owner", "encoding",
                 "offered_seq")

    def __init__(self, webinar_id: int, generation: int, requested_seq: int | None, ref: Any,
                 owner: Any, *, topic: str | None = None, encoding: Any = None) -> None:
        self.webinar_id = webinar_id
        self.topic = topic or topic_name(webinar_id)
        # Another protocol's frames (protocol/phoenix.py `Channel`): the hub asks it for this
        # subscriber's frames instead of using the room's own (None: our protocol).
        self.encoding = encoding
        self.generation = generation
        self.state = SubState.AUTHORIZING
        # Highest seq this connection has been sent for the topic (None until known).
        self.delivered_seq: int | None = None
        # Highest seq of a batch the room's fan-out has offered this subscription (taken shared
        # or handed to `on_batch`): each batch is offered once, though a pass may carry it twice.
        self.offered_seq = -1
        self.requested_seq = requested_seq
        self.audience = Audience.ATTENDEE
        self.viewer_id: int | None = None  # whose subscription: their own staff-only messages
        self.buffer: list[Change] = []
        self.ref = ref
        self.owner = owner  # the adapter's connection object; opaque here

    def move(self, new: SubState) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"{self.state.value} -> {new.value}")
        self.state = new

    def take_shared(self, first_seq: int, last_seq: int) -> bool:
        """Fan-out fast path: True if the room's shared frame is exactly the next thing this
        subscriber needs (then it counts as delivered); False → ask the session (`on_batch`)."""
        if self.state is SubState.LIVE and self.delivered_seq == first_seq - 1:
            self.delivered_seq = last_seq
            return True
        return False


# --- actions -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckAccess:
    """Look up the user's access to the webinar, then call `on_access` / `on_access_denied`."""

    webinar_id: int
    generation: int
    user_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Attach to the room's live batches *now* (before the replay query): see delivery.md."""

    subscription: Subscription


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    subscription: Subscription


@dataclass(frozen=True, slots=True)
class LoadChanges:
    """Read the feed after `after_seq`, then call `on_changes`."""

    webinar_id: int
    generation: int
    after_seq: int


@dataclass(frozen=True, slots=True)
class WatchTokenExpiry:
    """Call `on_token_expiry_due` at `expires_at` (replaces any earlier watch)."""

    expires_at: float


Action = Send | Close | CheckAccess | Subscribe | Unsubscribe | LoadChanges | WatchTokenExpiry


def _frame(**payload: Any) -> Send:
    return Send(orjson.dumps(payload))


def error_frame(code: str, message: str, **extra: Any) -> Send:
    return _frame(type="error", code=code, message=message, **extra)


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int
    expires_at: float


class TokenRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# verify(token) -> Identity, raising TokenRejected(code, message).
TokenVerifier = Callable[[str], Identity]


@dataclass
class Session:
    verify_token: TokenVerifier
    owner: Any = None
    # The adapter's frame for (subscription, changes) shared with other readers (the hub's room,
    # for a stretch of its ring: server/realtime.py), or None: then encoded here for this reader.
    shared_frame: Callable[[Subscription, list[Change]], bytes | None] | None = None
    max_topics: int = MAX_TOPICS_PER_CONNECTION
    identity: Identity | None = None
    subscriptions: dict[int, Subscription] = field(default_factory=dict)
    _generation: int = 0
    _bad_frames: int = 0
    # Whose subscriptions these are; survives a lapsed/invalid token so that a token for another
    # user never resumes them.
    _subscriber_id: int | None = None

    @property
    def user_id(self) -> int | None:
        """Whose socket this is: the user of the last valid token, kept while that token has
        lapsed or a later one was refused (the subscriptions wait for that user); None before
        the first valid token and after a log-out. The server's per-socket limits follow it."""
        return self._subscriber_id

    # --- client frames ---------------------------------------------------------------------------

    def on_connect(self, token: str | None, now: float, heartbeat_interval: float) -> list[Action]:
        actions: list[Action] = [
            _frame(type="hello", heartbeat_interval=heartbeat_interval, server_time=now)
        ]
        if token:
            actions += self._set_token(token, now, reply=True)
        return actions

    def on_text(self, text: str, now: float) -> list[Action]:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._bad_frame("Frames must be JSON objects")
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return self._bad_frame("Frames must be JSON objects with a string 'type'")
        kind = frame["type"]
        if kind == "heartbeat":
            return []
        if kind == "auth":
            token = frame.get("token")
            if token is not None and not isinstance(token, str):
                return [error_frame("bad_request", "'token' must be a string or null")]
            return self._set_token(token, now, reply=True)
        if kind == "join":
            return self._join(frame, now)
        if kind == "leave":
            webinar_id = parse_topic(frame.get("topic"))
            sub = self.subscriptions.pop(webinar_id, None) if webinar_id is not None else None
            actions: list[Action] = [Unsubscribe(sub)] if sub else []
            return actions + [_frame(type="left", topic=frame.get("topic"), ref=frame.get("ref"))]
        return [error_frame("bad_request", f"Unknown frame type {kind!r}")]

    def _bad_frame(self, message: str) -> list[Action]:
        self._bad_frames += 1
        if self._bad_frames > 10:
            return [Close(4400, "protocol error")]
        return [error_frame("bad_request", message)]

    def _join(self, frame: dict[str, Any], now: float) -> list[Action]:
        ref = frame.get("ref")
        topic = frame.get("topic")
        webinar_id = parse_topic(topic)
        if webinar_id is None:
            return [error_frame("bad_request", "topic must be 'webinar:{id}:messages'", topic=topic,
                                ref=ref)]
        last_seq = frame.get("last_seq")
        if last_seq is not None and (not isinstance(last_seq, int) or isinstance(last_seq, bool)
                                     or last_seq < 0):
            return [error_frame("bad_request", "last_seq must be a non-negative integer",
                                topic=topic, ref=ref)]
        actions: list[Action] = []
        if isinstance(frame.get("token"), str):
            actions += self._set_token(frame["token"], now, reply=False)
            if self.identity is None:
                return actions  # the error frame explains why
        if self.identity is None:
            return [error_frame("unauthorized", "Send an access token first", topic=topic, ref=ref)]
        return actions + self._open(webinar_id, last_seq, ref, topic)

    def _open(self, webinar_id: int, last_seq: int | None, ref: Any, topic: Any, *,
              encoding: Any = None) -> list[Action]:
        """A join with a valid token: replace the webinar's subscription or add one, then check
        access. (`topic` only for the error frame; `encoding` for another protocol's channel.)"""
        assert self.identity is not None
        actions: list[Action] = []
        previous = self.subscriptions.get(webinar_id)
        if previous is not None:
            # Re-joining replaces the subscription: drop the old one before anything else.
            actions.append(Unsubscribe(previous))
            del self.subscriptions[webinar_id]
        elif len(self.subscriptions) >= self.max_topics:
            return actions + self._too_many_topics(topic, ref)
        self._generation += 1
        sub = Subscription(webinar_id, self._generation, last_seq, ref, self.owner,
                           topic=topic if encoding is not None else None, encoding=encoding)
        self.subscriptions[webinar_id] = sub
        actions.append(CheckAccess(webinar_id, sub.generation, self.identity.user_id))
        return actions

    def _too_many_topics(self, topic: Any, ref: Any) -> list[Action]:
        return [error_frame("too_many_topics", f"At most {self.max_topics} topics per connection",
                            topic=topic, ref=ref)]

    # --- tokens ----------------------------------------------------------------------------------

    def _set_token(self, token: str | None, now: float, *, reply: bool) -> list[Action]:
        if token is None:
            # Log-out: forget every subscription.
            actions: list[Action] = [Unsubscribe(s) for s in self.subscriptions.values()]
            self.subscriptions.clear()
            self.identity = None
            self._subscriber_id = None
            return actions + ([_frame(type="auth_ok", user_id=None)] if reply else [])
        try:
            identity = self.verify_token(token)
        except TokenRejected as exc:
            self.identity = None
            return self._token_refused(exc.code, str(exc))
        if identity.expires_at <= now:
            self.identity = None
            return self._token_refused("token_expired", "Access token expired")
        actions = []
        if self._subscriber_id is not None and self._subscriber_id != identity.user_id:
            # Another user on this socket: nothing of the previous user's carries over.
            actions += [Unsubscribe(s) for s in self.subscriptions.values()]
            self.subscriptions.clear()
        self.identity = identity
        self._subscriber_id = identity.user_id
        actions.append(WatchTokenExpiry(identity.expires_at))
        if reply:
            actions.append(_frame(type="auth_ok", user_id=identity.user_id,
                                  expires_at=identity.expires_at))
        for sub in self.subscriptions.values():
            if sub.state is SubState.SUSPENDED:
                sub.move(SubState.AUTHORIZING)
                self._generation += 1
                sub.generation = self._generation
                actions.append(CheckAccess(sub.webinar_id, sub.generation, identity.user_id))
        return actions

    def end(self) -> None:
        """The connection is over (its subscriptions left the hub): let go of them and of the
        owner, which they and this session point back to (a cycle for the garbage collector)."""
        self.subscriptions.clear()
        self.owner = None

    def on_token_expiry_due(self, now: float) -> list[Action]:
        if self.identity is None or self.identity.expires_at > now:
            return []  # a newer token arrived meanwhile
        self.identity = None
        return self._token_refused("token_expired", "Access token expired")

    def _token_refused(self, code: str, message: str) -> list[Action]:
        """The socket has no valid token any more: its subscriptions wait for a new one."""
        return self._suspend_all() + [error_frame(code, message)]

    def _suspend_all(self) -> list[Action]:
        for sub in self.subscriptions.values():
            if sub.state is not SubState.SUSPENDED:
                sub.move(SubState.SUSPENDED)
                sub.buffer.clear()
        return []

    # --- results of the adapter's I/O ------------------------------------------------------------

    def _current(self, webinar_id: int, generation: int) -> Subscription | None:
        sub = self.subscriptions.get(webinar_id)
        if sub is None or sub.generation != generation:
            return None  # replaced, left or logged out while the I/O ran: drop the result
        return sub

    def on_access(self, webinar_id: int, generation: int, audience: Audience, role: str,
                  head_seq: int) -> list[Action]:
        sub = self._current(webinar_id, generation)
        if sub is None or sub.state is not SubState.AUTHORIZING:
            return []
        sub.audience = audience
        sub.viewer_id = self._subscriber_id
        resumed = sub.delivered_seq is not None  # coming back from SUSPENDED
        if not resumed:
            requested = sub.requested_seq
            # A last_seq beyond the head (another database, a reset) cannot be resumed from: start
            # at the head and say so in `joined`, so the client reloads.
            sub.delivered_seq = head_seq if requested is None or requested > head_seq else requested
        sub.move(SubState.REPLAYING)
        actions: list[Action] = [Subscribe(sub)]
        if not resumed:
            actions += self._joined(sub, head_seq, role)
        assert sub.delivered_seq is not None
        actions.append(LoadChanges(webinar_id, generation, sub.delivered_seq))
        return actions

    def on_access_denied(self, webinar_id: int, generation: int, code: str,
                         message: str, extra: dict[str, Any] | None = None) -> list[Action]:
        """`extra`: more fields of the error frame (a ban's `banned_until`)."""
        sub = self._current(webinar_id, generation)
        if sub is None:
            return []
        del self.subscriptions[webinar_id]
        return [Unsubscribe(sub)] + self._denied(sub, code, message, extra or {})

    # --- the frames of our protocol (another protocol's session overrides these) ----------------

    def _joined(self, sub: Subscription, head_seq: int, role: str) -> list[Action]:
        return [_frame(type="joined", topic=sub.topic, ref=sub.ref, head_seq=head_seq,
                       resume_from=sub.delivered_seq, role=role)]

    def _denied(self, sub: Subscription, code: str, message: str,
                extra: dict[str, Any]) -> list[Action]:
        return [error_frame(code, message, topic=sub.topic, ref=sub.ref, **extra)]

    def _change_frames(self, sub: Subscription, changes: list[Change]) -> list[Action]:
        shared = self.shared_frame(sub, changes) if self.shared_frame is not None else None
        if shared is not None:
            return [Send(shared)]
        return [Send(changes_frame(sub.topic, [encode_for(c, sub.audience, sub.viewer_id)
                                               for c in changes]))]

    def on_changes(self, webinar_id: int, generation: int, changes: list[Change],
                   has_more: bool) -> list[Action]:
        """Replay/refetch result for `LoadChanges`."""
        sub = self._current(webinar_id, generation)
        if sub is None or sub.state is not SubState.REPLAYING:
            return []
        actions: list[Action] = self._send_after(sub, changes)
        if has_more:
            assert sub.delivered_seq is not None
            return actions + [LoadChanges(webinar_id, generation, sub.delivered_seq)]
        buffered = sorted(sub.buffer, key=lambda c: c.seq)
        sub.buffer = []
        assert sub.delivered_seq is not None
        if buffered and buffered[0].seq > sub.delivered_seq + 1:
            # The feed read ended before the first buffered change: read again, keep the buffer.
            sub.buffer = buffered
            return actions + [LoadChanges(webinar_id, generation, sub.delivered_seq)]
        actions += self._send_after(sub, buffered)
        sub.move(SubState.LIVE)
        return actions

    # --- live batches ----------------------------------------------------------------------------

    def on_batch(self, sub: Subscription, batch: Batch) -> list[Action]:
        """Slow path of fan-out, for a subscriber that did not `take_shared` the batch."""
        if self.subscriptions.get(sub.webinar_id) is not sub:
            return []
        if sub.state is SubState.REPLAYING or sub.state is SubState.AUTHORIZING:
            if sub.state is SubState.REPLAYING:
                sub.buffer.extend(batch.changes)
                if len(sub.buffer) > MAX_REPLAY_BUFFER:
                    return [Close(4008, "slow consumer")]
            return []
        if sub.state is SubState.SUSPENDED:
            return []
        assert sub.delivered_seq is not None
        if batch.last_seq <= sub.delivered_seq:
            return []  # all already delivered (replay overlapped)
        if batch.first_seq <= sub.delivered_seq + 1:
            return self._send_after(sub, batch.changes)  # overlap: send only the new part
        # Gap: something between what we delivered and this batch never reached this connection.
        sub.move(SubState.REPLAYING)
        sub.buffer = list(batch.changes)
        return [LoadChanges(sub.webinar_id, sub.generation, sub.delivered_seq)]

    def _send_after(self, sub: Subscription, changes: list[Change]) -> list[Action]:
        assert sub.delivered_seq is not None
        fresh = [c for c in changes if c.seq > sub.delivered_seq]
        actions: list[Action] = []
        for start in range(0, len(fresh), REPLAY_FRAME_EVENTS):
            actions += self._change_frames(sub, fresh[start:start + REPLAY_FRAME_EVENTS])
        if fresh:
            sub.delivered_seq = fresh[-1].seq
        return actions
