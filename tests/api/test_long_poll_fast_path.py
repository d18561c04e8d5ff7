"""The long-poll fast path (server/http_protocol.py, server/longpoll.py) against a real server over
raw HTTP/1.1: byte-identical to the Starlette answer, parked polls woken in order, timeouts,
disconnects, shutdown, keep-alive and pipelining, and every error still Starlette's."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import orjson
import pytest

from webinar_chat.auth.tokens import TokenService
from webinar_chat.protocol.events import Audience
from webinar_chat.server.longpoll import PollRequest, json_response, parse_poll

from ..helpers import JWT_SECRET, Person, RunningServer, World, auth, eventually, new_id, send

# --- raw HTTP ------------------------------------------------------------------------------------


class RawConn:
    """One keep-alive connection; responses are read back as the exact bytes on the wire."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: RunningServer) -> RawConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    def send(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))  # several at once = pipelined

    async def response(self, timeout: float = 10) -> bytes:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return head + await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def closed(self, timeout: float = 10) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    def close(self) -> None:
        self.writer.close()


def poll_request(webinar_id: int, token: str, query: str, *, extra: str = "") -> bytes:
    return (f"GET /api/webinars/{webinar_id}/changes?{query} HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {token}\r\n{extra}\r\n").encode()


# The same id in a slow and a fast request: their answers can be compared byte for byte.
SAME_ID = "X-Request-ID: compare-fast-and-slow\r\n"


def header_value(response: bytes, name: bytes) -> bytes:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.lower() == name:
            return value
    return b""


def status(response: bytes) -> int:
    return int(response[9:12])


def body(response: bytes) -> Any:
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])


def without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n") if not line.startswith(b"date:"))


_TTLS = itertools.count(890, -1)


def fresh_token(person: Person, ttl_s: float | None = None) -> str:
    """A valid token the server has never seen (so its first use takes the slow path)."""
    token, _ = TokenService(JWT_SECRET, 900).issue_access(
        person.user_id, ttl_s=next(_TTLS) if ttl_s is None else ttl_s)
    assert token != person.token
    return token


def fast_count(server: RunningServer) -> int:
    return int(server.app_state.fast_polls)


def waiters(server: RunningServer, world: World) -> int:
    room = server.app_state.hub.rooms.get(world.webinar.id)
    return room.waiters if room is not None else 0


async def warm(server: RunningServer, http: httpx.AsyncClient, world: World, person: Person
               ) -> None:
    """Load the room and put `person`'s token and read access in the caches (slow path)."""
    r = await http.get(f"/api/webinars/{world.webinar.id}/changes", headers=auth(person.token))
    assert r.status_code == 200


async def post(http: httpx.AsyncClient, world: World, text: str, person: Person | None = None
               ) -> dict[str, Any]:
    r = await send(http, person or world.alice, world.webinar.id, text, new_id())
    assert r.status_code == 200, r.text
    message: dict[str, Any] = r.json()["message"]
    return message


# --- parsing (pure) ------------------------------------------------------------------------------

HEADERS = [(b"host", b"x"), (b"authorization", b"Bearer abc")]


def test_parse_poll_takes_only_plain_valid_long_polls() -> None:
    assert parse_poll("GET", "/api/webinars/7/changes", b"after_seq=3&wait=20", HEADERS, 25) == \
        PollRequest(7, "abc", 3, 500, 20.0)
    assert parse_poll("GET", "/api/webinars/7/changes", b"wait=0.5&limit=10&after_seq=0",
                      [(b"authorization", b"bearer  abc ")], 25) == PollRequest(7, "abc", 0, 10, 0.5)
    # X-Request-ID: the first one, if sane (else None: the server generates one), as the
    # middleware of the slow path reads it
    for headers, expected in (([*HEADERS, (b"x-request-id", b"req-1")], b"req-1"),
                              ([*HEADERS, (b"x-request-id", b"a b\r\nx: y")], None),
                              ([*HEADERS, (b"x-request-id", b"")], None),
                              ([*HEADERS, (b"x-request-id", b"1"), (b"x-request-id", b"2")], b"1")):
        request = parse_poll("GET", "/api/webinars/7/changes", b"wait=1", headers, 25)
        assert request is not None and request.request_id == expected, headers
    for method, path, query, headers in (
        ("HEAD", "/api/webinars/7/changes", b"wait=1", HEADERS),
        ("GET", "/api/webinars/7/messages", b"wait=1", HEADERS),
        ("GET", "/api/webinars/x7/changes", b"wait=1", HEADERS),
        ("GET", "/api/webinars/7/changes/", b"wait=1", HEADERS),
        ("GET", "/api/webinars/7/changes", b"after_seq=3", HEADERS),  # no wait: not a long-poll
        ("GET", "/api/webinars/7/changes", b"wait=0", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=26", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1e1", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=nan", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&after_seq=-1", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&after_seq=", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&after_seq=1&after_seq=2", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&limit=0", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&limit=1001", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&_=123", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1&after_seq=%31", HEADERS),
        ("GET", "/api/webinars/7/changes", b"wait=1", [(b"authorization", b"Basic abc")]),
        ("GET", "/api/webinars/7/changes", b"wait=1", [(b"authorization", b"Bearer ")]),
        ("GET", "/api/webinars/7/changes", b"wait=1", [(b"host", b"x")]),
        ("GET", "/api/webinars/7/changes", b"wait=1", [*HEADERS, (b"content-length", b"2")]),
    ):
        assert parse_poll(method, path, query, headers, 25) is None, (method, path, query)


def test_json_response_is_what_uvicorn_writes_for_starlette() -> None:
    default = [(b"date", b"Sun, 22 Nov 2026 07:00:00 GMT"), (b"server", b"uvicorn")]
    assert json_response(default, b"{}", request_id=b"r1") == (
        b"HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 07:00:00 GMT\r\nserver: uvicorn\r\n"
        b"content-length: 2\r\ncontent-type: application/json\r\n"
        b"x-content-type-options: nosniff\r\nx-request-id: r1\r\n\r\n{}")
    assert b"x-request-id: r1\r\nconnection: close\r\n\r\n{}" in json_response(
        default, b"{}", request_id=b"r1", keep_alive=False)


# --- against the server --------------------------------------------------------------------------

async def _same_second(pair: Any) -> tuple[bytes, bytes]:
    """Run `pair()` → (slow, fast) until both answers carry the same `date` (a second boundary
    between them would make the bytes differ for a reason that is not the fast path's)."""
    for _ in range(5):
        slow, fast = await pair()
        if slow.split(b"\r\n")[1] == fast.split(b"\r\n")[1]:
            return slow, fast
    raise AssertionError("no two answers in the same second")


async def test_fast_answer_is_byte_identical_to_the_slow_answer(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    await warm(server, http, world, world.bob)  # the room's ring holds what follows
    for i in range(3):
        await post(http, world, f"m{i}")
    conn = await RawConn.open(server)

    async def immediate() -> tuple[bytes, bytes]:
        before = fast_count(server)
        conn.send(poll_request(world.webinar.id, fresh_token(world.bob), "after_seq=1&wait=5",
                               extra=SAME_ID))
        slow = await conn.response()
        assert fast_count(server) == before
        conn.send(poll_request(world.webinar.id, world.bob.token, "after_seq=1&wait=5",
                               extra=SAME_ID))
        fast = await conn.response()
        assert fast_count(server) == before + 1
        return slow, fast

    slow, fast = await _same_second(immediate)
    assert status(fast) == 200 and [c["seq"] for c in body(fast)["changes"]] == [2, 3]
    assert fast == slow

    # parked in both paths, woken by one message
    slow_conn = await RawConn.open(server)

    async def parked() -> tuple[bytes, bytes]:
        head = await _head(http, world)
        before = fast_count(server)
        query = f"after_seq={head}&wait=20"
        slow_conn.send(poll_request(world.webinar.id, fresh_token(world.bob), query,
                                    extra=SAME_ID))
        await eventually(lambda: waiters(server, world) == 1)
        conn.send(poll_request(world.webinar.id, world.bob.token, query, extra=SAME_ID))
        await eventually(lambda: waiters(server, world) == 2)
        await post(http, world, "wake")
        a, b = await slow_conn.response(), await conn.response()
        assert fast_count(server) == before + 1
        return a, b

    slow, fast = await _same_second(parked)
    assert [c["new"]["content"] for c in body(fast)["changes"]] == ["wake"]
    assert fast == slow

    # timeout: the same empty answer
    async def timed_out() -> tuple[bytes, bytes]:
        head = await _head(http, world)
        query = f"after_seq={head}&wait=0.3"
        slow_conn.send(poll_request(world.webinar.id, fresh_token(world.bob), query,
                                    extra=SAME_ID))
        conn.send(poll_request(world.webinar.id, world.bob.token, query, extra=SAME_ID))
        return await slow_conn.response(), await conn.response()

    before = fast_count(server)
    slow, fast = await _same_second(timed_out)
    assert fast_count(server) > before
    assert body(fast) == {"success": True, "changes": [], "last_seq": body(fast)["last_seq"],
                          "has_more": False}
    assert fast == slow
    assert waiters(server, world) == 0

    # without X-Request-ID, each path generates its own
    before = fast_count(server)
    conn.send(poll_request(world.webinar.id, fresh_token(world.bob), "after_seq=1&wait=5"))
    conn.send(poll_request(world.webinar.id, world.bob.token, "after_seq=1&wait=5"))
    generated = [await conn.response(), await conn.response()]
    assert fast_count(server) == before + 1
    ids = {header_value(r, b"x-request-id") for r in generated}
    assert len(ids) == 2 and all(ids)
    conn.close()
    slow_conn.close()


async def _head(http: httpx.AsyncClient, world: World) -> int:
    r = await http.get(f"/api/webinars/{world.webinar.id}/changes",
                       params={"after_seq": 0, "limit": 1000}, headers=auth(world.host.token))
    return int(r.json()["last_seq"])


async def test_parked_pollers_get_every_change_in_order_once(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    await warm(server, http, world, world.bob)
    await warm(server, http, world, world.moderator)
    pollers = [(world.bob, Audience.ATTENDEE), (world.bob, Audience.ATTENDEE),
               (world.moderator, Audience.STAFF)]
    total = 30
    before = fast_count(server)

    async def poller(person: Person) -> list[int]:
        conn = await RawConn.open(server)
        seen: list[int] = []
        last = 0
        while last < total:
            conn.send(poll_request(world.webinar.id, person.token, f"after_seq={last}&wait=10"))
            page = body(await conn.response())
            for change in page["changes"]:
                seen.append(change["seq"])
                last = change["seq"]
            assert page["last_seq"] == last
        conn.close()
        return seen

    tasks = [asyncio.create_task(poller(p)) for p, _ in pollers]
    await eventually(lambda: waiters(server, world) == len(pollers))
    for i in range(total):
        await post(http, world, f"n{i}")
        if i % 7 == 0:
            await asyncio.sleep(0)
    for seen in await asyncio.gather(*tasks):
        assert seen == list(range(1, total + 1))  # ordered, no gap, no duplicate
    assert fast_count(server) > before
    await eventually(lambda: waiters(server, world) == 0)


async def test_disconnect_while_parked_leaves_no_waiter(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    await warm(server, http, world, world.bob)
    conns = [await RawConn.open(server) for _ in range(3)]
    for conn in conns:
        conn.send(poll_request(world.webinar.id, world.bob.token, "after_seq=0&wait=20"))
    await eventually(lambda: waiters(server, world) == 3)
    room = server.app_state.hub.rooms[world.webinar.id]
    assert room.parked
    for conn in conns[:2]:
        conn.close()
    await eventually(lambda: waiters(server, world) == 1, message="closed polls still parked")
    await post(http, world, "for the one left")
    assert [c["new"]["content"] for c in body(await conns[2].response())["changes"]] == \
        ["for the one left"]
    assert waiters(server, world) == 0 and not room.parked
    conns[2].close()


async def test_shutdown_answers_parked_polls(server: RunningServer, http: httpx.AsyncClient,
                                             world: World) -> None:
    await warm(server, http, world, world.bob)
    await post(http, world, "before")
    conn = await RawConn.open(server)
    conn.send(poll_request(world.webinar.id, world.bob.token, "after_seq=1&wait=20"))
    await eventually(lambda: waiters(server, world) == 1)
    state = server.app_state
    before = state.fast_polls
    stopping = asyncio.create_task(server.stop())
    answer = await conn.response()
    assert status(answer) == 200
    assert body(answer) == {"success": True, "changes": [], "last_seq": 1, "has_more": False}
    assert state.fast_polls == before + 1
    assert await conn.closed()
    conn.close()
    await stopping


async def test_keep_alive_and_pipelined_requests(server: RunningServer, http: httpx.AsyncClient,
                                                 world: World) -> None:
    await warm(server, http, world, world.bob)
    await post(http, world, "one")
    conn = await RawConn.open(server)
    wid, token = world.webinar.id, world.bob.token
    before = fast_count(server)
    # sequential polls on one connection: immediate, then a timeout
    conn.send(poll_request(wid, token, "after_seq=0&wait=5"))
    assert [c["seq"] for c in body(await conn.response())["changes"]] == [1]
    conn.send(poll_request(wid, token, "after_seq=1&wait=0.2"))
    assert body(await conn.response())["changes"] == []
    # pipelined: an immediate fast answer, a parked poll, then an ordinary request behind it
    conn.send(poll_request(wid, token, "after_seq=0&wait=5"),
              poll_request(wid, token, "after_seq=1&wait=20"),
              b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    assert [c["seq"] for c in body(await conn.response())["changes"]] == [1]
    await eventually(lambda: waiters(server, world) == 1)
    await post(http, world, "two")
    assert [c["new"]["content"] for c in body(await conn.response())["changes"]] == ["two"]
    health = await conn.response()
    assert status(health) == 200 and body(health)["status"] == "ok"
    # a slow request first, fast polls pipelined behind it: answered in order
    conn.send(poll_request(wid, fresh_token(world.bob), "after_seq=0&wait=5"),
              poll_request(wid, token, "after_seq=1&wait=5"),
              poll_request(wid, token, "after_seq=2&wait=0.2"))
    assert [c["seq"] for c in body(await conn.response())["changes"]] == [1, 2]
    assert [c["seq"] for c in body(await conn.response())["changes"]] == [2]
    assert body(await conn.response())["changes"] == []
    assert fast_count(server) > before
    # HTTP/1.0 and `Connection: close` get `connection: close` and the socket is closed
    conn.send(poll_request(wid, token, "after_seq=0&wait=5", extra="Connection: close\r\n"))
    answer = await conn.response()
    assert b"\r\nconnection: close\r\n" in answer and [c["seq"] for c in body(answer)["changes"]] \
        == [1, 2]
    assert await conn.closed()
    conn.close()


async def test_errors_still_come_from_the_slow_path(server: RunningServer, http: httpx.AsyncClient,
                                                    world: World) -> None:
    await warm(server, http, world, world.bob)
    wid = world.webinar.id
    url = f"/api/webinars/{wid}/changes"
    r = await http.get(url, headers=auth(world.outsider.token))  # caches the outsider's 403
    assert r.status_code == 403
    before = fast_count(server)
    for params in ({"wait": 26}, {"wait": "soon"}, {"wait": 1, "after_seq": -1},
                   {"wait": 1, "limit": 0}, {"wait": 1, "after_seq": "x"}):
        r = await http.get(url, params=params, headers=auth(world.bob.token))
        assert r.status_code == 400 and r.json()["code"] == "invalid_request", params
    r = await http.get(url, params={"wait": 1}, headers=auth(world.outsider.token))
    assert r.status_code == 403 and r.json()["success"] is False
    r = await http.get(url, params={"wait": 1})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = await http.get(url, params={"wait": 1}, headers=auth("not-a-jwt"))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = await http.get("/api/webinars/424242/changes", params={"wait": 1},
                       headers=auth(world.bob.token))
    assert r.status_code in (403, 404) and r.json()["success"] is False
    assert fast_count(server) == before  # none of these took the fast path
    # a cached token that expired since: the slow path says so
    short = fresh_token(world.bob, ttl_s=1)
    r = await http.get(url, params={"wait": 0.1}, headers=auth(short))
    assert r.status_code == 200

    async def expired() -> bool:
        r = await http.get(url, params={"wait": 1}, headers=auth(short))
        return r.status_code == 401 and r.json()["code"] == "token_expired"

    await eventually(expired, timeout=5, interval=0.2, message="expired token still accepted")


async def test_pollers_see_hide_and_delete_redacted(server: RunningServer, http: httpx.AsyncClient,
                                                    world: World) -> None:
    await warm(server, http, world, world.bob)
    wid = world.webinar.id
    conn = await RawConn.open(server)
    before = fast_count(server)

    async def poll(after: int) -> dict[str, Any]:
        conn.send(poll_request(wid, world.bob.token, f"after_seq={after}&wait=10"))
        page: dict[str, Any] = body(await conn.response())
        return page

    secret = await post(http, world, "secret content")
    first = await poll(0)
    assert [c["new"]["content"] for c in first["changes"]] == ["secret content"]
    waiting = asyncio.create_task(poll(first["last_seq"]))
    await eventually(lambda: waiters(server, world) == 1)
    r = await http.post(f"/api/messages/{secret['id']}/hide", json={"hidden": True},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200
    update = (await waiting)["changes"]
    assert [c["type"] for c in update] == ["UPDATE"]
    assert update[0]["new"] == {"id": secret["id"], "webinar_id": wid, "hidden": True,
                                "seq": update[0]["seq"]}
    replay = await poll(0)  # from memory: the earlier INSERT is redacted too
    assert all("content" not in (c["new"] or {}) for c in replay["changes"])
    assert b"secret content" not in repr(replay).encode()
    waiting = asyncio.create_task(poll(replay["last_seq"]))
    await eventually(lambda: waiters(server, world) == 1)
    r = await http.delete(f"/api/messages/{secret['id']}", headers=auth(world.moderator.token))
    assert r.status_code == 200
    delete = (await waiting)["changes"]
    assert [(c["type"], c["new"], c["old"]["id"]) for c in delete] == [("DELETE", None,
                                                                        secret["id"])]
    assert fast_count(server) > before
    conn.close()


@pytest.mark.parametrize("n", [50])
async def test_many_parked_pollers_share_one_answer(server: RunningServer,
                                                     http: httpx.AsyncClient, world: World,
                                                     n: int) -> None:
    await warm(server, http, world, world.bob)
    conns = [await RawConn.open(server) for _ in range(n)]
    for conn in conns:
        conn.send(poll_request(world.webinar.id, world.bob.token, "after_seq=0&wait=20"))
    await eventually(lambda: waiters(server, world) == n)
    await post(http, world, "to all")
    answers = [await conn.response() for conn in conns]
    # one answer, but each with its own request id
    ids = [header_value(answer, b"x-request-id") for answer in answers]
    assert len(set(ids)) == n and all(ids)
    shared = {answer.replace(b"x-request-id: " + rid + b"\r\n", b"")
              for answer, rid in zip(answers, ids, strict=True)}
    assert len(shared) == 1 and body(answers[0])["changes"][0]["new"]["content"] == "to all"
    for conn in conns:
        conn.close()


async def test_idle_keep_alive_connection_is_closed_after_a_fast_answer(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    await warm(server, http, world, world.bob)
    assert server._server is not None
    server._server.config.timeout_keep_alive = 1  # read by each new connection
    conn = await RawConn.open(server)
    before = fast_count(server)
    conn.send(poll_request(world.webinar.id, world.bob.token, "after_seq=0&wait=0.1"))
    assert body(await conn.response())["changes"] == []
    assert fast_count(server) == before + 1
    assert await conn.closed(timeout=10)  # uvicorn's keep-alive timeout, as after a slow answer
    conn.close()


async def test_a_ban_from_elsewhere_reaches_fast_pollers_after_the_recheck(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    await warm(server, http, world, world.bob)
    # Banned in the database behind this process's back (another process, the CLI): the cached
    # decision stays until it is re-checked; make every fast-path use re-check it.
    await server.app_state.store.set_banned(world.webinar.id, world.bob.user_id, True)
    server.app_state.access.fast_recheck_age_s = 0.0
    url = f"/api/webinars/{world.webinar.id}/changes"

    async def refused() -> bool:
        r = await http.get(url, params={"after_seq": 0, "wait": 0.1},
                           headers=auth(world.bob.token))
        return r.status_code == 403 and r.json()["code"] == "banned"

    await eventually(refused, timeout=5, interval=0.05, message="ban never reached the poller")
    assert not server.app_state.access._rechecks
