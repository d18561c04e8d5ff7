"""One loop timer for many one-shot callbacks: the token-expiry watch of every socket.

Each socket watches its token's expiry (server/realtime.py, `_watch_expiry`). One
`loop.call_later` each costs ~600 bytes of an idle socket (the loop's handle, its libuv timer, the
bound method); a `Deadline` in one heap costs ~100, and the heap keeps a single loop timer armed
for the earliest (docs/benchmarks.md, "Idle connections"). A callback runs on the loop, never
before its time (loop clock), in order of time and then of scheduling; a cancelled one never runs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable

# Rebuild the heap when cancelled entries are more than this share of it (and it is not tiny):
# each socket that renews its token leaves one behind until its old time comes.
COMPACT_SHARE = 0.5
COMPACT_MIN = 64


class Deadline:
    __slots__ = ("when", "seq", "callback")

    def __init__(self, when: float, seq: int, callback: Callable[[], object] | None) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback

    def __lt__(self, other: Deadline) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class Deadlines:
    """`call_later` and `cancel` on one armed loop timer (for one event loop)."""

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._cancelled = 0

    def __len__(self) -> int:
        """Callbacks still to run."""
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[[], object]) -> Deadline:
        loop = asyncio.get_running_loop()
        entry = Deadline(loop.time() + delay, next(self._seq), callback)
        heapq.heappush(self._heap, entry)
        if entry.when < self._armed_at:
            self._arm(loop, entry.when)
        return entry

    def cancel(self, entry: Deadline) -> None:
        if entry.callback is None:
            return
        entry.callback = None
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > COMPACT_MIN and self._cancelled > len(heap) * COMPACT_SHARE:
            self._heap = [e for e in heap if e.callback is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0
        self._drop_cancelled_top()
        if not self._heap and self._timer is not None:
            self._timer.cancel()
            self._timer, self._armed_at = None, math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._armed_at = when

    def _drop_cancelled_top(self) -> None:
        heap = self._heap
        while heap and heap[0].callback is None:
            heapq.heappop(heap)
            self._cancelled -= 1

    def _fire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        # self._heap each time: a callback may schedule, cancel, or compact (a new list).
        while self._heap and self._heap[0].when <= now:
            entry = heapq.heappop(self._heap)
            callback, entry.callback = entry.callback, None
            if callback is None:
                self._cancelled -= 1
                continue
            try:
                callback()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as asyncio does for a failing callback
                loop.call_exception_handler({"message": "Exception in a deadline callback",
                                             "exception": exc})
        self._drop_cancelled_top()
        heap = self._heap
        if heap and heap[0].when < self._armed_at:
            self._arm(loop, heap[0].when)
