"""The per-connection protocol state machine, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from webinar_chat.protocol.events import Audience, Change, ChangeOp, Message, changes_frame
from webinar_chat.protocol.session import (
    Batch,
    CheckAccess,
    Close,
    Identity,
    IllegalTransition,
    LoadChanges,
    Send,
    Session,
    Subscribe,
    SubState,
    TokenRejected,
    Unsubscribe,
    WatchTokenExpiry,
)

NOW = 1_000_000.0
TOPIC = "webinar:7:messages"


def verifier(token: str) -> Identity:
    if token.startswith("user"):
        user, _, exp = token.partition(":")
        return Identity(int(user[4:]), float(exp or NOW + 900))
    raise TokenRejected("invalid_token", "Invalid access token")


def msg(seq: int, hidden: bool = False) -> Message:
    return Message(seq, 1, 1, 7, 3, f"m{seq}", datetime(2026, 1, 1, tzinfo=UTC), hidden, None, seq,
                   "Ann")


def ins(seq: int, hidden: bool = False) -> Change:
    return Change(7, seq, ChangeOp.INSERT, seq, msg(seq, hidden))


def batch(*seqs: int) -> Batch:
    changes = [ins(s) for s in seqs]
    return Batch(7, seqs[0], seqs[-1], changes, {a: b"shared" for a in Audience})


def sent_seqs(actions: list[Any]) -> list[int]:
    out: list[int] = []
    for a in actions:
        if isinstance(a, Send):
            frame = orjson.loads(a.data)
            if frame["type"] == "changes":
                out += [e["seq"] for e in frame["events"]]
    return out


def frames(actions: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(a.data) for a in actions if isinstance(a, Send)]


def joined_session(last_seq: int | None = 5, head: int = 8) -> tuple[Session, Any]:
    s = Session(verify_token=verifier)
    s.on_connect("user3", NOW, 5)
    actions = s.on_text(orjson.dumps({"type": "join", "topic": TOPIC, "last_seq": last_seq,
                                      "ref": "r1"}).decode(), NOW)
    check = next(a for a in actions if isinstance(a, CheckAccess))
    actions = s.on_access(7, check.generation, Audience.ATTENDEE, "attendee", head)
    return s, (check, actions)


def test_connect_sends_hello_and_accepts_token() -> None:
    s = Session(verify_token=verifier)
    actions = s.on_connect("user3", NOW, 5)
    assert frames(actions)[0]["type"] == "hello"
    assert frames(actions)[1] == {"type": "auth_ok", "user_id": 3, "expires_at": NOW + 900}
    assert any(isinstance(a, WatchTokenExpiry) for a in actions)


def test_join_without_token_is_unauthorized() -> None:
    s = Session(verify_token=verifier)
    actions = s.on_text('{"type":"join","topic":"webinar:7:messages"}', NOW)
    assert frames(actions)[0]["code"] == "unauthorized"
    assert not s.subscriptions


@pytest.mark.parametrize("frame", [
    '{"type":"join","topic":"webinar:x:messages"}',
    '{"type":"join","topic":"room:7"}',
    '{"type":"join","topic":"webinar:7:messages","last_seq":-1}',
    '{"type":"join","topic":"webinar:7:messages","last_seq":"5"}',
])
def test_bad_join_is_bad_request(frame: str) -> None:
    s = Session(verify_token=verifier)
    s.on_connect("user3", NOW, 5)
    assert frames(s.on_text(frame, NOW))[0]["code"] == "bad_request"


def test_a_join_beyond_max_topics_is_too_many_topics_and_a_rejoin_is_not() -> None:
    s = Session(verify_token=verifier, max_topics=2)
    s.on_connect("user3", NOW, 5)

    def join(webinar_id: int) -> list[Any]:
        return s.on_text(orjson.dumps({"type": "join", "ref": str(webinar_id),
                                       "topic": f"webinar:{webinar_id}:messages"}).decode(), NOW)

    assert any(isinstance(a, CheckAccess) for a in join(1) + join(2) + join(2))
    (error,) = frames(join(3))
    assert (error["code"], error["ref"], error["topic"]) == ("too_many_topics", "3",
                                                            "webinar:3:messages")
    assert sorted(s.subscriptions) == [1, 2]
    assert Session(verify_token=verifier).max_topics == 10


def test_the_user_survives_a_lapsed_or_refused_token_but_not_a_log_out() -> None:
    s = Session(verify_token=verifier)
    s.on_connect(None, NOW, 5)
    assert s.user_id is None
    s.on_text('{"type":"auth","token":"user3"}', NOW)
    assert s.user_id == 3
    s.on_token_expiry_due(NOW + 901)
    s.on_text('{"type":"auth","token":"garbage"}', NOW + 902)
    assert s.identity is None and s.user_id == 3
    s.on_text('{"type":"auth","token":null}', NOW + 903)
    assert s.user_id is None


def test_non_json_frames_get_errors_then_a_protocol_close() -> None:
    s = Session(verify_token=verifier)
    for _ in range(10):
        assert frames(s.on_text("not json", NOW))[0]["code"] == "bad_request"
    assert s.on_text("not json", NOW) == [Close(4400, "protocol error")]


def test_join_subscribes_before_loading_the_replay() -> None:
    s, (check, actions) = joined_session(last_seq=5, head=8)
    kinds = [type(a) for a in actions]
    assert kinds.index(Subscribe) < kinds.index(LoadChanges)
    joined = frames(actions)[0]
    assert joined == {"type": "joined", "topic": TOPIC, "ref": "r1", "head_seq": 8,
                      "resume_from": 5, "role": "attendee"}
    load = next(a for a in actions if isinstance(a, LoadChanges))
    assert load.after_seq == 5


def test_replay_then_buffered_live_without_gap_or_duplicate() -> None:
    s, (check, _) = joined_session(last_seq=5, head=8)
    sub = s.subscriptions[7]
    # live changes 8..10 arrive while the replay query runs
    assert s.on_batch(sub, batch(8, 9)) == []
    assert s.on_batch(sub, batch(10)) == []
    # the replay saw up to 9 (8, 9 committed before the query)
    actions = s.on_changes(7, check.generation, [ins(6), ins(7), ins(8), ins(9)], has_more=False)
    assert sent_seqs(actions) == [6, 7, 8, 9, 10]
    assert sub.state is SubState.LIVE and sub.delivered_seq == 10
    # next live batch goes through the shared fast path
    assert sub.take_shared(11, 12) is True
    # a batch that overlaps what the replay already sent is filtered
    assert sent_seqs(s.on_batch(sub, batch(12, 13))) == [13]
    assert s.on_batch(sub, batch(12, 13)) == []


def test_replay_pages_until_done() -> None:
    s, (check, _) = joined_session(last_seq=0, head=700)
    actions = s.on_changes(7, check.generation, [ins(i) for i in range(1, 501)], has_more=True)
    assert sent_seqs(actions) == list(range(1, 501))
    assert isinstance(actions[-1], LoadChanges) and actions[-1].after_seq == 500


def test_gap_in_live_batches_refetches_from_the_feed() -> None:
    s, (check, _) = joined_session(last_seq=5, head=5)
    sub = s.subscriptions[7]
    s.on_changes(7, check.generation, [], has_more=False)
    assert sub.state is SubState.LIVE
    actions = s.on_batch(sub, batch(8, 9))  # 6 and 7 never arrived
    assert actions == [LoadChanges(7, sub.generation, 5)]
    assert sub.state is SubState.REPLAYING
    actions = s.on_changes(7, sub.generation, [ins(6), ins(7), ins(8)], has_more=False)
    assert sent_seqs(actions) == [6, 7, 8, 9]


def test_rejoining_replaces_the_subscription() -> None:
    s, (check, _) = joined_session(last_seq=5, head=8)
    old = s.subscriptions[7]
    actions = s.on_text(orjson.dumps({"type": "join", "topic": TOPIC, "last_seq": 8}).decode(), NOW)
    assert Unsubscribe(old) in actions
    assert s.subscriptions[7] is not old and len(s.subscriptions) == 1
    # the replaced subscription's late replay result is ignored
    assert s.on_changes(7, check.generation, [ins(6)], has_more=False) == []
    assert s.on_batch(old, batch(9)) == []


def test_last_seq_beyond_head_starts_at_head() -> None:
    _, (_, actions) = joined_session(last_seq=50, head=8)
    assert frames(actions)[0]["resume_from"] == 8


def test_denied_access_removes_the_subscription() -> None:
    s = Session(verify_token=verifier)
    s.on_connect("user3", NOW, 5)
    check = next(a for a in s.on_text(f'{{"type":"join","topic":"{TOPIC}"}}', NOW)
                 if isinstance(a, CheckAccess))
    actions = s.on_access_denied(7, check.generation, "forbidden", "not registered")
    assert frames(actions)[0]["code"] == "forbidden" and not s.subscriptions


def test_token_expiry_suspends_delivery_until_a_new_token_then_resumes_by_replay() -> None:
    s, (check, _) = joined_session(last_seq=5, head=5)
    sub = s.subscriptions[7]
    s.on_changes(7, check.generation, [], has_more=False)
    assert s.on_token_expiry_due(NOW + 899) == []  # not yet
    actions = s.on_token_expiry_due(NOW + 901)
    assert frames(actions)[0]["code"] == "token_expired"
    assert sub.state is SubState.SUSPENDED
    assert sub.take_shared(6, 6) is False and s.on_batch(sub, batch(6)) == []
    actions = s.on_text(orjson.dumps({"type": "auth", "token": f"user3:{NOW + 2000}"}).decode(),
                        NOW + 902)
    recheck = next(a for a in actions if isinstance(a, CheckAccess))
    actions = s.on_access(7, recheck.generation, Audience.ATTENDEE, "attendee", 6)
    assert not [f for f in frames(actions) if f["type"] == "joined"]  # a resume, not a new join
    load = next(a for a in actions if isinstance(a, LoadChanges))
    assert load.after_seq == 5
    assert sent_seqs(s.on_changes(7, recheck.generation, [ins(6)], False)) == [6]


def test_invalid_token_suspends_and_token_for_another_user_drops_subscriptions() -> None:
    s, _ = joined_session()
    assert frames(s.on_text('{"type":"auth","token":"garbage"}', NOW))[0]["code"] == \
        "invalid_token"
    assert s.subscriptions[7].state is SubState.SUSPENDED
    actions = s.on_text('{"type":"auth","token":"user4"}', NOW)
    assert not s.subscriptions
    assert any(isinstance(a, Unsubscribe) for a in actions)


def test_logout_forgets_everything() -> None:
    s, _ = joined_session()
    actions = s.on_text('{"type":"auth","token":null}', NOW)
    assert any(isinstance(a, Unsubscribe) for a in actions) and s.identity is None


def test_illegal_transition_raises() -> None:
    s, _ = joined_session()
    sub = s.subscriptions[7]
    with pytest.raises(IllegalTransition):
        sub.move(SubState.AUTHORIZING)


def test_replay_buffer_overflow_closes_as_slow_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    import webinar_chat.protocol.session as session_module

    monkeypatch.setattr(session_module, "MAX_REPLAY_BUFFER", 3)
    s, _ = joined_session()
    sub = s.subscriptions[7]
    assert s.on_batch(sub, batch(6, 7, 8)) == []
    assert s.on_batch(sub, batch(9)) == [Close(4008, "slow consumer")]


def test_hidden_messages_are_redacted_for_attendees_in_replay() -> None:
    s, (check, _) = joined_session(last_seq=5, head=6)
    actions = s.on_changes(7, check.generation, [ins(6, hidden=True)], has_more=False)
    event = frames(actions)[0]["events"][0]
    assert event["new"] == {"id": 6, "webinar_id": 7, "hidden": True, "seq": 6}


def test_changes_frame_is_valid_json() -> None:
    frame = orjson.loads(changes_frame(TOPIC, [b'{"seq":1}', b'{"seq":2}']))
    assert frame == {"type": "changes", "topic": TOPIC, "events": [{"seq": 1}, {"seq": 2}]}
