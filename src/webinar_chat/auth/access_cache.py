"""Read-permission decisions per (webinar, user), cached: the one owner of their lifetimes,
background re-checks and invalidation.

Every read path (list, changes, long-poll, realtime join) asks here instead of the database each
time: a long-poll fallback with thousands of attendees must not cost a permission query per
request. Writes (create, hide, delete) always check fresh and do not use this cache.

Lifetimes:
- `TTL_S` (5 s): a decision — a grant or a refusal — is used this long by every read path.
- The long-poll fast path (server/http_protocol.py) and WebSocket joins (server/realtime.py)
  use a *grant* up to `FAST_MAX_AGE_S` (30 s) old, and once it is older than
  `FAST_RECHECK_AGE_S` (20 s) re-check it in the background, at most `RECHECK_BATCH` at once.
  With a 5 s TTL, 10,000 pollers would need 2,000 permission queries/s: on SQLite they queue on
  the one database thread ahead of every send's statements, and sends starved; and the 10,000
  joins of a reconnect storm, more than 5 s after the joins they repeat, 10,000 queries.
- `invalidate` drops what a ban, a registration or a settings change made stale, on every node
  (it runs when the change's access message arrives on the bus: server/access_changes.py); a
  lost message still expires within the lifetimes above.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .permissions import Denied, WebinarAccess, check_access

if TYPE_CHECKING:
    from ..store import Store

TTL_S = 5.0
FAST_MAX_AGE_S = 30.0
FAST_RECHECK_AGE_S = 20.0
# Background re-checks in flight at once: enough to keep up with 10,000 pollers while a loop pass
# is long, few enough that a send's statements never queue behind thousands of them.
RECHECK_BATCH = 64

Decision = WebinarAccess | Denied
Key = tuple[int, int]  # (webinar_id, user_id)
ErrorReporter = Callable[[str, BaseException], None]


class AccessCache:
    def __init__(self, store: Store, *, on_error: ErrorReporter | None = None,
                 fast_recheck_age_s: float = FAST_RECHECK_AGE_S) -> None:
        self.store = store
        self.on_error = on_error
        self.fast_recheck_age_s = fast_recheck_age_s
        self._entries: dict[Key, tuple[float, Decision]] = {}  # key → (stored at, decision)
        self._rechecks: dict[Key, None] = {}  # queued background re-checks, in order
        self._recheck_task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    # --- the read paths ----------------------------------------------------------------------

    async def check(self, webinar_id: int, user_id: int, *, cached: bool = True
                    ) -> WebinarAccess:
        """The user's read access: a decision younger than TTL_S (if `cached`), else a fresh
        one from the database, kept for the next readers. Raises `Denied`."""
        key = (webinar_id, user_id)
        now = time.monotonic()
        if cached:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < TTL_S:
                if isinstance(hit[1], Denied):
                    if not hit[1].lapsed():  # a timeout that ended: check fresh
                        raise hit[1]
                else:
                    return hit[1]
        try:
            access = await check_access(self.store, webinar_id, user_id)
        except Denied as exc:
            self._entries[key] = (time.monotonic(), exc)
            raise
        self._entries[key] = (time.monotonic(), access)
        return access

    def for_fast_path(self, webinar_id: int, user_id: int, now: float) -> WebinarAccess | None:
        """A grant up to FAST_MAX_AGE_S old for the hot read paths (the long-poll fast path, a
        WebSocket join), without awaiting (None: the caller checks fresh, and answers any
        refusal); queues a background re-check once it is older than the re-check age."""
        key = (webinar_id, user_id)
        hit = self._entries.get(key)
        if hit is None or isinstance(hit[1], Denied):
            return None
        age = now - hit[0]
        if age >= self.fast_recheck_age_s:
            if age >= FAST_MAX_AGE_S:
                return None
            self._recheck_soon(key)
        return hit[1]

    # --- changes -------------------------------------------------------------------------------

    def invalidate(self, webinar_id: int, user_id: int | None = None) -> None:
        """Drop the decisions about `user_id` (None: everybody) in `webinar_id`."""
        stale = [key for key in self._entries
                 if key[0] == webinar_id and (user_id is None or key[1] == user_id)]
        for key in stale:
            del self._entries[key]

    def expire(self, now: float) -> None:
        """Drop what no path may use any more (the server's heartbeat timer calls this)."""
        horizon = now - max(TTL_S, FAST_MAX_AGE_S)
        for key in [key for key, (at, _) in self._entries.items() if at <= horizon]:
            del self._entries[key]

    async def close(self) -> None:
        if self._recheck_task is not None:
            self._recheck_task.cancel()

    # --- background re-checks ------------------------------------------------------------------

    def _recheck_soon(self, key: Key) -> None:
        if key in self._rechecks:
            return
        self._rechecks[key] = None
        if self._recheck_task is None or self._recheck_task.done():
            self._recheck_task = asyncio.get_running_loop().create_task(self._recheck_all())

    async def _recheck_all(self) -> None:
        """Re-check queued decisions, RECHECK_BATCH at once. The queue is emptied in every
        outcome: a key left behind would keep its poller on a decision nobody refreshes."""
        try:
            while self._rechecks:
                keys = list(itertools.islice(self._rechecks, RECHECK_BATCH))
                try:
                    await asyncio.gather(*(self._recheck_one(key) for key in keys))
                finally:
                    for key in keys:
                        self._rechecks.pop(key, None)
        except Exception as exc:
            self._report(exc)
            for key in list(self._rechecks):
                self._entries.pop(key, None)  # the slow path decides
            self._rechecks.clear()

    async def _recheck_one(self, key: Key) -> None:
        decision: Any
        try:
            decision = await check_access(self.store, *key)
        except Denied as exc:
            decision = exc
        except Exception as exc:
            self._report(exc)
            self._entries.pop(key, None)  # the slow path decides
            return
        self._entries[key] = (time.monotonic(), decision)

    def _report(self, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error("access_recheck", error)
