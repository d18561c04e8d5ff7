"""Thin database drivers: the same SQL (written with PostgreSQL's `$1` placeholders) runs on
PostgreSQL through asyncpg and on SQLite through aiosqlite.

The store above this module is written once; only connection handling, placeholder style and value
conversion differ here. Concurrency model:
- PostgreSQL: a pool; every transaction gets its own connection. Writers of one webinar are
  serialised by the row lock that `UPDATE webinars … RETURNING last_seq` takes (see delivery.md).
- SQLite (WAL): one writer connection behind an asyncio lock held for the whole transaction, which
  is exactly SQLite's own single-writer model, plus one reader connection; WAL lets readers see the
  last committed state while a write is in progress, never uncommitted rows.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlparse

import aiosqlite
import asyncpg

Row = dict[str, Any]


class Executor(Protocol):
    """What a query needs: the pool outside a transaction, one connection inside it."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> None: ...


class Database(Executor, Protocol):
    dialect: str

    def transaction(self) -> AbstractAsyncContextManager[Executor]: ...

    async def close(self) -> None: ...


class UniqueViolation(Exception):
    """A UNIQUE constraint rejected a write (the same error on every backend)."""


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite://:memory:` → a path for sqlite3."""
    rest = url.split("://", 1)[1]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


def sqlalchemy_url(url: str) -> str:
    """The URL Alembic (SQLAlchemy) needs for the same database, with an async driver."""
    if url.startswith("sqlite"):
        return "sqlite+aiosqlite:///" + sqlite_path(url)
    parsed = urlparse(url)
    return parsed._replace(scheme="postgresql+asyncpg").geturl()


_PLACEHOLDER = re.compile(r"\$(\d+)")


class _PgExecutor:
    """Queries on an asyncpg pool or connection (both offer fetch/fetchrow/execute)."""

    def __init__(self, target: asyncpg.Pool | asyncpg.Connection) -> None:
        self._target = target

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return [dict(r) for r in await self._target.fetch(sql, *args)]
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            row = await self._target.fetchrow(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc
        return dict(row) if row is not None else None

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._target.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc


class PostgresDatabase(_PgExecutor):
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 20) -> PostgresDatabase:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgExecutor(conn)

    async def close(self) -> None:
        await self._pool.close()


@functools.lru_cache(maxsize=1024)
def _sqlite_sql(sql: str) -> str:
    # `$1` → `?1`: SQLite's numbered parameters keep PostgreSQL's numbering (and reuse) intact.
    return _PLACEHOLDER.sub(r"?\1", sql)


def _sqlite_args(args: Sequence[Any]) -> tuple[Any, ...]:
    # sqlite3 has no datetime type: store ISO-8601 text with a fixed precision (all UTC), so that
    # text order is time order for the comparisons slow mode and token expiry make.
    return tuple(
        a.isoformat(timespec="microseconds") if isinstance(a, datetime) else a for a in args
    )


class _SqliteExecutor:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            rows = await self._conn.execute_fetchall(_sqlite_sql(sql), _sqlite_args(args))
        except aiosqlite.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise
        return [dict(r) for r in rows]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = _SqliteExecutor(reader)
        self._reader_conn = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str) -> SqliteDatabase:
        path = sqlite_path(url)
        if path == ":memory:":
            # Two connections must see one database: use a named shared-cache memory database.
            path = f"file:webinar-chat-{id(cls)}-{asyncio.get_running_loop().time()}?mode=memory&cache=shared"
        writer = await cls._open(path)
        reader = await cls._open(path)
        return cls(writer, reader)

    @staticmethod
    async def _open(path: str) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, uri=path.startswith("file:"), isolation_level=None)
        conn.row_factory = aiosqlite.Row
        # WAL: readers never block the writer; NORMAL sync is durable against process crashes
        # (an OS crash may lose the last transactions, the documented WAL trade-off).
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
        ):
            await conn.execute(pragma)
        return conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._reader.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._reader.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.transaction() as tx:
            await tx.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteExecutor(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")

    async def close(self) -> None:
        await self._writer.close()
        await self._reader_conn.close()


async def connect(url: str) -> PostgresDatabase | SqliteDatabase:
    if url.startswith("sqlite"):
        return await SqliteDatabase.connect(url)
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.connect(url)
    raise ValueError(f"unsupported DATABASE_URL scheme: {url.split(':', 1)[0]!r}")
