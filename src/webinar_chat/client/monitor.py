"""Monitoring events of the SDK (SPEC §7): `fallback_activated`, `reconnect_attempt`,
`send_timeout`, `send_success` and `send_error`, batched to `POST /api/metrics/events` the way
the browser page does it (`web/monitor.js`), so that the server's /metrics counts what only a
client can see.

`EventReporter` is mostly pure: `track` queues an event (never waits, never raises on the
SDK's behalf), `take_batch`/`settle` decide what goes in a request and what an answer means.
The only I/O is `flush`, through a `PostFn` — `api_poster` builds it on the SDK's authenticated
`Api`, which renews a refused token once. Rules, as in the browser:

- at most `MAX_QUEUE` events wait; beyond that the oldest are dropped;
- a request carries at most `MAX_BATCH` events and `MAX_BATCH_BYTES` of JSON;
- an event's metadata is trimmed to `MAX_METADATA_BYTES` of JSON (the server refuses more);
- 404/405 (a server without the route): stop reporting, quietly;
- no answer, 401, 408, 429 or 5xx: the batch goes back to the front of the queue; 429 also
  holds every post until its Retry-After has passed;
- any other answer (400, 413): the batch is dropped — sending it again would fail the same way.

Everything is logged at debug level only: monitoring must not make noise of its own.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from .errors import ApiError, TransientError
from .sending import parse_retry_after

if TYPE_CHECKING:
    from .api import Api

log = structlog.get_logger("webinar_chat.client")

EVENTS_PATH = "/api/metrics/events"
EVENT_TYPES = ("fallback_activated", "reconnect_attempt", "send_timeout", "send_success",
               "send_error")
# Events waiting for the endpoint; beyond it the oldest are dropped (a client must not grow
# without bound while the route is down or rate limits it). Same as the browser.
MAX_QUEUE = 500
# The server accepts at most 100 events per request (server/schemas.py MAX_EVENTS_PER_BATCH)…
MAX_BATCH = 100
# …at most 2048 bytes of metadata per event (MAX_EVENT_METADATA_BYTES)…
MAX_METADATA_BYTES = 2048
# …and at most 64 KiB of body (server/http_api.py MAX_BODY). 100 events with full metadata would
# be ~230 KB, so batches are also cut by size, with room for the envelope.
MAX_BATCH_BYTES = 60 * 1024
# Batches per flush interval: 2 every 5 s is 24 a minute, below the server's default per-session
# limit of 30 a minute, and 200 events every 5 s is more than any one client produces.
BATCHES_PER_TICK = 2
# The final flush when the client closes: best effort, it must not hold up the exit.
FINAL_FLUSH_TIMEOUT_S = 1.0
# Answers after which the same batch is worth sending again later.
RETRY_STATUSES = frozenset({0, 401, 408, 429})
# The JSON range orjson (here and on the server) can write; larger ints are sent as strings.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_MAX_DEPTH = 4  # nested metadata deeper than this is sent as text


@dataclass(frozen=True, slots=True)
class PostResult:
    status: int  # the HTTP status; 0 when no answer came (network error, timeout)
    retry_after: float | None = None  # seconds, from a 429's Retry-After


# `post(body, time_limit)`: send one JSON body within `time_limit` seconds, answer with what
# came back. Should not raise; an exception counts as "no answer".
PostFn = Callable[[bytes, float], Awaitable[PostResult]]


def api_poster(api: Api) -> PostFn:
    """A `PostFn` over the SDK's authenticated `Api` (Bearer token, one renewal on 401)."""

    async def post(body: bytes, time_limit: float) -> PostResult:
        try:
            response = await api.respond("POST", EVENTS_PATH, content=body,
                                         headers={"Content-Type": "application/json"},
                                         time_limit=time_limit)
        except TransientError as exc:
            log.debug("sdk_events_post_failed", error=str(exc))
            return PostResult(0)
        except ApiError as exc:  # the token renewal was refused
            log.debug("sdk_events_post_failed", error=str(exc))
            return PostResult(exc.status)
        retry_after = None
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return PostResult(response.status_code, retry_after)

    return post


def iso_timestamp(at: float) -> str:
    """Wall-clock seconds → `2025-01-31T12:00:00.123Z` (what the browser's toISOString sends)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def jsonable(value: Any, depth: int = 0) -> Any:
    """`value` as plain JSON data that orjson — here and on the server — can write: anything
    else becomes its `str()`, non-finite floats null, lone surrogates '?'."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int):
        return int(value) if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {jsonable(str(k)): jsonable(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [jsonable(v, depth + 1) for v in value]
    try:
        return jsonable(str(value), _MAX_DEPTH)
    except Exception:  # a broken __str__ must not break the caller
        return f"<{type(value).__name__}>"


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def trim_metadata(metadata: Mapping[str, Any], limit: int = MAX_METADATA_BYTES
                  ) -> dict[str, Any]:
    """`metadata` as JSON data of at most `limit` bytes. While it is too large the biggest entry
    gives way: a long string is cut (ending in "…"), a nested value becomes its (then cut) JSON
    text, anything else is removed; `"truncated": true` says so. The small entries that matter
    (clientMsgId, status, reconnectTries, …) survive."""
    data: dict[str, Any] = jsonable(dict(metadata))
    if _size(data) <= limit:
        return data
    data.pop("truncated", None)
    data["truncated"] = True
    while (size := _size(data)) > limit:
        keys = [k for k in data if k != "truncated"]
        if not keys:
            return {"truncated": True}
        key = max(keys, key=lambda k: _size({k: data[k]}))
        value = data[key]
        if isinstance(value, dict | list):
            data[key] = orjson.dumps(value).decode()
            continue
        if isinstance(value, str):
            # Every character is ≥ 1 byte and "…" is 3: this cut removes more than the excess.
            keep = len(value) - (size - limit) - 4
            if keep >= 16:
                data[key] = value[:keep] + "…"
                continue
        del data[key]
    return data


@dataclass(slots=True)
class _Queued:
    event: dict[str, Any]
    size: int  # bytes of the event as JSON


class EventReporter:
    """The SDK's monitoring events: a bounded queue, batches, a background flush every
    `flush_interval` seconds after `start(post)`, and a final best-effort flush in `aclose()`.
    With `enabled=False` nothing is queued and nothing is posted."""

    def __init__(self, *, enabled: bool = True, flush_interval: float = 5.0,
                 request_timeout: float = 10.0, session_id: str | None = None,
                 max_queue: int = MAX_QUEUE, max_batch: int = MAX_BATCH,
                 max_batch_bytes: int = MAX_BATCH_BYTES,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        # One id per client: the server's rate limit and its per-session reconnect count key
        # on it (a uuid4 fits its pattern [A-Za-z0-9._:-]{1,64}).
        self.session_id = session_id or str(uuid.uuid4())
        self.enabled = enabled
        self.flush_interval = flush_interval
        self.request_timeout = request_timeout
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._queue: collections.deque[_Queued] = collections.deque()
        self._last_event_at: float | None = None
        self._post: PostFn | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something is queued (or we are stopping)
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # one request at a time
        self._closed = False
        self.not_before = 0.0  # monotonic time before which nothing is posted (Retry-After)
        self.tracked = 0  # events queued
        self.sent = 0  # events the server accepted
        self.dropped = 0  # events lost: queue overflow, refused batch, unsent at close

    # --- the pure part ---------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    def pending(self) -> list[dict[str, Any]]:
        """The queued events, oldest first (a copy)."""
        return [q.event for q in self._queue]

    def track(self, event_type: str, *, webinar_id: int | None = None,
              user_id: int | None = None, metadata: Mapping[str, Any] | None = None
              ) -> dict[str, Any] | None:
        """Queue one event; returns it (None when reporting is off)."""
        if not self.enabled:
            return None
        now = self._monotonic()
        meta = dict(metadata or {})
        meta["timeSinceLastEvent"] = (None if self._last_event_at is None
                                      else round((now - self._last_event_at) * 1000))
        self._last_event_at = now
        event = {"type": event_type, "timestamp": iso_timestamp(self._clock()),
                 "webinarId": _id_or_none(webinar_id), "userId": _id_or_none(user_id),
                 "metadata": trim_metadata(meta)}
        self._queue.append(_Queued(event, _size(event)))
        self.tracked += 1
        self._cap()
        self._wake.set()
        return event

    def take_batch(self) -> list[_Queued]:
        """Take the oldest events that fit in one request (at least one, if any)."""
        batch: list[_Queued] = []
        total = 0
        while self._queue and len(batch) < self.max_batch:
            size = self._queue[0].size + 1  # + the comma
            if batch and total + size > self.max_batch_bytes:
                break
            batch.append(self._queue.popleft())
            total += size
        return batch

    def body(self, batch: Iterable[_Queued]) -> bytes:
        return orjson.dumps({"sessionId": self.session_id, "events": [q.event for q in batch]})

    def settle(self, batch: list[_Queued], result: PostResult) -> bool:
        """Apply the answer to a batch. Returns True if the next batch may go now."""
        status = result.status
        if status == 200:
            self.sent += len(batch)
            return True
        if status in (404, 405):
            # A server without the route: stop sending (the SDK's own logs keep the events).
            log.debug("sdk_events_endpoint_missing", status=status)
            self.dropped += len(batch) + len(self._queue)
            self._queue.clear()
            self.enabled = False
            self._wake.set()  # lets the background task end
            return False
        if status in RETRY_STATUSES or status >= 500:
            self._queue.extendleft(reversed(batch))  # sent again first, with the next batch
            self._cap()
            if status == 429:
                wait = result.retry_after if result.retry_after is not None else \
                    self.flush_interval
                self.not_before = self._monotonic() + wait
            log.debug("sdk_events_retry_later", status=status, events=len(batch),
                      retry_after=result.retry_after)
            return False
        log.debug("sdk_events_refused", status=status, events=len(batch))  # 400, 413, …
        self.dropped += len(batch)
        return True

    def _cap(self) -> None:
        while len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.dropped += 1

    # --- I/O -------------------------------------------------------------------------------------

    def start(self, post: PostFn) -> None:
        """Begin flushing in the background (call inside the event loop)."""
        self._post = post
        if self.enabled and self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="sdk-monitor")

    def disable(self) -> None:
        """Stop reporting (the session is over): drop what is queued, post nothing more."""
        self.dropped += len(self._queue)
        self._queue.clear()
        self.enabled = False
        self._wake.set()

    async def flush(self, *, max_batches: int | None = None,
                    time_limit: float | None = None) -> None:
        """Post what is queued now, batch after batch, until the queue is empty, `max_batches`
        were sent, an answer says "later", or `time_limit` seconds have passed. Never raises
        (except when cancelled: then the batch in flight is queued again)."""
        deadline = self._monotonic() + (time_limit if time_limit is not None else math.inf)
        async with self._lock:
            sent = 0
            while self._queue and self.enabled and self._post is not None:
                now = self._monotonic()
                if now < self.not_before or now >= deadline:
                    return
                if max_batches is not None and sent >= max_batches:
                    return
                batch = self.take_batch()
                timeout = min(self.request_timeout, deadline - now)
                try:
                    result = await self._post(self.body(batch), timeout)
                except asyncio.CancelledError:
                    self._queue.extendleft(reversed(batch))
                    self._cap()
                    raise
                except Exception as exc:  # a PostFn should not raise; if it does: no answer
                    log.debug("sdk_events_post_failed", error=f"{type(exc).__name__}: {exc}")
                    result = PostResult(0)
                sent += 1
                if not self.settle(batch, result):
                    return

    async def _run(self) -> None:
        while self.enabled and not self._stop.is_set():
            await self._wake.wait()  # an event is queued (or we stop)
            if not self.enabled or self._stop.is_set():
                return
            # Wait out the interval (and a Retry-After) unless told to stop meanwhile.
            delay = max(self.flush_interval, self.not_before - self._monotonic())
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            except TimeoutError:
                await self.flush(max_batches=BATCHES_PER_TICK)
                if not self._queue:
                    self._wake.clear()
            else:
                return  # stopping: aclose() does the final flush

    async def aclose(self, *, flush: bool = True,
                     time_limit: float = FINAL_FLUSH_TIMEOUT_S) -> None:
        """Stop the background flush and, if `flush`, post what is left within
        `time_limit` seconds. Never raises (but lets a cancellation through)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        try:
            async with asyncio.timeout(time_limit):
                if task is not None:
                    await task  # ends at once, or after the request it is making
                if flush:
                    await self.flush(time_limit=time_limit)
        except TimeoutError:
            log.debug("sdk_events_final_flush_timeout", left=len(self._queue))
        except Exception as exc:  # never let monitoring break a close
            log.debug("sdk_events_close_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self.dropped += len(self._queue)
            self._queue.clear()
            self.enabled = False


def _id_or_none(value: int | None) -> int | None:
    return value if type(value) is int and 1 <= value < 2**63 else None
