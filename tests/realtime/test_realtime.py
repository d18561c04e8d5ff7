"""The /realtime WebSocket against a real server: replay, live, moderation, tokens, back-pressure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from webinar_chat.auth.tokens import TokenService

from ..helpers import JWT_SECRET, RunningServer, World, auth, eventually, new_id, send


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def expect_slow_consumer_close(stalled: ClientConnection) -> None:
    """Let a client that stopped reading read again: what is queued ends with close 4008."""
    stalled.transport.resume_reading()  # type: ignore[attr-defined]
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(stalled.recv(), 10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4008, "slow consumer")


class Client:
    """A minimal realtime test client that records every frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.closed: ConnectionClosed | None = None

    async def _read(self) -> None:
        try:
            while True:  # not `async for`: it ends silently on 1000/1001, hiding the close frame
                self.frames.append(json.loads(await self.ws.recv()))
                self._new.set()
        except ConnectionClosed as exc:
            self.closed = exc
        self._new.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    def events(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [e for f in self.frames if f["type"] == "changes"
                and (topic is None or f["topic"] == topic) for e in f["events"]]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not predicate(self):
                self._new.clear()
                if self.closed is not None and not predicate(self):
                    raise AssertionError(f"connection closed: {self.closed}")
                await self._new.wait()

        await asyncio.wait_for(loop(), timeout)

    async def join(self, webinar_id: int, last_seq: int | None = None, ref: str = "j") -> None:
        await self.send(type="join", topic=f"webinar:{webinar_id}:messages", last_seq=last_seq,
                        ref=ref)
        await self.wait_for(lambda c: any(f.get("ref") == ref for f in c.frames
                                          if f["type"] in ("joined", "error")))

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@asynccontextmanager
async def realtime(server: RunningServer, token: str | None = None) -> AsyncIterator[Client]:
    url = server.ws_url + (f"?token={token}" if token else "")
    async with connect(url, compression=None) as ws:
        client = Client(ws)
        try:
            yield client
        finally:
            client._reader.cancel()


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


async def test_live_insert_reaches_every_joined_client(server: RunningServer, world: World,
                                                       http: httpx.AsyncClient) -> None:
    async with realtime(server, world.alice.token) as a, realtime(server, world.bob.token) as b:
        await a.join(world.webinar.id, last_seq=0)
        await b.join(world.webinar.id, last_seq=0)
        cmid = new_id()
        await send(http, world.alice, world.webinar.id, "hello live", cmid)
        for c in (a, b):
            await c.wait_for(lambda c: len(c.events()) == 1)
            event = c.events()[0]
            assert event["type"] == "INSERT" and event["seq"] == 1 and event["old"] is None
            assert event["new"]["content"] == "hello live"
            assert event["new"]["client_msg_id"] == cmid
            assert "email" not in json.dumps(event)


async def test_replay_of_50_changes_then_live_without_gap_or_duplicate(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    async with realtime(server, world.bob.token) as bob:
        await bob.join(world.webinar.id, last_seq=0)
        await send(http, world.alice, world.webinar.id, "before leaving", new_id())
        await bob.wait_for(lambda c: seqs(c.events()) == [1])
    last_seq = 1
    # 50 changes while bob is away, including a hide and a delete
    ids = []
    for i in range(48):
        r = await send(http, world.alice, world.webinar.id, f"while away {i}", new_id())
        ids.append(r.json()["message"]["id"])
    assert (await http.post(f"/api/messages/{ids[3]}/hide", json={"hidden": True},
                            headers=auth(world.moderator.token))).status_code == 200
    assert (await http.delete(f"/api/messages/{ids[5]}",
                              headers=auth(world.moderator.token))).status_code == 200
    async with realtime(server, world.bob.token) as bob:
        await bob.join(world.webinar.id, last_seq=last_seq)
        joined = bob.of_type("joined")[0]
        assert joined["head_seq"] == 51 and joined["resume_from"] == 1
        await bob.wait_for(lambda c: len(c.events()) >= 50)
        replayed = bob.events()
        assert seqs(replayed) == list(range(2, 52))
        by_seq = {e["seq"]: e for e in replayed}
        # current state: the hidden one is redacted for this attendee, the deleted one is gone
        assert by_seq[2 + 3]["new"] == {"id": ids[3], "webinar_id": world.webinar.id,
                                        "hidden": True, "seq": 50}
        assert by_seq[50]["type"] == "UPDATE" and by_seq[50]["old"] == {"id": ids[3]}
        assert by_seq[51]["type"] == "DELETE" and by_seq[51]["old"] == {"id": ids[5]}
        assert by_seq[2 + 5]["new"] is None
        assert not [e for e in replayed if e["new"] and e["new"].get("content") == "while away 3"]
        # then live
        await send(http, world.alice, world.webinar.id, "back live", new_id())
        await bob.wait_for(lambda c: len(c.events()) == 51)
        assert seqs(bob.events()) == list(range(2, 53))


async def test_replay_during_concurrent_writes_has_no_gap_or_duplicate(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    for i in range(20):
        await send(http, world.alice, world.webinar.id, f"old {i}", new_id())

    async def writer() -> None:
        for i in range(30):
            await send(http, world.alice, world.webinar.id, f"racing {i}", new_id())

    async with realtime(server, world.bob.token) as bob:
        racing = asyncio.create_task(writer())
        await bob.join(world.webinar.id, last_seq=0)
        await racing
        await bob.wait_for(lambda c: len(c.events()) >= 50, timeout=10)
        await send(http, world.alice, world.webinar.id, "last", new_id())
        await bob.wait_for(lambda c: len(c.events()) >= 51)
        assert seqs(bob.events()) == list(range(1, 52))


async def test_moderation_arrives_as_update_and_delete_with_the_id(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    async with realtime(server, world.bob.token) as bob, \
            realtime(server, world.moderator.token) as mod:
        await bob.join(world.webinar.id, last_seq=0)
        await mod.join(world.webinar.id, last_seq=0)
        m = (await send(http, world.alice, world.webinar.id, "rude words", new_id())).json()
        mid = m["message"]["id"]
        await http.post(f"/api/messages/{mid}/hide", json={"hidden": True},
                        headers=auth(world.moderator.token))
        await http.post(f"/api/messages/{mid}/hide", json={"hidden": False},
                        headers=auth(world.moderator.token))
        await http.delete(f"/api/messages/{mid}", headers=auth(world.moderator.token))
        for c in (bob, mod):
            await c.wait_for(lambda c: len(c.events()) == 4)
            assert [e["type"] for e in c.events()] == ["INSERT", "UPDATE", "UPDATE", "DELETE"]
            assert all(e["old"] == {"id": mid} for e in c.events()[1:])
        hide_for_attendee = bob.events()[1]["new"]
        assert hide_for_attendee == {"id": mid, "webinar_id": world.webinar.id, "hidden": True,
                                     "seq": 2}
        assert mod.events()[1]["new"]["content"] == "rude words"
        assert bob.events()[2]["new"]["content"] == "rude words"  # unhidden: visible again


async def test_joining_twice_gives_one_delivery_per_change(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    async with realtime(server, world.bob.token) as bob:
        await bob.join(world.webinar.id, last_seq=0, ref="first")
        await bob.join(world.webinar.id, last_seq=0, ref="second")
        for i in range(3):
            await send(http, world.alice, world.webinar.id, f"m{i}", new_id())
        await bob.wait_for(lambda c: len(c.events()) >= 3)
        await send(http, world.alice, world.webinar.id, "sentinel", new_id())
        await bob.wait_for(lambda c: any(e["new"] and e["new"]["content"] == "sentinel"
                                         for e in c.events()))
        assert seqs(bob.events()) == [1, 2, 3, 4]
        assert len(server.app_state.hub.rooms[world.webinar.id].subscribers) == 1


async def test_token_replaced_on_the_open_socket_takes_effect(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    async with realtime(server) as c:
        await c.join(world.webinar.id, last_seq=0, ref="anon")
        assert c.of_type("error")[0]["code"] == "unauthorized"
        await c.send(type="auth", token=world.bob.token)
        await c.wait_for(lambda c: c.of_type("auth_ok"))
        assert c.of_type("auth_ok")[0]["user_id"] == world.bob.user_id
        await c.join(world.webinar.id, last_seq=0, ref="bob")
        assert c.of_type("joined")
        # switch to the outsider: bob's subscription is dropped, the outsider may not join
        await c.send(type="auth", token=world.outsider.token)
        await c.wait_for(lambda c: len(c.of_type("auth_ok")) == 2)
        await send(http, world.alice, world.webinar.id, "not for outsiders", new_id())
        await c.join(world.webinar.id, last_seq=0, ref="outsider")
        assert [f["code"] for f in c.of_type("error")][-1] == "forbidden"
        assert c.events() == []


async def test_expired_token_stops_delivery_until_a_new_token(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    short, _ = TokenService(JWT_SECRET, 900).issue_access(world.bob.user_id, ttl_s=2)
    async with realtime(server, short) as c:
        await c.join(world.webinar.id, last_seq=0)
        await send(http, world.alice, world.webinar.id, "before expiry", new_id())
        await c.wait_for(lambda c: len(c.events()) == 1)
        await c.wait_for(lambda c: any(f.get("code") == "token_expired"
                                       for f in c.of_type("error")), timeout=6)
        await send(http, world.alice, world.webinar.id, "while expired", new_id())
        # prove nothing is delivered: wait for the change to be fanned out to others first
        async with realtime(server, world.moderator.token) as witness:
            await witness.join(world.webinar.id, last_seq=0)
            await witness.wait_for(lambda w: len(w.events()) == 2)
        assert len(c.events()) == 1
        fresh, _ = TokenService(JWT_SECRET, 900).issue_access(world.bob.user_id)
        await c.send(type="auth", token=fresh)
        await c.wait_for(lambda c: len(c.events()) == 2)
        assert c.events()[1]["new"]["content"] == "while expired"
        await send(http, world.alice, world.webinar.id, "after renewal", new_id())
        await c.wait_for(lambda c: len(c.events()) == 3)
        assert seqs(c.events()) == [1, 2, 3]


async def test_heartbeats_are_sent(server: RunningServer, world: World) -> None:
    async with realtime(server, world.bob.token) as c:
        hello = c.frames[0] if c.frames else None
        await c.wait_for(lambda c: bool(c.of_type("hello")))
        hello = c.of_type("hello")[0]
        assert hello["heartbeat_interval"] == server.settings.heartbeat_interval_s
        await c.wait_for(lambda c: bool(c.of_type("heartbeat")),
                         timeout=server.settings.heartbeat_interval_s + 3)


class TestSlowConsumer:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_max_buffer": 64 * 1024}

    async def test_slow_consumer_is_disconnected_with_a_reason(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        import socket as socket_module

        state = server.app_state
        async with connect(server.ws_url + f"?token={world.bob.token}", compression=None,
                           max_queue=1) as stalled:
            await stalled.send(json.dumps({"type": "join", "last_seq": 0,
                                           "topic": f"webinar:{world.webinar.id}:messages"}))
            while json.loads(await stalled.recv())["type"] != "joined":
                pass
            # Stop reading (a frozen tab), and keep the kernel from absorbing megabytes for us:
            # small socket buffers on both ends of this one connection.
            stalled.transport.pause_reading()  # type: ignore[attr-defined]
            (connection,) = state.connections
            server_sock = connection.raw._protocol.transport.get_extra_info("socket")
            server_sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_SNDBUF, 4096)
            client_sock = stalled.transport.get_extra_info("socket")
            client_sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
            big = "x" * 1900
            for _ in range(300):
                await send(http, world.moderator, world.webinar.id, big, new_id())
                if not state.connections:
                    break
            assert not state.connections, "the stalled connection was never closed"
            await expect_slow_consumer_close(stalled)


class TestLongRoomTick:
    """A 2 s tick keeps changes pending in the room, which makes the coalescing window visible."""

    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_tick_ms": 2000}

    async def test_replay_never_shows_a_message_hidden_inside_the_pending_tick(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        async with realtime(server, world.moderator.token) as mod:
            await mod.join(world.webinar.id, last_seq=0)
            m = (await send(http, world.alice, world.webinar.id, "leaky", new_id())).json()
            await mod.wait_for(lambda c: len(c.events()) == 1)  # idle room: flushed at once
            await http.post(f"/api/messages/{m['message']['id']}/hide", json={"hidden": True},
                            headers=auth(world.moderator.token))  # pending for ~2 s
            assert server.app_state.hub.rooms[world.webinar.id].pending
            async with realtime(server, world.bob.token) as bob:
                await bob.join(world.webinar.id, last_seq=0)
                await bob.wait_for(lambda c: len(c.events()) == 2)
                assert "leaky" not in json.dumps(bob.events())
            body = (await http.get(f"/api/webinars/{world.webinar.id}/changes",
                                   params={"after_seq": 0},
                                   headers=auth(world.alice.token))).json()
            assert "leaky" not in json.dumps(body) and len(body["changes"]) == 2

    async def test_busy_room_coalesces_changes_into_one_frame(
            self, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
        async with realtime(server, world.bob.token) as bob:
            await bob.join(world.webinar.id, last_seq=0)
            for i in range(4):
                await send(http, world.alice, world.webinar.id, f"burst {i}", new_id())
            await bob.wait_for(lambda c: len(c.events()) == 4, timeout=6)
            frames = [f for f in bob.frames if f["type"] == "changes"]
            assert [len(f["events"]) for f in frames] == [1, 3]


async def test_token_in_the_url_is_not_logged(server: RunningServer, world: World,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with realtime(server, world.bob.token) as c:
        await c.wait_for(lambda c: bool(c.of_type("auth_ok")))
        assert c.of_type("auth_ok")[0]["user_id"] == world.bob.user_id
    # uvicorn's accept line (path and query string) is not written: realtime_session says more
    # (tests/ops/test_logs.py, with a refused handshake's line too)
    assert "[accepted]" not in caplog.text
    assert world.bob.token not in caplog.text


async def test_per_message_deflate_is_never_negotiated(server: RunningServer, world: World) -> None:
    async with connect(server.ws_url, compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


class TestIdleClient:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"heartbeat_interval_s": 0.2, "client_idle_timeout_s": 1.0}

    async def test_a_silent_client_is_closed_and_a_talking_one_is_not(
            self, server: RunningServer, world: World) -> None:
        async with realtime(server, world.bob.token) as silent, \
                realtime(server, world.alice.token) as talking:
            async def keep_talking() -> None:
                while True:
                    await talking.send(type="heartbeat")
                    await asyncio.sleep(0.2)

            chatter = asyncio.create_task(keep_talking())
            try:
                await silent.wait_for(lambda c: c.closed is not None, timeout=5)
            except AssertionError:
                pass  # wait_for raises once the connection is closed; checked below
            finally:
                chatter.cancel()
            assert silent.closed is not None and silent.closed.rcvd is not None
            assert (silent.closed.rcvd.code, silent.closed.rcvd.reason) == (4000, "heartbeat timeout")
            assert talking.closed is None
            assert len(talking.of_type("heartbeat")) >= 3


async def test_shutdown_closes_sockets_with_1001_and_answers_long_polls(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    import time

    poll = asyncio.create_task(http.get(f"/api/webinars/{world.webinar.id}/changes",
                                        params={"after_seq": 0, "wait": 20},
                                        headers=auth(world.bob.token)))
    async with realtime(server, world.alice.token) as c:
        await c.join(world.webinar.id, last_seq=0)
        await eventually(lambda: bool(server.app_state.hub.rooms[world.webinar.id].waiters))
        started = time.monotonic()
        await server.stop()
        answer = await asyncio.wait_for(poll, 5)
        assert time.monotonic() - started < 3  # not the 20 s wait, nor a cancellation
        assert answer.status_code == 200 and answer.json()["changes"] == []
        await c.wait_for(lambda c: c.closed is not None)
        assert c.closed is not None and c.closed.rcvd is not None
        assert (c.closed.rcvd.code, c.closed.rcvd.reason) == (1001, "server shutting down")
    await server.start()  # the fixture stops it again


async def test_role_badges_are_the_same_on_every_path_and_stay(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    """Each message carries its author's role at the time of posting, in the create answer, the
    live frame, a replay, the list and the change feed; promoting the author later changes the
    badge of their next message only (so a reload shows what a live viewer saw)."""
    async with realtime(server, world.bob.token) as bob:
        await bob.join(world.webinar.id, last_seq=0)
        sent = {}
        for person, role in ((world.host, "host"), (world.moderator, "moderator"),
                             (world.alice, "attendee")):
            answer = await send(http, person, world.webinar.id, f"from the {role}", new_id())
            assert answer.json()["message"]["user"]["role"] == role
            sent[answer.json()["message"]["id"]] = role
        registered = await http.post("/api/admin/registrations", headers=auth(world.admin.token),
                                     json={"webinar_id": world.webinar.id,
                                           "user_id": world.alice.user_id, "role": "moderator"})
        assert registered.status_code == 200
        promoted = await send(http, world.alice, world.webinar.id, "promoted", new_id())
        sent[promoted.json()["message"]["id"]] = "moderator"
        await bob.wait_for(lambda c: len(c.events()) == 4)
        live = {e["new"]["id"]: e["new"]["user"]["role"] for e in bob.events()}
    assert live == sent
    async with realtime(server, world.bob.token) as again:
        await again.join(world.webinar.id, last_seq=0)
        await again.wait_for(lambda c: len(c.events()) == 4)
        assert {e["new"]["id"]: e["new"]["user"]["role"] for e in again.events()} == sent
    h = auth(world.bob.token)
    listed = (await http.get(f"/api/webinars/{world.webinar.id}/messages", headers=h)).json()
    assert {m["id"]: m["user"]["role"] for m in listed["messages"]} == sent
    feed = (await http.get(f"/api/webinars/{world.webinar.id}/changes", headers=h)).json()
    assert {c["new"]["id"]: c["new"]["user"]["role"] for c in feed["changes"]} == sent
