"""`webinar-chat serve` as a child process: the production entry point, exactly as an operator
runs it (CLI, logging, GC tuning, signals), for the tests that need what an in-process server
cannot give — kill -9, SIGSTOP/SIGCONT, a restart, and the server's own stderr to read.

Timings and anything else are set through the environment, as in production (e.g.
`HEARTBEAT_INTERVAL=0.5`). The log format follows this test run's `LOG_FORMAT`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from .helpers import BULK_LIMITS_ENV, JWT_SECRET, LocalServer, free_port

# Lines that must never appear in a healthy server's log.
_BROKEN = ("Traceback (most recent call last)", "logging_failed", "--- Logging error ---")


class ServeProcess(LocalServer):
    def __init__(self, database_url: str, log_path: Path, env: dict[str, str] | None = None,
                 port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.database_url = database_url
        self.args = args  # more `serve` arguments, e.g. ("--workers", "2")
        self.log_path = log_path
        self.port = port or free_port()
        self.env = {**os.environ, "JWT_SECRET": JWT_SECRET, "PYTHONUNBUFFERED": "1",
                    **BULK_LIMITS_ENV, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def json_logs(self) -> bool:
        return self.env.get("LOG_FORMAT", "").lower() == "json"

    async def start(self, timeout: float = 30.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            # Popen returns once the child is forked: nothing here waits on the child.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "webinar_chat", "serve", "--database-url",
                 self.database_url, "--host", "127.0.0.1", "--port", str(self.port),
                 *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n"
                                       + self.log_text()[-3000:])
                try:
                    if (await http.get(self.base_url + "/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not become ready:\n" + self.log_text()[-3000:])
                await asyncio.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None and self.process.poll() is None, "not running"
        self.process.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the process freezes; its sockets stay open and silent (a hung server)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    async def kill(self) -> None:
        """kill -9: no drain, no close frames, no answers."""
        self._signal(signal.SIGKILL)
        await self._wait(10)

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.process.send_signal(signal.SIGTERM)
        try:
            await self._wait(timeout)
        except TimeoutError:
            self.process.kill()
            await self._wait(5)
            raise

    async def _wait(self, timeout: float) -> None:
        assert self.process is not None
        try:
            await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("server did not exit") from None

    # --- the server's log ------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The log as records: JSON lines parsed, text lines as {"line": …} (with "event" and
        "level" read off ConsoleRenderer's `<time> [<level>] <event> key=value…` layout)."""
        out: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            if line.startswith("--- start "):
                continue
            if self.json_logs and line.startswith("{"):
                try:
                    out.append({**json.loads(line), "line": line})
                    continue
                except ValueError:
                    pass
            record: dict[str, Any] = {"line": line}
            head, sep, rest = line.partition(" [")
            if sep and "]" in rest:
                level, _, after = rest.partition("]")
                record["level"] = level.strip()
                record["event"] = after.strip().split(" ", 1)[0] if after.strip() else ""
            out.append(record)
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def problems(self, allowed_events: tuple[str, ...] = ()) -> list[str]:
        """Lines that say the server is broken: tracebacks outside an allowed event, failed log
        calls, and error-level records other than `allowed_events`."""
        problems = [line for line in self.log_text().splitlines()
                    if any(marker in line for marker in _BROKEN)]
        if allowed_events:
            # an allowed error record carries its traceback (text format: on the lines below)
            problems = [line for line in problems if "Traceback" not in line]
        problems += [r["line"] for r in self.records()
                     if r.get("level") in ("error", "critical")
                     and r.get("event") not in allowed_events]
        return problems
