"""protocol/phoenix.py without sockets: frames in both serializers, bindings, what each change
becomes for staff and attendees, and the session's answers (docs/supabase.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from webinar_chat.protocol.events import Audience, Change, ChangeOp, Message
from webinar_chat.protocol.phoenix import (
    V1,
    V2,
    Channel,
    FrameError,
    PhoenixSession,
    binding_id,
    decode,
    encode,
    parse_bindings,
    serializer_for,
    view_of,
)
from webinar_chat.protocol.session import (
    CheckAccess,
    Identity,
    Send,
    TokenRejected,
    Unsubscribe,
    WatchTokenExpiry,
)

NOW = 1_000_000.0


def binding(event: str = "*", webinar: int = 7, **extra: Any) -> dict[str, Any]:
    return {"event": event, "schema": "public", "table": "messages",
            "filter": f"webinar_id=eq.{webinar}", **extra}


def message(mid: int = 1, *, hidden: bool = False, visibility: str = "everyone",
            user_id: int = 5) -> Message:
    return Message(mid, 1, 1, 7, user_id, "hi", datetime(2026, 3, 3, tzinfo=UTC), hidden, None,
                   mid, "Ann", "attendee", visibility)


def change(op: ChangeOp, m: Message | None, seq: int = 1, mid: int = 1) -> Change:
    return Change(7, seq, op, mid, m)


def test_the_serializer_follows_vsn() -> None:
    assert serializer_for("2.0.0") == V2
    assert serializer_for("1.0.0") == V1 and serializer_for(None) == V1
    assert decode('["1","2","realtime:x","phx_join",{"a":1}]', V2).payload == {"a": 1}
    frame = decode('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}', V1)
    assert (frame.topic, frame.event, frame.ref) == ("phoenix", "heartbeat", None)
    assert orjson.loads(encode(V1, "1", "2", "t", "e", {})) == {
        "topic": "t", "event": "e", "payload": {}, "ref": "2"}
    assert orjson.loads(encode(V2, "1", "2", "t", "e", {})) == ["1", "2", "t", "e", {}]
    for bad, vsn in (("nope", V2), ('{"topic":1}', V1), ("[1,2]", V2),
                     ('["1","2","t","e",[]]', V2)):
        with pytest.raises(FrameError):
            decode(bad, vsn)


def test_bindings_are_echoed_with_stable_positive_ids() -> None:
    webinar, echoed, bindings = parse_bindings(
        {"postgres_changes": [binding("*"), binding("update", select=["id"])]})
    assert webinar == 7
    assert [e["event"] for e in echoed] == ["*", "update"] and echoed[1]["select"] == ["id"]
    assert [b.event for b in bindings] == ["*", "UPDATE"]
    assert all(e["id"] == b.id and b.id > 0 for e, b in zip(echoed, bindings, strict=True))
    assert binding_id(binding()) == binding_id(dict(reversed(list(binding().items()))))
    old_style = {"events": "INSERT", "schema": "public", "table": "messages",
                 "filter": "webinar_id=eq.7"}
    assert parse_bindings({"postgres_changes": [old_style]})[2][0].event == "INSERT"
    for config, reason in (({}, "postgres_changes"), ({"postgres_changes": [binding("TRUNCATE")]},
                                                      "event"),
                           ({"postgres_changes": [binding(table="other")]}, "public.messages"),
                           ({"postgres_changes": [{**binding(), "filter": "id=eq.1"}]},
                            "webinar_id"),
                           ({"postgres_changes": [binding(webinar=7), binding(webinar=8)]},
                            "same webinar")):
        with pytest.raises(ValueError, match=reason):
            parse_bindings(config)


@pytest.mark.parametrize(("op", "msg", "staff", "attendee"), [
    (ChangeOp.INSERT, message(), "INSERT", "INSERT"),
    (ChangeOp.INSERT, message(hidden=True), "INSERT", None),
    (ChangeOp.UPDATE, message(hidden=True), "UPDATE", "DELETE"),
    (ChangeOp.UPDATE, message(), "UPDATE", "INSERT"),
    (ChangeOp.DELETE, None, "DELETE", "DELETE"),
    (ChangeOp.INSERT, message(visibility="staff"), "INSERT", None),
    (ChangeOp.UPDATE, message(visibility="staff", hidden=True), "UPDATE", None),
    (ChangeOp.DELETE, message(visibility="staff"), "DELETE", None),
])
def test_what_a_change_is_for_staff_and_for_attendees(op: ChangeOp, msg: Message | None,
                                                      staff: str, attendee: str | None) -> None:
    c = change(op, msg)
    seen_by_staff = view_of(c, Audience.STAFF)
    assert seen_by_staff is not None and seen_by_staff[0] == staff
    seen = view_of(c, Audience.ATTENDEE)
    assert (seen[0] if seen else None) == attendee
    if seen and seen[0] == "DELETE":
        data = orjson.loads(seen[1])
        assert "record" not in data and data["old_record"] == {"id": 1}  # never the content
    assert view_of(c, Audience.ATTENDEE) == seen  # cached, "nothing" too


def test_room_and_question_changes_are_not_messages() -> None:
    assert view_of(Change(7, 1, ChangeOp.ROOM, 0, None), Audience.STAFF) is None


def test_frames_name_every_matching_binding() -> None:
    _w, echoed, bindings = parse_bindings({"postgres_changes": [binding("*"), binding("UPDATE")]})
    channel = Channel(V2, "realtime:chat", "1", "1", echoed, bindings)
    frames = channel.frames([change(ChangeOp.INSERT, message(), 1),
                             change(ChangeOp.UPDATE, message(hidden=True), 2)], Audience.STAFF, None)
    pushes = [orjson.loads(f) for f in frames]
    assert [p[:4] for p in pushes] == [[None, None, "realtime:chat", "postgres_changes"]] * 2
    assert pushes[0][4]["ids"] == [bindings[0].id]
    assert pushes[1][4]["ids"] == [bindings[0].id, bindings[1].id]
    data = pushes[0][4]["data"]
    assert data["errors"] is None and {c["name"] for c in data["columns"]} >= {"id", "content"}
    # an attendee's own staff-only message reads as staff see it; another attendee gets nothing
    own = [change(ChangeOp.INSERT, message(visibility="staff", user_id=5))]
    assert len(channel.frames(own, Audience.ATTENDEE, 5)) == 1
    assert channel.frames(own, Audience.ATTENDEE, 6) == []
    v1 = Channel(V1, "realtime:chat", "1", "1", echoed, bindings)
    pushed = orjson.loads(v1.frames(own, Audience.STAFF, None)[0])
    assert set(pushed) == {"topic", "event", "payload", "ref"} and pushed["ref"] is None


def verifier(token: str) -> Identity:
    if token.startswith("user-"):
        return Identity(int(token.split("-")[1]), NOW + 60)
    if token == "old":
        return Identity(3, NOW - 1)
    raise TokenRejected("invalid_token", "Invalid access token")


def session(vsn: str = V2) -> PhoenixSession:
    return PhoenixSession(verify_token=verifier, vsn=vsn, apikey="anon")


def sent(actions: list[Any]) -> list[Any]:
    return [orjson.loads(a.data) for a in actions if isinstance(a, Send)]


def join(s: PhoenixSession, token: str | None, ref: str = "1") -> list[Any]:
    payload: dict[str, Any] = {"config": {"postgres_changes": [binding()]}}
    if token is not None:
        payload["access_token"] = token
    return s.on_text(orjson.dumps([ref, ref, "realtime:w", "phx_join", payload]).decode(), NOW)


def test_a_join_is_answered_after_the_access_check() -> None:
    s = session()
    actions = join(s, "user-3")
    assert any(isinstance(a, WatchTokenExpiry) for a in actions)
    check = next(a for a in actions if isinstance(a, CheckAccess))
    assert (check.webinar_id, check.user_id) == (7, 3) and sent(actions) == []
    answered = sent(s.on_access(7, check.generation, Audience.ATTENDEE, "attendee", 10))
    assert answered[0][3] == "phx_reply" and answered[0][4]["status"] == "ok"
    assert answered[0][4]["response"]["postgres_changes"][0]["id"] > 0
    assert answered[1][3] == "system" and answered[1][1] is None


def test_the_anon_key_is_not_a_refusal_and_not_a_user() -> None:
    s = session()
    reply = sent(join(s, "anon"))[0]
    assert reply[4] == {"status": "error",
                        "response": {"reason": "Unauthorized: a valid access token is required"}}
    reply = sent(join(s, "forged", ref="2"))[0]
    assert reply[4]["response"]["reason"] == "invalid_token: Invalid access token"
    reply = sent(join(s, "old", ref="3"))[0]
    assert reply[4]["response"]["reason"].startswith("token_expired")


def test_the_apikey_pushed_on_heartbeats_keeps_the_users_token() -> None:
    s = session()
    check = next(a for a in join(s, "user-3") if isinstance(a, CheckAccess))
    s.on_access(7, check.generation, Audience.ATTENDEE, "attendee", 0)
    frame = orjson.dumps(["1", "5", "realtime:w", "access_token", {"access_token": "anon"}])
    assert s.on_text(frame.decode(), NOW) == []
    assert s.identity is not None and s.identity.user_id == 3
    # a refused token closes every channel with the reason
    frame = orjson.dumps(["1", "6", "realtime:w", "access_token", {"access_token": "forged"}])
    actions = s.on_text(frame.decode(), NOW)
    assert any(isinstance(a, Unsubscribe) for a in actions)
    out = sent(actions)
    assert out[0][3] == "system" and out[0][4]["status"] == "error"
    assert out[1][3] == "phx_close" and s.subscriptions == {}


def test_heartbeats_leave_and_unknown_topics() -> None:
    s = session(V1)
    hb = s.on_text('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}', NOW)
    assert sent(hb) == [{"topic": "phoenix", "event": "phx_reply", "ref": None,
                         "payload": {"status": "ok", "response": {}}}]
    other = s.on_text('{"topic":"realtime:x","event":"access_token","payload":{},"ref":"9"}', NOW)
    assert sent(other)[0]["payload"] == {"status": "error",
                                         "response": {"reason": "unmatched topic"}}
