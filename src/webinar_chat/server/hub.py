"""Rooms and fan-out: one room per webinar with live listeners on this process.

A committed change reaches a room through the bus, passes the room's sequencer (strict seq order,
no duplicates, gaps fetched from the feed), and waits at most one room tick (`realtime_tick_ms`)
so that a busy room sends several changes per frame. A flush first *seals* the pending changes
into a batch (ring updated, each change and each frame encoded once per audience, long-polls
woken), then *delivers* it in a pass over the subscribers: the same prebuilt bytes are written
straight to every subscriber's transport, without awaiting any of them, in slices of at most
`realtime_flush_slice` subscribers and `realtime_flush_slice_ms`, with a loop pass between
slices so that sends and database completions are not held behind a flush to thousands of
sockets. A batch sealed while a pass runs joins it: the subscribers not yet served get it in the
same frame, the ones before in the next pass; each subscriber gets its batches in seq order,
each once. Subscribers that cannot keep up are closed (4008): their write-buffer sizes are
checked every `max_buffer / 4` bytes of fan-out.
Long-poll requests wait on the room too and are answered from its ring of recent changes.
Design: docs/realtime.md ("Fan-out"), docs/delivery.md.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from ..bus import Bus
from ..logs import detached
from ..protocol.events import (
    Audience,
    Change,
    ChangeOp,
    changes_frame,
    encode_event,
    encode_for,
    private_author,
    topic_name,
)
from ..protocol.sequencer import GAP_TIMEOUT_S, RoomSequencer
from ..protocol.session import Batch, Subscription, SubState
from ..store import Store
from . import history_pages
from .longpoll import ParkedPolls
from .metrics import Metrics

log = structlog.get_logger(__name__)

AUDIENCES = (Audience.ATTENDEE, Audience.STAFF)
# Changes kept per room for long-poll and short reconnects without a database read. 2,000 covers
# ~20 s of a very busy room (100 msgs/s); older positions fall back to the feed in the database.
RING_SIZE = 2000
# A room nobody listens to is dropped after this idle time (keeps memory bounded; long-pollers
# re-request within the 3 s fallback interval, so they keep their room alive).
ROOM_IDLE_S = 60.0
# A gap fetch that failed (database down, a bug) is retried after GAP_TIMEOUT_S × 2^failures, at
# most this many doublings (6.4 s): soon enough that a room recovers within seconds of the
# database, slow enough not to hammer a database that is down.
GAP_RETRY_DOUBLINGS = 5
# Changes read per feed query when a room catches up after a bus reconnect or a safety poll.
CATCH_UP_PAGE = 500


GONE: Any = object()  # a subscriber that left the room


class Listener(Protocol):
    """What a room needs from a realtime connection (server/realtime.py)."""

    # The connection's raw transport for the fan-out fast path, or None (then `write` is used).
    fanout_transport: asyncio.WriteTransport | None
    # `time.monotonic()` of the last frame written to the connection (heartbeats skip it).
    last_sent: float
    # Frames written to the connection, by the hub too (the session's log line reports them).
    frames_out: int

    def write(self, payload: bytes, wire: bytes | None = None) -> None: ...
    def on_batch(self, sub: Subscription, batch: Batch) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


class Delivery:
    """A sealed batch on its way to the room's subscribers, with what its delivery builds once."""

    __slots__ = ("batch", "wires", "events", "personal_wires", "channel_wires")

    def __init__(self, batch: Batch, wires: dict[Audience, bytes],
                 events: dict[Audience, list[bytes]]) -> None:
        self.batch = batch
        self.wires = wires  # the frame as WebSocket wire bytes, per audience
        self.events = events  # the batch's events, each encoded once per audience
        self.personal_wires: dict[int, bytes] = {}
        # Another protocol's frames (protocol/phoenix.py), per channel key and audience: every
        # channel subscribed the same way shares one encoding of the batch.
        self.channel_wires: dict[Any, tuple[list[bytes], bytes]] = {}

    def personal_wire(self, author: int, frame: bytes, wire: Callable[[bytes], bytes]) -> bytes:
        """The wire bytes of an author's own frame, built for their first subscriber."""
        found = self.personal_wires.get(author)
        if found is None:
            found = self.personal_wires[author] = wire(frame)
        return found

    def channel_wire(self, sub: Subscription,
                     wire: Callable[[bytes], bytes]) -> tuple[list[bytes], bytes]:
        """(frames, their wire bytes) of the batch for a subscriber with an `encoding`, built for
        the first subscriber of its kind. Empty when nothing in the batch is for it."""
        viewer = sub.viewer_id if sub.audience is Audience.ATTENDEE \
            and sub.viewer_id in self.batch.personal else None
        key = (sub.encoding.key, sub.audience, viewer)
        found = self.channel_wires.get(key)
        if found is None:
            frames = sub.encoding.frames(self.batch.changes, sub.audience, viewer)
            found = self.channel_wires[key] = (frames, b"".join(wire(f) for f in frames))
        return found


class Cycle:
    """One pass of the fan-out over the subscribers the room had when it began, slice by slice,
    writing each the sealed batches it lacks (docs/realtime.md, "Fan-out").

    A batch sealed while the pass runs joins it (`add`): the targets not yet served get it in
    this pass, in the same write as the rest, and the ones already served get it in the next
    pass. So a change waits for the next visit of the pass to each subscriber, at most one pass
    (plus the tick between passes), not for the rest of the pass under way and then a whole
    pass of its own."""

    __slots__ = ("items", "targets", "next", "founding", "check_buffers", "first_index",
                 "viewers", "_merged")

    def __init__(self, items: list[Delivery], targets: list[Subscription],
                 check_buffers: bool) -> None:
        self.items: list[Delivery] = []
        self.targets = targets
        self.next = 0  # index of the first target not yet served
        self.check_buffers = check_buffers
        self.first_index: dict[int, int] = {}  # a batch's first seq → its index in items
        self.viewers: set[int] = set()  # authors with a frame of their own in some batch
        self._merged: dict[tuple[int, int, bool], tuple[bytes, bytes]] = {}
        for item in items:
            self.add(item)
        self.founding = len(items)  # items[:founding] reach every target in this pass

    def add(self, item: Delivery) -> None:
        self.first_index[item.batch.first_seq] = len(self.items)
        self.items.append(item)
        if item.batch.personal:
            self.viewers.update(item.batch.personal)

    def merged(self, k: int, audience: Audience, topic: str,
               wire: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
        """(frame, wire bytes) of batches k… of the pass as one `changes` frame for `audience`,
        built for the first subscriber that needs exactly those and shared by the rest."""
        n = len(self.items)
        if k == n - 1:
            item = self.items[k]
            return item.batch.frames[audience], item.wires[audience]
        key = (k, n, audience is Audience.STAFF)
        found = self._merged.get(key)
        if found is None:
            frame = changes_frame(topic, [event for item in self.items[k:]
                                          for event in item.events[audience]])
            found = self._merged[key] = (frame, wire(frame))
        return found


class Room:
    def __init__(self, webinar_id: int, metrics: Metrics) -> None:
        self.webinar_id = webinar_id
        self.metrics = metrics
        self.topic = topic_name(webinar_id)
        self.sequencer: RoomSequencer | None = None  # None until the head seq is read
        self.early: list[Change] = []  # offered before the sequencer existed
        # Insertion-ordered; the value is the subscriber's raw transport (None: no fast path).
        self.subscribers: dict[Subscription, asyncio.WriteTransport | None] = {}
        self.pending: list[Change] = []  # released, waiting for the tick
        # Sealed (in the ring) and still lacked by some subscribers: they start the next pass.
        self.carried: list[Delivery] = []
        self.delivery: Cycle | None = None  # the pass under way, slice by slice
        self.flush_handle: asyncio.Handle | None = None
        self.slice_handle: asyncio.Handle | None = None
        self.unchecked_bytes = 0  # fan-out bytes since the last write-buffer check
        self.gap_handle: asyncio.TimerHandle | None = None
        self.gap_fetching = False  # a feed read for the gap is in flight
        self.catch_up_wanted = False  # read the feed after released_seq (bus resync, safety poll)
        self.gap_failures = 0  # consecutive failed gap fetches (retry backoff)
        self.last_flush = 0.0  # loop time a pass last ended (or found nothing to deliver)
        self.last_seal = 0.0  # loop time changes were last sealed into a batch
        self.ring: collections.deque[Change] = collections.deque(maxlen=RING_SIZE)
        # Long-poll answers since the last flush, by (audience, after_seq, limit): the pollers a
        # change wakes share their after_seq, so thousands of answers are one body.
        self.poll_bodies: dict[tuple[Audience, int, int, int], bytes] = {}
        # The latest history page, shared by its readers until the next change
        # (server/history_pages.py): emptied with poll_bodies, at every seal.
        self.history_pages: dict[history_pages.Key, history_pages.HistoryPage] = {}
        # Attendees with a staff-only message (hosts_only mode) in the ring: their long-poll
        # answers are their own, not the shared attendee body (longpoll.viewer_key). Only grows
        # until the room is reset; a user in it whose messages left the ring just gets an
        # answer of their own that equals the shared one.
        self.private_authors: set[int] = set()
        # Replay frames read from the ring, shared by the sockets that resume from the same seq
        # (a reconnect storm: thousands were live together): (audience, first, last seq) → frame.
        # Emptied with poll_bodies, at every seal (the only time ring entries change).
        self.replay_frames: dict[tuple[Audience, int, int], bytes] = {}
        self.changed: asyncio.Future[None] | None = None  # long-poll waiters
        self.parked = ParkedPolls(self)  # fast-path long-polls (http_protocol.py)
        self.waiters = 0  # long-polls waiting, slow path and parked
        self.last_used = time.monotonic()
        self.ready = asyncio.Event()

    @property
    def released_seq(self) -> int:
        return self.sequencer.released_seq if self.sequencer else -1

    def replay_frame(self, audience: Audience, viewer_id: int | None,
                     chunk: list[Change]) -> bytes | None:
        """The `changes` frame of `chunk` for a reader of `audience`, encoded once and shared,
        when `chunk` is a stretch of the ring as it is now (the very objects) and reads the same
        for every reader of that audience; else None (the caller encodes it for this reader)."""
        ring = self.ring
        if not ring or not chunk:
            return None
        if audience is Audience.ATTENDEE and viewer_id in self.private_authors:
            return None  # their own staff-only messages may be in it
        first = chunk[0].seq - ring[0].seq
        if first < 0 or first + len(chunk) > len(ring) or any(
                a is not b for a, b in zip(itertools.islice(ring, first, first + len(chunk)),
                                           chunk, strict=True)):
            return None
        key = (audience, chunk[0].seq, chunk[-1].seq)
        frame = self.replay_frames.get(key)
        if frame is None:
            frame = self.replay_frames[key] = changes_frame(
                self.topic, [encode_event(c, audience) for c in chunk])
        return frame

    def ring_after(self, after_seq: int, audience: Audience, limit: int,
                   viewer_id: int | None = None) -> list[bytes] | None:
        """Encoded events with seq > after_seq from memory, or None if the ring does not reach
        back that far (then read the database)."""
        if self.sequencer is None or after_seq > self.sequencer.released_seq:
            return None
        if after_seq == self.sequencer.released_seq:
            return []
        if not self.ring or self.ring[0].seq > after_seq + 1:
            return None
        start = after_seq + 1 - self.ring[0].seq
        return [encode_for(self.ring[i], audience, viewer_id)
                for i in range(start, min(start + limit, len(self.ring)))]


class Hub:
    def __init__(self, store: Store, bus: Bus, *, tick_s: float, wire: Callable[[bytes], bytes],
                 slice_size: int = 100, slice_s: float = 0.0005, max_buffer: int = 1 << 20,
                 metrics: Metrics | None = None):
        self.store = store
        self.bus = bus
        self.metrics = metrics if metrics is not None else Metrics()
        self.tick_s = tick_s
        self._wire = wire  # payload → the WebSocket frame bytes written to raw transports
        self.slice_size = max(1, slice_size)
        self.slice_s = slice_s
        self.max_buffer = max_buffer
        # Write buffers are checked once per this many bytes of fan-out, not after every write:
        # between two checks a subscriber's buffer grows by at most this plus one frame, so a
        # client that does not read holds at most ~1.25 × max_buffer (+ one frame) per room.
        self.check_bytes = max(1, max_buffer // 4)
        self.rooms: dict[int, Room] = {}
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.deliveries = 0  # frames written to subscribers (a metrics seam)
        self._closed = False
        # Called with (webinar_id, user_id | None) when the bus says what someone may see there
        # changed (a ban, a role, the chat closed); set by the app (server/app.py).
        self.access_changed: Callable[[int, int | None], None] | None = None

    async def start(self) -> None:
        await self.bus.start(self)
        if self.bus.safety_poll_s > 0:
            task = self._loop.create_task(self._safety_poll_loop(self.bus.safety_poll_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        for room in self.rooms.values():
            for handle in (room.flush_handle, room.gap_handle, room.slice_handle):
                if handle:
                    handle.cancel()
            # A delivery cut short here is not a loss: every change is in the feed, and the
            # connections are closed with 1001 and resume from their last seq.
            room.flush_handle = room.slice_handle = None
            room.delivery = None
            room.carried = []
        self.wake_waiters()
        for task in list(self._tasks):
            task.cancel()
        await self.bus.close()

    async def publish(self, change: Change) -> None:
        """Call after the change's transaction committed. Never raises: the change is durable in
        the feed, and a room that misses it sees a seq gap and reads it from there, so a bus
        failure must not turn a stored message into an error the client would retry."""
        try:
            await self.bus.publish(change)
        except Exception:
            log.exception("publish_failed", webinar_id=change.webinar_id, seq=change.seq)

    # --- rooms -----------------------------------------------------------------------------------

    async def room(self, webinar_id: int) -> Room:
        room = self.rooms.get(webinar_id)
        if room is None:
            room = self.rooms[webinar_id] = Room(webinar_id, self.metrics)
            try:
                head = await self.store.head_seq(webinar_id)
            except BaseException:
                del self.rooms[webinar_id]
                room.ready.set()
                raise
            room.sequencer = RoomSequencer(head if head is not None else 0)
            early, room.early = room.early, []
            for change in sorted(early, key=lambda c: c.seq):
                self._offer(room, change)
            room.ready.set()
        elif not room.ready.is_set():
            await room.ready.wait()
        room.last_used = time.monotonic()
        return room

    def subscribe(self, sub: Subscription) -> Room | None:
        room = self.rooms.get(sub.webinar_id)
        if room is not None:
            listener: Listener = sub.owner
            room.subscribers[sub] = listener.fanout_transport
        return room

    def unsubscribe(self, sub: Subscription) -> None:
        room = self.rooms.get(sub.webinar_id)
        if room is not None:
            room.subscribers.pop(sub, None)
            room.last_used = time.monotonic()

    def sweep(self) -> None:
        """Drop rooms that nobody used for ROOM_IDLE_S (called from the heartbeat timer)."""
        cutoff = time.monotonic() - ROOM_IDLE_S
        for webinar_id, room in list(self.rooms.items()):
            if (not room.subscribers and room.waiters == 0 and room.last_used < cutoff
                    and not room.pending and room.delivery is None and not room.carried
                    and room.ready.is_set()):
                if room.gap_handle:
                    room.gap_handle.cancel()
                del self.rooms[webinar_id]

    # --- the bus listener ------------------------------------------------------------------------

    def on_access(self, webinar_id: int, user_id: int | None) -> None:
        if self.access_changed is not None:
            self.access_changed(webinar_id, user_id)

    def on_resync(self) -> None:
        """The bus (re)subscribed: what was published meanwhile is lost to us, so every room
        reads the feed after what it released."""
        for room in list(self.rooms.values()):
            if room.sequencer is not None:
                self.catch_up(room)

    def catch_up(self, room: Room) -> None:
        room.catch_up_wanted = True
        if room.gap_handle is not None:
            room.gap_handle.cancel()
            room.gap_handle = None
        self._fill_gap(room)

    async def _safety_poll_loop(self, interval: float) -> None:
        """Re-read the head of every room with listeners; a room whose head is ahead of what it
        released lost a wake-up that no later change revealed: catch it up."""
        while True:
            await asyncio.sleep(interval)
            for room in list(self.rooms.values()):
                if room.sequencer is None or (not room.subscribers and room.waiters == 0):
                    continue
                try:
                    head = await self.store.head_seq(room.webinar_id)
                except Exception as exc:
                    self.metrics.background_failure("safety_poll", exc, webinar_id=room.webinar_id)
                    continue
                if head is not None and head > room.released_seq and not room.gap_fetching:
                    log.info("safety_poll_behind", webinar_id=room.webinar_id, head_seq=head,
                             released_seq=room.released_seq)
                    self.catch_up(room)

    # --- changes in ------------------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        room = self.rooms.get(change.webinar_id)
        if room is None:
            return  # nobody here listens to this webinar
        if room.sequencer is None:
            room.early.append(change)
            return
        self._offer(room, change)

    def _offer(self, room: Room, change: Change) -> None:
        assert room.sequencer is not None
        released = room.sequencer.offer(change)
        if released:
            self._queue(room, released)
        if room.sequencer.gap is not None and room.gap_handle is None:
            room.gap_handle = self._loop.call_later(GAP_TIMEOUT_S, self._fill_gap, room, context=detached())

    def _fill_gap(self, room: Room) -> None:
        room.gap_handle = None
        if room.sequencer is None or room.gap_fetching:
            return
        if room.sequencer.gap is None and not room.catch_up_wanted:
            return
        room.gap_fetching = True
        task = self._loop.create_task(self._fetch_gap(room))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_gap(self, room: Room) -> None:
        """Read the missing range from the feed (a gap: up to the first held change; a catch-up:
        a page after the released seq) and release what it completes. Whatever happens (the read
        fails, a log call or the release raises, the task is cancelled), the room is left able to
        fetch again: `gap_fetching` is reset and, while a gap or a catch-up remains, the next
        attempt is scheduled, with backoff after failures."""
        after = upto = -1
        failed = False
        try:
            assert room.sequencer is not None
            gap = room.sequencer.gap
            if gap is not None:
                after, upto = gap
                limit = upto - after
            elif room.catch_up_wanted:
                room.catch_up_wanted = False
                after = room.sequencer.released_seq
                limit = CATCH_UP_PAGE
            else:
                return
            page = await self.store.changes_after(room.webinar_id, after, limit=limit)
            if gap is None and page.has_more:
                room.catch_up_wanted = True  # the next page at once
            released = room.sequencer.fill(page.changes)
            if released:
                self.metrics.gap_repairs.inc()
                self._queue(room, released)
            if gap is not None or released:
                log.info("gap_filled" if gap is not None else "caught_up",
                         webinar_id=room.webinar_id, after_seq=after, up_to_seq=upto,
                         fetched=len(page.changes), released=len(released))
        except Exception as exc:
            failed = True
            if upto == -1:
                room.catch_up_wanted = True  # a catch-up that failed is retried too
            self.metrics.background_failure("gap_fetch", exc, webinar_id=room.webinar_id,
                                            after_seq=after, up_to_seq=upto)
        finally:
            room.gap_fetching = False
            room.gap_failures = room.gap_failures + 1 if failed else 0
            if (not self._closed and self.rooms.get(room.webinar_id) is room
                    and room.sequencer is not None and room.gap_handle is None
                    and (room.sequencer.gap is not None or room.catch_up_wanted)):
                if room.gap_failures:
                    delay = GAP_TIMEOUT_S * 2 ** min(room.gap_failures, GAP_RETRY_DOUBLINGS)
                elif room.sequencer.gap is not None:
                    delay = GAP_TIMEOUT_S  # the held change's predecessor may still arrive
                else:
                    delay = 0.0  # the next catch-up page
                room.gap_handle = self._loop.call_later(delay, self._fill_gap, room, context=detached())

    def _queue(self, room: Room, released: list[Change]) -> None:
        room.pending.extend(released)
        if room.flush_handle is None and room.delivery is None:
            self._schedule_flush(room)
        # While a pass runs, its slices seal what is pending (once per tick) and its end
        # schedules the next pass (see _serve_slice, _end_pass).

    def _schedule_flush(self, room: Room) -> None:
        # An idle room flushes at once; a busy one at most once per tick (coalescing).
        delay = room.last_flush + self.tick_s - self._loop.time()
        if delay <= 0:
            room.flush_handle = self._loop.call_soon(self._flush, room, context=detached())
        else:
            room.flush_handle = self._loop.call_later(delay, self._flush, room, context=detached())

    def settle(self, room: Room) -> None:
        """Seal a pending tick now. Call before reading the ring: a hide or delete still waiting
        for its tick has not yet redacted the earlier ring entries of its message. (Delivery to
        the sockets goes on in slices; the ring already holds everything released.)"""
        if room.pending:
            try:
                if room.delivery is not None:
                    self._seal_into(room, room.delivery)  # rides on the pass under way
                else:
                    if room.flush_handle is not None:
                        room.flush_handle.cancel()
                        room.flush_handle = None
                    room.carried.append(self._seal(room))
                    self._start_pass(room, at_once=False)
            except Exception as exc:
                self._reset_room(room, "room_flush", exc)

    # --- fan-out ---------------------------------------------------------------------------------

    def _flush(self, room: Room) -> None:
        room.flush_handle = None
        try:
            if room.delivery is None:
                if room.pending:
                    room.carried.append(self._seal(room))
                self._start_pass(room, at_once=True)
        except Exception as exc:
            self._reset_room(room, "room_flush", exc)

    def _reset_room(self, room: Room, loop: str, error: BaseException) -> None:
        """A flush or delivery of this room raised (a bug, or an encoding no test foresaw).
        What the room holds in memory can no longer be trusted to be complete, so it is dropped:
        its subscribers are closed (1011) and resume from their last seq by replay from the feed,
        its long-polls are answered now and re-read the feed, and the next change starts a new
        ring. Other rooms and the loop that called us go on."""
        self.metrics.background_failure(loop, error, webinar_id=room.webinar_id,
                                        released_seq=room.released_seq)
        for handle in (room.flush_handle, room.slice_handle):
            if handle is not None:
                handle.cancel()
        room.flush_handle = room.slice_handle = None
        room.pending = []
        room.carried = []
        room.delivery = None
        room.ring.clear()
        room.private_authors.clear()
        room.poll_bodies.clear()
        room.history_pages.clear()
        room.replay_frames.clear()
        subscribers, room.subscribers = list(room.subscribers), {}
        for sub in subscribers:
            listener: Listener = sub.owner
            try:
                listener.close(1011, "internal error")
            except Exception as exc:
                self.metrics.background_failure(loop, exc, webinar_id=room.webinar_id)
        if room.changed is not None and not room.changed.done():
            room.changed.set_result(None)
        room.changed = None
        room.parked.expire_all()

    def _seal(self, room: Room) -> Delivery:
        """Pending changes → one batch: into the ring (redacting), encoded once per audience, and
        ready for delivery. Long-polls are answered from here on."""
        changes, room.pending = room.pending, []
        room.poll_bodies.clear()
        room.history_pages.clear()
        room.replay_frames.clear()
        room.last_seal = self._loop.time()
        encoded: dict[Audience, list[bytes]] = {a: [] for a in AUDIENCES}
        authors: set[int] = set()
        for change in changes:
            for audience in AUDIENCES:
                encoded[audience].append(encode_event(change, audience))
            room.ring.append(change)
            if change.op is not ChangeOp.INSERT:
                self._redact_ring(room, change)
            author = private_author(change)
            if author is not None:
                authors.add(author)
        frames = {a: changes_frame(room.topic, encoded[a]) for a in AUDIENCES}
        # The author of a staff-only message gets it whole in a frame of their own.
        personal = {author: changes_frame(room.topic, [encode_for(c, Audience.ATTENDEE, author)
                                                       for c in changes])
                    for author in authors}
        room.private_authors |= authors
        batch = Batch(room.webinar_id, changes[0].seq, changes[-1].seq, changes, frames,
                      time.monotonic(), personal)
        item = Delivery(batch, {a: self._wire(frame) for a, frame in frames.items()}, encoded)
        room.unchecked_bytes += max(len(w) for w in item.wires.values())
        self._ring_changed(room)
        return item

    def _seal_into(self, room: Room, cycle: Cycle) -> None:
        """Seal the pending changes as a batch that joins the pass under way: the targets not
        yet served get it in this pass, the ones before them in the next pass."""
        cycle.add(self._seal(room))
        if room.unchecked_bytes >= self.check_bytes:
            room.unchecked_bytes = 0
            cycle.check_buffers = True

    def _ring_changed(self, room: Room) -> None:
        """The one place where the room's ring has just grown: wake its long-polls. (At seal
        time, not after the last slice: a poller reads the ring, which is complete now.)"""
        if room.changed is not None and not room.changed.done():
            room.changed.set_result(None)
        room.changed = None
        if room.parked:
            room.parked.release()

    def _start_pass(self, room: Room, *, at_once: bool) -> None:
        """Start a pass over the room's subscribers with the sealed batches some of them still
        lack (its first slice now, or on the next loop pass); with none, the room is idle again
        and the next flush is scheduled a tick from now if changes are pending. Invariant: a
        sealed batch not yet delivered to everyone implies a pass in progress or scheduled."""
        if not room.carried:
            # The next tick counts from the end of the last pass: one that takes longer than a
            # tick (thousands of subscribers) must not make every following change flush alone.
            room.last_flush = self._loop.time()
            if room.pending and room.flush_handle is None:
                self._schedule_flush(room)
            return
        items, room.carried = room.carried, []
        check = room.unchecked_bytes >= self.check_bytes
        if check:
            room.unchecked_bytes = 0
        # Subscribers who join after this snapshot replay from the ring, which holds the batches.
        # (A list of the subscriptions, not of (subscription, transport) pairs: thousands of new
        # tuples per flush would wake the garbage collector, whose full passes stall the loop.)
        room.delivery = Cycle(items, list(room.subscribers), check)
        if at_once:
            self._deliver_slice(room)
        else:
            room.slice_handle = self._loop.call_soon(self._deliver_slice, room, context=detached())

    def _deliver_slice(self, room: Room) -> None:
        try:
            self._serve_slice(room)
        except Exception as exc:
            self._reset_room(room, "fanout", exc)

    def _serve_slice(self, room: Room) -> None:
        room.slice_handle = None
        cycle = room.delivery
        if cycle is None:
            return
        # What was released since the last seal joins this pass once a tick has gone by, so
        # that the rest of the pass carries it and nobody waits a whole pass plus a tick.
        if room.pending and self._loop.time() - room.last_seal >= self.tick_s:
            self._seal_into(room, cycle)
        items = cycle.items
        head = items[-1].batch.last_seq
        count = len(items)
        current = room.subscribers
        targets = cycle.targets
        start = cycle.next
        end = cycle.next = min(start + self.slice_size, len(targets))
        check, max_buffer = cycle.check_buffers, self.max_buffer
        viewers = cycle.viewers
        first_index = cycle.first_index
        now = time.monotonic()
        # The slice ends at slice_size subscribers or once it has held the loop for slice_s,
        # whichever comes first: what a send waits for at each of its loop passes is time, and
        # a write costs 2-3× more to a reader that keeps up than to one that lags.
        clock = time.perf_counter
        deadline = clock() + self.slice_s
        slow: list[Listener] = []
        delivered = 0
        try:
            for i in range(start, end):
                if i > start and clock() >= deadline:
                    end = cycle.next = i
                    break
                sub = targets[i]
                transport = current.get(sub, GONE)
                if transport is GONE:
                    continue  # left, replaced or closed since the pass began
                if sub.offered_seq >= head:
                    continue  # has it all (it was served before this pass, or joined later)
                listener: Listener = sub.owner
                try:
                    # The fast path: a live subscriber of our protocol whose next seq starts one
                    # of this pass's batches gets all of them from there in one frame, built once
                    # per slice position and audience and shared.
                    k = first_index.get(sub.delivered_seq + 1) \
                        if sub.state is SubState.LIVE and sub.delivered_seq is not None else None
                    if k is not None and sub.encoding is None and (
                            not viewers or sub.viewer_id not in viewers
                            or sub.audience is not Audience.ATTENDEE):
                        frame, wire = cycle.merged(k, sub.audience, room.topic, self._wire)
                        sub.delivered_seq = sub.offered_seq = head
                        delivered += count - k
                        if transport is None:
                            listener.write(frame)
                        elif not transport.is_closing():  # closing: its connection is going away
                            transport.write(wire)
                            listener.last_sent = now
                            listener.frames_out += 1
                            if check and transport.get_write_buffer_size() > max_buffer:
                                slow.append(listener)
                    else:
                        delivered += self._serve_each(sub, transport, items, now)
                        if check and transport is not None and not transport.is_closing() \
                                and transport.get_write_buffer_size() > max_buffer:
                            slow.append(listener)
                except Exception as exc:
                    self._subscriber_failed(room, sub, exc)
            for listener in slow:
                try:
                    listener.close(4008, "slow consumer")
                except Exception as exc:
                    self.metrics.background_failure("fanout", exc, webinar_id=room.webinar_id)
        finally:
            # Even after an error the room moves on (a subscriber this slice skipped sees a seq
            # gap in the next batch and reads it from the feed).
            self.deliveries += delivered
            if end < len(targets):
                # Let sends, database completions and other rooms run before the next slice.
                room.slice_handle = self._loop.call_soon(self._deliver_slice, room, context=detached())
            else:
                self._end_pass(room, cycle)

    def _serve_each(self, sub: Subscription, transport: asyncio.WriteTransport | None,
                    items: list[Delivery], now: float) -> int:
        """The general path, batch by batch in seq order: each batch is offered to a subscription
        once (a replaying one buffers it; a second offer would buffer it twice); a subscriber
        that takes it shared gets its frame (its own when it wrote a staff-only message, its
        protocol's for a Phoenix channel), all of them in one write; the others go to the session
        (`on_batch`: overlap, gap, replay). Returns the batches delivered."""
        listener: Listener = sub.owner
        frames: list[bytes] = []
        wires: list[bytes] = []
        delivered = 0

        def write_out() -> None:
            if transport is None:
                for frame in frames:
                    listener.write(frame)
            elif wires and not transport.is_closing():
                transport.write(wires[0] if len(wires) == 1 else b"".join(wires))
                listener.last_sent = now
                listener.frames_out += len(wires)
            frames.clear()
            wires.clear()

        for item in items:
            batch = item.batch
            if batch.last_seq <= sub.offered_seq:
                continue
            sub.offered_seq = batch.last_seq
            if not sub.take_shared(batch.first_seq, batch.last_seq):
                write_out()  # what this subscriber took so far goes first
                listener.on_batch(sub, batch)
                continue
            delivered += 1
            if sub.encoding is not None:  # another protocol (a Phoenix channel)
                channel_frames, wire = item.channel_wire(sub, self._wire)
                frames.extend(channel_frames)
                if channel_frames:
                    wires.append(wire)
            elif batch.personal and sub.viewer_id in batch.personal \
                    and sub.audience is Audience.ATTENDEE:
                frame = batch.personal[sub.viewer_id]
                frames.append(frame)
                wires.append(item.personal_wire(sub.viewer_id, frame, self._wire))
            else:
                frames.append(batch.frames[sub.audience])
                wires.append(item.wires[sub.audience])
        write_out()
        return delivered

    def _end_pass(self, room: Room, cycle: Cycle) -> None:
        """Every target has been served. The batches the pass began with are delivered; the
        ones that joined it midway still lack the targets before where they joined, and start
        the next pass (a tick from now, like any flush)."""
        room.delivery = None
        done = cycle.items[:cycle.founding]
        room.carried = cycle.items[cycle.founding:] + room.carried
        if cycle.targets:
            now = time.monotonic()
            for item in done:
                self.metrics.fanout_batches.inc()
                self.metrics.fanout_seconds.observe(now - item.batch.sealed_at)
        room.last_flush = self._loop.time()
        if room.carried and room.flush_handle is None:
            self._schedule_flush(room)
        elif room.pending and room.flush_handle is None:
            self._schedule_flush(room)

    def _subscriber_failed(self, room: Room, sub: Subscription, error: BaseException) -> None:
        """Writing one subscriber's frame raised: close that connection (it resumes by replay),
        the batch goes on to the others."""
        self.metrics.background_failure("fanout", error, webinar_id=room.webinar_id)
        room.subscribers.pop(sub, None)
        listener: Listener = sub.owner
        try:
            listener.close(1011, "internal error")
        except Exception as exc:
            self.metrics.background_failure("fanout", exc, webinar_id=room.webinar_id)

    @staticmethod
    def _redact_ring(room: Room, change: Change) -> None:
        """Keep the ring equal to the feed's "current state" view: once a message is hidden or
        deleted, earlier ring entries must not hand its old content to a late poller."""
        # A ROOM change likewise: earlier ROOM entries carry the room state now, as read back
        # from the feed (store.changes_after).
        # A QUESTION change: earlier entries of the same question carry its state now (question
        # ids are their own id space: never compared with message entries).
        is_room = change.op is ChangeOp.ROOM
        is_question = change.op is ChangeOp.QUESTION
        for i, old in enumerate(room.ring):
            if old.seq >= change.seq or (old.op is ChangeOp.ROOM) is not is_room \
                    or (old.op is ChangeOp.QUESTION) is not is_question:
                continue
            if is_room:
                room.ring[i] = Change(old.webinar_id, old.seq, old.op, 0, None, change.room)
            elif old.message_id == change.message_id:
                room.ring[i] = Change(old.webinar_id, old.seq, old.op, old.message_id,
                                      change.message, question=change.question)

    # --- long-poll -------------------------------------------------------------------------------

    async def wait_for_change(self, room: Room, after_seq: int, max_wait: float) -> None:
        """Return when the room released a change beyond `after_seq`, or after `max_wait` s."""
        if room.released_seq > after_seq:
            return
        if room.changed is None:
            room.changed = self._loop.create_future()
        room.waiters += 1
        try:
            await asyncio.wait_for(asyncio.shield(room.changed), max_wait)
        except TimeoutError:
            pass
        finally:
            room.waiters -= 1
            room.last_used = time.monotonic()

    def wake_waiters(self) -> None:
        """Answer every waiting long-poll now (with what it has: usually nothing)."""
        for room in self.rooms.values():
            if room.changed is not None and not room.changed.done():
                room.changed.set_result(None)
            room.changed = None
            if room.parked:
                room.parked.expire_all()
