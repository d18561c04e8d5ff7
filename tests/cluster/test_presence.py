"""Presence across two server nodes on PostgreSQL and a real Redis (docs/webinar-features.md,
"Presence"): a socket on each node, and both see 2; a node that stops publishing drops out of
the others' totals after three periods; a user who leaves one node is gone on the other."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from webinar_chat.bus import create_bus

from ..helpers import RunningServer, World, auth, eventually, metric_value
from ..helpers import test_settings as settings_for
from ..realtime.test_realtime import Client, realtime
from ..redis_server import RedisProcess

INTERVAL_S = 0.3


@pytest.fixture
async def nodes(database_url: str, world: World, redis: RedisProcess
                ) -> AsyncIterator[list[RunningServer]]:
    channel = f"wc-test-{uuid.uuid4().hex[:8]}"
    settings = settings_for(database_url, bus_url=redis.url, bus_channel=channel,
                             presence_interval_s=INTERVAL_S, presence_throttle_s=0.1)
    running = [RunningServer(settings.with_(node_id=f"node-{i}")) for i in range(2)]
    for server in running:
        await server.start()
    yield running
    for server in running:
        await server.stop()


def latest(client: Client) -> int | None:
    found = client.of_type("presence")
    return found[-1]["count"] if found else None


async def test_a_socket_on_each_node_and_both_see_two_then_one(
        nodes: list[RunningServer], world: World) -> None:
    a, b = nodes
    wid = world.webinar.id
    async with realtime(a, world.alice.token) as on_a:
        await on_a.join(wid)
        async with realtime(b, world.bob.token) as on_b:
            await on_b.join(wid)
            for viewer in (on_a, on_b):
                await viewer.wait_for(lambda c: latest(c) == 2, timeout=5)
            async with httpx.AsyncClient(base_url=a.base_url) as http:
                r = await http.get(f"/api/webinars/{wid}/presence",
                                   headers=auth(world.host.token))
                assert r.json() == {"success": True, "count": 2}
            await on_b.close()
        # bob left node b: b publishes its 0 and a's total follows
        await on_a.wait_for(lambda c: latest(c) == 1, timeout=5)


async def test_a_node_that_stops_publishing_drops_out(
        nodes: list[RunningServer], world: World) -> None:
    a, _ = nodes
    wid = world.webinar.id
    # A third node that says it has 5 users, every period, then falls silent (as a node that
    # died would: no zero ever comes).
    ghost = create_bus(a.settings.with_(node_id="ghost"))
    stop = asyncio.Event()

    async def publish() -> None:
        while not stop.is_set():
            ghost.publish_presence({wid: 5})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL_S)

    try:
        async with realtime(a, world.alice.token) as on_a:
            await on_a.join(wid)
            publisher = asyncio.create_task(publish())
            await on_a.wait_for(lambda c: latest(c) == 6, timeout=5)
            stop.set()
            await publisher
            silent_at = asyncio.get_running_loop().time()
            await on_a.wait_for(lambda c: latest(c) == 1, timeout=10)
            # not before three periods without news (less the last period it was heard in)
            assert asyncio.get_running_loop().time() - silent_at >= 2 * INTERVAL_S
    finally:
        await ghost.close()


async def test_a_bad_presence_message_is_counted_and_changes_nothing(
        nodes: list[RunningServer], world: World, redis: RedisProcess) -> None:
    a, _ = nodes
    wid = world.webinar.id
    ghost: Any = create_bus(a.settings.with_(node_id="ghost"))
    try:
        async with realtime(a, world.alice.token) as on_a:
            await on_a.join(wid)
            await on_a.wait_for(lambda c: latest(c) == 1, timeout=5)
            def bad() -> float:
                return metric_value(a.app_state.metrics.render().decode(),
                                    "webinar_chat_bus_bad_messages_total")

            before = bad()
            ghost._enqueue(b'{"v": 1, "node": "ghost", "kind": "presence", "counts": [[7, -1]]}')
            await eventually(lambda: bad() > before, timeout=5)
            assert a.app_state.presence.count(wid) == 1
    finally:
        await ghost.close()
