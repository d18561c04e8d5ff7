"""Lean asyncio clients for the load generator: WebSocket and HTTP/1.1 on raw `asyncio.Protocol`s.

One Python client object per attendee from a full library (websockets, httpx) costs tens of
microseconds per frame; 5,000 attendees at 100 msgs/s need the generator to take in ~200k frames/s
on one core. So:
- `WsClient` does its own HTTP upgrade and parses only unmasked server frames (client frames are
  masked, as RFC 6455 requires). In COUNT mode it does not parse frames at all: it counts a
  marker (`"INSERT"` — one per delivered event) in the raw byte stream with `bytes.count`, keeping
  the marker's length − 1 bytes of the previous chunk so a marker split across reads is counted once.
  In PARSE mode (the latency sample) it parses every frame and hands its payload to a callback.
- `HttpConn` is one keep-alive HTTP/1.1 connection, one request at a time, Content-Length bodies.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import cast

PARSE = "parse"
COUNT = "count"


def mask_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A complete masked client→server frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    if n:
        repeated = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    else:
        masked = b""
    return header + key + masked


class WsClient(asyncio.Protocol):
    """One WebSocket client. `on_message(client, payload, received_at)` sees every text message
    while the client parses; `count` accumulates markers while it counts."""

    def __init__(self, host: str, path: str, *, on_message: Callable[[WsClient, bytes, float], None],
                 marker: bytes = b'"INSERT"', ping_payload: bytes | None = None,
                 on_lost: Callable[[WsClient], None] | None = None) -> None:
        self.host = host
        self.path = path
        self.on_message = on_message
        self.on_lost = on_lost
        self.marker = marker
        # Engine.IO pings are the text message "2" (frame 81 01 32); COUNT mode must still answer.
        self.ping_frame = b"\x81\x01" + ping_payload if ping_payload else None
        self.mode = PARSE
        self.want_count = False  # switch to COUNT at the next frame boundary
        self.transport: asyncio.Transport | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.fragments: list[bytes] = []
        self.tail = b""
        self.count = 0
        self.bytes = 0
        self.close_code: int | None = None
        self.state: dict[str, object] = {}  # per-benchmark bookkeeping

    # --- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"lost before upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mask_frame(payload))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- input -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if not self.upgraded.done():
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            rest = bytes(self.buf[end + 4:])
            self.buf.clear()
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded.set_result(None)
            if not rest:
                return
            data = rest
        if self.mode is COUNT:
            m = len(self.marker) - 1
            # Markers wholly inside `data`, plus one that straddles the previous chunk.
            self.count += data.count(self.marker) + (self.tail + data[:m]).count(self.marker)
            self.tail = data[-m:] if len(data) >= m else (self.tail + data)[-m:]
            if self.ping_frame is not None and self.ping_frame in data:
                self.send_text(b"3")
            return
        self.buf += data
        self._parse(time.time())

    def _parse(self, now: float) -> None:
        buf = self.buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            payload = bytes(buf[start:end])
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x2 or opcode == 0x0:
                if not b0 & 0x80:
                    self.fragments.append(payload)
                    continue
                if self.fragments:
                    payload = b"".join(self.fragments) + payload
                    self.fragments = []
                self.on_message(self, payload, now)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(mask_frame(payload[:2], 0x8))
                    self.transport.close()
            elif opcode == 0x9:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(mask_frame(payload, 0xA))
        del buf[:pos]
        if self.want_count and not buf and not self.fragments:
            self.mode = COUNT
            self.want_count = False

    def start_counting(self) -> None:
        """Count markers from now on instead of parsing (at the next frame boundary)."""
        if not self.buf and not self.fragments:
            self.mode = COUNT
        else:
            self.want_count = True


async def ws_connect(host: str, port: int, path: str, **kwargs: object) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: WsClient(f"{host}:{port}", path, **kwargs),  # type: ignore[arg-type]
                                             host, port)
    await client.upgraded
    return client


class HttpError(Exception):
    pass


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; `await request(...)` one at a time."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._try_complete()

    def _try_complete(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        i = head.find(b"content-length:")
        if i < 0:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(HttpError("response without content-length"))
            return
        j = head.find(b"\r\n", i)
        length = int(head[i + 15:j if j >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4:total])
        del self.buf[:total]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: bytes = b"") -> tuple[int, bytes]:
        if self.lost or self.transport is None:
            raise HttpError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        length = b"Content-Length: %d\r\n" % len(body) if body or method in ("POST", "PUT") else b""
        self.transport.write(b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n%s" % (
            method.encode(), path.encode(), self.host.encode(), headers, length, body))
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def http_connect(host: str, port: int) -> HttpConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: HttpConn(f"{host}:{port}"), host, port)
    return conn


class BulkPoller(asyncio.Protocol):
    """A long-poller that never parses JSON: on each answer it reads `last_seq` and the events'
    own seqs with byte searches, checks them for a gap or a duplicate, and sends the next poll
    from the protocol callback (no task, no future). The load generator runs thousands of these
    beside a small sample of fully parsing pollers (bench/README.md, "Long-poll")."""

    def __init__(self, host: str, path: str, headers: bytes, counter: list[int]) -> None:
        self.request_head = b"GET " + path.encode()
        self.request_tail = b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + headers + b"\r\n"
        self.counter = counter
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.last = 0
        self.gaps = 0
        self.dups = 0
        self.errors: dict[str, int] = {}
        self.stopped = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopped:
            self._error(f"connection lost: {exc}")

    def poll(self) -> None:
        if self.transport is not None and not self.stopped and not self.transport.is_closing():
            self.transport.write(self.request_head + b"%d" % self.last + self.request_tail)

    def stop(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.close()

    def _error(self, what: str) -> None:
        self.errors[what[:60]] = self.errors.get(what[:60], 0) + 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        i = self.buf.find(b"content-length:", 0, end)
        if i < 0:
            self._error("response without content-length")
            return
        j = self.buf.find(b"\r\n", i, end + 2)
        total = end + 4 + int(self.buf[i + 15:j])
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        body = bytes(self.buf[end + 4:total])
        del self.buf[:total]
        self.counter[0] += 1
        if status != 200:
            self._error(f"status {status}")
            asyncio.get_running_loop().call_later(3, self.poll)  # the client's retry interval
            return
        k = body.rfind(b'"last_seq":')
        last_seq = int(body[k + 11:body.index(b",", k)])
        events = body.count(b'{"seq":')  # an event's own seq; a message's is `,"seq":`
        if events:
            k = body.find(b'{"seq":')
            first = int(body[k + 7:body.index(b",", k)])
            if first <= self.last:
                self.dups += 1
            elif first != self.last + 1:
                self.gaps += 1
            if last_seq - first + 1 != events:
                self.gaps += 1
        if last_seq > self.last:
            self.last = last_seq
        self.poll()
