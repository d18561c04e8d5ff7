"""Supabase Realtime clients (docs/supabase.md) behind the real nginx with
deploy/nginx/webinar-chat.conf, in front of three processes on PostgreSQL + Redis: the upgrade
goes through on `/realtime/v1/websocket` and `/socket/websocket`, channels on every process get
a change committed through any of them, and a channel quiet for longer than the proxy's timeout
for plain API calls (8 s) is still open."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from ..helpers import World, new_id, send
from ..nginx_proxy import NginxProxy
from ..realtime.phoenix_client import PhoenixClient, phoenix, seed_binding
from ..serve import ServeProcess


async def test_supabase_channels_behind_nginx_get_every_change_and_outlive_a_quiet_spell(
        cluster: tuple[NginxProxy, list[ServeProcess]], world: World) -> None:
    proxy, _processes = cluster
    wid = world.webinar.id
    topic = f"realtime:webinar:{wid}:messages"
    async with contextlib.AsyncExitStack() as stack, \
            httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        clients: list[PhoenixClient] = []
        for i in range(6):  # least_conn spreads them over the three processes
            path = "/realtime/v1/websocket" if i % 2 else "/socket/websocket"
            client = await stack.enter_async_context(
                phoenix(proxy, path=path))  # type: ignore[arg-type]
            _ref, reply = await client.join(topic, [seed_binding(wid)], world.alice.token)
            assert reply["status"] == "ok", reply
            clients.append(client)
        for i in range(3):
            assert (await send(http, world.bob, wid, f"m{i}", new_id())).status_code == 200
        for client in clients:
            await client.wait_for(lambda c=client: len(c.changes()) == 3, timeout=10)
        await asyncio.sleep(10)  # quiet: no frame either way for longer than 8 s
        assert (await send(http, world.bob, wid, "after a quiet spell", new_id())).status_code == 200
        for client in clients:
            await client.wait_for(lambda c=client: len(c.changes()) == 4, timeout=10)
            assert not client.closed.done()
