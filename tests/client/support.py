"""Small helpers shared by the SDK integration tests."""

from __future__ import annotations

import asyncio

from webinar_chat.client import ChangeEvent, ChangeType, Room


class Collector:
    """Iterates a room in the background, keeping every event it yields."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.events: list[ChangeEvent] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.room:
                self.events.append(event)
        except Exception as exc:  # kept for the test to assert on
            self.error = exc

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.events]

    @property
    def inserted(self) -> list[str]:
        return [e.new.content or "" for e in self.events
                if e.type is ChangeType.INSERT and e.new is not None]

    def assert_exactly_once_in_order(self, first_seq: int = 1) -> None:
        """No gap, no duplicate: the seqs are first_seq, first_seq+1, …"""
        assert self.seqs == list(range(first_seq, first_seq + len(self.seqs))), self.seqs
