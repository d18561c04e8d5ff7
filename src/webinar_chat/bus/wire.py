"""The bytes of a bus message between server processes (pure: no I/O).

Every message is one JSON object stamped with its sender's node id:

    {"v": 1, "node": "<node id>", "kind": "change", "change": {webinar_id, seq, op, message_id,
        "message": {id, agency_id, client_id, webinar_id, user_id, content, created_at, hidden,
                    client_msg_id, seq, display_name, author_role, visibility} | null,
        "room": {chat_mode, slow_mode_seconds, pinned_content, pinned_at} (op ROOM only),
        "question": {id, agency_id, client_id, webinar_id, user_id, content, created_at, status,
                     votes, client_msg_id, seq, display_name, author_role} | null
                    (op QUESTION only)}}
    {"v": 1, "node": "…", "kind": "access", "webinar_id": 7, "user_id": 12 | null}
    {"v": 1, "node": "…", "kind": "probe", "probe": 3}
    {"v": 1, "node": "…", "kind": "presence", "counts": [[7, 12], [9, 0]]}
        ([webinar_id, distinct users connected to it on that node]; server/presence.py)

A change carries the message's state so that a receiving node needs no database read to deliver
it; the change feed stays the truth (docs/delivery.md, "Several processes"). `decode` raises
`BadMessage` for anything it cannot read completely; the caller logs, counts and drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ..protocol.events import (
    CHAT_MODES,
    QUESTION_STATUSES,
    Change,
    ChangeOp,
    Message,
    Question,
    RoomState,
    iso_utc,
)

VERSION = 1


class BadMessage(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ChangeMessage:
    node: str
    change: Change


@dataclass(frozen=True, slots=True)
class AccessMessage:
    """What a user (or, with user_id None, everybody) may see in a webinar has changed."""

    node: str
    webinar_id: int
    user_id: int | None


@dataclass(frozen=True, slots=True)
class ProbeMessage:
    node: str
    probe: int


@dataclass(frozen=True, slots=True)
class PresenceMessage:
    """How many users are connected to each listed webinar on the sending node now."""

    node: str
    counts: dict[int, int]


BusMessage = ChangeMessage | AccessMessage | ProbeMessage | PresenceMessage


def encode_change(node: str, change: Change) -> bytes:
    message = change.message
    fields: dict[str, Any] = {
        "webinar_id": change.webinar_id, "seq": change.seq, "op": change.op.value,
        "message_id": change.message_id,
        "message": None if message is None else _message_fields(message)}
    if change.room is not None:
        fields["room"] = _room_fields(change.room)
    if change.op is ChangeOp.QUESTION:
        fields["question"] = (None if change.question is None
                              else _question_fields(change.question))
    return orjson.dumps({"v": VERSION, "node": node, "kind": "change", "change": fields})


def _room_fields(room: RoomState) -> dict[str, Any]:
    return {"chat_mode": room.chat_mode, "slow_mode_seconds": room.slow_mode_seconds,
            "pinned_content": room.pinned_content,
            "pinned_at": iso_utc(room.pinned_at) if room.pinned_at else None}


def _room(raw: dict[str, Any]) -> RoomState:
    mode = raw.get("chat_mode")
    if mode not in CHAT_MODES:
        raise BadMessage(f"chat_mode: {mode!r}")
    pinned = raw.get("pinned_content")
    if pinned is not None and not isinstance(pinned, str):
        raise BadMessage("pinned_content: not a string")
    pinned_at = raw.get("pinned_at")
    at = None if pinned_at is None else _time(_str(raw, "pinned_at"))
    return RoomState(mode, _int(raw, "slow_mode_seconds"), pinned, at)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def encode_access(node: str, webinar_id: int, user_id: int | None) -> bytes:
    return orjson.dumps({"v": VERSION, "node": node, "kind": "access", "webinar_id": webinar_id,
                         "user_id": user_id})


def encode_probe(node: str, probe: int) -> bytes:
    return orjson.dumps({"v": VERSION, "node": node, "kind": "probe", "probe": probe})


def encode_presence(node: str, counts: dict[int, int]) -> bytes:
    return orjson.dumps({"v": VERSION, "node": node, "kind": "presence",
                         "counts": [[webinar_id, count] for webinar_id, count in counts.items()]})


def _presence_counts(raw: dict[str, Any]) -> dict[int, int]:
    pairs = raw.get("counts")
    if not isinstance(pairs, list):
        raise BadMessage("counts: not a list")
    counts: dict[int, int] = {}
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadMessage("counts: not a list of [webinar_id, count] pairs")
        webinar_id, count = _int({"webinar_id": pair[0]}, "webinar_id"), _int(
            {"count": pair[1]}, "count")
        if webinar_id < 1 or count < 0:
            raise BadMessage(f"counts: bad pair {pair!r}")
        counts[webinar_id] = count
    return counts


def decode(data: bytes) -> BusMessage:
    try:
        raw = orjson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != VERSION:
            raise BadMessage(f"not a version {VERSION} bus message")
        node = _str(raw, "node")
        kind = raw.get("kind")
        if kind == "change":
            return ChangeMessage(node, _change(_dict(raw, "change")))
        if kind == "access":
            user_id = raw.get("user_id")
            if user_id is not None:
                user_id = _int(raw, "user_id")
            return AccessMessage(node, _int(raw, "webinar_id"), user_id)
        if kind == "probe":
            return ProbeMessage(node, _int(raw, "probe"))
        if kind == "presence":
            return PresenceMessage(node, _presence_counts(raw))
        raise BadMessage(f"unknown kind {kind!r}")
    except BadMessage:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise BadMessage(f"{type(exc).__name__}: {exc}") from exc


def _message_fields(message: Message) -> dict[str, Any]:
    return {"id": message.id, "agency_id": message.agency_id, "client_id": message.client_id,
            "webinar_id": message.webinar_id, "user_id": message.user_id,
            "content": message.content, "created_at": iso_utc(message.created_at),
            "hidden": message.hidden, "client_msg_id": message.client_msg_id,
            "seq": message.seq, "display_name": message.display_name,
            "author_role": message.author_role, "visibility": message.visibility}


def _question_fields(question: Question) -> dict[str, Any]:
    return {"id": question.id, "agency_id": question.agency_id, "client_id": question.client_id,
            "webinar_id": question.webinar_id, "user_id": question.user_id,
            "content": question.content, "created_at": iso_utc(question.created_at),
            "status": question.status, "votes": question.votes,
            "client_msg_id": question.client_msg_id, "seq": question.seq,
            "display_name": question.display_name, "author_role": question.author_role}


def _question(raw: dict[str, Any]) -> Question:
    client_msg_id = raw.get("client_msg_id")
    if client_msg_id is not None and not isinstance(client_msg_id, str):
        raise BadMessage("client_msg_id: not a string")
    status = raw.get("status")
    if status not in QUESTION_STATUSES:
        raise BadMessage(f"status: {status!r}")
    role = raw.get("author_role")
    if role not in ("attendee", "moderator", "host"):
        raise BadMessage(f"author_role: {role!r}")
    votes = _int(raw, "votes")
    if votes < 0:
        raise BadMessage("votes: negative")
    return Question(_int(raw, "id"), _int(raw, "agency_id"), _int(raw, "client_id"),
                    _int(raw, "webinar_id"), _int(raw, "user_id"), _str(raw, "content"),
                    _time(_str(raw, "created_at")), status, votes, client_msg_id,
                    _int(raw, "seq"), _str(raw, "display_name"), role)


def _change(raw: dict[str, Any]) -> Change:
    message_raw = raw.get("message")
    message = None if message_raw is None else _message(_dict(raw, "message"))
    try:
        op = ChangeOp(str(raw.get("op")))
    except ValueError:
        raise BadMessage(f"unknown op {raw.get('op')!r}") from None
    room = None
    if op is ChangeOp.ROOM:
        room = _room(_dict(raw, "room"))
    question = None
    if op is ChangeOp.QUESTION:
        if "question" not in raw:
            raise BadMessage("question: missing")
        if raw["question"] is not None:
            question = _question(_dict(raw, "question"))
    return Change(_int(raw, "webinar_id"), _int(raw, "seq"), op, _int(raw, "message_id"), message,
                  room, question)


def _message(raw: dict[str, Any]) -> Message:
    client_msg_id = raw.get("client_msg_id")
    if client_msg_id is not None and not isinstance(client_msg_id, str):
        raise BadMessage("client_msg_id: not a string")
    hidden = raw.get("hidden")
    if not isinstance(hidden, bool):
        raise BadMessage("hidden: not a boolean")
    created = datetime.fromisoformat(_str(raw, "created_at").replace("Z", "+00:00"))
    # A node of the release before role badges sends none: its messages show as attendees' until
    # read back from the store (rolling deploys only; docs/deployment.md).
    role = raw.get("author_role", "attendee")
    if role not in ("attendee", "moderator", "host"):
        raise BadMessage(f"author_role: {role!r}")
    # Likewise before chat modes: every message was for everyone.
    visibility = raw.get("visibility", "everyone")
    if visibility not in ("everyone", "staff"):
        raise BadMessage(f"visibility: {visibility!r}")
    return Message(_int(raw, "id"), _int(raw, "agency_id"), _int(raw, "client_id"),
                   _int(raw, "webinar_id"), _int(raw, "user_id"), _str(raw, "content"), created,
                   hidden, client_msg_id, _int(raw, "seq"), _str(raw, "display_name"), role,
                   visibility)


def _dict(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise BadMessage(f"{key}: not an object")
    return value


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadMessage(f"{key}: not an integer")
    return value


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise BadMessage(f"{key}: not a string")
    return value
