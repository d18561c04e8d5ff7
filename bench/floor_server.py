"""The fan-out floor: the least a Python server on this machine can spend to fan chat messages out
to WebSocket clients, measured by the same load generator as ours (bench/bench_floor.py).

    python -m bench.floor_server --port P --mode write|frame10|longpoll

It speaks just enough of our protocol for `bench.loadgen`'s fan-out mode (`kind: "chat"`,
protocol "ours") to drive it unchanged: `GET /healthz`, the WebSocket upgrade on `/realtime`
(the token is not checked), `join` → `joined`, heartbeats ignored, and `POST
/api/messages/create` → `{"success":true,"message":{..."seq":N...}}`. Every created message
becomes one event encoded by our own `protocol.events` (the bytes an attendee gets from our
server, so the sample's parsing and the bulk's `"INSERT"` counting work as they do against ours):

- `write`: each message at once in a `changes` frame of its own, built once, one
  `transport.write()` per client (docs/performance-targets.md: 110–175k deliveries/s per core);
- `frame10`: messages coalesced 10 per frame, one `write()` per client per frame (0.9–1.0M
  messages/s per core); leftovers leave after FLUSH_AFTER_S so the tail is not lost.
- `longpoll`: the long-poll fallback instead (`bench.loadgen`'s long-poll mode): `GET
  /api/webinars/1/changes?after_seq=N&wait=S` is answered at once when there are changes after
  N, else parked; each create answers every parked poll at once, one body (our own
  `longpoll.changes_body` of our encoded events) built per `after_seq` and one `write()` per
  poller. Parsing a request is a byte search for the blank line and for `after_seq=`, no more.

No framework, no per-client task or queue, no database, no backpressure: plain asyncio
Protocols on uvloop (as `webinar-chat serve` runs), so what it costs is the kernel's send path
plus the thinnest Python loop over the sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import orjson

from webinar_chat.protocol.events import (
    Audience,
    Change,
    ChangeOp,
    Message,
    changes_frame,
    encode_event,
    message_payload,
    topic_name,
)
from webinar_chat.server.longpoll import DEFAULT_LIMIT, changes_body

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TOPIC = topic_name(1)
# frame10: a frame per 10 messages; at 100 msgs/s that is every 100 ms, so this timer only fires
# for the last few messages of a run (or when sends stall) — short enough for the loadgen's drain.
PER_FRAME = {"write": 1, "frame10": 10, "longpoll": 1}
FLUSH_AFTER_S = 0.2
POLL_WAIT_S = 20.0


def ws_frame(payload: bytes) -> bytes:
    """An unmasked server→client text frame (FIN, opcode 1), as our server writes them."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def http(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (status.encode(), len(body), extra, body))


class Room:
    """Webinar 1: its seq counter, the joined sockets' `write`s and the pending events."""

    def __init__(self, per_frame: int, *, longpoll: bool = False) -> None:
        self.per_frame = per_frame
        self.seq = 0
        # Bound `transport.write`s, keyed by connection: the broadcast loop is one call each.
        self.writers: dict[Conn, Callable[[bytes], object]] = {}
        self.pending: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        # Long-poll mode: every event so far (events[k] has seq k + 1), the parked polls with the
        # time they parked, and the answers built since the last create, by after_seq.
        self.polls: dict[Conn, tuple[float, int]] | None = {} if longpoll else None
        self.events: list[bytes] = []
        self.bodies: dict[int, bytes] = {}

    def poll_answer(self, after_seq: int) -> bytes:
        answer = self.bodies.get(after_seq)
        if answer is None:
            encoded = self.events[after_seq:after_seq + DEFAULT_LIMIT]
            last_seq = after_seq + len(encoded)
            answer = http("200 OK", changes_body(encoded, last_seq, last_seq < self.seq))
            self.bodies[after_seq] = answer
        return answer

    def answer_parked(self, older_than: float | None = None) -> None:
        """Every parked poll, or on the wait's timeout sweep the ones parked before
        `older_than`."""
        assert self.polls is not None
        polls = self.polls
        if older_than is None:
            self.polls = {}
            for conn, (_, after_seq) in polls.items():
                conn.answer(self.poll_answer(after_seq))
            return
        for conn in [c for c, (t, _) in polls.items() if t < older_than]:
            conn.answer(self.poll_answer(polls.pop(conn)[1]))

    def create(self, user_id: int, content: str, client_msg_id: str | None) -> bytes:
        """Store nothing, number the message, queue its event; return the POST's answer body."""
        self.seq += 1
        message = Message(id=self.seq, agency_id=1, client_id=1, webinar_id=1, user_id=user_id,
                          content=content, created_at=datetime.now(UTC), hidden=False,
                          client_msg_id=client_msg_id, seq=self.seq,
                          display_name=f"Attendee {user_id}")
        change = Change(webinar_id=1, seq=self.seq, op=ChangeOp.INSERT, message_id=self.seq,
                        message=message)
        event = encode_event(change, Audience.ATTENDEE)
        if self.polls is not None:
            self.events.append(event)
            self.bodies.clear()
        else:
            self.pending.append(event)
        return orjson.dumps({"success": True, "message": message_payload(message, Audience.STAFF)})

    def after_create(self) -> None:
        """Called once the POST is answered, so the sender never waits behind the fan-out."""
        if self.polls is not None:
            self.answer_parked()
            return
        if len(self.pending) >= self.per_frame:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_AFTER_S, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending:
            return
        frame = ws_frame(changes_frame(TOPIC, self.pending))  # built once for every socket
        self.pending = []
        for write in self.writers.values():
            write(frame)


class Conn(asyncio.Protocol):
    """One connection: HTTP/1.1 keep-alive requests until a WebSocket upgrade, then client frames
    (masked; only `join` is answered, the rest — heartbeats — ignored)."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.ws = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.room.writers.pop(self, None)
        if self.room.polls is not None:
            self.room.polls.pop(self, None)

    def answer(self, response: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(response)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.ws:
            self.ws_frames()
        else:
            self.http_requests()

    # --- HTTP ------------------------------------------------------------------------------------

    def http_requests(self) -> None:
        assert self.transport is not None
        while not self.ws:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if self.room.polls is not None and self.buf.startswith(b"GET /api/webinars/1/changes?"):
                self.long_poll(end)
                continue
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            total = end + 4 + int(headers.get("content-length", 0))
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4:total])
            del self.buf[:total]
            method, target = lines[0].split(" ")[:2]
            path = target.split("?", 1)[0]
            if path == "/realtime" and headers.get("upgrade", "").lower() == "websocket":
                key = headers["sec-websocket-key"].encode()
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
                self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                                     % accept)
                self.ws = True
                self.ws_frames()
            elif method == "POST" and path == "/api/messages/create":
                fields = orjson.loads(body)
                answer = self.room.create(token_user(headers.get("authorization", "")),
                                          fields["content"], fields.get("clientMsgId"))
                self.transport.write(http("200 OK", answer))
                self.room.after_create()
            elif path == "/healthz":
                self.transport.write(http("200 OK", orjson.dumps(
                    {"success": True, "status": "ok", "node": "floor", "pid": os.getpid()}),
                    b"connection: close\r\n"))
                self.transport.close()
                return
            else:
                self.transport.write(http("404 Not Found", b'{"success":false}'))

    def long_poll(self, end: int) -> None:
        """The least a long-poll can cost: find `after_seq`, answer or park. (Polls carry no body.)"""
        i = self.buf.find(b"after_seq=", 0, end) + 10
        j = i
        while 48 <= self.buf[j] <= 57:
            j += 1
        after_seq = int(self.buf[i:j])
        del self.buf[:end + 4]
        room = self.room
        assert room.polls is not None
        if after_seq < room.seq:
            self.answer(room.poll_answer(after_seq))
        else:
            room.polls[self] = (time.monotonic(), after_seq)

    # --- WebSocket -------------------------------------------------------------------------------

    def ws_frames(self) -> None:
        assert self.transport is not None
        buf = self.buf
        while len(buf) >= 6:  # client frames are masked: 2 header bytes + 4 of key at least
            length = buf[1] & 0x7F
            start = 2
            if length == 126:
                length, start = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + 4 + length:
                return
            key = bytes(buf[start:start + 4])
            masked = bytes(buf[start + 4:start + 4 + length])
            opcode = buf[0] & 0x0F
            del buf[:start + 4 + length]
            payload = (int.from_bytes(masked, "big") ^ int.from_bytes(
                (key * (length // 4 + 1))[:length], "big")).to_bytes(length, "big")
            if opcode == 0x8:  # close: echo it and go
                self.transport.write(b"\x88" + bytes([min(len(payload), 2)]) + payload[:2])
                self.transport.close()
                return
            if opcode == 0x9:  # ping → pong
                self.transport.write(b"\x8a" + bytes([len(payload)]) + payload)
            elif opcode == 0x1 and b'"join"' in payload:
                frame = orjson.loads(payload)
                self.transport.write(ws_frame(orjson.dumps({
                    "type": "joined", "topic": frame.get("topic"), "ref": frame.get("ref"),
                    "head_seq": self.room.seq, "resume_from": self.room.seq,
                    "role": "attendee"})))
                self.room.writers[self] = self.transport.write


def token_user(authorization: str) -> int:
    """The token's `sub`, unverified (the floor checks no signatures): the message's author, so
    that events have our server's fields and sizes."""
    try:
        claims = authorization.split(" ", 1)[1].split(".")[1]
        return int(orjson.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sub"])
    except (IndexError, ValueError, KeyError):
        return 0


async def serve(port: int, mode: str) -> None:
    room = Room(PER_FRAME[mode], longpoll=mode == "longpoll")
    loop = asyncio.get_running_loop()
    if mode == "longpoll":
        def sweep() -> None:  # the polls' `wait` (the load generator asks for 20 s)
            room.answer_parked(older_than=time.monotonic() - POLL_WAIT_S)
            loop.call_later(1.0, sweep)

        loop.call_later(1.0, sweep)
    # Backlog as uvicorn's: the loadgen opens 256 connections at a time.
    server = await loop.create_server(lambda: Conn(room), "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(PER_FRAME), required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, args.mode))
    else:
        uvloop.run(serve(args.port, args.mode))


if __name__ == "__main__":
    main()
