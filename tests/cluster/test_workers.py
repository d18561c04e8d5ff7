"""`webinar-chat serve --workers 2` on PostgreSQL + a private Redis, as an operator runs it: two
worker processes behind one port, each its own node on the bus; a change reaches the sockets of
both; a worker killed with -9 is replaced and the chat goes on; SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import CliServerFactory
from ..helpers import (
    SOMAXCONN,
    World,
    eventually,
    free_port_range,
    listen_queue_size,
    metric_value,
    new_id,
    scrape,
    send,
)
from ..realtime.test_realtime import Client, realtime, seqs
from ..redis_server import RedisProcess


async def nodes_answering(base_url: str, want: int, timeout: float = 15.0) -> dict[str, int]:
    """node id → pid of the workers that answer /healthz on fresh connections."""
    seen: dict[str, int] = {}

    async def enough() -> bool:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
            body = (await http.get("/healthz", headers={"Connection": "close"})).json()
        seen[body["node"]] = body["pid"]
        return len(seen) >= want

    await eventually(enough, timeout=timeout, interval=0.01,
                     message=f"fewer than {want} workers answered")
    return seen


async def test_two_workers_share_the_port_and_the_bus_and_survive_a_kill(
        cli_server: CliServerFactory, world: World, redis: RedisProcess) -> None:
    metrics_port = free_port_range(2)
    server = await cli_server(args=("--workers", "2"), allowed_errors=("worker_died",),
                              BUS_URL=redis.url, BUS_CHANNEL=f"wc-test-{uuid.uuid4().hex[:8]}",
                              HEARTBEAT_INTERVAL="0.5", METRICS_PORT=str(metrics_port))
    wid = world.webinar.id
    # the socket the parent bound for both: an accept queue as deep as the kernel allows
    assert listen_queue_size(server.port) == min(65535, SOMAXCONN)
    workers = await nodes_answering(server.base_url, 2)
    # each worker serves its own metrics on METRICS_PORT + its number: two scrape targets
    scraped = [await scrape(server, metrics_port + number) for number in (0, 1)]
    assert {node_id(text) for text in scraped} == set(workers)
    async with Sockets(server, world, 12) as viewers, \
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        for viewer in viewers:
            await viewer.join(wid, last_seq=0)
        assert (await send(http, world.alice, wid, "to both workers", new_id())).status_code == 200
        for viewer in viewers:
            await viewer.wait_for(lambda c: seqs(c.events()) == [1], timeout=10)
        # kill -9 one worker: its sockets drop, the supervisor starts another
        victim_node, victim_pid = next(iter(workers.items()))
        os.kill(victim_pid, signal.SIGKILL)
        await eventually(lambda: any(v.closed is not None for v in viewers), timeout=10)
        replaced = await nodes_answering(server.base_url, 2, timeout=20)
        assert victim_node not in replaced or len(replaced) > 2
        survivors = [v for v in viewers if v.closed is None]
        # the sockets were spread over both workers (the kernel hands each accept to either;
        # all 12 on one is a 1-in-2,000 chance)
        assert 0 < len(survivors) < len(viewers)
        assert (await send(http, world.alice, wid, "after the kill", new_id())).status_code == 200
        for viewer in survivors:
            await viewer.wait_for(lambda c: seqs(c.events()) == [1, 2], timeout=10)
    # a client that was on the killed worker resumes anywhere from its last seq
    async with realtime(server, world.bob.token) as again:
        await again.join(wid, last_seq=1)
        await again.wait_for(lambda c: seqs(c.events()) == [2], timeout=10)
    # the replacement worker took over the killed one's metrics port (its counters start at
    # zero again, which Prometheus' rate() and increase() expect of a restarted target)
    scraped = [await scrape(server, metrics_port + number) for number in (0, 1)]
    assert sum(metric_value(text, "webinar_chat_message_creates_total", outcome="ok")
               for text in scraped) >= 1
    assert len({node_id(text) for text in scraped}) == 2
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.process.wait, 15) == 0


def node_id(metrics_text: str) -> str:
    [node] = [s.labels["node_id"] for f in text_string_to_metric_families(metrics_text)
              for s in f.samples if s.name == "webinar_chat_node_info"]
    return node


class Sockets:
    """`n` raw sockets as alice and bob alternately, each on a fresh connection (so the kernel
    spreads them over the workers)."""

    def __init__(self, server: object, world: World, n: int) -> None:
        self.managers = [realtime(server, (world.alice if i % 2 else world.bob).token)  # type: ignore[arg-type]
                         for i in range(n)]

    async def __aenter__(self) -> list[Client]:
        return [await m.__aenter__() for m in self.managers]

    async def __aexit__(self, *exc: object) -> None:
        for manager in reversed(self.managers):
            try:
                await manager.__aexit__(None, None, None)
            except Exception:  # a socket the killed worker dropped
                pass
