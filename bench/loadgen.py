"""The load generator: one process (pinned by the runner to its own core) that plays attendees and
senders against a server started by bench/run_all.py, and prints one JSON result line.

Usage: python -m bench.loadgen '<json config>'   (modes: fanout, idle, longpoll, poll, send,
storm, after, start, login — see the functions below; bench/run_all.py builds the configs).

Latency is send→delivered on one machine clock: every message's content carries the `time.time()`
taken just before its POST, and receivers subtract it from the time the frame arrived.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson

try:
    import uvloop
except ImportError:  # the generator still runs on the plain asyncio loop
    uvloop = None  # type: ignore[assignment]

from .common import (
    JWT_SECRET,
    LOAD_CPU,
    SERVER_CPU,
    core_busy_seconds,
    cpu_seconds,
    percentile,
    raise_nofile,
    rss_kib,
)
from .lean import BulkPoller, HttpConn, HttpError, WsClient, http_connect, ws_connect

HOST = "127.0.0.1"
# Connections opened concurrently while setting up a benchmark: well below the server's listen
# backlog (uvicorn: 2,048) so that set-up never waits on SYN retransmits.
CONNECT_CONCURRENCY = 256
# Our server closes a socket silent for 30 s; every client sends a heartbeat this often.
HEARTBEAT_EVERY_S = 10.0
HEARTBEAT = b'{"type":"heartbeat"}'
# Supabase Realtime's protocol (docs/supabase.md), fan-out `protocol: "supabase"`: attendees
# connect as supabase-js does (vsn 2.0.0, the user's token as the apikey), join the seed's way
# and heartbeat on the `phoenix` topic every 25 s (the server sends no heartbeats there).
SUPABASE_PATH = "/realtime/v1/websocket?apikey={token}&vsn=2.0.0"
SUPABASE_TOPIC = "realtime:webinar:1:messages"
SUPABASE_JOIN_REF = "1"
# How every `postgres_changes` push of the channel begins (no join_ref, no ref).
SUPABASE_PUSH = b'[null,null,"' + SUPABASE_TOPIC.encode() + b'","postgres_changes",'
SUPABASE_HEARTBEAT_EVERY_S = 25.0
SUPABASE_HEARTBEAT = b'[null,"hb","phoenix","heartbeat",{}]'
# An event's own seq (the message inside repeats it as `,"seq":N,"user"`, never after a `{`).
EVENT_SEQ = re.compile(rb'\{"seq":(\d+),"type"')
# The drain loops below poll counters that protocol callbacks update (no event to await, and one
# per client would cost more than the poll): hence their `noqa: ASYNC110`.


def now() -> float:
    return time.time()


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2)


def tokens_for(user_ids: list[int]) -> dict[int, str]:
    from webinar_chat.auth.tokens import TokenService

    service = TokenService(JWT_SECRET, 3 * 3600)  # outlives every run
    return {u: service.issue_access(u)[0] for u in user_ids}


def server_ports(cfg: dict[str, Any]) -> list[int]:
    """The servers under test: `ports` (the nodes of a cluster, in order) or the one `port`.
    Attendees and sender connections are spread over them by index (`k % len(ports)`), so that
    every node gets the same share of each group."""
    ports: list[int] = cfg.get("ports") or [cfg["port"]]
    return ports


def auth_header(token: str) -> bytes:
    return b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % token.encode()


async def gather_limited(n: int, make: Callable[[int], Awaitable[Any]], limit: int,
                         retries: int = 4) -> list[Any]:
    """Run make(0..n-1) with at most `limit` in flight; retry a failed one a few times."""
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        for attempt in range(retries + 1):
            async with sem:
                try:
                    return await make(i)
                except (OSError, ConnectionError, TimeoutError, HttpError):
                    if attempt == retries:
                        raise
            await asyncio.sleep(0.2 * (attempt + 1))

    return await asyncio.gather(*(one(i) for i in range(n)))


class Snapshot:
    def __init__(self, server_pid: int | list[int], delivered: int) -> None:
        pids = server_pid if isinstance(server_pid, list) else [server_pid]
        self.t = time.monotonic()
        self.wall = now()
        self.delivered = delivered
        # Per server process (the nodes of a cluster), and their sum: all share SERVER_CPU.
        self.server_cpus = [cpu_seconds(p) for p in pids]
        self.server_cpu = sum(self.server_cpus)
        self.gen_cpu = cpu_seconds(os.getpid())
        self.rss = sum(rss_kib(p) for p in pids)
        self.cores = core_busy_seconds()


def other_load(a: Snapshot, b: Snapshot, gen_cpu: float | None = None,
               load_core_extra: float = 0.0) -> dict[str, float]:
    """CPU used on each core by everything except the server (core 0) and the generator (core 1;
    plus `load_core_extra`, e.g. the cluster's Redis pinned there): other people's tests on this
    shared machine, and the kernel's loopback work. High values mean a noisy run."""
    window = b.t - a.t
    busy = [y - x for x, y in zip(a.cores, b.cores, strict=True)]
    server = b.server_cpu - a.server_cpu
    gen = (gen_cpu if gen_cpu is not None else b.gen_cpu - a.gen_cpu) + load_core_extra
    out = {"core0": round(max(0.0, busy[SERVER_CPU] - server) / window, 3)}
    if len(busy) > LOAD_CPU:
        out["core1"] = round(max(0.0, busy[LOAD_CPU] - gen) / window, 3)
    return out


# --- senders -------------------------------------------------------------------------------------

# A sender's keep-alive connection: (connection, request headers, user id, node index).
Slot = tuple[HttpConn, bytes, int, int]


class Sender:
    """Open-loop sender: message i leaves at t0 + i/rate on the first idle keep-alive connection
    to node i % nodes (so each of a cluster's nodes takes exactly its share of the POSTs, however
    fast it answers). Content `bench <send time> <i>` carries the send timestamp to the
    receivers."""

    def __init__(self, conns: list[Slot], kind: str) -> None:
        nodes = max(c[3] for c in conns) + 1
        self.idle: list[asyncio.Queue[Slot]] = [asyncio.Queue() for _ in range(nodes)]
        for c in conns:
            self.idle[c[3]].put_nowait(c)
        self.kind = kind  # "chat" (our API) | "socketio" (bench/socketio/server.js)
        # (send time, latency, status, seq, node it was sent through)
        self.sent: list[tuple[float, float, int, int, int]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.counter = 0
        self.unanswered = 0

    async def run(self, rate: float, duration: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        i = 0
        while True:
            target = t0 + i / rate
            # A server too slow to take the offered rate does not stretch the run: what was not
            # sent by the end is not sent (the achieved rate is reported).
            if target - t0 >= duration or loop.time() - t0 >= duration:
                break
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await self.idle[i % len(self.idle)].get()
            task = loop.create_task(self._one(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            i += 1

    async def wait(self, give_up_s: float = 30.0) -> None:
        """Wait for the POSTs in flight; after `give_up_s` give up on the rest (recorded with
        status -2: a server so overloaded that a send takes longer is a result in itself)."""
        deadline = time.monotonic() + give_up_s
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self.tasks):
            task.cancel()
            self.sent.append((0.0, give_up_s, -2, -1, -1))
        self.unanswered = len(self.tasks)

    async def _one(self, slot: Slot) -> None:
        conn, headers, user_id, node = slot
        self.counter += 1
        sent_at = now()
        content = f"bench {sent_at:.6f} {self.counter}"
        if self.kind == "chat":
            path = "/api/messages/create"
            body = orjson.dumps({"webinarId": 1, "content": content,
                                 "clientMsgId": str(uuid.uuid4())})
        else:
            path = "/send"
            body = orjson.dumps({"webinarId": 1, "content": content,
                                 "clientMsgId": str(uuid.uuid4()), "userId": user_id,
                                 "displayName": f"Attendee {user_id}"})
        try:
            status, reply = await conn.request("POST", path, body, headers)
        except HttpError:
            self.sent.append((sent_at, now() - sent_at, 0, -1, node))
            return  # a broken connection leaves the pool
        seq = -1
        if status == 200:
            seq = orjson.loads(reply)["message"]["seq"]
        self.sent.append((sent_at, now() - sent_at, status, seq, node))
        self.idle[node].put_nowait(slot)

    def idle_conns(self) -> list[Slot]:
        """Take every idle connection out of the pools."""
        out = []
        for q in self.idle:
            while not q.empty():
                out.append(q.get_nowait())
        return out

    def ok(self) -> list[tuple[float, float, int, int, int]]:
        return [s for s in self.sent if s[2] == 200]


async def make_sender(cfg: dict[str, Any], kind: str, n_conns: int) -> Sender:
    senders: list[int] = cfg["sender_ids"]
    toks = tokens_for(senders) if kind == "chat" else {}
    ports = server_ports(cfg)
    conns = []
    for i in range(n_conns):
        user = senders[i % len(senders)]
        node = i % len(ports)
        conn = await http_connect(HOST, ports[node])
        headers = auth_header(toks[user]) if kind == "chat" else b"Content-Type: application/json\r\n"
        conns.append((conn, headers, user, node))
    return Sender(conns, kind)


def sent_stats(sender: Sender, t0: float | None = None, t1: float | None = None) -> dict[str, Any]:
    rows = [s for s in sender.sent if (t0 is None or s[0] >= t0) and (t1 is None or s[0] < t1)]
    lat = [s[1] for s in rows if s[2] == 200]
    statuses = collections.Counter(s[2] for s in rows)
    return {"post_p50_ms": ms(lat, 50), "post_p99_ms": ms(lat, 99), "posts": len(rows),
            "post_statuses": {str(k): v for k, v in statuses.items()},
            "posts_unanswered": sender.unanswered}


# --- fan-out over WebSocket ------------------------------------------------------------------------

def supabase_join(token: str) -> bytes:
    """The seed's phx_join (as supabase-js sends it: vsn 2.0.0, ref = join_ref)."""
    config = {"broadcast": {"ack": False, "self": False}, "presence": {"key": "", "enabled": False},
              "postgres_changes": [{"event": "*", "schema": "public", "table": "messages",
                                    "filter": "webinar_id=eq.1"}], "private": False}
    return orjson.dumps([SUPABASE_JOIN_REF, SUPABASE_JOIN_REF, SUPABASE_TOPIC, "phx_join",
                         {"config": config, "access_token": token}])


def fanout_message_handler(kind: str, sampled: bool,
                           protocol: str = "ours") -> Callable[[WsClient, bytes, float], None]:
    """Frame handler of one attendee while it parses: join bookkeeping, then (sampled clients)
    seq + latency of every delivered event. `protocol` "supabase": Phoenix frames, one
    `postgres_changes` push per message."""

    def on_message(client: WsClient, payload: bytes, received: float) -> None:
        st = client.state
        if protocol == "supabase":
            if not payload.startswith(SUPABASE_PUSH):
                frame = orjson.loads(payload)  # replies and system pushes: rare
                fut = st["joined"]
                assert isinstance(fut, asyncio.Future)
                if frame[3] == "phx_reply" and frame[1] == SUPABASE_JOIN_REF and not fut.done():
                    if frame[4].get("status") == "ok":
                        fut.set_result(None)
                    else:
                        fut.set_exception(RuntimeError(f"phx_join refused: {frame[4]}"))
                elif frame[3] in ("phx_close", "phx_error") or (
                        frame[3] == "system" and frame[4].get("status") != "ok"):
                    errors = st.setdefault("errors", [])
                    assert isinstance(errors, list)
                    errors.append(payload[:200].decode())
                return
            if not sampled:
                client.count += payload.count(b'"INSERT"')
                return
            data = orjson.loads(payload)[4]["data"]
            if data["type"] != "INSERT":
                return
            events = [{"seq": data["record"]["seq"], "new": data["record"]}]
        elif kind == "socketio":
            if payload == b"2":
                client.send_text(b"3")
                return
            if payload.startswith(b"40"):
                fut = st["joined"]
                assert isinstance(fut, asyncio.Future)
                if not fut.done():
                    fut.set_result(None)
                return
            if payload.startswith(b"0{"):
                client.send_text(b"40")
                return
            if not payload.startswith(b"42"):
                return
            if not sampled:
                client.count += 1
                return
            events = [orjson.loads(payload[2:])[1]]
        else:
            head = payload[:24]
            if b'"changes"' not in head:
                if b'"joined"' in head:
                    fut = st["joined"]
                    assert isinstance(fut, asyncio.Future)
                    if not fut.done():
                        fut.set_result(None)
                elif b'"error"' in head:
                    st.setdefault("errors", []).append(payload[:200].decode())  # type: ignore[union-attr]
                return
            if not sampled:
                client.count += payload.count(b'"INSERT"')
                return
            events = orjson.loads(payload)["events"]
        st["frames"] = int(st.get("frames", 0)) + 1  # type: ignore[call-overload]
        seen: list[tuple[int, float, float]] = st.setdefault("seen", [])  # type: ignore[assignment]
        for ev in events:
            new = ev["new"]
            if new is None:
                continue
            seen.append((ev["seq"], float(new["content"].split(" ", 2)[1]), received))
            client.count += 1

    return on_message


async def open_attendees(cfg: dict[str, Any], kind: str, ids: list[int], sampled: bool,
                         lost: list[WsClient]) -> list[WsClient]:
    """Connect and join attendees `ids` (all parsing if `sampled`, else counting once joined);
    attendee i goes to node i % nodes (`server_ports`)."""
    ports = server_ports(cfg)
    toks = tokens_for(ids) if kind == "chat" else {}
    protocol = cfg.get("protocol", "ours")

    async def make(i: int) -> WsClient:
        handler = fanout_message_handler(kind, sampled, protocol)
        port = ports[i % len(ports)]
        if protocol == "supabase":
            client = await ws_connect(HOST, port, SUPABASE_PATH.format(token=toks[ids[i]]),
                                      on_message=handler, on_lost=lost.append)
        elif kind == "chat":
            path = f"/realtime?token={toks[ids[i]]}"
            client = await ws_connect(HOST, port, path, on_message=handler, on_lost=lost.append)
        else:
            client = await ws_connect(HOST, port, "/socket.io/?EIO=4&transport=websocket&webinar=1",
                                      on_message=handler, on_lost=lost.append, ping_payload=b"2")
        client.state["sampled"] = sampled
        client.state["node"] = i % len(ports)
        client.state["joined"] = asyncio.get_running_loop().create_future()
        if protocol == "supabase":
            client.send_text(supabase_join(toks[ids[i]]))
        elif kind == "chat":
            client.send_text(b'{"type":"join","topic":"webinar:1:messages","ref":"j"}')
        try:
            await asyncio.wait_for(client.state["joined"], 30)  # type: ignore[arg-type]
        except BaseException:
            client.abort()
            raise
        return client

    clients = await gather_limited(len(ids), make, CONNECT_CONCURRENCY)
    for c in clients:
        c.count = 0
        if not sampled:
            c.start_counting()
    return clients


async def heartbeats(clients: list[WsClient], kind: str, protocol: str = "ours") -> None:
    if kind != "chat":
        return  # Engine.IO: the server pings, clients answer (see the handlers)
    every, frame = ((SUPABASE_HEARTBEAT_EVERY_S, SUPABASE_HEARTBEAT) if protocol == "supabase"
                    else (HEARTBEAT_EVERY_S, HEARTBEAT))
    while True:
        await asyncio.sleep(every)
        for c in clients:
            c.send_text(frame)


def count_by_node(clients: list[WsClient], nodes: int) -> list[int]:
    counts = [0] * nodes
    for c in clients:
        counts[int(c.state["node"])] += c.count  # type: ignore[call-overload]
    return counts


def split_attendees(n: int, sample_every: int) -> tuple[list[int], list[int]]:
    """Attendee user ids 1..n: (latency sample, counted bulk)."""
    ids = list(range(1, n + 1))
    return ids[::sample_every], [u for k, u in enumerate(ids) if k % sample_every]


async def fanout_bulk(cfg: dict[str, Any]) -> dict[str, Any]:
    """The counting attendees of `fanout`, in their own process (so that their thousands of
    sockets never delay the latency sample's event loop). Talks to the parent over stdin/stdout:
    prints `ready`; answers `snap` with the delivered count; on `stop <expected>` waits for every
    client to reach `expected` (or a timeout) and prints the final result."""
    kind = cfg["kind"]
    lost: list[WsClient] = []
    t0 = time.monotonic()
    _, bulk_ids = split_attendees(cfg["attendees"], cfg["sample_every"])
    clients = await open_attendees(cfg, kind, bulk_ids, False, lost)
    hb = asyncio.create_task(heartbeats(clients, kind, cfg.get("protocol", "ours")))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    emit({"ready": True, "connected": len(clients), "connect_s": round(time.monotonic() - t0, 2)})
    while True:
        line = (await reader.readline()).decode().split()
        if not line:
            return {"error": "parent went away"}
        if line[0] == "snap":
            emit({"count": sum(c.count for c in clients), "gen_cpu": cpu_seconds(os.getpid()),
                  "wall": now(), "by_node": count_by_node(clients, len(server_ports(cfg)))})
        elif line[0] == "stop":
            expected = int(line[1])
            deadline = time.monotonic() + cfg.get("drain", 10)
            while time.monotonic() < deadline and any(  # noqa: ASYNC110
                    c.count < expected for c in clients if c not in lost):
                await asyncio.sleep(0.1)
            hb.cancel()
            counts = [c.count for c in clients]
            for c in clients:
                c.abort()
            return {"connected": len(clients), "complete": sum(1 for x in counts if x == expected),
                    "over": sum(1 for x in counts if x > expected), "min_count": min(counts),
                    "disconnected": len(lost), "gen_cpu": cpu_seconds(os.getpid())}


class Bulk:
    """The parent's handle on the `fanout_bulk` child process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, cfg: dict[str, Any]) -> tuple[Bulk, dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.loadgen", json.dumps({**cfg, "mode": "fanout_bulk"}),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        bulk = cls(proc)
        return bulk, await bulk.read()

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bulk load generator exited")
        out: dict[str, Any] = json.loads(line)
        return out

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read()


BUS_PUBLISHED = re.compile(rb"^webinar_chat_bus_(published|published_changes)_total ([0-9.e+]+)$",
                           re.M)


async def nodes_published(ports: list[int]) -> dict[str, float]:
    """The bus messages the nodes published (`webinar_chat_bus_published_total`) and the changes
    among them (`…_published_changes_total`), summed over the nodes' /metrics."""
    out = {"all": 0.0, "changes": 0.0}
    for port in ports:
        conn = await http_connect(HOST, port)
        try:
            status, body = await conn.request("GET", "/metrics")
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"GET /metrics on {port}: {status}")
        for name, value in BUS_PUBLISHED.findall(body):
            out["all" if name == b"published" else "changes"] += float(value)
    return out


class Backing:
    """What a fan-out run on PostgreSQL (and a cluster's Redis bus) costs outside the servers:
    changes committed (webinar 1's `last_seq`), the CPU of this database's backends and of all
    `postgres` processes, and Redis's PUBLISH calls, input bytes and CPU, read at both ends of the
    window (and of the whole send phase, for publishes per change). `subscriptions` counts what
    the nodes subscribed to."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.db: Any = None
        self.redis: Any = None
        self.backends: list[int] = []

    async def open(self) -> None:
        if self.cfg.get("database_url"):
            import asyncpg

            self.db = await asyncpg.connect(self.cfg["database_url"])
        if self.cfg.get("redis_url"):
            import redis.asyncio as aioredis

            self.redis = aioredis.Redis.from_url(self.cfg["redis_url"])

    async def read(self) -> dict[str, Any]:
        from .common import postgres_cpu_by_pid

        out: dict[str, Any] = {}
        if self.db is not None:
            if not self.backends:
                # The servers' pool connections to this database (not other people's tests on
                # the shared PostgreSQL, nor this reader): fixed once the run is warm.
                rows = await self.db.fetch("SELECT pid FROM pg_stat_activity WHERE datname = "
                                           "current_database() AND pid <> pg_backend_pid()")
                self.backends = [int(r["pid"]) for r in rows]
            out["changes"] = int(await self.db.fetchval(
                "SELECT last_seq FROM webinars WHERE id = 1"))
            out["db_backend_cpu"] = sum_cpu(self.backends)
            out["postgres_cpu"] = postgres_cpu_by_pid()
        if self.redis is not None:
            commands = await self.redis.info("commandstats")
            out["publishes"] = int(commands.get("cmdstat_publish", {}).get("calls", 0))
            # What the nodes say they published, in all and of it changes: the rest (presence
            # every PRESENCE_INTERVAL per node, access changes, probes) is not per change.
            published = await nodes_published(server_ports(self.cfg))
            out["other_publishes"] = published["all"] - published["changes"]
            stats = await self.redis.info("stats")
            out["redis_in_bytes"] = int(stats["total_net_input_bytes"])
            out["redis_cpu"] = sum_cpu([self.cfg["redis_pid"]])
        return out

    async def subscriptions(self) -> dict[str, Any]:
        """Every channel and pattern subscription on the bus's Redis, and the connections in
        pub/sub mode (CLIENT LIST flag P), whatever channel names the nodes chose."""
        if self.redis is None:
            return {}
        channels = await self.redis.pubsub_channels()
        counts = await self.redis.pubsub_numsub(*channels) if channels else []
        patterns = int(await self.redis.pubsub_numpat())
        clients = await self.redis.client_list()
        return {"channels": sorted(c.decode() for c in channels),
                "subscriptions": sum(int(n) for _, n in counts) + patterns,
                "pubsub_clients": sum(1 for c in clients if "P" in c.get("flags", ""))}

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
        if self.redis is not None:
            await self.redis.aclose()


def sum_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # a backend that went away: its CPU is lost to both readings alike
    return total


def backing_stats(a: dict[str, Any], b: dict[str, Any], start: dict[str, Any],
                  end: dict[str, Any], subs: dict[str, Any], window: float,
                  nodes: int) -> dict[str, Any]:
    """Per-change and per-second figures of `Backing.read`s at both ends of the window (`a`,
    `b`) and of the send phase (`start`, `end`); empty without a database."""
    if "changes" not in a:
        return {}
    changes = b["changes"] - a["changes"]
    pg = sum(t - a["postgres_cpu"][pid] for pid, t in b["postgres_cpu"].items()
             if pid in a["postgres_cpu"])
    out: dict[str, Any] = {
        "changes": changes, "changes_per_s": round(changes / window, 1),
        "db_backend_cpu_util": round((b["db_backend_cpu"] - a["db_backend_cpu"]) / window, 3),
        "postgres_cpu_util": round(pg / window, 3),
    }
    if "publishes" in a:
        # Per change over the whole send phase: a PUBLISH leaves a moment after its commit, so
        # the window's edges would cut a few pairs apart; before the first send and after the
        # last answer nothing is in flight.
        all_changes = end["changes"] - start["changes"]
        other = end["other_publishes"] - start["other_publishes"]
        all_publishes = end["publishes"] - start["publishes"] - other
        out.update({
            "publishes": b["publishes"] - a["publishes"],
            "changes_sent_phase": all_changes, "publishes_sent_phase": all_publishes,
            "other_publishes_sent_phase": other,
            "publishes_per_change": round(all_publishes / all_changes, 4) if all_changes else None,
            "bus_bytes_per_change": round((b["redis_in_bytes"] - a["redis_in_bytes"]) / changes)
            if changes else None,
            "redis_cpu_util": round((b["redis_cpu"] - a["redis_cpu"]) / window, 4),
            "bus_channels": subs["channels"], "subscriptions": subs["subscriptions"],
            "subscriptions_per_node": round(subs["subscriptions"] / nodes, 2),
            "pubsub_clients_per_node": round(subs["pubsub_clients"] / nodes, 2),
        })
    return out


async def fanout(cfg: dict[str, Any]) -> dict[str, Any]:
    """N attendees in one webinar, `rate` messages/s for warmup + window seconds. Every
    `sample_every`-th attendee (and the senders) live in this process and parse every frame for
    latency and completeness; the others only count, in a child process (`fanout_bulk`).

    With `ports` (and `server_pids`), the servers are the nodes of a cluster: attendees and POSTs
    are spread over them by index, and each sampled latency is tagged with whether the message
    was sent through the attendee's own node or another one. With `database_url` (and
    `redis_url`, `redis_pid`) the window also reads changes committed, PostgreSQL's and Redis's
    CPU, and the bus's PUBLISH calls and subscriptions (`Backing`)."""
    kind = cfg["kind"]
    n = cfg["attendees"]
    pids: list[int] = cfg.get("server_pids") or [cfg["server_pid"]]
    nodes = len(server_ports(cfg))
    lost: list[WsClient] = []
    bulk, ready = await Bulk.start(cfg)
    sample_ids, _ = split_attendees(n, cfg["sample_every"])
    sampled = await open_attendees(cfg, kind, sample_ids, True, lost)
    hb = asyncio.create_task(heartbeats(sampled, kind, cfg.get("protocol", "ours")))
    sender = await make_sender(cfg, kind, cfg.get("sender_conns", 8))
    backing = Backing(cfg)
    await backing.open()
    back_start = await backing.read()
    rss_before = sum(rss_kib(p) for p in pids)
    send_task = asyncio.create_task(sender.run(cfg["rate"], cfg["warmup"] + cfg["window"]))
    await asyncio.sleep(cfg["warmup"])
    snap_a = await bulk.ask("snap")
    a = Snapshot(pids, snap_a["count"] + sum(c.count for c in sampled))
    back_a = await backing.read()
    sampled_a = count_by_node(sampled, nodes)
    await asyncio.sleep(cfg["window"])
    snap_b = await bulk.ask("snap")
    b = Snapshot(pids, snap_b["count"] + sum(c.count for c in sampled))
    back_b = await backing.read()
    sampled_b = count_by_node(sampled, nodes)
    subs = await backing.subscriptions()
    await send_task
    await sender.wait()
    if backing.redis is not None:
        # A node answers the POST and then PUBLISHes from its queue: let the last ones leave
        # (far less than the 5 s of silence after which a node would publish a probe).
        await asyncio.sleep(0.5)
    back_end = await backing.read()
    await backing.close()
    expected = len(sender.ok())
    bulk_final = await bulk.ask(f"stop {expected}")
    await bulk.proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(c.count < expected for c in sampled if c not in lost):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    hb.cancel()
    # Completeness: every sampled client saw exactly the seqs the server acknowledged; in order
    # = each exactly once, in seq order (what a cluster could break: a node's own changes and
    # its peers', arriving over the bus, meet in one stream).
    sent_seqs = sorted(s[3] for s in sender.ok())
    node_of_seq = {s[3]: s[4] for s in sender.ok()}
    latencies: list[float] = []
    same: list[float] = []
    other: list[float] = []
    complete_sampled = 0
    in_order = 0
    frames = 0
    events_in_frames = 0
    for c in sampled:
        seen = c.state.get("seen", [])
        assert isinstance(seen, list)
        seqs = [s for s, _, _ in seen]
        if sorted(seqs) == sent_seqs:
            complete_sampled += 1
        if seqs == sent_seqs:
            in_order += 1
        frames += int(c.state.get("frames", 0))  # type: ignore[call-overload]
        events_in_frames += len(seen)
        for seq, t, r in seen:
            if a.wall <= t < b.wall:
                latencies.append(r - t)
                (same if node_of_seq.get(seq) == c.state["node"] else other).append(r - t)
    for c in sampled:
        c.abort()
    window = b.t - a.t
    delivered = b.delivered - a.delivered
    server_cpu = b.server_cpu - a.server_cpu
    gen_cpu = (b.gen_cpu - a.gen_cpu) + (snap_b["gen_cpu"] - snap_a["gen_cpu"])
    backing_out = backing_stats(back_a, back_b, back_start, back_end, subs, window, nodes)
    changes = backing_out.get("changes")
    redis_cpu = back_b.get("redis_cpu", 0.0) - back_a.get("redis_cpu", 0.0)
    by_node = [(snap_b["by_node"][k] + sampled_b[k]) - (snap_a["by_node"][k] + sampled_a[k])
               for k in range(nodes)]
    return {
        "kind": kind, "protocol": cfg.get("protocol", "ours"), "attendees": n, "nodes": nodes,
        "connected": ready["connected"] + len(sampled),
        "connect_s": ready["connect_s"],
        "rate_target": cfg["rate"], "window_s": round(window, 2),
        "sent": len(sender.sent), "sent_ok": expected,
        "send_rate": round(len([s for s in sender.sent if a.wall <= s[0] < b.wall]) / window, 1),
        "sent_by_node": [sum(1 for s in sender.ok() if s[4] == k) for k in range(nodes)],
        "delivered_per_s": round(delivered / window),
        "delivered_per_s_by_node": [round(d / window) for d in by_node],
        "server_cpu_util": round(server_cpu / window, 3),
        "server_cpu_util_by_node": [round((y - x) / window, 3)
                                    for x, y in zip(a.server_cpus, b.server_cpus, strict=True)],
        "delivered_per_core_s": round(delivered / server_cpu) if server_cpu > 0 else None,
        "server_cpu_per_change_us": round(server_cpu / changes * 1e6, 1) if changes else None,
        "server_cpu_per_change_by_node_us": [
            round((y - x) / changes * 1e6, 1)
            for x, y in zip(a.server_cpus, b.server_cpus, strict=True)] if changes else None,
        "gen_cpu_util": round(gen_cpu / window, 3),
        # Its two processes: the latency sample with the senders, and the counting bulk.
        "gen_cpu_util_split": [round((b.gen_cpu - a.gen_cpu) / window, 3),
                               round((snap_b["gen_cpu"] - snap_a["gen_cpu"]) / window, 3)],
        "p50_ms": ms(latencies, 50), "p99_ms": ms(latencies, 99), "max_ms": ms(latencies, 100),
        "p50_same_ms": ms(same, 50), "p99_same_ms": ms(same, 99),
        "p50_other_ms": ms(other, 50), "p99_other_ms": ms(other, 99),
        "max_other_ms": ms(other, 100),
        "latency_samples": len(latencies), "samples_same": len(same), "samples_other": len(other),
        "sampled_clients": len(sampled),
        "sampled_complete": complete_sampled, "sampled_in_order": in_order,
        "clients_complete": bulk_final["complete"] + complete_sampled,
        "disconnected": len(lost) + bulk_final["disconnected"],
        # phx_close / phx_error / system errors (supabase) or error frames (ours), sampled clients
        "sampled_errors": sum(len(e) for c in sampled
                              if isinstance(e := c.state.get("errors"), list)),
        "events_per_frame": round(events_in_frames / frames, 2) if frames else None,
        "server_rss_kib": b.rss, "server_rss_before_kib": rss_before,
        "other_load": other_load(a, b, gen_cpu, redis_cpu),
        **backing_out,
        **sent_stats(sender, a.wall, b.wall),
    }


# --- idle connections ----------------------------------------------------------------------------

async def idle(cfg: dict[str, Any]) -> dict[str, Any]:
    """N joined, silent attendees: the server's RSS growth per connection."""
    pid = cfg["server_pid"]
    lost: list[WsClient] = []
    # Warm the server (first room, imports, caches) so the baseline is not the cold process.
    warm = await open_attendees(cfg, "chat", [1], True, lost)
    await asyncio.sleep(1)
    rss0 = rss_kib(pid)
    t0 = time.monotonic()
    n = cfg["connections"]
    ids = list(range(2, n + 2))
    toks = tokens_for(ids)

    async def make(i: int) -> WsClient:
        client = await ws_connect(HOST, cfg["port"], f"/realtime?token={toks[ids[i]]}",
                                  on_message=fanout_message_handler("chat", False),
                                  on_lost=lost.append)
        client.state["joined"] = asyncio.get_running_loop().create_future()
        client.send_text(b'{"type":"join","topic":"webinar:1:messages","ref":"j"}')
        await asyncio.wait_for(client.state["joined"], 60)  # type: ignore[arg-type]
        return client

    clients = await gather_limited(n, make, CONNECT_CONCURRENCY)
    connect_s = time.monotonic() - t0
    hb = asyncio.create_task(heartbeats(clients, "chat"))
    # Settle past one server heartbeat round (5 s), so every connection has written once.
    await asyncio.sleep(cfg.get("settle", 6))
    cpu_a = cpu_seconds(pid)
    await asyncio.sleep(5)
    idle_cpu = (cpu_seconds(pid) - cpu_a) / 5
    rss1 = rss_kib(pid)
    hb.cancel()
    for c in clients + warm:
        c.abort()
    return {"connections": len(clients), "connect_s": round(connect_s, 2),
            "connects_per_s": round(len(clients) / connect_s),
            "rss_before_kib": rss0, "rss_after_kib": rss1,
            "kib_per_connection": round((rss1 - rss0) / len(clients), 2),
            "idle_cpu_util": round(idle_cpu, 3), "disconnected": len(lost)}


# --- HTTP long-poll fallback ---------------------------------------------------------------------

async def longpoll(cfg: dict[str, Any]) -> dict[str, Any]:
    """N attendees long-polling /changes (wait=20) while `rate` msgs/s are sent; whether every
    poller got every seq once, in order, and the latency of every message at a sample of them.

    Every `sample_every`-th poller parses each answer fully (latency of every message, gaps,
    duplicates); the others are `BulkPoller`s that check seqs with byte searches and re-poll from
    the protocol callback, so that one generator process can keep 10,000 pollers busy."""
    pid = cfg["server_pid"]
    n = cfg["pollers"]
    sample_every = cfg.get("sample_every", 50)
    ids = list(range(1, n + 1))
    toks = tokens_for(ids)
    stop = asyncio.Event()
    state: list[dict[str, Any]] = []
    errors: collections.Counter[str] = collections.Counter()
    requests = [0]
    loop = asyncio.get_running_loop()
    sampled = [i for i in range(n) if i % sample_every == 0]
    rest = [i for i in range(n) if i % sample_every]
    bulk_path = "/api/webinars/1/changes?wait=20&after_seq="

    async def make(k: int) -> HttpConn:
        return await http_connect(HOST, cfg["port"])

    async def make_bulk(k: int) -> BulkPoller:
        headers = auth_header(toks[ids[rest[k]]])
        _, poller = await loop.create_connection(
            lambda: BulkPoller(f"{HOST}:{cfg['port']}", bulk_path, headers, requests),
            HOST, cfg["port"])
        return poller

    conns = await gather_limited(len(sampled), make, CONNECT_CONCURRENCY)
    bulk = await gather_limited(len(rest), make_bulk, CONNECT_CONCURRENCY)

    async def poller(k: int) -> None:
        i = sampled[k]
        conn = conns[k]
        headers = auth_header(toks[ids[i]])
        st: dict[str, Any] = {"last": 0, "seen": [], "dups": 0, "gaps": 0, "first_done": False}
        state.append(st)
        while not stop.is_set():
            path = f"/api/webinars/1/changes?after_seq={st['last']}&wait=20"
            try:
                status, body = await conn.request("GET", path, b"", headers)
            except HttpError as exc:
                errors[str(exc)[:60]] += 1
                await asyncio.sleep(1)
                try:
                    conns[k] = conn = await http_connect(HOST, cfg["port"])
                except OSError:
                    pass
                continue
            received = now()
            requests[0] += 1
            st["first_done"] = True
            if status != 200:
                errors[f"status {status}"] += 1
                await asyncio.sleep(3)  # the client's fallback retry interval
                continue
            page = orjson.loads(body)
            for ch in page["changes"]:
                seq = ch["seq"]
                if seq <= st["last"]:
                    st["dups"] += 1
                    continue
                if seq != st["last"] + 1:
                    st["gaps"] += 1
                st["last"] = seq
                new = ch["new"]
                if new is not None:
                    st["seen"].append((float(new["content"].split(" ", 2)[1]), received,
                                       new["created_at"]))

    tasks = [asyncio.create_task(poller(k)) for k in range(len(sampled))]
    for bp in bulk:
        bp.poll()
    # Every poller is parked on its first long-poll before anything is sent.
    await asyncio.sleep(cfg.get("settle", 5))
    sender = await make_sender(cfg, "chat", cfg.get("sender_conns", 32))
    send_task = asyncio.create_task(sender.run(cfg["rate"], cfg["warmup"] + cfg["window"]))
    await asyncio.sleep(cfg["warmup"])
    a = Snapshot(pid, requests[0])
    await asyncio.sleep(cfg["window"])
    b = Snapshot(pid, requests[0])
    await send_task
    await sender.wait()
    final = max((s[3] for s in sender.ok()), default=0)
    deadline = time.monotonic() + cfg.get("drain", 15)
    while time.monotonic() < deadline and (any(st["last"] < final for st in state)  # noqa: ASYNC110
                                            or any(bp.last < final for bp in bulk)):
        await asyncio.sleep(0.2)
    stop.set()
    for c in conns:
        c.close()
    for bp in bulk:
        bp.stop()
        errors.update(bp.errors)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [r - t for st in state for t, r, _ in st["seen"] if a.wall <= t < b.wall]
    # created_at is stamped by the server when the POST is handled: commit → delivered, without
    # the time the POST itself waited (ms resolution).
    stamps: dict[str, float] = {}
    committed = []
    for st in state:
        for t, r, created in st["seen"]:
            if a.wall <= t < b.wall:
                c = stamps.get(created)
                if c is None:
                    c = stamps[created] = datetime.fromisoformat(created).timestamp()
                committed.append(r - c)
    window = b.t - a.t
    return {
        "commit_p50_ms": ms(committed, 50), "commit_p99_ms": ms(committed, 99),
        "pollers": n, "rate_target": cfg["rate"], "window_s": round(window, 2),
        "sent_ok": len(sender.ok()),
        "p50_ms": ms(latencies, 50), "p99_ms": ms(latencies, 99), "max_ms": ms(latencies, 100),
        "latency_samples": len(latencies),
        "complete_pollers": sum(1 for st in state if st["last"] >= final and not st["gaps"])
        + sum(1 for bp in bulk if bp.last >= final and not bp.gaps and not bp.dups),
        "latency_pollers": len(state),
        "gaps": sum(st["gaps"] for st in state) + sum(bp.gaps for bp in bulk),
        "dups": sum(st["dups"] for st in state) + sum(bp.dups for bp in bulk),
        "poll_req_per_s": round((b.delivered - a.delivered) / window),
        "server_cpu_util": round((b.server_cpu - a.server_cpu) / window, 3),
        "gen_cpu_util": round((b.gen_cpu - a.gen_cpu) / window, 3),
        "server_rss_kib": b.rss, "errors": dict(errors),
        **sent_stats(sender, a.wall, b.wall),
    }


# --- closed-loop HTTP request rate -----------------------------------------------------------------

async def closed_loop(conns: list[tuple[HttpConn, bytes]], method: str,
                      path: Callable[[int], str], body: Callable[[int], bytes] | None,
                      seconds: float, server_pid: int, expect: int = 200,
                      extra_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    lat: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    counter = [0]

    async def worker(conn: HttpConn, headers: bytes) -> None:
        while time.monotonic() < stop:
            counter[0] += 1
            k = counter[0]
            t = time.perf_counter()
            status, _ = await conn.request(method, path(k), body(k) if body else b"", headers)
            lat.append(time.perf_counter() - t)
            statuses[status] += 1

    a = Snapshot(server_pid, 0)
    ex0 = extra_cpu() if extra_cpu else 0.0
    await asyncio.gather(*(worker(c, h) for c, h in conns))
    b = Snapshot(server_pid, 0)
    elapsed = b.t - a.t
    cpu = b.server_cpu - a.server_cpu
    gen0 = a.gen_cpu
    ok = statuses.get(expect, 0)
    out = {"req_per_s": round(ok / elapsed), "p50_ms": ms(lat, 50), "p99_ms": ms(lat, 99),
           "server_cpu_util": round(cpu / elapsed, 3),
           "req_per_core_s": round(ok / cpu) if cpu > 0 else None,
           "gen_cpu_util": round((cpu_seconds(os.getpid()) - gen0) / elapsed, 3),
           "statuses": {str(k): v for k, v in statuses.items()}, "other_load": other_load(a, b)}
    if extra_cpu:
        db_cpu = extra_cpu() - ex0
        out["db_cpu_util"] = round(db_cpu / elapsed, 3)
        out["req_per_core_incl_db_s"] = round(ok / (cpu + db_cpu)) if cpu + db_cpu > 0 else None
    return out


async def poll(cfg: dict[str, Any]) -> dict[str, Any]:
    """Up-to-date poll (`after_seq` = head, no wait) vs GET /healthz of the same app, closed loop,
    alternating A/B/A/B so that drift on a noisy machine hits both."""
    pid = cfg["server_pid"]
    ids = list(range(1, cfg["connections"] + 1))
    toks = tokens_for(ids)
    sender = await make_sender(cfg, "chat", 4)
    await sender.run(100, cfg["history"] / 100)  # a ring to poll against
    await sender.wait()
    head = max(s[3] for s in sender.ok())
    conns = [(await http_connect(HOST, cfg["port"]), auth_header(toks[u])) for u in ids]
    poll_path = f"/api/webinars/1/changes?after_seq={head}"
    # Warm up both paths (access cache, room) before measuring.
    await closed_loop(conns, "GET", lambda k: poll_path, None, 1, pid)
    await closed_loop(conns, "GET", lambda k: "/healthz", None, 1, pid)
    rounds: list[dict[str, Any]] = []
    for _ in range(cfg["rounds"]):
        bare = await closed_loop(conns, "GET", lambda k: "/healthz", None, cfg["seconds"], pid)
        polled = await closed_loop(conns, "GET", lambda k: poll_path, None, cfg["seconds"], pid)
        rounds.append({"bare": bare, "poll": polled,
                       "ratio": round(polled["req_per_s"] / bare["req_per_s"], 3),
                       "ratio_per_core": round(polled["req_per_core_s"] / bare["req_per_core_s"], 3)})
    for c, _ in conns:
        c.close()
    best = sorted(rounds, key=lambda r: r["ratio_per_core"])[len(rounds) // 2]
    return {"connections": len(conns), "rounds": rounds,
            "bare_req_per_s": best["bare"]["req_per_s"], "poll_req_per_s": best["poll"]["req_per_s"],
            "bare_req_per_core_s": best["bare"]["req_per_core_s"],
            "poll_req_per_core_s": best["poll"]["req_per_core_s"],
            "ratio": best["ratio"], "ratio_per_core": best["ratio_per_core"],
            "other_load": best["poll"]["other_load"], "poll_p99_ms": best["poll"]["p99_ms"],
            "bare_p99_ms": best["bare"]["p99_ms"],
            "poll_server_cpu_util": best["poll"]["server_cpu_util"],
            "gen_cpu_util": max(best["poll"]["gen_cpu_util"], best["bare"]["gen_cpu_util"])}


# --- send (POST create) --------------------------------------------------------------------------

async def send(cfg: dict[str, Any]) -> dict[str, Any]:
    """POST create: latency at a fixed `rate` (open loop), then creates/s with `concurrency`
    requests in flight (closed loop) and the server's (and PostgreSQL's) CPU per create."""
    from .common import postgres_cpu_seconds

    pid = cfg["server_pid"]
    sender = await make_sender(cfg, "chat", cfg["concurrency"])
    await sender.run(cfg["rate"], 1.0)  # warm-up: connections, access paths, statement caches
    await sender.wait()
    sender.sent.clear()
    cpu0 = cpu_seconds(pid)
    t0 = now()
    await sender.run(cfg["rate"], cfg["seconds"])
    await sender.wait()
    open_loop = sent_stats(sender)
    open_loop["rate"] = round(len(sender.sent) / (now() - t0), 1)
    open_loop["server_cpu_util"] = round((cpu_seconds(pid) - cpu0) / (now() - t0), 3)
    conns = [(c, h) for c, h, _, _ in sender.idle_conns()]
    extra = postgres_cpu_seconds if cfg["db"] == "postgresql" else None
    closed = await closed_loop(
        conns, "POST", lambda k: "/api/messages/create",
        lambda k: orjson.dumps({"webinarId": 1, "content": f"bench {now():.6f} {k}",
                                "clientMsgId": str(uuid.uuid4())}),
        cfg["seconds"], pid, extra_cpu=extra)
    for c, _ in conns:
        c.close()
    return {"db": cfg["db"], "open_loop": open_loop, "closed_loop": closed,
            "p50_ms": open_loop["post_p50_ms"], "p99_ms": open_loop["post_p99_ms"],
            "creates_per_s": closed["req_per_s"], "creates_per_core_s": closed["req_per_core_s"],
            "creates_per_core_incl_db_s": closed.get("req_per_core_incl_db_s"),
            "closed_p99_ms": closed["p99_ms"]}


# --- reconnect storm -----------------------------------------------------------------------------

def storm_handler(client: WsClient, payload: bytes, received: float) -> None:
    st = client.state
    head = payload[:24]
    if b'"changes"' in head:
        last = st["last"]
        assert isinstance(last, int)
        for m in EVENT_SEQ.findall(payload):
            seq = int(m)
            if seq <= last:
                st["dups"] = int(st["dups"]) + 1  # type: ignore[call-overload]
                continue
            if seq != last + 1:
                st["gaps"] = int(st["gaps"]) + 1  # type: ignore[call-overload]
            last = seq
        st["last"] = last
        target = st.get("target")
        if target is not None and last >= target and "caught_up" not in st:  # type: ignore[operator]
            st["caught_up"] = received
    elif b'"joined"' in head:
        fut = st["joined"]
        assert isinstance(fut, asyncio.Future)
        if not fut.done():
            fut.set_result(received)
    elif b'"error"' in head:
        st["errors"] = int(st.get("errors", 0)) + 1  # type: ignore[call-overload]


async def storm(cfg: dict[str, Any]) -> dict[str, Any]:
    """N live attendees lose their sockets at once, miss `outage` messages, and all reconnect in the
    same instant with `last_seq`. Time until every one has every message up to the head."""
    pid = cfg["server_pid"]
    n = cfg["attendees"]
    ids = list(range(1, n + 1))
    toks = tokens_for(ids)
    states = [{"last": 0, "dups": 0, "gaps": 0} for _ in ids]

    async def connect(i: int, last_seq: int | None) -> WsClient:
        client = await ws_connect(HOST, cfg["port"], f"/realtime?token={toks[ids[i]]}",
                                  on_message=storm_handler)
        client.state = states[i]  # the same bookkeeping across reconnects
        states[i]["joined"] = asyncio.get_running_loop().create_future()
        join: dict[str, Any] = {"type": "join", "topic": "webinar:1:messages", "ref": "j"}
        if last_seq is not None:
            join["last_seq"] = last_seq
        client.send_text(orjson.dumps(join))
        await asyncio.wait_for(states[i]["joined"], 60)  # type: ignore[arg-type]
        return client

    clients = await gather_limited(n, lambda i: connect(i, None), CONNECT_CONCURRENCY)
    sender = await make_sender(cfg, "chat", 8)
    # Live phase: everybody is up to date before the outage.
    await sender.run(cfg["live_rate"], cfg["live_messages"] / cfg["live_rate"])
    await sender.wait()
    live_head = max(s[3] for s in sender.ok())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(s["last"] < live_head for s in states):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    behind_before = sum(1 for s in states if s["last"] < live_head)
    # Outage: every socket dies at once (a proxy restart, a network blip).
    for c in clients:
        c.abort()
    await asyncio.sleep(0.5)
    await sender.run(cfg["outage_rate"], cfg["outage_messages"] / cfg["outage_rate"])
    await sender.wait()
    head = max(s[3] for s in sender.ok())
    for s in states:
        s["target"] = head
        s.pop("caught_up", None)
    # The storm: all N reconnect in the same loop iteration, each with its last_seq; the chat goes
    # on meanwhile at `storm_rate`.
    cpu0 = cpu_seconds(pid)
    gen0 = cpu_seconds(os.getpid())
    t0 = now()
    send_task = asyncio.create_task(sender.run(cfg["storm_rate"], cfg["storm_send_s"]))
    results = await asyncio.gather(*(connect(i, states[i]["last"]) for i in range(n)),
                                   return_exceptions=True)
    connected = [r for r in results if isinstance(r, WsClient)]
    failures = collections.Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    deadline = time.monotonic() + cfg.get("timeout", 60)
    while time.monotonic() < deadline and any("caught_up" not in s for s in states):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    t_all = max((float(s["caught_up"]) for s in states if "caught_up" in s), default=float("nan"))  # type: ignore[arg-type]
    storm_cpu = cpu_seconds(pid) - cpu0
    storm_gen = cpu_seconds(os.getpid()) - gen0
    storm_wall = (t_all - t0) if t_all == t_all else float("nan")
    await send_task
    await sender.wait()
    final = max(s[3] for s in sender.ok())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(s["last"] < final for s in states):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    per_client = sorted(float(s["caught_up"]) - t0 for s in states if "caught_up" in s)  # type: ignore[arg-type]
    joined_at = sorted(float(s["joined"].result()) - t0 for s in states  # type: ignore[union-attr]
                       if isinstance(s.get("joined"), asyncio.Future) and s["joined"].done()  # type: ignore[union-attr]
                       and not s["joined"].cancelled() and s["joined"].exception() is None)  # type: ignore[union-attr]
    for c in connected:
        c.abort()
    return {
        "attendees": n, "missed_messages": head - live_head, "behind_before_outage": behind_before,
        "reconnected": len(connected), "failures": dict(failures),
        "all_caught_up_s": round(storm_wall, 3),
        "caught_up_p50_s": round(percentile(per_client, 50), 3),
        "caught_up_p99_s": round(percentile(per_client, 99), 3),
        "joined_p50_s": round(percentile(joined_at, 50), 3),
        "joined_max_s": round(percentile(joined_at, 100), 3),
        "caught_up": len(per_client),
        "complete": sum(1 for s in states if s["last"] == final and not s["gaps"] and not s["dups"]),
        "gaps": sum(int(s["gaps"]) for s in states), "dups": sum(int(s["dups"]) for s in states),  # type: ignore[call-overload]
        "server_cpu_s": round(storm_cpu, 2), "gen_cpu_util": round(storm_gen / storm_wall, 3)
        if storm_wall == storm_wall and storm_wall > 0 else None,
        "server_rss_kib": rss_kib(pid),
    }


# --- webinar start: everybody joins fresh within `spread_s` ----------------------------------------

# The history page a fresh client loads (web/chat-client.js `_loadHistory`: HISTORY_PAGE = 100).
START_HISTORY_PATH = "/api/webinars/1/messages?limit={limit}"
HEAD_SEQ = re.compile(rb'"head_seq":(\d+)')


def start_handler(client: WsClient, payload: bytes, received: float) -> None:
    """Until the attendee has its history page: the `joined` reply (time, head_seq) and errors;
    live changes are counted (one `"INSERT"` per delivered message), here and in COUNT mode."""
    st = client.state
    head = payload[:24]
    if b'"changes"' in head:
        client.count += payload.count(b'"INSERT"')
    elif b'"joined"' in head:
        fut = st["joined"]
        assert isinstance(fut, asyncio.Future)
        m = HEAD_SEQ.search(payload)
        st["head_seq"] = int(m.group(1)) if m else -1
        if not fut.done():
            fut.set_result(received)
    elif b'"error"' in head:
        st["errors"] = int(st.get("errors", 0)) + 1  # type: ignore[call-overload]
        fut = st["joined"]
        assert isinstance(fut, asyncio.Future)
        if not fut.done():
            fut.set_exception(RuntimeError(payload[:120].decode(errors="replace")))


def vm_hwm_kib(pid: int) -> int:
    """The process's peak RSS since it started (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)


async def start(cfg: dict[str, Any]) -> dict[str, Any]:
    """Webinar start: N attendees, tokens issued beforehand, open their WebSocket at instants
    spread uniformly over `spread_s` and join without `last_seq` (the server answers `joined`
    and then sends live changes only: docs/realtime.md), while fetching the history page over
    HTTP on a connection of their own, at the same time (what a fresh client needs to show the
    chat). An attendee is *joined* when it has both; from then on it only counts live messages
    in the raw stream (COUNT mode). A host POSTs at `rate` msgs/s from the first connect until
    `tail_s` after the last one. Complete = got every live message after its `head_seq`."""
    pid = cfg["server_pid"]
    n = cfg["attendees"]
    spread = float(cfg["spread_s"])
    timeout = float(cfg.get("join_timeout", 60))
    history_path = START_HISTORY_PATH.format(limit=cfg.get("history_limit", 100))
    ids = list(range(1, n + 1))
    toks = tokens_for(ids)  # issued beforehand, as the platform hands them out before the start
    sender = await make_sender(cfg, "chat", cfg.get("sender_conns", 4))
    loop = asyncio.get_running_loop()
    lost: list[WsClient] = []
    clients: list[WsClient] = []
    clients_by_index: dict[int, WsClient] = {}
    complete_clients: list[WsClient] = []  # joined with history
    # Per attendee: connect start, joined reply, history page, both (wall clock); failures.
    started: list[float] = [float("nan")] * n
    joined_at: list[float] = [float("nan")] * n
    history_at: list[float] = [float("nan")] * n
    done_at: list[float] = [float("nan")] * n
    history_sizes: list[int] = []
    failures: collections.Counter[str] = collections.Counter()

    async def history(i: int) -> None:
        conn = await http_connect(HOST, cfg["port"])
        try:
            status, body = await conn.request("GET", history_path, b"", auth_header(toks[ids[i]]))
        finally:
            conn.close()
        if status != 200:
            raise HttpError(f"history status {status}")
        history_at[i] = now()
        # Messages in the page: each has one `"client_msg_id":` (byte search, no JSON parse).
        history_sizes.append(body.count(b'"client_msg_id":'))

    async def websocket(i: int) -> None:
        client = await ws_connect(HOST, cfg["port"], f"/realtime?token={toks[ids[i]]}",
                                  on_message=start_handler, on_lost=lost.append)
        client.state["joined"] = loop.create_future()
        clients.append(client)
        clients_by_index[i] = client
        client.send_text(b'{"type":"join","topic":"webinar:1:messages","ref":"j"}')
        joined_at[i] = float(await client.state["joined"])  # type: ignore[arg-type]

    async def attendee(i: int) -> None:
        started[i] = now()
        ws = loop.create_task(websocket(i))
        # history_limit 0: no history page (what the WebSocket join alone costs).
        page = loop.create_task(history(i) if cfg.get("history_limit", 100) else
                                asyncio.sleep(0))
        try:
            await asyncio.wait_for(asyncio.gather(ws, page), timeout)
        except BaseException as exc:  # noqa: BLE001 - every failure is a result
            ws.cancel()
            page.cancel()
            what = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            if isinstance(exc, HttpError | RuntimeError | ConnectionError):
                what += f": {str(exc)[:60]}"
            failures[what] += 1
            return
        done_at[i] = max(joined_at[i], history_at[i]) if cfg.get("history_limit", 100) else \
            joined_at[i]
        complete_clients.append(clients_by_index[i])

    async def heartbeat_all() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            for c in clients:
                c.send_text(HEARTBEAT)

    async def switch_to_counting() -> None:
        # Joined attendees stop parsing (a pass per second is enough: until then they count
        # live messages in start_handler, the same way).
        while True:
            await asyncio.sleep(1.0)
            for c in clients:
                if c.mode != "count" and not c.want_count and "head_seq" in c.state:
                    c.start_counting()

    hb = loop.create_task(heartbeat_all())
    switcher = loop.create_task(switch_to_counting())
    cpu0, gen0, wall0 = cpu_seconds(pid), cpu_seconds(os.getpid()), now()
    cores0 = Snapshot(pid, 0)
    rss_peak = [rss_kib(pid)]

    async def sample_rss() -> None:
        while True:
            await asyncio.sleep(0.25)
            rss_peak[0] = max(rss_peak[0], rss_kib(pid))

    sampler = loop.create_task(sample_rss())

    async def progress() -> None:
        # On stderr (the runner shows it when the generator fails): where a run stands.
        while True:
            await asyncio.sleep(5)
            print(f"start: {now() - wall0:.0f} s: {sum(1 for x in started if x == x)} started, "
                  f"{sum(1 for x in done_at if x == x)} joined, failures {dict(failures)}, "
                  f"{len(sender.sent)} sent, {len(sender.tasks)} sends in flight, "
                  f"{sum(q.qsize() for q in sender.idle)} sender conns idle", file=sys.stderr,
                  flush=True)

    reporter = loop.create_task(progress())
    send_task = loop.create_task(sender.run(cfg["rate"], spread + cfg.get("tail_s", 10.0)))
    t0 = loop.time()
    tasks = []
    for i in range(n):
        delay = t0 + i * spread / n - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(attendee(i)))
    last_connect = now()
    await asyncio.gather(*tasks)
    wall1 = now()
    cores1 = Snapshot(pid, 0)
    storm_cpu, storm_gen = cpu_seconds(pid) - cpu0, cpu_seconds(os.getpid()) - gen0
    # A sender whose keep-alive connections all broke (the server reset them) has none left to
    # send on and would wait for one for ever: it is given up on and counted.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(send_task), max(1.0, spread + cfg.get(
            "tail_s", 10.0) + 5 - (now() - wall0)))
    sender_stalled = not send_task.done()
    send_task.cancel()
    await sender.wait()
    final = max((s[3] for s in sender.ok()), default=0)
    # Live completeness: every joined attendee gets every message after its head_seq.
    joined_clients = complete_clients
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(  # noqa: ASYNC110
            c.count < final - int(c.state["head_seq"]) for c in joined_clients  # type: ignore[call-overload]
            if c not in lost):
        await asyncio.sleep(0.1)
    hb.cancel()
    switcher.cancel()
    sampler.cancel()
    reporter.cancel()
    expected = [final - int(c.state["head_seq"]) for c in joined_clients]  # type: ignore[call-overload]
    got = [c.count for c in joined_clients]
    for c in clients:
        c.abort()
    ok = [k for k in range(n) if done_at[k] == done_at[k]]
    join_lat = [done_at[k] - started[k] for k in ok]
    ws_lat = [joined_at[k] - started[k] for k in ok]
    page_lat = [history_at[k] - started[k] for k in ok]
    last_done = max((done_at[k] for k in ok), default=float("nan"))
    window = wall1 - wall0
    sent_during = sent_stats(sender, wall0, wall1)
    hwm = vm_hwm_kib(pid)
    return {
        "attendees": n, "spread_s": spread, "rate_target": cfg["rate"],
        "history_limit": cfg.get("history_limit", 100),
        "joined": len(ok), "failures": dict(failures), "disconnected": len(lost),
        "after_last_connect_s": round(last_done - last_connect, 3),
        "connect_span_s": round(last_connect - wall0, 2),
        "join_p50_ms": ms(join_lat, 50), "join_p99_ms": ms(join_lat, 99),
        "join_max_ms": ms(join_lat, 100),
        "ws_joined_p50_ms": ms(ws_lat, 50), "ws_joined_p99_ms": ms(ws_lat, 99),
        "history_p50_ms": ms(page_lat, 50), "history_p99_ms": ms(page_lat, 99),
        "history_messages_min": min(history_sizes, default=0),
        "live_received": sum(got), "live_expected": sum(expected),
        "live_complete": sum(1 for g, e in zip(got, expected, strict=True) if g == e),
        "live_over": sum(1 for g, e in zip(got, expected, strict=True) if g > e),
        "window_s": round(window, 2),
        "server_cpu_s": round(storm_cpu, 2), "server_cpu_util": round(storm_cpu / window, 3),
        "server_rss_peak_kib": max(rss_peak[0], hwm), "server_rss_end_kib": rss_kib(pid),
        "gen_cpu_util": round(storm_gen / window, 3),
        "other_load": other_load(cores0, cores1, storm_gen),
        "sent_ok": len(sender.ok()), "sender_stalled": sender_stalled,
        "sender_conns_lost": sum(1 for x in sender.sent if x[2] == 0),
        **sent_during,
    }


# --- log-in: password hash vs external-platform tokens ---------------------------------------------

async def login(cfg: dict[str, Any]) -> dict[str, Any]:
    """Closed loops of `concurrency` requests in flight, one phase after another:

    - `password`: POST /api/auth/login, users 1..`users` round robin (argon2 verify, a refresh
      token stored);
    - with `external_secret`: GET `path` (/api/me) with HS256 tokens signed by the "platform":
      `external_first` a new subject per request (verified, user provisioned, registered for the
      webinars of its claim), `external_new_token` a new token of an already provisioned
      subject per request (verified, linked subject found, nothing to apply), `external_cached`
      one token per connection used again (the verified-token cache);
    - `own_cached`: the same GET with our own access tokens, the baseline of the same endpoint."""
    import jwt

    pid = cfg["server_pid"]
    users = cfg["users"]
    conc = cfg["concurrency"]
    seconds = cfg["seconds"]
    json_header = b"Content-Type: application/json\r\n"
    conns = [await http_connect(HOST, cfg["port"]) for _ in range(conc)]
    phases: dict[str, dict[str, Any]] = {}

    async def run_phase(name: str, request: Callable[[int], tuple[str, str, bytes, bytes]],
                        limit: int | None = None) -> None:
        stop = time.monotonic() + seconds
        lat: list[float] = []
        statuses: collections.Counter[int] = collections.Counter()
        counter = [0]

        async def worker(conn: HttpConn) -> None:
            while time.monotonic() < stop and (limit is None or counter[0] < limit):
                k = counter[0]
                counter[0] += 1
                method, path, body, headers = request(k)
                t = time.perf_counter()
                status, _ = await conn.request(method, path, body, headers)
                lat.append(time.perf_counter() - t)
                statuses[status] += 1

        a = Snapshot(pid, 0)
        await asyncio.gather(*(worker(c) for c in conns))
        b = Snapshot(pid, 0)
        elapsed = b.t - a.t
        cpu = b.server_cpu - a.server_cpu
        ok = statuses.get(200, 0)
        phases[name] = {"requests": sum(statuses.values()), "ok": ok,
                        "per_s": round(ok / elapsed, 1), "p50_ms": ms(lat, 50),
                        "p99_ms": ms(lat, 99), "server_cpu_util": round(cpu / elapsed, 3),
                        "per_core_s": round(ok / cpu, 1) if cpu > 0 else None,
                        "gen_cpu_util": round((b.gen_cpu - a.gen_cpu) / elapsed, 3),
                        "seconds": round(elapsed, 2),
                        "statuses": {str(k): v for k, v in statuses.items()},
                        "other_load": other_load(a, b)}

    def password(k: int) -> tuple[str, str, bytes, bytes]:
        u = k % users + 1
        return ("POST", "/api/auth/login",
                orjson.dumps({"email": f"u{u}@bench.test", "password": cfg["password"]}),
                json_header)

    # Warm-up (imports, the thread pool, statement caches), then the measured phase.
    await run_phase("warmup", password, limit=conc)
    await run_phase("password", password)
    path = cfg.get("path", "/api/me")
    own = tokens_for(list(range(1, conc + 1)))
    own_headers = [auth_header(own[u]) for u in range(1, conc + 1)]
    await run_phase("own_cached", lambda k: ("GET", path, b"", own_headers[k % conc]))
    secret = cfg.get("external_secret")
    if secret:
        exp = int(time.time()) + 3 * 3600
        iss = cfg.get("external_issuer", "https://platform.bench.test")

        def external(subject: int, nonce: int = 0) -> bytes:
            claims = {"sub": f"platform-user-{subject}", "exp": exp, "iat": int(time.time()),
                      "iss": iss, "name": f"Platform user {subject}",
                      "email": f"p{subject}@platform.bench.test", "webinars": [1],
                      "jti": f"{subject}-{nonce}"}
            return auth_header(jwt.encode(claims, secret, algorithm="HS256"))

        # Signed beforehand, so that the generator only sends (a pool big enough for the phase).
        pool = cfg.get("external_pool", 20_000)
        first = [external(s) for s in range(pool)]
        await run_phase("external_first", lambda k: ("GET", path, b"", first[k]), limit=pool)
        provisioned = phases["external_first"]["ok"]
        fresh = [external(k % max(1, provisioned), 1) for k in range(pool)]
        await run_phase("external_new_token", lambda k: ("GET", path, b"", fresh[k]), limit=pool)
        await run_phase("external_cached", lambda k: ("GET", path, b"", first[k % conc]))
        # Our own tokens again, on the server as it is now (after thousands of provisioned
        # users): whether a difference to `external_cached` is the token's or the moment's.
        await run_phase("own_cached_end", lambda k: ("GET", path, b"", own_headers[k % conc]))
    for c in conns:
        c.close()
    phases.pop("warmup")
    return {"users": users, "concurrency": conc, "seconds": seconds, "path": path,
            "phases": phases}


# --- `messages?after=` on a big table ------------------------------------------------------------

async def after(cfg: dict[str, Any]) -> dict[str, Any]:
    """The incremental read on a 1M-message table: query plan, store-level and HTTP latency."""
    from webinar_chat.store import open_store
    from webinar_chat.store.store import _MESSAGE_SELECT, history_sql

    rng = random.Random(7)
    webinar_rows = cfg["per_webinar"]
    # Random positions inside webinar 1; ids interleave across webinars (id = k·W + 1).
    ids = [rng.randrange(0, webinar_rows - 100) * cfg["webinars"] + 1 for _ in range(cfg["queries"])]
    store = await open_store(cfg["database_url"])
    # The store's query, and the plain `webinar_id = $1 … ORDER BY id` it replaced (on
    # PostgreSQL the planner may walk the primary key for that one: see store.history_sql).
    queries = {"current": history_sql(store.dialect, newer=True, include_hidden=False),
               "plain": _MESSAGE_SELECT + " WHERE m.webinar_id = $1 AND m.id > $2 AND NOT m.hidden"
               " ORDER BY m.id ASC LIMIT $3"}
    # The store's query takes the attendee reading as $4 (their own staff-only messages); the
    # benchmark reads as an attendee who wrote none.
    reader = {"current": (0,), "plain": ()}
    plans: dict[str, list[str]] = {}
    sql_lat: dict[str, list[float]] = {}
    try:
        for name, sql in queries.items():
            if store.dialect == "sqlite":
                rows = await store.db.fetch("EXPLAIN QUERY PLAN " + sql, 1, ids[0], 101,
                                            *reader[name])
                plans[name] = [str(r["detail"]) for r in rows]
            else:
                rows = await store.db.fetch(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, 1, ids[0], 101,
                    *reader[name])
                plans[name] = [str(next(iter(r.values()))) for r in rows]
            for x in ids[:20]:  # warm caches
                await store.db.fetch(sql, 1, x, 101, *reader[name])
            sql_lat[name] = []
            for x in ids:
                t = time.perf_counter()
                await store.db.fetch(sql, 1, x, 101, *reader[name])
                sql_lat[name].append(time.perf_counter() - t)
        lat = []
        for x in ids:
            t = time.perf_counter()
            page = await store.list_messages(1, after=x, limit=100, include_hidden=False)
            lat.append(time.perf_counter() - t)
            assert len(page.messages) == 100
        # The quiet webinar: `after=` one of its last ~100 messages, so fewer than `limit` newer
        # rows exist in it and only an index on (webinar_id, id) can stop early.
        quiet_lat: list[float] = []
        quiet_plan: list[str] = []
        qw = cfg.get("quiet_webinar")
        if qw:
            quiet_ids = list(range(cfg["quiet_every"], cfg["messages"] + 1, cfg["quiet_every"]))
            tail = quiet_ids[-100:]
            sql = queries["current"]
            if store.dialect == "sqlite":
                rows = await store.db.fetch("EXPLAIN QUERY PLAN " + sql, qw, tail[0], 101,
                                            *reader["current"])
                quiet_plan = [str(r["detail"]) for r in rows]
            else:
                rows = await store.db.fetch(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, qw, tail[0], 101,
                    *reader["current"])
                quiet_plan = [str(next(iter(r.values()))) for r in rows]
            for _ in range(max(1, cfg["queries"] // 5)):
                x = rng.choice(tail)
                t = time.perf_counter()
                await store.list_messages(qw, after=x, limit=100, include_hidden=False)
                quiet_lat.append(time.perf_counter() - t)
    finally:
        await store.close()
    plan = plans["current"]
    token = tokens_for([1])[1]
    conn = await http_connect(HOST, cfg["port"])
    headers = auth_header(token)
    http_lat = []
    for x in ids[:20] + ids:
        t = time.perf_counter()
        status, _ = await conn.request("GET", f"/api/webinars/1/messages?after={x}&limit=100", b"",
                                       headers)
        http_lat.append(time.perf_counter() - t)
        assert status == 200, status
    http_lat = http_lat[20:]
    conn.close()
    index = "messages_webinar_id_id"
    return {"db": store.dialect, "plan": plan, "plain_plan": plans["plain"],
            "uses_index": any(index in line for line in plan),
            "plain_uses_index": any(index in line for line in plans["plain"]),
            "sql_p99_ms": ms(sql_lat["current"], 99),
            "quiet_plan": quiet_plan, "quiet_p50_ms": ms(quiet_lat, 50),
            "quiet_p99_ms": ms(quiet_lat, 99),
            "quiet_uses_index": any(index in line for line in quiet_plan),
            "sql_p50_ms": ms(sql_lat["current"], 50),
            "plain_sql_p50_ms": ms(sql_lat["plain"], 50),
            "plain_sql_p99_ms": ms(sql_lat["plain"], 99),
            "store_p50_ms": ms(lat, 50), "store_p99_ms": ms(lat, 99),
            "http_p50_ms": ms(http_lat, 50), "http_p99_ms": ms(http_lat, 99),
            "queries": len(ids)}


MODES: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout, "idle": idle, "longpoll": longpoll, "poll": poll, "send": send,
    "storm": storm, "after": after, "fanout_bulk": fanout_bulk,
    "start": start, "login": login,
}


def main() -> None:
    raise_nofile()
    cfg = json.loads(sys.argv[1])
    # uvloop, as the server under test runs: the asyncio loop's Python-level selector costs the
    # generator ~3× more per socket read, and with thousands of attendees per process its core
    # saturated first (generator CPU ≥ 0.9 at 5,000 attendees), setting the pace of the runs.
    result = uvloop.run(MODES[cfg["mode"]](cfg)) if uvloop is not None and not cfg.get(
        "asyncio_loop") else asyncio.run(MODES[cfg["mode"]](cfg))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
