"""The in-process transport: a `MemoryBroker` that nodes in one process subscribe to.

One broker with one node is the embedded default (`BUS_URL` unset): the node has no peers, so
nothing is encoded or queued at all — `BusNode.publish` only delivers locally. Several nodes on
one broker are how the bus contract tests run the same node logic as over Redis; the broker can
fail the way a real one does (`restart` drops every subscription, `mute` silences one without an
error).
"""

from __future__ import annotations

import asyncio
import collections


class MemoryBroker:
    def __init__(self) -> None:
        self.subscriptions: set[MemorySubscription] = set()
        self.transports = 0
        self.down = False

    def deliver(self, payloads: list[bytes]) -> None:
        for subscription in list(self.subscriptions):
            if not subscription.muted:
                subscription.inbox.extend(payloads)
                subscription.ready.set()

    def restart(self) -> None:
        """Every subscription fails (as a Redis restart closes its connections)."""
        for subscription in list(self.subscriptions):
            subscription.lost = True
            subscription.ready.set()
        self.subscriptions.clear()


class MemorySubscription:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.inbox: collections.deque[bytes] = collections.deque()
        self.ready = asyncio.Event()
        self.muted = False  # delivers nothing, raises nothing: a silently dead subscription
        self.lost = False

    async def next(self, wait_s: float) -> bytes | None:
        if not self.inbox and not self.lost:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), wait_s)
            except TimeoutError:
                return None
        if self.lost:
            raise ConnectionError("memory broker restarted")
        return self.inbox.popleft() if self.inbox else None

    async def close(self) -> None:
        self.broker.subscriptions.discard(self)


class MemoryTransport:
    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self.broker.transports += 1
        self.subscription: MemorySubscription | None = None

    @property
    def has_peers(self) -> bool:
        return self.broker.transports > 1

    async def subscribe(self) -> MemorySubscription:
        if self.broker.down:
            raise ConnectionError("memory broker down")
        self.subscription = MemorySubscription(self.broker)
        self.broker.subscriptions.add(self.subscription)
        return self.subscription

    async def publish(self, payloads: list[bytes]) -> None:
        if self.broker.down:
            raise ConnectionError("memory broker down")
        self.broker.deliver(payloads)

    async def ping(self) -> None:
        if self.broker.down:
            raise ConnectionError("memory broker down")

    async def close(self) -> None:
        if self.subscription is not None:
            await self.subscription.close()
