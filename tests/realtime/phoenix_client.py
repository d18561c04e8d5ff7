"""A bare Phoenix-channel client for tests of `/realtime/v1/websocket` (docs/supabase.md): it
sends frames as supabase-js (vsn 2.0.0) or realtime-py (vsn 1.0.0) do and keeps every frame it
gets, decoded to `(join_ref, ref, topic, event, payload)` whatever the serializer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..helpers import RunningServer

V1, V2 = "1.0.0", "2.0.0"


def seed_binding(webinar_id: int, event: str = "*") -> dict[str, Any]:
    """The binding the seed's page made."""
    return {"event": event, "schema": "public", "table": "messages",
            "filter": f"webinar_id=eq.{webinar_id}"}


class PhoenixClient:
    def __init__(self, ws: ClientConnection, vsn: str | None) -> None:
        self.ws = ws
        self.vsn = vsn
        self.frames: list[tuple[Any, Any, str, str, dict[str, Any]]] = []
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._refs = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = orjson.loads(raw)
                if isinstance(frame, list):
                    self.frames.append((frame[0], frame[1], frame[2], frame[3], frame[4]))
                else:
                    assert set(frame) == {"topic", "event", "payload", "ref"}, frame
                    self.frames.append((None, frame["ref"], frame["topic"], frame["event"],
                                        frame["payload"]))
        except ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                code = self.ws.close_code
                self.closed.set_result((code, self.ws.close_reason or ""))

    async def push(self, topic: str, event: str, payload: dict[str, Any],
                   join_ref: str | None = None) -> str:
        ref = str(next(self._refs))
        if self.vsn == V2:
            data = orjson.dumps([join_ref, ref, topic, event, payload])
        else:
            data = orjson.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref,
                                 "join_ref": join_ref})
        await self.ws.send(data.decode())
        return ref

    async def join(self, topic: str, bindings: list[dict[str, Any]],
                   token: str | None = None) -> tuple[str, dict[str, Any]]:
        """phx_join as the clients send it (ref = join_ref) → (join ref, the reply payload)."""
        payload: dict[str, Any] = {"config": {"broadcast": {"ack": False, "self": False},
                                              "presence": {"key": "", "enabled": False},
                                              "postgres_changes": bindings, "private": False}}
        if token is not None:
            payload["access_token"] = token
        ref = str(next(self._refs))
        if self.vsn == V2:
            data = orjson.dumps([ref, ref, topic, "phx_join", payload])
        else:
            data = orjson.dumps({"topic": topic, "event": "phx_join", "payload": payload,
                                 "ref": ref, "join_ref": None})
        await self.ws.send(data.decode())
        reply = await self.wait_for(lambda: self.reply_to(ref))
        return ref, reply

    def reply_to(self, ref: str) -> dict[str, Any] | None:
        for _join, r, _topic, event, payload in self.frames:
            if r == ref and event == "phx_reply":
                return payload
        return None

    def of(self, event: str, topic: str | None = None) -> list[dict[str, Any]]:
        return [p for _j, _r, t, e, p in self.frames if e == event and (topic is None or t == topic)]

    def changes(self, topic: str | None = None) -> list[tuple[str, list[int], dict[str, Any]]]:
        """(type, ids, data) of every postgres_changes push."""
        return [(p["data"]["type"], p["ids"], p["data"]) for p in self.of("postgres_changes", topic)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; frames: {self.frames[-6:]}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def phoenix(server: RunningServer, *, vsn: str | None = V2, apikey: str = "anon-key",
                  path: str = "/realtime/v1/websocket") -> AsyncIterator[PhoenixClient]:
    query = f"apikey={apikey}" + (f"&vsn={vsn}" if vsn else "")
    async with connect(f"ws://127.0.0.1:{server.port}{path}?{query}") as ws:
        client = PhoenixClient(ws, vsn)
        try:
            yield client
        finally:
            client._reader.cancel()
