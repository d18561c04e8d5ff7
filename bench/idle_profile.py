"""Where an idle connection's memory goes: tracemalloc in the server, before and after N joined,
silent sockets (the idle benchmark's connections: token in the URL, `join`, heartbeats).

    .venv/bin/python -m bench.idle_profile --connections 2000            # tracemalloc breakdown
    .venv/bin/python -m bench.idle_profile --connections 2000 --no-trace # RSS only (no overhead)

The server is `webinar-chat serve` (the CLI's own `main`) in a process started by this module
with tracemalloc on (`--frames` deep) and a SIGUSR1 handler that collects garbage, then writes a
snapshot and a census of the objects the collector tracks (count and `sys.getsizeof` by type,
`__dict__`s included) next to the server's log. The client side connects from this process,
waits past one server heartbeat round (every connection has written once), signals again, and
prints the difference per connection: by allocation site (filename:lineno) and by type.
Nothing here is a benchmark result (tracemalloc slows allocation and adds its own memory); the
RSS figure of the idle benchmark is measured without it (bench/run_all.py, `idle`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import pickle
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

SNAP_DIR_ENV = "IDLE_PROFILE_DIR"


# --- inside the server ---------------------------------------------------------------------------

def census() -> dict[str, tuple[int, int]]:
    """(count, bytes) of every object the collector tracks, by type (a `__dict__` counted with
    its owner's type as "<type>.__dict__")."""
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj in gc.get_objects():
        tp = type(obj)
        name = f"{tp.__module__}.{tp.__qualname__}"
        row = out[name]
        row[0] += 1
        row[1] += sys.getsizeof(obj)
        d = getattr(obj, "__dict__", None) if not isinstance(obj, type) else None
        if isinstance(d, dict) and not gc.is_tracked(d):
            # An instance's values inline (3.11+: no dict object until asked for); getattr made
            # one, which gc.get_objects() did not list: count it here.
            dname = name + ".__dict__"
            out[dname][0] += 1
            out[dname][1] += sys.getsizeof(d)
    return {k: (v[0], v[1]) for k, v in out.items()}


def serve(argv: list[str]) -> int:
    frames = int(os.environ.get("IDLE_PROFILE_FRAMES", "0"))
    if frames:
        tracemalloc.start(frames)
    out_dir = Path(os.environ[SNAP_DIR_ENV])
    taken = 0

    def dump(signum: int, frame: Any) -> None:
        nonlocal taken
        gc.collect()
        data: dict[str, Any] = {"rss_kib": _rss_kib(os.getpid())}
        if tracemalloc.is_tracing():
            data["snapshot"] = tracemalloc.take_snapshot()
        data["census"] = census()  # after the snapshot: the census allocates (__dict__s)
        from webinar_chat.server.ws_protocol import WebinarChatWebSocketProtocol

        one = next((o for o in gc.get_objects() if type(o) is WebinarChatWebSocketProtocol), None)
        data["ws_attributes"] = sorted(vars(one)) if one is not None else []
        path = out_dir / f"snap-{taken}.pickle"
        with open(path.with_suffix(".tmp"), "wb") as f:
            pickle.dump(data, f)
        path.with_suffix(".tmp").rename(path)
        taken += 1

    signal.signal(signal.SIGUSR1, dump)
    from webinar_chat.cli import main

    return main(["serve", *argv])


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- the client side -----------------------------------------------------------------------------

def take(pid: int, out_dir: Path, k: int) -> dict[str, Any]:
    os.kill(pid, signal.SIGUSR1)
    path = out_dir / f"snap-{k}.pickle"
    deadline = time.monotonic() + 300
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no snapshot from the server")
        time.sleep(0.2)
    with open(path, "rb") as f:
        data: dict[str, Any] = pickle.load(f)
    return data


async def connect(port: int, n: int, settle: float) -> list[Any]:
    from .lean import ws_connect
    from .loadgen import (
        CONNECT_CONCURRENCY,
        HEARTBEAT,
        HEARTBEAT_EVERY_S,
        HOST,
        fanout_message_handler,
        gather_limited,
        tokens_for,
    )

    ids = list(range(2, n + 2))
    toks = tokens_for(ids)

    async def make(i: int) -> Any:
        client = await ws_connect(HOST, port, f"/realtime?token={toks[ids[i]]}",
                                  on_message=fanout_message_handler("chat", False))
        client.state["joined"] = asyncio.get_running_loop().create_future()
        client.send_text(b'{"type":"join","topic":"webinar:1:messages","ref":"j"}')
        await asyncio.wait_for(client.state["joined"], 60)
        return client

    # Heartbeats from the start (every 10 s, as the benchmark's clients): tracemalloc slows the
    # server enough that the first sockets would otherwise be silent for the 30 s that closes them.
    alive: list[Any] = []

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            for c in alive:
                c.send_text(HEARTBEAT)

    async def joined(i: int) -> Any:
        client = await make(i)
        alive.append(client)
        return client

    beats = asyncio.create_task(beat())
    clients = await gather_limited(n, joined, CONNECT_CONCURRENCY)
    # Past one server heartbeat round (5 s), plus one client heartbeat each, as the benchmark.
    await asyncio.sleep(settle)
    for c in clients:
        c.send_text(HEARTBEAT)
    await asyncio.sleep(1)
    beats.cancel()
    return clients


def report(before: dict[str, Any], after: dict[str, Any], n: int, top: int,
           depth: int = 6) -> None:
    conn = "webinar_chat.server.realtime.RealtimeConnection"
    live = after["census"].get(conn, (0, 0))[0] - before["census"].get(conn, (0, 0))[0]
    if live != n:
        print(f"WARNING: {live} of {n} connections are open on the server")
    print(f"RSS: {before['rss_kib']} -> {after['rss_kib']} KiB: "
          f"{(after['rss_kib'] - before['rss_kib']) / n:.2f} KiB per connection "
          f"(with tracemalloc: {'snapshot' in after})")
    if "snapshot" in after:
        a, b = after["snapshot"], before["snapshot"]
        # tracemalloc's own frames are not the server's.
        flt = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
        a, b = a.filter_traces(flt), b.filter_traces(flt)
        stats = a.compare_to(b, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"\ntracemalloc: {total / n:.0f} B per connection in all "
              f"({total / 1024 / n:.2f} KiB); by allocation site (B per connection, blocks per "
              "connection):")
        for s in stats[:top]:
            fr = s.traceback[-1]
            print(f"{s.size_diff / n:8.0f}  {s.count_diff / n:6.2f}  "
                  f"{_short(fr.filename)}:{fr.lineno}")
        if len(a.traces) and len(a.traces[0].traceback) > 1:
            rows = categories(b, a, n)
            print("\nby what it is (B per connection, blocks per connection):")
            for name, size, count in rows:
                print(f"{size:8.0f}  {count:6.2f}  {name}")
            if out := os.environ.get("IDLE_PROFILE_JSON"):
                import json

                Path(out).write_text(json.dumps({"connections": n, "total_b": total / n,
                                                 "categories": rows}, indent=1))
            print("\nby traceback (innermost frames first):")
            for s in a.compare_to(b, "traceback")[:top]:
                where = " <- ".join(f"{_short(f.filename)}:{f.lineno}"
                                    for f in list(reversed(s.traceback))[:depth])
                print(f"{s.size_diff / n:8.0f}  {s.count_diff / n:6.2f}  {where}")
    attrs = after.get("ws_attributes", [])
    print(f"\nattributes of one WebSocket protocol instance ({len(attrs)}): {' '.join(attrs)}")
    ca, cb = after["census"], before["census"]
    rows = []
    for name, (count, size) in ca.items():
        c0, s0 = cb.get(name, (0, 0))
        if count - c0 > n // 2:
            rows.append((size - s0, count - c0, name))
    rows.sort(reverse=True)
    print("\ngc-tracked objects by type (getsizeof, shallow; B per connection, objects per "
          "connection):")
    for size, count, name in rows[:top]:
        print(f"{size / n:8.0f}  {count / n:6.2f}  {name}")


QUEUE = "ASGI receive queue (uvicorn: asyncio.Queue = 3 deques + an Event's)"
WRITABLE = "uvicorn's `writable` event (asyncio.Event: 1 deque)"
GENERIC_Q = "generic-path frame queue + its Event (RealtimeConnection)"
REQUEST = "handshake request: headers, header strings"
RESPONSE = "handshake response: headers, Response"
EXPIRY = "token-expiry timer (TimerHandle + libuv timer / heap entry)"
VERIFIER = "token verifier closure"
SCOPE = "ASGI scope (headers list, dict, state copy, extensions), run_asgi task"
WSPROTO = "websockets ServerProtocol (parser generators, reader, uuid, last frame)"
UVPROTO = "uvicorn protocol object (its attributes: inline, or a dict)"
ADDRS = "peer/local address tuples"
SESSION = "Session + Subscription"
ROOM = "room and presence sets"
ACCESS = "access cache entry (per user; webinar row)"
TOKENS = "verified-token cache entry (per token)"
LIMITS = "rate-limit buckets (per user)"
CHAIN = "ASGI call chain: coroutine frames, closures, starlette WebSockets"
CONN = "RealtimeConnection + its run() coroutine, RawFrameWriter"
UVLOOP = "uvloop transport and other C allocations (no Python frame)"
# What each allocation is: the innermost frame of its traceback that is not a generic helper
# (asyncio's locks and queues, weakref sets, header containers, json, uuid…) names it, by
# (file suffix, function, text of the line); None matches anything. Functions and line text,
# not line numbers, so that the same table reads the code before and after a change (the
# traceback's file is read as it is on disk).
GENERIC = ("asyncio/locks.py", "asyncio/queues.py", "asyncio/mixins.py", "_weakrefset.py",
           "/weakref.py", "urllib/parse.py", "/uuid.py", "/json/", "<frozen", "<string>",
           "/collections/", "/typing.py", "websockets/datastructures.py", "/enum.py")
CATEGORIES: list[tuple[str, str, str | None, str | None]] = [
    (QUEUE, "websockets_sansio_impl.py", "__init__", "asyncio.Queue()"),
    (WRITABLE, "websockets_sansio_impl.py", "__init__", "asyncio.Event()"),
    (UVPROTO, "websockets_sansio_impl.py", "__init__", None),
    (QUEUE, "websockets_sansio_impl.py", "receive", None),
    (SCOPE, "websockets_sansio_impl.py", "handle_connect", None),
    (RESPONSE, "websockets_sansio_impl.py", "send", None),
    (ADDRS, "websockets_sansio_impl.py", "connection_made", None),
    (CHAIN, "websockets_sansio_impl.py", "run_asgi", None),
    (UVPROTO, "websockets_sansio_impl.py", None, None),
    (UVPROTO, "httptools_impl.py", "handle_websocket_upgrade", None),
    (ADDRS, "uvicorn/protocols/utils.py", None, None),
    (QUEUE, "ws_protocol.py", "put_nowait", None),
    (QUEUE, "ws_protocol.py", "get", None),
    (QUEUE, "ws_protocol.py", "_wakeup_next", None),
    (WRITABLE, "ws_protocol.py", "wait", None),
    (SCOPE, "ws_protocol.py", "handle_connect", None),
    (UVPROTO, "ws_protocol.py", None, None),
    (RESPONSE, "websockets/server.py", "accept", None),
    (RESPONSE, "websockets/server.py", "process_request", None),
    (REQUEST, "websockets/server.py", "parse", None),
    (REQUEST, "websockets/http11.py", None, None),
    (WSPROTO, "websockets/", None, None),
    (GENERIC_Q, "server/realtime.py", "__init__", "collections.deque()"),
    (GENERIC_Q, "server/realtime.py", "__init__", "asyncio.Event()"),
    (EXPIRY, "server/realtime.py", "_watch_expiry", None),
    (EXPIRY, "server/deadlines.py", None, None),
    (VERIFIER, "server/realtime.py", "token_verifier", None),
    (CONN, "server/realtime.py", None, None),
    (SESSION, "protocol/session.py", None, None),
    (SESSION, "protocol/events.py", None, None),
    (ROOM, "server/hub.py", None, None),
    (ROOM, "server/presence.py", None, None),
    (ACCESS, "auth/access_cache.py", None, None),
    (ACCESS, "auth/permissions.py", None, None),
    (ACCESS, "webinar_chat/store/", None, None),
    (TOKENS, "auth/tokens.py", None, None),
    (TOKENS, "/jwt/", None, None),
    (LIMITS, "server/rate_limits.py", None, None),
    (CHAIN, "starlette/", None, None),
    (CHAIN, "server/middleware.py", None, None),
    (CHAIN, "server/identities.py", None, None),
    (CHAIN, "server/app.py", None, None),
    (UVLOOP, "asyncio/runners.py", None, None),
]
_FUNCS: dict[str, list[tuple[int, int, str]]] = {}


def function_at(filename: str, lineno: int) -> str | None:
    """The innermost function (def) of `filename` that contains `lineno`."""
    import ast

    if filename not in _FUNCS:
        spans: list[tuple[int, int, str]] = []
        try:
            tree: ast.AST | None = ast.parse(Path(filename).read_text())
        except (OSError, SyntaxError, ValueError):
            tree = None
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                spans.append((node.lineno, node.end_lineno or node.lineno, node.name))
        _FUNCS[filename] = spans
    inside = [s for s in _FUNCS[filename] if s[0] <= lineno <= s[1]]
    return min(inside, key=lambda s: s[1] - s[0])[2] if inside else None


def category(traceback: tracemalloc.Traceback) -> str:
    import linecache

    for fr in reversed(traceback):  # innermost first
        name = fr.filename
        if any(g in name for g in GENERIC):
            continue
        for cat, suffix, func, text in CATEGORIES:
            if suffix not in name:
                continue
            if func is not None and function_at(name, fr.lineno) != func:
                continue
            if text is not None and text not in linecache.getline(name, fr.lineno):
                continue
            return cat
        return f"other ({_short(name)})"
    return "other"


def categories(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int
               ) -> list[tuple[str, float, float]]:
    """(category, bytes per connection, blocks per connection), largest first."""
    sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for stat in after.compare_to(before, "traceback"):
        row = sums[category(stat.traceback)]
        row[0] += stat.size_diff / n
        row[1] += stat.count_diff / n
    return sorted(((k, v[0], v[1]) for k, v in sums.items()), key=lambda r: -r[1])


def _short(path: str) -> str:
    for mark in ("site-packages/", "/src/", "/lib/python3"):
        if mark in path:
            return path.split(mark, 1)[1]
    return path


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2:]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--no-trace", action="store_true")
    ap.add_argument("--settle", type=float, default=6.0)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()

    from . import common

    common.raise_nofile()
    work = Path(common.tempfile.mkdtemp(prefix="idle-profile-"))
    n = args.connections
    db = common.new_database("sqlite")
    try:
        common.seed(db, users=n + 2)
        port = common.free_port()
        env = common.server_env(**{SNAP_DIR_ENV: str(work),
                                   "IDLE_PROFILE_FRAMES": "0" if args.no_trace else str(args.frames)})
        srv = common.ServerProcess([sys.executable, "-m", "bench.idle_profile", "serve",
                                    "--database-url", db.url, "--port", str(port)], port, env,
                                   "/healthz", work / "server.log")
        try:
            async def run() -> None:
                from .lean import ws_connect
                from .loadgen import HOST, fanout_message_handler, tokens_for

                # One joined connection first (the room, imports, caches), as the benchmark.
                tok = tokens_for([1])[1]
                warm = await ws_connect(HOST, port, f"/realtime?token={tok}",
                                        on_message=fanout_message_handler("chat", False))
                warm.state["joined"] = asyncio.get_running_loop().create_future()
                warm.send_text(b'{"type":"join","topic":"webinar:1:messages","ref":"j"}')
                await asyncio.wait_for(warm.state["joined"], 60)
                await asyncio.sleep(1)
                before = await asyncio.to_thread(take, srv.pid, work, 0)
                clients = await connect(port, n, args.settle)
                after = await asyncio.to_thread(take, srv.pid, work, 1)
                report(before, after, n, args.top)
                for c in [*clients, warm]:
                    c.abort()

            asyncio.run(run())
        finally:
            srv.stop()
    finally:
        db.close()


if __name__ == "__main__":
    main()
