"""Thin database drivers: the same SQL (written with PostgreSQL's `$1` placeholders) runs on
PostgreSQL through asyncpg and on SQLite through the standard library (one thread per connection).

The store above this module is written once; only connection handling, placeholder style and value
conversion differ here. Reads are single statements (`fetch`, `fetchrow`). Every write transaction
is a *plan*: a generator that yields `Query`s and receives each one's rows, with no I/O of its own,
so each driver runs it its own way (`run`):
- PostgreSQL: a pool; the plan runs statement by statement on one connection inside a
  transaction. Writers of one webinar are serialised by the row lock that
  `UPDATE webinars … RETURNING last_seq` takes (see delivery.md). The hottest write, a message
  create, is instead one statement with data-modifying CTEs (Store.create_message): one round
  trip instead of five, so the row lock is held for one statement.
- SQLite (WAL): one writer connection on its own thread; the whole plan, BEGIN IMMEDIATE to COMMIT,
  runs there in one hop from the event loop (a hop per statement would cost a thread hand-off and
  a loop wake-up each, and hold the single write lock across them). Plans queue on that thread
  with no lock on the loop's side, and the ones that queued up while it worked commit as one
  group, each in its own savepoint (`_sqlite_run_group`). One reader connection on another
  thread; WAL lets it see the last committed state while a write is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import asyncpg

Row = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query:
    """One statement of a plan. The plan receives `Row | None` (one=True) or `list[Row]`."""

    sql: str
    args: tuple[Any, ...] = ()
    one: bool = True


def q(sql: str, *args: Any) -> Query:
    return Query(sql, args, True)


def q_all(sql: str, *args: Any) -> Query:
    return Query(sql, args, False)


# A write transaction: yields Queries, receives their results, returns its result. Raising inside
# the plan rolls the transaction back.
Plan = Generator[Query, Any, T]


class Executor(Protocol):
    """What a query needs: the pool outside a transaction, one connection inside it."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> None: ...


class Database(Executor, Protocol):
    dialect: str

    async def run(self, plan: Plan[T]) -> T:
        """Run a write plan as one transaction; commit when it returns, roll back if it raises."""
        ...

    async def close(self) -> None: ...


class UniqueViolation(Exception):
    """A UNIQUE constraint rejected a write (the same error on every backend)."""


class NotNullViolation(Exception):
    """A NOT NULL constraint rejected a write; `column` names it. The one-statement writes use
    it to abort themselves (see Store.create_message)."""

    def __init__(self, column: str | None, detail: str) -> None:
        super().__init__(detail)
        self.column = column


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


@contextlib.contextmanager
def _pg_errors() -> Iterator[None]:
    """asyncpg's constraint errors as the backend-neutral ones above."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc
    except asyncpg.NotNullViolationError as exc:
        raise NotNullViolation(exc.column_name, str(exc)) from exc


class _PgExecutor:
    """Queries on an asyncpg pool or connection (both offer fetch/fetchrow/execute)."""

    def __init__(self, target: asyncpg.Pool | asyncpg.Connection) -> None:
        self._target = target

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _pg_errors():
            return [dict(r) for r in await self._target.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _pg_errors():
            row = await self._target.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def execute(self, sql: str, *args: Any) -> None:
        with _pg_errors():
            await self._target.execute(sql, *args)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset between borrowers. asyncpg's default sends `RESET ALL`, `UNLISTEN *`,
    `CLOSE ALL` and an advisory-unlock in one more round trip on *every* release (~10 % of a
    create's CPU, measured with py-spy); this store never leaves session state behind (no SET,
    LISTEN, cursors outside transactions, advisory locks or temp tables), and asyncpg still rolls
    back a transaction left open before calling this."""


class PostgresDatabase(_PgExecutor):
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 20) -> PostgresDatabase:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                         reset=_keep_session)
        return cls(pool)

    async def run(self, plan: Plan[T]) -> T:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _PgExecutor(conn)
            try:
                query = next(plan)
                while True:
                    if query.one:
                        result: Any = await tx.fetchrow(query.sql, *query.args)
                    else:
                        result = await tx.fetch(query.sql, *query.args)
                    query = plan.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

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


def _sqlite_run(conn: sqlite3.Connection, query: Query) -> Any:
    try:
        rows = conn.execute(_sqlite_sql(query.sql), _sqlite_args(query.args)).fetchall()
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise UniqueViolation(str(exc)) from exc
        raise
    if query.one:
        return dict(rows[0]) if rows else None
    return [dict(r) for r in rows]


def _sqlite_run_plan(conn: sqlite3.Connection, plan: Plan[T]) -> T:
    """On the writer's thread: the whole transaction in one call."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = _drive(conn, plan)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _drive(conn: sqlite3.Connection, plan: Plan[T]) -> T:
    """Run a plan's statements in whatever transaction is open."""
    try:
        query = next(plan)
        while True:
            query = plan.send(_sqlite_run(conn, query))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# At most this many queued plans share one transaction (_sqlite_run_group).
GROUP_COMMIT_MAX = 64

# (result, error) of one job: exactly one of them is set.
_Outcome = tuple[Any, BaseException | None]


def _sqlite_run_group(conn: sqlite3.Connection, plans: list[Plan[Any]]) -> list[_Outcome]:
    """Group commit: plans that queued up while the writer was busy run in one transaction,
    each inside its own savepoint, so a plan that fails rolls back only itself (its seq with
    it: the feed stays dense) and the others commit. One COMMIT instead of one per plan: the
    pages the plans share (the webinar's row, the last page of each table and index) are written
    to the WAL once, which is most of what a small transaction costs. Every caller is answered
    after that COMMIT, so what a caller is told stored is stored, as with one plan. When the
    transaction itself fails (BEGIN, COMMIT, or an error that made SQLite roll everything back),
    no plan of the group is stored and every caller gets that error."""
    if len(plans) == 1:
        try:
            return [(_sqlite_run_plan(conn, plans[0]), None)]
        except BaseException as exc:  # handed to the caller, whatever it is
            return [(None, exc)]
    outcomes: list[_Outcome] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for plan in plans:
            conn.execute("SAVEPOINT plan")
            try:
                result = _drive(conn, plan)
            except BaseException as exc:  # this plan's own failure: undo it alone
                conn.execute("ROLLBACK TO plan")
                outcomes.append((None, exc))
            else:
                outcomes.append((result, None))
            conn.execute("RELEASE plan")
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(None, exc)] * len(plans)
    return outcomes


class _SqliteThread:
    """One sqlite3 connection, used only on its own thread (sqlite3 objects are not thread-safe).

    Jobs go to the thread through a queue and come back with `call_soon_threadsafe`, not through
    `run_in_executor`: a hop through a ThreadPoolExecutor chains a concurrent future to an
    asyncio one (locks, callbacks, a work item), ~65 µs of CPU per hop on one core against ~30
    here, and a create makes two (the access read, the write). A job whose caller was cancelled
    before it started is skipped, as the executor did; one already running completes."""

    def __init__(self, path: str, *,
                 on_open: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self._path = path
        self._on_open = on_open
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, uri=self._path.startswith("file:"),
                               isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        # WAL: readers never block the writer; NORMAL sync is durable against process crashes
        # (an OS crash may lose the last transactions, the documented WAL trade-off).
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                       "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"):
            conn.execute(pragma)
        if self._on_open is not None:
            self._on_open(conn)
        self._conn = conn
        return conn

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("the SQLite database is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
            self._thread.start()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return await future

    def _serve(self) -> None:
        """The thread: runs jobs in order until the sentinel (None) that `close` sends. Plans
        queued one after another run as one group (`_sqlite_run_group`); anything else queued
        behind them waits for the group, so the order of jobs is kept."""
        held: list[_Job | None] = []  # the job that ended the last group, next to run
        while True:
            job = held.pop() if held else self._jobs.get()
            if job is None:
                return
            if job[2] is not _sqlite_run_plan:
                self._run_one(job)
                continue
            group = [job]
            while len(group) < GROUP_COMMIT_MAX:
                try:
                    queued = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if queued is None or queued[2] is not _sqlite_run_plan:
                    held.append(queued)
                    break
                group.append(queued)
            self._run_group(group)

    def _run_one(self, job: _Job) -> None:
        loop, future, fn, args = job
        if future.cancelled():  # a read of the state only; a late cancel runs the job
            return
        try:
            result, error = fn(self._connection(), *args), None
        except BaseException as exc:  # handed to the caller, whatever it is
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, future, result, error)

    def _run_group(self, group: list[_Job]) -> None:
        live = [job for job in group if not job[1].cancelled()]  # as in _run_one
        if not live:
            return
        try:
            outcomes = _sqlite_run_group(self._connection(), [job[3][0] for job in live])
        except BaseException as exc:  # opening the connection failed
            outcomes = [(None, exc)] * len(live)
        # One wake-up of each loop for the whole group, not one per caller.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settle]] = {}
        for (loop, future, _, _), (result, error) in zip(live, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, result, error))
        for loop, settles in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle_all, settles)

    def _connection(self) -> sqlite3.Connection:
        return self._conn if self._conn is not None else self._open()

    async def close(self) -> None:
        if self._closed:
            return
        if self._thread is not None and self._conn is not None:
            await self.call(_close_connection)
        self._closed = True
        self._conn = None
        self._jobs.put(None)  # the thread ends after the jobs queued before


# (loop, future, fn, args): a job for a _SqliteThread.
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _close_connection(conn: sqlite3.Connection) -> None:
    conn.close()


# (future, result, error): what `_settle` hands to one caller.
_Settle = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle_all(settles: list[_Settle]) -> None:
    for future, result, error in settles:
        _settle(future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand a job's outcome to its caller, unless the caller gave up."""
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


# The checkpointer's pace: a PASSIVE checkpoint this often (~10 µs when there is nothing to
# copy), and a RESTART one when the WAL has grown past this many frames (4 KiB each) anyway;
# the writer keeps the file at most WAL_SIZE_LIMIT bytes when it rewinds it.
CHECKPOINT_INTERVAL_S = 0.5
CHECKPOINT_RESTART_FRAMES = 10_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024

# (loop, error, **context): how a background failure is reported (Metrics.background_failure).
OnError = Callable[..., None]


class _Checkpointer:
    """WAL checkpoints on a thread and connection of their own, never on the writer's.

    SQLite's default checkpoints in the committing connection once the WAL holds 1,000 frames:
    that commit then copies the pages into the database file and fsyncs it, ~5–20 ms on this
    machine class's disks, and every write queued behind it waits (it was the POST p99 at 200
    sends/s). The writer's connection has `wal_autocheckpoint=0`; this thread runs a PASSIVE
    checkpoint every CHECKPOINT_INTERVAL_S, which takes no lock that the writer or the reader
    waits for. Pages written many times between two checkpoints are copied once. A side effect
    that matters: with synchronous=NORMAL the WAL is fsynced only when checkpointed, so an OS
    crash now loses at most ~0.5 s of commits, where it could be minutes of a quiet room before.

    Under writes with no pause, PASSIVE checkpoints keep up but the writer never finds the WAL
    fully copied at the start of a transaction, which is when SQLite rewinds it: the file would
    grow for as long as the writes go on. Past CHECKPOINT_RESTART_FRAMES the checkpoint is a
    RESTART: it waits for the writer's current transaction, copies the rest and makes the next
    write start the WAL over, holding writes back for that one checkpoint (the old behaviour,
    once per ~40 MB instead of once per 4 MB). A checkpoint that fails is reported
    (`on_error`) and the next one runs on a fresh connection."""

    def __init__(self, path: str, on_error: OnError | None, *,
                 interval_s: float = CHECKPOINT_INTERVAL_S,
                 restart_frames: int = CHECKPOINT_RESTART_FRAMES) -> None:
        self._path = path
        self._on_error = on_error
        self._interval_s = interval_s
        self._restart_frames = restart_frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._serve, name="sqlite-checkpoint",
                                            daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self._interval_s):
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, uri=self._path.startswith("file:"),
                                           isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA busy_timeout=5000")
                self.checkpoint(conn)
            except Exception as exc:  # reported; the next one starts on a fresh connection
                if self._on_error is not None:
                    self._on_error("sqlite_checkpoint", exc, database=self._path)
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= self._restart_frames:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str, on_error: OnError | None = None) -> None:
        self._checkpointer = _Checkpointer(path, on_error)
        self._writer = _SqliteThread(path, on_open=self._writer_opened)
        self._reader = _SqliteThread(path)

    def _writer_opened(self, conn: sqlite3.Connection) -> None:
        """On the writer's thread: checkpoints move to the checkpointer (a database in memory
        has no WAL, and nothing to checkpoint)."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._checkpointer.start()

    @classmethod
    async def connect(cls, url: str, on_error: OnError | None = None) -> SqliteDatabase:
        path = sqlite_path(url)
        if path == ":memory:":
            # Two connections must see one database: use a named shared-cache memory database.
            path = f"file:webinar-chat-{id(cls)}-{asyncio.get_running_loop().time()}?mode=memory&cache=shared"
        db = cls(path, on_error)
        await db.fetchrow("SELECT 1 AS ok")  # open now: fail at start-up, not on first use
        return db

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        result: list[Row] = await self._reader.call(_sqlite_run, q_all(sql, *args))
        return result

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        result: Row | None = await self._reader.call(_sqlite_run, q(sql, *args))
        return result

    async def execute(self, sql: str, *args: Any) -> None:
        await self.run(single(q(sql, *args)))

    async def run(self, plan: Plan[T]) -> T:
        # No lock on this side: the writer's queue orders the plans (SQLite has one writer
        # anyway), and plans that queue up while it works are committed as one group.
        result: T = await self._writer.call(_sqlite_run_plan, plan)
        return result

    async def close(self) -> None:
        await self._checkpointer.stop()
        await self._writer.close()
        await self._reader.close()


def single(query: Query) -> Plan[Any]:
    """A plan of one statement."""
    return (yield query)


async def connect(url: str, on_error: OnError | None = None
                  ) -> PostgresDatabase | SqliteDatabase:
    """`on_error(loop, error, **context)` hears of failures in background work (SQLite's
    checkpoints)."""
    if url.startswith("sqlite"):
        return await SqliteDatabase.connect(url, on_error)
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.connect(url)
    raise ValueError(f"unsupported DATABASE_URL scheme: {url.split(':', 1)[0]!r}")
