"""The latest history page shared by its readers (server/history_pages.py): served from the
room while nothing changed, never across a change, never to an attendee whose own staff-only
message makes the page theirs, and the same bytes the database path gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ..helpers import RunningServer, World, auth, eventually, new_id, send
from ..realtime.test_realtime import realtime


class Reads:
    """Counts the database reads of the latest page (a spy on the real store)."""

    def __init__(self, server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
        store = server.app_state.store
        self.count = 0
        real = store.list_messages

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(store, "list_messages", counted)


@pytest.fixture
async def room(server: RunningServer, world: World) -> AsyncIterator[None]:
    """A live room: someone is subscribed to the webinar (a webinar in progress)."""
    async with realtime(server, world.host.token) as watcher:
        await watcher.join(world.webinar.id, last_seq=0)
        yield


def latest(http: httpx.AsyncClient, world: World, token: str, **params: Any) -> Any:
    return http.get(f"/api/webinars/{world.webinar.id}/messages", params=params,
                    headers=auth(token))


async def released(server: RunningServer, world: World, seq: int) -> None:
    """The room has released `seq` and sealed it (a seal empties the room's pages)."""
    hub = server.app_state.hub
    await eventually(lambda: hub.rooms[world.webinar.id].released_seq >= seq
                     and not hub.rooms[world.webinar.id].pending)


async def test_readers_share_one_read_until_a_change_and_get_the_same_bytes(
        server: RunningServer, world: World, http: httpx.AsyncClient, room: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        assert (await send(http, world.alice, world.webinar.id, f"m{i}", new_id())).status_code == 200
    await released(server, world, 3)
    reads = Reads(server, monkeypatch)
    first = await latest(http, world, world.bob.token)
    second = await latest(http, world, world.alice.token)
    assert reads.count == 1
    assert first.content == second.content
    assert first.headers["content-type"] == "application/json"
    body = first.json()
    assert [m["content"] for m in body["messages"]] == ["m0", "m1", "m2"]
    assert body["last_seq"] == 3 and body["has_more"] is False
    # other limits, and staff, are pages of their own
    await latest(http, world, world.bob.token, limit=2)
    staff = await latest(http, world, world.moderator.token)
    assert reads.count == 3
    # a new message: the next reader gets it
    assert (await send(http, world.bob, world.webinar.id, "m3", new_id())).status_code == 200
    await released(server, world, 4)
    after = (await latest(http, world, world.alice.token)).json()
    assert [m["content"] for m in after["messages"]][-1] == "m3" and after["last_seq"] == 4
    assert reads.count == 4
    assert staff.json()["last_seq"] == 3


async def test_a_hide_reaches_the_next_reader(
        server: RunningServer, world: World, http: httpx.AsyncClient, room: None) -> None:
    r = await send(http, world.alice, world.webinar.id, "buy cheap watches", new_id())
    message_id = r.json()["message"]["id"]
    await released(server, world, 1)
    assert len((await latest(http, world, world.bob.token)).json()["messages"]) == 1
    assert (await http.post(f"/api/messages/{message_id}/hide", json={"hidden": True},
                            headers=auth(world.moderator.token))).status_code == 200
    await released(server, world, 2)
    assert (await latest(http, world, world.bob.token)).json()["messages"] == []
    staff = (await latest(http, world, world.moderator.token)).json()["messages"]
    assert [m["hidden"] for m in staff] == [True]


async def test_an_attendee_with_a_staff_only_message_gets_their_own_page(
        server: RunningServer, world: World, http: httpx.AsyncClient, room: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wid = world.webinar.id
    host = auth(world.host.token)
    assert (await send(http, world.bob, wid, "for everyone", new_id())).status_code == 200
    assert (await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "hosts_only"},
                             headers=host)).status_code == 200
    assert (await send(http, world.alice, wid, "for the hosts only", new_id())).status_code == 200
    assert (await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "everyone"},
                             headers=host)).status_code == 200
    head = (await latest(http, world, world.host.token)).json()["last_seq"]
    await released(server, world, head)
    reads = Reads(server, monkeypatch)
    # bob's page is the shared one (kept, with alice named as a staff-only author) …
    bob = (await latest(http, world, world.bob.token)).json()
    assert [m["content"] for m in bob["messages"]] == ["for everyone"]
    # … which alice must not get: hers has her own message
    alice = (await latest(http, world, world.alice.token)).json()
    assert [m["content"] for m in alice["messages"]] == ["for everyone", "for the hosts only"]
    assert reads.count == 2
    # and her page is never kept for the others
    again = (await latest(http, world, world.bob.token)).json()
    assert again == bob
    assert reads.count == 2
    again_alice = (await latest(http, world, world.alice.token)).json()
    assert again_alice == alice
    assert reads.count == 3


async def test_without_a_live_room_every_read_goes_to_the_database(
        server: RunningServer, world: World, http: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await send(http, world.alice, world.webinar.id, "m", new_id())).status_code == 200
    reads = Reads(server, monkeypatch)
    for _ in range(2):
        assert len((await latest(http, world, world.bob.token)).json()["messages"]) == 1
    assert reads.count == 2
