"""Idempotent send under real network faults: lost requests, lost answers, answers that never
come, failing proxies. Every case must store the message exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from webinar_chat.client import ChatClient, ConnectionStatus, SendGaveUp

from ..helpers import World, auth, eventually
from .conftest import FAST, ClientFactory
from .faults import BAD_GATEWAY, HOLD_RESPONSE, LOSE_REQUEST, LOSE_RESPONSE, FaultyTransport

CREATE = "/api/messages/create"


async def stored(http: httpx.AsyncClient, world: World) -> list[dict[str, object]]:
    r = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                       headers=auth(world.host.token))
    messages: list[dict[str, object]] = r.json()["messages"]
    return messages


async def test_lost_answer_is_retried_with_the_same_id_and_reconciled_from_409(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    transport = FaultyTransport()
    transport.fail_next(LOSE_RESPONSE, CREATE)
    alice: ChatClient = await make_client(world.alice, http_transport=transport)
    message = await alice.send(world.webinar.id, "said once")
    rows = await stored(http, world)
    assert len(rows) == 1 and rows[0]["id"] == message.id
    assert rows[0]["client_msg_id"] == message.client_msg_id
    assert transport.faults_used() == [LOSE_RESPONSE]
    creates = [p for _, p in transport.handled if p == CREATE]
    assert len(creates) == 2  # the lost one and the retry
    assert alice.stats.send_retries == 1 and alice.stats.send_duplicates == 1


async def test_lost_request_is_retried_and_stored(make_client: ClientFactory, world: World,
                                                  http: httpx.AsyncClient) -> None:
    transport = FaultyTransport()
    transport.fail_next(LOSE_REQUEST, CREATE)
    transport.fail_next(BAD_GATEWAY, CREATE)
    transport.fail_next(LOSE_REQUEST, CREATE)
    alice: ChatClient = await make_client(world.alice, http_transport=transport)
    message = await alice.send(world.webinar.id, "third time lucky")
    assert [r["id"] for r in await stored(http, world)] == [message.id]
    assert transport.faults_used() == [LOSE_REQUEST, BAD_GATEWAY, LOSE_REQUEST]
    assert alice.stats.send_retries == 3 and alice.stats.send_duplicates == 0


async def test_an_answer_that_never_comes_times_out_and_the_retry_gets_409(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    transport = FaultyTransport()
    transport.fail_next(HOLD_RESPONSE, CREATE)
    # No socket-side shortcut here: the client has not joined, so only the retry can finish it.
    alice: ChatClient = await make_client(world.alice, http_transport=transport,
                                          config=FAST.with_(send_timeout=0.5))
    started = time.monotonic()
    message = await alice.send(world.webinar.id, "slow network")
    assert time.monotonic() - started < 5
    assert [r["id"] for r in await stored(http, world)] == [message.id]
    assert alice.stats.send_timeouts == 1 and alice.stats.send_duplicates == 1


async def test_the_feed_completes_a_send_whose_answer_is_stuck(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    """SPEC §5: a realtime INSERT carrying the client_msg_id also resolves a pending send."""
    transport = FaultyTransport()
    transport.fail_next(HOLD_RESPONSE, CREATE)
    alice: ChatClient = await make_client(world.alice, http_transport=transport,
                                          config=FAST.with_(send_timeout=30.0))
    room = await alice.join(world.webinar.id)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    cmid = str(uuid.uuid4())
    async with asyncio.timeout(5):  # far below the 30 s attempt timeout
        message = await room.send("seen on the socket first", client_msg_id=cmid)
    assert message.client_msg_id == cmid
    assert [m.id for m in room.messages] == [message.id]
    assert [r["id"] for r in await stored(http, world)] == [message.id]
    assert alice.stats.send_timeouts == 0


async def test_resending_a_client_msg_id_later_returns_the_stored_message(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    alice: ChatClient = await make_client(world.alice)
    cmid = str(uuid.uuid4())
    first = await alice.send(world.webinar.id, "hello", client_msg_id=cmid)
    again = await alice.send(world.webinar.id, "hello", client_msg_id=cmid)
    assert again == first
    both = await asyncio.gather(*(alice.send(world.webinar.id, "same", client_msg_id=cmid2)
                                  for cmid2 in [str(uuid.uuid4())] * 3))
    assert len({m.id for m in both}) == 1
    assert len(await stored(http, world)) == 2


async def test_give_up_after_the_configured_time_keeps_the_id_for_later(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    transport = FaultyTransport()
    for _ in range(50):
        transport.fail_next(LOSE_RESPONSE, CREATE)
    alice: ChatClient = await make_client(world.alice, http_transport=transport,
                                          config=FAST.with_(send_give_up_after=0.3))
    with pytest.raises(SendGaveUp) as gave_up:
        await alice.send(world.webinar.id, "maybe stored")
    transport.script.clear()  # the network is back
    rows = await stored(http, world)
    assert len(rows) == 1  # the server did store it; the client never heard
    finished = await alice.send(world.webinar.id, "maybe stored",
                                client_msg_id=gave_up.value.client_msg_id)
    assert finished.id == rows[0]["id"]
    assert len(await stored(http, world)) == 1


@pytest.mark.parametrize("server_overrides", [{"heartbeat_interval_s": 0.25,
                                               "rate_messages": "3/1"}])
async def test_sends_refused_by_the_rate_limit_are_retried_after_retry_after_and_stored_once(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    alice: ChatClient = await make_client(world.alice)
    started = time.monotonic()
    sent = await asyncio.gather(*(alice.send(world.webinar.id, f"quick {i}") for i in range(6)))
    # 3 at once, then 3 more after the 429s' Retry-After (1 s: a token every 1/3 s).
    assert time.monotonic() - started >= 1.0
    assert alice.stats.send_retries >= 3 and alice.stats.send_errors == 0
    rows = await stored(http, world)
    assert sorted(r["id"] for r in rows) == sorted(m.id for m in sent)
    assert sorted(str(r["content"]) for r in rows) == [f"quick {i}" for i in range(6)]
