"""Presence: how many users are connected to a webinar now (docs/webinar-features.md, "Presence").

Connected means a live socket subscription to the webinar (a `Subscription` in the hub's room;
its `viewer_id` is whose it is) or a long-poll of it within the last `poll_ttl_s` (2 × the
long-poll wait by default; both the fast path and the slow path report them). Users are counted,
not sockets or tabs, and everybody counts, staff included. Nobody is named: only the number leaves
the process.

Across processes each node publishes its own counts on the bus every `interval_s` (a `presence`
bus message, bus/wire.py) for the webinars it has users in, and once more with 0 when one has
none left; a node adds the latest count of every other node heard from within three periods.
A user connected to two nodes counts twice (exact distinct users across nodes would mean shipping
user ids around; an approximate number is what the header needs).

Two parts: `PresenceCounts` is the bookkeeping without I/O or clock (`now` is passed in), tested
on its own; `Presence` is the thin loop that reads the hub, publishes and sends the frames
`{"type": "presence", "topic": …, "count": N}` — to a webinar's subscribers when its total
changed (at most once per `throttle_s`), and to a new subscriber right after its `joined`. An
error in one room is logged with the room and counted (`background_failure("presence", …)`); the
round goes on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..protocol.session import Subscription, SubState
from . import responses

if TYPE_CHECKING:
    from ..bus import Bus
    from ..settings import Settings
    from .hub import Hub, Room
    from .metrics import Metrics

# Another node's count is dropped after this many periods without news of it (a node that died,
# or a zero that was lost).
REMOTE_PERIODS = 3
# A join storm computes a room's users at most this often; each joiner is added on top.
JOIN_CACHE_S = 0.25
# Presence frames one room's sockets are sent per second at most, as a spacing between two rounds
# of `len(room.subscribers) / this` seconds when that is longer than PRESENCE_THROTTLE: 2 s up to
# 4,000 sockets, 5 s at 10,000. The frames of 10,000 sockets every 2 s were ~7 % of the server's
# CPU while they reconnected, with a count that changed at every round.
FRAMES_PER_S_PER_ROOM = 2_000


def presence_frame(topic: str, count: int) -> bytes:
    return orjson.dumps({"type": "presence", "topic": topic, "count": count})


class PresenceCounts:
    """Long-pollers seen, other nodes' counts, and what this node published last (pure)."""

    def __init__(self, *, interval_s: float, poll_ttl_s: float) -> None:
        self.interval_s = interval_s
        self.poll_ttl_s = poll_ttl_s
        self.pollers: dict[int, dict[int, float]] = {}  # webinar → user → last poll
        self.remote: dict[int, dict[str, tuple[int, float]]] = {}  # webinar → node → (n, heard)
        self.published: dict[int, int] = {}  # webinar → the non-zero count published last

    def polled(self, webinar_id: int, user_id: int, now: float) -> None:
        polls = self.pollers.get(webinar_id)
        if polls is None:
            polls = self.pollers[webinar_id] = {}
        polls[user_id] = now

    def local_users(self, webinar_id: int, socket_users: Iterable[int | None],
                    now: float) -> set[int]:
        """The distinct users connected here: those of the sockets, and recent long-pollers."""
        users = {user for user in socket_users if user is not None}
        polls = self.pollers.get(webinar_id)
        if polls:
            cutoff = now - self.poll_ttl_s
            users.update(user for user, at in polls.items() if at >= cutoff)
        return users

    def on_remote(self, node: str, counts: dict[int, int], now: float) -> None:
        for webinar_id, count in counts.items():
            if count > 0:
                self.remote.setdefault(webinar_id, {})[node] = (count, now)
            else:
                nodes = self.remote.get(webinar_id)
                if nodes is not None:
                    nodes.pop(node, None)
                    if not nodes:
                        del self.remote[webinar_id]

    def remote_count(self, webinar_id: int, now: float) -> int:
        nodes = self.remote.get(webinar_id)
        if not nodes:
            return 0
        cutoff = now - REMOTE_PERIODS * self.interval_s
        return sum(count for count, heard in nodes.values() if heard >= cutoff)

    def total(self, webinar_id: int, local: int, now: float) -> int:
        return local + self.remote_count(webinar_id, now)

    def expire(self, now: float) -> None:
        """Forget long-pollers past their time and nodes not heard from for three periods."""
        cutoff = now - self.poll_ttl_s
        for webinar_id, polls in list(self.pollers.items()):
            for user, at in list(polls.items()):
                if at < cutoff:
                    del polls[user]
            if not polls:
                del self.pollers[webinar_id]
        cutoff = now - REMOTE_PERIODS * self.interval_s
        for webinar_id, nodes in list(self.remote.items()):
            for node, (_, heard) in list(nodes.items()):
                if heard < cutoff:
                    del nodes[node]
            if not nodes:
                del self.remote[webinar_id]

    def to_publish(self, local: dict[int, int]) -> dict[int, int]:
        """What to publish this period: every webinar with users here, and a 0 for each that had
        some at the last publish and has none now (once)."""
        counts = {webinar_id: count for webinar_id, count in local.items() if count > 0}
        gone = {webinar_id: 0 for webinar_id in self.published if webinar_id not in counts}
        self.published = dict(counts)
        return {**counts, **gone}


class Presence:
    """The loop: recount every `throttle_s`, publish every `interval_s`, send frames."""

    def __init__(self, hub: Hub, bus: Bus, metrics: Metrics, settings: Settings, *,
                 wire: Callable[[bytes], bytes]) -> None:
        self.hub = hub
        self.bus = bus
        self.metrics = metrics
        self.wire = wire
        self.interval_s = max(0.05, settings.presence_interval_s)
        self.throttle_s = max(0.05, settings.presence_throttle_s)
        ttl = settings.presence_poll_ttl_s or 2 * settings.long_poll_max_wait_s
        self.counts = PresenceCounts(interval_s=self.interval_s, poll_ttl_s=ttl)
        self.sent: dict[int, int] = {}  # webinar → the total its sockets were sent last
        self.sent_at: dict[int, float] = {}  # webinar → when (time.monotonic())
        self._local: dict[int, tuple[float, frozenset[int]]] = {}  # webinar → (at, users)
        self._published_at = -float("inf")
        self._task: asyncio.Task[None] | None = None
        if hasattr(bus, "on_presence"):
            bus.on_presence = self._on_remote

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="presence")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # --- what the rest of the server reports ----------------------------------------------------

    def polled(self, webinar_id: int, user_id: int) -> None:
        """A long-poll of `webinar_id` by `user_id` (fast or slow path)."""
        self.counts.polled(webinar_id, user_id, time.monotonic())

    def joined(self, sub: Subscription) -> None:
        """A socket subscription went live: send it the count right after its `joined` frame
        (the session's actions are performed in order within this loop pass)."""
        asyncio.get_running_loop().call_soon(self._greet, sub)

    def count(self, webinar_id: int) -> int:
        """The webinar's total now (GET /api/webinars/{id}/presence)."""
        now = time.monotonic()
        return self.counts.total(webinar_id, len(self._users(webinar_id, now, JOIN_CACHE_S)), now)

    # --- internals -------------------------------------------------------------------------------

    def _on_remote(self, node: str, counts: dict[int, int]) -> None:
        self.counts.on_remote(node, counts, time.monotonic())

    def _users(self, webinar_id: int, now: float, max_age: float = 0.0) -> frozenset[int]:
        cached = self._local.get(webinar_id)
        if cached is not None and now - cached[0] <= max_age:
            return cached[1]
        room = self.hub.rooms.get(webinar_id)
        subscribers = list(room.subscribers) if room is not None else []
        users = frozenset(self.counts.local_users(
            webinar_id, (sub.viewer_id for sub in subscribers), now))
        self._local[webinar_id] = (now, users)
        return users

    def _greet(self, sub: Subscription) -> None:
        try:
            room = self.hub.rooms.get(sub.webinar_id)
            if room is None or sub not in room.subscribers or sub.encoding is not None:
                return  # left (or replaced) in the meantime; a Phoenix channel has no such frame
            now = time.monotonic()
            users = self._users(sub.webinar_id, now, JOIN_CACHE_S)
            # Counted, not added to a copy of the set: at a webinar's start every one of
            # thousands of joins would copy the set of everybody who joined before it.
            local = len(users) + (sub.viewer_id is not None and sub.viewer_id not in users)
            sub.owner.write(presence_frame(sub.topic, self.counts.total(sub.webinar_id, local,
                                                                        now)))
        except Exception as exc:
            self.metrics.background_failure("presence", exc, webinar_id=sub.webinar_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.throttle_s)
            try:
                self.tick(time.monotonic())
            except Exception as exc:
                self.metrics.background_failure("presence", exc)

    def tick(self, now: float) -> None:
        self.counts.expire(now)
        webinars = set(self.hub.rooms) | set(self.counts.pollers)
        local: dict[int, int] = {}
        for webinar_id in webinars:
            try:
                local[webinar_id] = len(self._users(webinar_id, now))
            except Exception as exc:
                self.metrics.background_failure("presence", exc, webinar_id=webinar_id)
        for webinar_id in [w for w in self._local if w not in webinars]:
            del self._local[webinar_id]
        if now - self._published_at >= self.interval_s:
            self._published_at = now
            try:
                counts = self.counts.to_publish(local)
                if counts:  # a node with nobody connected says nothing
                    self.bus.publish_presence(counts)
            except Exception as exc:
                self.metrics.background_failure("presence", exc)
        for webinar_id, room in list(self.hub.rooms.items()):
            try:
                if not room.subscribers:
                    self.sent.pop(webinar_id, None)
                    self.sent_at.pop(webinar_id, None)
                    continue
                # A big room's frames are spaced out further: every socket is one write, and at
                # a webinar's start the count changes at every tick (FRAMES_PER_S_PER_ROOM).
                spacing = len(room.subscribers) / FRAMES_PER_S_PER_ROOM
                if now - self.sent_at.get(webinar_id, -math.inf) < spacing:
                    continue
                total = self.counts.total(webinar_id, local.get(webinar_id, 0), now)
                if self.sent.get(webinar_id) != total:
                    self.sent[webinar_id] = total
                    self.sent_at[webinar_id] = now
                    self._broadcast(room, total)
            except Exception as exc:
                self.metrics.background_failure("presence", exc, webinar_id=webinar_id)
        for webinar_id in [w for w in self.sent if w not in self.hub.rooms]:
            del self.sent[webinar_id]
            self.sent_at.pop(webinar_id, None)

    def _broadcast(self, room: Room, total: int) -> None:
        payload = presence_frame(room.topic, total)
        wire = self.wire(payload)
        for sub in list(room.subscribers):
            if sub.state is SubState.SUSPENDED or sub.encoding is not None:
                # a lapsed token: nothing is sent until the next one; a Phoenix channel
                # (docs/supabase.md) counts as connected but has no presence frame
                continue
            listener: Any = sub.owner
            try:
                listener.write(payload, wire)
            except Exception as exc:
                self.metrics.background_failure("presence", exc, webinar_id=room.webinar_id,
                                                user_id=sub.viewer_id)


async def presence_endpoint(request: Request) -> Response:
    """GET /api/webinars/{webinar_id}/presence: `{"success": true, "count": N}` for whoever may
    read the webinar's messages (the same check, through the same cache)."""
    from .http_api import _access, _path_id, _state, _user_id, ok

    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    await _access(request, webinar_id, user_id, cached=True)
    presence = state.presence
    count = presence.count(webinar_id) if presence is not None else 0
    return ok(responses.PresenceAnswer, count=count)
