"""`Room`: one joined webinar — its seq tracker, local conversation view and event iterator, and
the two HTTP readers of its change feed: the fallback long-poll and the gap/catch-up fetch."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .config import ClientConfig
from .conversation import Conversation
from .errors import ApiError, ClientClosed, ProtocolError, TransientError
from .feed import ChangeEvent, ChangeType, ChatMessage, RoomState, SeqTracker
from .policy import backoff_delay, poll_retry_delay
from .questions import QuestionBoard

if TYPE_CHECKING:
    from .client import ChatClient

log = structlog.get_logger("webinar_chat.client")

# Changes per /changes request: the server's default page; one request catches up a typical gap.
FETCH_LIMIT = 500
# A gap the feed could not fill after this many complete fetches is skipped (a broken server
# must not stall the room forever); the server guarantees this never happens.
MAX_GAP_FETCHES = 3

STAFF_ROLES = frozenset({"moderator", "host"})


@dataclass(frozen=True, slots=True)
class _Skipped:
    """A change with a valid seq that could not be parsed: it advances the seq, nothing else."""

    seq: int


ChangeCallback = Callable[[ChangeEvent], None]


class Room:
    """A joined webinar. Iterate it (`async for event in room`) for its change events in seq
    order, each exactly once, across socket reconnects and fallback; read `room.messages` for
    the current conversation. Created by `ChatClient.join`."""

    def __init__(self, client: ChatClient, webinar_id: int, *, role: str, last_seq: int,
                 config: ClientConfig, events: bool, on_change: ChangeCallback | None,
                 rng: random.Random) -> None:
        self.webinar_id = webinar_id
        self.topic = f"webinar:{webinar_id}:messages"
        self.role = role
        self.conversation = Conversation(staff=role in STAFF_ROLES,
                                         limit=config.conversation_limit)
        self._client = client
        self._config = config
        self._rng = rng
        self._tracker: SeqTracker[ChangeEvent | _Skipped] = SeqTracker(last_seq)
        self._queue: collections.deque[ChangeEvent] | None = (
            collections.deque() if events else None)
        self._on_change = on_change
        self._ready = asyncio.Event()  # an event is queued, or the room ended
        self._drained = asyncio.Event()  # the consumer caught up after the buffer overflowed
        self._drained.set()
        self._behind = False
        self._repair_wanted = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._poller: asyncio.Task[None] | None = None
        self._repairer: asyncio.Task[None] | None = None
        self.delivered = 0  # events applied (a statistic)
        # Chat mode, slow mode, pinned announcement, and the feed seq that state is from.
        self.state = RoomState()
        self.state_seq = -1
        # The Q&A (client/questions.py): from QUESTION events, the list and own votes.
        self.questions = QuestionBoard()
        # Users connected to the webinar now (a number, never who; None until known): from the
        # socket's `presence` frames, and from `ChatClient.presence` (docs/sdk.md).
        self.presence: int | None = None

    # --- public ----------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest seq applied; pass it as `after_seq` to resume later without a gap."""
        return self._tracker.last_seq

    @property
    def messages(self) -> list[ChatMessage]:
        return self.conversation.messages

    def apply_room(self, state: RoomState, seq: int) -> bool:
        """Take a room state read at feed position `seq`, unless a newer one is applied (each ROOM
        event carries the whole state: the highest seq wins, however events were collapsed)."""
        if seq <= self.state_seq:
            return False
        self.state, self.state_seq = state, seq
        return True

    @property
    def polling(self) -> bool:
        return self._poller is not None and not self._poller.done()

    async def send(self, content: str, *, client_msg_id: str | None = None) -> ChatMessage:
        """`ChatClient.send` to this webinar."""
        return await self._client.send(self.webinar_id, content, client_msg_id=client_msg_id)

    def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        return self

    async def __anext__(self) -> ChangeEvent:
        if self._queue is None:
            raise RuntimeError("this room was joined with events=False")
        while True:
            if self._queue:
                event = self._queue.popleft()
                if self._behind and len(self._queue) <= self._config.event_buffer // 2:
                    # Caught up enough: take events again, fetching what was turned away.
                    self._behind = False
                    self._drained.set()
                    self._repair_wanted.set()
                return event
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    async def next_event(self) -> ChangeEvent:
        """The next change event (wrap in `asyncio.timeout` to bound the wait); raises
        `ClientClosed` if the room ended."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ClientClosed("room closed") from None

    # --- feeding events (synchronous: no await between applying and queueing) ---------------------

    def ingest(self, raw_events: Any) -> None:
        """Events from a `changes` frame or a /changes answer, in any order, possibly repeated."""
        if not isinstance(raw_events, list):
            log.warning("sdk_protocol_error", webinar_id=self.webinar_id,
                        error="events must be a list")
            return
        parsed: list[ChangeEvent | _Skipped] = []
        for raw in raw_events:
            try:
                parsed.append(ChangeEvent.from_payload(self.webinar_id, raw))
            except ProtocolError as exc:
                seq = raw.get("seq") if isinstance(raw, dict) else None
                log.warning("sdk_protocol_error", webinar_id=self.webinar_id, error=str(exc))
                if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
                    parsed.append(_Skipped(seq))
        self._offer(parsed)

    def _offer(self, events: list[ChangeEvent | _Skipped]) -> None:
        if self._closed or self._behind:
            return  # behind: everything from last_seq on is fetched again after the drain
        room_left = None
        if self._queue is not None:
            room_left = max(0, self._config.event_buffer - len(self._queue))
        ready, turned_away = self._tracker.offer(events, room_left)
        self._deliver(ready)
        if turned_away:
            log.warning("sdk_consumer_behind", webinar_id=self.webinar_id,
                        buffered=self._config.event_buffer, last_seq=self.last_seq)
            self._behind = True
            self._drained.clear()
        elif self._tracker.gap is not None:
            self._repair_wanted.set()

    def _deliver(self, ready: list[ChangeEvent | _Skipped]) -> None:
        for event in ready:
            if isinstance(event, _Skipped):
                continue
            if event.type is ChangeType.ROOM:
                assert event.room is not None
                self.apply_room(event.room, event.seq)
            elif event.type is ChangeType.QUESTION:
                assert event.old_id is not None
                self.questions.apply(event.old_id, event.question, event.seq)
            elif not self.conversation.apply(event):
                log.warning("sdk_protocol_error", webinar_id=self.webinar_id, seq=event.seq,
                            error=f"{event.type} without a message id; ignored")
                continue
            self.delivered += 1
            self._client._on_delivered(event)
            if self._on_change is not None:
                try:
                    self._on_change(event)
                except Exception:  # a callback bug must not stop delivery to everyone else
                    log.exception("sdk_on_change_failed", webinar_id=self.webinar_id)
            if self._queue is not None:
                self._queue.append(event)
        if ready:
            self._ready.set()

    def on_joined(self, role: Any, requested_seq: int, resume_from: Any) -> None:
        """The socket joined with `last_seq=requested_seq`."""
        if isinstance(role, str):
            self.role = role
            self.conversation.staff = role in STAFF_ROLES
        if isinstance(resume_from, int) and resume_from < requested_seq:
            # The server's feed is behind ours (restored database): start over at its head.
            log.warning("sdk_feed_reset", webinar_id=self.webinar_id, ours=requested_seq,
                        server=resume_from)
            self._tracker.reset(resume_from)

    # --- HTTP readers ----------------------------------------------------------------------------

    def start(self) -> None:
        self._repairer = asyncio.create_task(self._repair_loop(), name=f"repair-{self.topic}")

    def start_polling(self) -> None:
        if not self._closed and not self.polling:
            self._poller = asyncio.create_task(self._poll_loop(), name=f"poll-{self.topic}")

    def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _changes(self, wait: float | None) -> dict[str, Any]:
        params: dict[str, Any] = {"after_seq": self.last_seq, "limit": FETCH_LIMIT}
        timeout = None
        if wait:
            params["wait"] = wait
            timeout = wait + self._config.http_timeout
        return await self._client._api.get(f"/api/webinars/{self.webinar_id}/changes", params,
                                           time_limit=timeout)

    async def _poll_loop(self) -> None:
        """Fallback transport: long-poll /changes from last_seq until cancelled."""
        link = self._client._link_state()
        while not self._closed:
            if self._behind:
                await self._drained.wait()
                continue
            started = time.monotonic()
            try:
                body = await self._changes(self._config.poll_wait)
            except TransientError as exc:
                link.on_poll(False)
                log.info("sdk_poll_failed", webinar_id=self.webinar_id, error=str(exc))
                await asyncio.sleep(poll_retry_delay(self._config.poll_retry,
                                                     self._config.poll_retry_jitter, self._rng))
                continue
            except ApiError as exc:
                self._client._room_failed(self, exc)
                return
            link.on_poll(True)
            self._client.stats.polls += 1
            changes = body.get("changes")
            self.ingest(changes)
            if not changes and time.monotonic() - started < self._config.poll_wait / 4:
                # The server answered an empty long-poll early (shutting down?): do not spin.
                await asyncio.sleep(poll_retry_delay(self._config.poll_retry,
                                                     self._config.poll_retry_jitter, self._rng))

    async def _repair_loop(self) -> None:
        """Fetch what the tracker is missing: a seq gap, or events turned away while the consumer
        was behind. Runs for the room's lifetime, idle until `_repair_wanted`."""
        failures = 0
        unfilled = 0
        while not self._closed:
            await self._repair_wanted.wait()
            self._repair_wanted.clear()
            if self._behind:
                continue  # the drain sets _repair_wanted again
            try:
                body = await self._changes(None)
            except TransientError as exc:
                failures += 1
                log.info("sdk_gap_fetch_failed", webinar_id=self.webinar_id, error=str(exc))
                await asyncio.sleep(backoff_delay(failures, self._config.reconnect_base,
                                                  self._config.reconnect_cap,
                                                  self._config.jitter, self._rng))
                self._repair_wanted.set()
                continue
            except ApiError as exc:
                self._client._room_failed(self, exc)
                return
            failures = 0
            self._client.stats.gap_fetches += 1
            self.ingest(body.get("changes"))
            if body.get("has_more") is True:
                self._repair_wanted.set()
                continue
            if self._tracker.gap is None:
                unfilled = 0
                continue
            # The hole is still there although the feed was read to its end.
            unfilled += 1
            if unfilled >= MAX_GAP_FETCHES:
                log.warning("sdk_gap_skipped", webinar_id=self.webinar_id,
                            gap=self._tracker.gap)
                self._deliver(self._tracker.skip_gap())
                unfilled = 0
                continue
            await asyncio.sleep(backoff_delay(unfilled, self._config.reconnect_base,
                                              self._config.reconnect_cap, self._config.jitter,
                                              self._rng))
            self._repair_wanted.set()

    # --- ending ----------------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """End the room: stop its readers and end its iterator (raising `error` if given)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self.stop_polling()
        if self._repairer is not None:
            self._repairer.cancel()
        self._ready.set()
        self._drained.set()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in (self._poller, self._repairer) if t is not None]
