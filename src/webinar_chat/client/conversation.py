"""`Conversation`: a local view of one webinar's chat, built from a snapshot and change events
by the apply rules of docs/realtime.md ("Change events"). Pure."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from .feed import ChangeEvent, ChatMessage


class Conversation:
    """Messages by id, in id order (= the order the server stored them in within a webinar).

    `staff` viewers (moderators, hosts) keep hidden messages (with `hidden=True`); attendees only
    ever see them redacted, and a redacted message is removed. At most `limit` messages are kept;
    the oldest go first.
    """

    def __init__(self, *, staff: bool = False, limit: int | None = None) -> None:
        self.staff = staff
        self.limit = limit
        self._by_id: dict[int, ChatMessage] = {}
        self._ids: list[int] = []

    # --- reading ---------------------------------------------------------------------------------

    @property
    def messages(self) -> list[ChatMessage]:
        return [self._by_id[i] for i in self._ids]

    def get(self, message_id: int) -> ChatMessage | None:
        return self._by_id.get(message_id)

    def by_client_msg_id(self, client_msg_id: str) -> ChatMessage | None:
        return next((m for m in self._by_id.values() if m.client_msg_id == client_msg_id), None)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._by_id

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self.messages)

    # --- writing ---------------------------------------------------------------------------------

    def load(self, messages: Iterable[ChatMessage]) -> None:
        """Replace the view with a snapshot (e.g. the latest page of GET /messages)."""
        self._by_id.clear()
        self._ids.clear()
        for message in messages:
            if self._visible(message):
                self._upsert(message)

    def apply(self, event: ChangeEvent) -> bool:
        """Apply one change (in seq order, once — see `SeqTracker`). Returns False for a change
        that cannot be applied (an UPDATE/DELETE without any id): warn and ignore it."""
        new = event.new
        if new is not None:
            if self._visible(new):
                self._upsert(new)
            else:
                self._remove(new.id)
            return True
        if event.old_id is None:
            return False
        self._remove(event.old_id)
        return True

    def reconcile(self, message: ChatMessage, applied_seq: int) -> None:
        """Show a message the server returned to a send (200 or 409) without waiting for the
        feed. `applied_seq` is the last seq applied to this view: a state at or before it is
        already reflected (if the message is absent, a later change removed it)."""
        current = self._by_id.get(message.id)
        if current is not None:
            if message.seq > current.seq:
                self._upsert(message)
        elif message.seq > applied_seq and self._visible(message):
            self._upsert(message)

    def clear(self) -> None:
        self._by_id.clear()
        self._ids.clear()

    # --- internals -------------------------------------------------------------------------------

    def _visible(self, message: ChatMessage) -> bool:
        if message.redacted:
            return False
        return self.staff or not message.hidden

    def _upsert(self, message: ChatMessage) -> None:
        current = self._by_id.get(message.id)
        if current is not None and current.seq > message.seq:
            return  # an older state arriving late (e.g. a snapshot row vs. a newer change)
        if current is None:
            bisect.insort(self._ids, message.id)
        self._by_id[message.id] = message
        if self.limit is not None and len(self._ids) > self.limit:
            for old in self._ids[: len(self._ids) - self.limit]:
                del self._by_id[old]
            del self._ids[: len(self._ids) - self.limit]

    def _remove(self, message_id: int) -> None:
        if self._by_id.pop(message_id, None) is not None:
            index = bisect.bisect_left(self._ids, message_id)
            del self._ids[index]
