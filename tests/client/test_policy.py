"""Backoff schedule and the fallback decision (pure, no I/O)."""

from __future__ import annotations

import random

import pytest

from webinar_chat.client import ConnectionStatus, LinkState, backoff_delay, poll_retry_delay


def test_backoff_doubles_from_500ms_and_caps_at_15s_without_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 15.0, 0.0, rng) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_backoff_jitter_stays_within_20_percent_and_below_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        nominal = min(15.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, 0.5, 15.0, 0.2, rng) for _ in range(200)]
        assert all(0.8 * nominal <= d <= min(15.0, 1.2 * nominal) for d in samples)
        assert len(set(samples)) > 50  # actually jittered (at the cap, half clip to 15 s)


def test_backoff_survives_huge_attempt_numbers_and_rejects_zero() -> None:
    assert backoff_delay(10_000, 0.5, 15.0, 0.0, random.Random()) == 15.0
    with pytest.raises(ValueError):
        backoff_delay(0, 0.5, 15.0, 0.2, random.Random())


def test_poll_retry_is_3s_plus_minus_400ms() -> None:
    rng = random.Random(3)
    samples = [poll_retry_delay(3.0, 0.4, rng) for _ in range(500)]
    assert min(samples) >= 2.6 and max(samples) <= 3.4
    assert min(samples) < 2.7 and max(samples) > 3.3
    assert poll_retry_delay(0.1, 0.5, rng) >= 0.0


def link(now: float = 0.0) -> LinkState:
    return LinkState(fallback_after_failures=3, silence_timeout=10.0, now=now)


def test_fallback_after_three_consecutive_failures_not_two() -> None:
    state = link()
    assert state.status is ConnectionStatus.CONNECTING
    assert state.on_failure(1.0) is False
    assert state.on_failure(2.0) is False
    assert state.status is ConnectionStatus.CONNECTING
    assert state.on_failure(3.0) is True
    assert state.fallback and state.status is ConnectionStatus.FALLBACK
    assert state.on_failure(4.0) is False  # already on: activate once


def test_a_live_socket_resets_the_failure_count_and_ends_the_fallback() -> None:
    state = link()
    for t in (1.0, 2.0, 3.0):
        state.on_failure(t)
    assert state.on_live(4.0) is True  # was in fallback: turn it off
    assert state.failures == 0 and not state.fallback
    assert state.status is ConnectionStatus.LIVE
    assert state.on_failure(5.0) is False
    assert state.status is ConnectionStatus.RECONNECTING
    assert state.on_failure(6.0) is False
    assert state.on_live(7.0) is False  # no fallback to end
    assert state.on_failure(8.0) is False  # count restarted at 0


def test_a_silent_socket_falls_back_at_once() -> None:
    state = link()
    state.on_live(0.0)
    assert state.on_failure(10.5, silent=True) is True
    assert state.failures == 1 and state.fallback


def test_silence_without_a_live_socket_falls_back_after_the_threshold() -> None:
    state = link(now=100.0)
    assert state.check_silence(109.9) is False
    assert state.silence_deadline() == 110.0
    assert state.check_silence(110.0) is True
    assert state.check_silence(111.0) is False  # once


def test_frames_push_the_silence_deadline_and_live_sockets_are_never_silent_here() -> None:
    state = link(now=0.0)
    state.on_frame(8.0)
    assert state.check_silence(15.0) is False and state.silence_deadline() == 18.0
    state.on_live(16.0)
    assert state.check_silence(100.0) is False  # the reader's recv timeout covers live sockets


def test_status_offline_when_polls_fail_during_fallback_and_closed_wins() -> None:
    state = link()
    state.on_failure(0.0, silent=True)
    state.on_poll(False)
    assert state.status is ConnectionStatus.OFFLINE
    state.on_poll(True)
    assert state.status is ConnectionStatus.FALLBACK
    state.close()
    assert state.status is ConnectionStatus.CLOSED
    assert state.on_failure(1.0, silent=True) is False  # closed: never activates


def test_poll_outcomes_outside_fallback_are_ignored() -> None:
    state = link()
    state.on_poll(False)
    assert state.poll_ok is None and state.status is ConnectionStatus.CONNECTING


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LinkState(fallback_after_failures=0, silence_timeout=10.0, now=0.0)
    with pytest.raises(ValueError):
        LinkState(fallback_after_failures=3, silence_timeout=0.0, now=0.0)
