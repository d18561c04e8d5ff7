"""Background work survives one failure (docs/operations.md, "Background work"): a fault is
injected into one real connection, room or feed read of the production server, and everything
else goes on — the failing connection is closed or the room reset, the error is counted in
`/metrics`, and no viewer loses a change."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from webinar_chat.protocol.session import SubState
from webinar_chat.store import Store

from ..helpers import RunningServer, World, auth, eventually, new_id, send
from .test_realtime import Client, realtime


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.2, "client_idle_timeout_s": 5.0}


async def background_errors(http: httpx.AsyncClient, loop: str) -> float:
    text = (await http.get("/metrics")).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "webinar_chat_background_errors_total"
               and sample.labels.get("loop") == loop)


def connection_of(server: RunningServer, user_id: int) -> Any:
    return next(c for c in server.app_state.connections if c.user_id == user_id)


def close_code(client: Client) -> int | None:
    closed = client.closed
    return closed.rcvd.code if closed is not None and closed.rcvd is not None else None


async def test_a_connection_whose_heartbeat_raises_is_closed_and_the_loop_goes_on(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    async with realtime(server, world.alice.token) as alice, \
            realtime(server, world.bob.token) as bob:
        await alice.join(world.webinar.id, last_seq=0)
        await bob.join(world.webinar.id, last_seq=0)

        def broken(*args: Any) -> None:
            raise RuntimeError("injected: heartbeat of one connection")

        connection_of(server, world.bob.user_id).heartbeat = broken
        await eventually(lambda: bob.closed is not None, timeout=5)
        assert close_code(bob) == 1011
        count = len(alice.of_type("heartbeat"))
        await alice.wait_for(lambda c: len(c.of_type("heartbeat")) >= count + 5, timeout=5)
        assert alice.closed is None
    assert await background_errors(http, "heartbeat") == 1


async def test_a_subscriber_whose_transport_raises_is_closed_and_the_others_get_the_batch(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with realtime(server, world.alice.token) as alice, \
            realtime(server, world.bob.token) as bob:
        await alice.join(wid, last_seq=0)
        await bob.join(wid, last_seq=0)
        room = server.app_state.hub.rooms[wid]
        bob_connection = connection_of(server, world.bob.user_id)
        # Live, not still replaying: only a live subscriber is written to by the fan-out.
        await eventually(lambda: all(s.state is SubState.LIVE for s in room.subscribers))

        class BrokenTransport:
            def is_closing(self) -> bool:
                return False

            def write(self, data: bytes) -> None:
                raise OSError("injected: write to one subscriber")

        sub = next(s for s in room.subscribers if s.owner is bob_connection)
        room.subscribers[sub] = BrokenTransport()  # type: ignore[assignment]
        assert (await send(http, world.alice, wid, "to everyone", new_id())).status_code == 200
        await alice.wait_for(lambda c: len(c.events()) == 1)
        await eventually(lambda: bob.closed is not None, timeout=5)
        assert close_code(bob) == 1011
        assert (await send(http, world.alice, wid, "and again", new_id())).status_code == 200
        await alice.wait_for(lambda c: [e["seq"] for e in c.events()] == [1, 2])
    assert await background_errors(http, "fanout") == 1


async def test_a_room_whose_flush_raises_is_reset_and_nobody_loses_a_change(
        server: RunningServer, world: World, http: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wid = world.webinar.id
    hub = server.app_state.hub
    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid, last_seq=0)
        assert (await send(http, world.bob, wid, "before", new_id())).status_code == 200
        await alice.wait_for(lambda c: len(c.events()) == 1)
        poll = asyncio.create_task(http.get(f"/api/webinars/{wid}/changes",
                                            params={"after_seq": 1, "wait": 10},
                                            headers=auth(world.bob.token)))
        await eventually(lambda: hub.rooms[wid].waiters == 1)
        real_seal = hub._seal
        calls: list[int] = []

        def seal_fails_once(room: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected: one flush of one room")
            return real_seal(room)

        monkeypatch.setattr(hub, "_seal", seal_fails_once)
        assert (await send(http, world.bob, wid, "lost in the flush", new_id())).status_code == 200
        # the subscriber is closed and the long-poll answered; both get the change from the feed
        await eventually(lambda: alice.closed is not None, timeout=5)
        assert close_code(alice) == 1011
        answer = (await asyncio.wait_for(poll, 10)).json()
        assert [c["new"]["content"] for c in answer["changes"]] == ["lost in the flush"]
    async with realtime(server, world.alice.token) as again:
        await again.join(wid, last_seq=1)
        await again.wait_for(lambda c: [e["seq"] for e in c.events()] == [2])
        # and the room delivers live again
        assert (await send(http, world.bob, wid, "after", new_id())).status_code == 200
        await again.wait_for(lambda c: [e["seq"] for e in c.events()] == [2, 3])
    assert await background_errors(http, "room_flush") == 1


async def test_a_failed_gap_fetch_is_retried_and_the_room_goes_on(
        server: RunningServer, world: World, http: httpx.AsyncClient, store: Store) -> None:
    wid = world.webinar.id
    hub = server.app_state.hub
    real_store = hub.store
    failures = [RuntimeError("injected: the feed read fails once")]

    class FlakyFeed:
        """The server's store, whose next gap read fails (a database blip)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_store, name)

        async def changes_after(self, *args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return await real_store.changes_after(*args, **kwargs)

    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid, last_seq=0)
        hub.store = FlakyFeed()  # type: ignore[assignment]
        try:
            # committed by another writer: this server's room is never told about seq 1
            await store.create_message(world.webinar, world.bob.user_id, "Bob", "unseen",
                                       new_id(), slow_mode_applies=False)
            assert (await send(http, world.bob, wid, "seen", new_id())).status_code == 200
            await alice.wait_for(lambda c: [e["seq"] for e in c.events()] == [1, 2], timeout=10)
            assert not failures  # the first fetch failed; the retry filled the gap
        finally:
            hub.store = real_store
        assert (await send(http, world.bob, wid, "live", new_id())).status_code == 200
        await alice.wait_for(lambda c: [e["seq"] for e in c.events()] == [1, 2, 3])
    assert await background_errors(http, "gap_fetch") == 1
