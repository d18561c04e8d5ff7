"""The /realtime socket's limits against a real server (docs/realtime.md, "Limits"): frame sizes
before and after authentication, the authentication deadline, topics per socket, sockets per
user, and the Origin allow-list."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from webinar_chat.auth.tokens import TokenService
from webinar_chat.server.origins import origin_policy
from webinar_chat.settings import Settings
from webinar_chat.store import Store

from ..conftest import CliServerFactory
from ..helpers import RunningServer, World, eventually, metric_value, scrape
from .test_realtime import Client, realtime

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_the_defaults() -> None:
    settings = Settings()
    assert settings.realtime_max_frame_unauthenticated == 4 * KIB
    assert settings.realtime_max_frame == 64 * KIB
    assert settings.realtime_auth_timeout_s == 10.0
    assert settings.realtime_max_topics == 10
    assert settings.realtime_max_sockets_per_user == 20
    assert settings.realtime_allowed_origins == ()


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("REALTIME_MAX_FRAME_UNAUTHENTICATED", "2048"),
                        ("REALTIME_MAX_FRAME", "32768"), ("REALTIME_AUTH_TIMEOUT", "2.5"),
                        ("REALTIME_MAX_TOPICS", "3"), ("REALTIME_MAX_SOCKETS_PER_USER", "4"),
                        ("REALTIME_ALLOWED_ORIGINS", " https://a.example , https://b.example:8443,")):
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.realtime_max_frame_unauthenticated, settings.realtime_max_frame,
            settings.realtime_auth_timeout_s, settings.realtime_max_topics,
            settings.realtime_max_sockets_per_user) == (2048, 32768, 2.5, 3, 4)
    assert settings.realtime_allowed_origins == ("https://a.example", "https://b.example:8443")


async def closed_with(client: Client, timeout: float = 5.0) -> tuple[int, str]:
    """The close frame the server sent `client` (waits for the close)."""
    try:
        await client.wait_for(lambda c: c.closed is not None, timeout=timeout)
    except AssertionError:
        pass  # wait_for raises once the connection is closed; checked below
    assert client.closed is not None and client.closed.rcvd is not None, client.closed
    return client.closed.rcvd.code, client.closed.rcvd.reason


async def answered(client: Client, ref: str, **padding: str) -> bool:
    """Send a frame the server answers (`leave` → `left` with its ref), padded as given."""
    await client.send(type="leave", topic="webinar:1:messages", ref=ref, **padding)
    await client.wait_for(lambda c: any(f.get("ref") == ref for f in c.of_type("left")))
    return True


# --- frame sizes -----------------------------------------------------------------------------------

async def test_an_unauthenticated_1_mib_frame_is_refused_with_1009_at_once(
        server: RunningServer, world: World) -> None:
    async with connect(server.ws_url, compression=None) as ws:
        client = Client(ws)
        await client.wait_for(lambda c: bool(c.of_type("hello")))
        started = time.monotonic()
        await ws.send(json.dumps({"type": "auth", "token": "x" * MIB}))
        code, reason = await closed_with(client, timeout=3)
        assert code == 1009 and "exceeds limit of 4096 bytes" in reason, reason
        assert time.monotonic() - started < 2
    await eventually(lambda: not server.app_state.connections)
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_realtime_closes_total", code="1009") == 1


async def test_an_authenticated_socket_may_send_10_kib_but_not_100_kib(
        server: RunningServer, world: World) -> None:
    async with realtime(server) as client:
        await client.send(type="auth", token=world.alice.token)
        await client.wait_for(lambda c: bool(c.of_type("auth_ok")))
        assert await answered(client, "ten", pad="x" * (10 * KIB))
        await client.send(type="leave", topic="webinar:1:messages", pad="x" * (100 * KIB))
        code, reason = await closed_with(client)
        assert code == 1009 and f"exceeds limit of {64 * KIB} bytes" in reason, reason


async def test_before_authentication_even_5_kib_is_refused(server: RunningServer,
                                                           world: World) -> None:
    async with realtime(server) as client:
        assert await answered(client, "small", pad="x" * (3 * KIB))  # under 4 KiB: fine
        await client.send(type="leave", topic="webinar:1:messages", pad="x" * (5 * KIB))
        assert (await closed_with(client))[0] == 1009


async def test_a_socket_that_logs_out_is_back_to_the_small_limit(server: RunningServer,
                                                                 world: World) -> None:
    async with realtime(server, world.alice.token) as client:
        await client.wait_for(lambda c: bool(c.of_type("auth_ok")))
        assert await answered(client, "big", pad="x" * (10 * KIB))
        await client.send(type="auth", token=None)
        await client.wait_for(lambda c: len(c.of_type("auth_ok")) == 2)
        await client.send(type="leave", topic="webinar:1:messages", pad="x" * (10 * KIB))
        assert (await closed_with(client))[0] == 1009


async def flood(port: int, size: int) -> int:
    """An unauthenticated socket that announces one text frame of `size` bytes and streams its
    payload until the server cuts it off (or all of it is sent). Returns the bytes it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    chunk = b"x" * (64 * KIB)
    sent = 0
    try:
        writer.write(bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0")
        while sent < size:
            writer.write(chunk[:size - sent])
            sent += min(len(chunk), size - sent)
            await writer.drain()
        await asyncio.wait_for(reader.read(), 10)  # until the server closes
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    return sent


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_ten_unauthenticated_15_mib_frames_cost_the_server_no_memory(
        cli_server: CliServerFactory) -> None:
    """The probe of issue #11 against `webinar-chat serve`: 10 sockets that never authenticate
    each try to send a 15 MiB frame (before the limit: RSS 129 → 432 MB)."""
    server = await cli_server()
    assert server.process is not None
    await flood(server.port, 15 * MIB)  # warm-up: the code paths of a refused frame
    before = rss_bytes(server.process.pid)
    peak = before
    floods = asyncio.gather(*(flood(server.port, 15 * MIB) for _ in range(10)))
    while not floods.done():
        peak = max(peak, rss_bytes(server.process.pid))
        await asyncio.wait({floods}, timeout=0.01)
    sent = floods.result()
    peak = max(peak, rss_bytes(server.process.pid))
    assert peak - before < 50 * MIB, f"RSS {before / MIB:.0f} → {peak / MIB:.0f} MiB"
    assert all(n < 15 * MIB for n in sent), sent  # every one was cut off before the end
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_realtime_closes_total", code="1009") == 11
    assert metric_value(text, "webinar_chat_realtime_connections") == 0


# --- authentication deadline -----------------------------------------------------------------------

class TestAuthDeadline:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_auth_timeout_s": 0.5}

    async def test_a_socket_without_a_valid_token_is_closed_with_4401(
            self, server: RunningServer, world: World) -> None:
        async with realtime(server) as silent, realtime(server) as refused, \
                realtime(server) as late:
            await refused.send(type="auth", token="not-a-token")
            await refused.wait_for(lambda c: bool(c.of_type("error")))
            assert refused.of_type("error")[0]["code"] == "invalid_token"
            await late.send(type="auth", token=world.bob.token)
            await late.wait_for(lambda c: bool(c.of_type("auth_ok")))
            started = time.monotonic()
            assert await closed_with(silent) == (4401, "authentication timeout")
            assert await closed_with(refused) == (4401, "authentication timeout")
            assert time.monotonic() - started < 2
            # The socket that authenticated is past the deadline and still served.
            assert late.closed is None and await answered(late, "still-open")

    async def test_a_socket_authenticated_by_its_url_has_no_deadline(
            self, server: RunningServer, world: World) -> None:
        async with realtime(server, world.bob.token) as by_url, realtime(server) as silent:
            assert await closed_with(silent) == (4401, "authentication timeout")
            assert by_url.closed is None and await answered(by_url, "open")


# --- topics per socket -----------------------------------------------------------------------------

class TestTopicsPerSocket:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_max_topics": 2}

    async def test_the_join_beyond_the_cap_is_refused_and_the_socket_stays_open(
            self, server: RunningServer, world: World, store: Store) -> None:
        third = await store.create_webinar(world.webinar.client_id, "Third")
        await store.register(third.id, world.alice.user_id, "attendee")
        other = await store.create_webinar(world.webinar.client_id, "Fourth")
        await store.register(other.id, world.alice.user_id, "attendee")
        async with realtime(server, world.alice.token) as client:
            await client.join(world.webinar.id, ref="1")
            await client.join(third.id, ref="2")
            await client.join(other.id, ref="3")
            (error,) = [f for f in client.of_type("error") if f.get("ref") == "3"]
            assert error["code"] == "too_many_topics"
            assert error["topic"] == f"webinar:{other.id}:messages"
            assert [f["ref"] for f in client.of_type("joined")] == ["1", "2"]
            await client.join(third.id, ref="again")  # re-joining replaces: no new topic
            assert client.of_type("joined")[-1]["ref"] == "again"
            await client.send(type="leave", topic=f"webinar:{third.id}:messages", ref="out")
            await client.wait_for(lambda c: bool(c.of_type("left")))
            await client.join(other.id, ref="4")  # room again
            assert client.of_type("joined")[-1]["ref"] == "4"
            assert client.closed is None


# --- sockets per user ------------------------------------------------------------------------------

class TestSocketsPerUser:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"realtime_max_sockets_per_user": 2}

    async def test_the_socket_beyond_the_cap_is_closed_after_authentication(
            self, server: RunningServer, world: World) -> None:
        state = server.app_state
        async with realtime(server, world.alice.token) as first, \
                realtime(server, world.alice.token) as second, \
                realtime(server) as third, realtime(server, world.bob.token) as bob:
            for c in (first, second, bob):
                await c.wait_for(lambda c: bool(c.of_type("auth_ok")))
            assert await answered(third, "unauthenticated sockets do not count")
            await third.send(type="auth", token=world.alice.token)
            assert await closed_with(third) == (4429, "too many connections")
            assert state.sockets_per_user == {world.alice.user_id: 2, world.bob.user_id: 1}
            for c in (first, second, bob):
                assert c.closed is None and await answered(c, "open")
            await second.close()
            await eventually(lambda: state.sockets_per_user.get(world.alice.user_id) == 1)
            async with realtime(server, world.alice.token) as again:
                await again.join(world.webinar.id)
                assert again.of_type("joined") and again.closed is None
                assert state.sockets_per_user[world.alice.user_id] == 2
        await eventually(lambda: state.sockets_per_user == {})

    async def test_a_socket_that_changes_user_counts_for_the_new_one(
            self, server: RunningServer, world: World) -> None:
        state = server.app_state
        async with realtime(server, world.alice.token) as a1, \
                realtime(server, world.alice.token) as a2, \
                realtime(server, world.bob.token) as switching:
            for c in (a1, a2, switching):
                await c.wait_for(lambda c: bool(c.of_type("auth_ok")))
            await switching.send(type="auth", token=None)  # log-out: counts for nobody
            await switching.wait_for(lambda c: len(c.of_type("auth_ok")) == 2)
            assert state.sockets_per_user == {world.alice.user_id: 2}
            await switching.send(type="auth", token=world.alice.token)  # a third for alice
            assert await closed_with(switching) == (4429, "too many connections")
            assert state.sockets_per_user == {world.alice.user_id: 2}


# --- connects per user, the token in a frame -------------------------------------------------------

class TestConnectsPerUserByFrame:
    """RATE_LIMIT_WS_CONNECT_USER for sockets whose token comes in a frame (the browser page and
    the SDK): the handshake only knows the address, so the user's connect is taken when a frame
    first gives the socket its user (docs/operations.md, "Rate limits")."""

    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"rate_ws_connect_user": "3/3600"}

    async def test_the_connect_beyond_the_limit_is_closed_with_4429_and_refreshes_are_free(
            self, server: RunningServer, world: World, tokens: TokenService) -> None:
        alice, topic = world.alice.user_id, f"webinar:{world.webinar.id}:messages"

        def fresh() -> str:
            return tokens.issue_access(alice)[0]

        async def auth(client: Client, token: str | None) -> None:
            before = len(client.of_type("auth_ok"))
            await client.send(type="auth", token=token)
            await client.wait_for(lambda c: len(c.of_type("auth_ok")) > before)

        async with realtime(server, world.alice.token) as by_url, realtime(server) as first, \
                realtime(server) as second, realtime(server) as third, \
                realtime(server) as bob:
            await by_url.wait_for(lambda c: bool(c.of_type("auth_ok")))  # 1: the handshake's
            await auth(by_url, fresh())  # the same user again: nothing more
            await auth(first, fresh())  # 2
            for _ in range(3):
                await auth(first, fresh())  # token refreshes take nothing
            await auth(first, None)
            await auth(first, fresh())  # nor does the same user after a log-out
            await second.send(type="join", topic=topic, token=fresh(), ref="j")  # 3
            await second.wait_for(lambda c: bool(c.of_type("joined")))
            await auth(bob, world.bob.token)  # another user's bucket
            await third.send(type="auth", token=fresh())  # 4: beyond the limit
            assert await closed_with(third) == (4429, "too many connections")
            for c in (by_url, first, second, bob):
                assert c.closed is None and await answered(c, "open")
            assert server.app_state.sockets_per_user == {alice: 3, world.bob.user_id: 1}
        text = await scrape(server)
        assert metric_value(text, "webinar_chat_rate_limited_total", limit="ws_connect_user") == 1
        assert metric_value(text, "webinar_chat_realtime_closes_total", code="4429") == 1


# --- Origin ----------------------------------------------------------------------------------------

async def refused_status(server: RunningServer, origin: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.ws_url, origin=origin, compression=None):
            pass
    return info.value.response.status_code


async def test_a_page_of_another_origin_is_refused_at_the_handshake(
        server: RunningServer, world: World) -> None:
    for origin in ("http://evil.example", f"http://127.0.0.1:{server.port + 1}",
                   f"http://localhost:{server.port}", "null"):
        assert await refused_status(server, origin) == 403, origin
    assert not server.app_state.connections


async def test_this_servers_own_pages_and_clients_without_an_origin_connect(
        server: RunningServer, world: World) -> None:
    for origin in (f"http://127.0.0.1:{server.port}", f"HTTP://127.0.0.1:{server.port}", None):
        async with connect(server.ws_url + f"?token={world.bob.token}", origin=origin,
                           compression=None) as ws:
            client = Client(ws)
            await client.wait_for(lambda c: bool(c.of_type("auth_ok")))


class TestAllowedOrigins:
    @pytest.fixture
    def server_overrides(self) -> dict[str, Any]:
        return {"public_url": "https://chat.example.com",
                "realtime_allowed_origins": ("https://partner.example:8443",)}

    async def test_public_url_and_the_listed_origins_are_allowed_too(
            self, server: RunningServer, world: World) -> None:
        for origin in ("https://chat.example.com", "https://chat.example.com:443",
                       "https://partner.example:8443", f"http://127.0.0.1:{server.port}"):
            async with connect(server.ws_url, origin=origin, compression=None) as ws:
                client = Client(ws)
                await client.wait_for(lambda c: bool(c.of_type("hello")))
        for origin in ("http://chat.example.com", "https://partner.example",
                       "https://evil.example"):
            assert await refused_status(server, origin) == 403, origin


def test_the_origin_rules() -> None:
    own = origin_policy("", ())
    assert own.allows(None, "chat.example.com")  # no Origin: not a browser page
    assert own.allows("https://chat.example.com", "chat.example.com")  # Host without :443
    assert own.allows("https://Chat.Example.com", "chat.example.com:443")
    assert own.allows("http://localhost:8000", "localhost:8000")
    # host:port only: behind a TLS-terminating proxy the request's own scheme is not the page's
    assert own.allows("https://localhost:8000", "localhost:8000")
    assert own.allows("http://[::1]:8000", "[::1]:8000")
    assert not own.allows("http://chat.example.com", "chat.example.com:443")
    assert not own.allows("https://chat.example.com.evil.example", "chat.example.com")
    assert not own.allows("https://evil.example", "chat.example.com")
    assert not own.allows("https://chat.example.com", None)
    assert not own.allows("null", "chat.example.com")
    assert not own.allows("https://chat.example.com/path", "chat.example.com")
    assert origin_policy("", ("*",)).allows("https://anything.example", "chat.example.com")
    listed = origin_policy("https://chat.example.com", ("https://a.example",))
    assert listed.allows("https://chat.example.com", "10.0.0.5:8001")  # behind a proxy
    assert listed.allows("https://a.example:443", "10.0.0.5:8001")
    assert not listed.allows("https://b.example", "10.0.0.5:8001")
    with pytest.raises(ValueError, match="REALTIME_ALLOWED_ORIGINS"):
        origin_policy("", ("chat.example.com",))


async def test_an_origin_list_it_cannot_use_stops_the_start(database_url: str) -> None:
    from webinar_chat.server.app import create_app

    with pytest.raises(ValueError, match="REALTIME_ALLOWED_ORIGINS"):
        create_app(Settings(database_url=database_url,
                            realtime_allowed_origins=("https://a.example/path",)))


async def test_the_refusal_is_logged_not_an_error(server: RunningServer, world: World,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO)
    await refused_status(server, "https://evil.example")
    assert "realtime_origin_refused" in caplog.text and "evil.example" in caplog.text
