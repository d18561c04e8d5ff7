"""Sliced fan-out against a real server: a room delivers each batch in slices of
`realtime_flush_slice` subscribers with loop passes in between (docs/realtime.md, "Fan-out").

The server runs in the test's event loop, so a watcher task that runs on every loop pass sees each
delivery between two slices and can act exactly there, the way a frame arriving at that moment
would. Every test ends with the same check: each subscriber saw every change once, in seq order.
"""

from __future__ import annotations

import asyncio
import json
import socket as socket_module
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from webinar_chat.auth import access_cache
from webinar_chat.protocol import session as session_module
from webinar_chat.protocol.events import Audience

from ..helpers import RunningServer, World, auth, eventually, new_id, send
from .test_realtime import Client, expect_slow_consumer_close, realtime, seqs


@pytest.fixture
def backend() -> str:
    return "sqlite"


# One subscriber per slice: a delivery to N subscribers spans N loop passes, so sends, joins,
# leaves, polls and replays all land in the middle of deliveries. Tick 1 ms: back-to-back batches.
SLICED = {"realtime_flush_slice": 1, "realtime_tick_ms": 1}


class Watcher:
    """Runs `on_mid_delivery(room)` on every loop pass that falls between two slices of a
    delivery of the room, and records what it saw."""

    def __init__(self, server: RunningServer, webinar_id: int,
                 on_mid_delivery: Callable[[Any], None] | None = None) -> None:
        self.hub = server.app_state.hub
        self.webinar_id = webinar_id
        self.on_mid_delivery = on_mid_delivery
        self.mid_passes = 0
        self.joined_mid = 0  # passes where a subscriber not in the delivery's snapshot was live
        self.left_mid = 0  # passes where a snapshot subscriber had left the room
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            room = self.hub.rooms.get(self.webinar_id)
            delivery = room.delivery if room is not None else None
            if delivery is not None and 0 < delivery.next < len(delivery.targets):
                self.mid_passes += 1
                targets = set(delivery.targets)
                self.joined_mid += any(sub not in targets for sub in room.subscribers)
                self.left_mid += any(sub not in room.subscribers for sub in targets)
                if self.on_mid_delivery is not None:
                    self.on_mid_delivery(room)
            await asyncio.sleep(0)

    def stop(self) -> None:
        self.task.cancel()


def dense(client: Client, topic: str, upto: int, start: int = 1) -> bool:
    return seqs(client.events(topic)) == list(range(start, upto + 1))


class TestSlicedFanout:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return SLICED

    async def test_joins_leaves_and_closes_mid_delivery_lose_and_duplicate_nothing(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        wid = world.webinar.id
        topic = f"webinar:{wid}:messages"
        tokens = [world.alice.token, world.bob.token, world.moderator.token, world.host.token]
        state = server.app_state
        async with realtime(server, tokens[0]) as first:
            await first.join(wid, last_seq=0)
            stayers = [first]
            contexts = []
            for i in range(1, 8):
                ctx = realtime(server, tokens[i % 4])
                contexts.append(ctx)
                client = await ctx.__aenter__()
                await client.join(wid, last_seq=0)
                stayers.append(client)
            leavers, closers = [], []
            for i in range(3):
                for group in (leavers, closers):
                    ctx = realtime(server, tokens[i % 4])
                    contexts.append(ctx)
                    client = await ctx.__aenter__()
                    await client.join(wid, last_seq=0)
                    group.append(client)
            try:
                # Server-side connection objects of the leavers and closers, in join order.
                def connection_of(client: Client) -> Any:
                    port = client.ws.transport.get_extra_info("sockname")[1]
                    for connection in state.connections:
                        peer = connection.fanout_transport.get_extra_info("peername")
                        if peer[1] == port:
                            return connection
                    raise AssertionError("no server connection for this client")

                to_leave = [connection_of(c) for c in leavers]
                to_close = [connection_of(c) for c in closers]

                def act(room: Any) -> None:
                    # Exactly between two slices: a leave frame arrives, a connection is closed.
                    if to_leave:
                        connection = to_leave.pop()
                        connection.perform(connection.session.on_text(
                            json.dumps({"type": "leave", "topic": topic, "ref": "bye"}),
                            time.time()))
                    elif to_close:
                        to_close.pop().close(1000, "closed mid-delivery")

                watcher = Watcher(server, wid, act)
                sent = [0]
                # The poller's goal, once the senders are done (None: still sending).
                expected: list[int | None] = [None]

                async def sender(k: int) -> None:
                    # 20 each, and on until a subscription went live mid-delivery (a loaded
                    # machine may need many more sends for a join to land between two slices).
                    i = 0
                    while i < 20 or (not watcher.joined_mid and i < 100):
                        r = await send(http, world.alice, wid, f"s{k}-{i}", new_id())
                        assert r.status_code == 200
                        i += 1
                        sent[0] += 1

                async def late_joiners() -> list[Client]:
                    # Join while deliveries run, until one subscription went live mid-delivery.
                    joined = []
                    for i in range(20):
                        await first.wait_for(lambda c, n=i: len(c.events()) >= 5 * (n + 1),
                                             timeout=10)
                        ctx = realtime(server, tokens[i % 4])
                        contexts.append(ctx)
                        client = await ctx.__aenter__()
                        await client.join(wid, last_seq=0)
                        joined.append(client)
                        if watcher.joined_mid and i >= 2:
                            break
                    return joined

                async def poller() -> list[int]:
                    # Long-polls settle the room between slices and read the ring.
                    got: list[int] = []
                    while expected[0] is None or len(got) < expected[0]:
                        body = (await http.get(f"/api/webinars/{wid}/changes",
                                               params={"after_seq": got[-1] if got else 0,
                                                       "wait": 5},
                                               headers=auth(world.bob.token))).json()
                        got += [c["seq"] for c in body["changes"]]
                    return got

                polled = asyncio.create_task(poller())
                joining = asyncio.create_task(late_joiners())
                await asyncio.gather(*(sender(k) for k in range(3)))
                joined = await joining
                await send(http, world.alice, wid, "sentinel", new_id())
                total = sent[0] + 1
                expected[0] = total
                for client in stayers + joined:
                    await client.wait_for(lambda c: len(c.events()) >= total, timeout=10)
                watcher.stop()

                for client in stayers + joined:
                    assert dense(client, topic, total), seqs(client.events())
                for client in leavers:
                    left_at = next(i for i, f in enumerate(client.frames)
                                   if f["type"] == "left")
                    after = [f for f in client.frames[left_at:] if f["type"] == "changes"]
                    assert after == [], "changes after 'left'"
                    assert seqs(client.events()) == list(range(1, len(client.events()) + 1))
                for client in closers:
                    await client.wait_for(lambda c: c.closed is not None)
                    got = seqs(client.events())
                    assert got == list(range(1, len(got) + 1))
                assert (await polled)[:total - 1] == list(range(1, total))
                assert not to_leave and not to_close, "no delivery was ever between slices"
                assert watcher.left_mid and watcher.joined_mid and watcher.mid_passes
                room = state.hub.rooms[wid]
                assert len(room.subscribers) == len(stayers) + len(joined)
            finally:
                for ctx in reversed(contexts):
                    await ctx.__aexit__(None, None, None)

    async def test_settle_mid_delivery_keeps_order_for_sockets_and_polls(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        """A replay or a long-poll seals the pending tick while the previous batch is still being
        delivered: the sealed batch must wait for it (per-socket order) and the ring must
        already hold both (the poll and the replay see everything)."""
        wid = world.webinar.id
        topic = f"webinar:{wid}:messages"
        hub = server.app_state.hub
        async with realtime(server, world.alice.token) as a, \
                realtime(server, world.bob.token) as b, \
                realtime(server, world.moderator.token) as m, \
                realtime(server, world.host.token) as h, \
                realtime(server, world.bob.token) as b2, \
                realtime(server, world.alice.token) as a2:
            clients = (a, b, m, h, b2, a2)
            for c in clients:
                await c.join(wid, last_seq=0)
            settled = []

            def settle_mid(room: Any) -> None:
                if room.pending:
                    hub.settle(room)  # joins the pass under way
                    settled.append(room.delivery.items[-1].batch.last_seq)

            watcher = Watcher(server, wid, settle_mid)
            # Up to 120 bursts: the test stops as soon as three settles happened mid-delivery;
            # on a loaded machine that can take many bursts (it needs a send to land between
            # two slices).
            total = 120
            for i in range(total):
                # Unawaited bursts keep changes pending while batches are delivered.
                await asyncio.gather(*(send(http, world.alice, wid, f"m{i}-{k}", new_id())
                                       for k in range(3)))
                if len(settled) >= 3:
                    break
            sent = hub.rooms[wid].released_seq
            watcher.stop()
            for c in clients:
                await c.wait_for(lambda c: dense(c, topic, sent), timeout=10)
            assert settled, "no delivery was ever mid-way with changes pending"
            body = (await http.get(f"/api/webinars/{wid}/changes", params={"after_seq": 0},
                                   headers=auth(world.bob.token))).json()
            assert [c["seq"] for c in body["changes"]] == list(range(1, sent + 1))

    async def test_shutdown_mid_delivery_closes_sockets_with_1001(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        wid = world.webinar.id
        async with realtime(server, world.alice.token) as a, \
                realtime(server, world.bob.token) as b:
            for c in (a, b):
                await c.join(wid, last_seq=0)
            mid: list[bool] = []
            watcher = Watcher(server, wid, lambda room: mid.append(True))
            sends = asyncio.gather(
                *(send(http, world.alice, wid, f"m{i}", new_id()) for i in range(20)),
                return_exceptions=True)
            await eventually(lambda: bool(mid), timeout=10)
            watcher.stop()
            await server.stop()
            for c in (a, b):
                await c.wait_for(lambda c: c.closed is not None)
                assert c.closed is not None and c.closed.rcvd is not None
                assert c.closed.rcvd.code == 1001
                got = seqs(c.events())
                assert got == list(range(1, len(got) + 1))
            await sends
        await server.start()  # the fixture stops it again


class TestSlowConsumerSliced:
    """Buffer checks are amortised (every max_buffer/4 bytes of fan-out) and the delivery is
    sliced: a client that stops reading is still closed with 4008, the others get everything."""

    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_max_buffer": 64 * 1024, "realtime_flush_slice": 1}

    async def test_stalled_client_is_closed_and_the_others_see_every_change(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        wid = world.webinar.id
        topic = f"webinar:{wid}:messages"
        state = server.app_state
        async with realtime(server, world.alice.token) as a, \
                realtime(server, world.host.token) as h:
            for c in (a, h):
                await c.join(wid, last_seq=0)
            async with connect(server.ws_url + f"?token={world.bob.token}", compression=None,
                               max_queue=1) as stalled:
                await stalled.send(json.dumps({"type": "join", "last_seq": 0, "topic": topic}))
                while json.loads(await stalled.recv())["type"] != "joined":
                    pass
                stalled.transport.pause_reading()  # type: ignore[attr-defined]
                port = stalled.transport.get_extra_info("sockname")[1]
                (connection,) = [c for c in state.connections
                                 if c.fanout_transport.get_extra_info("peername")[1] == port]
                server_sock = connection.fanout_transport.get_extra_info("socket")
                server_sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_SNDBUF, 4096)
                client_sock = stalled.transport.get_extra_info("socket")
                client_sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
                big = "x" * 1900
                sent = 0
                for _ in range(300):
                    await send(http, world.moderator, wid, big, new_id())
                    sent += 1
                    if connection not in state.connections:
                        break
                assert connection not in state.connections, "the stalled client was never closed"
                await expect_slow_consumer_close(stalled)
            for c in (a, h):
                await c.wait_for(lambda c: dense(c, topic, sent), timeout=10)


class TestHeartbeatSkip:
    """The heartbeat round skips a socket that was sent a frame within half an interval."""

    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"heartbeat_interval_s": 3600.0}  # rounds are driven by the test

    async def test_recently_written_socket_gets_no_heartbeat_then_gets_one(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        wid = world.webinar.id
        state = server.app_state
        interval = 5.0
        async with realtime(server, world.alice.token) as c:
            await c.join(wid, last_seq=0)
            await send(http, world.bob, wid, "fan-out frame", new_id())
            await c.wait_for(lambda c: len(c.events()) == 1)
            (connection,) = state.connections
            written = connection.last_sent
            connection.heartbeat(written + interval * 0.4, 30.0, interval)  # skipped
            await send(http, world.bob, wid, "marker", new_id())
            await c.wait_for(lambda c: len(c.events()) == 2)
            assert not c.of_type("heartbeat")
            connection.heartbeat(connection.last_sent + interval * 0.5, 30.0, interval)
            await c.wait_for(lambda c: bool(c.of_type("heartbeat")))


def hold_after_first_slice(held: list[Any]) -> Callable[[Any], None]:
    """A Watcher action that stops the room's pass after its first target (its next slice is
    not scheduled) and puts the room in `held`: a pass to thousands of sockets takes tens of
    milliseconds, and this lets a change be released while one is part-way. The test resumes
    it with `loop.call_soon(hub._deliver_slice, room)`."""

    def hold(room: Any) -> None:
        if not held and room.delivery.next == 1 and room.slice_handle is not None:
            room.slice_handle.cancel()
            room.slice_handle = None
            held.append(room)

    return hold


class TestBatchJoiningAPass:
    # One subscriber per slice, and a tick long enough that what is released during a pass stays
    # pending until the test seals it (the slices seal it only once a tick has gone by).
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_flush_slice": 1, "realtime_tick_ms": 1000}

    @pytest.mark.parametrize("sealed_by", ["settle", "next_slice"])
    async def test_a_batch_sealed_mid_pass_rides_with_it_and_starts_the_next_pass(
            self, server: RunningServer, world: World, http: httpx.AsyncClient,
            sealed_by: str) -> None:
        """A batch sealed while a pass is part-way (by a read of the ring, or by the next slice
        once a tick has gone by) reaches the targets not yet served in the same frame as the
        pass's own batch, and the targets already served in the next pass: it does not wait for
        the whole pass to end and then for a pass of its own."""
        wid = world.webinar.id
        topic = f"webinar:{wid}:messages"
        hub = server.app_state.hub
        loop = asyncio.get_running_loop()
        tokens = [world.alice.token, world.bob.token, world.moderator.token, world.host.token]
        async with realtime(server, tokens[0]) as a, realtime(server, tokens[1]) as b, \
                realtime(server, tokens[2]) as m, realtime(server, tokens[3]) as h:
            clients = (a, b, m, h)
            for c in clients:
                await c.join(wid, last_seq=0)
            held: list[Any] = []
            watcher = Watcher(server, wid, hold_after_first_slice(held))
            assert (await send(http, world.alice, wid, "the pass's own", new_id())).status_code == 200
            await eventually(lambda: bool(held))
            watcher.stop()
            room = held[0]
            own_last = room.delivery.items[-1].batch.last_seq
            assert (await send(http, world.alice, wid, "the rider", new_id())).status_code == 200
            await eventually(lambda: bool(room.pending))
            rider = room.pending[0].seq
            if sealed_by == "settle":
                hub.settle(room)
            else:
                room.last_seal = -1e9  # as if a tick had gone by since the pass's own seal
            room.slice_handle = loop.call_soon(hub._deliver_slice, room)
            for c in clients:
                await c.wait_for(lambda c: dense(c, topic, rider), timeout=10)
            frames = [[e["seq"] for e in f["events"]] for c in clients
                      for f in c.of_type("changes")]
            # One target per slice, the rider sealed after the first: the other three get it
            # with the pass's own batch, in one frame; the first gets it alone, in the next pass.
            assert sorted(frames) == sorted([[own_last]] + [[own_last, rider]] * 3 + [[rider]]), \
                frames


    async def test_a_replaying_subscriber_is_offered_a_carried_batch_once(
            self, server: RunningServer, world: World, http: httpx.AsyncClient,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """A batch that joined a pass part-way is carried into the next pass for the targets
        served before it joined; a subscriber that got it in the first pass (here one still
        replaying, which buffers what it is offered) is not offered it again, or its buffer
        would hold it twice and the replay's end would send it twice."""
        wid = world.webinar.id
        topic = f"webinar:{wid}:messages"
        hub = server.app_state.hub
        store = server.app_state.store
        loop = asyncio.get_running_loop()
        tokens = [world.alice.token, world.bob.token, world.moderator.token, world.host.token]
        async with realtime(server, tokens[0]) as a, realtime(server, tokens[1]) as b, \
                realtime(server, tokens[2]) as m, realtime(server, world.bob.token) as late:
            for c in (a, b, m):
                await c.join(wid, last_seq=0)
            # The late subscriber's replay reads the feed now (nothing yet) but its answer is
            # held until the gate opens: it stays REPLAYING through both passes.
            gate = asyncio.Event()
            real_changes_after = store.changes_after

            async def held_read(*args: Any, **kwargs: Any) -> Any:
                page = await real_changes_after(*args, **kwargs)
                await gate.wait()
                return page

            monkeypatch.setattr(store, "changes_after", held_read)
            await late.send(type="join", topic=topic, last_seq=0, ref="j")
            await eventually(lambda: wid in hub.rooms and len(hub.rooms[wid].subscribers) == 4)
            held: list[Any] = []
            watcher = Watcher(server, wid, hold_after_first_slice(held))
            assert (await send(http, world.alice, wid, "the pass's own", new_id())).status_code == 200
            await eventually(lambda: bool(held))
            watcher.stop()
            room = held[0]
            own_last = room.delivery.items[-1].batch.last_seq
            assert (await send(http, world.alice, wid, "the rider", new_id())).status_code == 200
            await eventually(lambda: bool(room.pending))
            rider = room.pending[0].seq
            hub.settle(room)
            room.slice_handle = loop.call_soon(hub._deliver_slice, room)
            for c in (a, b, m):
                await c.wait_for(lambda c: dense(c, topic, rider), timeout=10)
            await eventually(lambda: room.delivery is None and not room.carried, timeout=10)
            gate.set()
            # a message after both: once the late subscriber has it, all it was sent is here
            r = await send(http, world.alice, wid, "after both", new_id())
            last = r.json()["message"]["seq"]
            await late.wait_for(lambda c: last in seqs(c.events(topic)), timeout=10)
            assert seqs(late.events(topic)) == [own_last, rider, last]

class TestSliceTimeBudget:
    """A slice also ends once it has held the loop for `realtime_flush_slice_ms`, however many
    subscribers the count would allow: with a budget of 0 every slice serves one subscriber
    (the first is always served, so a pass always moves on)."""

    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_flush_slice": 100, "realtime_flush_slice_ms": 0, "realtime_tick_ms": 1}

    async def test_a_slice_that_used_its_time_lets_the_loop_run_before_the_next(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        wid = world.webinar.id
        topic = f"webinar:{wid}:messages"
        tokens = [world.alice.token, world.bob.token, world.moderator.token, world.host.token]
        async with realtime(server, tokens[0]) as a, realtime(server, tokens[1]) as b, \
                realtime(server, tokens[2]) as m, realtime(server, tokens[3]) as h:
            clients = (a, b, m, h)
            for c in clients:
                await c.join(wid, last_seq=0)
            positions: set[int] = set()
            watcher = Watcher(server, wid, lambda room: positions.add(room.delivery.next))
            last = 0
            for i in range(3):
                r = await send(http, world.alice, wid, f"budget {i}", new_id())
                assert r.status_code == 200
                last = r.json()["message"]["seq"]
            for c in clients:
                await c.wait_for(lambda c: dense(c, topic, last), timeout=10)
            watcher.stop()
            # Four targets, a slice of one each: the loop ran after the first, second and third.
            assert positions == {1, 2, 3}, positions


async def test_join_uses_the_read_path_access_cache_without_a_stale_head(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    cache = server.app_state.access
    # An HTTP read caches bob's access, with the webinar row as it was then (last_seq 0).
    assert (await http.get(f"/api/webinars/{wid}/messages",
                           headers=auth(world.bob.token))).status_code == 200
    assert cache.for_fast_path(wid, world.bob.user_id, time.monotonic()) is not None
    for i in range(3):
        await send(http, world.alice, wid, f"m{i}", new_id())
    async with realtime(server, world.bob.token) as c:
        await c.join(wid, last_seq=3, ref="resume")  # not mistaken for a seq beyond the head
        joined = c.of_type("joined")[-1]
        assert (joined["head_seq"], joined["resume_from"]) == (3, 3)
        await c.join(wid, last_seq=1, ref="replay")
        await c.wait_for(lambda c: seqs(c.events()) == [2, 3])
        await c.join(wid, ref="live")
        assert c.of_type("joined")[-1]["resume_from"] == 3
        await send(http, world.alice, wid, "live", new_id())
        await c.wait_for(lambda c: seqs(c.events()) == [2, 3, 4])
    # A ban clears the cache: the next join is refused at once.
    r = await http.post("/api/admin/bans", json={"webinar_id": wid, "user_id": world.bob.user_id,
                                                 "banned": True}, headers=auth(world.admin.token))
    assert r.status_code == 200
    async with realtime(server, world.bob.token) as c:
        await c.join(wid, last_seq=0, ref="banned")
        assert c.of_type("error")[-1]["code"] == "banned"
        assert c.of_type("error")[-1]["banned_until"] is None


async def test_a_join_reuses_a_grant_up_to_the_fast_path_age_then_checks_fresh(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    """A reconnect storm comes back more than the cache's TTL after the joins it repeats: a grant
    up to FAST_MAX_AGE_S old serves the join without a query; an older one is checked again."""
    wid, bob = world.webinar.id, world.bob.user_id
    cache = server.app_state.access
    assert (await http.get(f"/api/webinars/{wid}/messages",
                           headers=auth(world.bob.token))).status_code == 200
    # Banned behind the cache's back (no bus message, no invalidation): only a query sees it.
    await server.app_state.store.set_banned(wid, bob, True)

    def age_grant(seconds: float) -> None:
        at, decision = cache._entries[(wid, bob)]
        cache._entries[(wid, bob)] = (time.monotonic() - seconds, decision)

    age_grant(access_cache.TTL_S + 5)
    async with realtime(server, world.bob.token) as c:
        await c.join(wid, ref="cached")
        assert c.of_type("joined")[-1]["ref"] == "cached"
    age_grant(access_cache.FAST_MAX_AGE_S + 1)
    async with realtime(server, world.bob.token) as c:
        await c.join(wid, ref="fresh")
        assert c.of_type("error")[-1]["code"] == "banned"


async def test_sockets_resuming_from_the_same_seq_share_one_replay_frame_until_a_change(
        server: RunningServer, world: World, http: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconnect storm: thousands resume from the same last_seq, and the replay from the ring
    is encoded once for them all (`Room.replay_frame`). A hide since then seals a batch, which
    drops the shared frames: the next one to resume sees the message redacted, never stale."""
    # Two events per replay frame: the frame of seqs 1–2 comes again after the hide (seq 4).
    monkeypatch.setattr(session_module, "REPLAY_FRAME_EVENTS", 2)
    wid = world.webinar.id
    async with realtime(server, world.moderator.token) as mod:
        await mod.join(wid)  # live: the room exists, and its ring holds what follows
        sent = [(await send(http, world.alice, wid, f"m{i}", new_id())).json()["message"]
                for i in range(3)]
        await mod.wait_for(lambda c: seqs(c.events()) == [1, 2, 3])
        room = server.app_state.hub.rooms[wid]
        async with realtime(server, world.bob.token) as bob:
            await bob.join(wid, last_seq=0)
            await bob.wait_for(lambda c: seqs(c.events()) == [1, 2, 3])
        shared = room.replay_frames[(Audience.ATTENDEE, 1, 2)]
        async with realtime(server, world.alice.token) as alice:
            await alice.join(wid, last_seq=0)
            await alice.wait_for(lambda c: seqs(c.events()) == [1, 2, 3])
            assert room.replay_frames[(Audience.ATTENDEE, 1, 2)] is shared
            assert json.loads(shared)["events"] == alice.events()[:2]
        assert (await http.post(f"/api/messages/{sent[1]['id']}/hide", json={"hidden": True},
                                headers=auth(world.moderator.token))).status_code == 200
        await mod.wait_for(lambda c: seqs(c.events()) == [1, 2, 3, 4])
        async with realtime(server, world.bob.token) as bob:
            await bob.join(wid, last_seq=0)
            await bob.wait_for(lambda c: seqs(c.events()) == [1, 2, 3, 4])
            redacted = bob.events()[1]["new"]
            assert redacted["hidden"] is True and "content" not in redacted
            assert bob.events()[0]["new"]["content"] == "m0"


async def test_client_heartbeats_skip_the_read_loop_and_frames_after_them_still_parse(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with connect(server.ws_url + f"?token={world.bob.token}", compression=None) as ws:
        (connection,) = server.app_state.connections
        for payload in ('{"type":"heartbeat"}', '{"type": "heartbeat"}'):
            await ws.send(payload)
            await eventually(lambda: connection.raw.heartbeat_at > 0)
        # Frames after (and between) fast-path heartbeats go through the parser as before.
        await ws.send(json.dumps({"type": "join", "topic": f"webinar:{wid}:messages",
                                  "last_seq": 0, "ref": "j"}))
        await ws.send('{"type":"heartbeat"}')
        await send(http, world.alice, wid, "after heartbeats", new_id())
        kinds = []
        while "changes" not in kinds:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
        assert kinds[-2:] == ["joined", "changes"] or "joined" in kinds
        # The idle check counts fast-path heartbeats as traffic.
        connection.last_received = 0.0
        connection.heartbeat(connection.raw.heartbeat_at + 1, 30.0, 5.0)
        assert not connection.closed


async def test_heartbeat_bytes_inside_a_frame_are_not_taken_for_a_heartbeat(
        server: RunningServer, world: World) -> None:
    async with connect(server.ws_url, compression=None) as ws:
        (connection,) = server.app_state.connections
        protocol = connection.raw._protocol
        inner = b"\x81\x94" + bytes(4) + b'{"type":"heartbeat"}'  # a whole heartbeat frame…
        # …sent as the payload of another frame, whose header arrives first (zero mask).
        ws.transport.write(bytes([0x81, 0x80 | len(inner)]) + bytes(4))
        await eventually(lambda: not protocol._at_frame_boundary())
        ws.transport.write(inner)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007  # invalid UTF-8
        assert protocol.heartbeat_at == 0.0
