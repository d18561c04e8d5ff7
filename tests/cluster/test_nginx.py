"""Three `webinar-chat serve` processes on PostgreSQL + a private Redis, behind a real nginx with
deploy/nginx/webinar-chat.conf: clients spread over the processes by nginx see every change
committed through any of them, a ban takes effect on all, and when one process is killed with -9
and another frozen for 5 s, every client reconnects through nginx, catches up, and ends with every
change once, in order, converged to the list API."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from webinar_chat.client import ChatClient, ClientConfig, Room

from ..helpers import PASSWORD, World, auth, eventually, new_id, send
from ..nginx_proxy import NginxProxy
from ..realtime.test_realtime import Client, realtime, seqs
from ..serve import ServeProcess

HEARTBEAT_S = 0.5
VIEWER = ClientConfig(silence_timeout=4 * HEARTBEAT_S, heartbeat_interval=HEARTBEAT_S,
                      reconnect_base=0.05, reconnect_cap=0.5, connect_timeout=2.0,
                      send_timeout=2.0, send_retry_base=0.1, send_retry_cap=0.5,
                      poll_wait=2.0, poll_retry=0.2, poll_retry_jitter=0.05, http_timeout=5.0)


async def test_clients_spread_by_nginx_see_everything_and_a_ban_reaches_every_process(
        cluster: tuple[NginxProxy, list[ServeProcess]], world: World) -> None:
    proxy, processes = cluster
    wid = world.webinar.id
    people = [world.alice, world.bob, world.moderator]
    async with contextlib.AsyncExitStack() as stack, \
            httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        # least_conn: 12 long-lived sockets end up 4 on each process
        viewers: list[Client] = [await stack.enter_async_context(
            realtime(proxy, people[i % 3].token)) for i in range(12)]  # type: ignore[arg-type]
        for viewer in viewers:
            await viewer.join(wid, last_seq=0)
        nodes = set()
        for _ in range(6):
            r = await http.get("/healthz", headers={"Connection": "close"})
            nodes.add(r.json()["node"])
        assert len(nodes) == 3  # nginx reaches all three
        # ... but not their metrics: those are scraped per process, off the public address
        assert (await http.get("/metrics")).status_code == 404
        results = await asyncio.gather(*(send(http, world.alice, wid, f"m{i}", new_id())
                                         for i in range(9)))
        assert all(r.status_code == 200 for r in results)
        for viewer in viewers:
            await viewer.wait_for(lambda c: seqs(c.events()) == list(range(1, 10)), timeout=10)
        r = await http.post("/api/admin/bans", json={"webinar_id": wid,
                                                     "user_id": world.bob.user_id,
                                                     "banned": True},
                            headers=auth(world.admin.token))
        assert r.status_code == 200
        bobs = viewers[1::3]
        for viewer in bobs:
            await viewer.wait_for(lambda c: bool(c.of_type("error")), timeout=2)
        assert (await send(http, world.alice, wid, "after", new_id())).status_code == 200
        for i, viewer in enumerate(viewers):
            if i % 3 != 1:
                await viewer.wait_for(lambda c: seqs(c.events())[-1] == 10, timeout=10)
        assert all(seqs(v.events()) == list(range(1, 10)) for v in bobs)


class Viewer:
    """An SDK client through nginx that keeps every seq its room yields."""

    def __init__(self, client: ChatClient, room: Room) -> None:
        self.client = client
        self.room = room
        self.seqs: list[int] = []
        self.task = asyncio.create_task(self._record())

    async def _record(self) -> None:
        async for event in self.room:
            self.seqs.append(event.seq)


async def test_a_killed_and_a_frozen_process_lose_nothing_for_clients_behind_nginx(
        cluster: tuple[NginxProxy, list[ServeProcess]], world: World) -> None:
    proxy, processes = cluster
    wid = world.webinar.id
    people = [world.alice, world.bob, world.moderator, world.host]
    async with contextlib.AsyncExitStack() as stack:
        clients = [ChatClient(proxy.base_url, email=people[i % 4].email, password=PASSWORD,
                              config=VIEWER) for i in range(9)]
        for client in clients:
            stack.push_async_callback(client.aclose)
        await asyncio.gather(*(client.start() for client in clients))
        rooms = await asyncio.gather(*(client.join(wid) for client in clients))
        viewers = [Viewer(client, room) for client, room in zip(clients, rooms, strict=True)]
        sender = clients[0]
        sent: list[Any] = []

        async def send_some(n: int, label: str) -> None:
            for i in range(n):
                sent.append(await sender.send(wid, f"{label}-{i}"))
                await asyncio.sleep(0.1)

        await send_some(5, "before")
        await processes[0].kill()  # kill -9: its clients reconnect through nginx elsewhere
        await send_some(5, "after-kill")
        # Frozen for 5 s whatever the sends do: its sockets fall silent and its clients move. A
        # request that nginx hands to the frozen process waits for it (least_conn sees it idle), so
        # the resume must not wait for the sends: that would deadlock.
        async def freeze_for(seconds: float) -> None:
            processes[1].pause()
            try:
                await asyncio.sleep(seconds)
            finally:
                processes[1].resume()

        await asyncio.gather(send_some(10, "while-frozen"), freeze_for(5))
        await processes[0].start()  # back on its port; nginx uses it again
        await send_some(5, "after")
        total = len(sent)
        assert total == 25
        for viewer in viewers:
            await eventually(lambda v=viewer: len(v.seqs) >= total, timeout=20,
                             message=f"a viewer stopped at {viewer.seqs[-3:]}")
            assert viewer.seqs == list(range(1, total + 1))
        async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
            r = await http.get(f"/api/webinars/{wid}/messages", params={"limit": 100},
                               headers=auth(world.moderator.token))
            assert r.status_code == 200, (r.status_code, r.headers, r.text)
            stored = [(m["id"], m["content"]) for m in r.json()["messages"]]
        assert len(stored) == total  # each acknowledged send stored once
        for viewer in viewers:
            assert [(m.id, m.content) for m in viewer.room.messages] == stored
        for viewer in viewers:
            viewer.task.cancel()
