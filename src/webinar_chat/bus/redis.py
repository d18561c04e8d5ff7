"""The Redis transport (redis-py's asyncio client): one pub/sub connection per node on one
channel for every webinar, and a small connection pool for publishing (pipelined).

Redis pub/sub is at-most-once; `BusNode` makes that enough (docs/delivery.md, "Several
processes"). Socket timeouts bound every command, so a Redis that hangs (SIGSTOP, a network
partition) costs a timeout, never a stuck request: publishes are off the request path anyway.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

# Every command, and the connect, gives up after this long.
SOCKET_TIMEOUT_S = 2.0


class RedisSubscription:
    def __init__(self, pubsub: Any) -> None:
        self.pubsub = pubsub

    async def next(self, wait_s: float) -> bytes | None:
        message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
        if message is None:
            return None
        data = message.get("data")
        return data if isinstance(data, bytes) else None

    async def close(self) -> None:
        await self.pubsub.aclose()


class RedisTransport:
    @property
    def has_peers(self) -> bool:
        return True  # other processes may listen: always publish

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.client = aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                                              socket_connect_timeout=SOCKET_TIMEOUT_S)

    async def subscribe(self) -> RedisSubscription:
        # A connection of its own, not from the pool: a subscribed connection can do nothing else.
        # No socket timeout on reads here: `get_message(timeout=…)` waits for messages, and the
        # node's probe notices a subscription that went silent.
        subscriber = aioredis.Redis.from_url(self.url, socket_connect_timeout=SOCKET_TIMEOUT_S)
        pubsub = subscriber.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            # The confirmation proves the connection works end to end.
            deadline = asyncio.get_running_loop().time() + SOCKET_TIMEOUT_S
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError("no subscribe confirmation from Redis")
                message = await pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "subscribe":
                    break
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await subscriber.aclose()
            raise
        return _OwningSubscription(pubsub, subscriber)

    async def publish(self, payloads: list[bytes]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.publish(self.channel, payload)
            await pipe.execute()

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


class _OwningSubscription(RedisSubscription):
    def __init__(self, pubsub: Any, subscriber: Any) -> None:
        super().__init__(pubsub)
        self.subscriber = subscriber

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.subscriber.aclose()
