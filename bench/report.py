"""Render bench results (bench/results/*.json) into docs/benchmarks.md and docs/benchmarks/*.png."""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import ROOT, median

DOCS = ROOT / "docs"
PLOTS = DOCS / "benchmarks"
FINDINGS = ROOT / "bench" / "findings.md"


def fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float | int):
        if digits == 0:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    return str(v)


def agg(rows: list[dict[str, Any]], key: str | Callable[[dict[str, Any]], Any],
        digits: int = 0) -> tuple[float, str]:
    """(median, "median [min–max]") over runs."""
    get = key if callable(key) else (lambda r: r.get(key))
    vals = [float(v) for v in (get(r) for r in rows) if isinstance(v, int | float)]
    if not vals:
        return float("nan"), "–"
    med = median(vals)
    if len(vals) == 1:
        return med, fmt(med, digits)
    return med, f"{fmt(med, digits)} [{fmt(min(vals), digits)}–{fmt(max(vals), digits)}]"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "**met**"
    if higher_is_better:
        return f"**missed**: {value / target:.0%} of target ({num(target - value)} short)"
    return f"**missed**: {value / target:.2g}× the limit (+{num(value - target)})"


def num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def by_variant(rows: list[dict[str, Any]]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """Rows grouped by server variant: the current code (None) first."""
    groups: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r.get("variant")].append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))


def current(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("variant")]


def vtag(variant: str | None) -> str:
    return f" + `{variant}`" if variant else ""


def prefix(variant: str | None) -> str:
    return f"↳ *variant `{variant}`* (bench/variants/), same run: " if variant else ""


def ok_rows(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = results.get(name)
    return rows if isinstance(rows, list) else []


# --- plots ---------------------------------------------------------------------------------------

FANOUT_PLOTS = ["fanout-throughput.png", "fanout-latency.png"]


def fanout_plots(rows: list[dict[str, Any]]) -> list[str]:
    """The fan-out plots; without matplotlib (the `bench` extra), the ones already in docs/ are
    kept, so that re-rendering after an `--only` run of another benchmark does not fail."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("report: matplotlib is not installed (pip install -e '.[bench]'): the fan-out "
              "plots in docs/benchmarks/ are left as they are", file=sys.stderr)
        return [f for f in FANOUT_PLOTS if (PLOTS / f).exists()]
    return plot_fanout(rows)


def plot_fanout(rows: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    series: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        series[label(r)][r["attendees"]].append(r)
    styles = {"webinar-chat": ("tab:blue", "o"), "Socket.IO": ("tab:red", "s")}
    extra = iter([("tab:green", "^"), ("tab:purple", "D"), ("tab:olive", "v"), ("tab:cyan", "P")])
    for name in sorted(series):
        if name not in styles:
            styles[name] = next(extra, ("tab:gray", "x"))
    files = []

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    ns_all = sorted({r["attendees"] for r in rows})
    ax.plot(ns_all, [n * 100 / 1000 for n in ns_all], color="grey", linestyle=":", linewidth=3,
            alpha=0.5, label="offered: attendees × 100 msgs/s")
    for name, by_n in series.items():
        color, marker = styles[name]
        ns = sorted(by_n)
        per_core = [median([r["delivered_per_core_s"] or 0 for r in by_n[n]]) / 1000 for n in ns]
        wall = [median([r["delivered_per_s"] for r in by_n[n]]) / 1000 for n in ns]
        ax.plot(ns, per_core, marker=marker, color=color, label=f"{name}: per server core")
        ax.plot(ns, wall, marker=marker, color=color, linestyle="--", alpha=0.6,
                label=f"{name}: per second (wall)")
    ax.axhline(800, color="black", linewidth=0.8, linestyle="-.", label="target 800k/s per core")
    ax.set_xlabel("attendees (WebSocket, one webinar)")
    ax.set_ylabel("delivered messages/s (thousands)")
    ax.set_title("Fan-out at 100 msgs/s: delivered messages/s (median of runs)")
    ax.set_xticks(ns_all)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = PLOTS / "fanout-throughput.png"
    fig.savefig(path)
    plt.close(fig)
    files.append(path.name)

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    for name, by_n in series.items():
        color, marker = styles[name]
        ns = sorted(by_n)
        p50 = [median([r["p50_ms"] for r in by_n[n]]) for n in ns]
        p99 = [median([r["p99_ms"] for r in by_n[n]]) for n in ns]
        ax.plot(ns, p50, marker=marker, color=color, linestyle="--", label=f"{name}: p50")
        ax.plot(ns, p99, marker=marker, color=color, label=f"{name}: p99")
    ax.axhline(100, color="black", linewidth=0.8, linestyle="-.", label="target p99 100 ms")
    ax.set_yscale("log")
    ax.set_xlabel("attendees (WebSocket, one webinar)")
    ax.set_ylabel("send → delivered latency (ms, log scale)")
    ax.set_title("Fan-out at 100 msgs/s: latency (median of runs)")
    ax.set_xticks(ns_all)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = PLOTS / "fanout-latency.png"
    fig.savefig(path)
    plt.close(fig)
    files.append(path.name)
    return files


def label(r: dict[str, Any]) -> str:
    if r.get("label"):
        return str(r["label"])
    if r["kind"] == "socketio":
        return "Socket.IO"
    return "webinar-chat" + (f" + {r['variant']}" if r.get("variant") else "")


def _lazy_summary(module: str, name: str, res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Summary rows of a benchmark whose module imports this one (imported here, when used)."""
    import importlib

    return list(getattr(importlib.import_module(f"bench.{module}"), name)(res))


# --- the document --------------------------------------------------------------------------------

def write_report(data: dict[str, Any]) -> Path:
    res = data["results"]
    m = data["machine"]
    quick = data.get("quick")
    lines: list[str] = []
    w = lines.append
    w("# Benchmarks")
    w("")
    w("Generated by `bench/run_all.py` — do not edit by hand; the analysis lives in "
      "`bench/findings.md` and is copied in below. Targets and this machine class's reference "
      "figures: [performance-targets.md](performance-targets.md).")
    w("")
    if quick:
        w("> **Quick run (smoke check): one short pass with smaller sizes. These numbers are not "
          "results.** Run the full command for medians.")
        w("")
    follow = "".join(f", then `.venv/bin/{c}` (re-ran that benchmark)"
                     for c in data.get("followups", []))
    w(f"**Command:** `.venv/bin/{data['command']}` (from the repository root){follow}; "
      f"{fmt(data.get('total_s'))} s in all.")
    w("")
    w(f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
      f"Python {m['python']} (uvicorn {m['uvicorn']} with {m['http_impl']} HTTP and "
      f"{m['loop_impl']} loop, starlette {m['starlette']}, websockets {m['websockets']}, orjson "
      f"{m['orjson']}); Node {m['node']} with socket.io {m['socket.io']}; commit {m['commit']}; "
      f"{m['date']}.")
    w("")
    runs = data["params"]["runs"]
    w(f"**Method:** every server under test runs alone on core 0 (`taskset -c 0`), the load "
      f"generator on core 1; both at `nice -n -5` (other engineers' test suites share this "
      f"machine). Server CPU is utime+stime from `/proc/<pid>/stat` over the measurement window, "
      f"RSS from `/proc/<pid>/status`. Figures are medians of {runs} run(s) with [min–max]; "
      f"ratios are taken per run, side by side, then the median. \"other load\" is the CPU that "
      f"everything else (other people's tests, kernel) took on each core during the window.")
    w("")

    summary: list[tuple[str, str, str, str]] = []
    fan = ok_rows(res, "fanout")
    ours5 = [r for r in fan if r["kind"] == "chat" and not r.get("variant")
             and r["attendees"] == max((x["attendees"] for x in fan), default=0)]
    sio5 = [r for r in fan if r["kind"] == "socketio" and r["attendees"] ==
            max((x["attendees"] for x in fan), default=0)]
    if ours5:
        n = ours5[0]["attendees"]
        v, s = agg(ours5, "delivered_per_core_s")
        gen = f" (generator CPU {gen_flag(ours5)})"
        summary.append((f"fan-out, {n:,} WS attendees, 100 msgs/s: delivered/s per core",
                        "≥ 800,000", s + gen, verdict(v, 800_000, True)))
        v, s = agg(ours5, "p99_ms", 1)
        summary.append((f"fan-out, {n:,} attendees: p99 send→delivered", "≤ 100 ms",
                        s + " ms" + gen, verdict(v, 100, False)))
    if ours5 and sio5:
        ratios = ratio_by_run(ours5, sio5, "delivered_per_core_s")
        v, s = agg([{"x": x} for x in ratios], "x", 2)
        summary.append(("… vs Socket.IO (same run): ours/theirs per core", "≥ 10×", s + "×",
                        verdict(v, 10, True)))
    summary += send_fanout_summary(res)
    summary += supabase_summary(res)
    summary += _lazy_summary("bench_floor", "floor_summary", res)
    for variant in sorted({r["variant"] for r in fan if r.get("variant")}):
        vrows = [r for r in fan if r.get("variant") == variant and ours5
                 and r["attendees"] == ours5[0]["attendees"]]
        if vrows:
            v1, s1 = agg(vrows, "delivered_per_core_s")
            v2, s2 = agg(vrows, "p99_ms", 1)
            ratios = ratio_by_run(vrows, sio5, "delivered_per_core_s")
            v3, s3 = agg([{"x": x} for x in ratios], "x", 2)
            summary.append((prefix(variant) + "fan-out, 5,000 attendees: per core; p99; "
                            "vs Socket.IO",
                            "≥ 800,000; ≤ 100 ms; ≥ 10×", f"{s1}; {s2} ms; {s3}×",
                            " / ".join([verdict(v1, 800_000, True), verdict(v2, 100, False),
                                        verdict(v3, 10, True)])))
    summary += cluster_summary(res)
    idle_all = ok_rows(res, "idle")
    idle = current(idle_all)
    for vname, rows in by_variant(idle_all):
        v, s = agg(rows, "kib_per_connection", 1)
        summary.append((prefix(vname) + f"idle: {rows[0]['connections']:,} connections, one "
                        "process", "≤ 20 KiB each", s + " KiB", verdict(v, 20, False)))
    snd_all = ok_rows(res, "send")
    for kind in ("sqlite", "postgresql"):
        for vname, rows in by_variant([r for r in snd_all if r["db"] == kind]):
            v, s = agg(rows, "p99_ms", 1)
            summary.append((prefix(vname) + f"send (POST create) at 200/s, {kind}: p99",
                            "≤ 10 ms", s + " ms", verdict(v, 10, False)))
            v, s = agg(rows, "creates_per_core_s")
            summary.append((prefix(vname) + f"send, {kind}: creates/s per server core",
                            "≥ 2,500", s, verdict(v, 2500, True)))
    lp_all = ok_rows(res, "longpoll")
    lp = current(lp_all)
    for vname, rows in by_variant(lp_all):
        v, s = agg(rows, "p99_ms")
        if v != v:
            starved = sum(r.get("posts_unanswered", 0) for r in rows)
            summary.append((prefix(vname) + f"fallback: {rows[0]['pollers']:,} long-poll "
                            "attendees, p99 send→delivered", "≤ 250 ms",
                            f"nothing delivered: no send completed within 30 s "
                            f"({starved} POSTs unanswered)", "**missed**: sends starve"))
            continue
        summary.append((prefix(vname) + f"fallback: {rows[0]['pollers']:,} long-poll attendees, "
                        "p99 send→delivered", "≤ 250 ms", s + " ms", verdict(v, 250, False)))
    summary += _lazy_summary("bench_floor", "longpoll_floor_summary", res)
    pl_all = ok_rows(res, "poll")
    pl = current(pl_all)
    for vname, rows in by_variant(pl_all):
        v, s = agg(rows, "ratio_per_core", 2)
        summary.append((prefix(vname) + "up-to-date poll vs bare endpoint (req/s per core)",
                        "≥ 0.60", s, verdict(v, 0.6, True)))
    for kind in ("sqlite", "postgresql"):
        rows = [r for r in ok_rows(res, "after") if r["db"] == kind]
        if rows:
            v, s = agg(rows, "store_p99_ms", 2)
            vq, sq = agg(rows, "quiet_p99_ms", 2)
            uses = all(r["uses_index"] for r in rows)
            quiet_uses = all(r.get("quiet_uses_index") for r in rows)

            def plan_name(ok: bool) -> str:
                return "(webinar_id, id)" if ok else "**primary key** + filter"

            worst = max(v, vq) if vq == vq else v
            plan_verdict = "" if uses and quiet_uses else "plan **missed** (chosen by cost); "
            summary.append((f"`?after=` on {rows[0]['messages']:,} messages, {kind}: plan; p99 "
                            "(busy webinar; quiet webinar)", "(webinar_id, id); ≤ 5 ms",
                            f"busy: {plan_name(uses)}, {s} ms; quiet: {plan_name(quiet_uses)}, "
                            f"{sq} ms", plan_verdict + "p99 " + verdict(worst, 5, False)))
    for vname, rows in by_variant(ok_rows(res, "storm")):
        v, s = agg(rows, "all_caught_up_s", 2)
        lost = sum(r["attendees"] - r["complete"] for r in rows)
        summary.append((prefix(vname) + f"reconnect storm, {rows[0]['attendees']:,} clients with "
                        "last_seq", "all caught up ≤ 5 s, none lost",
                        f"{s} s; {lost} incomplete",
                        verdict(v, 5, False) + ("" if lost == 0 else "; **lost**")))
    summary += _lazy_summary("bench_start", "start_summary", res)
    summary += _lazy_summary("bench_start", "login_summary", res)

    w("## Results against the targets")
    w("")
    w("| what | target | measured: median [min–max] | verdict |")
    w("|---|---|---|---|")
    for row in summary:
        w("| " + " | ".join(row) + " |")
    w("")
    for name, value in res.items():
        if isinstance(value, dict) and "error" in value:
            w(f"**{name} failed:**\n```\n{value['error']}\n```\n")

    before_path = ROOT / "bench" / "results" / "before.json"
    if before_path.exists() and not quick:
        before_after(w, __import__("json").loads(before_path.read_text()), data)

    if FINDINGS.exists():
        w(FINDINGS.read_text().strip())
        w("")

    if fan:
        plotted = list(fan)
        if before_path.exists() and not quick:
            old = __import__("json").loads(before_path.read_text())
            plotted += [{**r, "label": f"webinar-chat before ({old.get('src_commit', '?')})"}
                        for r in ok_rows(old["results"], "fanout")
                        if r["kind"] == "chat" and not r.get("variant")]
        files = fanout_plots(plotted)
        w("## Fan-out (WebSocket, one webinar, 100 msgs/s sent, SQLite)")
        w("")
        w(f"Every {fan[0].get('sampled_clients') and 50}th attendee (and the senders) run in a "
          f"light process that parses every frame: latency is send→delivered on one clock, "
          f"completeness = saw exactly the acknowledged seqs. The other attendees run in a second "
          f"process and only count events in the raw stream. Socket.IO: the Node server in "
          f"`bench/socketio/server.js` (`io.to(room).emit`, one event per message, no database), "
          f"clients speak Engine.IO v4 over WebSocket.")
        w("")
        for f in files:
            w(f"![{f}](benchmarks/{f})")
        w("")
        w("| server | attendees | delivered/s | per core | server CPU | p50 ms | p99 ms | "
          "events/frame | sent/s | POST p99 ms | complete | RSS MiB | generator CPU | "
          "other load c0/c1 |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for r in fan:
            groups[(label(r), r["attendees"])].append(r)
        for (name, n), rows in sorted(groups.items(), key=lambda x: (x[0][1], x[0][0])):
            complete = f"{min(r['clients_complete'] for r in rows):,}/{n:,}"
            w(f"| {name} | {n:,} | {agg(rows, 'delivered_per_s')[1]} | "
              f"{agg(rows, 'delivered_per_core_s')[1]} | {agg(rows, 'server_cpu_util', 2)[1]} | "
              f"{agg(rows, 'p50_ms', 1)[1]} | {agg(rows, 'p99_ms', 1)[1]} | "
              f"{agg(rows, 'events_per_frame', 1)[1]} | {agg(rows, 'send_rate', 1)[1]} | "
              f"{agg(rows, 'post_p99_ms', 1)[1]} | {complete} | "
              f"{agg(rows, lambda r: r['server_rss_kib'] / 1024)[1]} | "
              f"{agg(rows, 'gen_cpu_util', 2)[1]} | "
              f"{agg(rows, lambda r: r['other_load']['core0'], 2)[1]} / "
              f"{agg(rows, lambda r: r['other_load'].get('core1'), 2)[1]} |")
        w("")
        if ours5 and sio5:
            ratios = ratio_by_run(ours5, sio5, "delivered_per_core_s")
            w(f"Ours/Socket.IO delivered per core at {ours5[0]['attendees']:,} attendees, per run: "
              + ", ".join(f"{x:.2f}×" for x in ratios) + ".")
            w("")
        gen_hot = [r for r in fan if r["gen_cpu_util"] > 0.95
                   and r["delivered_per_s"] < 0.95 * r["attendees"] * r["send_rate"]]
        if gen_hot:
            w(f"**Generator limit:** {len(gen_hot)} run(s) had the load generator's core ≥ 95 % "
              f"busy and fell short of attendees × sent/s; their delivered/s is a generator "
              f"figure, not a server figure.")
        else:
            w("Generator check: no run had the generator's core ≥ 95 % busy while delivering less "
              "than attendees × sent/s — the delivered figures are the servers'.")
        w("")

    send_fanout_section(w, data)
    fanout_supabase_section(w, data)
    cluster_section(w, data)
    from .bench_floor import floor_section, longpoll_floor_section  # lazily: it imports this

    floor_section(w, data)
    longpoll_floor_section(w, data)

    if idle:
        w("## Idle connections")
        w("")
        w("Each connection: WebSocket upgrade, token in the URL, `join` of the webinar, then "
          "silence except the heartbeats (the server's every 5 s, the client's every 10 s). "
          "KiB/connection = (RSS with all joined − RSS before) / connections. What each "
          "connection's objects cost (tracemalloc, `bench/idle_profile.py`): Findings, "
          "\"Idle memory\".")
        w("")
        w("| connections | KiB per connection | RSS before → after (MiB) | connects/s | "
          "server CPU while idle |")
        w("|---|---|---|---|---|")
        for vname, rows in by_variant(idle_all):
            w(f"| {rows[0]['connections']:,}{vtag(vname)} | "
              f"{agg(rows, 'kib_per_connection', 1)[1]} | "
              f"{agg(rows, lambda r: r['rss_before_kib'] / 1024)[1]} → "
              f"{agg(rows, lambda r: r['rss_after_kib'] / 1024)[1]} | "
              f"{agg(rows, 'connects_per_s')[1]} | {agg(rows, 'idle_cpu_util', 2)[1]} |")
        w("")

    snd = ok_rows(res, "send")
    if snd:
        w("## Send: POST /api/messages/create")
        w("")
        w("Open loop at 200 sends/s (16 keep-alive connections, 16 users, one webinar, slow mode "
          "off) for the latency; then closed loop with 16 requests in flight for the rate. Per "
          "core = creates / server-process CPU seconds; on PostgreSQL also including the "
          "database's CPU (all `postgres` processes).")
        w("")
        w("| database | p50 ms @200/s | p99 ms @200/s | creates/s (16 in flight) | per server core "
          "| per core incl. database | p99 ms (16 in flight) |")
        w("|---|---|---|---|---|---|---|")
        for kind in ("sqlite", "postgresql"):
            for vname, rows in by_variant([r for r in snd if r["db"] == kind]):
                w(f"| {kind}{vtag(vname)} | {agg(rows, 'p50_ms', 2)[1]} | "
                  f"{agg(rows, 'p99_ms', 2)[1]} | "
                  f"{agg(rows, 'creates_per_s')[1]} | {agg(rows, 'creates_per_core_s')[1]} | "
                  f"{agg(rows, 'creates_per_core_incl_db_s')[1]} | "
                  f"{agg(rows, 'closed_p99_ms', 1)[1]} |")
        w("")

    if lp:
        w("## Fallback: HTTP long-poll")
        w("")
        sample = lp[0].get("latency_pollers")
        w(f"{lp[0]['pollers']:,} attendees each long-poll `/changes?after_seq=<last>&wait=20` on "
          f"one keep-alive connection; {lp[0]['rate_target']} msgs/s are sent. "
          + (f"Latency: every message at a sample of {sample:,} pollers (every "
             f"{round(lp[0]['pollers'] / sample)}th, full JSON parse); completeness, gaps and "
             f"duplicates: every poller (the others check seqs with byte searches, "
             f"bench/README.md)." if sample else "Latency: every message at every poller."))
        w("")
        w("| pollers | send→delivered p50 / p99 ms | commit→delivered p50 / p99 ms | max ms | "
          "complete | poll answers/s | server CPU | POST p50 / p99 ms | sent/s achieved | "
          "POSTs unanswered after 30 s |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for vname, rows in by_variant(lp_all):
            w(f"| {rows[0]['pollers']:,}{vtag(vname)} | {agg(rows, 'p50_ms')[1]} / "
              f"{agg(rows, 'p99_ms')[1]} | {agg(rows, 'commit_p50_ms')[1]} / "
              f"{agg(rows, 'commit_p99_ms')[1]} | "
              f"{agg(rows, 'max_ms')[1]} | {min(r['complete_pollers'] for r in rows):,}/"
              f"{rows[0]['pollers']:,} | {agg(rows, 'poll_req_per_s')[1]} | "
              f"{agg(rows, 'server_cpu_util', 2)[1]} | {agg(rows, 'post_p50_ms')[1]} / "
              f"{agg(rows, 'post_p99_ms')[1]} | "
              f"{agg(rows, lambda r: r['posts'] / r['window_s'], 1)[1]} | "
              f"{agg(rows, lambda r: r.get('posts_unanswered'))[1]} |")
        w("")

    lps = ok_rows(res, "longpoll_scale")
    if lps:
        w("Smaller numbers of pollers, same workload (current code):")
        w("")
        w("| pollers | send→delivered p50 / p99 ms | commit→delivered p99 ms | poll answers/s | "
          "server CPU | POST p99 ms | POSTs unanswered |")
        w("|---|---|---|---|---|---|---|")
        groups3: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in lps:
            groups3[r["pollers"]].append(r)
        for n, rows in sorted(groups3.items()):
            w(f"| {n:,} | {agg(rows, 'p50_ms')[1]} / {agg(rows, 'p99_ms')[1]} | "
              f"{agg(rows, 'commit_p99_ms')[1]} | {agg(rows, 'poll_req_per_s')[1]} | "
              f"{agg(rows, 'server_cpu_util', 2)[1]} | {agg(rows, 'post_p99_ms')[1]} | "
              f"{agg(rows, lambda r: r.get('posts_unanswered'))[1]} |")
        w("")

    if pl:
        w("## Up-to-date poll vs a bare endpoint")
        w("")
        w("Closed loop, 32 keep-alive connections (32 users), alternating bare / poll rounds: "
          "`GET /healthz` (same Starlette app, no auth, no database) vs "
          "`GET /api/webinars/1/changes?after_seq=<head>` (token check, cached access, answered "
          "from the room's ring).")
        w("")
        w("| | req/s | req/s per server core | p99 ms |")
        w("|---|---|---|---|")
        for vname, rows in by_variant(pl_all):
            w(f"| bare `/healthz`{vtag(vname)} | {agg(rows, 'bare_req_per_s')[1]} | "
              f"{agg(rows, 'bare_req_per_core_s')[1]} | {agg(rows, 'bare_p99_ms', 1)[1]} |")
            w(f"| up-to-date poll{vtag(vname)} | {agg(rows, 'poll_req_per_s')[1]} | "
              f"{agg(rows, 'poll_req_per_core_s')[1]} | {agg(rows, 'poll_p99_ms', 1)[1]} |")
            w(f"| ratio{vtag(vname)} | {agg(rows, 'ratio', 2)[1]} | "
              f"{agg(rows, 'ratio_per_core', 2)[1]} | |")
        w("")

    af = ok_rows(res, "after")
    if af:
        w("## `messages?after=` on a big table")
        w("")
        w(f"{af[0]['messages']:,} messages over 10 webinars (ids interleaved, 1/10 in the queried "
          f"one) plus a quiet webinar (every 5,000th message, asked for `after=` one of its last "
          f"100 messages), {af[0]['queries']} random `after` positions, `limit=100`. Store = "
          f"`Store.list_messages` in the generator process (query + row decoding); HTTP = the "
          f"whole `GET /api/webinars/1/messages?after=…&limit=100`.")
        w("")
        w("| database | uses (webinar_id, id) | store p50 / p99 ms | HTTP p50 / p99 ms | "
          "SQL only p99 ms | quiet webinar: index; store p50 / p99 ms | "
          "before: plain `webinar_id = $1`: index; SQL p50 / p99 ms |")
        w("|---|---|---|---|---|---|---|")
        for kind in ("sqlite", "postgresql"):
            rows = [r for r in af if r["db"] == kind]
            if rows:
                plain = "yes" if all(r.get("plain_uses_index") for r in rows) else "**no**"
                w(f"| {kind} | {'yes' if all(r['uses_index'] for r in rows) else '**no**'} | "
                  f"{agg(rows, 'store_p50_ms', 2)[1]} / {agg(rows, 'store_p99_ms', 2)[1]} | "
                  f"{agg(rows, 'http_p50_ms', 2)[1]} / {agg(rows, 'http_p99_ms', 2)[1]} | "
                  f"{agg(rows, 'sql_p99_ms', 2)[1]} | "
                  f"{'yes' if all(r.get('quiet_uses_index') for r in rows) else '**no**'}; "
                  f"{agg(rows, 'quiet_p50_ms', 2)[1]} / {agg(rows, 'quiet_p99_ms', 2)[1]} | "
                  f"{plain}; "
                  f"{agg(rows, 'plain_sql_p50_ms', 2)[1]} / "
                  f"{agg(rows, 'plain_sql_p99_ms', 2)[1]} |")
        w("")
        for kind in ("sqlite", "postgresql"):
            rows = [r for r in af if r["db"] == kind]
            if rows:
                w(f"Plans on {kind}: the store's query; the same for the quiet webinar; the plain "
                  f"`webinar_id = $1 … ORDER BY id` form it replaced:")
                for key in ("plan", "quiet_plan", "plain_plan"):
                    if rows[0].get(key):
                        w("```")
                        w("\n".join(rows[0][key]))
                        w("```")
        w("")

    storm_rows = ok_rows(res, "storm")
    if storm_rows:
        w("## Reconnect storm")
        w("")
        s0 = storm_rows[0]
        w(f"{s0['attendees']:,} attendees are live; all sockets die at once; "
          f"{s0['missed_messages']} messages are sent meanwhile; then all reconnect in the same "
          f"instant, each joining with its `last_seq`, while the chat goes on at 10 msgs/s. "
          f"Caught up = has every seq up to the head at the start of the storm; complete = saw "
          f"every seq exactly once, in order, up to the last one sent.")
        w("")
        w("| server | all caught up s | p50 / p99 s | joined p50 / max s | complete | gaps / dups "
          "| server CPU s |")
        w("|---|---|---|---|---|---|---|")
        groups2: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in storm_rows:
            groups2["webinar-chat" + (f" + {r['variant']}" if r.get("variant") else "")].append(r)
        for name, rows in groups2.items():
            w(f"| {name} | {agg(rows, 'all_caught_up_s', 2)[1]} | "
              f"{agg(rows, 'caught_up_p50_s', 2)[1]} / {agg(rows, 'caught_up_p99_s', 2)[1]} | "
              f"{agg(rows, 'joined_p50_s', 2)[1]} / {agg(rows, 'joined_max_s', 2)[1]} | "
              f"{min(r['complete'] for r in rows):,}/{rows[0]['attendees']:,} | "
              f"{sum(r['gaps'] for r in rows)} / {sum(r['dups'] for r in rows)} | "
              f"{agg(rows, 'server_cpu_s', 1)[1]} |")
        w("")

    from .bench_start import login_section, start_section

    start_section(w, data)
    login_section(w, data)
    export_section(w, data)

    w("## Reproduce")
    w("")
    w("```sh")
    w(".venv/bin/pip install -e '.[bench]'     # matplotlib for the plots")
    w("(cd bench/socketio && npm ci)           # the Socket.IO comparison server")
    w(".venv/bin/python -m bench.run_all        # ~25 min; --quick for a ~3 min smoke check")
    w("```")
    w("")
    w("Durations (s): " + ", ".join(f"{k} {v}" for k, v in data.get("durations_s", {}).items())
      + ". Raw results: `bench/results/" + ("quick" if quick else "latest") + ".json`.")
    out = DOCS / "benchmarks.md"
    out.write_text("\n".join(lines) + "\n")
    return out


# --- transcript export ---------------------------------------------------------------------------

def export_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    """bench/bench_export.py: bytes, time and the server's RSS per size and format, and the
    peak RSS growth of the biggest size ÷ the smallest's, per run (then the median)."""
    rows = ok_rows(data["results"], "export")
    if not rows:
        return
    m = data["machine"]
    made = data.get("provenance", {}).get("export", {})
    sizes = sorted({r["messages"] for r in rows})
    small, big = sizes[0], sizes[-1]
    pg = f", PostgreSQL {made['postgresql']}" if made.get("postgresql") else ""
    w("## Transcript export: memory")
    w("")
    w(f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit "
      f"{made.get('commit', m['commit'])}, {made.get('date', m['date'])}; {m['cpu']}, "
      f"{m['cores']} cores, {m['memory_gib']} GiB{pg}. Figures are medians of "
      f"{len({r['run'] for r in rows})} run(s) with [min–max]; the ratio is taken within a run, "
      f"then the median.")
    w("")
    w(f"`GET /api/webinars/{{id}}/export?format=csv|json` (docs/export.md) of webinars of "
      f"{' and '.join(f'{n:,}' for n in sizes)} messages (~100 characters each; every 100th the "
      f"host's, every 20th staff-only, every 50th hidden, every 1,000th deleted), read to the end "
      f"over HTTP by a client on core 1 from a fresh `webinar-chat serve` on core 0, after a "
      f"warm-up export of an empty webinar. RSS before = the idle server's VmRSS; peak = its "
      f"VmHWM after the export, reset to the current RSS just before (`/proc/<pid>/clear_refs`), "
      f"checked against VmRSS sampled every 5 ms; growth = peak − before. Seeded with bulk SQL "
      f"(`bench/bench_export.py`).")
    w("")
    w("| database | messages | format | export MiB | wall s | rows/s | server CPU s | "
      "RSS before MiB | peak RSS growth MiB | growth, sampled MiB |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("sqlite", "postgresql"):
        for n in sizes:
            for f in ("csv", "json"):
                group = [r for r in rows if r["db"] == kind and r["messages"] == n
                         and r["format"] == f]
                if not group:
                    continue
                w(f"| {kind} | {n:,} | {f} | {agg(group, lambda r: r['bytes'] / 2**20, 1)[1]} | "
                  f"{agg(group, 'seconds', 2)[1]} | {agg(group, 'rows_per_s')[1]} | "
                  f"{agg(group, 'server_cpu_s', 2)[1]} | "
                  f"{agg(group, lambda r: r['rss_before_kib'] / 1024, 1)[1]} | "
                  f"{agg(group, lambda r: r['growth_kib'] / 1024, 1)[1]} | "
                  f"{agg(group, lambda r: (r['rss_peak_sampled_kib'] - r['rss_before_kib']) / 1024, 1)[1]} |")
    w("")
    w(f"Peak RSS growth, {big:,} ÷ {small:,} messages (same run; ~1 = memory does not grow "
      f"with the webinar):")
    w("")
    w("| database | format | export size ratio | peak RSS growth ratio |")
    w("|---|---|---|---|")
    for kind in ("sqlite", "postgresql"):
        for f in ("csv", "json"):
            group = [r for r in rows if r["db"] == kind and r["messages"] == big
                     and r["format"] == f and r.get("ratio") is not None]
            smalls = {r["run"]: r for r in rows if r["db"] == kind and r["messages"] == small
                      and r["format"] == f}
            if group:
                sizes_ratio = [{"x": r["bytes"] / smalls[r["run"]]["bytes"]} for r in group
                               if r["run"] in smalls]
                w(f"| {kind} | {f} | {agg(sizes_ratio, 'x', 1)[1]}× | "
                  f"{agg(group, 'ratio', 2)[1]}× |")
    seeded = {r["db"]: r.get("seed_s") for r in rows}
    w("")
    w("Seeding " + " + ".join(f"{n:,}" for n in sizes) + " messages took "
      + ", ".join(f"{fmt(v, 1)} s on {k}" for k, v in seeded.items()) + ".")
    w("")


# --- fan-out: Supabase Realtime's protocol beside ours --------------------------------------------

PROTOCOL_LABELS = {"ours": "ours (`/realtime`)",
                   "supabase": "Supabase Realtime (`/realtime/v1/websocket`, vsn 2.0.0)"}


GEN_BOUND = 0.8  # a load generator at or above this share of its core sets the pace itself


def gen_flag(rows: list[dict[str, Any]]) -> str:
    """The generator's CPU as a table cell, flagged when it may have been the bottleneck."""
    v, s = agg(rows, "gen_cpu_util", 2)
    return s + (" **generator-bound**" if v == v and v >= GEN_BOUND else "")


def supabase_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Supabase's protocol ÷ ours, delivered/s per core, per run at the largest attendee count."""
    rows = [r for r in ok_rows(res, "fanout_supabase") if not r.get("variant")]
    if not rows:
        return []
    n = max(r["attendees"] for r in rows)
    at_n = [r for r in rows if r["attendees"] == n]
    theirs = [r for r in at_n if r.get("protocol") == "supabase"]
    ours = [r for r in at_n if r.get("protocol", "ours") == "ours"]
    v, s = agg([{"x": x} for x in ratio_by_run(theirs, ours, "delivered_per_core_s")], "x", 2)
    return [(f"Supabase-compatible endpoint, fan-out {n:,} attendees: delivered/s per core ÷ our "
             "protocol's (same run)", "≥ 0.80", s, verdict(v, 0.8, True))]


def send_fanout_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    rows = ok_rows(res, "send_fanout")
    for kind in ("sqlite", "postgresql"):
        for vname, group in by_variant([r for r in rows if r.get("db") == kind]):
            v, s = agg(group, "post_p99_ms", 1)
            out.append((prefix(vname) + f"send while fanning out, {kind}: POST create p99, "
                        f"{group[0]['attendees']:,} WS attendees receiving 100 msgs/s",
                        "≤ 25 ms", f"{s} ms (generator CPU {gen_flag(group)})",
                        verdict(v, 25, False)))
    return out


def send_fanout_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    """bench_send_fanout: the senders' POST latency under the fan-out workload, both databases."""
    rows = ok_rows(data["results"], "send_fanout")
    if not rows:
        return
    m = data["machine"]
    made = data.get("provenance", {}).get("send_fanout", {})
    commit = made.get("commit", m["commit"])
    if made.get("src_uncommitted"):
        commit += " with uncommitted changes in src/"
    r0 = rows[0]
    w("## Send while fanning out")
    w("")
    w(f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit {commit}, "
      f"{made.get('date', m['date'])}. Medians of {len({r['run'] for r in rows})} run(s) with "
      f"[min–max].")
    w("")
    w(f"The fan-out workload ({r0['attendees']:,} WebSocket attendees, {r0['rate_target']} msgs/s "
      f"offered by the fan-out benchmark's senders, open loop) on SQLite and "
      f"on PostgreSQL, side by side in each run on a fresh server and database each, the order "
      f"alternating. POST latency is the senders' request → response time (the create: access "
      f"check, one transaction, release to the room); send→delivered includes it.")
    w("")
    w("| database | POST p50 ms | POST p99 ms | sent/s | p50 send→delivered ms | p99 ms | "
      "delivered/s per core | server CPU | events/frame | generator CPU | other load c0/c1 |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, vname, group in [(kind, vname, group) for kind in ("sqlite", "postgresql")
                               for vname, group in by_variant([r for r in rows
                                                               if r.get("db") == kind])]:
        w(f"| {kind}{vtag(vname)} | {agg(group, 'post_p50_ms', 1)[1]} | {agg(group, 'post_p99_ms', 1)[1]} | "
          f"{agg(group, 'send_rate', 1)[1]} | {agg(group, 'p50_ms', 1)[1]} | "
          f"{agg(group, 'p99_ms', 1)[1]} | {agg(group, 'delivered_per_core_s')[1]} | "
          f"{agg(group, 'server_cpu_util', 2)[1]} | {agg(group, 'events_per_frame', 1)[1]} | "
          f"{gen_flag(group)} | "
          f"{agg(group, lambda r: r['other_load']['core0'], 2)[1]} / "
          f"{agg(group, lambda r: r['other_load'].get('core1'), 2)[1]} |")
    w("")


def fanout_supabase_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    """bench_fanout_supabase: the fan-out workload over our protocol and over Supabase Realtime's
    (docs/supabase.md), side by side in each run; supabase ÷ ours per run, then the median."""
    rows = ok_rows(data["results"], "fanout_supabase")
    if not rows:
        return
    m = data["machine"]
    made = data.get("provenance", {}).get("fanout_supabase", {})
    commit = made.get("commit", m["commit"])
    if made.get("src_uncommitted"):
        commit += " with uncommitted changes in src/"
    r0 = rows[0]
    w("## Fan-out: Supabase Realtime's protocol beside ours")
    w("")
    w(f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit {commit}, "
      f"{made.get('date', m['date'])}; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. "
      f"Figures are medians of {len({r['run'] for r in rows})} run(s) with [min–max]; the ratio "
      f"is taken within a run, then the median.")
    w("")
    w(f"The fan-out workload above (one webinar, {r0['rate_target']} msgs/s offered for warm-up + "
      f"window, SQLite, every {r0['attendees'] // r0['sampled_clients']}th attendee parsing every "
      f"frame for latency in a light process, the others counting in a second one) with the "
      f"attendees on our protocol or on Supabase Realtime's (docs/supabase.md), each on a fresh "
      f"server and database, side by side in each run, the order alternating from run to run. "
      f"Supabase attendees connect to `/realtime/v1/websocket?apikey=<token>&vsn=2.0.0`, join "
      f"`realtime:webinar:1:messages` the seed's way (`phx_join` with `postgres_changes` `*` on "
      f"`public.messages`, `webinar_id=eq.1`, and the token as `access_token`), wait for the "
      f"`phx_reply` ok and heartbeat on `phoenix` every 25 s. Each message reaches them as one "
      f"`postgres_changes` push in a WebSocket frame of its own (ours puts every event of a "
      f"batch in one frame); the sample takes the latency from the send time in "
      f"`record.content`, the others count `\"INSERT\"` (one per push) in the raw stream. The "
      f"server builds a batch's pushes once per channel key and audience and writes those bytes "
      f"to every socket subscribed the same way (server/hub.py, `Delivery.channel_wire`).")
    w("")
    w("| protocol | attendees | delivered/s | per server core | server CPU | p50 ms | p99 ms | "
      "events/frame | sent/s | POST p99 ms | complete | RSS MiB | generator CPU "
      "(sample + bulk) | other load c0/c1 |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[int, str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["attendees"], r.get("protocol", "ours"), r.get("variant"))].append(r)
    order = list(PROTOCOL_LABELS)
    for (n, protocol, variant), group in sorted(
            groups.items(), key=lambda x: (x[0][0], x[0][2] or "", order.index(x[0][1]))):
        split = (f"{agg(group, nth('gen_cpu_util_split', 0), 2)[1]} + "
                 f"{agg(group, nth('gen_cpu_util_split', 1), 2)[1]}")
        w(f"| {PROTOCOL_LABELS[protocol]}{vtag(variant)} | {n:,} | "
          f"{agg(group, 'delivered_per_s')[1]} | {agg(group, 'delivered_per_core_s')[1]} | "
          f"{agg(group, 'server_cpu_util', 2)[1]} | {agg(group, 'p50_ms', 1)[1]} | "
          f"{agg(group, 'p99_ms', 1)[1]} | "
          f"{agg(group, 'events_per_frame', 1)[1]} | "
          f"{agg(group, 'send_rate', 1)[1]} | {agg(group, 'post_p99_ms', 1)[1]} | "
          f"{min(r['clients_complete'] for r in group):,}/{n:,} | "
          f"{agg(group, lambda r: r['server_rss_kib'] / 1024)[1]} | "
          f"{agg(group, 'gen_cpu_util', 2)[1]} ({split}) | "
          f"{agg(group, lambda r: r['other_load']['core0'], 2)[1]} / "
          f"{agg(group, lambda r: r['other_load'].get('core1'), 2)[1]} |")
    w("")
    w("Supabase ÷ ours, same run (the two servers measured one after the other):")
    w("")
    w("| attendees | delivered/s per server core | per run | server CPU | p99 |")
    w("|---|---|---|---|---|")
    for (n, protocol, variant), theirs in sorted(groups.items(),
                                                 key=lambda x: (x[0][0], x[0][2] or "")):
        if protocol != "supabase":
            continue
        ours = groups.get((n, "ours", variant), [])
        per_core = ratio_by_run(theirs, ours, "delivered_per_core_s")
        cpu = ratio_by_run(theirs, ours, "server_cpu_util")
        p99 = ratio_by_run(theirs, ours, "p99_ms")
        w(f"| {n:,}{vtag(variant)} | {agg([{'x': x} for x in per_core], 'x', 2)[1]}× | "
          + ", ".join(f"{x:.2f}×" for x in per_core)
          + f" | {agg([{'x': x} for x in cpu], 'x', 2)[1]}× | "
          f"{agg([{'x': x} for x in p99], 'x', 2)[1]}× |")
    w("")
    errors = sum(r.get("sampled_errors", 0) for r in rows)
    lost = sum(r["disconnected"] for r in rows)
    if errors or lost:
        w(f"**Errors:** {errors} error push(es) (`phx_close`, `phx_error`, `system` errors) at the "
          f"sampled attendees and {lost} disconnected socket(s) over all runs.")
        w("")
    gen_hot = [r for r in rows if r["gen_cpu_util"] > 0.95]
    short = [r for r in gen_hot if r["delivered_per_s"] < 0.95 * r["attendees"] * r["send_rate"]]
    if short:
        w(f"**Generator limit:** {len(short)} run(s) had the load generator's core ≥ 95 % busy "
          f"and fell short of attendees × sent/s; their delivered/s is a generator figure.")
    elif gen_hot:
        which = sorted({(r["attendees"], r.get("protocol", "ours")) for r in gen_hot})
        w(f"Generator check: {len(gen_hot)} run(s) had the generator's core ≥ 95 % busy ("
          + ", ".join(f"{protocol} at {n:,}" for n, protocol in which) + "), all delivering "
          "attendees × sent/s: the delivered and per-core figures are the server's, but those "
          "runs' latencies include the generator's own queueing.")
    else:
        w("Generator check: no run had the generator's core ≥ 95 % busy.")
    w("")


# --- two processes + Redis ------------------------------------------------------------------------

CLUSTER_LABELS = {"one": "1 process, no bus", "one+redis": "1 process + Redis bus (own echo)",
                  "two": "2 processes + Redis bus"}
# Targets of the cluster benchmark (bench/README.md).
CLUSTER_RATIO = 90  # % of one process's delivered/s per server core
CLUSTER_P99_OTHER_MS = 150


def cluster_rows(res: dict[str, Any], setup: str,
                 variant: str | None = None) -> list[dict[str, Any]]:
    """One set-up's rows of the current code, or of `variant`."""
    return [r for r in ok_rows(res, "cluster")
            if r.get("setup") == setup and r.get("variant") == variant]


def cluster_variants(res: dict[str, Any]) -> list[str]:
    return sorted({r["variant"] for r in ok_rows(res, "cluster") if r.get("variant")})


def nth(key: str, k: int) -> Callable[[dict[str, Any]], Any]:
    """Process k's entry of a per-process list (None where the run has none)."""
    return lambda r: (r.get(key) or [None] * (k + 1))[k]


def all_complete(rows: list[dict[str, Any]]) -> bool:
    return all(r["sampled_in_order"] == r["sampled_clients"]
               and r["clients_complete"] == r["attendees"] for r in rows)


def cluster_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    two = cluster_rows(res, "two")
    if not two:
        return []
    n = two[0]["attendees"]
    head = f"2 processes + Redis, {n:,} WS attendees, 100 msgs/s, PostgreSQL"
    out = []
    v, s = agg(two, lambda r: r["ratio_per_core"] and 100 * r["ratio_per_core"])
    out.append((f"{head}: delivered/s per server core ÷ 1 process (same run)",
                f"≥ {CLUSTER_RATIO} %", s + " %", verdict(v, CLUSTER_RATIO, True)))
    v, s = agg(two, "p99_other_ms", 1)
    out.append((f"{head}: p99 send→delivered, attendee on the other process",
                f"≤ {CLUSTER_P99_OTHER_MS} ms", s + " ms",
                verdict(v, CLUSTER_P99_OTHER_MS, False)))
    v, s = agg(two, "publishes_per_change", 3)
    out.append((f"{head}: Redis PUBLISH calls per change committed", "≤ 1", s,
                verdict(v, 1, False)))
    v, s = agg(two, "subscriptions_per_node", 2)
    out.append((f"{head}: Redis subscriptions per node", "≤ 1", s, verdict(v, 1, False)))
    sampled = min(r["sampled_in_order"] for r in two)
    complete = min(r["clients_complete"] for r in two)
    out.append((f"{head}: every message exactly once, in order (sampled); every attendee got "
                "every message (all)", "all",
                f"{sampled}/{two[0]['sampled_clients']} sampled; {complete:,}/{n:,} all (worst run)",
                "**met**" if all_complete(two) else "**missed**"))
    for vname in cluster_variants(res):
        vtwo = cluster_rows(res, "two", vname)
        v, s = agg(vtwo, lambda r: r["ratio_per_core"] and 100 * r["ratio_per_core"])
        out.append((prefix(vname) + f"{head}: delivered/s per server core ÷ 1 process",
                    f"≥ {CLUSTER_RATIO} %", s + " %", verdict(v, CLUSTER_RATIO, True)))
        v, s = agg(vtwo, "p99_other_ms", 1)
        out.append((prefix(vname) + f"{head}: p99 send→delivered, attendee on the other "
                    "process", f"≤ {CLUSTER_P99_OTHER_MS} ms", s + " ms",
                    verdict(v, CLUSTER_P99_OTHER_MS, False)))
    return out


def cluster_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    res = data["results"]
    two = cluster_rows(res, "two")
    if not two:
        return
    r0 = two[0]
    n = r0["attendees"]
    m = data["machine"]
    # This benchmark may come from a later `--only` run merged into the full results.
    made = data.get("provenance", {}).get("cluster", {})
    w("## Two processes + Redis (cluster)")
    w("")
    w(f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit "
      f"{made.get('commit', m['commit'])}, {made.get('date', m['date'])}; {m['cpu']}, "
      f"{m['cores']} cores; Redis {made.get('redis', '?')}, PostgreSQL "
      f"{made.get('postgresql', '?')}. Figures are medians of "
      f"{len({r['run'] for r in two})} run(s) with [min–max]; ratios and differences are taken "
      f"within a run, then the median.")
    w("")
    w(f"The fan-out workload (one webinar, {r0['rate_target']} msgs/s offered for warm-up + "
      f"window, every 50th attendee parsing every frame for latency) on **PostgreSQL**, in three "
      f"set-ups side by side in each run, each on a fresh database: two `webinar-chat serve` "
      f"processes sharing a private `redis-server` (`BUS_URL`, a channel of their own, "
      f"`--save '' --appendonly no`), {n // 2:,} attendees and half of the POSTs on each "
      f"(attendee and sender connection *k* go to process *k* mod 2; message *i* is POSTed to "
      f"process *i* mod 2); one process with no bus (the baseline: the fan-out section above is "
      f"on SQLite, a different write path); and one process publishing to Redis and reading back "
      f"its own echo (the bus's own cost). Each sampled latency is tagged *same* (sent through "
      f"the attendee's process) or *other* (sent through the other process: committed there, "
      f"over Redis, then fanned out).")
    w("")
    w("**Pinning:** both server processes on core 0, the load generator (and Redis) on core 1. "
      "The servers then share exactly one core, so \"delivered/s per server core\" = deliveries ÷ "
      "the sum of both processes' CPU seconds (`/proc/<pid>/stat`) is comparable with one process "
      "alone on that core, and the generator keeps its own core as in the fan-out benchmark. One "
      "process per core would have put a server beside the generator (≈ 0.8 of core 1 at 5,000 "
      "attendees): each would slow the other, and the latency sample would measure the "
      "generator. The price of this choice: the two processes take turns on core 0, so "
      "wall-clock capacity does not double here, and the latencies include that sharing. "
      "PostgreSQL is the machine's shared server and is not pinned: its CPU (this database's "
      "backends, and all `postgres` processes, which includes other people's tests) and Redis's "
      "are reported beside.")
    w("")
    w("| set-up | delivered/s | per server core | server CPU (by process) | server CPU µs per "
      "change | events/frame | same process p50 / p99 ms | other process p50 / p99 ms | in order "
      "(sampled) | complete (all) | sent/s (by process) | POST p99 ms | PostgreSQL CPU: this db "
      "/ all | Redis CPU | generator CPU | other load c0/c1 |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in [(name + vtag(vname), cluster_rows(res, setup, vname))
                       for vname in [None, *cluster_variants(res)]
                       for setup, name in CLUSTER_LABELS.items()]:
        if not rows:
            continue
        nodes = rows[0]["nodes"]
        by_node = " (" + " + ".join(
            agg(rows, nth("server_cpu_util_by_node", k), 2)[1]
            for k in range(nodes)) + ")" if nodes > 1 else ""
        # The whole run's acknowledged POSTs through each process (warm-up included).
        sent_by = " (" + " / ".join(agg(rows, nth("sent_by_node", k))[1]
                                    for k in range(nodes)) + " POSTs)" if nodes > 1 else ""
        other = (f"{agg(rows, 'p50_other_ms', 1)[1]} / {agg(rows, 'p99_other_ms', 1)[1]}"
                 if nodes > 1 else "–")
        w(f"| {name} | {agg(rows, 'delivered_per_s')[1]} | {agg(rows, 'delivered_per_core_s')[1]}"
          f" | {agg(rows, 'server_cpu_util', 2)[1]}{by_node} | "
          f"{agg(rows, 'server_cpu_per_change_us')[1]} | {agg(rows, 'events_per_frame', 1)[1]} | "
          f"{agg(rows, 'p50_same_ms', 1)[1]} / {agg(rows, 'p99_same_ms', 1)[1]} | {other} | "
          f"{min(r['sampled_in_order'] for r in rows)}/{rows[0]['sampled_clients']} | "
          f"{min(r['clients_complete'] for r in rows):,}/{n:,} | "
          f"{agg(rows, 'send_rate', 1)[1]}{sent_by} | {agg(rows, 'post_p99_ms', 1)[1]} | "
          f"{agg(rows, 'db_backend_cpu_util', 2)[1]} / {agg(rows, 'postgres_cpu_util', 2)[1]} | "
          f"{agg(rows, 'redis_cpu_util', 3)[1] if rows[0].get('bus') else '–'} | "
          f"{agg(rows, 'gen_cpu_util', 2)[1]} | "
          f"{agg(rows, lambda r: r['other_load']['core0'], 2)[1]} / "
          f"{agg(rows, lambda r: r['other_load'].get('core1'), 2)[1]} |")
    w("")
    w("The bus, and what two processes cost beyond one (medians of the per-run figures; every "
      "difference is taken within a run):")
    w("")
    w("| figure | target | measured: median [min–max] | verdict |")
    w("|---|---|---|---|")
    v, s = agg(two, lambda r: r["ratio_per_core"] and 100 * r["ratio_per_core"])
    w(f"| delivered/s per server core, 2 processes ÷ 1 process | ≥ {CLUSTER_RATIO} % | {s} % | "
      f"{verdict(v, CLUSTER_RATIO, True)} |")
    v, s = agg(two, "p99_other_ms", 1)
    w(f"| p99 send→delivered, other process (same process: "
      f"{agg(two, 'p99_same_ms', 1)[1]} ms; 1 process: "
      f"{agg(cluster_rows(res, 'one'), 'p99_ms', 1)[1]} ms) | ≤ {CLUSTER_P99_OTHER_MS} ms | "
      f"{s} ms | {verdict(v, CLUSTER_P99_OTHER_MS, False)} |")
    v, s = agg(two, "publishes_per_change", 3)
    other = agg(two, "other_publishes_sent_phase")[1] if all(
        "other_publishes_sent_phase" in r for r in two) else "not counted in this run"
    w(f"| Redis PUBLISH calls ÷ changes committed (`cmdstat_publish` calls; over the whole send "
      f"phase, from before the first POST to after the last answer, "
      f"{agg(two, 'changes_sent_phase')[1]} changes; less the nodes' messages that are not "
      f"changes — presence, access, probes: `bus_published` − `bus_published_changes`, "
      f"{other}) | ≤ 1 | {s} | {verdict(v, 1, False)} |")
    w(f"| bytes into Redis per change (`total_net_input_bytes`, window) | | "
      f"{agg(two, 'bus_bytes_per_change')[1]} | |")
    v, s = agg(two, "subscriptions_per_node", 2)
    w(f"| subscriptions per node (`PUBSUB NUMSUB` of every channel + `NUMPAT`, ÷ 2) | ≤ 1 | {s} "
      f"| {verdict(v, 1, False)} |")
    w(f"| connections in pub/sub mode per node (`CLIENT LIST` flag P, ÷ 2) | | "
      f"{agg(two, 'pubsub_clients_per_node', 2)[1]} | |")
    w(f"| server CPU per change beyond 1 process (both processes − 1 process, ÷ changes) | | "
      f"{agg(two, 'extra_cpu_per_change_us')[1]} µs "
      f"({agg(two, lambda r: r['extra_cpu_share'] and 100 * r['extra_cpu_share'])[1]} %) | |")
    w(f"| … of which the bus: 1 process with Redis − without (PUBLISH + read and decode back) | "
      f"| {agg(two, 'bus_cpu_per_change_us')[1]} µs | |")
    w(f"| … of which the second process: 2 processes − 1 process with Redis | | "
      f"{agg(two, 'split_cpu_per_change_us')[1]} µs | |")
    w("| per process: its CPU per change − half of 1 process's | | " + " / ".join(
        agg(two, nth("extra_cpu_per_change_by_node_us", k))[1]
        for k in range(r0["nodes"])) + " µs | |")
    w("")
    w("*Bus CPU per change on the receiving process*: each change is PUBLISHed once by the process "
      "that committed it and received and decoded once by the other. The one-process-with-Redis "
      "set-up does both for every change (it reads back its own echo and drops it after the "
      "decode), so its CPU per change minus the no-bus process's is the bus's cost of one change, "
      "an upper bound on the receiving side's share. The rest of what two processes spend beyond "
      "one is not the bus: every process repeats the per-change work of its room (ticks, building "
      "and encoding each frame once for its own sockets) and its fixed costs (heartbeats, the 5 s "
      "safety poll of each room's head), and the two take turns on one core. These differences "
      "are small against the run-to-run noise of CPU per change: most of a change's cost is its "
      "fan-out, which gets cheaper per change when a busier process packs more events into each "
      "frame (events/frame above), so they are read as medians over runs, not per run.")
    w("")
    sqlite = [r for r in ok_rows(res, "fanout") if r["kind"] == "chat" and not r.get("variant")
              and r["attendees"] == n]
    if sqlite:
        w(f"For reference, one process on SQLite (the fan-out section above, {n:,} attendees, "
          f"from the run of the top of this page): "
          f"{agg(sqlite, 'delivered_per_core_s')[1]} delivered/s per core, p99 "
          f"{agg(sqlite, 'p99_ms', 1)[1]} ms.")
        w("")
    rows = ok_rows(res, "cluster")
    noise, _ = agg(rows, lambda r: r["other_load"]["core0"], 2)
    if noise > 0.15:
        w(f"**Noisy run:** other processes took a median {noise:.0%} of the servers' core during "
          f"the windows (other load column). Per-core figures hold up better than latencies, "
          f"but a server that gets less of its core also packs more events into each frame, "
          f"which makes its CPU per change lower; compare set-ups within a run.")
        w("")
    gen_hot = [r for r in rows if r["gen_cpu_util"] > 0.95
               and r["delivered_per_s"] < 0.95 * r["attendees"] * r["send_rate"]]
    if gen_hot:
        w(f"**Generator limit:** {len(gen_hot)} run(s) had the load generator's core ≥ 95 % busy "
          f"and fell short of attendees × sent/s.")
    else:
        w("Generator check: no run had the generator's core ≥ 95 % busy while delivering less "
          "than attendees × sent/s.")
    w("")


def ratio_by_run(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> list[float]:
    by_run = {r["run"]: r for r in theirs}
    out = []
    for r in ours:
        t = by_run.get(r["run"])
        if t and t.get(key) and r.get(key):
            out.append(r[key] / t[key])
    return out


# --- before / after ------------------------------------------------------------------------------

def before_after(w: Callable[[str], None], before: dict[str, Any], after: dict[str, Any]) -> None:
    """The headline figures before the changes of bench/findings.md were merged (with each
    proposed change as measured then, side by side), and now."""
    b, a = before["results"], after["results"]

    def pick(res: dict[str, Any], bench: str, key: str | Callable[[dict[str, Any]], Any],
             variant: str | None = None, digits: int = 0, **match: Any) -> str:
        rows = [r for r in ok_rows(res, bench) if r.get("variant") == variant
                and all(r.get(k) == v for k, v in match.items())]
        return agg(rows, key, digits)[1] if rows else "–"

    def ratio(res: dict[str, Any], variant: str | None) -> str:
        fan = ok_rows(res, "fanout")
        ours = [r for r in fan if r["kind"] == "chat" and r.get("variant") == variant
                and r["attendees"] == 5000]
        sio = [r for r in fan if r["kind"] == "socketio" and r["attendees"] == 5000]
        vals = ratio_by_run(ours, sio, "delivered_per_core_s")
        return agg([{"x": x} for x in vals], "x", 2)[1] + "×" if vals else "–"

    def lp10k(res: dict[str, Any], variant: str | None) -> str:
        rows = [r for r in ok_rows(res, "longpoll") if r.get("variant") == variant]
        if not rows:
            return "–"
        v, s = agg(rows, "p99_ms")
        return s if v == v else "nothing delivered (sends starve)"

    def storm_n(res: dict[str, Any]) -> str:
        return "/".join(f"{n:,}" for n in sorted({r["attendees"] for r in ok_rows(res, "storm")
                                                  if not r.get("variant")})) or "–"

    fan_v = "tick-after-flush+create-one-hop"
    rows: list[tuple[str, str, str, str, str]] = [
        ("fan-out 5,000: delivered/s per core", "≥ 500,000",
         pick(b, "fanout", "delivered_per_core_s", kind="chat", attendees=5000),
         pick(b, "fanout", "delivered_per_core_s", fan_v, kind="chat", attendees=5000),
         pick(a, "fanout", "delivered_per_core_s", kind="chat", attendees=5000)),
        ("fan-out 5,000: p99 send→delivered ms", "≤ 250",
         pick(b, "fanout", "p99_ms", digits=1, kind="chat", attendees=5000),
         pick(b, "fanout", "p99_ms", fan_v, digits=1, kind="chat", attendees=5000),
         pick(a, "fanout", "p99_ms", digits=1, kind="chat", attendees=5000)),
        ("fan-out 5,000: events per frame", "",
         pick(b, "fanout", "events_per_frame", digits=1, kind="chat", attendees=5000),
         pick(b, "fanout", "events_per_frame", fan_v, digits=1, kind="chat", attendees=5000),
         pick(a, "fanout", "events_per_frame", digits=1, kind="chat", attendees=5000)),
        ("vs Socket.IO per core (same run)", "≥ 2×", ratio(b, None), ratio(b, fan_v),
         ratio(a, None)),
        ("send SQLite: creates/s per core", "≥ 2,000",
         pick(b, "send", "creates_per_core_s", db="sqlite"),
         pick(b, "send", "creates_per_core_s", "create-one-hop+uvicorn-standard", db="sqlite"),
         pick(a, "send", "creates_per_core_s", db="sqlite")),
        ("send SQLite: p99 ms at 200/s", "≤ 15",
         pick(b, "send", "p99_ms", digits=1, db="sqlite"),
         pick(b, "send", "p99_ms", "create-one-hop+uvicorn-standard", digits=1, db="sqlite"),
         pick(a, "send", "p99_ms", digits=1, db="sqlite")),
        ("send PostgreSQL: creates/s per core", "≥ 2,000",
         pick(b, "send", "creates_per_core_s", db="postgresql"),
         pick(b, "send", "creates_per_core_s", "create-one-hop+uvicorn-standard",
              db="postgresql"),
         pick(a, "send", "creates_per_core_s", db="postgresql")),
        ("send PostgreSQL: p99 ms at 200/s", "≤ 15",
         pick(b, "send", "p99_ms", digits=1, db="postgresql"),
         pick(b, "send", "p99_ms", "create-one-hop+uvicorn-standard", digits=1, db="postgresql"),
         pick(a, "send", "p99_ms", digits=1, db="postgresql")),
        ("long-poll 10,000: p99 ms", "≤ 1,000", lp10k(b, None),
         lp10k(b, "create-one-hop+uvicorn-standard"), lp10k(a, None)),
        ("long-poll 500: p99 ms", "(≤ 1,000)",
         pick(b, "longpoll_scale", "p99_ms", pollers=500), "–",
         pick(a, "longpoll_scale", "p99_ms", pollers=500)),
        ("long-poll 1,000: p99 ms", "(≤ 1,000)",
         pick(b, "longpoll_scale", "p99_ms", pollers=1000), "–",
         pick(a, "longpoll_scale", "p99_ms", pollers=1000)),
        ("long-poll 2,000: p99 ms", "(≤ 1,000)",
         pick(b, "longpoll_scale", "p99_ms", pollers=2000), "–",
         pick(a, "longpoll_scale", "p99_ms", pollers=2000)),
        ("up-to-date poll / bare, per core", "≥ 0.60",
         pick(b, "poll", "ratio_per_core", digits=2),
         pick(b, "poll", "ratio_per_core", "uvicorn-standard", digits=2),
         pick(a, "poll", "ratio_per_core", digits=2)),
        ("up-to-date poll: req/s per core", "",
         pick(b, "poll", "poll_req_per_core_s"),
         pick(b, "poll", "poll_req_per_core_s", "uvicorn-standard"),
         pick(a, "poll", "poll_req_per_core_s")),
        (f"reconnect storm {storm_n(b)} → {storm_n(a)}: all caught up s", "≤ 10",
         pick(b, "storm", "all_caught_up_s", digits=2),
         pick(b, "storm", "all_caught_up_s", "replay-encode-once", digits=2),
         pick(a, "storm", "all_caught_up_s", digits=2)),
        ("idle 10,000: KiB per connection", "≤ 20",
         pick(b, "idle", "kib_per_connection", digits=1), "–",
         pick(a, "idle", "kib_per_connection", digits=1)),
    ]
    w("## Before → after")
    w("")
    w(f"*Before*: the server at commit {before.get('src_commit', '?')}, full run of "
      f"{before['machine']['date']}. *Proposed*: the change(s) of bench/findings.md measured "
      f"then, side by side, as patched copies (`bench/variants/`: `{fan_v}` for fan-out, "
      f"`create-one-hop+uvicorn-standard` for send and long-poll, `uvicorn-standard` for poll, "
      f"`replay-encode-once` for the storm). *After*: the current code, this run, where those "
      f"changes are merged (first round, 37fee60: one thread hop per write, tick after flush, "
      f"encode once, long-poll memo, token cache, uvloop + httptools) together with the second "
      f"round (sliced fan-out straight to the transports, long-poll fast path, one-statement "
      f"create on PostgreSQL, history pages pinned to (webinar_id, id); bench/findings.md). "
      f"Before and after are different runs on a shared machine; the per-core figures are the "
      f"comparable ones. Raw data: "
      f"`bench/results/before.json`.")
    w("")
    w("| figure | target | before | proposed (same run as before) | after (now) |")
    w("|---|---|---|---|---|")
    for row in rows:
        w("| " + " | ".join(row) + " |")
    w("")
