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


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a webinar's change feed. `message` is the state to show: the state written by
    this change when live, the *current* state when read back from the feed (None once deleted)."""

    webinar_id: int
    seq: int
    op: ChangeOp
    message_id: int
    message: Message | None
    # Wire encoding per audience, filled by `encode_event`: a change is encoded once and the same
    # bytes serve live fan-out, replays from the room's ring and long-poll answers.
    encoded: dict[Audience, bytes] = field(default_factory=dict, compare=False, repr=False)


def iso_utc(moment: datetime) -> str:
    """RFC 3339 with millisecond precision and a `Z`, the format every API response uses."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_payload(message: Message, audience: Audience) -> dict[str, Any]:
    if message.hidden and audience is Audience.ATTENDEE:
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
    }


def visible_to(message: Message, audience: Audience) -> bool:
    return audience is Audience.STAFF or not message.hidden


def event_payload(change: Change, audience: Audience) -> dict[str, Any]:
    """`{seq, type, new, old}`; UPDATE and DELETE always carry `old.id`."""
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


def _redacted_for_attendees(change: Change) -> bool:
    return change.message is not None and change.message.hidden


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
