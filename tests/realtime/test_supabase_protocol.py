"""`/realtime/v1/websocket` frame by frame (docs/supabase.md): both serializers, the join reply
and its binding ids, pushes per binding, what staff and attendees receive for hides and deletes,
heartbeats, access_token pushes, leave, refusals, bans and expired tokens."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from ..helpers import RunningServer, World, auth, new_id, send
from .phoenix_client import V1, V2, PhoenixClient, phoenix, seed_binding

COLUMNS = {"id", "webinar_id", "user_id", "content", "created_at", "hidden", "client_msg_id",
           "seq", "visibility", "author_role", "display_name"}


def topic(wid: int) -> str:
    return f"realtime:webinar:{wid}:messages"


async def joined(client: PhoenixClient, wid: int, token: str,
                 bindings: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Join the seed's way; → the reply's postgres_changes (asserting an ok reply)."""
    _ref, reply = await client.join(topic(wid), bindings or [seed_binding(wid)], token)
    assert reply["status"] == "ok", reply
    await client.wait_for(lambda: client.of("system", topic(wid)))
    return reply["response"]["postgres_changes"]  # type: ignore[no-any-return]


async def hide(http: httpx.AsyncClient, world: World, message_id: int, hidden: bool) -> None:
    r = await http.post(f"/api/messages/{message_id}/hide", json={"hidden": hidden},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("vsn", [V2, V1, None])
async def test_a_seed_style_subscription_gets_insert_update_and_delete(
        server: RunningServer, world: World, http: httpx.AsyncClient, vsn: str | None) -> None:
    wid = world.webinar.id
    async with phoenix(server, vsn=vsn) as staff, phoenix(server, vsn=vsn) as attendee:
        entries = await joined(staff, wid, world.host.token)
        assert entries == [{**seed_binding(wid), "id": entries[0]["id"]}]
        assert isinstance(entries[0]["id"], int) and entries[0]["id"] > 0
        system = staff.of("system", topic(wid))[0]
        assert system == {"extension": "postgres_changes", "status": "ok",
                          "message": "Subscribed to PostgreSQL",
                          "channel": f"webinar:{wid}:messages"}
        same = await joined(attendee, wid, world.alice.token)
        assert same == entries  # the same binding, the same id: one encoding for both
        bid = entries[0]["id"]

        r = await send(http, world.bob, wid, "hello from bob", new_id())
        message = r.json()["message"]
        for client in (staff, attendee):
            await client.wait_for(lambda c=client: c.changes())
            kind, ids, data = client.changes()[0]
            assert (kind, ids) == ("INSERT", [bid])
            assert data["schema"] == "public" and data["table"] == "messages"
            assert {c["name"] for c in data["columns"]} == COLUMNS
            assert data["errors"] is None and "old_record" not in data
            assert data["record"]["id"] == message["id"]
            assert data["record"]["content"] == "hello from bob"
            assert data["record"]["display_name"] == world.bob.display_name
            assert data["commit_timestamp"].endswith("Z")

        await hide(http, world, message["id"], True)
        await staff.wait_for(lambda: len(staff.changes()) == 2)
        kind, _ids, data = staff.changes()[1]
        assert kind == "UPDATE" and data["record"]["hidden"] is True
        assert data["old_record"] == {"id": message["id"]}
        # the attendee's list loses it: a DELETE, and never the content
        await attendee.wait_for(lambda: len(attendee.changes()) == 2)
        kind, _ids, data = attendee.changes()[1]
        assert kind == "DELETE" and data["old_record"] == {"id": message["id"]}
        assert "record" not in data

        await hide(http, world, message["id"], False)
        await attendee.wait_for(lambda: len(attendee.changes()) == 3)
        assert attendee.changes()[2][0] == "INSERT"  # back in the list
        assert attendee.changes()[2][2]["record"]["content"] == "hello from bob"
        await staff.wait_for(lambda: len(staff.changes()) == 3)
        assert staff.changes()[2][0] == "UPDATE"

        r = await http.delete(f"/api/messages/{message['id']}", headers=auth(world.host.token))
        assert r.status_code == 200, r.text
        for client in (staff, attendee):
            await client.wait_for(lambda c=client: len(c.changes()) == 4)
            kind, _ids, data = client.changes()[3]
            assert kind == "DELETE" and data["old_record"] == {"id": message["id"]}


async def test_each_binding_fires_for_its_own_event(server: RunningServer, world: World,
                                                    http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    bindings = [seed_binding(wid, "*"), seed_binding(wid, "UPDATE"), seed_binding(wid, "INSERT")]
    async with phoenix(server) as client:
        entries = await joined(client, wid, world.host.token, bindings)
        assert [e["event"] for e in entries] == ["*", "UPDATE", "INSERT"]  # in the client's order
        every, updates, inserts = (e["id"] for e in entries)
        assert len({every, updates, inserts}) == 3
        message = (await send(http, world.alice, wid, "one", new_id())).json()["message"]
        await hide(http, world, message["id"], True)
        await client.wait_for(lambda: len(client.changes()) == 2)
        assert [(k, sorted(i)) for k, i, _ in client.changes()] == [
            ("INSERT", sorted([every, inserts])), ("UPDATE", sorted([every, updates]))]


async def test_heartbeats_access_tokens_and_leave(server: RunningServer, world: World,
                                                  http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with phoenix(server, apikey="anon-key-abc") as client:
        await joined(client, wid, world.alice.token)
        ref = await client.push("phoenix", "heartbeat", {})
        reply = await client.wait_for(lambda: client.reply_to(ref))
        assert reply == {"status": "ok", "response": {}}
        # supabase-js re-sends the apikey on every heartbeat: the user's token stays
        await client.push(topic(wid), "access_token", {"access_token": "anon-key-abc"})
        await client.push(topic(wid), "access_token", {"access_token": world.alice.token})
        await send(http, world.bob, wid, "still here", new_id())
        await client.wait_for(lambda: client.changes())
        assert not client.of("phx_close")
        ref = await client.push(topic(wid), "phx_leave", {}, join_ref="1")
        reply = await client.wait_for(lambda: client.reply_to(ref))
        assert reply == {"status": "ok", "response": {}}
        await client.wait_for(lambda: client.of("phx_close", topic(wid)))
        await send(http, world.bob, wid, "after leaving", new_id())
        await asyncio.sleep(0.3)
        assert len(client.changes()) == 1
        ref = await client.push(topic(wid), "access_token", {"access_token": world.alice.token})
        reply = await client.wait_for(lambda: client.reply_to(ref))
        assert reply == {"status": "error", "response": {"reason": "unmatched topic"}}


async def test_refused_joins_say_why(server: RunningServer, world: World) -> None:
    wid = world.webinar.id
    async with phoenix(server, vsn=V1) as client:
        _ref, reply = await client.join(topic(wid), [seed_binding(wid)], None)  # anon key only
        assert reply["status"] == "error" and "Unauthorized" in reply["response"]["reason"]
        _ref, reply = await client.join(topic(wid), [seed_binding(wid)], "not-a-token")
        assert reply["status"] == "error" and "invalid_token" in reply["response"]["reason"]
        _ref, reply = await client.join(topic(wid), [seed_binding(wid)], world.outsider.token)
        assert reply == {"status": "error", "response": {
            "reason": "forbidden: You are not registered for this webinar"}}
        _ref, reply = await client.join(
            topic(wid), [{**seed_binding(wid), "table": "profiles"}], world.alice.token)
        assert reply["status"] == "error" and "public.messages" in reply["response"]["reason"]
        _ref, reply = await client.join(
            topic(wid), [{**seed_binding(wid), "filter": "webinar_id=gt.1"}], world.alice.token)
        assert reply["status"] == "error" and "webinar_id=eq.N" in reply["response"]["reason"]
        # refusals leave the socket usable
        assert (await client.join(topic(wid), [seed_binding(wid)], world.alice.token))[1][
            "status"] == "ok"


async def test_a_ban_stops_delivery_with_a_system_error_and_phx_close(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with phoenix(server) as bob, phoenix(server) as witness:
        await joined(bob, wid, world.bob.token)
        await joined(witness, wid, world.alice.token)
        r = await http.post(f"/api/webinars/{wid}/bans",
                            json={"user_id": world.bob.user_id, "duration_s": None},
                            headers=auth(world.host.token))
        assert r.status_code == 200, r.text
        await bob.wait_for(lambda: bob.of("phx_close", topic(wid)))
        errors = [p for p in bob.of("system", topic(wid)) if p["status"] == "error"]
        assert errors and errors[0]["message"].startswith("banned:")
        await send(http, world.alice, wid, "not for bob", new_id())
        await witness.wait_for(lambda: witness.changes())
        await asyncio.sleep(0.3)
        assert bob.changes() == []
        _ref, reply = await bob.join(topic(wid), [seed_binding(wid)], world.bob.token)
        assert reply["status"] == "error" and reply["response"]["reason"].startswith("banned:")


async def test_an_expired_token_closes_the_channels(server: RunningServer, world: World,
                                                    http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    # 3 s (`exp` is whole seconds: 2–3 s from now), enough for the join's answer on a busy box
    short, _ = server.app_state.tokens.issue_access(world.alice.user_id, ttl_s=3)
    async with phoenix(server) as client:
        await joined(client, wid, short)
        await client.wait_for(lambda: client.of("phx_close", topic(wid)), timeout=6)
        error = [p for p in client.of("system") if p["status"] == "error"][0]
        assert error["extension"] == "system" and error["message"].startswith("token_expired")
        await send(http, world.bob, wid, "too late", new_id())
        await asyncio.sleep(0.3)
        assert client.changes() == []


async def test_staff_only_messages_reach_staff_and_their_author_only(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    r = await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "hosts_only"},
                         headers=auth(world.host.token))
    assert r.status_code == 200, r.text
    async with phoenix(server) as host, phoenix(server) as alice, phoenix(server) as bob:
        for client, person in ((host, world.host), (alice, world.alice), (bob, world.bob)):
            await joined(client, wid, person.token)
        await send(http, world.alice, wid, "for the hosts", new_id())
        await send(http, world.host, wid, "for everyone", new_id())
        for client in (host, alice):
            await client.wait_for(lambda c=client: len(c.changes()) == 2)
            assert [d["record"]["content"] for _k, _i, d in client.changes()] == [
                "for the hosts", "for everyone"]
        await bob.wait_for(lambda: bob.changes())
        await asyncio.sleep(0.3)
        assert [d["record"]["content"] for _k, _i, d in bob.changes()] == ["for everyone"]


async def test_the_other_path_and_bad_frames(server: RunningServer, world: World) -> None:
    wid = world.webinar.id
    async with phoenix(server, path="/socket/websocket") as client:
        await joined(client, wid, world.alice.token)
        for _ in range(11):
            await client.ws.send("not json")
        code, _reason = await asyncio.wait_for(client.closed, 5)
        assert code == 4400
