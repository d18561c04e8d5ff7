"""Commit order across processes on PostgreSQL: 20 writers spread over three server processes
send into one webinar while pollers on every process read `changes?after_seq=` and
`messages?after=` in tight loops. Every poller must end with exactly the committed set, each
seq / id once and in increasing order — a reader never skips a change that commits later with a
smaller number (docs/delivery.md, guarantee 3), whichever process committed it."""

from __future__ import annotations

import asyncio

import httpx

from ..helpers import World, auth, new_id, send
from ..nginx_proxy import NginxProxy
from ..serve import ServeProcess

WRITERS = 20
PER_WRITER = 10


async def test_twenty_writers_over_three_processes_and_tight_pollers_agree(
        cluster: tuple[NginxProxy, list[ServeProcess]], world: World) -> None:
    _, processes = cluster
    wid = world.webinar.id
    clients = [httpx.AsyncClient(base_url=p.base_url, timeout=20) for p in processes]
    done = asyncio.Event()
    writers_people = [world.alice, world.bob, world.moderator, world.host]
    committed: list[int] = []

    async def writer(n: int) -> None:
        http = clients[n % 3]
        person = writers_people[n % len(writers_people)]
        for i in range(PER_WRITER):
            r = await send(http, person, wid, f"w{n}-{i}", new_id())
            assert r.status_code == 200, r.text
            committed.append(r.json()["message"]["id"])

    async def changes_poller(http: httpx.AsyncClient) -> list[int]:
        seen: list[int] = []
        after = 0
        while True:
            finished = done.is_set()
            r = await http.get(f"/api/webinars/{wid}/changes", params={"after_seq": after},
                               headers=auth(world.moderator.token))
            body = r.json()
            seen += [c["seq"] for c in body["changes"]]
            after = body["last_seq"]
            if finished and not body["has_more"]:
                return seen

    async def messages_poller(http: httpx.AsyncClient) -> list[int]:
        seen: list[int] = []
        after = 0
        while True:
            finished = done.is_set()
            r = await http.get(f"/api/webinars/{wid}/messages",
                               params={"after": after, "limit": 500},
                               headers=auth(world.moderator.token))
            ids = [m["id"] for m in r.json()["messages"]]
            seen += ids
            after = ids[-1] if ids else after
            if finished and not r.json()["has_more"]:
                return seen

    try:
        pollers = [asyncio.create_task(changes_poller(http)) for http in clients]
        pollers += [asyncio.create_task(messages_poller(http)) for http in clients]
        await asyncio.gather(*(writer(n) for n in range(WRITERS)))
        done.set()
        results = await asyncio.gather(*pollers)
    finally:
        for http in clients:
            await http.aclose()
    total = WRITERS * PER_WRITER
    assert len(committed) == len(set(committed)) == total
    for seen_seqs in results[:3]:
        assert seen_seqs == list(range(1, total + 1))  # no skip, no duplicate, in order
    for seen_ids in results[3:]:
        assert seen_ids == sorted(committed)  # ids grow in commit order: no skip, no duplicate
