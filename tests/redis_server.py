"""A private `redis-server` for the tests that restart, freeze or silence Redis (the machine's own
Redis at 6379 is shared and must not be touched), and a TCP proxy in front of it that can make
the subscribed connections go silent without an error — what a pub/sub connection looks like
after some failovers: publishes still succeed, nothing is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from pathlib import Path

from .helpers import free_port, wait_for_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisProcess:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "redis.log").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns once forked
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)], stdout=log, stderr=log)
        await wait_for_port(self.port, self.process, "redis-server")

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        self.process = None

    async def restart(self, down_for: float = 0.0) -> None:
        await self.stop()
        if down_for:
            await asyncio.sleep(down_for)
        await self.start()


class SilencingProxy:
    """127.0.0.1:`port` → Redis. `silence_subscribers()` stops forwarding Redis → client bytes on
    every connection that sent SUBSCRIBE so far (the connection stays open, no error); the
    connections made afterwards work again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.subscribers: set[asyncio.StreamWriter] = set()
        self.silenced: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def silence_subscribers(self) -> None:
        self.silenced |= self.subscribers

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1",
                                                                            self.target_port)
        except OSError:
            client_writer.close()
            return
        up = asyncio.create_task(self._pipe(client_reader, upstream_writer, client_writer))
        down = asyncio.create_task(self._pipe_down(upstream_reader, client_writer))
        self.tasks |= {up, down}
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for writer in (client_writer, upstream_writer):
            writer.close()
        self.subscribers.discard(client_writer)
        self.silenced.discard(client_writer)
        self.tasks -= {up, down}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    client: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if b"SUBSCRIBE" in data.upper():
                self.subscribers.add(client)
            writer.write(data)
            await writer.drain()

    async def _pipe_down(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if client in self.silenced:
                continue  # swallowed: the subscriber hears nothing, and no error
            client.write(data)
            await client.drain()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
