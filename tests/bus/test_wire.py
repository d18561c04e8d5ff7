"""The bus's wire format carries a message's role badge (and reads a message from a node of the
release before badges as an attendee's)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from webinar_chat.bus.wire import BadMessage, ChangeMessage, decode, encode_change
from webinar_chat.protocol.events import Change, ChangeOp, Message


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
