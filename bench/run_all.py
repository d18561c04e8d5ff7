"""Run every benchmark of ../shared/PERFORMANCE.md and write docs/benchmarks.md + plots.

    .venv/bin/python -m bench.run_all            # full: 3 runs of each, ~25 min
    .venv/bin/python -m bench.run_all --quick    # smoke check: 1 short run of each, ~3 min
    .venv/bin/python -m bench.run_all --only fanout,idle [--runs N]
    .venv/bin/python -m bench.run_all --report-only   # re-render from bench/results/latest.json

Each benchmark starts its server under test (`webinar-chat serve`, or the Node Socket.IO server)
pinned to core 0 on a fresh database, runs the load generator (bench/loadgen.py) pinned to core 1,
and keeps the JSON result. Raw results go to bench/results/{latest,quick}.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import common
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
    "storm_attendees": 5000,
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
}
# The target workload: 100 chat messages/s into one webinar (PERFORMANCE.md).
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


def bench_fanout(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Ours (current code, then each proposed variant) and Socket.IO, side by side in each run."""
    common.ensure_socketio_installed()
    out = []
    for run in range(p["runs"]):
        for n in p["fanout_attendees"]:
            base = {"mode": "fanout", "attendees": n, "rate": FANOUT_RATE,
                    "warmup": p["fanout_warmup"], "window": p["fanout_window"],
                    "sample_every": SAMPLE_EVERY, "sender_conns": SENDER_CONNS,
                    "sender_ids": list(range(n + 1, n + 1 + SENDERS))}
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


BENCHES: dict[str, Callable[[dict[str, Any], Path], list[dict[str, Any]]]] = {
    "fanout": bench_fanout, "idle": bench_idle, "send": bench_send, "longpoll": bench_longpoll,
    "longpoll_scale": bench_longpoll_scale,
    "poll": bench_poll, "after": bench_after, "storm": bench_storm,
}


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
        data = {"command": command, "quick": args.quick, "params": params,
                "machine": common.machine_info(), "results": previous.get("results", {}),
                "durations_s": previous.get("durations_s", {})}
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
