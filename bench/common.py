"""What every benchmark shares: CPU pinning, the server processes under test, database seeding,
/proc readings (CPU seconds, RSS) and statistics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The server gets core 0 to itself; the load generator (and this runner) take core 1. On the
# 2-core machines of docs/performance-targets.md this keeps the generator from stealing server CPU.
SERVER_CPU = 0
LOAD_CPU = 1
REDIS_SERVER = os.environ.get("BENCH_REDIS_SERVER", "/usr/bin/redis-server")
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
JWT_SECRET = "bench-secret-" + "x" * 40  # HS256 key given to the server and to the generator
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Other engineers' test suites (headless Chromium…) share these two cores. A moderate priority
# boost (CFS weight ×3 against a nice-0 process) keeps their bursts from dominating a run without
# starving them; BENCH_NICE=0 turns it off. Each run also reports the CPU others took per core.
_NICE_LEVEL = int(os.environ.get("BENCH_NICE", "-5"))
NICE = ["nice", "-n", str(_NICE_LEVEL)] if _NICE_LEVEL and os.geteuid() == 0 else []


def raise_nofile() -> None:
    """10,000 sockets need more than the usual 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(cpu: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc readings ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def core_busy_seconds() -> list[float]:
    """Busy time of each CPU since boot (everything but idle and iowait), from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                out.append((sum(v[:8]) - v[3] - v[4]) / CLK_TCK)
    return out


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL server process (backends, WAL writer…): the database's share of a
    create on PostgreSQL, which runs outside the server process."""
    return sum(postgres_cpu_by_pid().values())


def postgres_cpu_by_pid() -> dict[int, float]:
    """utime + stime of each PostgreSQL server process. Over a window, sum the differences of
    the pids present at both ends: on a shared server other people's backends come and go, and
    one that exits would take its CPU out of a plain total."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1:raw.rfind(")")]
        if name.startswith("postgres"):
            fields = raw.rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


# --- statistics ----------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


# --- databases -----------------------------------------------------------------------------------

@dataclass
class Database:
    url: str
    kind: str  # "sqlite" | "postgresql"
    cleanup: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for fn in reversed(self.cleanup):
            fn()


def new_database(kind: str) -> Database:
    """A fresh, migrated database: SQLite in a temp dir, or a new PostgreSQL database."""
    if kind == "sqlite":
        tmp = tempfile.mkdtemp(prefix="bench-chat-")
        db = Database(f"sqlite:///{tmp}/chat.db", "sqlite", [lambda: shutil.rmtree(tmp, True)])
    else:
        name = f"bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
        _pg_admin(f"CREATE DATABASE {name}")
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        db = Database(f"{base}/{name}", "postgresql",
                      [lambda: _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
    subprocess.run([str(VENV_BIN / "webinar-chat"), "migrate", "--database-url", db.url],
                   check=True, capture_output=True, env=server_env())
    return db


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def pg_available() -> bool:
    try:
        _pg_admin("SELECT 1")
        return True
    except Exception:
        return False


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _ts(now: datetime, kind: str) -> Any:
    # The store keeps SQLite datetimes as ISO text with microseconds (store/db.py).
    return now.isoformat(timespec="microseconds") if kind == "sqlite" else now


def seed(db: Database, *, users: int, extra_webinars: int = 0, messages: int = 0,
         message_webinars: int = 1, quiet_webinar: int | None = None,
         quiet_every: int = 0) -> dict[str, Any]:
    """Agency, client, webinar 1 (+ `extra_webinars`), users 1..`users` registered as attendees of
    every webinar, and optionally `messages` messages spread round-robin over the first
    `message_webinars` webinars (ids interleave, as in a real multi-webinar table); with
    `quiet_webinar`, every `quiet_every`-th message goes to that webinar instead (a quiet chat
    whose few messages are spread over the whole table). Bulk SQL:
    one argon2 hash for all (hashing costs ~50 ms each)."""
    from webinar_chat.auth.passwords import hash_password

    password_hash = hash_password("bench-password")
    now = datetime.now(UTC)
    t = _ts(now, db.kind)
    webinars = 1 + extra_webinars
    statements: list[tuple[str, list[tuple[Any, ...]]]] = [
        ("INSERT INTO agencies (id, name, created_at) VALUES ($1, $2, $3)", [(1, "Bench", t)]),
        ("INSERT INTO clients (id, agency_id, name, created_at) VALUES ($1, 1, $2, $3)",
         [(1, "Bench client", t)]),
        ("""INSERT INTO webinars (id, agency_id, client_id, title, chat_open, slow_mode_seconds,
               last_seq, created_at) VALUES ($1, 1, 1, $2, TRUE, 0, $3, $4)""",
         [(w, f"Webinar {w}", 0, t) for w in range(1, webinars + 1)]),
        ("""INSERT INTO users (id, email, password_hash, is_admin, created_at)
               VALUES ($1, $2, $3, FALSE, $4)""",
         [(u, f"u{u}@bench.test", password_hash, t) for u in range(1, users + 1)]),
        ("INSERT INTO profiles (user_id, display_name, updated_at) VALUES ($1, $2, $3)",
         [(u, f"Attendee {u}", t) for u in range(1, users + 1)]),
        ("""INSERT INTO registrations (webinar_id, user_id, role, banned, created_at)
               VALUES ($1, $2, 'attendee', FALSE, $3)""",
         [(w, u, t) for w in range(1, webinars + 1) for u in range(1, users + 1)]),
    ]
    per_webinar: dict[int, int] = {}
    rows: list[tuple[Any, ...]] = []
    for i in range(1, messages + 1):
        w = (i - 1) % message_webinars + 1
        if quiet_webinar is not None and quiet_every and i % quiet_every == 0:
            w = quiet_webinar
        per_webinar[w] = per_webinar.get(w, 0) + 1
        rows.append((i, w, (i % users) + 1, f"history message {i} " + "x" * 60, t, per_webinar[w]))
    if rows:
        statements.append((
            """INSERT INTO messages (id, agency_id, client_id, webinar_id, user_id, content,
                   created_at, hidden, client_msg_id, seq) VALUES ($1, 1, 1, $2, $3, $4, $5, FALSE,
                   NULL, $6)""", rows))
    if db.kind == "sqlite":
        path = db.url.split("///", 1)[1]
        con = sqlite3.connect(path)
        try:
            for sql, params in statements:
                con.executemany(_PLACEHOLDER.sub(r"?\1", sql), params)
            for w, n in per_webinar.items():
                con.execute("UPDATE webinars SET last_seq = ? WHERE id = ?", (n, w))
            con.commit()
            con.execute("ANALYZE")
        finally:
            con.close()
    else:
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(db.url)
            try:
                async with conn.transaction():
                    for sql, params in statements:
                        if "INSERT INTO messages" in sql and len(params) > 10_000:
                            await conn.copy_records_to_table(
                                "messages", records=[(r[0], 1, 1, r[1], r[2], r[3], r[4], False,
                                                      None, r[5]) for r in params],
                                columns=["id", "agency_id", "client_id", "webinar_id", "user_id",
                                         "content", "created_at", "hidden", "client_msg_id",
                                         "seq"])
                        else:
                            await conn.executemany(sql, params)
                    for w, n in per_webinar.items():
                        await conn.execute("UPDATE webinars SET last_seq = $1 WHERE id = $2", n, w)
                    for table in ("agencies", "clients", "webinars", "users", "messages"):
                        await conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)")
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

        asyncio.run(run())
    return {"webinar_id": 1, "users": users, "per_webinar": per_webinar}


# --- servers under test --------------------------------------------------------------------------

def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The production default (INFO: one access line per request, the long-poll fast path's
    # included). Rows measured before 2026-12-02 ran at WARNING, without access lines;
    # BENCH_LOG_LEVEL=WARNING reproduces them.
    env.update({"JWT_SECRET": JWT_SECRET, "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
                "PYTHONUNBUFFERED": "1"})
    # The load generators are a few users on one address, at rates far above any person's: the
    # message and connect limits get buckets the runs never empty (the limiter still runs on
    # every create and handshake, so its cost is in the figures).
    for name in ("MESSAGES", "MESSAGES_STAFF", "WS_CONNECT_IP", "WS_CONNECT_USER"):
        env.setdefault(f"RATE_LIMIT_{name}", "1000000/1")
    env.pop("WEBINAR_CHAT_ENV", None)  # production, not development
    env.update(extra)
    return env


def _preexec() -> None:
    raise_nofile()
    os.setpgrp()


class ServerProcess:
    """A server under test: its own process group, pinned to SERVER_CPU, stopped on exit."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], health: str,
                 log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), *NICE, *argv], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=_preexec, cwd=ROOT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid  # taskset execs the server: same pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def variant_source(name: str, workdir: Path) -> str:
    """A proposed server change measured side by side with the current code, without touching
    src/: a copy of src/ with each bench/variants/<part>.patch applied, plus the packages listed
    in bench/variants/<part>.txt installed into a private directory. `name` is part[+part…].
    Returns the PYTHONPATH for the server process."""
    target = workdir / f"variant-{name}"
    paths = [target / "src"]
    if not target.exists():
        shutil.copytree(ROOT / "src", target / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for part in name.split("+"):
            patch = ROOT / "bench" / "variants" / f"{part}.patch"
            reqs = ROOT / "bench" / "variants" / f"{part}.txt"
            if patch.exists():
                subprocess.run(["patch", "-s", "-p1", "-d", str(target), "-i", str(patch)],
                               check=True)
            if reqs.exists():
                subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                                "--disable-pip-version-check", "--no-deps", "--target",
                                str(target / "deps"), "-r", str(reqs)], check=True)
            if not patch.exists() and not reqs.exists():
                raise FileNotFoundError(f"no bench/variants/{part}.patch or .txt")
    if (target / "deps").exists():
        paths.append(target / "deps")
    return os.pathsep.join(str(p) for p in paths)


@contextlib.contextmanager
def chat_server(db: Database, workdir: Path, variant: str | None = None, health: str = "/healthz",
                **env: str) -> Iterator[ServerProcess]:
    """`webinar-chat serve` on `db`; with `variant`, the patched copy of the code instead. `env`
    is added to the server's environment (e.g. BUS_URL for a node of a cluster, whose start
    waits for `health="/readyz"`: database and bus reachable)."""
    port = free_port()
    if variant:
        env["PYTHONPATH"] = variant_source(variant, workdir)
    server = ServerProcess([str(VENV_BIN / "webinar-chat"), "serve", "--database-url", db.url,
                            "--port", str(port)], port, server_env(**env), health,
                           workdir / f"server-{port}.log")
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def socketio_server(workdir: Path) -> Iterator[ServerProcess]:
    port = free_port()
    server = ServerProcess(["node", str(ROOT / "bench" / "socketio" / "server.js"), str(port)],
                           port, dict(os.environ), "/healthz", workdir / f"socketio-{port}.log")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RedisProcess:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid  # taskset execs redis-server: same pid


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisProcess]:
    """A private `redis-server` for the cluster benchmark's bus: a free port, no persistence (no
    fork for RDB saves or AOF writes in the window), its own directory. It runs on LOAD_CPU with
    the generator, so that its CPU is never counted as, or taken from, the servers' core; it is
    reported beside them."""
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
    log = open(home / "redis.log", "wb")
    proc = subprocess.Popen(["taskset", "-c", str(LOAD_CPU), *NICE, REDIS_SERVER,
                             "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(home)],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_preexec, cwd=home)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(home / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
        yield RedisProcess(port, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing to save: it holds no data
        proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def ensure_socketio_installed() -> None:
    here = ROOT / "bench" / "socketio"
    if not (here / "node_modules" / "socket.io").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=here, check=True,
                       capture_output=True)


# --- the load generator process ------------------------------------------------------------------

def run_loadgen(config: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run `bench.loadgen` pinned to LOAD_CPU with `config`; return its JSON result."""
    proc = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), *NICE, sys.executable, "-m", "bench.loadgen",
         json.dumps(config)],
        cwd=ROOT, capture_output=True, timeout=timeout, preexec_fn=raise_nofile,
    )
    out = proc.stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"loadgen {config.get('mode')} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out[-1])
    return result


# --- the machine ---------------------------------------------------------------------------------

def machine_info() -> dict[str, str]:
    # The family and model beside the name: VMs of one name ("AMD EPYC") differ by CPU
    # generation, and a faster one changes every absolute figure (docs/benchmarks.md).
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("model name", "cpu family", "model") and name not in fields:
                fields[name] = value.strip()
            if not line.strip():
                break  # the first processor's block is enough
    model = fields.get("model name", "unknown")
    if "cpu family" in fields:
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    mem_gib = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gib = f"{int(line.split()[1]) / 1024 / 1024:.0f}"
    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        node = "absent"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "absent"

    sio = "?"
    with contextlib.suppress(OSError, ValueError):
        sio = json.loads((ROOT / "bench/socketio/node_modules/socket.io/package.json")
                         .read_text())["version"]
    return {
        "cpu": model, "cores": str(os.cpu_count()), "memory_gib": mem_gib,
        "kernel": platform.release(), "python": platform.python_version(), "node": node,
        "uvicorn": v("uvicorn"), "starlette": v("starlette"), "websockets": v("websockets"),
        "orjson": v("orjson"), "socket.io": sio, "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "http_impl": "httptools" if _importable("httptools") else "h11",
        "loop_impl": "uvloop" if _importable("uvloop") else "asyncio",
    }


def src_uncommitted() -> bool:
    """Whether src/ differs from the commit (modified or untracked files): the code measured is
    then that commit plus the working tree's changes (read-only `git status`)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT,
                             capture_output=True, text=True).stdout
    except OSError:
        return False
    return bool(out.strip())


def backing_versions(bench: str) -> dict[str, str]:
    """The Redis and PostgreSQL versions the cluster benchmark ran on, PostgreSQL's for the
    export benchmark (nothing for the others)."""
    if bench not in ("cluster", "export"):
        return {}
    out = {}
    with contextlib.suppress(OSError):
        if bench != "cluster":
            raise OSError  # no Redis
        v = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
        out["redis"] = v.split("v=", 1)[1].split()[0] if "v=" in v else v.strip()
    with contextlib.suppress(Exception):
        import asyncpg

        async def version() -> str:
            conn = await asyncpg.connect(PG_ADMIN_URL)
            try:
                return str(await conn.fetchval("SHOW server_version")).split()[0]
            finally:
                await conn.close()

        out["postgresql"] = asyncio.run(version())
    return out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
