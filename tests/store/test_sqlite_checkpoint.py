"""SQLite's WAL checkpoints run on a thread of their own (store/db.py `_Checkpointer`), never in
the writer's commits: a checkpoint copies pages into the database file and fsyncs it, and every
write queued behind a commit that does it waits (docs/operations.md, "Background work")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from webinar_chat.store.db import Plan, SqliteDatabase, _Checkpointer, q

from ..helpers import eventually

ROW = "x" * 8000  # two pages a row


def _rows(n: int) -> Plan[None]:
    for _ in range(n):
        yield q("INSERT INTO t (x) VALUES ($1)", ROW)


def _wal_database(path: Path, rows: int) -> sqlite3.Connection:
    """A database in WAL mode whose `rows` rows are all still in the WAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x TEXT)")
    for _ in range(rows):
        conn.execute("INSERT INTO t (x) VALUES (?)", (ROW,))
    return conn


async def test_the_writer_leaves_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    db = await SqliteDatabase.connect(f"sqlite:///{path}")
    try:
        assert await db._writer.call(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        await db.execute("CREATE TABLE t (x TEXT)")
        for _ in range(10):
            await db.run(_rows(30))  # 600 pages in all, written to the WAL
        # Copied into the database file although the writer never checkpoints.
        await eventually(lambda: path.stat().st_size > 600 * 4096, timeout=10)
        assert await db.fetchrow("SELECT count(*) AS n FROM t") == {"n": 300}
        thread = db._checkpointer._thread
        assert thread is not None and thread.name == "sqlite-checkpoint"
    finally:
        await db.close()
    thread.join(5)
    assert not thread.is_alive()


async def test_a_database_in_memory_has_no_checkpointer() -> None:
    db = await SqliteDatabase.connect("sqlite:///:memory:")
    try:
        await db.execute("CREATE TABLE t (x TEXT)")
        assert db._checkpointer._thread is None
    finally:
        await db.close()


def test_a_wal_past_the_limit_starts_over_and_one_below_it_goes_on_growing(
        tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    writer = _wal_database(path, rows=100)
    checkpointer = sqlite3.connect(path, isolation_level=None)
    pinned = sqlite3.connect(path, isolation_level=None)

    def frames_after_one_more_write() -> int:
        writer.execute("INSERT INTO t (x) VALUES ('one more')")
        return int(checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    try:
        # What writes that never pause do: a reader's snapshot (here held on purpose) keeps a
        # checkpoint from copying the newest frames, so the next write cannot start the WAL over.
        pinned.execute("BEGIN")
        pinned.execute("SELECT count(*) FROM t").fetchone()
        for _ in range(50):
            writer.execute("INSERT INTO t (x) VALUES (?)", (ROW,))
        _Checkpointer(str(path), None, restart_frames=10**9).checkpoint(checkpointer)
        pinned.execute("COMMIT")
        assert frames_after_one_more_write() > 300  # PASSIVE only: the WAL goes on growing
        _Checkpointer(str(path), None, restart_frames=1).checkpoint(checkpointer)
        assert frames_after_one_more_write() < 10  # RESTART: the next write starts it over
        assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 152
    finally:
        for conn in (pinned, checkpointer, writer):
            conn.close()


async def test_a_failed_checkpoint_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    writer = _wal_database(path, rows=100)
    reported: list[tuple[str, BaseException, dict[str, Any]]] = []

    class FailsOnce(_Checkpointer):
        failed = False

        def checkpoint(self, conn: sqlite3.Connection) -> None:
            if not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error")
            super().checkpoint(conn)

    checkpointer = FailsOnce(str(path), lambda loop, error, **context: reported.append(
        (loop, error, context)), interval_s=0.02)
    checkpointer.start()
    try:
        await eventually(lambda: path.stat().st_size > 200 * 4096, timeout=10)
        assert [(loop, str(error), context) for loop, error, context in reported] == [
            ("sqlite_checkpoint", "disk I/O error", {"database": str(path)})]
    finally:
        await checkpointer.stop()
        writer.close()
