"""The operator's log lines, from `webinar-chat serve` itself (in this run's LOG_FORMAT): one
`http_request` line per request with its context — long-polls answered by the fast path included —
and one `realtime_session` line per WebSocket when it ends."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from webinar_chat.server.ws_protocol import ACCEPTED_LINE, HandshakeLogger

from ..conftest import CliServerFactory
from ..helpers import World, auth, eventually, metric_value, new_id, scrape, send
from ..realtime.test_realtime import Client
from ..serve import ServeProcess


@pytest.fixture
def backend() -> str:
    return "sqlite"


def field(record: dict[str, Any], name: str) -> Any:
    """A field of a log record, in either format (JSON: parsed; text: `name=value`)."""
    if name in record:
        return record[name]
    match = re.search(rf"\b{name}=('[^']*'|\S+)", record["line"])
    if match is None:
        return None
    value = match.group(1).strip("'")
    return int(value) if value.isdigit() else value


def request_lines(server: ServeProcess, request_id: str) -> list[dict[str, Any]]:
    return [r for r in server.events("http_request") if field(r, "request_id") == request_id]


async def test_every_request_writes_one_access_line_with_its_context(
        cli_server: CliServerFactory, world: World) -> None:
    server = await cli_server()
    wid = world.webinar.id
    cmid = new_id()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        r = await http.get(f"/api/webinars/{wid}/messages",
                           headers={**auth(world.alice.token), "X-Request-ID": "list-1"})
        assert r.status_code == 200
        r = await http.post("/api/messages/create",
                            json={"webinarId": wid, "content": "hi", "clientMsgId": cmid},
                            headers={**auth(world.bob.token), "X-Request-ID": "create-1"})
        assert r.status_code == 200
        assert (await http.get("/nowhere", headers={"X-Request-ID": "missing-1"})).status_code \
            == 404
    await eventually(lambda: len(request_lines(server, "missing-1")) == 1)
    [listing] = request_lines(server, "list-1")
    assert field(listing, "status") == 200 and field(listing, "method") == "GET"
    assert field(listing, "route") == "/api/webinars/{webinar_id}/messages"
    assert field(listing, "path") == f"/api/webinars/{wid}/messages"
    assert field(listing, "user_id") == world.alice.user_id
    assert field(listing, "webinar_id") == wid
    assert field(listing, "duration_ms") is not None
    assert field(listing, "level") == "info"
    [create] = request_lines(server, "create-1")
    assert field(create, "client_msg_id") == cmid and field(create, "user_id") == world.bob.user_id
    [missing] = request_lines(server, "missing-1")
    assert field(missing, "status") == 404 and field(missing, "route") == "unmatched"
    assert field(missing, "user_id") is None  # nothing leaks from an earlier request


async def test_a_long_poll_answered_by_the_fast_path_writes_its_access_line_too(
        cli_server: CliServerFactory, world: World) -> None:
    server = await cli_server()
    wid = world.webinar.id
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        headers = auth(world.alice.token)
        # the first poll warms the caches and loads the room (the slow path answers it)
        first = await http.get(f"/api/webinars/{wid}/changes?after_seq=0&wait=0.05",
                               headers={**headers, "X-Request-ID": "slow-1"})
        assert first.status_code == 200
        head = first.json()["last_seq"]
        poll = asyncio.ensure_future(http.get(
            f"/api/webinars/{wid}/changes?after_seq={head}&wait=10",
            headers={**headers, "X-Request-ID": "fast-1"}))

        async def parked_in_room() -> bool:
            return metric_value(await scrape(server), "webinar_chat_longpoll_parked") == 1

        await eventually(parked_in_room)
        assert (await send(http, world.bob, wid, "wake up")).status_code == 200
        answer = await poll
        assert answer.status_code == 200 and len(answer.json()["changes"]) == 1
    await eventually(lambda: len(request_lines(server, "fast-1")) == 1)
    [line] = request_lines(server, "fast-1")
    assert field(line, "fast_path") in (True, "True")
    assert field(line, "route") == "/api/webinars/{webinar_id}/changes"
    assert field(line, "status") == 200 and field(line, "user_id") == world.alice.user_id
    assert field(line, "webinar_id") == wid
    # the answer came from a flush the sender's request triggered: none of its context leaks
    assert field(line, "client_msg_id") is None
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_longpoll_answered_total", path="fast") == 1
    assert metric_value(text, "webinar_chat_http_requests_total",
                        route="/api/webinars/{webinar_id}/changes", status="200") == 2


async def test_a_websocket_session_ends_with_one_line_saying_who_how_long_and_how(
        cli_server: CliServerFactory, world: World) -> None:
    server = await cli_server()
    wid = world.webinar.id
    async with connect(f"{server.ws_url}?token={world.alice.token}", compression=None) as ws:
        client = Client(ws)
        await client.join(wid, last_seq=0)
        await client.send(type="heartbeat")
        await client.send(type="heartbeat")
        await ws.close(1000, "bye")
        await client._reader
    await eventually(lambda: len(server.events("realtime_session")) == 1)
    [session] = server.events("realtime_session")
    assert field(session, "user_id") == world.alice.user_id
    assert field(session, "close_code") == 1000
    assert field(session, "frames_in") == 3  # the join and two heartbeats
    assert field(session, "frames_out") >= 1  # joined (+ replay)
    assert float(field(session, "duration_s")) >= 0


async def test_a_websocket_handshake_never_writes_the_token_in_its_query_string(
        cli_server: CliServerFactory, world: World) -> None:
    """uvicorn logs each handshake with its path and query string, where `?token=` is. An
    accepted socket's line is left out (its `realtime_session` line says more); a refused one
    keeps its line with the path alone."""
    server = await cli_server()
    token = world.alice.token
    async with connect(f"{server.ws_url}?token={token}", compression=None) as ws:
        client = Client(ws)
        await client.join(world.webinar.id, last_seq=0)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{server.ws_url}?token={token}", compression=None,
                           origin=Origin("https://elsewhere.example")):
            pass
    assert refused.value.response.status_code == 403
    await eventually(lambda: len(server.events("realtime_session")) == 1)
    # the refused one's line, in either format (JSON escapes its quotes)
    await eventually(lambda: any("WebSocket /realtime" in r["line"] and " 403" in r["line"]
                                 for r in server.records()))
    log_text = server.log_text()
    assert token not in log_text
    assert token.split(".")[2] not in log_text  # not even the signature
    assert "[accepted]" not in log_text
    assert "connection open" not in log_text


def test_the_websocket_protocols_logger_never_builds_an_accepted_sockets_lines() -> None:
    """Dropped before a record is made (the filter above would drop it after): at a webinar's
    start there are 10,000 of each. Every other line of uvicorn's and websockets' still goes
    through, at the logger's level."""
    records: list[logging.LogRecord] = []
    target = logging.getLogger("tests.handshake_logger")
    target.propagate = False
    target.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    target.addHandler(handler)
    quiet = HandshakeLogger(target)
    quiet.info(ACCEPTED_LINE, "127.0.0.1:5000", "/realtime?token=secret")
    quiet.info("connection open")
    assert records == []
    quiet.info('%s - "WebSocket %s" 403', "127.0.0.1:5000", "/realtime?token=secret")
    quiet.info("connection closed")
    quiet.warning("Unsupported upgrade request.")
    assert [r.getMessage() for r in records] == [
        '127.0.0.1:5000 - "WebSocket /realtime?token=secret" 403', "connection closed",
        "Unsupported upgrade request."]
    assert quiet.level == logging.INFO and quiet.isEnabledFor(logging.INFO)
    target.removeHandler(handler)
