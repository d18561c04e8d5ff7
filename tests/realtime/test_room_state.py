"""Room state through the change feed (docs/webinar-features.md): chat modes, slow mode and the
pinned announcement reach every viewer live and on every catch-up path with the same final
state, and hosts_only messages are seen by staff and their author only — live, replayed,
long-polled (parked and not), listed — on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ..helpers import Person, RunningServer, World, auth, new_id, send
from .test_realtime import realtime


async def changes(http: httpx.AsyncClient, person: Person, webinar_id: int, after_seq: int,
                  wait: float = 0) -> dict[str, Any]:
    r = await http.get(f"/api/webinars/{webinar_id}/changes",
                       params={"after_seq": after_seq, "wait": wait}, headers=auth(person.token))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def rooms(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "ROOM"]


def messages_by_id(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {e["new"]["id"]: e["new"] for e in events if e["type"] != "ROOM" and e["new"]}


async def test_room_changes_converge_live_on_replay_long_poll_and_reload(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    host = auth(world.host.token)
    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid, last_seq=0)
        answers = [
            await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "hosts_only"}, headers=host),
            await http.patch(f"/api/webinars/{wid}", json={"slow_mode_seconds": 10}, headers=host),
            await http.put(f"/api/webinars/{wid}/pin", json={"content": "  Q&A at 11:00  "},
                           headers=auth(world.moderator.token)),
            await http.put(f"/api/webinars/{wid}/pin", json={"content": "Q&A moved to 11:30"},
                           headers=host),
        ]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        final = answers[-1].json()["webinar"]
        assert final["chat_mode"] == "hosts_only" and final["chat_open"] is True
        assert final["slow_mode_seconds"] == 10
        assert final["pinned"]["content"] == "Q&A moved to 11:30"
        await alice.wait_for(lambda c: len(rooms(c.events())) == 4)
        live = rooms(alice.events())
    state = {k: final[k] for k in ("chat_mode", "slow_mode_seconds", "pinned")}
    # Live, each event carried the state of its moment (the first pin was trimmed) …
    assert live[0]["new"]["chat_mode"] == "hosts_only" and live[0]["new"]["pinned"] is None
    assert live[2]["new"]["pinned"]["content"] == "Q&A at 11:00"
    assert [e["seq"] for e in live] == [final["last_seq"] - 3 + i for i in range(4)]
    assert live[-1]["new"] == state and live[-1]["old"] is None
    # … read back later, every ROOM entry carries the state now: the same end however collapsed.
    async with realtime(server, world.bob.token) as bob:
        await bob.join(wid, last_seq=0)
        await bob.wait_for(lambda c: len(rooms(c.events())) == 4)
        assert all(e["new"] == state for e in rooms(bob.events()))
    polled = await changes(http, world.bob, wid, 0)
    assert [e["new"] for e in rooms(polled["changes"])] == [state] * 4
    reloaded = (await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))).json()
    assert {k: reloaded["webinar"][k] for k in state} == state
    assert reloaded["webinar"]["last_seq"] == final["last_seq"]
    unpinned = await http.delete(f"/api/webinars/{wid}/pin", headers=host)
    assert unpinned.status_code == 200 and unpinned.json()["webinar"]["pinned"] is None


async def test_hosts_only_messages_are_seen_by_staff_and_their_author_only_on_every_path(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    r = await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "hosts_only"},
                         headers=auth(world.host.token))
    head = r.json()["webinar"]["last_seq"]
    async with realtime(server, world.alice.token) as alice, \
            realtime(server, world.bob.token) as bob, \
            realtime(server, world.moderator.token) as mod:
        for c in (alice, bob, mod):
            await c.join(wid, last_seq=head)
        # Parked long-polls of the author and of another attendee, answered by the same flush.
        polls = [asyncio.create_task(changes(http, p, wid, head, wait=5))
                 for p in (world.alice, world.bob)]
        await asyncio.sleep(0.3)  # let both park (an earlier answer would be empty, not wrong)
        created = await send(http, world.alice, wid, "Private question for the hosts", new_id())
        assert created.status_code == 200
        mine = created.json()["message"]
        assert mine["visibility"] == "staff" and mine["content"].startswith("Private")
        announced = await send(http, world.host, wid, "Welcome, everyone", new_id())
        public = announced.json()["message"]
        assert public["visibility"] == "everyone"
        for c in (alice, bob, mod):
            await c.wait_for(lambda c: len(c.events()) == 2)
        alice_poll, bob_poll = await asyncio.gather(*polls)
        live = {name: messages_by_id(c.events()) for name, c in
                (("alice", alice), ("bob", bob), ("mod", mod))}
    redacted = {"id": mine["id"], "webinar_id": wid, "hidden": True, "seq": mine["seq"]}
    assert live["alice"][mine["id"]] == mine  # the author's own frame
    assert live["mod"][mine["id"]] == mine
    assert live["bob"][mine["id"]] == redacted
    assert all(v[public["id"]]["content"] == "Welcome, everyone" for v in live.values())
    for poll, expected in ((alice_poll, mine), (bob_poll, redacted)):
        got = messages_by_id(poll["changes"])
        assert mine["id"] in got, poll  # answered by the flush that carried it
        assert got[mine["id"]] == expected
    # Replayed from the ring and (a fresh socket after the head) from the feed.
    for person, expected in ((world.alice, mine), (world.bob, redacted)):
        async with realtime(server, person.token) as again:
            await again.join(wid, last_seq=head)
            await again.wait_for(lambda c: len(c.events()) == 2)
            assert messages_by_id(again.events())[mine["id"]] == expected
        polled = messages_by_id((await changes(http, person, wid, head))["changes"])
        assert polled[mine["id"]] == expected
    # Listed: absent for other attendees, whole for the author and staff; still so after the
    # mode changes back (the visibility was fixed when posted).
    await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "everyone"},
                     headers=auth(world.host.token))
    for person, sees in ((world.alice, True), (world.bob, False), (world.moderator, True)):
        listed = (await http.get(f"/api/webinars/{wid}/messages",
                                 headers=auth(person.token))).json()["messages"]
        assert (mine["id"] in {m["id"] for m in listed}) is sees, person.display_name
        assert public["id"] in {m["id"] for m in listed}
    # Moderation calls do not reveal it either (404, as for a hidden message).
    r = await http.delete(f"/api/messages/{mine['id']}", headers=auth(world.bob.token))
    assert r.status_code == 404


async def test_read_only_refuses_attendees_but_not_staff_and_pins_are_validated(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    r = await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "read_only"},
                         headers=auth(world.host.token))
    assert r.json()["webinar"]["chat_open"] is False
    refused = await send(http, world.alice, wid, "can I?", new_id())
    assert refused.status_code == 403 and refused.json()["code"] == "chat_closed"
    assert (await send(http, world.moderator, wid, "Announcement", new_id())).status_code == 200
    # chat_open is the older spelling of the same switch.
    r = await http.patch(f"/api/webinars/{wid}", json={"chat_open": True},
                         headers=auth(world.host.token))
    assert r.json()["webinar"]["chat_mode"] == "everyone"
    bad = [
        (world.moderator, {"chat_mode": "hosts_only"}, "patch", 403),  # modes are the host's
        (world.host, {"chat_mode": "party"}, "patch", 400),
        (world.alice, {"content": "Mine now"}, "pin", 403),
        (world.host, {"content": "   "}, "pin", 400),
        (world.host, {"content": "x" * 2001}, "pin", 400),
        (world.host, {"content": 5}, "pin", 400),
        (world.outsider, {"content": "Hello"}, "pin", 403),
    ]
    for person, body, kind, status in bad:
        if kind == "patch":
            r = await http.patch(f"/api/webinars/{wid}", json=body, headers=auth(person.token))
        else:
            r = await http.put(f"/api/webinars/{wid}/pin", json=body, headers=auth(person.token))
        assert r.status_code == status, (body, r.text)
        assert r.json()["success"] is False and r.json()["code"]
    r = await http.put(f"/api/webinars/{2**62}/pin", json={"content": "Hi"},
                       headers=auth(world.host.token))
    assert r.status_code == 404
    # Nothing refused reached the feed: one ROOM change per accepted call, one message.
    feed = (await changes(http, world.host, wid, 0))["changes"]
    assert [e["type"] for e in feed] == ["ROOM", "INSERT", "ROOM"]
