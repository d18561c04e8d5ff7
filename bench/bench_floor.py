"""The physical reference of docs/performance-targets.md: this machine's fan-out floors,
measured by our harness beside our own server in the same run.

    .venv/bin/python -m bench.run_all --only floor

For each run and attendee count of the fan-out benchmark, the same workload (`run_all.
fanout_config`: 100 msgs/s into one webinar, the warm-up, window and latency sample of `fanout`)
drives three servers one after the other, each alone on core 0, the order rotating from run to
run:

- `floor: "write"`: bench/floor_server.py sending every message at once as its own prebuilt
  frame, one `transport.write()` per client (docs/performance-targets.md: 110–175k deliveries/s per core);
- `floor: "frame10"`: the same coalescing 10 messages per frame (0.9–1.0M messages/s per core);
- `floor: None`: ours (`webinar-chat serve` on a fresh SQLite database, `run_all.measure`).

The floor server speaks just enough of our protocol for the load generator to drive it unchanged
(`kind: "chat"`), with events encoded by our own code, so the three rows count the same bytes.
The report gives ours ÷ each floor in delivered/s per server core, taken per run, then the median,
and the generator's CPU beside every figure: a floor the generator cannot keep up with
(gen_cpu_util ≥ GEN_BOUND) measures the generator as much as the server.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .common import ServerProcess, free_port, run_loadgen
from .report import agg, nth, ok_rows, ratio_by_run

MODES: list[str | None] = ["write", "frame10", None]  # None: ours
LABELS = {"write": "floor: one frame per message, `write()` per client",
          "frame10": "floor: 10 messages per frame, `write()` per client",
          None: "ours (`webinar-chat serve`)"}
# docs/performance-targets.md's figures for this machine class (deliveries/s per core).
REFERENCE = {"write": (110_000, 175_000), "frame10": (900_000, 1_000_000)}
# The generator's core (both its processes) this busy: its figures are partly the generator's.
GEN_BOUND = 0.8


@contextlib.contextmanager
def floor_server(workdir: Path, mode: str) -> Iterator[ServerProcess]:
    """bench/floor_server.py pinned to core 0 like ours (ServerProcess: taskset, nice, its own
    process group), ready once it answers /healthz."""
    port = free_port()
    server = ServerProcess([sys.executable, "-m", "bench.floor_server", "--port", str(port),
                            "--mode", mode], port, dict(os.environ), "/healthz",
                           workdir / f"floor-{mode}-{port}.log")
    try:
        yield server
    finally:
        server.stop()


def bench_floor(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    # run_all imports this module lazily (its BENCHES entry): no import cycle.
    from .run_all import SENDERS, brief, fanout_config, log, measure

    out = []
    for run in range(p["runs"]):
        for n in p["fanout_attendees"]:
            base = {**fanout_config(p, n), "kind": "chat"}
            k = run % len(MODES)
            for mode in MODES[k:] + MODES[:k]:
                if mode is None:
                    r = measure(work, base, users=n + SENDERS, run=run)
                else:
                    with floor_server(work, mode) as srv:
                        r = run_loadgen({**base, "port": srv.port, "server_pid": srv.pid})
                    r.update(run=run, variant=None)
                r["floor"] = mode
                out.append(r)
                log(f"floor {mode or 'ours'} n={n}: {brief(r)}")
    return out


def bench_longpoll_floor(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """The long-poll benchmark (`run_all.longpoll_config`: 10,000 pollers, 10 msgs/s) against
    the floor server's `longpoll` mode and against ours, one after the other in each run, the
    order alternating."""
    from .run_all import log, longpoll_config, measure

    n = p["longpoll_pollers"]
    out = []
    for run in range(p["runs"]):
        for mode in (["longpoll", None] if run % 2 == 0 else [None, "longpoll"]):
            config = longpoll_config(p, n)
            if mode is None:
                r = measure(work, config, users=n + 4, run=run)
            else:
                with floor_server(work, mode) as srv:
                    r = run_loadgen({**config, "port": srv.port, "server_pid": srv.pid})
                r.update(run=run, variant=None)
            r["floor"] = mode
            out.append(r)
            log(f"longpoll floor {mode or 'ours'}: p50={r['p50_ms']} p99={r['p99_ms']} "
                f"answers/s={r['poll_req_per_s']} cpu={r['server_cpu_util']} "
                f"gen={r['gen_cpu_util']} complete={r['complete_pollers']}/{n} "
                f"post p99={r['post_p99_ms']} errors={r['errors']}")
    return out


# --- report --------------------------------------------------------------------------------------

def _groups(rows: list[dict[str, Any]]) -> dict[tuple[int, str | None], list[dict[str, Any]]]:
    groups: dict[tuple[int, str | None], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["attendees"], r.get("floor"))].append(r)
    return groups


def _bound(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if (r.get("gen_cpu_util") or 0) >= GEN_BOUND)


def _gen(rows: list[dict[str, Any]]) -> str:
    """The generator's CPU of these runs, flagged when any of them was generator-bound."""
    s = agg(rows, "gen_cpu_util", 2)[1]
    bound = _bound(rows)
    if bound:
        s += f" **generator-bound** ({bound}/{len(rows)} runs)"
    return s


def _ratios(ours: list[dict[str, Any]], floor: list[dict[str, Any]]) -> tuple[float, str, int]:
    """Ours ÷ floor per run (delivered/s per server core): (median, text, runs in which either
    side was generator-bound)."""
    ratios = ratio_by_run(ours, floor, "delivered_per_core_s")
    v, s = agg([{"x": x} for x in ratios], "x", 2)
    floor_by_run = {r["run"]: r for r in floor}
    bound = sum(1 for r in ours if r["run"] in floor_by_run
                and _bound([r, floor_by_run[r["run"]]]))
    return v, (s + "×" if ratios else s), bound


def floor_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    rows = ok_rows(data["results"], "floor")
    if not rows:
        return
    m = data["machine"]
    made = data.get("provenance", {}).get("floor", {})
    commit = made.get("commit", m["commit"])
    if made.get("src_uncommitted"):
        commit += " with uncommitted changes in src/"
    r0 = rows[0]
    w("## Fan-out floors of this machine (physical reference)")
    w("")
    w(f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit {commit}, "
      f"{made.get('date', m['date'])}; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. "
      f"Figures are medians of {len({r['run'] for r in rows})} run(s) with [min–max]; ratios "
      f"are taken within a run, then the median.")
    w("")
    w(f"The fan-out workload above ({r0['rate_target']} msgs/s offered into one webinar, every "
      f"{r0['attendees'] // r0['sampled_clients']}th attendee parsing every frame for latency, "
      f"the others counting `\"INSERT\"` in the raw stream), driven by the same load generator "
      f"against `bench/floor_server.py` and against ours, one after the other in each run, each "
      f"alone on core 0. The floor server is plain asyncio Protocols on uvloop with no framework, "
      f"database, task or queue per client: it answers the POST, then writes one frame built once "
      f"to every joined socket with one `transport.write()` each, either per message (`write`) or "
      f"per 10 messages (`frame10`, leftovers after 200 ms). Its events are encoded by our own "
      f"`protocol.events`, byte for byte what an attendee gets from ours. docs/performance-targets.md gives "
      f"110–175k deliveries/s per core for the first and 0.9–1.0M messages/s per core for the "
      f"second on this machine class. A floor that saturates core 0 sends fewer than the offered "
      f"messages (sent/s); delivered/s per core is still its cost per delivery. Generator CPU is "
      f"both generator processes on core 1 (sample + bulk); at ≥ {GEN_BOUND} a figure is flagged "
      f"**generator-bound**: the generator then paces the server as much as the other way round.")
    w("")
    w("| server | attendees | delivered/s | per server core | server CPU | events/frame | sent/s | "
      "p50 ms | p99 ms | complete | generator CPU (sample + bulk) | other load c0/c1 |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups = _groups(rows)
    for (n, mode), group in sorted(groups.items(), key=lambda x: (x[0][0], MODES.index(x[0][1]))):
        split = (f"{agg(group, nth('gen_cpu_util_split', 0), 2)[1]} + "
                 f"{agg(group, nth('gen_cpu_util_split', 1), 2)[1]}")
        w(f"| {LABELS[mode]} | {n:,} | {agg(group, 'delivered_per_s')[1]} | "
          f"{agg(group, 'delivered_per_core_s')[1]} | {agg(group, 'server_cpu_util', 2)[1]} | "
          f"{agg(group, 'events_per_frame', 1)[1]} | {agg(group, 'send_rate', 1)[1]} | "
          f"{agg(group, 'p50_ms', 1)[1]} | {agg(group, 'p99_ms', 1)[1]} | "
          f"{min(r['clients_complete'] for r in group):,}/{n:,} | {_gen(group)} ({split}) | "
          f"{agg(group, lambda r: r['other_load']['core0'], 2)[1]} / "
          f"{agg(group, lambda r: r['other_load'].get('core1'), 2)[1]} |")
    w("")
    w("Ours ÷ floor, delivered/s per server core, same run (above 1×: ours spends less per "
      "delivery than that floor, by coalescing):")
    w("")
    w("| attendees | ours ÷ `write` floor | ours ÷ `frame10` floor | events/frame: ours | "
      "generator CPU: ours; `write`; `frame10` |")
    w("|---|---|---|---|---|")
    for n in sorted({r["attendees"] for r in rows}):
        ours = groups.get((n, None), [])
        cells = []
        for mode in ("write", "frame10"):
            _, s, bound = _ratios(ours, groups.get((n, mode), []))
            cells.append(s + (f" **generator-bound** (in {bound} run(s))" if bound else ""))
        gens = "; ".join(_gen(groups.get((n, mode), [])) for mode in (None, "write", "frame10"))
        w(f"| {n:,} | {cells[0]} | {cells[1]} | {agg(ours, 'events_per_frame', 1)[1]} | {gens} |")
    w("")


def floor_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows of the targets table (what, target, measured, verdict) at the largest attendee count:
    each floor against docs/performance-targets.md's figures for this machine class, and ours ÷ each floor."""
    rows = ok_rows(res, "floor")
    if not rows:
        return []
    n = max(r["attendees"] for r in rows)
    groups = _groups([r for r in rows if r["attendees"] == n])
    head = f"physical reference, {n:,} WS attendees, 100 msgs/s"
    out = []
    for mode, what in (("write", "`write()`-per-client floor"),
                       ("frame10", "10-messages-per-frame floor")):
        group = groups.get((n, mode), [])
        lo, hi = REFERENCE[mode]
        v, s = agg(group, "delivered_per_core_s")
        if v != v:
            verdict = "not measured"
        else:
            verdict = ("within" if lo <= v <= hi else "below" if v < lo else "above") + \
                " this machine class's figures"
        if _bound(group):
            verdict += f"; **generator-bound** ({_bound(group)}/{len(group)} runs)"
        out.append((f"{head}: {what}, delivered/s per core", f"{lo:,}–{hi:,} (reference)",
                    f"{s} (generator CPU {agg(group, 'gen_cpu_util', 2)[1]})", verdict))
    ours = groups.get((n, None), [])
    cells, bound = [], 0
    for mode in ("write", "frame10"):
        _, s, b = _ratios(ours, groups.get((n, mode), []))
        cells.append(s)
        bound += b
    measured = (f"{cells[0]} ÷ `write`; {cells[1]} ÷ `frame10` (generator CPU of ours "
                f"{agg(ours, 'gen_cpu_util', 2)[1]})")
    verdict = "reported" if ours else "not measured"
    if bound:
        verdict += f"; **generator-bound** in {bound} run pair(s)"
    out.append((f"{head}: ours ÷ floor, delivered/s per core (same run)", "reported", measured,
                verdict))
    return out


# --- the long-poll floor ---------------------------------------------------------------------------

def _answers_per_core(r: dict[str, Any]) -> float | None:
    cpu = r.get("server_cpu_util") or 0
    return r["poll_req_per_s"] / cpu if cpu > 0 else None


def _longpoll_groups(res: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = ok_rows(res, "longpoll_floor")
    for r in rows:
        r["answers_per_core_s"] = _answers_per_core(r)
    return ([r for r in rows if r.get("floor") == "longpoll"],
            [r for r in rows if r.get("floor") is None])


def longpoll_floor_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows of the targets table: the floor's own p99 and answers/s per core, and ours beside
    it in the same runs."""
    floor, ours = _longpoll_groups(res)
    if not floor:
        return []
    n = floor[0]["pollers"]
    head = f"physical reference, {n:,} long-poll attendees, {floor[0]['rate_target']} msgs/s"
    bound = _bound(floor)
    out = [(f"{head}: floor server, p99 send→delivered; poll answers/s per core",
            "reported (the target: ≤ 250 ms)",
            f"{agg(floor, 'p99_ms')[1]} ms; {agg(floor, 'answers_per_core_s')[1]} "
            f"(generator CPU {agg(floor, 'gen_cpu_util', 2)[1]})",
            "reported" + (f"; **generator-bound** ({bound}/{len(floor)} runs)" if bound else ""))]
    if ours:
        ratios = ratio_by_run(ours, floor, "answers_per_core_s")
        _, s = agg([{"x": x} for x in ratios], "x", 2)
        out.append((f"{head}: ours in the same runs, p99; answers/s per core ÷ the floor's",
                    "reported", f"{agg(ours, 'p99_ms')[1]} ms; {s}×", "reported"))
    return out


def longpoll_floor_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    floor, ours = _longpoll_groups(data["results"])
    if not floor:
        return
    m = data["machine"]
    made = data.get("provenance", {}).get("longpoll_floor", {})
    commit = made.get("commit", m["commit"])
    if made.get("src_uncommitted"):
        commit += " with uncommitted changes in src/"
    r0 = floor[0]
    w("## Long-poll floor of this machine (physical reference)")
    w("")
    w(f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit {commit}, "
      f"{made.get('date', m['date'])}; {m['cpu']}, {m['cores']} cores. Medians of "
      f"{len({r['run'] for r in floor})} run(s) with [min–max].")
    w("")
    w(f"The long-poll workload ({r0['pollers']:,} pollers, {r0['rate_target']} msgs/s, the same "
      f"load generator and sample of parsing pollers) against `bench/floor_server.py --mode "
      f"longpoll` and against ours, one after the other in each run, each alone on core 0. The "
      f"floor parses a poll with two byte searches, answers it at once when it is behind or "
      f"parks it, and on each create writes every parked poller its answer — one body per "
      f"`after_seq`, built with our own encoder — with one `write()` each: no framework, "
      f"no token, no access check, no access line, no slices. What it costs per answer is the "
      f"kernel's receive and send plus the thinnest Python around them, so its p99 is the least "
      f"one process on this machine can offer {r0['pollers']:,} pollers that all re-poll at once.")
    w("")
    w("| server | p50 ms | p99 ms | poll answers/s | per server core | server CPU | complete | "
      "POST p99 ms | generator CPU |")
    w("|---|---|---|---|---|---|---|---|---|")
    for label, rows in (("floor (`--mode longpoll`)", floor), ("ours (`webinar-chat serve`)", ours)):
        if rows:
            w(f"| {label} | {agg(rows, 'p50_ms')[1]} | {agg(rows, 'p99_ms')[1]} | "
              f"{agg(rows, 'poll_req_per_s')[1]} | {agg(rows, 'answers_per_core_s')[1]} | "
              f"{agg(rows, 'server_cpu_util', 2)[1]} | "
              f"{min(r['complete_pollers'] for r in rows):,}/{rows[0]['pollers']:,} | "
              f"{agg(rows, 'post_p99_ms')[1]} | {_gen(rows)} |")
    w("")
