"""`Conversation`: the apply rules of docs/realtime.md — pure."""

from __future__ import annotations

from typing import Any

from webinar_chat.client import ChangeEvent, ChangeType, ChatMessage, Conversation


def msg(mid: int, seq: int, content: str = "", hidden: bool = False,
        redacted: bool = False) -> ChatMessage:
    if redacted:
        return ChatMessage(mid, 1, seq, True, None, None, None, None, None)
    return ChatMessage(mid, 1, seq, hidden, 7, content or f"m{mid}", None, None, "Alice")


def ev(seq: int, kind: str, new: ChatMessage | None, old: int | None = None) -> ChangeEvent:
    return ChangeEvent(1, seq, ChangeType(kind), new, old)


def ids(conv: Conversation) -> list[int]:
    return [m.id for m in conv.messages]


def test_inserts_are_kept_in_id_order_and_deduplicated_by_id() -> None:
    conv = Conversation()
    for seq, mid in ((1, 30), (2, 10), (3, 20)):
        assert conv.apply(ev(seq, "INSERT", msg(mid, seq)))
    conv.apply(ev(4, "INSERT", msg(20, 3)))
    assert ids(conv) == [10, 20, 30] and len(conv) == 3 and 20 in conv


def test_update_replaces_and_older_states_do_not_win() -> None:
    conv = Conversation()
    conv.apply(ev(1, "INSERT", msg(1, 1, "first")))
    conv.apply(ev(2, "UPDATE", msg(1, 2, "edited"), 1))
    assert conv.get(1) is not None and conv.get(1).content == "edited"  # type: ignore[union-attr]
    conv.load([msg(1, 1, "stale snapshot")])
    conv.apply(ev(3, "UPDATE", msg(1, 3, "newer"), 1))
    conv.reconcile(msg(1, 2, "late answer"), applied_seq=3)
    assert conv.get(1).content == "newer"  # type: ignore[union-attr]


def test_hidden_is_removed_for_attendees_and_kept_for_staff() -> None:
    attendee, staff = Conversation(), Conversation(staff=True)
    for conv in (attendee, staff):
        conv.apply(ev(1, "INSERT", msg(1, 1)))
    attendee.apply(ev(2, "UPDATE", msg(1, 2, redacted=True), 1))
    staff.apply(ev(2, "UPDATE", msg(1, 2, hidden=True), 1))
    assert ids(attendee) == []
    assert ids(staff) == [1] and staff.get(1).hidden  # type: ignore[union-attr]
    # a full hidden payload (e.g. a moderator's own view) is never shown to a non-staff view
    attendee.apply(ev(3, "UPDATE", msg(2, 3, hidden=True), 2))
    assert ids(attendee) == []


def test_unhide_seen_by_an_attendee_is_an_insert() -> None:
    conv = Conversation()
    conv.apply(ev(5, "UPDATE", msg(4, 5, "back"), 4))
    assert ids(conv) == [4]


def test_delete_removes_and_replayed_deleted_inserts_remove_too() -> None:
    conv = Conversation()
    conv.apply(ev(1, "INSERT", msg(1, 1)))
    conv.apply(ev(2, "INSERT", msg(2, 2)))
    assert conv.apply(ev(3, "DELETE", None, 1))
    assert ids(conv) == [2]
    assert conv.apply(ev(4, "INSERT", None, 2))  # replay: inserted, deleted since
    assert ids(conv) == []
    assert conv.apply(ev(5, "DELETE", None, 99))  # unknown id: nothing to do


def test_update_or_delete_without_any_id_is_rejected() -> None:
    conv = Conversation()
    conv.apply(ev(1, "INSERT", msg(1, 1)))
    assert conv.apply(ev(2, "DELETE", None, None)) is False
    assert ids(conv) == [1]


def test_reconcile_a_send_answer() -> None:
    conv = Conversation()
    conv.reconcile(msg(10, 4), applied_seq=3)  # not seen by the feed yet: show it now
    assert ids(conv) == [10]
    conv.reconcile(msg(11, 2), applied_seq=3)  # the feed applied seq 2 and it is gone: removed
    assert ids(conv) == [10]
    conv.reconcile(msg(12, 5, hidden=True), applied_seq=3)
    assert ids(conv) == [10]


def test_limit_drops_the_oldest() -> None:
    conv = Conversation(limit=3)
    for i in range(1, 6):
        conv.apply(ev(i, "INSERT", msg(i, i)))
    assert ids(conv) == [3, 4, 5]


def test_load_snapshot_and_lookups() -> None:
    conv = Conversation()
    with_cmid: dict[str, Any] = {"client_msg_id": "abc"}
    m = ChatMessage(7, 1, 3, False, 2, "x", None, with_cmid["client_msg_id"], "Bob")
    conv.load([msg(9, 1), m, msg(8, 2, redacted=True)])
    assert ids(conv) == [7, 9]
    assert conv.by_client_msg_id("abc") is m and conv.by_client_msg_id("nope") is None
    assert [x.id for x in conv] == [7, 9]
    conv.clear()
    assert ids(conv) == []
