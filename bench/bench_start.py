"""Webinar start and log-in (docs/performance-targets.md): the benchmarks, their report sections and
their rows for the targets table.

- `start`: 10,000 attendees (tokens issued beforehand) connect at instants spread uniformly over
  30 s and join fresh (no `last_seq`), each also loading the history page, while a host sends
  5 msgs/s (bench/loadgen.py `start`). Target: all joined with history ≤ 10 s after the last
  connect; sends during the storm p99 ≤ 250 ms.
- `login`: closed-loop `POST /api/auth/login` on users with real argon2 hashes (the app's own
  `hash_password`, its production parameters, named in the result), and beside it the same
  closed loop on `GET /api/me` authenticated by HS256 tokens of a host platform
  (docs/external-auth.md): first use (provisioning), a new token of a known subject, a token
  used again; and our own token on the same endpoint (bench/loadgen.py `login`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import chat_server, new_database, run_loadgen, seed

# A host sends at a steady rate during the whole start; the webinar has a history of a few
# hundred messages, so that each fresh attendee's history page (limit 100, as the web client's
# HISTORY_PAGE) is a full page.
START = {"rate": 5, "hosts": 2, "history_messages": 300, "history_limit": 100,
         # The host keeps sending this long after the last connect (the target's window).
         "tail_s": 10.0, "sender_conns": 4, "join_timeout": 60}
# Log-in: enough requests in flight to keep the server's core busy (argon2 runs in threads of
# its default pool, all on the server's core); users round robin, so that no per-account
# bucket matters.
LOGIN = {"users": 200, "concurrency": 8, "password": "bench-password"}
# The host platform's HS256 secret and issuer (docs/external-auth.md); the webinars claim
# registers a provisioned user for webinar 1 on the token's first use.
EXTERNAL_SECRET = "bench-platform-secret-" + "y" * 40
EXTERNAL_ISSUER = "https://platform.bench.test"
EXTERNAL_ENV = {"EXTERNAL_JWT_SECRET": EXTERNAL_SECRET, "EXTERNAL_JWT_ISSUER": EXTERNAL_ISSUER,
                "EXTERNAL_JWT_WEBINARS_CLAIM": "webinars",
                # The generator logs in as many users from one address at rates far above any
                # person's: buckets it never empties (the limiter still runs on every log-in).
                "RATE_LIMIT_LOGIN_ACCOUNT_IP": "1000000/1", "RATE_LIMIT_LOGIN_ACCOUNT": "1000000/1",
                "RATE_LIMIT_LOGIN_IP": "1000000/1"}


def log(msg: str) -> None:
    from .run_all import log as run_log

    run_log(msg)


# --- webinar start -------------------------------------------------------------------------------

def make_hosts(db_url: str, host_ids: list[int]) -> None:
    """The senders are the webinar's hosts (seed registers everybody as an attendee)."""
    con = sqlite3.connect(db_url.split("///", 1)[1])
    try:
        con.executemany("UPDATE registrations SET role = 'host' WHERE user_id = ?",
                        [(u,) for u in host_ids])
        con.commit()
    finally:
        con.close()


def start_once(work: Path, n: int, spread: float, hosts: list[int],
               variant: str | None) -> dict[str, Any]:
    """One webinar start on a fresh database and server (the current code, or `variant`)."""
    db = new_database("sqlite")
    try:
        seed(db, users=n + len(hosts), messages=START["history_messages"])
        make_hosts(db.url, hosts)
        with chat_server(db, work, variant) as srv:
            return run_loadgen({"mode": "start", "attendees": n, "spread_s": spread,
                                "sender_ids": hosts, "port": srv.port, "server_pid": srv.pid,
                                **{k: v for k, v in START.items() if k != "hosts"}},
                               timeout=spread + 300)
    finally:
        db.close()


def bench_start(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    from .run_all import tag, variants

    out = []
    n = p["start_attendees"]
    spread = p["start_spread_s"]
    hosts = list(range(n + 1, n + 1 + START["hosts"]))
    for run in range(p["runs"]):
        for variant in variants(p, "start"):
            r = start_once(work, n, spread, hosts, variant)
            r["run"] = run
            r["variant"] = variant
            out.append(r)
            log(f"start{tag(variant)} n={n} spread={spread}s: after last connect="
                f"{r['after_last_connect_s']} s, "
                f"joined={r['joined']}/{n}, failures={r['failures']}, join p50/p99="
                f"{r['join_p50_ms']}/{r['join_p99_ms']} ms, send p99={r['post_p99_ms']} ms, "
                f"live complete={r['live_complete']}/{r['joined']}, server cpu="
                f"{r['server_cpu_util']}, peak RSS={r['server_rss_peak_kib'] // 1024} MiB, "
                f"gen cpu={r['gen_cpu_util']}")
    return out


# --- log-in ----------------------------------------------------------------------------------------

def hash_parameters(stored_hash: str) -> dict[str, Any]:
    """The password hash the server verifies: its algorithm and parameters as the app's hasher
    is configured (auth/passwords.py) and as read back from a hash the seed stored with it."""
    from importlib.metadata import version

    import argon2

    from webinar_chat.auth import passwords

    hasher = passwords._hasher
    stored = argon2.extract_parameters(stored_hash)
    algorithm = {argon2.Type.ID: "argon2id", argon2.Type.I: "argon2i",
                 argon2.Type.D: "argon2d"}[hasher.type]
    return {"algorithm": algorithm, "time_cost": hasher.time_cost,
            "memory_cost_kib": hasher.memory_cost, "parallelism": hasher.parallelism,
            "hash_len": hasher.hash_len, "salt_len": hasher.salt_len,
            "stored": {"type": stored.type.name, "version": stored.version,
                       "time_cost": stored.time_cost, "memory_cost_kib": stored.memory_cost,
                       "parallelism": stored.parallelism},
            "library": f"argon2-cffi {version('argon2-cffi')}",
            "name": f"{algorithm} m={hasher.memory_cost // 1024} MiB, t={hasher.time_cost}, "
                    f"p={hasher.parallelism}"}


def stored_hash(db_url: str) -> str:
    con = sqlite3.connect(db_url.split("///", 1)[1])
    try:
        return str(con.execute("SELECT password_hash FROM users WHERE id = 1").fetchone()[0])
    finally:
        con.close()


# Result keys of the loadgen's phases, flattened into the row.
LOGIN_PHASES = ["password", "own_cached", "external_first", "external_new_token",
                "external_cached", "own_cached_end"]


def bench_login(p: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    out = []
    for run in range(p["runs"]):
        db = new_database("sqlite")
        try:
            # seed: every user gets a hash of "bench-password" from the app's own
            # hash_password (one hash shared by all: verifying costs the same for any salt).
            seed(db, users=LOGIN["users"])
            params = hash_parameters(stored_hash(db.url))
            with chat_server(db, work, **EXTERNAL_ENV) as srv:
                r = run_loadgen({"mode": "login", **LOGIN, "seconds": p["login_seconds"],
                                 "external_secret": EXTERNAL_SECRET,
                                 "external_issuer": EXTERNAL_ISSUER,
                                 "port": srv.port, "server_pid": srv.pid},
                                timeout=10 * p["login_seconds"] + 120)
        finally:
            db.close()
        r["hash"] = params
        r["run"] = run
        r["variant"] = None
        for name in LOGIN_PHASES:
            ph = r["phases"].get(name, {})
            for key in ("per_s", "per_core_s", "p50_ms", "p99_ms", "server_cpu_util",
                        "gen_cpu_util"):
                r[f"{name}_{key}"] = ph.get(key)
        out.append(r)
        log(f"login ({params['name']}): {r['password_per_core_s']}/s per core "
            f"({r['password_per_s']}/s, p50/p99 {r['password_p50_ms']}/{r['password_p99_ms']} "
            f"ms, server cpu {r['password_server_cpu_util']}); external first use "
            f"{r['external_first_per_core_s']}/core, new token {r['external_new_token_per_core_s']}"
            f"/core, cached {r['external_cached_per_core_s']}/core; own token cached "
            f"{r['own_cached_per_core_s']}/core; statuses "
            + ", ".join(f"{k}={v['statuses']}" for k, v in r["phases"].items()))
    return out


# --- report ----------------------------------------------------------------------------------------

def _made(data: dict[str, Any], name: str, rows: list[dict[str, Any]]) -> str:
    m = data["machine"]
    made = data.get("provenance", {}).get(name, {})
    commit = made.get("commit", m["commit"])
    if made.get("src_uncommitted"):
        commit += " with uncommitted changes in src/"
    return (f"**Command:** `.venv/bin/{made.get('command', data['command'])}`; commit {commit}, "
            f"{made.get('date', m['date'])}; {m['cpu']}, {m['cores']} cores. Figures are medians "
            f"of {len({r['run'] for r in rows})} run(s) with [min–max].")


def start_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from .report import agg, by_variant, ok_rows, prefix, verdict

    out: list[tuple[str, str, str, str]] = []
    for vname, rows in by_variant(ok_rows(res, "start")):
        n, spread = rows[0]["attendees"], rows[0]["spread_s"]
        v, s = agg(rows, "after_last_connect_s", 2)
        failed = sum(r["attendees"] - r["joined"] for r in rows)
        late = verdict(v, 10, False) + ("" if failed == 0 else f"; **{failed} not joined**")
        v2, s2 = agg(rows, "post_p99_ms", 1)
        out += [
            (prefix(vname) + f"webinar start: {n:,} attendees join fresh (history page "
             f"included) within {spread:g} s: last joined after the last connect", "≤ 10 s",
             f"{s} s; {failed} not joined", late),
            (prefix(vname) + f"webinar start, {n:,} attendees: sends during the storm p99",
             "≤ 250 ms", s2 + " ms", verdict(v2, 250, False)),
        ]
    return out


def login_summary(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from .report import agg, ok_rows

    rows = ok_rows(res, "login")
    if not rows:
        return []
    name = rows[0]["hash"]["name"]
    _, s = agg(rows, "password_per_core_s", 1)
    _, s1 = agg(rows, "external_first_per_core_s")
    _, s2 = agg(rows, "external_new_token_per_core_s")
    return [
        (f"log-in (`POST /api/auth/login`, {name}): log-ins/s per server core",
         "reported, hash parameters named", s, "reported"),
        ("external-platform HS256 token (no password hash), `GET /api/me`: requests/s per "
         "server core, first use (provisioning) / new token of a known user",
         "reported beside", f"{s1} / {s2}", "reported"),
    ]


def start_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    from .report import agg, by_variant, fmt, ok_rows, vtag

    rows = ok_rows(data["results"], "start")
    if not rows:
        return
    r0 = rows[0]
    w("## Webinar start: everybody joins fresh")
    w("")
    w(_made(data, "start", rows))
    w("")
    w(f"{r0['attendees']:,} attendees, their access tokens issued beforehand, open their "
      f"WebSocket (`/realtime?token=`) at instants spread uniformly over {r0['spread_s']:g} s and "
      f"join without `last_seq` (the server answers `joined` and then sends live changes only, "
      f"docs/realtime.md), while each loads the history page `GET /api/webinars/1/messages?"
      f"limit={r0['history_limit']}` on an HTTP connection of its own, at the same time. The "
      f"webinar has {START['history_messages']} messages, so each page is full (smallest page "
      f"seen: {min(r['history_messages_min'] for r in rows)}). *Joined* = has the `joined` "
      f"reply and the page; join latency runs from the attendee's connect to that. A host POSTs "
      f"{r0['rate_target']} msgs/s from the first connect until {START['tail_s']:g} s after the "
      f"last; *live complete* = a joined attendee got every message after its `head_seq`. "
      f"Server CPU, generator CPU and other load: from the first connect to the last joined.")
    w("")
    w("| attendees | last joined after last connect s | joined | failures | join p50 / p99 / "
      "max ms | `joined` p99 ms | history page p99 ms | send p50 / p99 ms | live complete | "
      "server CPU | peak RSS MiB | generator CPU | other load c0/c1 |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for vname, group in by_variant(rows):
        label = f" in {group[0]['spread_s']:g} s{vtag(vname)}"
        for r in group:
            failures = ", ".join(f"{k} {v}" for k, v in r["failures"].items()) or "none"
            w(f"| {r['attendees']:,}{label} | {fmt(r['after_last_connect_s'], 2)} | "
              f"{r['joined']:,} | {failures} | {fmt(r['join_p50_ms'])} / {fmt(r['join_p99_ms'])} / "
              f"{fmt(r['join_max_ms'])} | {fmt(r['ws_joined_p99_ms'])} | "
              f"{fmt(r['history_p99_ms'])} | {fmt(r['post_p50_ms'], 1)} / "
              f"{fmt(r['post_p99_ms'], 1)} | {r['live_complete']:,}/{r['joined']:,} | "
              f"{fmt(r['server_cpu_util'], 2)} | {fmt(r['server_rss_peak_kib'] / 1024)} | "
              f"{fmt(r['gen_cpu_util'], 2)} | "
              f"{fmt(r['other_load']['core0'], 2)} / {fmt(r['other_load'].get('core1'), 2)} |")
        if len(group) > 1:
            w(f"| median{vtag(vname)} | {agg(group, 'after_last_connect_s', 2)[1]} | | | "
              f"{agg(group, 'join_p50_ms')[1]} / {agg(group, 'join_p99_ms')[1]} / "
              f"{agg(group, 'join_max_ms')[1]} | {agg(group, 'ws_joined_p99_ms')[1]} | "
              f"{agg(group, 'history_p99_ms')[1]} | {agg(group, 'post_p50_ms', 1)[1]} / "
              f"{agg(group, 'post_p99_ms', 1)[1]} | | {agg(group, 'server_cpu_util', 2)[1]} | "
              f"{agg(group, lambda r: r['server_rss_peak_kib'] / 1024)[1]} | "
              f"{agg(group, 'gen_cpu_util', 2)[1]} | |")
    w("")
    hot = [r for r in rows if (r.get("gen_cpu_util") or 0) >= 0.8]
    if hot:
        w(f"**Generator limit:** {len(hot)} run(s) had the generator ≥ 0.8 of its core: their "
          f"join latencies include the generator's own delay.")
    else:
        w("Generator check: every run's generator stayed below 0.8 of its core.")
    w("")


def login_section(w: Callable[[str], None], data: dict[str, Any]) -> None:
    from .report import agg, fmt, ok_rows

    rows = ok_rows(data["results"], "login")
    if not rows:
        return
    r0 = rows[0]
    h = r0["hash"]
    w("## Log-in: password hash, and tokens of the host platform")
    w("")
    w(_made(data, "login", rows))
    w("")
    w(f"Closed loop, {r0['concurrency']} requests in flight on keep-alive connections, "
      f"{fmt(r0['seconds'])} s per phase, one phase after another on one server. **Log-in**: "
      f"`POST /api/auth/login` for {r0['users']} seeded users in turn (the hash verified in a "
      f"thread, a refresh token stored). The password hash: **{h['algorithm']}**, time_cost "
      f"{h['time_cost']}, memory_cost {h['memory_cost_kib']:,} KiB, parallelism "
      f"{h['parallelism']}, hash {h['hash_len']} bytes, salt {h['salt_len']} bytes "
      f"({h['library']}'s `PasswordHasher()` defaults, RFC 9106's low-memory profile, as "
      f"`webinar_chat.auth.passwords` configures it; read back from the stored hash: "
      f"{h['stored']['type']} v{h['stored']['version']}, m={h['stored']['memory_cost_kib']:,}, "
      f"t={h['stored']['time_cost']}, p={h['stored']['parallelism']}). The server's argon2 "
      f"threads all run on its one core. **Host-platform tokens** (docs/external-auth.md; the "
      f"server started with `EXTERNAL_JWT_SECRET`, `EXTERNAL_JWT_ISSUER` and "
      f"`EXTERNAL_JWT_WEBINARS_CLAIM`): `GET /api/me` with HS256 tokens the generator signed "
      f"beforehand — *first use*: a new subject per request (verified, a user provisioned and "
      f"registered for webinar 1); *new token*: a new token of an already provisioned subject "
      f"per request; *cached*: one token per connection, used again. *Own token*: the same "
      f"`GET /api/me` with our own access tokens (cached), the endpoint's baseline, before the "
      f"host-platform phases and again after them. Per core = "
      f"answers 200 / server-process CPU seconds.")
    w("")
    w("| phase | requests/s | per server core | p50 / p99 ms | server CPU | generator CPU |")
    w("|---|---|---|---|---|---|")
    names = {"password": f"log-in ({h['name']})",
             "external_first": "host-platform token, first use (provisioning)",
             "external_new_token": "host-platform token, new token of a known user",
             "external_cached": "host-platform token, used again (cached)",
             "own_cached": "own access token, used again (cached)",
             "own_cached_end": "own access token again, after the host-platform phases"}
    digits = {"password": 1}
    for key, title in names.items():
        d = digits.get(key, 0)
        w(f"| {title} | {agg(rows, f'{key}_per_s', d)[1]} | "
          f"{agg(rows, f'{key}_per_core_s', d)[1]} | {agg(rows, f'{key}_p50_ms', 1)[1]} / "
          f"{agg(rows, f'{key}_p99_ms', 1)[1]} | {agg(rows, f'{key}_server_cpu_util', 2)[1]} | "
          f"{agg(rows, f'{key}_gen_cpu_util', 2)[1]} |")
    w("")
    bad = {k: v["statuses"] for r in rows for k, v in r["phases"].items()
           if set(v["statuses"]) - {"200"}}
    if bad:
        w("Answers other than 200: " + "; ".join(f"{k}: {v}" for k, v in bad.items()) + ".")
        w("")
