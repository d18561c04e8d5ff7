"""`ClientConfig`: every timing constant and threshold of the SDK, with the reason for its value.

The defaults mirror the browser client (SPEC §5, `web/chat-core.js`); tests shrink them so that a
socket-loss test takes a second, not a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class ClientConfig:
    # --- sending ---------------------------------------------------------------------------------
    # Per-attempt timeout of `POST /api/messages/create` (SPEC §5: 10 s). A healthy server answers
    # in milliseconds; past 10 s the request is more likely lost than slow, and re-sending the
    # same client_msg_id is safe.
    send_timeout: float = 10.0
    # Retry schedule after a timeout, a network error or a 5xx: base × 2^(n−1), capped. The same
    # shape as reconnects: quick for a blip, never hammering a struggling server.
    send_retry_base: float = 0.5
    send_retry_cap: float = 15.0
    # Stop retrying a send after this many seconds (None: until it succeeds, is refused or the
    # caller cancels). `SendGaveUp` carries the client_msg_id to finish it later.
    send_give_up_after: float | None = None

    # --- socket ----------------------------------------------------------------------------------
    # SPEC §5: reconnect after 500 ms × 2^(n−1), capped at 15 s — a restart is usually over in a
    # few seconds; 15 s keeps thousands of clients from hammering a server that is down.
    reconnect_base: float = 0.5
    reconnect_cap: float = 15.0
    # ±20 % on every backoff delay so that clients dropped together do not come back together.
    jitter: float = 0.2
    # Opening handshake bound: a proxy that black-holes WebSockets must count as a failure.
    connect_timeout: float = 10.0
    # SPEC §5: fall back to long-polling after 3 consecutive socket failures…
    fallback_after_failures: int = 3
    # …or 10 s without any frame (the server sends a heartbeat every 5 s, so 10 s is two missed
    # beats). The effective value is at least twice the `heartbeat_interval` the server announces.
    silence_timeout: float = 10.0
    # Client → server heartbeat period (docs/realtime.md: 5 s; the server drops a connection that
    # sent nothing for 30 s).
    heartbeat_interval: float = 5.0

    # --- fallback (long-polling GET /changes) ----------------------------------------------------
    # Long-poll wait. 25 s is the server's maximum and stays below common proxy idle timeouts.
    poll_wait: float = 25.0
    # Pause between failed polls (SPEC §5: 3 s ± 400 ms) so a down server is not hammered.
    poll_retry: float = 3.0
    poll_retry_jitter: float = 0.4

    # --- other HTTP calls and local state --------------------------------------------------------
    # Log-in, refresh, snapshot and gap fetches: a timeout so that nothing hangs.
    http_timeout: float = 10.0
    # Events buffered for a room's async iterator. If the consumer falls this far behind, the
    # room stops taking events and fetches them again from /changes once the consumer catches up
    # (bounded memory, nothing lost).
    event_buffer: int = 10_000
    # Messages loaded when joining (the latest page of GET /messages; the server allows ≤ 500).
    history_limit: int = 100
    # Messages kept in a room's local view; the oldest are dropped beyond this.
    conversation_limit: int = 10_000

    # --- monitoring events (POST /api/metrics/events; client/monitor.py) ------------------------
    # Report fallback_activated, reconnect_attempt, send_timeout, send_success and send_error to
    # the server, as the browser page does (`web/monitor.js`), so an operator sees on the
    # server's /metrics what only clients can see: sockets falling back, sends timing out.
    # False: nothing is posted (the `stats` counters still count).
    report_events: bool = True
    # Seconds between batches. 5 s as in the browser: events reach /metrics within one scrape
    # interval, and a busy client posts at most a couple of batches per tick, well below the
    # server's per-session limit (30 batches a minute by default). Whatever is queued is also
    # sent, best effort, when the client closes.
    metrics_flush_interval: float = 5.0

    def with_(self, **changes: Any) -> ClientConfig:
        return replace(self, **changes)
