"""auth/access_cache.py on a real store: lifetimes, invalidation, background re-checks."""

from __future__ import annotations

import time

import pytest

from webinar_chat.auth import access_cache
from webinar_chat.auth.access_cache import AccessCache
from webinar_chat.auth.permissions import Denied
from webinar_chat.store import Store

from .helpers import World, eventually


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def test_a_decision_is_kept_for_the_ttl_and_dropped_by_invalidate(
        store: Store, world: World) -> None:
    cache = AccessCache(store)
    wid, bob = world.webinar.id, world.bob.user_id
    assert (await cache.check(wid, bob)).role == "attendee"
    await store.set_banned(wid, bob, True)  # behind the cache's back
    assert (await cache.check(wid, bob)).role == "attendee"  # cached
    with pytest.raises(Denied):
        await cache.check(wid, bob, cached=False)  # fresh: refused, and cached as such
    with pytest.raises(Denied):
        await cache.check(wid, bob)
    # refusals are never handed out as grants
    assert cache.for_fast_path(wid, bob, time.monotonic()) is None
    await store.set_banned(wid, bob, False)
    cache.invalidate(wid, bob)
    assert (await cache.check(wid, bob)).role == "attendee"
    cache.invalidate(wid)  # everybody in the webinar
    assert len(cache) == 0


async def test_the_fast_path_uses_an_old_grant_and_rechecks_it_in_the_background(
        store: Store, world: World) -> None:
    cache = AccessCache(store, fast_recheck_age_s=0.0)
    wid, bob = world.webinar.id, world.bob.user_id
    await cache.check(wid, bob)
    await store.set_banned(wid, bob, True)
    now = time.monotonic()
    assert cache.for_fast_path(wid, bob, now) is not None  # used once more, re-check queued
    await eventually(lambda: cache.for_fast_path(wid, bob, time.monotonic()) is None)
    with pytest.raises(Denied):
        await cache.check(wid, bob)  # the re-check stored the refusal
    # too old for the fast path at all
    await store.set_banned(wid, bob, False)
    await cache.check(wid, bob, cached=False)
    assert cache.for_fast_path(wid, bob, now + access_cache.FAST_MAX_AGE_S + 1) is None
    cache.expire(time.monotonic() + access_cache.FAST_MAX_AGE_S + 1)
    assert len(cache) == 0
    await cache.close()
