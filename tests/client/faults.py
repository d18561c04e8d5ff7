"""Real network faults for SDK tests — wrappers around real connections to the real server,
never a stand-in for it.

- `FaultyTransport`: an httpx transport in front of the real one that can lose a request before
  it leaves, lose the response after the server handled it, hold a response past the client's
  timeout, or answer like a failing proxy (502) instead of forwarding.
- `SocketGate`: a `connect` function that can refuse (it dials a closed port: a real
  ECONNREFUSED), black-hole a connection (frames stop arriving, like a silently dead socket or a
  proxy that swallows them), or drop single `changes` frames (what a faulty server path would
  look like to the client: a seq gap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from webinar_chat.client import RealtimeSocket

from ..helpers import free_port

LOSE_REQUEST = "lose_request"  # ConnectError; the server never sees it
LOSE_RESPONSE = "lose_response"  # the server handles it; the client gets ReadError
HOLD_RESPONSE = "hold_response"  # the server handles it; the answer never comes back
BAD_GATEWAY = "bad_gateway"  # a proxy answers 502 without forwarding


@dataclass
class FaultyTransport(httpx.AsyncBaseTransport):
    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    # (fault, predicate) pairs; each is used once, by the first request it matches.
    script: list[tuple[str, Callable[[httpx.Request], bool]]] = field(default_factory=list)
    handled: list[tuple[str, str]] = field(default_factory=list)  # (fault or "ok", path)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def fail_next(self, fault: str, path: str, method: str = "POST") -> None:
        self.script.append((fault, lambda r: r.method == method and r.url.path == path))

    def faults_used(self) -> list[str]:
        return [f for f, _ in self.handled if f != "ok"]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = None
        for i, (name, matches) in enumerate(self.script):
            if matches(request):
                fault = name
                del self.script[i]
                break
        self.handled.append((fault or "ok", request.url.path))
        if fault == LOSE_REQUEST:
            raise httpx.ConnectError("injected: connection refused", request=request)
        if fault == BAD_GATEWAY:
            return httpx.Response(502, content=b"<html>Bad Gateway</html>", request=request)
        response = await self.inner.handle_async_request(request)
        if fault == LOSE_RESPONSE:
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("injected: connection reset by peer", request=request)
        if fault == HOLD_RESPONSE:
            await response.aread()
            await self.released.wait()  # until the test ends: the client must time out
        return response

    async def aclose(self) -> None:
        self.released.set()
        await self.inner.aclose()


class GatedSocket:
    """A real connection whose incoming frames are held back while `gate.black_hole`, and whose
    next `gate.drop_changes` frames of type `changes` are thrown away."""

    def __init__(self, ws: ClientConnection, gate: SocketGate) -> None:
        self.ws = ws
        self.gate = gate

    async def send(self, message: str) -> None:
        await self.ws.send(message)

    async def recv(self) -> str | bytes:
        while True:
            while self.gate.black_hole:
                await self.gate.changed.wait()
            frame = await self.ws.recv()
            if self.gate.drop_changes and '"type":"changes"' in str(frame):
                self.gate.drop_changes -= 1
                self.gate.dropped += 1
                continue
            return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


class SocketGate:
    def __init__(self) -> None:
        self.refuse = False
        self.black_hole = False
        self.drop_changes = 0
        self.dropped = 0
        self.changed = asyncio.Event()
        self.attempts = 0
        self.opened = 0
        self._closed_port = free_port()  # bound and released: nothing listens there

    def set(self, *, refuse: bool | None = None, black_hole: bool | None = None) -> None:
        if refuse is not None:
            self.refuse = refuse
        if black_hole is not None:
            self.black_hole = black_hole
        self.changed.set()
        self.changed = asyncio.Event()

    async def __call__(self, url: str) -> RealtimeSocket:
        self.attempts += 1
        if self.refuse:
            url = f"ws://127.0.0.1:{self._closed_port}/realtime"
        ws = await ws_connect(url, ping_interval=None, compression=None, open_timeout=2)
        self.opened += 1
        return GatedSocket(ws, self)
