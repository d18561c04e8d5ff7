"""Publish/subscribe of committed changes (and access changes) between server processes.

`Bus` is what the app uses; the one implementation is `BusNode` (bus/node.py) over a transport:
`MemoryTransport` (one process: the embedded default, and the contract tests' several nodes in
one process) or `RedisTransport` (`BUS_URL=redis://…`: several processes, on one host or many).
The change feed in the database stays the truth; the bus is a wake-up that may lose messages,
and the hub catches up from the feed (docs/delivery.md, "Several processes").
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..protocol.events import Change
from .memory import MemoryBroker, MemoryTransport
from .node import BusListener, BusNode, BusNotReady, Transport

if TYPE_CHECKING:
    from ..server.metrics import Metrics
    from ..settings import Settings

__all__ = ["Bus", "BusListener", "BusNode", "BusNotReady", "MemoryBroker", "MemoryTransport",
           "Transport", "create_bus", "new_node_id"]


class Bus(Protocol):
    node_id: str
    # Seconds between the hub's re-reads of its rooms' heads (0: the bus cannot lose anything).
    safety_poll_s: float

    async def start(self, listener: BusListener) -> None: ...
    async def publish(self, change: Change) -> None: ...
    async def publish_access(self, webinar_id: int, user_id: int | None) -> None: ...
    # Presence (server/presence.py): this node's counts out, the other nodes' counts in.
    on_presence: Callable[[str, dict[int, int]], None] | None
    def publish_presence(self, counts: dict[int, int]) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def new_node_id() -> str:
    """Unique per process: host, pid, and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def create_bus(settings: Settings, metrics: Metrics | None = None) -> BusNode:
    url = settings.bus_url
    transport: Transport
    if not url or url == "memory://":
        transport = MemoryTransport()
    elif url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisTransport

        transport = RedisTransport(url, f"{settings.bus_channel}:changes")
    else:
        raise ValueError(f"unsupported BUS_URL {url!r}: use redis://host:6379/0 (or leave it unset "
                         "for one process)")
    return BusNode(transport, settings.node_id or new_node_id(), metrics=metrics,
                   probe_idle_s=settings.bus_probe_idle_s,
                   probe_timeout_s=settings.bus_probe_timeout_s,
                   safety_poll_s=settings.bus_safety_poll_s)
