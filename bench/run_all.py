"""Run every benchmark of docs/performance-targets.md and write docs/benchmarks.md + plots.

    .venv/bin/python -m bench.run_all            # full: 3 runs of each, ~25 min
    .venv/bin/python -m bench.run_all --quick    # smoke check: 1 short run of each, ~3 min
    .venv/bin/python -m bench.run_all --only fanout,idle [--runs N]   # merged into latest.json
    .venv/bin/python -m bench.run_all --only fanout_supabase   # ours vs Supabase's protocol
    .venv/bin/python -m bench.run_all --report-only   # re-render from bench/results/latest.json

Each benchmark starts its server under test (`webinar-chat serve`, or the Node Socket.IO server)
pinned to core 0 on a fresh database, runs the load generator (bench/loadgen.py) pinned to core 1,
and keeps the JSON result (the cluster benchmark: two servers sharing core 0 and a private Redis;
bench/README.md). Raw results go to bench/results/{latest,quick}.json; `--only` merges into them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import common
from .bench_export import bench_export
from .common import LOAD_CPU, ROOT, chat_server, new_database, run_loadgen, seed, socketio_server

RESULTS = ROOT / "bench" / "results"

# Sizes and durations. Full runs give medians of RUNS; quick runs are one short pass that checks
# that every benchmark still works (numbers from --quick are not results).
FULL = {
    "runs": 3,
    # Proposed server changes (bench/variants/<part>.patch on a copy of src/, <part>.txt extra
    # packages; "a+b" = both), measured side by side with the current code in the same run. The
    # ones of bench/findings.md are merged (37fee60); --variants measures new ones.
    "variants": {},
    # The target's attendee counts (a middle point would cost ~3 more minutes per full run).
    "fanout_attendees": [1000, 5000],
    # Long enough for ~1,000 sent messages per window at 100 msgs/s; warm-up covers the first
    # ticks, the access checks of the joins and the allocator growing to its working set.
    "fanout_warmup": 3.0, "fanout_window": 10.0,
    "idle_connections": 10_000,
    "send_seconds": 8.0,
    "longpoll_pollers": 10_000, "longpoll_window": 15.0,
    # Below the target's 10,000: where one process still meets the 1 s target.
    "longpoll_scale": [500, 1000, 2000],
    "poll_seconds": 4.0, "poll_rounds": 3,
    "after_messages": 1_000_000, "after_queries": 500,
    "storm_attendees": 10_000,
    # Webinar start (bench/bench_start.py): everybody joins fresh within 30 s; log-in phases.
    "start_attendees": 10_000, "start_spread_s": 30, "login_seconds": 15,
    # Two `serve` processes + Redis beside one process, on PostgreSQL: the fan-out's workload
    # (rate, warm-up, window) at the target's 5,000 attendees.
    "cluster_attendees": 5000,
    # Transcript export (bench/bench_export.py): the same webinar sizes 10× apart, so that the
    # peak RSS growth of the bigger ÷ the smaller shows whether memory grows with the webinar.
    "export_messages": [100_000, 1_000_000], "export_kinds": ["sqlite", "postgresql"],
}
QUICK = {
    "runs": 1,
    "variants": {},
    "fanout_attendees": [1000, 5000],
    "fanout_warmup": 2.0, "fanout_window": 4.0,
    "idle_connections": 2000,
    "send_seconds": 3.0,
    "longpoll_pollers": 2000, "longpoll_window": 5.0,
    "longpoll_scale": [500],
    "poll_seconds": 2.0, "poll_rounds": 1,
    "after_messages": 100_000, "after_queries": 200,
    "storm_attendees": 1000,
    "start_attendees": 1000, "start_spread_s": 5, "login_seconds": 4,
    "cluster_attendees": 5000,
    "export_messages": [10_000, 100_000], "export_kinds": ["sqlite"],
}
# The target workload: 100 chat messages/s into one webinar (docs/performance-targets.md).
FANOUT_RATE = 100
# Every 50th attendee parses every frame for latency and completeness; the others only count.
SAMPLE_EVERY = 50
SENDERS = 8
# Keep-alive connections the senders may use at once: enough that a server answering a POST in
# ~300 ms under load still gets the offered 100 msgs/s (the achieved rate is reported).
SENDER_CONNS = 32
# Long-poll fallback: a busy chat (10 msgs/s). Every change wakes every poller, so the cost is
# per wake-up; a faster chat only puts more events in each answer.
LONGPOLL_RATE = 10
# Send benchmark: the target's rate, and enough requests in flight to saturate one core.
SEND_RATE = 200
SEND_CONCURRENCY = 16
POLL_CONNECTIONS = 32
AFTER_WEBINARS = 10  # 1M messages over 10 webinars, ids interleaved: 100k in the queried one
# Plus a quiet webinar: every 5,000th message (200 of 1M), spread over the whole table. Asking it
# for `after=` one of its last messages is where a plan that walks the primary key hurts.
QUIET_EVERY = 5000
STORM = {"live_rate": 50, "live_messages": 50,
         # 2 s of a busy chat missed while the sockets were down (realistic proxy/LB restart).
         "outage_rate": 100, "outage_messages": 200,
         # The chat goes on during the storm (slowly), so live delivery and replay overlap.
         "storm_rate": 10, "storm_send_s": 5.0}


def variants(p: dict[str, Any], bench: str) -> list[str | None]:
    """The current code (None), then each proposed variant configured for this benchmark."""
    return [None, *p["variants"].get(bench, [])]


def tag(variant: str | None) -> str:
    return f" +{variant}" if variant else ""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- benchmarks ----------------------------------------------------------------------------------

def measure(work: Path, config: dict[str, Any], *, users: int, run: int, kind: str = "sqlite",
            variant: str | None = None) -> dict[str, Any]:
    """One load-generator run against its own server on a fresh database seeded with `users`
    (the current code, or the patched copy `variant`); the result tagged with run and variant."""
    db = new_database(kind)
    try:
        seed(db, users=users)
        with chat_server(db, work, variant) as srv:
            r = run_loadgen({**config, "port": srv.port, "server_pid": srv.pid})
    finally:
        db.close()
    r["run"] = run
    r["variant"] = variant
    return r


def fanout_config(p: dict[str, Any], n: int) -> dict[str, Any]:
    return {"mode": "fanout", "attendees": n, "rate": FANOUT_RATE,
            "warmup": p["fanout_warmup"], "window": p["fanout_window"],
            "sample_every": SAMPLE_EVERY, "sender_conns": SENDER_CONNS,
            "sender_ids": list(range(n + 1, n + 1 + SENDERS))}


def bench_fanout(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Ours (current code, then each proposed variant) and Socket.IO, side by side in each run."""
    common.ensure_socketio_installed()
    out = []
    for run in range(p["runs"]):
        for n in p["fanout_attendees"]:
            base = fanout_config(p, n)
            for variant in variants(p, "fanout"):
                r = measure(work, {**base, "kind": "chat"}, users=n + SENDERS, run=run,
                            variant=variant)
                out.append(r)
                log(f"fanout ours{tag(variant)} n={n}: {brief(r)}")
            with socketio_server(work) as srv:
                r = run_loadgen({**base, "kind": "socketio", "port": srv.port, "server_pid": srv.pid})
                r["run"] = run
                out.append(r)
                log(f"fanout socket.io n={n}: {brief(r)}")
    return out


def bench_send_fanout(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Send while fanning out: the fan-out workload at the largest attendee count (5,000
    WebSocket attendees, 100 msgs/s) on SQLite and on PostgreSQL side by side in each run, each
    on a fresh server and database, the order alternating from run to run. The figure is the
    senders' POST create latency (the fan-out rows report it too, on SQLite only)."""
    n = max(p["fanout_attendees"])
    kinds = ["sqlite"] + (["postgresql"] if common.pg_available() else [])
    out = []
    for run in range(p["runs"]):
        k = run % len(kinds)
        for kind in kinds[k:] + kinds[:k]:
            for variant in variants(p, "send_fanout"):
                r = measure(work, {**fanout_config(p, n), "kind": "chat"}, users=n + SENDERS,
                            run=run, kind=kind, variant=variant)
                r["db"] = kind
                out.append(r)
                log(f"send_fanout {kind}{tag(variant)} n={n}: post p50={r['post_p50_ms']} "
                    f"p99={r['post_p99_ms']} send rate={r['send_rate']}, {brief(r)}")
    return out


# The fan-out benchmark's workload over our protocol (`/realtime`) and over Supabase Realtime's
# (`/realtime/v1/websocket`, docs/supabase.md: one push per message, one WebSocket frame each).
FANOUT_PROTOCOLS = ["ours", "supabase"]


def bench_fanout_supabase(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """The fan-out workload (same attendee counts, rate, warm-up, window and sample) with the
    attendees on our protocol and on Supabase Realtime's, side by side in each run, each on its
    own fresh server and database; the order alternates from run to run, so that a drift of the
    shared machine does not always favour the same protocol. With --variants fanout_supabase=…
    each variant is measured on both protocols too."""
    out = []
    for run in range(p["runs"]):
        k = run % len(FANOUT_PROTOCOLS)
        for n in p["fanout_attendees"]:
            base = fanout_config(p, n)
            for variant in variants(p, "fanout_supabase"):
                rows = {}
                for protocol in FANOUT_PROTOCOLS[k:] + FANOUT_PROTOCOLS[:k]:
                    r = measure(work, {**base, "kind": "chat", "protocol": protocol},
                                users=n + SENDERS, run=run, variant=variant)
                    rows[protocol] = r
                    out.append(r)
                    log(f"fanout_supabase {protocol}{tag(variant)} n={n}: {brief(r)}, "
                        f"sampled errors={r['sampled_errors']}")
                ours, theirs = rows["ours"]["delivered_per_core_s"], rows["supabase"][
                    "delivered_per_core_s"]
                log(f"fanout_supabase{tag(variant)} n={n}: supabase/ours per core = "
                    f"{theirs / ours if ours and theirs else float('nan'):.3f}")
    return out


# The cluster benchmark's set-ups: (name, server processes, Redis bus). The middle one is one
# process publishing every change to Redis and reading back (and dropping) its own echo: what the
# bus itself costs, apart from what splitting the work over two processes costs.
CLUSTER_SETUPS = [("one", 1, False), ("one+redis", 1, True), ("two", 2, True)]


def bench_cluster(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Two `serve` processes on one PostgreSQL database sharing a private Redis bus, beside one
    process on the same workload and database kind (without a bus, and with one), in each run:
    the fan-out benchmark's single-process rows are on SQLite, so they cannot be the baseline of
    a cluster on PostgreSQL. The order rotates from run to run, so that a drift of the shared
    machine does not always favour the same set-up. With --variants cluster=…, each variant
    runs all three set-ups too, in the same run, and is compared with its own one-process rows."""
    if not common.pg_available():
        raise RuntimeError(f"the cluster benchmark needs PostgreSQL at {common.PG_ADMIN_URL}")
    out = []
    n = p["cluster_attendees"]
    base = {"mode": "fanout", "kind": "chat", "attendees": n, "rate": FANOUT_RATE,
            "warmup": p["fanout_warmup"], "window": p["fanout_window"],
            "sample_every": SAMPLE_EVERY, "sender_conns": SENDER_CONNS,
            "sender_ids": list(range(n + 1, n + 1 + SENDERS))}
    for run in range(p["runs"]):
        k = run % len(CLUSTER_SETUPS)
        for variant in variants(p, "cluster"):
            rows = {}
            for setup, nodes, bus in CLUSTER_SETUPS[k:] + CLUSTER_SETUPS[:k]:
                r = cluster_measure(work, base, nodes=nodes, bus=bus, run=run, variant=variant)
                r["setup"] = setup
                r["variant"] = variant
                rows[setup] = r
                log(f"cluster{tag(variant)} {setup} n={n}: {brief(r)}, publishes/change="
                    f"{r.get('publishes_per_change')}, "
                    f"CPU/change={r['server_cpu_per_change_us']} µs")
            # Each variant against its own one-process rows of the same run.
            compare_cluster(rows["one"], rows["one+redis"], rows["two"])
            out += list(rows.values())
            log_cluster(rows["two"], n, variant)
    return out


def log_cluster(two: dict[str, Any], n: int, variant: str | None) -> None:
    """The run's cluster figures, one line."""
    log(f"cluster{tag(variant)}: per core two/one = {two['ratio_per_core']}, p99 other/same = "
        f"{two['p99_other_ms']}/{two['p99_same_ms']} ms, publishes/change = "
        f"{two.get('publishes_per_change')}, subscriptions/node = "
        f"{two.get('subscriptions_per_node')}, CPU/change beyond one process = "
        f"{two['extra_cpu_per_change_us']} µs (bus {two['bus_cpu_per_change_us']} µs), "
        f"in order = {two['sampled_in_order']}/{two['sampled_clients']}, complete = "
        f"{two['clients_complete']}/{n}")


def cluster_measure(work: Path, config: dict[str, Any], *, nodes: int, bus: bool,
                    run: int, variant: str | None = None) -> dict[str, Any]:
    """`nodes` servers on a fresh PostgreSQL database; with `bus`, each is a node on a private
    Redis (its own port and channel), and attendees and POSTs are spread over the nodes. With
    `variant`, every server runs that patched copy of the code."""
    db = new_database("postgresql")
    try:
        seed(db, users=config["attendees"] + SENDERS)
        with contextlib.ExitStack() as stack:
            env: dict[str, str] = {}
            extra: dict[str, Any] = {}
            if bus:
                redis = stack.enter_context(common.redis_server(work))
                env = {"BUS_URL": redis.url, "BUS_CHANNEL": f"bench-{os.getpid()}-{run}"}
                extra = {"redis_url": redis.url, "redis_pid": redis.pid}
            # Every node on SERVER_CPU (ServerProcess): the nodes share one core, so "per server
            # core" is exact and compares with one process alone on that core (bench/README.md).
            # /readyz: database reachable and the node's bus subscription confirmed before any
            # attendee connects.
            servers = [stack.enter_context(chat_server(db, work, variant, health="/readyz",
                                                       **env))
                       for _ in range(nodes)]
            r = run_loadgen({**config, **extra, "database_url": db.url,
                             "ports": [s.port for s in servers], "port": servers[0].port,
                             "server_pids": [s.pid for s in servers],
                             "server_pid": servers[0].pid})
    finally:
        db.close()
    r["run"] = run
    r["variant"] = None
    r["bus"] = bus
    return r


def compare_cluster(one: dict[str, Any], one_bus: dict[str, Any], two: dict[str, Any]) -> None:
    """The same run's one-process figures, and the differences against them, into the cluster
    row. Server CPU per change = both nodes' CPU / changes committed in the window:

    - `extra_cpu_per_change_us`: two nodes − one process (no bus), all of it;
    - `bus_cpu_per_change_us`: one process with the Redis bus − without: PUBLISH of the change
      (pipelined) and reading and decoding it back (its own echo, dropped by node id after the
      decode). In the cluster each change is published by the node that committed it and received
      and decoded once by the other: this is that pair, so an upper bound on the receiving node's
      bus cost;
    - `split_cpu_per_change_us`: the rest (two nodes − one process with the bus): what a second
      process repeats for every change (its room's ticks, building and encoding the frames for its
      own sockets), its fixed costs (heartbeats, the 5 s safety poll) and two processes taking
      turns on one core;
    - `extra_cpu_per_change_by_node_us`: each node's CPU per change − half the one process's
      (each node has half the attendees and half the POSTs)."""
    def ratio(key: str) -> float | None:
        if one.get(key) and two.get(key):
            return round(float(two[key]) / float(one[key]), 3)
        return None

    def diff(x: float | None, y: float | None) -> float | None:
        return round(x - y, 1) if x is not None and y is not None else None

    single = one.get("server_cpu_per_change_us")
    with_bus = one_bus.get("server_cpu_per_change_us")
    mine = two.get("server_cpu_per_change_us")
    two["one_process"] = {k: one.get(k) for k in (
        "delivered_per_s", "delivered_per_core_s", "server_cpu_util", "server_cpu_per_change_us",
        "p50_ms", "p99_ms", "changes", "clients_complete", "sampled_in_order")}
    two["ratio_per_core"] = ratio("delivered_per_core_s")
    two["extra_cpu_per_change_us"] = diff(mine, single)
    two["bus_cpu_per_change_us"] = diff(with_bus, single)
    two["split_cpu_per_change_us"] = diff(mine, with_bus)
    two["extra_cpu_share"] = round(mine / single - 1, 3) if single and mine else None
    by_node = two.get("server_cpu_per_change_by_node_us")
    two["extra_cpu_per_change_by_node_us"] = (
        [round(x - single / 2, 1) for x in by_node] if single and by_node else None)


def brief(r: dict[str, Any]) -> str:
    keys = ("delivered_per_s", "delivered_per_core_s", "server_cpu_util", "p50_ms", "p99_ms",
            "gen_cpu_util", "clients_complete", "disconnected", "send_rate", "events_per_frame")
    return ", ".join(f"{k}={r.get(k)}" for k in keys)


def bench_idle(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    n = p["idle_connections"]
    for run in range(p["runs"]):
        for variant in variants(p, "idle"):
            r = measure(work, {"mode": "idle", "connections": n}, users=n + 2, run=run,
                        variant=variant)
            out.append(r)
            log(f"idle{tag(variant)}: {r}")
    return out


def bench_send(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    kinds = ["sqlite"] + (["postgresql"] if common.pg_available() else [])
    for run in range(p["runs"]):
        for kind in kinds:
            for variant in variants(p, "send"):
                r = measure(work, {"mode": "send", "db": kind, "rate": SEND_RATE,
                                   "concurrency": SEND_CONCURRENCY, "seconds": p["send_seconds"],
                                   "sender_ids": list(range(1, SEND_CONCURRENCY + 1))},
                            users=SEND_CONCURRENCY, run=run, kind=kind, variant=variant)
                out.append(r)
                log(f"send {kind}{tag(variant)}: p50={r['p50_ms']} p99={r['p99_ms']} "
                    f"creates/s={r['creates_per_s']} per core={r['creates_per_core_s']}")
    return out


def bench_longpoll(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    n = p["longpoll_pollers"]
    for run in range(p["runs"]):
        for variant in variants(p, "longpoll"):
            r = measure(work, longpoll_config(p, n), users=n + 4, run=run, variant=variant)
            out.append(r)
            log(f"longpoll{tag(variant)}: p50={r['p50_ms']} p99={r['p99_ms']} "
                f"commit p99={r['commit_p99_ms']} complete={r['complete_pollers']}/{n} "
                f"req/s={r['poll_req_per_s']} cpu={r['server_cpu_util']} "
                f"gen={r['gen_cpu_util']} post p99={r['post_p99_ms']} errors={r['errors']}")
    return out


def longpoll_config(p: dict[str, Any], n: int) -> dict[str, Any]:
    return {"mode": "longpoll", "pollers": n, "rate": LONGPOLL_RATE, "warmup": 3.0,
            "window": p["longpoll_window"], "sender_ids": list(range(n + 1, n + 5))}


def bench_longpoll_scale(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """The long-poll benchmark at smaller sizes (current code): how delivery latency grows with
    the number of pollers below the target's 10,000."""
    out = []
    for run in range(p["runs"]):
        for n in p["longpoll_scale"]:
            r = measure(work, longpoll_config(p, n), users=n + 4, run=run)
            out.append(r)
            log(f"longpoll n={n}: p50={r['p50_ms']} p99={r['p99_ms']} commit p99="
                f"{r['commit_p99_ms']} req/s={r['poll_req_per_s']} post p99="
                f"{r['post_p99_ms']} unanswered={r['posts_unanswered']}")
    return out


def bench_poll(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    for run in range(p["runs"]):
        for variant in variants(p, "poll"):
            r = measure(work, {"mode": "poll", "connections": POLL_CONNECTIONS,
                               "seconds": p["poll_seconds"], "rounds": p["poll_rounds"],
                               "history": 200,
                               "sender_ids": list(range(POLL_CONNECTIONS + 1,
                                                        POLL_CONNECTIONS + 5))},
                        users=POLL_CONNECTIONS + 4, run=run, variant=variant)
            out.append(r)
            log(f"poll{tag(variant)}: bare={r['bare_req_per_core_s']}/core "
                f"poll={r['poll_req_per_core_s']}/core ratio={r['ratio_per_core']}")
    return out


def bench_after(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    kinds = ["sqlite"] + (["postgresql"] if common.pg_available() else [])
    for kind in kinds:
        db = new_database(kind)
        try:
            t = time.monotonic()
            info = seed(db, users=100, extra_webinars=AFTER_WEBINARS,
                        messages=p["after_messages"], message_webinars=AFTER_WEBINARS,
                        quiet_webinar=AFTER_WEBINARS + 1, quiet_every=QUIET_EVERY)
            log(f"after {kind}: seeded {p['after_messages']} messages in "
                f"{time.monotonic() - t:.0f} s")
            with chat_server(db, work) as srv:
                for run in range(p["runs"]):
                    r = run_loadgen({"mode": "after", "database_url": db.url,
                                     "per_webinar": info["per_webinar"][1],
                                     "webinars": AFTER_WEBINARS, "queries": p["after_queries"],
                                     "quiet_webinar": AFTER_WEBINARS + 1,
                                     "quiet_every": QUIET_EVERY, "messages": p["after_messages"],
                                     "port": srv.port, "server_pid": srv.pid})
                    r["run"] = run
                    r["messages"] = p["after_messages"]
                    out.append(r)
                    log(f"after {kind}: store p99={r['store_p99_ms']} http p99="
                        f"{r['http_p99_ms']} plan={r['plan']}")
        finally:
            db.close()
    return out


def bench_storm(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    n = p["storm_attendees"]
    for run in range(p["runs"]):
        for variant in variants(p, "storm"):
            r = measure(work, {"mode": "storm", "attendees": n, **STORM,
                               "sender_ids": list(range(n + 1, n + 9))},
                        users=n + 8, run=run, variant=variant)
            out.append(r)
            log(f"storm{tag(variant)}: {r}")
    return out


def bench_floor(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    from .bench_floor import bench_floor as run  # lazily: it imports fanout_config and measure

    return run(p, work)


def bench_longpoll_floor(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    from .bench_floor import bench_longpoll_floor as run

    return run(p, work)


BENCHES: dict[str, Callable[[dict[str, Any], Path], list[dict[str, Any]]]] = {
    "fanout": bench_fanout, "send_fanout": bench_send_fanout,
    "fanout_supabase": bench_fanout_supabase, "idle": bench_idle,
    "send": bench_send, "longpoll": bench_longpoll,
    "longpoll_scale": bench_longpoll_scale,
    "poll": bench_poll, "after": bench_after, "storm": bench_storm, "cluster": bench_cluster,
    "export": bench_export,
    "floor": bench_floor, "longpoll_floor": bench_longpoll_floor,
    "start": lambda p, work: _bench_start().bench_start(p, work),
    "login": lambda p, work: _bench_start().bench_login(p, work),
}


def _bench_start() -> Any:
    from . import bench_start

    return bench_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short pass (smoke check)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--runs", type=int, help="override the number of runs")
    parser.add_argument("--variants", help="bench=patch[+patch],… measured beside the current "
                        "code, e.g. fanout=tick-after-flush (default: full runs use FULL's)")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render docs/benchmarks.md from the saved results")
    parser.add_argument("--no-report", action="store_true", help="do not write docs/")
    args = parser.parse_args(argv)
    common.raise_nofile()
    common.pin(LOAD_CPU)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_path = RESULTS / ("quick.json" if args.quick else "latest.json")
    command = "python -m bench.run_all" + (" " + shlex.join(argv if argv is not None
                                                              else sys.argv[1:])).rstrip()
    if args.report_only:
        data = json.loads(results_path.read_text())
    else:
        params = dict(QUICK if args.quick else FULL)
        if args.runs:
            params["runs"] = args.runs
        if args.variants is not None:
            params["variants"] = {}
            for item in filter(None, args.variants.split(",")):
                bench, _, patch = item.partition("=")
                params["variants"].setdefault(bench, []).append(patch)
        selected = args.only.split(",") if args.only else list(BENCHES)
        previous = json.loads(results_path.read_text()) if results_path.exists() and args.only \
            else {}
        if "fanout" in selected:
            common.ensure_socketio_installed()  # before machine_info, which reads its version
        machine = common.machine_info()
        data = {"command": command, "quick": args.quick, "params": params,
                "machine": machine, "results": previous.get("results", {}),
                "durations_s": previous.get("durations_s", {}),
                "provenance": previous.get("provenance", {})}
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
            for name in selected:
                log(f"== {name}")
                t = time.monotonic()
                try:
                    data["results"][name] = BENCHES[name](params, Path(tmp))
                except Exception:
                    log(f"{name} failed:\n{traceback.format_exc()}")
                    data["results"][name] = {"error": traceback.format_exc()[-2000:]}
                data["durations_s"][name] = round(time.monotonic() - t)
                # Which command, commit and time produced each benchmark's rows: after `--only`
                # merges, they are not all the top-level command's.
                data["provenance"][name] = {"command": command, "commit": machine["commit"],
                                            "date": machine["date"], "runs": params["runs"],
                                            **common.backing_versions(name)}
                if common.src_uncommitted():
                    data["provenance"][name]["src_uncommitted"] = True
                results_path.write_text(json.dumps(data, indent=1))
        data["total_s"] = round(time.monotonic() - started)
        if args.only and previous:
            # A partial re-run merged into the full results: keep the full run's command and
            # time, and list this command after it.
            data["command"] = previous.get("command", command)
            data["machine"] = previous.get("machine", data["machine"])
            data["followups"] = [*previous.get("followups", []), command]
            data["total_s"] = previous.get("total_s", 0) + data["total_s"]
        results_path.write_text(json.dumps(data, indent=1))
        log(f"done in {data['total_s']} s; results in {results_path}")
    if not args.no_report:
        from .report import write_report

        write_report(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
