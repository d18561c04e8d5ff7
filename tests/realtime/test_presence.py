"""Presence (server/presence.py, docs/webinar-features.md "Presence"): the bookkeeping on its own,
a loop that survives a broken room, and one real server whose count follows sockets and
long-polls as they come and go, by distinct user, on the socket and on the endpoint."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from webinar_chat.protocol.session import SubState
from webinar_chat.server.metrics import Metrics
from webinar_chat.server.presence import (
    FRAMES_PER_S_PER_ROOM,
    REMOTE_PERIODS,
    Presence,
    PresenceCounts,
)
from webinar_chat.settings import Settings

from ..helpers import RunningServer, World, auth, eventually, metric_value
from .test_realtime import Client, realtime

POLL_TTL_S = 1.0


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"presence_throttle_s": 0.1, "presence_interval_s": 0.2,
            "presence_poll_ttl_s": POLL_TTL_S}


# --- the bookkeeping ------------------------------------------------------------------------------

def test_users_are_counted_once_whatever_the_sockets_and_polls() -> None:
    counts = PresenceCounts(interval_s=5, poll_ttl_s=50)
    counts.polled(7, 3, now=100)
    counts.polled(7, 4, now=100)
    assert counts.local_users(7, [1, 1, 3, None], now=120) == {1, 3, 4}
    assert counts.local_users(8, [], now=120) == set()
    # a poller is forgotten once their time is up
    assert counts.local_users(7, [], now=151) == set()
    counts.expire(151)
    assert counts.pollers == {}


def test_other_nodes_add_up_until_they_fall_silent_or_say_zero() -> None:
    counts = PresenceCounts(interval_s=5, poll_ttl_s=50)
    counts.on_remote("b", {7: 3, 8: 1}, now=100)
    counts.on_remote("c", {7: 2}, now=102)
    assert counts.total(7, 1, now=103) == 6
    counts.on_remote("c", {7: 0}, now=104)
    assert counts.total(7, 1, now=104) == 4
    # b is not heard from again: it drops out after three periods
    assert counts.total(7, 1, now=100 + REMOTE_PERIODS * 5) == 4
    assert counts.total(7, 1, now=100 + REMOTE_PERIODS * 5 + 0.1) == 1
    counts.expire(100 + REMOTE_PERIODS * 5 + 0.1)
    assert counts.remote == {}


def test_a_webinar_is_published_while_it_has_users_then_once_with_zero() -> None:
    counts = PresenceCounts(interval_s=5, poll_ttl_s=50)
    assert counts.to_publish({7: 2, 8: 0}) == {7: 2}
    assert counts.to_publish({7: 2}) == {7: 2}
    assert counts.to_publish({7: 0}) == {7: 0}
    assert counts.to_publish({7: 0}) == {}
    assert counts.to_publish({}) == {}


class _Broken:
    @property
    def subscribers(self) -> Any:
        raise RuntimeError("a broken room")


class _Sub(SimpleNamespace):
    __hash__ = object.__hash__
    encoding = None  # our protocol (a Phoenix channel has one: docs/supabase.md)


class _Listener:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, payload: bytes, wire: bytes | None = None) -> None:
        self.frames.append(payload)


async def test_an_error_in_one_room_is_logged_counted_and_the_round_goes_on() -> None:
    listener = _Listener()
    sub = _Sub(webinar_id=2, viewer_id=5, state=SubState.LIVE, owner=listener,
               topic="webinar:2:messages")
    good = SimpleNamespace(webinar_id=2, topic="webinar:2:messages", subscribers={sub: None})
    hub = SimpleNamespace(rooms={1: _Broken(), 2: good})
    published: list[dict[int, int]] = []
    bus = SimpleNamespace(on_presence=None, publish_presence=published.append)
    metrics = Metrics()
    presence = Presence(hub, bus, metrics, Settings(), wire=lambda payload: payload)  # type: ignore[arg-type]
    presence.tick(1000.0)
    assert listener.frames == [b'{"type":"presence","topic":"webinar:2:messages","count":1}']
    assert published == [{2: 1}]
    assert metric_value(metrics.render().decode(), "webinar_chat_background_errors_total",
                        loop="presence") >= 1
    presence.tick(1001.0)  # unchanged: no second frame
    assert len(listener.frames) == 1


def test_a_big_rooms_frames_are_spaced_by_its_size() -> None:
    """Every socket is one write: a room of N sockets gets a round of frames at most every
    N / FRAMES_PER_S_PER_ROOM seconds (when that is longer than the throttle)."""
    size = FRAMES_PER_S_PER_ROOM * 5  # 5 s between rounds
    listener = _Listener()
    subs = {_Sub(webinar_id=1, viewer_id=i, state=SubState.LIVE, owner=listener,
                 topic="webinar:1:messages"): None for i in range(size)}
    room = SimpleNamespace(webinar_id=1, topic="webinar:1:messages", subscribers=subs)
    hub = SimpleNamespace(rooms={1: room})
    bus = SimpleNamespace(on_presence=None, publish_presence=lambda counts: None)
    presence = Presence(hub, bus, Metrics(), Settings(), wire=lambda payload: payload)  # type: ignore[arg-type]
    t0 = time.monotonic()  # the clock `polled` reads
    presence.tick(t0)
    assert len(listener.frames) == size
    presence.polled(1, size + 1)  # one more user: the count changes at once
    presence.tick(t0 + 2)  # the throttle's 2 s have gone by, the room's 5 s have not
    assert len(listener.frames) == size
    presence.tick(t0 + 5)
    assert len(listener.frames) == 2 * size
    assert listener.frames[-1].endswith(f'"count":{size + 1}}}'.encode())


# --- one real server ------------------------------------------------------------------------------

def counts(client: Client) -> list[int]:
    return [f["count"] for f in client.of_type("presence")]


async def endpoint_count(http: httpx.AsyncClient, world: World, token: str | None = None) -> int:
    r = await http.get(f"/api/webinars/{world.webinar.id}/presence",
                       headers=auth(token or world.host.token))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"success", "count"}
    return int(r.json()["count"])


async def test_the_count_follows_sockets_by_user_not_by_tab(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid)
        # the count comes right after `joined`, and counts the joiner
        await alice.wait_for(lambda c: counts(c) == [1])
        kinds = [f["type"] for f in alice.frames]
        assert kinds.index("presence") > kinds.index("joined")
        assert alice.of_type("presence")[0]["topic"] == f"webinar:{wid}:messages"
        async with realtime(server, world.bob.token) as bob:
            await bob.join(wid)
            await bob.wait_for(lambda c: bool(counts(c)) and counts(c)[-1] == 2)
            await alice.wait_for(lambda c: counts(c)[-1] == 2)
            assert await endpoint_count(http, world) == 2
            # a second tab of alice's is not a second attendee
            async with realtime(server, world.alice.token) as alice_again:
                await alice_again.join(wid)
                await alice_again.wait_for(lambda c: counts(c) == [2])
                assert await endpoint_count(http, world) == 2
            await bob.close()
        await alice.wait_for(lambda c: counts(c)[-1] == 1)
        assert await endpoint_count(http, world) == 1
        # a leave counts like a close
        await alice.send(type="leave", topic=f"webinar:{wid}:messages", ref="l")
        await eventually(lambda: server.app_state.presence.count(wid) == 0)
        # nothing beyond the numbers: no user ids, no names
        for frame in alice.of_type("presence"):
            assert set(frame) == {"type", "topic", "count"}


async def test_long_pollers_count_while_they_poll_and_drop_out_after_the_ttl(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid)
        await alice.wait_for(lambda c: counts(c) == [1])
        stop = asyncio.Event()

        async def poll_like_the_page() -> int:
            """Long-polls in a loop (the first goes through Starlette, the next ones through the
            fast path once the token and the access are cached)."""
            polls = 0
            after = 0
            while not stop.is_set():
                r = await http.get(f"/api/webinars/{wid}/changes",
                                   params={"after_seq": after, "wait": 0.3},
                                   headers=auth(world.moderator.token))
                assert r.status_code == 200, r.text
                after = r.json()["last_seq"]
                polls += 1
            return polls

        poller = asyncio.create_task(poll_like_the_page())
        await alice.wait_for(lambda c: counts(c)[-1] == 2)
        assert await endpoint_count(http, world) == 2
        # still counted while polling (through the fast path too), well past the ttl
        await eventually(lambda: poller.done() or server.app_state.fast_polls > 4, timeout=10)
        assert not poller.done()
        assert counts(alice)[-1] == 2 and await endpoint_count(http, world) == 2
        stop.set()
        assert await poller > 1
        # the poller stopped: gone within the ttl and a tick
        await alice.wait_for(lambda c: counts(c)[-1] == 1, timeout=POLL_TTL_S + 3)
        assert await endpoint_count(http, world) == 1


async def test_the_endpoint_answers_readers_of_the_webinar_only(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    path = f"/api/webinars/{wid}/presence"
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers=auth(world.outsider.token))).status_code == 403
    assert (await http.get(path, headers=auth(world.admin.token))).status_code == 403
    assert (await http.get("/api/webinars/999999/presence",
                           headers=auth(world.alice.token))).status_code == 404
    for person in (world.alice, world.moderator, world.host):
        assert await endpoint_count(http, world, person.token) == 0
