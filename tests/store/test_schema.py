"""The migrated schema, read back from each database."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from webinar_chat.store.db import sqlalchemy_url

MESSAGE_COLUMNS = {"id", "agency_id", "client_id", "webinar_id", "user_id", "content",
                   "created_at", "hidden", "client_msg_id", "seq",
                   "author_role",  # the role badge (migration 0002)
                   "visibility"}  # staff-only messages of hosts_only mode (migration 0004)
TABLES = {"agencies", "clients", "webinars", "users", "profiles", "registrations",
          "refresh_tokens", "messages", "message_changes", "alembic_version",
          "questions", "question_votes"}  # Q&A (migration 0005)


def _inspect(conn: sa.Connection) -> dict[str, object]:
    insp = sa.inspect(conn)
    return {
        "tables": set(insp.get_table_names()),
        "columns": {c["name"]: c for c in insp.get_columns("messages")},
        "indexes": {i["name"]: (i["column_names"], bool(i["unique"]))
                    for i in insp.get_indexes("messages")},
        "uniques": [tuple(u["column_names"]) for u in insp.get_unique_constraints("messages")],
        "pk": insp.get_pk_constraint("messages")["constrained_columns"],
        "webinar_columns": {c["name"] for c in insp.get_columns("webinars")},
        "change_pk": insp.get_pk_constraint("message_changes")["constrained_columns"],
    }


async def test_schema_matches_the_spec(database_url: str, backend: str) -> None:
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as conn:
            schema = await conn.run_sync(_inspect)
    finally:
        await engine.dispose()
    assert TABLES <= schema["tables"]  # type: ignore[operator]
    columns = schema["columns"]
    assert set(columns) == MESSAGE_COLUMNS  # type: ignore[arg-type]
    assert schema["pk"] == ["id"]
    assert columns["client_msg_id"]["nullable"] is True  # type: ignore[index]
    for name in MESSAGE_COLUMNS - {"client_msg_id"}:
        assert columns[name]["nullable"] is False, name  # type: ignore[index]
    assert schema["indexes"]["messages_client_msg_id"] == (["client_msg_id"], False)  # type: ignore[index]
    assert schema["indexes"]["messages_webinar_id_id"] == (["webinar_id", "id"], False)  # type: ignore[index]
    assert ("webinar_id", "user_id", "client_msg_id") in schema["uniques"]  # type: ignore[operator]
    assert {"chat_open", "slow_mode_seconds", "last_seq"} <= schema["webinar_columns"]  # type: ignore[operator]
    assert schema["change_pk"] == ["webinar_id", "seq"]
    if backend == "postgres":
        assert str(columns["id"]["type"]) == "BIGINT"  # type: ignore[index]
        assert str(columns["client_msg_id"]["type"]) == "UUID"  # type: ignore[index]


async def test_migrate_is_idempotent(database_url: str) -> None:
    from webinar_chat.store.migrate import migrate

    await asyncio.to_thread(migrate, database_url)  # second run: nothing to do, no error
