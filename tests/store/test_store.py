"""Store contract tests: the same assertions on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from webinar_chat.protocol.events import ChangeOp
from webinar_chat.server.text_rules import display_name_key
from webinar_chat.store import Store, open_store
from webinar_chat.store.store import DuplicateMessage, NotFound, SlowMode

from ..helpers import World


async def test_every_write_gets_the_next_seq(store: Store, world: World) -> None:
    w = world.webinar
    m1, c1 = await store.create_message(w, world.alice.user_id, "Alice", "one", None,
                                        slow_mode_applies=True)
    m2, c2 = await store.create_message(w, world.bob.user_id, "Bob", "two", str(uuid.uuid4()),
                                        slow_mode_applies=True)
    c3 = await store.set_hidden(m1, True)
    c4 = await store.delete_message(m2)
    assert [c.seq for c in (c1, c2, c3, c4)] == [1, 2, 3, 4]
    assert [c.op for c in (c1, c2, c3, c4)] == [ChangeOp.INSERT, ChangeOp.INSERT, ChangeOp.UPDATE,
                                                 ChangeOp.DELETE]
    page = await store.changes_after(w.id, 0)
    assert [c.seq for c in page.changes] == [1, 2, 3, 4]
    # current state: m1 hidden (both its changes), m2 gone (both its changes)
    assert page.changes[0].message is not None and page.changes[0].message.hidden
    assert page.changes[1].message is None and page.changes[3].message is None
    assert page.changes[3].message_id == m2.id
    assert await store.head_seq(w.id) == 4
    # feeds are per webinar
    assert (await store.changes_after(world.other_webinar.id, 0)).changes == []


async def test_changes_after_pages(store: Store, world: World) -> None:
    for i in range(5):
        await store.create_message(world.webinar, world.alice.user_id, "A", f"m{i}", None,
                                   slow_mode_applies=False)
    page = await store.changes_after(world.webinar.id, 1, limit=2)
    assert [c.seq for c in page.changes] == [2, 3] and page.has_more and page.last_seq == 3
    page = await store.changes_after(world.webinar.id, 3, limit=2)
    assert [c.seq for c in page.changes] == [4, 5] and not page.has_more
    empty = await store.changes_after(world.webinar.id, 5)
    assert empty.changes == [] and empty.last_seq == 5


async def test_duplicate_client_msg_id_raises_with_the_stored_row(store: Store,
                                                                  world: World) -> None:
    cmid = str(uuid.uuid4())
    stored, _ = await store.create_message(world.webinar, world.alice.user_id, "A", "x", cmid,
                                           slow_mode_applies=True)
    with pytest.raises(DuplicateMessage) as info:
        await store.create_message(world.webinar, world.alice.user_id, "A", "x", cmid,
                                   slow_mode_applies=True)
    assert (info.value.message.id, info.value.message.content) == (stored.id, stored.content)
    assert info.value.message.display_name == "Alice"  # read back with the real profile
    # the failed attempt consumed no seq: the feed stays dense
    assert await store.head_seq(world.webinar.id) == 1


async def test_concurrent_retries_of_one_message_store_it_once(database_url: str,
                                                              world: World) -> None:
    """The same client_msg_id sent at once on separate connections (a retry racing the original):
    one row, every other attempt gets that row back, and no seq is burnt by the losers."""
    stores = [await open_store(database_url) for _ in range(4)]
    cmid = str(uuid.uuid4())
    try:
        results = await asyncio.gather(
            *[s.create_message(world.webinar, world.alice.user_id, "A", "once", cmid,
                               slow_mode_applies=True) for s in stores],
            return_exceptions=True)
        stored = [r[0] for r in results if isinstance(r, tuple)]
        duplicates = [r for r in results if isinstance(r, DuplicateMessage)]
        assert len(stored) == 1 and len(duplicates) == 3, results
        assert {d.message.id for d in duplicates} == {stored[0].id}
        assert await stores[0].head_seq(world.webinar.id) == 1
        nxt, _ = await stores[0].create_message(world.webinar, world.bob.user_id, "B", "next",
                                                None, slow_mode_applies=True)
        assert nxt.seq == 2
    finally:
        for s in stores:
            await s.close()


async def test_create_in_an_unknown_webinar_is_not_found(store: Store, world: World) -> None:
    gone = dataclasses.replace(world.webinar, id=world.webinar.id + 10_000)
    with pytest.raises(NotFound):
        await store.create_message(gone, world.alice.user_id, "A", "x", str(uuid.uuid4()),
                                   slow_mode_applies=True)
    assert await store.head_seq(world.webinar.id) == 0


async def test_slow_mode_is_atomic(store: Store, world: World) -> None:
    webinar, _ = await store.update_webinar(world.webinar.id, slow_mode_seconds=60)
    results = await asyncio.gather(
        *[store.create_message(webinar, world.alice.user_id, "A", f"m{i}", None,
                               slow_mode_applies=True) for i in range(5)],
        return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, SlowMode) for r in results if isinstance(r, BaseException))
    assert await store.head_seq(world.webinar.id) == webinar.last_seq + 1  # after the ROOM change


async def test_list_messages_after_before_limit(store: Store, world: World) -> None:
    ids = []
    for i in range(7):
        m, _ = await store.create_message(world.webinar, world.alice.user_id, "A", f"m{i}", None,
                                          slow_mode_applies=False)
        ids.append(m.id)
    await store.set_hidden((await store.get_message(ids[3])), True)  # type: ignore[arg-type]
    latest = await store.list_messages(world.webinar.id, limit=3, include_hidden=False)
    assert [m.id for m in latest.messages] == ids[4:] and latest.has_more
    assert latest.last_seq == 8
    after = await store.list_messages(world.webinar.id, after=ids[1], limit=10,
                                      include_hidden=False)
    assert [m.id for m in after.messages] == [ids[2]] + ids[4:] and not after.has_more
    staff = await store.list_messages(world.webinar.id, after=ids[1], limit=2, include_hidden=True)
    assert [m.id for m in staff.messages] == ids[2:4] and staff.has_more
    before = await store.list_messages(world.webinar.id, before=ids[4], limit=2,
                                       include_hidden=False)
    assert [m.id for m in before.messages] == [ids[1], ids[2]] and before.has_more


async def test_concurrent_writers_commit_in_seq_order(database_url: str, world: World) -> None:
    """Many writers on separate connections: seqs are dense, unique, and ids grow with seq —
    the property a reader polling `after` relies on (SPEC §2)."""
    stores = [await open_store(database_url) for _ in range(4)]
    try:
        async def writer(s: Store, n: int) -> None:
            for i in range(15):
                await s.create_message(world.webinar, world.bob.user_id, "B", f"{n}-{i}",
                                       str(uuid.uuid4()), slow_mode_applies=False)

        await asyncio.gather(*[writer(s, n) for n, s in enumerate(stores)])
    finally:
        for s in stores:
            await s.close()
    reader = await open_store(database_url)
    try:
        page = await reader.changes_after(world.webinar.id, 0, limit=1000)
    finally:
        await reader.close()
    seqs = [c.seq for c in page.changes]
    assert seqs == list(range(1, 61))
    ids = [c.message_id for c in page.changes]
    assert ids == sorted(ids)


async def test_staff_display_name_taken_compares_the_names_of_staff_only(
        store: Store, world: World) -> None:
    async def taken(name: str) -> bool:
        return await store.staff_display_name_taken(display_name_key(name), display_name_key)

    # the world: Host (host), Moderator (moderator), Admin (platform admin, no registration),
    # Alice and Bob (attendees), Outsider (attendee of another agency's webinar)
    for name in ("Host", "moderator", "ADMIN"):
        assert await taken(name), name
    for name in ("Alice", "Bob", "Outsider", "Nobody"):
        assert not await taken(name), name
    # staff of any webinar, another tenant's included, banned or not; the comparison is the
    # key's, in Python (a stored name from before the cleaning rules does not break it)
    jane = await store.create_user("jane@example.test", "x", "Jane\u00a0Host")
    await store.register(world.other_webinar.id, jane.id, "host")
    await store.set_banned(world.other_webinar.id, jane.id, True)
    legacy = await store.create_user("legacy@example.test", "x", " Old\x07Name ")
    await store.register(world.webinar.id, legacy.id, "moderator")
    assert await taken("  JANE   host ")
    assert await taken("old\x07name")
    # a promotion makes the name staff's; an attendee's name stays free
    await store.register(world.webinar.id, world.alice.user_id, "moderator")
    assert await taken("alice")
    assert not await taken("bob")
