"""Wire shapes of messages and change events, and the one redaction rule every read path uses.

Pure: no I/O. Every path that shows a message to a viewer — list API, change feed, realtime replay
and live fan-out — builds the payload here, so "attendees never see hidden messages or e-mails"
is enforced in one place (docs/delivery.md, guarantee 6).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


class Audience(enum.Enum):
    """What a viewer may see. Computed from the registration role by `auth.permissions`."""

    ATTENDEE = "attendee"  # hidden messages redacted
    STAFF = "staff"  # moderators and hosts: everything


class ChangeOp(enum.StrEnum):
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    # The webinar's room state (chat mode, slow mode, pinned announcement) changed; the event
    # carries the whole state (docs/webinar-features.md). Stored as kind `room`, op UPDATE.
    ROOM = "ROOM"
    # A Q&A question was asked, voted on or changed status (docs/webinar-features.md, "Q&A"); the
    # event carries the question's state. Stored as kind `question` (`message_id`: its id).
    QUESTION = "QUESTION"


CHAT_MODES = ("everyone", "hosts_only", "read_only")
QUESTION_STATUSES = ("open", "answered", "dismissed")


@dataclass(frozen=True, slots=True)
class RoomState:
    """What every viewer of a webinar sees besides its messages. Complete in every ROOM event, so
    the state of the highest seq applied is the current one however events were collapsed."""

    chat_mode: str = "everyone"
    slow_mode_seconds: int = 0
    pinned_content: str | None = None
    pinned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    agency_id: int
    client_id: int
    webinar_id: int
    user_id: int
    content: str
    created_at: datetime
    hidden: bool
    client_msg_id: str | None
    seq: int
    display_name: str
    # The author's role in the webinar when they posted (attendee, moderator, host): the badge.
    # Stored with the message, not looked up when read, so that every path — live, replay,
    # long-poll, list, reload — shows the same badge forever (docs/delivery.md, guarantee 5).
    author_role: str = "attendee"
    # "staff": an attendee's message posted in hosts_only mode, seen by staff and its author only.
    visibility: str = "everyone"


@dataclass(frozen=True, slots=True)
class Question:
    """A Q&A question (separate from the chat). `votes` counts its upvotes; `seq` is the feed
    seq of its current state; `author_role` the asker's role when they asked (the badge)."""

    id: int
    agency_id: int
    client_id: int
    webinar_id: int
    user_id: int
    content: str
    created_at: datetime
    status: str  # QUESTION_STATUSES
    votes: int
    client_msg_id: str | None
    seq: int
    display_name: str
    author_role: str = "attendee"


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a webinar's change feed. `message` is the state to show: the state written by
    this change when live, the *current* state when read back from the feed (None once deleted)."""

    webinar_id: int
    seq: int
    op: ChangeOp
    message_id: int
    message: Message | None
    room: RoomState | None = None  # set on ROOM changes (message_id 0, message None)
    # Set on QUESTION changes (message_id: the question's id, message None): its state — the one
    # written when live, the current one when read back.
    question: Question | None = None
    # Wire encoding per audience, filled by `encode_event`: a change is encoded once and the same
    # bytes serve live fan-out, replays from the room's ring and long-poll answers.
    encoded: dict[Audience, bytes] = field(default_factory=dict, compare=False, repr=False)


def iso_utc(moment: datetime) -> str:
    """RFC 3339 with millisecond precision and a `Z`, the format every API response uses."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_payload(message: Message, audience: Audience,
                    viewer_id: int | None = None) -> dict[str, Any]:
    """The message as `audience` sees it; `viewer_id` (the reader) matters only for attendees'
    own staff-only messages. Redacted: the stub a client needs to drop what it may have shown."""
    if audience is Audience.ATTENDEE and not _attendee_may_see(message, viewer_id):
        return {"id": message.id, "webinar_id": message.webinar_id, "hidden": True, "seq": message.seq}
    return {
        "id": message.id,
        "webinar_id": message.webinar_id,
        "user_id": message.user_id,
        "content": message.content,
        "created_at": iso_utc(message.created_at),
        "hidden": message.hidden,
        "client_msg_id": message.client_msg_id,
        "seq": message.seq,
        "user": {"display_name": message.display_name, "role": message.author_role},
        "visibility": message.visibility,
    }


def _attendee_may_see(message: Message, viewer_id: int | None) -> bool:
    if message.hidden:
        return False
    return message.visibility != "staff" or (viewer_id is not None and viewer_id == message.user_id)


def visible_to(message: Message, audience: Audience, viewer_id: int | None = None) -> bool:
    return audience is Audience.STAFF or _attendee_may_see(message, viewer_id)


def question_payload(question: Question, audience: Audience) -> dict[str, Any]:
    """The question as `audience` sees it: the same rule as for messages — a dismissed question
    is hidden from attendees, who get only the stub that lets a client drop it (its asker too)."""
    if audience is Audience.ATTENDEE and not question_visible_to_attendees(question):
        return {"id": question.id, "webinar_id": question.webinar_id, "hidden": True,
                "seq": question.seq}
    return {
        "id": question.id,
        "webinar_id": question.webinar_id,
        "user_id": question.user_id,
        "content": question.content,
        "created_at": iso_utc(question.created_at),
        "status": question.status,
        "votes": question.votes,
        "seq": question.seq,
        "user": {"display_name": question.display_name, "role": question.author_role},
    }


def question_visible_to_attendees(question: Question) -> bool:
    return question.status != "dismissed"


def question_visible_to(question: Question, audience: Audience) -> bool:
    return audience is Audience.STAFF or question_visible_to_attendees(question)


def room_payload(room: RoomState) -> dict[str, Any]:
    pinned = None
    if room.pinned_content is not None:
        pinned = {"content": room.pinned_content,
                  "pinned_at": iso_utc(room.pinned_at) if room.pinned_at else None}
    return {"chat_mode": room.chat_mode, "slow_mode_seconds": room.slow_mode_seconds,
            "pinned": pinned}


def event_payload(change: Change, audience: Audience) -> dict[str, Any]:
    """`{seq, type, new, old}`; UPDATE and DELETE always carry `old.id`; ROOM carries the room
    state in `new` and no `old`; QUESTION the question's state in `new` (null if it is gone) and
    its id in `old`."""
    if change.op is ChangeOp.ROOM:
        assert change.room is not None
        return {"seq": change.seq, "type": "ROOM", "new": room_payload(change.room), "old": None}
    if change.op is ChangeOp.QUESTION:
        new_question = (None if change.question is None
                        else question_payload(change.question, audience))
        return {"seq": change.seq, "type": "QUESTION", "new": new_question,
                "old": {"id": change.message_id}}
    new = message_payload(change.message, audience) if change.message is not None else None
    old = None if change.op is ChangeOp.INSERT and change.message is not None else {"id": change.message_id}
    return {"seq": change.seq, "type": change.op.value, "new": new, "old": old}


def encode_event(change: Change, audience: Audience) -> bytes:
    encoded = change.encoded.get(audience)
    if encoded is None:
        if audience is Audience.ATTENDEE and not _redacted_for_attendees(change):
            encoded = encode_event(change, Audience.STAFF)  # identical payloads: encode once
        else:
            encoded = orjson.dumps(event_payload(change, audience))
        change.encoded[audience] = encoded
    return encoded


def encode_for(change: Change, audience: Audience, viewer_id: int | None) -> bytes:
    """`encode_event` for one reader: an attendee's own staff-only message is shown to them
    whole, which is exactly what staff see (message payloads differ only by redaction)."""
    if audience is Audience.ATTENDEE and viewer_id is not None and is_private_to(change, viewer_id):
        return encode_event(change, Audience.STAFF)
    return encode_event(change, audience)


def is_private_to(change: Change, viewer_id: int) -> bool:
    """Does this change read differently for `viewer_id` than for other attendees?"""
    message = change.message
    return (message is not None and message.visibility == "staff" and not message.hidden
            and message.user_id == viewer_id)


def private_author(change: Change) -> int | None:
    """The one attendee for whom this change is not redacted like for the others, if any."""
    message = change.message
    if message is not None and message.visibility == "staff" and not message.hidden:
        return message.user_id
    return None


def _redacted_for_attendees(change: Change) -> bool:
    if change.question is not None:
        return not question_visible_to_attendees(change.question)
    message = change.message
    return message is not None and (message.hidden or message.visibility == "staff")


def topic_name(webinar_id: int) -> str:
    return f"webinar:{webinar_id}:messages"


def parse_topic(topic: object) -> int | None:
    """`webinar:{id}:messages` → id, anything else → None."""
    if not isinstance(topic, str):
        return None
    parts = topic.split(":")
    if len(parts) != 3 or parts[0] != "webinar" or parts[2] != "messages":
        return None
    if not parts[1].isdigit() or len(parts[1]) > 18:
        return None
    return int(parts[1])


def changes_frame(topic: str, encoded_events: list[bytes]) -> bytes:
    """One `changes` frame from events already encoded once for the whole room."""
    return b"".join(
        (
            b'{"type":"changes","topic":',
            orjson.dumps(topic),
            b',"events":[',
            b",".join(encoded_events),
            b"]}",
        )
    )
