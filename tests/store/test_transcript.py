"""The transcript export's walk (Store.transcript_pages, docs/export.md) on both databases:
messages and deleted messages merged by id, page by page, with writes landing between the pages,
and each page's query walking its two indexes."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from webinar_chat.protocol.events import Message
from webinar_chat.store import Store
from webinar_chat.store.db import sqlite_path
from webinar_chat.store.store import TranscriptEntry, transcript_sql

from ..helpers import World


async def _post(store: Store, world: World, content: str) -> Message:
    message, _ = await store.create_message(world.webinar, world.alice.user_id, "Alice", content,
                                            None, slow_mode_applies=False)
    return message


async def test_pages_merge_deleted_messages_by_id_while_writes_land_between_them(
        store: Store, world: World) -> None:
    posted = [await _post(store, world, f"m{i}") for i in range(12)]
    await store.delete_message(posted[2])  # before the export: a deleted entry in page 1
    await store.set_hidden(posted[3], True)
    # another webinar's messages and deletions never show
    other, _ = await store.create_message(world.other_webinar, world.outsider.user_id, "O", "x",
                                          None, slow_mode_applies=False)
    await store.delete_message(other)

    pages: list[list[TranscriptEntry]] = []
    new: list[Message] = []
    async for page in store.transcript_pages(world.webinar.id, page_size=4):
        pages.append(page)
        if len(pages) == 1:  # page 1 holds posted[0..4] (posted[2] as deleted)
            await store.delete_message(posted[1])  # already read: it stays as it was read
            await store.delete_message(posted[9])  # not read yet: comes as deleted
            await store.set_hidden(posted[10], True)  # not read yet: comes hidden
            new = [await _post(store, world, f"late{i}") for i in range(3)]

    entries = [entry for page in pages for entry in page]
    ids = [entry.id for entry in entries]
    assert ids == sorted(set(ids)), ids  # ascending, nothing repeated
    assert ids == [m.id for m in posted + new]  # nothing skipped, the late ones included
    assert [len(page) for page in pages] == [4, 4, 4, 3]
    by_id = {entry.id: entry for entry in entries}
    gone = by_id[posted[2].id]
    assert gone.deleted and gone.deleted_at is not None
    assert (gone.content, gone.user_id, gone.display_name, gone.created_at, gone.hidden) == \
        (None, None, None, None, None)
    assert not by_id[posted[1].id].deleted and by_id[posted[1].id].content == "m1"
    assert by_id[posted[9].id].deleted
    assert by_id[posted[3].id].hidden is True and by_id[posted[10].id].hidden is True
    live = by_id[posted[0].id]
    assert (live.content, live.user_id, live.display_name, live.hidden, live.deleted) == \
        ("m0", world.alice.user_id, "Alice", False, False)
    assert live.created_at == posted[0].created_at and live.seq == posted[0].seq
    assert (live.author_role, live.visibility) == ("attendee", "everyone")
    assert (gone.author_role, gone.visibility) == (None, None)
    assert by_id[posted[9].id].seq > posted[-1].seq  # a deleted entry's seq is its deletion's


async def test_an_empty_webinar_has_no_page(store: Store, world: World) -> None:
    assert [page async for page in store.transcript_pages(world.webinar.id)] == []


# --- the plans: each branch walks its index and stops after the page --------------------------

ROWS = 3000
DELETED = 300


async def _seed_pg(conn: asyncpg.Connection, world: World) -> None:
    """Bulk messages, every tenth deleted again with its DELETE change, and a busier webinar
    beside it (the plan depends on the tables, not on the feed's other rows)."""
    for webinar in (world.webinar, world.other_webinar):
        await conn.execute(
            """INSERT INTO messages (agency_id, client_id, webinar_id, user_id, content, created_at,
                                     hidden, client_msg_id, seq)
               SELECT $1, $2, $3, $4, 'm' || g, now(), FALSE, NULL, g
               FROM generate_series(1, $5) AS g""",
            webinar.agency_id, webinar.client_id, webinar.id, world.alice.user_id, ROWS)
        await conn.execute(
            """WITH gone AS (DELETE FROM messages WHERE webinar_id = $1 AND id % 10 = 0
                             RETURNING id)
               INSERT INTO message_changes (webinar_id, seq, message_id, op, changed_at)
               SELECT $1, $2 + row_number() OVER (ORDER BY id), id, 'DELETE', now() FROM gone""",
            webinar.id, ROWS)
    await conn.execute("ANALYZE messages")
    await conn.execute("ANALYZE message_changes")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_pages_walk_both_indexes(database_url: str, world: World) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await _seed_pg(conn, world)
        middle = await conn.fetchval("SELECT min(id) + $2 FROM messages WHERE webinar_id = $1",
                                     world.webinar.id, ROWS // 2)
        for mode in ("auto", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            page = f"page_{mode}"
            await conn.execute(f"PREPARE {page}(bigint, bigint, bigint) AS "
                               + transcript_sql("postgresql"))
            for position in (0, middle):
                for _ in range(6):  # past the 5 custom plans after which auto may go generic
                    await conn.fetch(f"EXECUTE {page}({world.webinar.id}, {position}, 1000)")
                rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                                        f"EXECUTE {page}({world.webinar.id}, {position}, 1000)")
                plan = "\n".join(r[0] for r in rows)
                assert "messages_webinar_id_id" in plan, f"{mode} {position}:\n{plan}"
                assert "message_changes_deletes" in plan, f"{mode} {position}:\n{plan}"
                assert "Seq Scan" not in plan and "Rows Removed by Filter" not in plan, \
                    f"{mode} {position}:\n{plan}"
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_pages_walk_both_indexes(database_url: str, world: World) -> None:
    conn = sqlite3.connect(sqlite_path(database_url))
    try:
        sql = transcript_sql("sqlite").replace("$", "?")
        plan = "\n".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql,
                                                         (world.webinar.id, 0, 1000)))
    finally:
        conn.close()
    assert "SEARCH m USING INDEX messages_webinar_id_id" in plan, plan
    assert "SEARCH c USING INDEX message_changes_deletes" in plan, plan
