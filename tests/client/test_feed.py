"""Parsing of messages/events and `SeqTracker` (dedupe, ordering, gaps) — pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from webinar_chat.client import ChangeEvent, ChangeType, ChatMessage, ProtocolError, SeqTracker


def message(mid: int = 5, seq: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": mid, "webinar_id": 9, "user_id": 3, "content": "hi",
            "created_at": "2026-01-02T03:04:05.678Z", "hidden": False,
            "client_msg_id": "2f1c5c0e-8f1c-4b65-9a53-0d4f7d6e3b21", "seq": seq,
            "user": {"display_name": "Alice"}, **extra}


def test_message_from_payload() -> None:
    m = ChatMessage.from_payload(message())
    assert (m.id, m.webinar_id, m.seq, m.user_id, m.content, m.display_name) == (
        5, 9, 1, 3, "hi", "Alice")
    assert m.created_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert m.client_msg_id == "2f1c5c0e-8f1c-4b65-9a53-0d4f7d6e3b21"
    assert not m.hidden and not m.redacted


def test_redacted_hidden_message_for_attendees() -> None:
    m = ChatMessage.from_payload({"id": 5, "webinar_id": 9, "hidden": True, "seq": 4})
    assert m.redacted and m.hidden and m.content is None and m.user_id is None


@pytest.mark.parametrize("bad", [
    None, [], {"id": "5", "webinar_id": 9, "seq": 1}, {"id": 5, "seq": 1},
    {"id": True, "webinar_id": 9, "seq": 1}, {**message(), "created_at": "yesterday"},
])
def test_malformed_messages_raise(bad: Any) -> None:
    with pytest.raises(ProtocolError):
        ChatMessage.from_payload(bad)


def test_events_from_payload() -> None:
    insert = ChangeEvent.from_payload(9, {"seq": 1, "type": "INSERT", "new": message(),
                                          "old": None})
    assert insert.type is ChangeType.INSERT and insert.message_id == 5 and insert.old_id is None
    update = ChangeEvent.from_payload(9, {"seq": 2, "type": "UPDATE",
                                          "new": message(seq=2, hidden=True), "old": {"id": 5}})
    assert update.old_id == 5 and update.new is not None and update.new.hidden
    delete = ChangeEvent.from_payload(9, {"seq": 3, "type": "DELETE", "new": None,
                                          "old": {"id": 5}})
    assert delete.new is None and delete.message_id == 5
    broken = ChangeEvent.from_payload(9, {"seq": 4, "type": "DELETE", "new": None, "old": None})
    assert broken.message_id is None  # applying it is a protocol error (Conversation.apply)


@pytest.mark.parametrize("bad", [
    "x", {"type": "INSERT", "new": None}, {"seq": 0, "type": "INSERT"},
    {"seq": "3", "type": "INSERT"}, {"seq": 3, "type": "UPSERT"},
    {"seq": 3, "type": "INSERT", "new": {"id": 1}},
])
def test_malformed_events_raise(bad: Any) -> None:
    with pytest.raises(ProtocolError):
        ChangeEvent.from_payload(9, bad)


@dataclass(frozen=True)
class E:
    seq: int


def seqs(events: list[E]) -> list[int]:
    return [e.seq for e in events]


def test_in_order_events_pass_and_advance() -> None:
    tracker: SeqTracker[E] = SeqTracker(10)
    ready, turned_away = tracker.offer([E(11), E(12)])
    assert seqs(ready) == [11, 12] and not turned_away and tracker.last_seq == 12
    assert tracker.gap is None


def test_duplicates_and_old_events_are_dropped() -> None:
    tracker: SeqTracker[E] = SeqTracker(10)
    tracker.offer([E(11), E(12)])
    ready, _ = tracker.offer([E(9), E(11), E(12), E(13), E(13)])
    assert seqs(ready) == [13]
    assert tracker.duplicates == 4


def test_unordered_batch_is_sorted() -> None:
    tracker: SeqTracker[E] = SeqTracker(0)
    ready, _ = tracker.offer([E(3), E(1), E(2)])
    assert seqs(ready) == [1, 2, 3]


def test_a_gap_holds_later_events_until_filled() -> None:
    tracker: SeqTracker[E] = SeqTracker(10)
    ready, _ = tracker.offer([E(13), E(14)])
    assert ready == [] and tracker.last_seq == 10
    assert tracker.gap == (10, 13)  # fetch after_seq=10: 11 and 12 are missing
    ready, _ = tracker.offer([E(11)])
    assert seqs(ready) == [11] and tracker.gap == (11, 13)
    ready, _ = tracker.offer([E(12), E(13), E(14), E(15)])  # a fetch overlapping the held ones
    assert seqs(ready) == [12, 13, 14, 15] and tracker.gap is None


def test_skip_gap_releases_held_events_in_order() -> None:
    tracker: SeqTracker[E] = SeqTracker(1)
    tracker.offer([E(5), E(4)])
    assert seqs(tracker.skip_gap()) == [4, 5]
    assert tracker.last_seq == 5 and tracker.gap is None
    assert tracker.skip_gap() == []


def test_limit_turns_events_away_without_advancing_past_them() -> None:
    tracker: SeqTracker[E] = SeqTracker(0)
    ready, turned_away = tracker.offer([E(1), E(2), E(3), E(4)], limit=2)
    assert seqs(ready) == [1, 2] and turned_away and tracker.last_seq == 2
    assert tracker.gap is None  # forgotten, not held: a fetch from 2 brings 3 and 4 back
    ready, turned_away = tracker.offer([E(3), E(4)], limit=10)
    assert seqs(ready) == [3, 4] and not turned_away


def test_limit_zero_takes_nothing() -> None:
    tracker: SeqTracker[E] = SeqTracker(0)
    ready, turned_away = tracker.offer([E(1)], limit=0)
    assert ready == [] and turned_away and tracker.last_seq == 0


def test_reset_and_held_bound() -> None:
    tracker: SeqTracker[E] = SeqTracker(0, max_held=3)
    tracker.offer([E(5), E(6), E(7), E(8)])
    assert tracker.gap is None and tracker.last_seq == 0  # too many held: dropped, refetched
    tracker.offer([E(9)])
    tracker.reset(3)
    assert tracker.last_seq == 3 and tracker.gap is None
    ready, _ = tracker.offer([E(4)])
    assert seqs(ready) == [4]
