"""Two server nodes (production configuration, in this process) on one PostgreSQL database and a
real Redis bus (a private `redis-server`): what one node commits reaches the other's viewers once
and in order, a ban made on one stops delivery on the other within a second, a wake-up that never
came is caught up by the safety poll, and a Redis restart loses nothing at the clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from webinar_chat.store import Store

from ..helpers import RunningServer, World, auth, eventually, new_id, send
from ..helpers import test_settings as settings_for
from ..realtime.test_realtime import realtime, seqs
from ..redis_server import RedisProcess


@pytest.fixture
async def nodes(database_url: str, world: World, redis: RedisProcess
                ) -> AsyncIterator[list[RunningServer]]:
    channel = f"wc-test-{uuid.uuid4().hex[:8]}"
    settings = settings_for(database_url, bus_url=redis.url, bus_channel=channel,
                             bus_safety_poll_s=0.5, bus_probe_idle_s=1.0,
                             bus_probe_timeout_s=1.0, heartbeat_interval_s=0.5)
    running = [RunningServer(settings.with_(node_id=f"node-{i}")) for i in range(2)]
    for server in running:
        await server.start()
    yield running
    for server in running:
        await server.stop()


def client(server: RunningServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, timeout=10)


async def test_changes_committed_on_either_node_reach_viewers_on_both_once_in_order(
        nodes: list[RunningServer], world: World) -> None:
    a, b = nodes
    wid = world.webinar.id
    async with realtime(a, world.bob.token) as on_a, realtime(b, world.moderator.token) as on_b, \
            client(a) as http_a, client(b) as http_b:
        await on_a.join(wid, last_seq=0)
        await on_b.join(wid, last_seq=0)
        # 20 concurrent senders, half through each node
        results = await asyncio.gather(*(
            send(http_a if i % 2 else http_b, world.alice, wid, f"m{i}", new_id())
            for i in range(20)))
        assert all(r.status_code == 200 for r in results)
        for viewer in (on_a, on_b):
            await viewer.wait_for(lambda c: len(c.events()) >= 20, timeout=10)
            assert seqs(viewer.events()) == list(range(1, 21))
        # moderation on one node reaches the other
        first = results[0].json()["message"]["id"]
        r = await http_b.post(f"/api/messages/{first}/hide", json={"hidden": True},
                              headers=auth(world.moderator.token))
        assert r.status_code == 200
        await on_a.wait_for(lambda c: len(c.events()) == 21)
        assert on_a.events()[-1]["type"] == "UPDATE" and on_a.events()[-1]["new"]["hidden"]
        assert "content" not in on_a.events()[-1]["new"]  # bob is an attendee: redacted


async def test_room_changes_and_staff_only_messages_cross_nodes_with_the_same_redaction(
        nodes: list[RunningServer], world: World) -> None:
    """A ROOM change and a hosts_only message committed on node B reach node A's viewers over
    the bus (docs/webinar-features.md): the author gets theirs whole, another attendee the stub."""
    a, b = nodes
    wid = world.webinar.id
    async with realtime(a, world.bob.token) as bob, realtime(a, world.alice.token) as alice, \
            client(b) as http_b:
        for viewer in (bob, alice):
            await viewer.join(wid, last_seq=0)
        r = await http_b.patch(f"/api/webinars/{wid}", json={"chat_mode": "hosts_only"},
                               headers=auth(world.host.token))
        assert r.status_code == 200
        sent = await send(http_b, world.alice, wid, "For the hosts", new_id())
        mine = sent.json()["message"]
        for viewer in (bob, alice):
            await viewer.wait_for(lambda c: len(c.events()) == 2, timeout=10)
            room = viewer.events()[0]
            assert room["type"] == "ROOM" and room["new"]["chat_mode"] == "hosts_only"
        assert alice.events()[1]["new"] == mine
        assert bob.events()[1]["new"] == {"id": mine["id"], "webinar_id": wid, "hidden": True,
                                          "seq": mine["seq"]}


async def test_a_ban_on_one_node_stops_delivery_on_the_other_within_a_second(
        nodes: list[RunningServer], world: World) -> None:
    a, b = nodes
    wid = world.webinar.id
    async with realtime(b, world.bob.token) as bob_on_b, \
            realtime(b, world.moderator.token) as witness, client(a) as http_a, \
            client(b) as http_b:
        await bob_on_b.join(wid, last_seq=0)
        await witness.join(wid, last_seq=0)
        # bob's parked long-poll on node b, too
        poll = asyncio.create_task(http_b.get(f"/api/webinars/{wid}/changes",
                                              params={"after_seq": 0, "wait": 20},
                                              headers=auth(world.bob.token)))
        await eventually(lambda: b.app_state.hub.rooms[wid].waiters == 1)
        r = await http_a.post("/api/admin/bans", json={"webinar_id": wid,
                                                       "user_id": world.bob.user_id,
                                                       "banned": True},
                              headers=auth(world.admin.token))
        assert r.status_code == 200
        loop = asyncio.get_running_loop()
        banned_at = loop.time()
        await bob_on_b.wait_for(lambda c: bool(c.of_type("error")), timeout=5)
        answer = await asyncio.wait_for(poll, 5)
        assert loop.time() - banned_at < 1.0
        assert bob_on_b.of_type("error")[0]["code"] == "banned"
        assert answer.status_code == 403
        # and nothing more reaches him
        assert (await send(http_a, world.alice, wid, "after the ban", new_id())).status_code == 200
        # once it reached a socket beside his on the same node, it would have reached his
        await witness.wait_for(lambda c: seqs(c.events()) == [1], timeout=5)
        assert bob_on_b.events() == []


async def test_a_lost_wake_up_is_caught_up_by_the_safety_poll(
        nodes: list[RunningServer], world: World, store: Store) -> None:
    _, b = nodes
    wid = world.webinar.id
    async with realtime(b, world.bob.token) as viewer:
        await viewer.join(wid, last_seq=0)
        # committed without any bus message (as if the publish was lost), and nothing follows
        await store.create_message(world.webinar, world.alice.user_id, "Alice", "quietly",
                                   new_id(), slow_mode_applies=False)
        await viewer.wait_for(lambda c: seqs(c.events()) == [1], timeout=5)


async def test_a_redis_restart_loses_nothing_and_readiness_follows_it(
        nodes: list[RunningServer], world: World, redis: RedisProcess) -> None:
    a, b = nodes
    wid = world.webinar.id
    async with realtime(b, world.bob.token) as viewer, client(a) as http_a, \
            client(b) as http_b:
        await viewer.join(wid, last_seq=0)
        assert (await send(http_a, world.alice, wid, "before", new_id())).status_code == 200
        await viewer.wait_for(lambda c: seqs(c.events()) == [1])
        await redis.stop()
        for http in (http_a, http_b):
            await eventually(_not_ready(http), timeout=10, interval=0.1)
        # sends still succeed (committed; the bus is only a wake-up) and still arrive
        for text in ("while", "redis", "is down"):
            assert (await send(http_a, world.alice, wid, text, new_id())).status_code == 200
        await viewer.wait_for(lambda c: seqs(c.events()) == [1, 2, 3, 4], timeout=10)
        await redis.start()
        for http in (http_a, http_b):
            await eventually(_ready(http), timeout=15, interval=0.1)
        assert (await send(http_a, world.alice, wid, "after", new_id())).status_code == 200
        await viewer.wait_for(lambda c: seqs(c.events()) == [1, 2, 3, 4, 5], timeout=5)
        assert [e["new"]["content"] for e in viewer.events()] == [
            "before", "while", "redis", "is down", "after"]


def _not_ready(http: httpx.AsyncClient) -> Any:
    async def check() -> bool:
        r = await http.get("/readyz")
        return r.status_code == 503 and r.json()["checks"]["bus"].startswith("error")
    return check


def _ready(http: httpx.AsyncClient) -> Any:
    async def check() -> bool:
        return (await http.get("/readyz")).status_code == 200
    return check
