"""The transcript export's memory (docs/export.md): `GET /api/webinars/{id}/export` of webinars
of 100,000 and 1,000,000 messages, as CSV and as JSON, from a real `webinar-chat serve` process,
with the server's RSS before the request and at its peak during it.

The export reads and writes a page of 1,000 messages at a time, so its memory must not grow with
the webinar: the peak RSS growth of the 1M export ÷ that of the 100k export should be ~1 (the
`ratio` of each row of the bigger size; the report takes the median). Per export: bytes, wall
time (request sent → last byte read), rows/s, the server's CPU seconds, and its RSS:

- `rss_before_kib`: VmRSS of the idle server (after a warm-up export of an empty webinar in the
  same format, so the first request's lazy imports and the reader connection are not counted);
- `rss_peak_kib`: VmHWM after the export, with the high-water mark reset to the current RSS
  just before it (`echo 5 > /proc/<pid>/clear_refs`): the exact peak, however short;
- `rss_peak_sampled_kib`: the largest VmRSS sampled every 5 ms during the export (a check on
  the former, and the figure used if clear_refs is not permitted);
- `growth_kib`: peak − before.

One database per kind holds every size (webinar *k* + 1 has `export_messages[k]` messages, ids
in one run each; the last webinar is empty, for the warm-up), seeded with bulk SQL straight into
the database: every 100th message is the host's (author_role host), every 20th staff-only
(visibility staff), every 50th hidden, every 1,000th deleted again (its row gone, its DELETE
change left, as delete_message leaves it). Messages have no INSERT changes in the feed (the
export does not read them). Each export runs on a fresh server (pinned to core 0; this process,
the client, runs on core 1), sizes and formats in a rotating order from run to run.

    .venv/bin/python -m bench.run_all --only export          # via the runner (docs/benchmarks.md)
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import common
from .common import chat_server, cpu_seconds, new_database, seed

HOST = 1  # user 1 is every webinar's host: the exporter, and the author of every 100th message
USERS = 100
CONTENT = "x" * 80  # ~100-character messages: ~290-byte JSON rows, ~190-byte CSV rows
DELETED_EVERY = 1000
HIDDEN_EVERY = 50
STAFF_EVERY = 20
FORMATS = ("csv", "json")
SAMPLE_S = 0.005

# messages.id, user_id, content, hidden, author_role, visibility from n (1..count) and the first
# id (`$1`); the same expressions on both databases.
_ROW = f"""$1 + n, n % {USERS} + 1, 'message ' || n || ' ' || $2,
    n % {HIDDEN_EVERY} = 0,
    CASE WHEN n % {USERS} + 1 = {HOST} THEN 'host' ELSE 'attendee' END,
    CASE WHEN n % {STAFF_EVERY} = 0 THEN 'staff' ELSE 'everyone' END"""
_INSERT = """INSERT INTO messages (id, user_id, content, hidden, author_role, visibility,
                                   agency_id, client_id, webinar_id, created_at, client_msg_id, seq)"""


def _deletes(webinar_id: int, first: int, count: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Every DELETED_EVERY-th message of the webinar deleted as delete_message does it: its
    DELETE change (the feed's next seqs; messages have seq n), then its row; then the head."""
    return [
        ("""INSERT INTO message_changes (webinar_id, seq, message_id, op, changed_at)
            SELECT webinar_id, $2 + row_number() OVER (ORDER BY id), id, 'DELETE', created_at
            FROM messages WHERE webinar_id = $1 AND (id - $3) % $4 = 0""",
         (webinar_id, count, first, DELETED_EVERY)),
        ("DELETE FROM messages WHERE webinar_id = $1 AND (id - $2) % $3 = 0",
         (webinar_id, first, DELETED_EVERY)),
        ("""UPDATE webinars SET last_seq = (SELECT max(seq) FROM message_changes
                                            WHERE webinar_id = $1) WHERE id = $1""",
         (webinar_id,)),
    ]


def seed_messages(db: common.Database, sizes: list[int]) -> dict[int, int]:
    """Users, webinars 1..len(sizes)+1 (the host registered), then webinar k+1's `sizes[k]`
    messages in one INSERT … SELECT each. Returns {messages: webinar id}."""
    seed(db, users=USERS, extra_webinars=len(sizes))
    now = datetime.now(UTC)
    plan: list[tuple[int, int, int]] = []  # (webinar, first id - 1, count)
    first = 0
    for k, count in enumerate(sizes):
        plan.append((k + 1, first, count))
        first += count
    if db.kind == "sqlite":
        at = now.isoformat(timespec="microseconds")  # how the store writes SQLite times
        con = sqlite3.connect(db.url.split("///", 1)[1])
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("UPDATE registrations SET role = 'host' WHERE user_id = ?", (HOST,))
            for webinar, start, count in plan:
                con.execute(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?5) "
                    + _INSERT.replace("$", "?") + " SELECT " + _ROW.replace("$", "?")
                    + ", 1, 1, ?3, ?4, NULL, n FROM g", (start, CONTENT, webinar, at, count))
                for sql, args in _deletes(webinar, start, count):
                    con.execute(sql.replace("$", "?"), args)
                con.commit()
            con.execute("ANALYZE")
            con.commit()
        finally:
            con.close()
    else:
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(db.url)
            try:
                await conn.execute("UPDATE registrations SET role = 'host' WHERE user_id = $1",
                                   HOST)
                for webinar, start, count in plan:
                    async with conn.transaction():
                        # No foreign-key checks per row (they reference the seeded agency,
                        # client, webinar and users); the bench's user is a superuser.
                        await conn.execute("SET LOCAL session_replication_role = replica")
                        await conn.execute(
                            _INSERT + " SELECT " + _ROW + ", 1, 1, $3, $4, NULL, n "
                            "FROM generate_series(1, $5::bigint) AS g(n)",
                            start, CONTENT, webinar, now, count)
                    for sql, args in _deletes(webinar, start, count):
                        await conn.execute(sql, *args)
                await conn.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), "
                                   "(SELECT COALESCE(MAX(id), 0) + 1 FROM messages), false)")
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

        asyncio.run(run())
    return {count: webinar for webinar, _, count in plan}


# --- the server's memory ---------------------------------------------------------------------

def vm_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def reset_peak(pid: int) -> bool:
    """Resets the process's VmHWM to its current RSS (Linux ≥ 4.0; needs ptrace rights)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """The largest VmRSS of `pid` seen every SAMPLE_S while running (a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, common.rss_kib(self.pid))
                self.samples += 1
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- one export ------------------------------------------------------------------------------

def download(port: int, token: str, webinar_id: int, fmt: str) -> dict[str, Any]:
    """GET the export and read it to the end, 1 MiB at a time, counting bytes and rows (CSV:
    lines after the header — no content has a line break; JSON: row objects, `{"id":` less the
    webinar's own)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    marker = b"\n" if fmt == "csv" else b'{"id":'
    size = found = 0
    tail = b""
    last = b""
    try:
        conn.request("GET", f"/api/webinars/{webinar_id}/export?format={fmt}",
                     headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"export {webinar_id} {fmt}: {response.status} "
                               f"{response.read()[:500]!r}")
        while chunk := response.read(1 << 20):
            size += len(chunk)
            found += (tail + chunk).count(marker)
            tail = chunk[-(len(marker) - 1):] if len(marker) > 1 else b""
            last = (last + chunk)[-8:]
    finally:
        conn.close()
    if fmt == "json" and not last.endswith(b"]}\n"):
        raise RuntimeError(f"export {webinar_id} json: cut short ({last!r})")
    return {"bytes": size, "rows": found - 1}


def export_once(db: common.Database, work: Path, token: str, *, webinar_id: int, empty: int,
                messages: int, fmt: str, run: int) -> dict[str, Any]:
    """One export on a fresh server: warm-up on the empty webinar, then the measured one."""
    with chat_server(db, work) as srv:
        download(srv.port, token, empty, fmt)
        time.sleep(0.2)  # let the warm-up's buffers go back before reading the baseline
        exact = reset_peak(srv.pid)
        before = vm_status(srv.pid)
        cpu0 = cpu_seconds(srv.pid)
        with RssSampler(srv.pid) as sampler:
            t0 = time.perf_counter()
            got = download(srv.port, token, webinar_id, fmt)
            seconds = time.perf_counter() - t0
        cpu = cpu_seconds(srv.pid) - cpu0
        after = vm_status(srv.pid)
    if got["rows"] != messages:
        raise RuntimeError(f"export of {messages} messages ({fmt}) had {got['rows']} rows")
    # VmHWM is exact but lags the live counters by a few pages; the samples can catch those.
    peak = max(after["VmHWM"], sampler.peak) if exact else sampler.peak
    return {
        "db": db.kind, "messages": messages, "format": fmt, "run": run, "variant": None,
        "bytes": got["bytes"], "rows": got["rows"], "seconds": round(seconds, 3),
        "rows_per_s": round(messages / seconds), "mib_per_s": round(got["bytes"] / 2**20 / seconds, 1),
        "server_cpu_s": round(cpu, 2), "server_cpu_util": round(cpu / seconds, 3),
        "rss_before_kib": before["VmRSS"], "rss_peak_kib": peak,
        "rss_peak_sampled_kib": max(sampler.peak, before["VmRSS"]), "samples": sampler.samples,
        "rss_after_kib": after["VmRSS"], "growth_kib": peak - before["VmRSS"],
        "peak_exact": exact,
    }


def bench_export(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    from .loadgen import tokens_for

    sizes = sorted(p["export_messages"])
    kinds = [k for k in p["export_kinds"] if k == "sqlite" or common.pg_available()]
    token = tokens_for([HOST])[HOST]
    out: list[dict[str, Any]] = []
    for kind in kinds:
        db = new_database(kind)
        try:
            t = time.monotonic()
            webinars = seed_messages(db, sizes)
            seeded = round(time.monotonic() - t, 1)
            log(f"export {kind}: seeded {', '.join(f'{n:,}' for n in sizes)} messages in "
                f"{seeded} s")
            cases = [(n, fmt) for n in sizes for fmt in FORMATS]
            for run in range(p["runs"]):
                k = run % len(cases)  # rotate the order, so no case is always first
                rows = {}
                for n, fmt in cases[k:] + cases[:k]:
                    r = export_once(db, work, token, webinar_id=webinars[n],
                                    empty=len(sizes) + 1, messages=n, fmt=fmt, run=run)
                    r["seed_s"] = seeded
                    rows[n, fmt] = r
                    log(f"export {kind} {n:,} {fmt}: {r['bytes'] / 2**20:.1f} MiB in "
                        f"{r['seconds']:.1f} s ({r['rows_per_s']:,} rows/s), RSS "
                        f"{r['rss_before_kib'] / 1024:.1f} → peak {r['rss_peak_kib'] / 1024:.1f} "
                        f"MiB (+{r['growth_kib'] / 1024:.1f}; sampled "
                        f"+{(r['rss_peak_sampled_kib'] - r['rss_before_kib']) / 1024:.1f})")
                for fmt in FORMATS:  # the biggest against the smallest, within the run
                    big, small = rows[sizes[-1], fmt], rows[sizes[0], fmt]
                    big["ratio"] = round(big["growth_kib"] / max(small["growth_kib"], 1), 2)
                    big["ratio_to"] = sizes[0]
                out += rows.values()
        finally:
            db.close()
    return out


def log(msg: str) -> None:  # as run_all's (which imports this module)
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
