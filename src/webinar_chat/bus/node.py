"""One server process's end of the bus: `BusNode` over a `Transport` (memory or Redis).

What it does, whatever the transport (docs/delivery.md, "Several processes"):
- **Local first.** `publish` hands the change to this node's listener at once, then queues it for
  the other nodes; the node's own echo from the transport is dropped by its node id.
- **Never in the request's way.** Outgoing messages wait in a bounded queue drained by one
  publisher task (pipelined, one PUBLISH per message); a publish that fails is counted and
  dropped — the change is committed, the other nodes read it from the feed.
- **Reconnects and resyncs.** The reader task subscribes, and after every (re)subscription tells
  the listener to catch every room up from the feed (`on_resync`): what was published while it
  was away is gone from pub/sub.
- **Notices a silent bus.** After `probe_idle_s` without receiving anything it publishes a probe
  addressed to itself; one that is not back within `probe_timeout_s` is counted, makes the node
  not ready (`/readyz` 503) and forces a reconnect.
- **Survives bad input.** An unparseable message is logged, counted and dropped; a listener that
  raises is logged and counted; the reader goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ..protocol.events import Change
from . import wire

if TYPE_CHECKING:
    from ..server.metrics import Metrics

log = structlog.get_logger(__name__)

# Outgoing messages waiting for the publisher: ~10 s of a very busy node. Beyond it new ones are
# dropped (counted): the feed has them, and an unbounded queue would only grow while Redis is down.
MAX_QUEUED = 10_000
# Messages per pipelined round trip.
PUBLISH_BATCH = 256
PUBLISH_TIMEOUT_S = 2.0
# Reconnect backoff of the reader: quick for a blip, capped so a Redis that is down for minutes
# costs one attempt every few seconds.
RECONNECT_BASE_S = 0.1
RECONNECT_CAP_S = 3.0
FIRST_SUBSCRIBE_TIMEOUT_S = 1.0
# A shutdown never waits longer than this on the bus: a Redis that hangs must not hang the exit.
CLOSE_TIMEOUT_S = 5.0


class BusListener(Protocol):
    """What the bus delivers to (the hub)."""

    def on_change(self, change: Change) -> None: ...
    def on_access(self, webinar_id: int, user_id: int | None) -> None: ...
    def on_resync(self) -> None:
        """The bus was (re)subscribed: anything published meanwhile may be lost; catch up."""


class Subscription(Protocol):
    async def next(self, wait_s: float) -> bytes | None:
        """The next message, None after `wait_s` s of nothing; raises when the connection
        is lost."""

    async def close(self) -> None: ...


class Transport(Protocol):
    @property
    def has_peers(self) -> bool:
        """False for a bus with one node only (the in-process default): nothing to send."""

    async def subscribe(self) -> Subscription:
        """Connect and subscribe; returns once the subscription is confirmed, raises if not."""

    async def publish(self, payloads: list[bytes]) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class BusNotReady(RuntimeError):
    pass


class BusNode:
    def __init__(self, transport: Transport, node_id: str, *, metrics: Metrics | None = None,
                 probe_idle_s: float = 5.0, probe_timeout_s: float = 2.0,
                 safety_poll_s: float = 5.0) -> None:
        self.transport = transport
        self.node_id = node_id
        self.metrics = metrics
        self.probe_idle_s = probe_idle_s
        self.probe_timeout_s = probe_timeout_s
        # How often the hub re-reads the heads of its rooms (0: never — one node, nothing lost).
        self.safety_poll_s = safety_poll_s if transport.has_peers else 0.0
        self.listener: BusListener | None = None
        self.ready = False
        self.not_ready_reason = "not started"
        # (is a change, payload): the changes are counted apart (`published_changes`), so that
        # Redis's PUBLISH calls per change can be told from presence, access and probe messages.
        self._queue: collections.deque[tuple[bool, bytes]] = collections.deque()
        self._queued = asyncio.Event()
        self._probes = itertools.count(1)
        self._probe_out: tuple[int, float] | None = None  # (probe id, sent at)
        self._last_received = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher: asyncio.Task[None] | None = None
        self._closed = False
        self._rng = random.Random()
        # Called with (node id, {webinar_id: count}) for another node's presence message; set by
        # server/presence.py. Nothing else listens to presence.
        self.on_presence: Callable[[str, dict[int, int]], None] | None = None

    # --- the Bus interface -----------------------------------------------------------------------

    async def start(self, listener: BusListener) -> None:
        """Start reading and publishing. Returns at once, also when the transport is down (the
        node serves from the feed and joins the bus when it comes back)."""
        self.listener = listener
        # One attempt before the server starts listening, so that a healthy node is ready from
        # its first request; a failed one is retried by the reader with backoff.
        first: Subscription | None = None
        try:
            first = await asyncio.wait_for(self.transport.subscribe(), FIRST_SUBSCRIBE_TIMEOUT_S)
        except Exception as exc:
            self._set_ready(False, f"bus unavailable: {type(exc).__name__}")
            log.warning("bus_unavailable", attempts=1, error=f"{type(exc).__name__}: {exc}")
        self._tasks = [asyncio.create_task(self._read_loop(first), name="bus-reader")]

    async def publish(self, change: Change) -> None:
        """Deliver a committed change here at once, and to the other nodes soon. Never raises."""
        self._deliver_local(lambda listener: listener.on_change(change))
        if self.transport.has_peers:
            self._enqueue(wire.encode_change(self.node_id, change), is_change=True)

    async def publish_access(self, webinar_id: int, user_id: int | None) -> None:
        """What `user_id` (None: anybody) may see in `webinar_id` changed: every node re-checks."""
        self._deliver_local(lambda listener: listener.on_access(webinar_id, user_id))
        if self.transport.has_peers:
            self._enqueue(wire.encode_access(self.node_id, webinar_id, user_id))

    def publish_presence(self, counts: dict[int, int]) -> None:
        """This node's connected users per webinar, for the other nodes (none alone: nothing to
        send). Never raises; a lost one is replaced by the next period's."""
        if self.transport.has_peers:
            self._enqueue(wire.encode_presence(self.node_id, counts))

    async def ping(self) -> None:
        if not self.ready:
            raise BusNotReady(self.not_ready_reason)
        await asyncio.wait_for(self.transport.ping(), PUBLISH_TIMEOUT_S)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            ended, stuck = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in ended:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("bus_task_failed", task=task.get_name(),
                                error=repr(task.exception()))
            if stuck:
                log.warning("bus_close_stuck", tasks=sorted(t.get_name() for t in stuck),
                            timeout_s=CLOSE_TIMEOUT_S)
        try:
            await asyncio.wait_for(self.transport.close(), CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.warning("bus_close_failed", error=f"{type(exc).__name__}: {exc}")

    # --- internals -------------------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.bus_counter(name).inc(amount)

    def _deliver_local(self, deliver: Any) -> None:
        if self.listener is None:
            return
        try:
            deliver(self.listener)
        except Exception as exc:
            self._listener_failed(exc)

    def _listener_failed(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.background_failure("bus_reader", exc)
        else:
            log.error("bus_listener_failed", exc_info=exc)

    def _enqueue(self, payload: bytes, *, is_change: bool = False) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._count("dropped")
            return
        self._queue.append((is_change, payload))
        self._queued.set()
        if self._publisher is None and not self._closed:
            # Started with the first message: a node alone on its broker never needs one.
            self._publisher = asyncio.get_running_loop().create_task(self._publish_loop(),
                                                                     name="bus-publisher")
            self._tasks.append(self._publisher)

    def _set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready = ready
        self.not_ready_reason = reason
        if self.metrics is not None:
            self.metrics.bus_ready.set(1 if ready else 0)

    async def _publish_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = [self._queue.popleft()
                         for _ in range(min(PUBLISH_BATCH, len(self._queue)))]
                try:
                    await asyncio.wait_for(self.transport.publish([p for _, p in batch]),
                                           PUBLISH_TIMEOUT_S)
                    self._count("published", len(batch))
                    self._count("published_changes", sum(is_change for is_change, _ in batch))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._count("publish_failures", len(batch))
                    log.warning("bus_publish_failed", messages=len(batch),
                                error=f"{type(exc).__name__}: {exc}")

    async def _read_loop(self, first: Subscription | None) -> None:
        failures = 0 if first is not None else 1
        if first is None:
            await asyncio.sleep(self._backoff(1))
        while not self._closed:
            try:
                if first is not None:
                    subscription, first = first, None
                else:
                    subscription = await asyncio.wait_for(self.transport.subscribe(),
                                                          PUBLISH_TIMEOUT_S + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._set_ready(False, f"bus unavailable: {type(exc).__name__}")
                if failures == 1 or failures % 20 == 0:
                    log.warning("bus_unavailable", attempts=failures,
                                error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self._backoff(failures))
                continue
            if failures:
                log.info("bus_subscribed", after_attempts=failures)
                self._count("reconnects")
            failures = 0
            try:
                await self._serve(subscription)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_ready(False, f"bus lost: {type(exc).__name__}")
                log.warning("bus_connection_lost", error=f"{type(exc).__name__}: {exc}")
                failures = 1
            finally:
                with contextlib.suppress(Exception):
                    await subscription.close()
            if not self._closed:
                await asyncio.sleep(self._backoff(1))

    def _backoff(self, failures: int) -> float:
        delay = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2.0 ** min(failures - 1, 10))
        return float(delay * (0.8 + 0.4 * self._rng.random()))

    async def _serve(self, subscription: Subscription) -> None:
        """Read until the connection fails or a probe times out (then raise)."""
        self._probe_out = None
        self._last_received = time.monotonic()
        self._set_ready(True)
        # Whatever was published while we were not subscribed is lost to us: catch up.
        self._deliver_local(lambda listener: listener.on_resync())
        while True:
            now = time.monotonic()
            if self._probe_out is not None:
                wait = self._probe_out[1] + self.probe_timeout_s - now
            else:
                wait = self._last_received + self.probe_idle_s - now
            data = await subscription.next(max(0.01, wait)) if wait > 0 else None
            now = time.monotonic()
            if data is not None:
                self._last_received = now
                self._receive(data)
                continue
            if self._probe_out is not None:
                if now - self._probe_out[1] >= self.probe_timeout_s:
                    self._count("probe_timeouts")
                    self._set_ready(False, "bus probe timed out")
                    log.warning("bus_probe_timeout", timeout_s=self.probe_timeout_s,
                                idle_s=round(now - self._last_received, 3))
                    raise TimeoutError("bus probe timed out")
            elif now - self._last_received >= self.probe_idle_s:
                probe = next(self._probes)
                self._probe_out = (probe, now)
                self._count("probes")
                self._enqueue_probe(wire.encode_probe(self.node_id, probe))

    def _enqueue_probe(self, payload: bytes) -> None:
        self._enqueue(payload)  # through the transport even for a node alone on its broker

    def _receive(self, data: bytes) -> None:
        try:
            message = wire.decode(data)
        except wire.BadMessage as exc:
            self._count("bad_messages")
            log.warning("bus_bad_message", error=str(exc), size=len(data),
                        start=data[:80].decode("utf-8", "replace"))
            return
        if message.node == self.node_id:
            if (isinstance(message, wire.ProbeMessage) and self._probe_out is not None
                    and message.probe == self._probe_out[0]):
                self._probe_out = None
                if not self.ready:
                    self._set_ready(True)
            return  # our own echo: delivered locally when published
        self._count("received")
        if isinstance(message, wire.ChangeMessage):
            change = message.change
            self._deliver_local(lambda listener: listener.on_change(change))
        elif isinstance(message, wire.AccessMessage):
            webinar_id, user_id = message.webinar_id, message.user_id
            self._deliver_local(lambda listener: listener.on_access(webinar_id, user_id))
        elif isinstance(message, wire.PresenceMessage):
            if self.on_presence is not None:
                try:
                    self.on_presence(message.node, message.counts)
                except Exception as exc:
                    self._listener_failed(exc)
        # other nodes' probes: nothing to do (receiving them proves our subscription works)
