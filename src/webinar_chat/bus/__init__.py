"""Publish/subscribe of committed changes between server processes.

`Bus.publish(change)` must deliver the change to the handler given to `start` in *every* server
process, including this one, at least once (the room sequencer drops duplicates and fetches what a
lossy bus dropped, so at-least-once with loss detection is enough). Implementations:
`MemoryBus` (one process — the embedded default and tests). A Redis implementation for several
processes plugs in here (stamp messages with the node id, deliver locally, drop the own echo).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..protocol.events import Change

ChangeHandler = Callable[[Change], None]


class Bus(Protocol):
    async def start(self, handler: ChangeHandler) -> None: ...
    async def publish(self, change: Change) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class MemoryBus:
    """Single-process bus: publish calls the handler directly."""

    def __init__(self) -> None:
        self._handler: ChangeHandler | None = None

    async def start(self, handler: ChangeHandler) -> None:
        self._handler = handler

    async def publish(self, change: Change) -> None:
        if self._handler is not None:
            self._handler(change)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._handler = None


def create_bus(url: str | None) -> Bus:
    if not url or url == "memory://":
        return MemoryBus()
    raise ValueError(f"unsupported BUS_URL {url!r} (this build has the in-process bus only)")
