"""GET …/messages and GET …/changes (incl. long-poll)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ..helpers import World, auth, eventually, new_id, send


async def _post_many(http: httpx.AsyncClient, world: World, n: int) -> list[int]:
    ids = []
    for i in range(n):
        r = await send(http, world.alice, world.webinar.id, f"message {i}", new_id())
        ids.append(r.json()["message"]["id"])
    return ids


async def test_messages_latest_after_before_limit(http: httpx.AsyncClient, world: World) -> None:
    ids = await _post_many(http, world, 6)
    url = f"/api/webinars/{world.webinar.id}/messages"
    h = auth(world.bob.token)
    latest = (await http.get(url, params={"limit": 4}, headers=h)).json()
    assert [m["id"] for m in latest["messages"]] == ids[2:]
    assert latest["has_more"] is True and latest["next_before"] == ids[2]
    assert latest["last_seq"] == 6
    after = (await http.get(url, params={"after": ids[1], "limit": 2}, headers=h)).json()
    assert [m["id"] for m in after["messages"]] == ids[2:4]
    assert after["has_more"] is True and after["next_after"] == ids[3]
    rest = (await http.get(url, params={"after": ids[3]}, headers=h)).json()
    assert [m["id"] for m in rest["messages"]] == ids[4:] and rest["has_more"] is False
    before = (await http.get(url, params={"before": ids[2]}, headers=h)).json()
    assert [m["id"] for m in before["messages"]] == ids[:2] and before["has_more"] is False
    for m in latest["messages"]:
        assert m["user"] == {"display_name": world.alice.display_name, "role": "attendee"}
        assert "email" not in m and "email" not in m["user"]


async def test_messages_bad_params_are_400(http: httpx.AsyncClient, world: World) -> None:
    url = f"/api/webinars/{world.webinar.id}/messages"
    for params in ({"after": "x"}, {"limit": 0}, {"limit": 501}, {"before": -1},
                   {"after": ""}, {"limit": ""}, {"after": "1.5"}):
        r = await http.get(url, params=params, headers=auth(world.bob.token))
        assert r.status_code == 400 and r.json()["success"] is False, params
    r = await http.get("/api/webinars/abc/messages", headers=auth(world.bob.token))
    assert r.status_code == 400


async def test_after_and_before_together_give_the_messages_between(
        http: httpx.AsyncClient, world: World) -> None:
    await _post_many(http, world, 6)
    url = f"/api/webinars/{world.webinar.id}/messages"
    ids = [m["id"] for m in (await http.get(url, headers=auth(world.bob.token))).json()["messages"]]
    r = await http.get(url, params={"after": ids[0], "before": ids[4], "limit": 2},
                       headers=auth(world.bob.token))
    body = r.json()
    assert [m["id"] for m in body["messages"]] == ids[1:3]
    assert body["has_more"] is True and body["next_after"] == ids[2]
    r = await http.get(url, params={"after": ids[2], "before": ids[4], "limit": 2},
                       headers=auth(world.bob.token))
    body = r.json()
    assert [m["id"] for m in body["messages"]] == [ids[3]]
    assert body["has_more"] is False and body["next_after"] is None
    r = await http.get(url, params={"after": ids[3], "before": ids[1]},
                       headers=auth(world.bob.token))
    assert r.json()["messages"] == [] and r.json()["has_more"] is False


async def test_read_permissions(http: httpx.AsyncClient, world: World) -> None:
    assert (await http.get(f"/api/webinars/{world.webinar.id}/messages")).status_code == 401
    r = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                       headers=auth(world.outsider.token))
    assert r.status_code == 403
    r = await http.get("/api/webinars/424242/changes", headers=auth(world.alice.token))
    assert r.status_code == 404 and r.json()["success"] is False


async def test_changes_after_seq(http: httpx.AsyncClient, world: World) -> None:
    await _post_many(http, world, 3)
    r = await http.get(f"/api/webinars/{world.webinar.id}/changes", params={"after_seq": 1},
                       headers=auth(world.bob.token))
    body = r.json()
    assert body["success"] is True
    assert [c["seq"] for c in body["changes"]] == [2, 3] and body["last_seq"] == 3
    assert all(c["type"] == "INSERT" and c["new"]["content"] for c in body["changes"])


async def test_long_poll_returns_as_soon_as_a_change_commits(http: httpx.AsyncClient,
                                                             world: World, server: Any) -> None:
    url = f"/api/webinars/{world.webinar.id}/changes"
    poll = asyncio.create_task(http.get(url, params={"after_seq": 0, "wait": 20},
                                        headers=auth(world.bob.token)))
    rooms = server.app_state.hub.rooms
    await eventually(lambda: world.webinar.id in rooms and rooms[world.webinar.id].waiters == 1)
    assert not poll.done()
    started = time.monotonic()
    await send(http, world.alice, world.webinar.id, "wake up", new_id())
    body = (await asyncio.wait_for(poll, 10)).json()
    assert time.monotonic() - started < 5  # far below the 20 s wait: it woke on the change
    assert [c["new"]["content"] for c in body["changes"]] == ["wake up"]
    assert body["last_seq"] == 1


async def test_long_poll_times_out_empty(http: httpx.AsyncClient, world: World) -> None:
    r = await http.get(f"/api/webinars/{world.webinar.id}/changes",
                       params={"after_seq": 0, "wait": 0.5}, headers=auth(world.bob.token))
    assert r.status_code == 200
    assert r.json() == {"success": True, "changes": [], "last_seq": 0, "has_more": False}


async def test_long_poll_wait_is_bounded(http: httpx.AsyncClient, world: World) -> None:
    for wait in ("26", "-1", "nan", "soon"):
        r = await http.get(f"/api/webinars/{world.webinar.id}/changes",
                           params={"after_seq": 0, "wait": wait}, headers=auth(world.bob.token))
        assert r.status_code == 400, wait


async def test_changes_older_than_the_memory_ring_come_from_the_database(
        http: httpx.AsyncClient, world: World, server: object) -> None:
    from webinar_chat.server import hub as hub_module

    await _post_many(http, world, 3)
    # open the room, then publish more so the ring holds only the newer changes
    await http.get(f"/api/webinars/{world.webinar.id}/changes", params={"after_seq": 3},
                   headers=auth(world.bob.token))
    await _post_many(http, world, 2)
    room = server.app_state.hub.rooms[world.webinar.id]  # type: ignore[attr-defined]
    assert room.ring and room.ring[0].seq == 4 and hub_module.RING_SIZE > 2
    body = (await http.get(f"/api/webinars/{world.webinar.id}/changes", params={"after_seq": 1},
                           headers=auth(world.bob.token))).json()
    assert [c["seq"] for c in body["changes"]] == [2, 3, 4, 5]
