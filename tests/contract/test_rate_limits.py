"""The rate-limiter contract: the same tests over both backends — this process's memory and a
real Redis (a private `redis-server`) — of what server/rate_limits.py promises: a burst of
`capacity`, a refill at `capacity / period` per second, an honest `retry_after_s`, refusals that
take nothing, refunds capped at the capacity, independent keys and policies, all-or-nothing
`take_all`, and one budget for every limiter on one store (two processes on one Redis). Then what
happens when Redis fails: sends are allowed, log-ins fall back to per-process buckets, both are
counted, and the shared buckets are used again once Redis is back."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from webinar_chat.server import rate_limits
from webinar_chat.server.metrics import RATE_LIMITS, Metrics
from webinar_chat.server.rate_limits import (
    POLICY_SETTINGS,
    Backend,
    Decision,
    MemoryBackend,
    Policy,
    RateLimiter,
    RedisBackend,
    parse_rate,
    policies_from_settings,
)
from webinar_chat.settings import Settings

from ..helpers import eventually, free_port, metric_value
from ..redis_server import RedisProcess

BURST = Policy("burst", 5, 3600.0)  # no refill to speak of within a test
FAST = Policy("fast", 2, 0.2)  # a token every 0.1 s
OTHER = Policy("other", 1, 3600.0)
STRICT = Policy("strict", 2, 3600.0, fail_open=False)
POLICIES = (BURST, FAST, OTHER, STRICT)

LimiterFactory = Callable[[], RateLimiter]


# The machine's Redis, shared: every test has a key prefix of its own. (The outage test below
# stops and starts a private one.)
SHARED_REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["memory", "redis"])
async def new_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    """`new_limiter()` → a limiter on this test's store: one memory backend shared by every
    limiter of the test, or one Redis key prefix (each limiter with its own client, as two
    processes have)."""
    made: list[RateLimiter] = []
    shared = MemoryBackend()
    prefix = f"wc-test-{uuid.uuid4().hex[:8]}:rl"
    url = SHARED_REDIS_URL if request.param == "redis" else ""

    def factory() -> RateLimiter:
        backend: Backend = shared if not url else RedisBackend(url, prefix)
        limiter = RateLimiter(POLICIES, backend, metrics=Metrics())
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.close()


def counted(limiter: RateLimiter, name: str, **labels: str) -> float:
    assert limiter.metrics is not None
    return metric_value(limiter.metrics.render().decode(), name, **labels)


async def takes(limiter: RateLimiter, name: str, key: str, n: int) -> list[bool]:
    return [(await limiter.take(name, key)).allowed for _ in range(n)]


async def test_a_burst_of_capacity_then_refusals_with_a_retry_after(
        new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    assert await takes(limiter, "burst", "k", 5) == [True] * 5
    refused = await limiter.take("burst", "k")
    assert not refused.allowed
    # One token comes back every period / capacity = 720 s.
    assert 700 < refused.retry_after_s <= 720
    assert refused.retry_after_header == 720
    assert counted(limiter, "webinar_chat_rate_limited_total", limit="burst") == 1


async def test_refusals_take_nothing_and_the_refill_comes_after_retry_after(
        new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    assert await takes(limiter, "fast", "k", 2) == [True, True]
    first = await limiter.take("fast", "k")
    assert not first.allowed and 0 < first.retry_after_s <= 0.1
    again = await limiter.take("fast", "k")  # a refusal did not push the refill back
    assert not again.allowed and again.retry_after_s <= first.retry_after_s
    # What is under test is the promised time itself: wait exactly that long, then it is allowed.
    await asyncio.sleep(again.retry_after_s + 0.005)
    assert (await limiter.take("fast", "k")).allowed
    assert not (await limiter.take("fast", "k")).allowed  # one token came back, not two


async def test_the_sustained_rate_is_capacity_per_period(new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    started = time.monotonic()
    allowed = 0
    while time.monotonic() - started < 0.5:
        allowed += (await limiter.take("fast", "k")).allowed
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    # 2 at once, then 10 per second.
    assert 2 + int(elapsed * 10) - 1 <= allowed <= 2 + int(elapsed * 10) + 1


async def test_keys_and_policies_are_independent(new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    assert await takes(limiter, "burst", "alice", 5) == [True] * 5
    assert not (await limiter.take("burst", "alice")).allowed
    assert await takes(limiter, "burst", "bob", 5) == [True] * 5
    assert (await limiter.take("other", "alice")).allowed  # same key, another policy


async def test_a_refund_gives_back_at_most_the_capacity(new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    await limiter.refund("burst", "k", 10)  # a full bucket stays full
    assert await takes(limiter, "burst", "k", 6) == [True] * 5 + [False]
    await limiter.refund("burst", "k")
    assert await takes(limiter, "burst", "k", 2) == [True, False]


async def test_take_all_is_all_or_nothing(new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    assert (await limiter.take("other", "k")).allowed
    refused = await limiter.take_all([("burst", "k"), ("other", "k")])
    assert not refused.allowed and refused.retry_after_s > 3000
    assert counted(limiter, "webinar_chat_rate_limited_total", limit="other") == 1
    assert counted(limiter, "webinar_chat_rate_limited_total", limit="burst") == 0
    # The bucket that allowed got its token back.
    assert await takes(limiter, "burst", "k", 6) == [True] * 5 + [False]


async def test_refund_all_gives_back_what_take_all_took(new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    assert (await limiter.take_all([("burst", "k"), ("other", "k")])).allowed
    await limiter.refund_all([("burst", "k"), ("other", "k")])
    assert await takes(limiter, "burst", "k", 6) == [True] * 5 + [False]
    assert await takes(limiter, "other", "k", 2) == [True, False]


async def test_a_policy_that_is_off_allows_everything(new_limiter: LimiterFactory) -> None:
    limiter = new_limiter()
    assert not limiter.enabled("messages")
    assert all([(await limiter.take("messages", "k")).allowed for _ in range(100)])


async def test_two_processes_on_one_store_share_the_budget(new_limiter: LimiterFactory) -> None:
    one, two = new_limiter(), new_limiter()
    assert await takes(one, "burst", "k", 3) == [True] * 3
    assert await takes(two, "burst", "k", 3) == [True, True, False]
    assert not (await one.take("burst", "k")).allowed
    await one.refund("burst", "k")
    assert (await two.take("burst", "k")).allowed


# --- Redis failing -------------------------------------------------------------------------------

def errors_counted(limiter: RateLimiter) -> float:
    return counted(limiter, "webinar_chat_rate_limiter_errors_total")


async def test_redis_unreachable_allows_sends_and_counts_it() -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RateLimiter(POLICIES, RedisBackend(nothing_there, "wc-test"), metrics=Metrics())
    try:
        # A fail-open policy: never refused while the limiter is broken.
        assert await takes(limiter, "burst", "k", 8) == [True] * 8
        assert errors_counted(limiter) == 8
    finally:
        await limiter.close()


async def test_redis_unreachable_keeps_log_in_limits_per_process() -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RateLimiter(POLICIES, RedisBackend(nothing_there, "wc-test"), metrics=Metrics())
    try:
        assert await takes(limiter, "strict", "k", 3) == [True, True, False]
        assert errors_counted(limiter) == 3
    finally:
        await limiter.close()


async def test_after_a_redis_outage_the_shared_buckets_are_used_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limits, "BREAKER_S", 0.1)
    redis = RedisProcess(tmp_path / "redis")
    await redis.start()
    one = RateLimiter(POLICIES, RedisBackend(redis.url, "wc-test"), metrics=Metrics())
    two = RateLimiter(POLICIES, RedisBackend(redis.url, "wc-test"), metrics=Metrics())
    try:
        assert await takes(one, "strict", "k", 2) == [True, True]
        await redis.stop()
        # Down: this process's own bucket (full: it never saw the shared one).
        assert await takes(one, "strict", "k", 3) == [True, True, False]
        assert errors_counted(one) == 3
        await redis.start()  # empty again: a restarted Redis has forgotten every bucket

        async def shared_again() -> bool:
            return (await one.take("strict", "k")).allowed

        await eventually(shared_again, timeout=5)
        assert (await two.take("strict", "k")).allowed  # the second token of the shared bucket
        assert not (await one.take("strict", "k")).allowed
        assert not (await two.take("strict", "k")).allowed
    finally:
        await one.close()
        await two.close()
        await redis.stop()


# --- configuration -------------------------------------------------------------------------------

def test_rates_are_n_per_seconds_or_off() -> None:
    assert parse_rate("10/900") == (10, 900.0)
    assert parse_rate(" 3/0.5 ") == (3, 0.5)
    for off in ("off", "OFF", "0", ""):
        assert parse_rate(off) is None
    for bad in ("10", "x/5", "10/0", "-1/5", "10/-3", "10/inf", "1.5/3"):
        with pytest.raises(ValueError, match="RATE_LIMIT_X"):
            parse_rate(bad, "RATE_LIMIT_X")


def test_the_default_policies() -> None:
    policies = {p.name: p for p in policies_from_settings(Settings())}
    assert set(policies) == set(POLICY_SETTINGS) == set(RATE_LIMITS) - {"client_events"}
    assert (policies["login_account_ip"].capacity, policies["login_account_ip"].period_s) == \
        (10, 900.0)
    assert policies["messages"].per_s == 1.0 and policies["messages"].capacity == 10
    assert policies["messages_staff"].per_s > policies["messages"].per_s
    assert not policies["login_account_ip"].fail_open and policies["messages"].fail_open
    assert "messages" not in {p.name for p in
                              policies_from_settings(Settings(rate_messages="off"))}


def test_memory_keeps_a_bounded_number_of_buckets() -> None:
    memory = MemoryBackend(max_keys=2)
    for key in ("a", "b", "c"):
        assert memory.apply_now(OTHER, key, 1).allowed
    assert not memory.apply_now(OTHER, "c", 1).allowed
    assert memory.apply_now(OTHER, "a", 1) == Decision(True)  # forgotten: full again
