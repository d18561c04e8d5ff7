"""Per-room ordering of published changes (pure, no I/O).

Writers publish after commit, and two writers' publish steps can run in either order (two tasks,
or later two processes through the bus). The sequencer releases changes strictly in `seq` order,
each exactly once: an early arrival is held until its predecessors arrive, or — if they do not
arrive within `gap_timeout_s` — until the room fetches the missing range from the change feed
(docs/delivery.md, "publisher tasks deliver out of order").
"""

from __future__ import annotations

from .events import Change

# How long an out-of-order change may wait for its predecessor before the room reads the gap from
# the database. Publish reordering inside one process lasts microseconds; across processes it is
# a bus hop (~1 ms). 200 ms covers both with margin and stays well under the 250 ms p99 target only
# in the rare case of a real loss, where correctness matters more.
GAP_TIMEOUT_S = 0.2


class RoomSequencer:
    def __init__(self, released_seq: int) -> None:
        self.released_seq = released_seq
        self._held: dict[int, Change] = {}

    def offer(self, change: Change) -> list[Change]:
        """Accept one published change; return the changes that may now be released, in order."""
        if change.seq <= self.released_seq or change.seq in self._held:
            return []  # duplicate (our own echo, a bus re-delivery, or already fetched)
        if change.seq != self.released_seq + 1:
            self._held[change.seq] = change
            return []
        released = [change]
        self.released_seq = change.seq
        self._drain(released)
        return released

    def fill(self, changes: list[Change]) -> list[Change]:
        """Changes read from the feed for the gap (any order, any overlap); return what to release."""
        for change in changes:
            if change.seq > self.released_seq:
                self._held.setdefault(change.seq, change)
        released: list[Change] = []
        self._drain(released)
        return released

    @property
    def gap(self) -> tuple[int, int] | None:
        """(after_seq, up_to_seq) of the missing range, or None when nothing is held."""
        if not self._held:
            return None
        return self.released_seq, min(self._held) - 1

    def _drain(self, released: list[Change]) -> None:
        while self._held:
            nxt = self._held.pop(self.released_seq + 1, None)
            if nxt is None:
                break
            released.append(nxt)
            self.released_seq = nxt.seq
