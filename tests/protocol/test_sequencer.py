from __future__ import annotations

from webinar_chat.protocol.events import Change, ChangeOp
from webinar_chat.protocol.sequencer import RoomSequencer


def change(seq: int) -> Change:
    return Change(1, seq, ChangeOp.DELETE, seq, None)


def seqs(changes: list[Change]) -> list[int]:
    return [c.seq for c in changes]


def test_in_order_changes_are_released_at_once() -> None:
    s = RoomSequencer(10)
    assert seqs(s.offer(change(11))) == [11]
    assert seqs(s.offer(change(12))) == [12]
    assert s.gap is None


def test_duplicates_and_old_changes_are_dropped() -> None:
    s = RoomSequencer(10)
    assert s.offer(change(9)) == []
    assert s.offer(change(10)) == []
    s.offer(change(11))
    assert s.offer(change(11)) == []


def test_early_change_is_held_until_its_predecessor_arrives() -> None:
    s = RoomSequencer(10)
    assert s.offer(change(12)) == []
    assert s.offer(change(13)) == []
    assert s.gap == (10, 11)
    assert seqs(s.offer(change(11))) == [11, 12, 13]
    assert s.gap is None


def test_gap_filled_from_the_feed_releases_everything_in_order() -> None:
    s = RoomSequencer(10)
    s.offer(change(14))
    assert s.gap == (10, 13)
    # the feed read returns the missing range, possibly overlapping what is held
    assert seqs(s.fill([change(13), change(11), change(12), change(14)])) == [11, 12, 13, 14]
    assert s.released_seq == 14 and s.gap is None


def test_partial_fill_keeps_the_rest_held() -> None:
    s = RoomSequencer(0)
    s.offer(change(3))
    assert seqs(s.fill([change(1)])) == [1]
    assert s.gap == (1, 2)
