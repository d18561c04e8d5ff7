"""Liveness against the real `webinar-chat serve` process (tests/serve.py), timings shortened
through the environment as an operator would set them: heartbeats and idle closes keep going
after any one socket is closed, a quiet room never looks dead to the SDK, a seq gap is repaired
and the room keeps delivering, an unexpected error is one JSON 500 and one log line.

Each test's server log is checked at teardown (tests/liveness/conftest.py): no traceback, no
failed log call, no error record the test did not provoke.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from webinar_chat.client import ChatClient, ClientConfig
from webinar_chat.store import Store
from webinar_chat.store.db import sqlite_path

from ..helpers import PASSWORD, Person, World, auth, eventually, new_id, send
from ..realtime.test_realtime import Client
from ..serve import ServeProcess
from .conftest import CliServerFactory

# Production runs 5 s heartbeats, a 30 s idle timeout and a 10 s client silence rule (two
# intervals); these keep the same ratios at a tenth of the time.
HEARTBEAT = 0.5
IDLE_TIMEOUT = 2.0
SHORT = {"HEARTBEAT_INTERVAL": str(HEARTBEAT), "CLIENT_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}
SDK = ClientConfig(silence_timeout=2 * HEARTBEAT, heartbeat_interval=HEARTBEAT,
                   reconnect_base=0.05, reconnect_cap=0.5, connect_timeout=2.0,
                   send_timeout=2.0, poll_wait=1.0, poll_retry=0.1, poll_retry_jitter=0.02,
                   http_timeout=5.0)


class TimedClient(Client):
    """The realtime test client, also noting when each frame arrived."""

    def __init__(self, ws: Any) -> None:
        self.arrivals: list[tuple[float, str]] = []
        super().__init__(ws)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                frame = json.loads(await self.ws.recv())
                self.arrivals.append((time.monotonic(), frame["type"]))
                self.frames.append(frame)
                self._new.set()
        except ConnectionClosed as exc:
            self.closed = exc
        self._new.set()

    def longest_silence(self, since: float) -> float:
        times = [since] + [t for t, _ in self.arrivals if t > since] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


@contextlib.asynccontextmanager
async def socket(server: ServeProcess, person: Person) -> AsyncIterator[TimedClient]:
    async with connect(f"{server.ws_url}?token={person.token}", compression=None) as ws:
        client = TimedClient(ws)
        try:
            yield client
        finally:
            client._reader.cancel()


async def closed_with(client: Client, timeout: float) -> tuple[int, str]:
    await eventually(lambda: client.closed is not None, timeout=timeout,
                     message="the socket was not closed")
    assert client.closed is not None and client.closed.rcvd is not None
    return client.closed.rcvd.code, client.closed.rcvd.reason


async def keep_talking(*clients: Client) -> None:
    """What a healthy client does: a heartbeat every interval."""
    while True:
        for client in clients:
            await client.send(type="heartbeat")
        await asyncio.sleep(HEARTBEAT)


async def metric(server: ServeProcess, name: str) -> float:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        text = (await http.get("/metrics")).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


async def test_a_silent_peer_is_closed_and_every_other_socket_keeps_its_heartbeats(
        cli_server: CliServerFactory, world: World) -> None:
    server = await cli_server(**SHORT)
    wid = world.webinar.id
    async with socket(server, world.alice) as alice, socket(server, world.bob) as bob, \
            socket(server, world.moderator) as silent:
        for client in (alice, bob, silent):
            await client.join(wid, last_seq=0)
        chatter = asyncio.create_task(keep_talking(alice, bob))
        try:
            started = time.monotonic()
            assert await closed_with(silent, timeout=IDLE_TIMEOUT + 5) == (4000,
                                                                           "heartbeat timeout")
            # closed once the idle timeout passed, by the next heartbeat round at the latest
            assert time.monotonic() - started <= IDLE_TIMEOUT + 2 * HEARTBEAT + 1.0
            # The loop that closed it goes on: a second silent peer is closed too ...
            async with socket(server, world.host) as silent_again:
                await silent_again.join(wid, last_seq=0)
                assert (await closed_with(silent_again, timeout=IDLE_TIMEOUT + 5))[0] == 4000
            # ... and the talkers got heartbeats all along, for several more intervals: never a
            # silence as long as the client's dead-socket rule (two intervals).
            after = time.monotonic()
            await eventually(lambda: sum(1 for t, kind in alice.arrivals
                                         if t > after and kind == "heartbeat") >= 6,
                             timeout=10 * HEARTBEAT + 5)
            for client in (alice, bob):
                assert client.closed is None
                assert client.longest_silence(since=started) < 2 * HEARTBEAT
        finally:
            chatter.cancel()
    closes = [r for r in server.events("realtime_close")
              if "4000" in r["line"] or r.get("code") == 4000]
    assert len(closes) == 2
    assert await metric(server, "webinar_chat_log_failures_total") == 0
    assert await metric(server, "webinar_chat_background_errors_total") == 0


async def test_a_quiet_room_never_makes_the_sdk_fall_back(cli_server: CliServerFactory,
                                                          world: World) -> None:
    """Nobody types for many heartbeat intervals, and meanwhile a dead peer is closed: the SDK's
    sockets must stay live the whole time (the failure this guards against: the heartbeat loop
    died at the first idle close, and every client fell back to long-polling)."""
    server = await cli_server(**SHORT)
    wid = world.webinar.id
    async with ChatClient(server.base_url, email=world.alice.email, password=PASSWORD,
                          config=SDK) as alice, \
            ChatClient(server.base_url, email=world.bob.email, password=PASSWORD,
                       config=SDK) as bob, socket(server, world.moderator) as dead_peer:
        rooms = [await alice.join(wid), await bob.join(wid)]
        await dead_peer.join(wid, last_seq=0)
        # 16 intervals of quiet (8 × the SDK's silence rule), with the dead peer's close in it
        await asyncio.sleep(16 * HEARTBEAT)
        assert dead_peer.closed is not None
        for client in (alice, bob):
            assert client.stats.fallback_activations == 0, client.stats
            assert client.stats.socket_failures == 0, client.stats
            assert client.stats.socket_connects == 1 and not client.fallback
        # and the room is live: a message reaches both over the socket
        await alice.send(wid, "still here?")
        for room in rooms:
            await eventually(lambda room=room: any(m.content == "still here?"
                                                   for m in room.messages), timeout=5)
        for client in (alice, bob):
            assert client.stats.polls == 0 and not client.fallback


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_change_never_offered_to_the_room_is_fetched_and_the_room_goes_on(
        cli_server: CliServerFactory, world: World, store: Store) -> None:
    server = await cli_server()
    wid = world.webinar.id
    async with socket(server, world.bob) as viewer, \
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        await viewer.join(wid, last_seq=0)
        assert (await send(http, world.alice, wid, "one", new_id())).status_code == 200
        await viewer.wait_for(lambda c: len(c.events()) == 1)
        # Committed by another writer (this test process): the server is never told, as when a
        # bus message between two processes is lost.
        await store.create_message(world.webinar, world.alice.user_id, "Alice", "two", new_id(),
                                   slow_mode_applies=False)
        assert (await send(http, world.alice, wid, "three", new_id())).status_code == 200
        await viewer.wait_for(lambda c: len(c.events()) == 3, timeout=10)
        assert [e["seq"] for e in viewer.events()] == [1, 2, 3]
        assert [e["new"]["content"] for e in viewer.events()] == ["one", "two", "three"]
        # the room keeps delivering live after the repair
        assert (await send(http, world.alice, wid, "four", new_id())).status_code == 200
        await viewer.wait_for(lambda c: len(c.events()) == 4)
        assert [e["seq"] for e in viewer.events()] == [1, 2, 3, 4]
        # and a long-poll from before the gap gets the repaired range in order
        r = await http.get(f"/api/webinars/{wid}/changes", params={"after_seq": 1, "wait": 5},
                           headers=auth(world.bob.token))
        assert [c["seq"] for c in r.json()["changes"]] == [2, 3, 4]
    assert len(server.events("gap_filled")) == 1
    assert await metric(server, "webinar_chat_gap_repairs_total") == 1


async def test_an_unexpected_error_is_one_json_500_and_one_log_line_with_the_request_id(
        cli_server: CliServerFactory, world: World, database_url: str) -> None:
    server = await cli_server(allowed_errors=("unhandled_error",))
    wid = world.webinar.id
    path = sqlite_path(database_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        url, headers = f"/api/webinars/{wid}/messages", auth(world.alice.token)
        assert (await http.get(url, headers=headers)).status_code == 200
        # the database breaks under the running server (a table an operator renamed)
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE messages RENAME TO messages_away")
        r = await http.get(url, headers={**headers, "X-Request-ID": "liveness-500-1"})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-request-id"] == "liveness-500-1"
        assert r.json() == {"success": False, "error": "Internal server error",
                            "code": "internal", "request_id": "liveness-500-1"}
        # without an incoming id, the server makes one and returns it
        generated = await http.get(url, headers=headers)
        assert generated.status_code == 500
        assert generated.json()["request_id"] == generated.headers["x-request-id"] != ""
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE messages_away RENAME TO messages")
        assert (await http.get(url, headers=headers)).status_code == 200  # nothing stuck
    errors = server.events("unhandled_error")
    assert len(errors) == 2
    assert sum("liveness-500-1" in r["line"] for r in errors) == 1
    # the request's lines: the error (with its traceback) and its access line, nothing else
    lines = [line for line in server.log_text().splitlines() if "liveness-500-1" in line]
    assert len(lines) == 2, lines
    assert sum("unhandled_error" in line for line in lines) == 1
    assert sum("http_request" in line and "500" in line for line in lines) == 1
    assert await metric(server, "webinar_chat_http_unhandled_errors_total") == 2
