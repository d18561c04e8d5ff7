"""The SQLite database's own thread (store/db.py `_SqliteThread`): jobs run in order on one
thread with one connection, outcomes reach their callers, and a caller that gave up before its
job started does not have it run — a cancelled send must not store a message later."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from webinar_chat.store.db import SqliteDatabase, _SqliteThread

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
