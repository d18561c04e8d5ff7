"""Monitoring events from the browser client and the SDK (`POST /api/metrics/events`): what the
server cannot see for itself — a socket that fell back to long-polling, a send that timed out in
the client — turned into metrics an operator can alert on (docs/operations.md).

`ClientEventLedger` is the pure part: per client session (the page load or SDK client that sent
the batch, attributed to the authenticated user) a token bucket of batches and the session's
reconnect attempts; in-process and bounded (the oldest sessions are forgotten first). Behind a
load balancer each process keeps its own ledger, so a session's limit is per process and the
reconnect maximum is per process (Prometheus takes the `max` over processes).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import CLIENT_EVENT_TYPES, Metrics

# At most this many sessions are remembered (about 100 bytes each).
MAX_SESSIONS = 50_000
# The reconnect maximum covers sessions that reported within this window.
RECONNECT_WINDOW_S = 600.0
# Events worth a log line of their own (send_success and reconnect_attempt are the common case).
LOGGED_TYPES = frozenset({"fallback_activated", "send_timeout", "send_error"})
KNOWN_TYPES = frozenset(CLIENT_EVENT_TYPES)


@dataclass
class _Session:
    tokens: float
    refilled_at: float
    reconnects: int = 0
    last_seen: float = 0.0


class RateLimited(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many monitoring batches; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class ClientEventLedger:
    def __init__(self, metrics: Metrics, batches_per_minute: int, *,
                 max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.capacity = float(max(1, batches_per_minute))
        self.refill_per_s = self.capacity / 60.0
        self.max_sessions = max_sessions
        self._sessions: collections.OrderedDict[tuple[int, str], _Session] = \
            collections.OrderedDict()
        metrics.client_session_reconnects_max.set_function(self.max_reconnects)

    def admit(self, user_id: int, session_id: str) -> None:
        """Take one batch from the session's bucket, or raise RateLimited."""
        now = self.clock()
        key = (user_id, session_id)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session(tokens=self.capacity, refilled_at=now)
            self.metrics.client_sessions.inc()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
            session.tokens = min(self.capacity,
                                 session.tokens + (now - session.refilled_at) * self.refill_per_s)
            session.refilled_at = now
        session.last_seen = now
        if session.tokens < 1.0:
            raise RateLimited((1.0 - session.tokens) / self.refill_per_s)
        session.tokens -= 1.0

    def record(self, user_id: int, session_id: str, event_types: list[str]) -> list[str]:
        """Count a batch's events by type (anything unknown as "unknown"); returns the types
        worth logging one line each."""
        session = self._sessions.get((user_id, session_id))
        logged = []
        for event_type in event_types:
            known = event_type in KNOWN_TYPES
            self.metrics.client_events.labels(type=event_type if known else "unknown").inc()
            if event_type == "reconnect_attempt" and session is not None:
                session.reconnects += 1
            if event_type in LOGGED_TYPES:
                logged.append(event_type)
        return logged

    def max_reconnects(self) -> float:
        """The most reconnect attempts of one session seen in the last RECONNECT_WINDOW_S (read
        when Prometheus scrapes)."""
        since = self.clock() - RECONNECT_WINDOW_S
        return float(max((s.reconnects for s in self._sessions.values() if s.last_seen >= since),
                         default=0))
