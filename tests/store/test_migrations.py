"""Every migration can be rolled back (docs/deployment.md, "Rolling back"): on PostgreSQL
with rows in every table, each step after the initial one goes down and up again and keeps every
row; the initial one goes down to an empty database and up again to a working schema."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from webinar_chat.auth.tokens import TokenService
from webinar_chat.store import Store, open_store
from webinar_chat.store.db import sqlalchemy_url
from webinar_chat.store.migrate import alembic_config, current_revision, migrate
from webinar_chat.store.store import now_utc

from ..helpers import make_world

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


def revisions_oldest_first(database_url: str) -> list[tuple[str, str | None]]:
    """(revision, down_revision) for every migration, base first."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    steps = [(r.revision, r.down_revision) for r in script.walk_revisions("base", "heads")]
    steps.reverse()
    for _, down in steps:
        assert not isinstance(down, tuple), "merge migrations need their own round-trip test"
    return steps  # type: ignore[return-value]


async def row_counts(database_url: str) -> dict[str, int]:
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            counts = {}
            for name in sorted(set(names) - {"alembic_version"}):
                counts[name] = (await conn.execute(sa.text(f'SELECT count(*) FROM "{name}"'))
                                ).scalar_one()
            return counts
    finally:
        await engine.dispose()


async def fill_every_table(store: Store, tokens: TokenService) -> None:
    """A world (agency, client, webinar, users, profiles, registrations), messages with their
    changes (one hidden) and a refresh token: a row in every table of today's schema."""
    world = await make_world(store, tokens)
    first, _ = await store.create_message(world.webinar, world.alice.user_id, "Alice", "first",
                                          None, slow_mode_applies=False)
    await store.create_message(world.webinar, world.bob.user_id, "Bob", "second",
                               str(uuid.uuid4()), slow_mode_applies=False)
    await store.set_hidden(first, True)
    question, _ = await store.ask_question(world.webinar, world.alice.user_id, "Slides?", None)
    await store.vote_question(question, world.bob.user_id, True)
    await store.add_refresh_token(f"hash-{uuid.uuid4().hex}", world.alice.user_id,
                                  str(uuid.uuid4()),
                                  now_utc() + timedelta(days=1))
    await store.provision_external_user("https://platform.test", str(uuid.uuid4()), None,
                                        "From the platform")


# What a migration that adds a feature brings, and so its downgrade takes away (and nothing
# else): its tables, and the change-feed entries of its kind (docs/deployment.md).
FEATURE_DATA: dict[str, tuple[set[str], str | None]] = {
    "0005": ({"questions", "question_votes"}, "question"),
    "0006": ({"external_identities"}, None),  # its users stay, unlinked
}


async def feature_rows(database_url: str, revision: str, counts: dict[str, int]
                       ) -> dict[str, int]:
    """`counts` without the rows that going down below `revision` and up to it again drops
    with the features of `revision` and later (emptied, or gone when later)."""
    expected = dict(counts)
    for feature, (tables, kind) in FEATURE_DATA.items():
        if feature < revision or not tables & set(expected):
            continue
        for name in tables:
            if feature == revision:
                expected[name] = 0
            else:
                expected.pop(name, None)
        if kind is None:
            continue
        engine = create_async_engine(sqlalchemy_url(database_url))
        try:
            async with engine.connect() as conn:
                expected["message_changes"] -= (await conn.execute(sa.text(
                    "SELECT count(*) FROM message_changes WHERE kind = :k"), {"k": kind})
                ).scalar_one()
        finally:
            await engine.dispose()
    return expected


async def test_every_migration_goes_down_and_up_again_keeping_the_rows(
        database_url: str, store: Store, tokens: TokenService) -> None:
    await fill_every_table(store, tokens)
    await store.close()
    steps = revisions_oldest_first(database_url)
    before = await row_counts(database_url)
    assert before and all(before.values()), before  # a row in every table
    config = alembic_config(database_url)
    for revision, down in reversed(steps[1:]):  # newest first: the order of a rollback
        before = await feature_rows(database_url, revision, before)
        await asyncio.to_thread(command.downgrade, config, down or "base")
        assert await asyncio.to_thread(current_revision, database_url) == down
        await asyncio.to_thread(migrate, database_url, revision)
        assert await row_counts(database_url) == before, f"rows lost going down from {revision}"


async def test_the_initial_migration_goes_down_to_nothing_and_up_to_a_working_schema(
        database_url: str, store: Store, tokens: TokenService) -> None:
    await fill_every_table(store, tokens)
    await store.close()
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    assert await row_counts(database_url) == {}  # every table dropped, nothing left behind
    await asyncio.to_thread(migrate, database_url)
    reopened = await open_store(database_url)
    try:
        await fill_every_table(reopened, tokens)
    finally:
        await reopened.close()
    assert all((await row_counts(database_url)).values())
