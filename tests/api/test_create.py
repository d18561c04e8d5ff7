"""POST /api/messages/create — every status of SPEC §3, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from webinar_chat.auth.tokens import TokenService

from ..helpers import JWT_SECRET, World, auth, new_id, send


async def test_create_returns_the_stored_row(http: httpx.AsyncClient, world: World) -> None:
    cmid = new_id()
    r = await send(http, world.alice, world.webinar.id, "  Hello there  ", cmid)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    m = body["message"]
    assert m["content"] == "Hello there"  # trimmed
    assert m["client_msg_id"] == cmid
    assert m["webinar_id"] == world.webinar.id and m["user_id"] == world.alice.user_id
    assert m["hidden"] is False and m["seq"] == 1 and isinstance(m["id"], int)
    assert m["user"] == {"display_name": world.alice.display_name, "role": "attendee"}
    assert m["created_at"].endswith("Z")
    listed = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                            headers=auth(world.bob.token))
    assert [x["id"] for x in listed.json()["messages"]] == [m["id"]]


async def test_same_client_msg_id_is_stored_once_and_409_carries_it(
        http: httpx.AsyncClient, world: World) -> None:
    cmid = new_id()
    first = await send(http, world.alice, world.webinar.id, "once", cmid)
    again = await send(http, world.alice, world.webinar.id, "once", cmid)
    assert again.status_code == 409
    body = again.json()
    assert body == {"success": False, "error": "Duplicate message detected", "code": "duplicate",
                    "message": first.json()["message"]}
    listed = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                            headers=auth(world.alice.token))
    assert len(listed.json()["messages"]) == 1


async def test_same_client_msg_id_from_another_user_is_a_new_message(
        http: httpx.AsyncClient, world: World) -> None:
    cmid = new_id()
    assert (await send(http, world.alice, world.webinar.id, "a", cmid)).status_code == 200
    assert (await send(http, world.bob, world.webinar.id, "b", cmid)).status_code == 200


async def test_missing_client_msg_id_is_accepted_as_null(http: httpx.AsyncClient,
                                                          world: World) -> None:
    r1 = await send(http, world.alice, world.webinar.id, "legacy client")
    r2 = await send(http, world.alice, world.webinar.id, "legacy client")
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["message"]["client_msg_id"] is None
    assert r1.json()["message"]["id"] != r2.json()["message"]["id"]


@pytest.mark.parametrize("body, fragment", [
    ({"webinarId": 1, "content": "x", "clientMsgId": "not-a-uuid"}, "clientMsgId"),
    ({"webinarId": 1, "content": ""}, "content"),
    ({"webinarId": 1, "content": "   \n\t "}, "content"),
    ({"webinarId": 1, "content": "x" * 2001}, "2000"),
    ({"content": "x"}, "webinarId"),
    ({"webinarId": 1}, "content"),
    ({"webinarId": "1", "content": "x"}, "webinarId"),
    ({"webinarId": 1, "content": 5}, "content"),
    ({"webinarId": 1, "content": "x", "clientMsgId": 7}, "clientMsgId"),
    ([1, 2], ""),
    # beyond a 64-bit id: a 400 before the database driver overflows (was a 500)
    ({"webinarId": 2**63, "content": "x"}, "webinarId"),
    ({"webinarId": 2**70, "content": "x"}, "webinarId"),
    ({"webinarId": 99999999999999999999, "content": "x"}, "webinarId"),
])
async def test_bad_input_is_400_and_stores_nothing(http: httpx.AsyncClient, world: World,
                                                   body: Any, fragment: str) -> None:
    if isinstance(body, dict) and body.get("webinarId") == 1:
        body["webinarId"] = world.webinar.id
    r = await http.post("/api/messages/create", json=body, headers=auth(world.alice.token))
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and fragment in r.json()["error"]
    listed = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                            headers=auth(world.alice.token))
    assert listed.json()["messages"] == []


async def test_content_at_the_limit_is_accepted(http: httpx.AsyncClient, world: World) -> None:
    r = await send(http, world.alice, world.webinar.id, "é" * 2000)
    assert r.status_code == 200


async def test_malformed_json_is_400(http: httpx.AsyncClient, world: World) -> None:
    r = await http.post("/api/messages/create", content=b'{"webinarId": 1, "content": ',
                        headers={**auth(world.alice.token), "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"success": False, "error": "Malformed JSON body", "code": "invalid_request"}


async def test_no_token_is_401(http: httpx.AsyncClient, world: World) -> None:
    r = await http.post("/api/messages/create", json={"webinarId": world.webinar.id,
                                                      "content": "x"})
    assert r.status_code == 401 and r.json()["success"] is False


async def test_expired_token_is_401(http: httpx.AsyncClient, world: World) -> None:
    expired, _ = TokenService(JWT_SECRET, 900).issue_access(world.alice.user_id, ttl_s=-10)
    r = await http.post("/api/messages/create", json={"webinarId": world.webinar.id,
                                                      "content": "x"}, headers=auth(expired))
    assert r.status_code == 401 and r.json()["code"] == "token_expired"


async def test_forged_token_is_401(http: httpx.AsyncClient, world: World) -> None:
    forged, _ = TokenService("another-secret-" + "y" * 40, 900).issue_access(world.alice.user_id)
    r = await http.post("/api/messages/create", json={"webinarId": world.webinar.id,
                                                      "content": "x"}, headers=auth(forged))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_unregistered_and_other_tenant_are_403(http: httpx.AsyncClient,
                                                     world: World) -> None:
    r = await send(http, world.admin, world.webinar.id, "not registered")
    assert r.status_code == 403
    r = await send(http, world.alice, world.other_webinar.id, "other agency")
    assert r.status_code == 403
    r = await send(http, world.outsider, world.webinar.id, "from the other tenant")
    assert r.status_code == 403 and r.json()["success"] is False


async def test_banned_user_is_403(http: httpx.AsyncClient, world: World, server: Any) -> None:
    await server.app_state.store.set_banned(world.webinar.id, world.bob.user_id, True)
    r = await send(http, world.bob, world.webinar.id, "let me in")
    assert r.status_code == 403


async def test_unknown_webinar_is_404(http: httpx.AsyncClient, world: World) -> None:
    r = await send(http, world.alice, 999_999, "anyone?")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_closed_chat_is_403_for_attendees_but_retry_still_409(
        http: httpx.AsyncClient, world: World) -> None:
    cmid = new_id()
    stored = await send(http, world.alice, world.webinar.id, "before closing", cmid)
    r = await http.patch(f"/api/webinars/{world.webinar.id}", json={"chat_open": False},
                         headers=auth(world.host.token))
    assert r.status_code == 200 and r.json()["webinar"]["chat_open"] is False
    assert (await send(http, world.alice, world.webinar.id, "after")).status_code == 403
    retry = await send(http, world.alice, world.webinar.id, "before closing", cmid)
    assert retry.status_code == 409 and retry.json()["message"] == stored.json()["message"]
    assert (await send(http, world.host, world.webinar.id, "announcement")).status_code == 200


async def test_slow_mode_is_429_with_retry_after(http: httpx.AsyncClient, world: World) -> None:
    r = await http.patch(f"/api/webinars/{world.webinar.id}", json={"slow_mode_seconds": 30},
                         headers=auth(world.host.token))
    assert r.status_code == 200
    cmid = new_id()
    assert (await send(http, world.alice, world.webinar.id, "first", cmid)).status_code == 200
    second = await send(http, world.alice, world.webinar.id, "second", new_id())
    assert second.status_code == 429
    assert 1 <= int(second.headers["retry-after"]) <= 30
    assert second.json()["success"] is False and second.json()["code"] == "slow_mode"
    # a retry of the stored message is not slowed down: it gets its 409
    assert (await send(http, world.alice, world.webinar.id, "first", cmid)).status_code == 409
    # other users and staff are unaffected
    assert (await send(http, world.bob, world.webinar.id, "hi")).status_code == 200
    assert (await send(http, world.moderator, world.webinar.id, "mod")).status_code == 200
    assert (await send(http, world.moderator, world.webinar.id, "mod2")).status_code == 200
