"""Socket loss, fallback and token expiry, for real: the server restarts, closes sockets, the
socket is refused or goes silent, tokens expire — and every change still arrives exactly once,
in order."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from webinar_chat.client import AuthenticationError, ChatClient, ConnectionStatus

from ..helpers import PASSWORD, RunningServer, World, eventually, send
from .conftest import FAST, ClientFactory
from .faults import SocketGate
from .support import Collector

# No fallback in this test: the catch-up must come from the socket's replay alone.
SOCKET_ONLY = FAST.with_(fallback_after_failures=1000, silence_timeout=60.0)


async def test_reconnect_after_server_restart_replays_without_gap_or_duplicate(
        make_client: ClientFactory, world: World, server: RunningServer,
        http: httpx.AsyncClient) -> None:
    gate = SocketGate()
    alice: ChatClient = await make_client(world.alice, connect=gate, config=SOCKET_ONLY)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    await send(http, world.bob, world.webinar.id, "before restart")
    await eventually(lambda: collector.inserted == ["before restart"])

    gate.set(refuse=True)  # hold the client off until the messages below are stored
    await server.restart()
    await eventually(lambda: alice.status is ConnectionStatus.RECONNECTING)
    async with httpx.AsyncClient(base_url=server.base_url) as fresh:
        for text in ("while away 1", "while away 2"):
            assert (await send(fresh, world.bob, world.webinar.id, text)).status_code == 200
        failures = alice.stats.socket_failures
        await eventually(lambda: alice.stats.socket_failures > failures + 1)  # still refused
        assert collector.inserted == ["before restart"]

        gate.set(refuse=False)
        await eventually(lambda: alice.status is ConnectionStatus.LIVE)
        await send(fresh, world.bob, world.webinar.id, "after reconnect")
    await eventually(lambda: len(collector.events) == 4)
    assert collector.inserted == ["before restart", "while away 1", "while away 2",
                                  "after reconnect"]
    collector.assert_exactly_once_in_order()
    # the catch-up came from the socket's replay (not from polling, not from gap repair)
    assert alice.stats.fallback_activations == 0 and alice.stats.polls == 0
    assert alice.stats.gap_fetches == 0 and alice.stats.socket_connects == 2
    assert [m.content for m in room.messages] == collector.inserted


@pytest.mark.parametrize("code, reason", [(4008, "slow consumer"), (1011, "internal error")])
async def test_server_closing_the_socket_resumes_from_last_seq(
        make_client: ClientFactory, world: World, server: RunningServer,
        http: httpx.AsyncClient, code: int, reason: str) -> None:
    alice: ChatClient = await make_client(world.alice, config=SOCKET_ONLY)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    for round_ in range(3):
        await send(http, world.bob, world.webinar.id, f"r{round_} a")
        for connection in list(server.app_state.connections):
            connection.close(code, reason)
        await send(http, world.bob, world.webinar.id, f"r{round_} b")
        await eventually(lambda r=round_: len(collector.events) == 2 * (r + 1))
    collector.assert_exactly_once_in_order()
    assert collector.inserted == [f"r{r} {x}" for r in range(3) for x in "ab"]
    assert alice.stats.socket_connects == 4 and alice.stats.gap_fetches == 0


async def test_refused_socket_falls_back_to_long_polling_and_back(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    gate = SocketGate()
    gate.set(refuse=True)
    alice: ChatClient = await make_client(world.alice, connect=gate)
    bob: ChatClient = await make_client(world.bob)
    alice_room = await alice.join(world.webinar.id)
    bob_room = await bob.join(world.webinar.id)
    collector = Collector(alice_room)
    bob_events = Collector(bob_room)

    # three refused connects → fallback (SPEC §5)
    await eventually(lambda: alice.status is ConnectionStatus.FALLBACK)
    assert alice.stats.fallback_activations == 1 and gate.attempts >= 3 and gate.opened == 0
    assert alice_room.polling

    # receiving works through the long-poll, sending works as always
    await bob_room.send("can you hear me?")
    await eventually(lambda: collector.inserted == ["can you hear me?"])
    await alice_room.send("yes, via long-polling")
    await eventually(lambda: bob_events.inserted[-1:] == ["yes, via long-polling"])
    assert alice.stats.polls >= 1 and alice.status is ConnectionStatus.FALLBACK

    # the socket keeps being retried in the background; when it works, the fallback ends
    gate.set(refuse=False)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE, timeout=10)
    assert not alice_room.polling and not alice.fallback
    for text in ("back on the socket 1", "back on the socket 2"):
        await send(http, world.bob, world.webinar.id, text)
    await eventually(lambda: len(collector.events) == 4)
    collector.assert_exactly_once_in_order()
    assert collector.inserted == ["can you hear me?", "yes, via long-polling",
                                  "back on the socket 1", "back on the socket 2"]


async def test_silent_socket_falls_back_then_recovers(make_client: ClientFactory, world: World,
                                                      http: httpx.AsyncClient) -> None:
    gate = SocketGate()
    alice: ChatClient = await make_client(world.alice, connect=gate)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    await send(http, world.bob, world.webinar.id, "live")
    await eventually(lambda: len(collector.events) == 1)

    gate.set(black_hole=True)  # the connection stays open but no frame gets through
    started = time.monotonic()
    await eventually(lambda: alice.fallback, timeout=5)
    silent_for = time.monotonic() - started
    assert FAST.silence_timeout * 0.5 <= silent_for < FAST.silence_timeout * 3
    await send(http, world.bob, world.webinar.id, "through the fallback")
    await eventually(lambda: len(collector.events) == 2)
    assert alice.stats.polls >= 1

    gate.set(black_hole=False)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE, timeout=10)
    await send(http, world.bob, world.webinar.id, "live again")
    await eventually(lambda: len(collector.events) == 3)
    collector.assert_exactly_once_in_order()
    assert collector.inserted == ["live", "through the fallback", "live again"]


async def test_a_seq_gap_on_the_socket_is_fetched_from_the_feed(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    gate = SocketGate()
    alice: ChatClient = await make_client(world.alice, connect=gate, config=SOCKET_ONLY)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    gate.drop_changes = 2
    for n, text in enumerate(("lost 1", "lost 2"), start=1):
        await send(http, world.bob, world.webinar.id, text)
        await eventually(lambda n=n: gate.dropped == n)  # one frame each: nothing coalesced
    assert collector.events == []
    await send(http, world.bob, world.webinar.id, "arrives")  # seq 3 after 0: a gap
    await eventually(lambda: len(collector.events) == 3)
    collector.assert_exactly_once_in_order()
    assert collector.inserted == ["lost 1", "lost 2", "arrives"]
    assert alice.stats.gap_fetches >= 1 and alice.stats.socket_connects == 1


async def test_fallback_shows_offline_while_the_server_is_down(
        make_client: ClientFactory, world: World, server: RunningServer) -> None:
    alice: ChatClient = await make_client(world.alice)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    await server.stop()
    await eventually(lambda: alice.status is ConnectionStatus.OFFLINE, timeout=10)
    await server.start()
    await eventually(lambda: alice.status is ConnectionStatus.LIVE, timeout=10)
    async with httpx.AsyncClient(base_url=server.base_url) as fresh:
        await send(fresh, world.bob, world.webinar.id, "we are back")
    await eventually(lambda: collector.inserted == ["we are back"])


@pytest.mark.parametrize("server_overrides", [{"heartbeat_interval_s": 0.25,
                                               "access_token_ttl_s": 2}])
async def test_token_expiry_on_the_socket_is_renewed_and_delivery_goes_on(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient,
        server_overrides: dict[str, Any]) -> None:
    alice: ChatClient = await make_client(world.alice)
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    await eventually(lambda: alice.status is ConnectionStatus.LIVE)
    await send(http, world.bob, world.webinar.id, "before expiry")
    # the server sends token_expired and suspends delivery; the SDK refreshes and re-sends it
    await eventually(lambda: alice._auth.renewals >= 1, timeout=6)
    await send(http, world.bob, world.webinar.id, "after expiry")
    await eventually(lambda: len(collector.events) == 2)
    # and again, so the rotated refresh token is the one used the second time
    await eventually(lambda: alice._auth.renewals >= 2, timeout=6)
    await room.send("from alice after two renewals")
    await eventually(lambda: len(collector.events) == 3)
    collector.assert_exactly_once_in_order()
    assert alice.stats.socket_connects == 1  # no reconnect needed
    assert alice.status is ConnectionStatus.LIVE


@pytest.mark.parametrize("server_overrides", [{"heartbeat_interval_s": 0.25,
                                               "access_token_ttl_s": 1}])
async def test_http_401_token_expired_is_refreshed_and_the_send_goes_on(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient,
        server_overrides: dict[str, Any]) -> None:
    login = (await http.post("/api/auth/login", json={"email": world.alice.email,
                                                      "password": PASSWORD})).json()
    # Given tokens carry no expiry, so the SDK only learns it from the server's 401.
    alice: ChatClient = await make_client(world.alice, access_token=login["access_token"],
                                          refresh_token=login["refresh_token"])
    renewals = alice._auth.renewals
    expires = time.time() + 2.1
    await eventually(lambda: time.time() > expires, timeout=5)
    message = await alice.send(world.webinar.id, "after the token expired")
    assert message.user_id == world.alice.user_id
    assert alice._auth.renewals == renewals + 1 and alice.stats.send_retries == 0


@pytest.mark.parametrize("server_overrides", [{"heartbeat_interval_s": 0.25,
                                               "access_token_ttl_s": 1}])
async def test_a_revoked_session_ends_the_room_with_an_authentication_error(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient,
        server_overrides: dict[str, Any]) -> None:
    login = (await http.post("/api/auth/login", json={"email": world.alice.email,
                                                      "password": PASSWORD})).json()
    alice: ChatClient = await make_client(world.alice, access_token=login["access_token"],
                                          refresh_token=login["refresh_token"])
    room = await alice.join(world.webinar.id)
    collector = Collector(room)
    r = await http.post("/api/auth/logout", json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 200
    await eventually(lambda: collector.task.done(), timeout=6)
    assert isinstance(collector.error, AuthenticationError)
    with pytest.raises(AuthenticationError):
        await alice.send(world.webinar.id, "nope")
