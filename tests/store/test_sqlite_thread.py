"""The SQLite database's own thread (store/db.py `_SqliteThread`): jobs run in order on one
thread with one connection, outcomes reach their callers, and a caller that gave up before its
job started does not have it run — a cancelled send must not store a message later. Write plans
that queue up are committed as one group: each plan keeps its own outcome, a plan that fails
undoes only itself, and a group whose COMMIT fails stores nothing and tells every caller."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from webinar_chat.store.db import Plan, SqliteDatabase, _SqliteThread, q

from ..helpers import eventually


def _thread_name(conn: sqlite3.Connection) -> str:
    return threading.current_thread().name


async def test_jobs_run_in_order_on_one_thread_with_one_connection(tmp_path: Path) -> None:
    worker = _SqliteThread(str(tmp_path / "t.db"))
    try:
        seen: list[tuple[int, int]] = []

        def job(conn: sqlite3.Connection, i: int) -> int:
            seen.append((i, id(conn)))
            return i * 2

        results = await asyncio.gather(*(worker.call(job, i) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))
        assert len({conn for _, conn in seen}) == 1
        assert await worker.call(_thread_name) == "sqlite"
        assert threading.current_thread().name != "sqlite"
    finally:
        await worker.close()


async def test_an_error_reaches_its_caller_and_the_thread_goes_on(tmp_path: Path) -> None:
    worker = _SqliteThread(str(tmp_path / "t.db"))
    try:
        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT * FROM no_such_table")

        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await worker.call(broken)
        row = await worker.call(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0])
        assert row == 42
    finally:
        await worker.close()


async def test_a_job_whose_caller_gave_up_before_it_started_is_skipped(tmp_path: Path) -> None:
    worker = _SqliteThread(str(tmp_path / "t.db"))
    try:
        started, release = threading.Event(), threading.Event()
        ran: list[str] = []

        def hold(conn: sqlite3.Connection) -> None:
            started.set()
            release.wait(10)
            ran.append("hold")

        def write(conn: sqlite3.Connection, what: str) -> None:
            ran.append(what)

        holding = asyncio.ensure_future(worker.call(hold))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        given_up = asyncio.ensure_future(worker.call(write, "given up"))
        await eventually(lambda: worker._jobs.qsize() == 1)  # queued behind `hold`
        given_up.cancel()
        kept = asyncio.ensure_future(worker.call(write, "kept"))
        await eventually(lambda: worker._jobs.qsize() == 2)
        release.set()
        await holding
        await kept
        assert given_up.cancelled()
        assert ran == ["hold", "kept"]
    finally:
        await worker.close()


async def test_close_ends_the_thread_and_later_calls_fail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    db = await SqliteDatabase.connect(url)
    await db.execute("CREATE TABLE t (x INTEGER)")
    await db.execute("INSERT INTO t (x) VALUES ($1)", 7)
    threads = [db._reader._thread, db._writer._thread]
    assert all(t is not None and t.is_alive() for t in threads)
    await db.close()
    for t in threads:
        assert t is not None
        t.join(5)
        assert not t.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await db.fetchrow("SELECT x FROM t")
    again = await SqliteDatabase.connect(url)
    try:
        assert await again.fetchrow("SELECT x FROM t") == {"x": 7}
    finally:
        await again.close()


class _Refused(Exception):
    pass


def _insert(x: int, *, then_fail: bool = False) -> Plan[int]:
    row = yield q("INSERT INTO t (x) VALUES ($1) RETURNING x", x)
    if then_fail:
        raise _Refused(x)
    return int(row["x"])


async def _queued_behind_a_held_writer(db: SqliteDatabase, plans: list[Plan[int]],
                                       statements: list[str]) -> list[asyncio.Future[int]]:
    """Hold the writer's thread, queue `plans` behind it, then let it go: they reach the
    thread together, as sends arriving while a write is in progress do. `statements` gets every
    statement the writer runs from then on."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)
        started.set()
        release.wait(10)

    holding = asyncio.ensure_future(db._writer.call(hold))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    runs = [asyncio.ensure_future(db.run(plan)) for plan in plans]
    await eventually(lambda: db._writer._jobs.qsize() == len(plans))
    release.set()
    await holding
    return runs


async def test_plans_that_queue_up_commit_together_and_a_failed_one_undoes_only_itself(
        tmp_path: Path) -> None:
    db = await SqliteDatabase.connect(f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        statements: list[str] = []
        runs = await _queued_behind_a_held_writer(
            db, [_insert(1), _insert(2, then_fail=True), _insert(3)], statements)
        first, failed, third = await asyncio.gather(*runs, return_exceptions=True)
        assert (first, third) == (1, 3)
        assert isinstance(failed, _Refused)
        assert await db.fetch("SELECT x FROM t ORDER BY x") == [{"x": 1}, {"x": 3}]
        # One transaction for the three, not one each.
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
            "BEGIN IMMEDIATE", "COMMIT"]
        assert await db.run(_insert(4)) == 4  # and the writer goes on as before
    finally:
        await db.close()


async def test_a_group_whose_commit_fails_stores_nothing_and_every_caller_hears(
        tmp_path: Path) -> None:
    db = await SqliteDatabase.connect(f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        # A deferred foreign key is checked at COMMIT: the one way a group's statements can all
        # succeed and its COMMIT still fail.
        await db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await db.execute("""CREATE TABLE t (x INTEGER REFERENCES parent (id)
                                DEFERRABLE INITIALLY DEFERRED)""")
        await db.execute("INSERT INTO parent (id) VALUES (1), (3)")
        runs = await _queued_behind_a_held_writer(db, [_insert(1), _insert(2), _insert(3)], [])
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
        assert await db.fetch("SELECT x FROM t") == []
        assert await db.run(_insert(3)) == 3
        assert await db.fetch("SELECT x FROM t") == [{"x": 3}]
    finally:
        await db.close()


async def test_a_plan_whose_caller_gave_up_while_queued_is_left_out_of_the_group(
        tmp_path: Path) -> None:
    db = await SqliteDatabase.connect(f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        started, release = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            started.set()
            release.wait(10)

        holding = asyncio.ensure_future(db._writer.call(hold))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        kept, given_up = (asyncio.ensure_future(db.run(_insert(x))) for x in (1, 2))
        await eventually(lambda: db._writer._jobs.qsize() == 2)
        given_up.cancel()
        release.set()
        await holding
        assert await kept == 1
        assert await db.fetch("SELECT x FROM t") == [{"x": 1}]
    finally:
        await db.close()
