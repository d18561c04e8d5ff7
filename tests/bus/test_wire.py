"""The bus's wire format carries a message's role badge (and reads a message from a node of the
release before badges as an attendee's)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from webinar_chat.bus.wire import BadMessage, ChangeMessage, decode, encode_change
from webinar_chat.protocol.events import Change, ChangeOp, Message, Question


def _change(role: str) -> Change:
    message = Message(5, 1, 2, 3, 4, "hello", datetime(2026, 12, 2, tzinfo=UTC), False, None, 9,
                      "Mo", role)
    return Change(3, 9, ChangeOp.INSERT, 5, message)


def test_the_role_travels_with_the_message() -> None:
    decoded = decode(encode_change("node-a", _change("moderator")))
    assert isinstance(decoded, ChangeMessage) and decoded.change.message is not None
    assert decoded.change.message.author_role == "moderator"


def test_a_message_without_a_role_is_an_attendees_and_a_bad_role_is_refused() -> None:
    raw = orjson.loads(encode_change("node-a", _change("host")))
    del raw["change"]["message"]["author_role"]
    decoded = decode(orjson.dumps(raw))
    assert isinstance(decoded, ChangeMessage) and decoded.change.message is not None
    assert decoded.change.message.author_role == "attendee"
    raw["change"]["message"]["author_role"] = "admin"
    with pytest.raises(BadMessage):
        decode(orjson.dumps(raw))


def _question_change(status: str = "answered") -> Change:
    question = Question(11, 1, 2, 3, 4, "When are the slides out?",
                        datetime(2026, 12, 2, 10, 30, 0, 123000, tzinfo=UTC), status, 7,
                        "6f1c1b1e-0d1e-4c55-9a7e-1f0a8e9b3c2d", 12, "Alice", "attendee")
    return Change(3, 12, ChangeOp.QUESTION, 11, None, question=question)


def test_a_question_change_travels_whole() -> None:
    change = _question_change()
    decoded = decode(encode_change("node-a", change))
    assert isinstance(decoded, ChangeMessage)
    assert decoded.change == change and decoded.change.question == change.question
    gone = Change(3, 13, ChangeOp.QUESTION, 11, None)  # read back after it was removed
    decoded = decode(encode_change("node-a", gone))
    assert isinstance(decoded, ChangeMessage) and decoded.change.question is None
    assert decoded.change.op is ChangeOp.QUESTION and decoded.change.message_id == 11


@pytest.mark.parametrize("field, value", [
    ("status", "closed"), ("status", None), ("votes", -1), ("votes", "3"), ("votes", True),
    ("author_role", "admin"), ("content", 5), ("client_msg_id", 7), ("created_at", "yesterday"),
    ("id", None),
])
def test_a_bad_question_is_refused(field: str, value: object) -> None:
    raw = orjson.loads(encode_change("node-a", _question_change()))
    raw["change"]["question"][field] = value
    with pytest.raises(BadMessage):
        decode(orjson.dumps(raw))


def test_a_question_change_without_its_question_is_refused() -> None:
    raw = orjson.loads(encode_change("node-a", _question_change()))
    del raw["change"]["question"]
    with pytest.raises(BadMessage):
        decode(orjson.dumps(raw))
    raw["change"]["question"] = "answered"
    with pytest.raises(BadMessage):
        decode(orjson.dumps(raw))


# --- presence (server/presence.py) ----------------------------------------------------------------

def test_presence_counts_travel_whole() -> None:
    from webinar_chat.bus.wire import PresenceMessage, encode_presence

    message = decode(encode_presence("node-a", {7: 12, 9: 0}))
    assert message == PresenceMessage("node-a", {7: 12, 9: 0})
    assert decode(encode_presence("node-b", {})) == PresenceMessage("node-b", {})


@pytest.mark.parametrize("counts", [None, "7:12", {"7": 12}, [[7]], [[7, 12, 1]], [["7", 12]],
                                    [[7, -1]], [[0, 3]], [[7, True]], [[7, 1.5]], [7, 12]])
def test_bad_presence_counts_are_refused(counts: object) -> None:
    raw = {"v": 1, "node": "node-a", "kind": "presence", "counts": counts}
    with pytest.raises(BadMessage):
        decode(orjson.dumps(raw))
