"""Pure decisions of the SDK's connection handling: backoff delays, and when to fall back to
long-polling and back (SPEC §5). No I/O and no clock: callers pass `now`, tests pass numbers.
"""

from __future__ import annotations

import enum
import random


def backoff_delay(attempt: int, base: float, cap: float, jitter: float,
                  rng: random.Random) -> float:
    """Delay before retry `attempt` (1-based): base × 2^(n−1), ±`jitter` (a fraction), never
    above `cap`."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    raw = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return min(cap, raw * (1.0 + rng.uniform(-jitter, jitter)))


def poll_retry_delay(base: float, spread: float, rng: random.Random) -> float:
    """Pause after a failed poll: `base` ± `spread` seconds (SPEC §5: 3 s ± 400 ms)."""
    return max(0.0, base + rng.uniform(-spread, spread))


class ConnectionStatus(enum.Enum):
    CONNECTING = "connecting"  # no socket has been live yet
    LIVE = "live"  # socket open, authenticated, every room joined
    RECONNECTING = "reconnecting"  # socket lost; fallback not (yet) active
    FALLBACK = "fallback"  # long-polling /changes; the socket is retried in the background
    OFFLINE = "offline"  # fallback active but the polls fail too
    CLOSED = "closed"


class LinkState:
    """Health of the realtime link and the fallback decision.

    Feed it what happens (`on_frame`, `on_live`, `on_failure`, `check_silence`, `on_poll`); the
    boolean results say when to turn the fallback on or off. The rules (SPEC §5): fall back after
    `fallback_after_failures` consecutive socket failures or `silence_timeout` seconds without a
    frame; a socket that becomes live resets the failure count and turns the fallback off.
    """

    def __init__(self, *, fallback_after_failures: int, silence_timeout: float, now: float) -> None:
        if fallback_after_failures < 1 or silence_timeout <= 0:
            raise ValueError("thresholds must be positive")
        self.fallback_after_failures = fallback_after_failures
        self.silence_timeout = silence_timeout
        self.failures = 0  # consecutive socket failures since the last live socket
        self.live = False
        self.ever_live = False
        self.fallback = False
        self.closed = False
        self.poll_ok: bool | None = None  # outcome of the latest poll while in fallback
        self.last_heard = now  # last frame from a socket (or when we started waiting for one)

    def on_frame(self, now: float) -> None:
        self.last_heard = now

    def on_live(self, now: float) -> bool:
        """The socket is authenticated and joined. Returns True if the fallback must stop."""
        self.failures = 0
        self.live = self.ever_live = True
        self.last_heard = now
        was_fallback, self.fallback, self.poll_ok = self.fallback, False, None
        return was_fallback

    def on_failure(self, now: float, *, silent: bool = False) -> bool:
        """A connect attempt failed or the socket was lost (`silent`: it stopped sending frames).
        Returns True if the fallback must start now."""
        self.live = False
        self.failures += 1
        if silent or self.failures >= self.fallback_after_failures:
            return self._activate()
        return False

    def check_silence(self, now: float) -> bool:
        """Call periodically while the socket is not live. Returns True if the fallback must
        start because nothing was heard for `silence_timeout`."""
        if self.live or now - self.last_heard < self.silence_timeout:
            return False
        return self._activate()

    def silence_deadline(self) -> float:
        return self.last_heard + self.silence_timeout

    def on_poll(self, ok: bool) -> None:
        if self.fallback:
            self.poll_ok = ok

    def close(self) -> None:
        self.closed = True
        self.live = False
        self.fallback = False

    def _activate(self) -> bool:
        if self.fallback or self.closed:
            return False
        self.fallback = True
        return True

    @property
    def status(self) -> ConnectionStatus:
        if self.closed:
            return ConnectionStatus.CLOSED
        if self.live:
            return ConnectionStatus.LIVE
        if self.fallback:
            return ConnectionStatus.OFFLINE if self.poll_ok is False else ConnectionStatus.FALLBACK
        return ConnectionStatus.RECONNECTING if self.ever_live else ConnectionStatus.CONNECTING
