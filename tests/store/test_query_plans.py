"""The history queries must walk the index on (webinar_id, id), whatever the planner estimates.

PostgreSQL only: SQLite's planner always takes that index for an equality on webinar_id (the
benchmark reports its plan). The data is the case where a primary-key walk hurts: a webinar
that was busy long ago and is quiet now, whose next page lies behind every newer message of the
table."""

from __future__ import annotations

import asyncpg
import pytest

from webinar_chat.store.store import history_sql

from ..helpers import World

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

OLD_ROWS = 3000  # the quiet webinar's messages, all of them old
NEW_ROWS = 3000  # the other webinar's messages, all newer


async def _seed(conn: asyncpg.Connection, world: World) -> tuple[int, int]:
    """Bulk rows straight into `messages` (the plan depends on the table, not on the feed)."""
    quiet, busy = world.webinar, world.other_webinar
    for webinar, rows in ((quiet, OLD_ROWS), (busy, NEW_ROWS)):
        await conn.execute(
            """INSERT INTO messages (agency_id, client_id, webinar_id, user_id, content, created_at,
                                     hidden, client_msg_id, seq)
               SELECT $1, $2, $3, $4, 'm' || g, now(), FALSE, NULL, g
               FROM generate_series(1, $5) AS g""",
            webinar.agency_id, webinar.client_id, webinar.id, world.alice.user_id, rows)
    await conn.execute("ANALYZE messages")
    last_old = await conn.fetchval("SELECT max(id) FROM messages WHERE webinar_id = $1", quiet.id)
    first_old = await conn.fetchval("SELECT min(id) FROM messages WHERE webinar_id = $1", quiet.id)
    return first_old, last_old


async def _plan(conn: asyncpg.Connection, sql: str) -> str:
    rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql)
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("cache_mode", ["auto", "force_generic_plan"])
async def test_history_pages_walk_the_webinar_index(database_url: str, world: World,
                                                    cache_mode: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first_old, last_old = await _seed(conn, world)
        await conn.execute(f"SET plan_cache_mode = {cache_mode}")
        await conn.execute("PREPARE newer(bigint, bigint, bigint, bigint) AS "
                           + history_sql("postgresql", newer=True, include_hidden=False))
        await conn.execute("PREPARE older(bigint, bigint, bigint, bigint) AS "
                           + history_sql("postgresql", newer=False, include_hidden=False))
        webinar = world.webinar.id
        cases = {
            "next page of the quiet webinar (nothing newer in it)": ("newer", last_old - 10),
            "its next page from the start": ("newer", first_old),
            "its latest page": ("older", 2**63 - 1),
            "a page before its middle": ("older", (first_old + last_old) // 2),
        }
        for name, (statement, position) in cases.items():
            execute = f"EXECUTE {statement}({webinar}, {position}, 101, {world.alice.user_id})"
            for _ in range(6):  # past the 5 custom plans after which auto may go generic
                await conn.fetch(execute)
            plan = await _plan(conn, execute)
            assert "messages_webinar_id_id" in plan, f"{name}:\n{plan}"
            assert "messages_pkey on messages m" not in plan, f"{name}:\n{plan}"
            assert "Rows Removed by Filter" not in plan.split("Memoize")[0], f"{name}:\n{plan}"
    finally:
        await conn.close()
