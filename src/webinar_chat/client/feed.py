"""Messages and change events as the SDK hands them out, and `SeqTracker`, the per-webinar rule
"apply every change exactly once, in seq order" (docs/delivery.md, guarantee 4). Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from .errors import ProtocolError


class ChangeType(enum.StrEnum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    ROOM = "ROOM"  # the room state changed: `ChangeEvent.room` (docs/webinar-features.md)
    QUESTION = "QUESTION"  # a Q&A question changed: `ChangeEvent.question` (client/questions.py)


CHAT_MODES = ("everyone", "hosts_only", "read_only")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError(f"bad time {value!r}") from None


@dataclass(frozen=True, slots=True)
class RoomState:
    """A webinar's chat mode, slow mode and pinned announcement. Every ROOM event carries all of
    it, so the state of the highest seq applied is the current one (`Room.state`)."""

    chat_mode: str = "everyone"  # everyone | hosts_only | read_only
    slow_mode_seconds: int = 0
    pinned: str | None = None
    pinned_at: datetime | None = None

    @property
    def attendees_may_post(self) -> bool:
        return self.chat_mode != "read_only"

    @classmethod
    def from_payload(cls, data: Any) -> RoomState:
        """`{chat_mode, slow_mode_seconds, pinned: {content, pinned_at} | null}` (a ROOM event's
        `new`, or the webinar object); raises `ProtocolError` if malformed."""
        if not isinstance(data, Mapping) or data.get("chat_mode") not in CHAT_MODES:
            raise ProtocolError(f"room state needs a known chat_mode: {data!r}")
        slow = _int(data.get("slow_mode_seconds"))
        if slow is None or slow < 0:
            raise ProtocolError(f"room state needs slow_mode_seconds: {dict(data)!r}")
        pinned = data.get("pinned")
        if pinned is not None and not (isinstance(pinned, Mapping)
                                       and isinstance(pinned.get("content"), str)):
            raise ProtocolError(f"bad pinned announcement {pinned!r}")
        return cls(data["chat_mode"], slow, pinned["content"] if pinned else None,
                   _time(pinned.get("pinned_at")) if pinned else None)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A message as the server showed it to this user. For an attendee a hidden message is
    redacted to `{id, webinar_id, hidden, seq}`: then `content`, `user_id`… are None."""

    id: int
    webinar_id: int
    seq: int  # the change that produced this state
    hidden: bool
    user_id: int | None
    content: str | None
    created_at: datetime | None
    client_msg_id: str | None
    display_name: str | None
    # The author's role when they posted ("attendee", "moderator", "host"): the badge. None when
    # redacted (or from a server before role badges).
    author_role: str | None = None
    # "staff": posted by an attendee in hosts_only mode, seen by staff and its author only.
    visibility: str = "everyone"

    @property
    def redacted(self) -> bool:
        return self.content is None

    @classmethod
    def from_payload(cls, data: Any) -> ChatMessage:
        """Parse a message object of the API; raises `ProtocolError` if it is malformed."""
        if not isinstance(data, Mapping):
            raise ProtocolError(f"message must be an object, got {type(data).__name__}")
        mid, webinar_id, seq = _int(data.get("id")), _int(data.get("webinar_id")), _int(
            data.get("seq"))
        if mid is None or webinar_id is None or seq is None:
            raise ProtocolError(f"message needs integer id, webinar_id and seq: {dict(data)!r}")
        content = data.get("content")
        created = data.get("created_at")
        created_at = None
        if isinstance(created, str):
            try:
                created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                raise ProtocolError(f"bad created_at {created!r}") from None
        user = data.get("user")
        name = user.get("display_name") if isinstance(user, Mapping) else None
        role = user.get("role") if isinstance(user, Mapping) else None
        cmid = data.get("client_msg_id")
        return cls(
            id=mid, webinar_id=webinar_id, seq=seq, hidden=bool(data.get("hidden", False)),
            user_id=_int(data.get("user_id")),
            content=content if isinstance(content, str) else None,
            created_at=created_at,
            client_msg_id=cmid if isinstance(cmid, str) else None,
            display_name=name if isinstance(name, str) else None,
            author_role=role if isinstance(role, str) else None,
            visibility="staff" if data.get("visibility") == "staff" else "everyone",
        )


QUESTION_STATUSES = ("open", "answered", "dismissed")


@dataclass(frozen=True, slots=True)
class Question:
    """A Q&A question as the server showed it to this user. For an attendee a dismissed question
    is redacted to `{id, webinar_id, hidden, seq}`: then `hidden` is True and the rest None.
    `voted` is this user's own vote — personal, so never in events (None when unknown)."""

    id: int
    webinar_id: int
    seq: int
    hidden: bool = False
    user_id: int | None = None
    content: str | None = None
    created_at: datetime | None = None
    status: str | None = None  # open | answered | dismissed
    votes: int = 0
    display_name: str | None = None
    author_role: str | None = None
    voted: bool | None = None

    @property
    def answered(self) -> bool:
        return self.status == "answered"

    @classmethod
    def from_payload(cls, data: Any) -> Question:
        if not isinstance(data, Mapping):
            raise ProtocolError(f"question must be an object, got {type(data).__name__}")
        qid, webinar_id, seq = (_int(data.get("id")), _int(data.get("webinar_id")),
                                _int(data.get("seq")))
        if qid is None or webinar_id is None or seq is None:
            raise ProtocolError(f"question needs integer id, webinar_id and seq: {dict(data)!r}")
        if data.get("hidden") is True:
            return cls(qid, webinar_id, seq, hidden=True)
        status = data.get("status")
        votes = _int(data.get("votes"))
        content = data.get("content")
        if status not in QUESTION_STATUSES or votes is None or votes < 0 \
                or not isinstance(content, str):
            raise ProtocolError(f"question needs status, votes and content: {dict(data)!r}")
        user = data.get("user")
        name = user.get("display_name") if isinstance(user, Mapping) else None
        role = user.get("role") if isinstance(user, Mapping) else None
        voted = data.get("voted")
        return cls(qid, webinar_id, seq, False, _int(data.get("user_id")), content,
                   _time(data.get("created_at")), status, votes,
                   name if isinstance(name, str) else None, role if isinstance(role, str) else None,
                   voted if isinstance(voted, bool) else None)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of a webinar's feed: `new` is the message's state (None once deleted),
    `old_id` the id the server named in `old` (always set for UPDATE and DELETE)."""

    webinar_id: int
    seq: int
    type: ChangeType
    new: ChatMessage | None
    old_id: int | None
    room: RoomState | None = None  # ROOM events only (then `new` and `old_id` are None)
    # QUESTION events only: the question's state (None if it is gone); `old_id` is its id and
    # `new` None.
    question: Question | None = None

    @property
    def message_id(self) -> int | None:
        """The id this change is about, or None for a malformed UPDATE/DELETE."""
        if self.new is not None:
            return self.new.id
        return self.old_id

    @classmethod
    def from_payload(cls, webinar_id: int, data: Any) -> ChangeEvent:
        """Parse `{seq, type, new, old}`; raises `ProtocolError` if it cannot be applied at all
        (no seq, unknown type, malformed message)."""
        if not isinstance(data, Mapping):
            raise ProtocolError("change event must be an object")
        seq = _int(data.get("seq"))
        if seq is None or seq < 1:
            raise ProtocolError(f"change event without a valid seq: {dict(data)!r}")
        try:
            kind = ChangeType(str(data.get("type")))
        except ValueError:
            raise ProtocolError(f"unknown change type {data.get('type')!r}") from None
        raw_new = data.get("new")
        if kind is ChangeType.ROOM:
            return cls(webinar_id, seq, kind, None, None, RoomState.from_payload(raw_new))
        if kind is ChangeType.QUESTION:
            old = data.get("old")
            qid = _int(old.get("id")) if isinstance(old, Mapping) else None
            question = Question.from_payload(raw_new) if raw_new is not None else None
            if qid is None:
                qid = question.id if question is not None else None
            if qid is None:
                raise ProtocolError(f"QUESTION event without a question id: {dict(data)!r}")
            return cls(webinar_id, seq, kind, None, qid, None, question)
        new = ChatMessage.from_payload(raw_new) if raw_new is not None else None
        old = data.get("old")
        old_id = _int(old.get("id")) if isinstance(old, Mapping) else None
        return cls(webinar_id, seq, kind, new, old_id)


class HasSeq(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=HasSeq)


class SeqTracker(Generic[T]):
    """Turns events from any mix of sources (socket replay, live frames, polls, gap fetches)
    into one stream in `seq` order without duplicates or holes.

    `offer(events)` returns the events to apply now, in order, and advances `last_seq` past them.
    Events with `seq ≤ last_seq` are dropped. Events after a hole are held until the hole is
    filled; `gap` then says which seqs to fetch (`GET /changes?after_seq=gap[0]`). If a fetch
    proves the feed does not have them, `skip_gap()` gives up on the hole.
    """

    def __init__(self, last_seq: int = 0, *, max_held: int = 10_000) -> None:
        self.last_seq = last_seq
        self.max_held = max_held
        self._held: dict[int, T] = {}
        self.duplicates = 0  # dropped because already applied (a statistic)

    def offer(self, events: Iterable[T], limit: int | None = None) -> tuple[list[T], bool]:
        """Returns (events to apply now, whether events were turned away because of `limit`).
        Turned-away events are forgotten, not held: `last_seq` stays before them, so a later
        fetch from `last_seq` brings them back."""
        for event in events:
            if event.seq <= self.last_seq or event.seq in self._held:
                self.duplicates += 1
                continue
            self._held[event.seq] = event
        ready: list[T] = []
        while self.last_seq + 1 in self._held:
            if limit is not None and len(ready) >= limit:
                self._held.clear()
                return ready, True
            event = self._held.pop(self.last_seq + 1)
            ready.append(event)
            self.last_seq = event.seq
        if len(self._held) > self.max_held:
            self._held.clear()  # a huge hole: forget, the fetch from last_seq brings them back
        return ready, False

    @property
    def gap(self) -> tuple[int, int] | None:
        """(last applied seq, first held seq) when events wait behind a hole, else None: the
        missing seqs are gap[0]+1 … gap[1]−1."""
        if not self._held:
            return None
        return self.last_seq, min(self._held)

    def skip_gap(self) -> list[T]:
        """Give up on the hole: release the held events in order (a fetch showed the feed does
        not have the missing seqs)."""
        ready = [self._held[s] for s in sorted(self._held)]
        self._held.clear()
        if ready:
            self.last_seq = ready[-1].seq
        return ready

    def reset(self, last_seq: int) -> None:
        """Start over at `last_seq` (the server said it cannot resume from ours)."""
        self._held.clear()
        self.last_seq = last_seq
