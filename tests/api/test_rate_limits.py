"""Rate limits against a real server (docs/operations.md, "Rate limits"), on SQLite and
PostgreSQL: failed log-ins per (account, IP), per account and per IP; sign-ups per IP; message
creates per user, with a higher budget for moderators and hosts; WebSocket handshakes per IP and
per user; the client IP behind a trusted proxy; the 429 shape; the shared budget of two processes
on one Redis; and a limiter whose Redis is down. Small limits come in through `server_overrides`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from webinar_chat.server.rate_limits import TrustedProxies, client_ip

from ..helpers import (
    PASSWORD,
    Person,
    RunningServer,
    World,
    auth,
    eventually,
    free_port,
    metric_value,
    new_id,
    scrape,
    send,
)
from ..helpers import test_settings as settings_for

PROXY = {"trusted_proxies": "127.0.0.1"}  # the tests' requests say who they are for


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def login(http: httpx.AsyncClient, email: str, password: str, ip: str = "203.0.113.1"
                ) -> httpx.Response:
    return await http.post("/api/auth/login", json={"email": email, "password": password},
                           headers=from_ip(ip))


def assert_rate_limited(r: httpx.Response, *, at_least: int = 1, at_most: int = 10**9) -> int:
    """The answer to every refusal; returns its Retry-After."""
    assert r.status_code == 429, r.text
    seconds = int(r.headers["retry-after"])
    assert at_least <= seconds <= at_most
    body = r.json()
    assert body == {"success": False, "error": body["error"], "code": "rate_limited",
                    "retry_after": seconds}
    assert isinstance(body["error"], str) and body["error"]
    return seconds


# --- who is the client ---------------------------------------------------------------------------

def scope(peer: str, *forwarded: str) -> dict[str, Any]:
    return {"client": (peer, 5000),
            "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


def test_the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    none = TrustedProxies("")
    nginx = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    assert client_ip(scope("198.51.100.9", "1.2.3.4"), none) == "198.51.100.9"
    assert client_ip(scope("198.51.100.9", "1.2.3.4"), nginx) == "198.51.100.9"  # not a proxy
    assert client_ip(scope("127.0.0.1", "198.51.100.9"), nginx) == "198.51.100.9"
    assert client_ip(scope("127.0.0.1"), nginx) == "127.0.0.1"  # no header: the peer


def test_a_forwarded_for_entry_written_by_the_client_is_not_believed() -> None:
    nginx = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    # nginx's $proxy_add_x_forwarded_for appends the address it saw to the client's own header.
    assert client_ip(scope("127.0.0.1", "6.6.6.6, 198.51.100.9"), nginx) == "198.51.100.9"
    assert client_ip(scope("127.0.0.1", "6.6.6.6", "198.51.100.9"), nginx) == "198.51.100.9"
    # Two proxies of ours (a load balancer at 10.0.0.5, then nginx): the hop before them.
    assert client_ip(scope("127.0.0.1", "6.6.6.6, 198.51.100.9, 10.0.0.5"), nginx) == \
        "198.51.100.9"
    assert client_ip(scope("127.0.0.1", "10.0.0.7"), nginx) == "10.0.0.7"  # only ours


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        TrustedProxies("127.0.0.1, nginx.internal")


@pytest.mark.parametrize("server_overrides", [{}])
async def test_without_trusted_proxies_forwarded_for_changes_nothing(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    """The default: no proxy is believed, whatever a request says (uvicorn's own belief in
    127.0.0.1 is off too): rotating X-Forwarded-For does not get a guesser new buckets."""
    for i in range(10):
        assert (await login(http, world.alice.email, "wrong", f"198.51.100.{i}")).status_code \
            == 401
    assert_rate_limited(await login(http, world.alice.email, "wrong", "198.51.100.99"))


# --- log-in --------------------------------------------------------------------------------------

@pytest.mark.parametrize("server_overrides", [PROXY])
async def test_the_11th_wrong_password_is_429_and_the_right_one_works_from_another_ip(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    for _ in range(10):
        r = await login(http, world.alice.email, "wrong password")
        assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
    # One failure comes back every 900 / 10 = 90 s.
    assert_rate_limited(await login(http, world.alice.email, "wrong password"),
                        at_least=30, at_most=90)
    # Locked for this address, the right password included (an answer would tell it is right).
    assert_rate_limited(await login(http, world.alice.email, PASSWORD))
    # Alice herself, elsewhere: not locked out by somebody guessing from another address.
    assert (await login(http, world.alice.email, PASSWORD, "198.51.100.7")).status_code == 200
    # Another account from the guesser's address: its own bucket.
    assert (await login(http, world.bob.email, PASSWORD)).status_code == 200
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_rate_limited_total", limit="login_account_ip") == 2


@pytest.mark.parametrize("server_overrides", [{**PROXY, "rate_login_account_ip": "3/900"}])
async def test_a_successful_log_in_consumes_nothing(http: httpx.AsyncClient, world: World) -> None:
    for _ in range(10):
        assert (await login(http, world.alice.email, PASSWORD)).status_code == 200
    for _ in range(3):
        assert (await login(http, world.alice.email, "wrong")).status_code == 401
    assert_rate_limited(await login(http, world.alice.email, "wrong"))


@pytest.mark.parametrize("server_overrides", [{**PROXY, "rate_login_account_ip": "2/4"}])
async def test_the_lock_out_ends_when_the_window_frees(http: httpx.AsyncClient,
                                                       world: World) -> None:
    # At once: both take their token before either password check (~0.3 s of argon2) ends.
    wrong = await asyncio.gather(*(login(http, world.alice.email, "wrong") for _ in range(2)))
    assert [r.status_code for r in wrong] == [401, 401]
    locked_at = time.monotonic()
    assert_rate_limited(await login(http, world.alice.email, PASSWORD), at_most=2)

    async def logged_in() -> bool:  # refusals take nothing: polling does not extend the lock-out
        return (await login(http, world.alice.email, PASSWORD)).status_code == 200

    await eventually(logged_in, timeout=10, interval=0.1)
    assert time.monotonic() - locked_at >= 0.5  # a failure comes back every 2 s


@pytest.mark.parametrize("server_overrides", [{**PROXY, "rate_login_account": "3/900"}])
async def test_guesses_from_many_addresses_meet_the_per_account_cap(
        http: httpx.AsyncClient, world: World) -> None:
    for i in range(3):
        assert (await login(http, world.alice.email, "wrong", f"198.51.100.{i}")).status_code \
            == 401
    assert_rate_limited(await login(http, world.alice.email, "wrong", "198.51.100.50"))
    assert (await login(http, world.bob.email, PASSWORD, "198.51.100.50")).status_code == 200


@pytest.mark.parametrize("server_overrides", [{**PROXY, "rate_login_ip": "3/900"}])
async def test_one_address_trying_many_accounts_meets_the_per_ip_limit(
        http: httpx.AsyncClient, world: World) -> None:
    for person in (world.alice, world.bob, world.host):
        assert (await login(http, person.email, "wrong", "198.51.100.1")).status_code == 401
    assert_rate_limited(await login(http, "nobody@example.test", "wrong", "198.51.100.1"))
    assert (await login(http, world.moderator.email, PASSWORD, "198.51.100.2")).status_code == 200


# --- sign-up -------------------------------------------------------------------------------------

async def signup(http: httpx.AsyncClient, ip: str) -> httpx.Response:
    return await http.post("/api/auth/signup", headers=from_ip(ip), json={
        "email": f"new-{uuid.uuid4().hex[:8]}@example.test", "password": "a long passphrase 42",
        "display_name": "New Person"})


@pytest.mark.parametrize("server_overrides", [{**PROXY, "rate_signup_ip": "2/3600"}])
async def test_sign_ups_are_limited_per_address(http: httpx.AsyncClient, world: World) -> None:
    assert (await signup(http, "198.51.100.1")).status_code == 200
    assert (await signup(http, "198.51.100.1")).status_code == 200
    assert_rate_limited(await signup(http, "198.51.100.1"), at_least=1700, at_most=1800)
    assert (await signup(http, "198.51.100.2")).status_code == 200


# --- messages ------------------------------------------------------------------------------------

async def stored(http: httpx.AsyncClient, world: World) -> list[dict[str, Any]]:
    r = await http.get(f"/api/webinars/{world.webinar.id}/messages?limit=500",
                       headers=auth(world.host.token))
    assert r.status_code == 200
    return list(r.json()["messages"])


@pytest.mark.parametrize("server_overrides", [{"rate_messages": "10/3600"}])
async def test_1000_rapid_creates_store_the_burst_and_refuse_the_rest(
        server: RunningServer, http: httpx.AsyncClient, world: World) -> None:
    semaphore = asyncio.Semaphore(50)

    async def one(i: int) -> httpx.Response:
        async with semaphore:
            return await send(http, world.alice, world.webinar.id, f"flood {i}", new_id())

    answers = await asyncio.gather(*(one(i) for i in range(1000)))
    assert sum(r.status_code == 200 for r in answers) == 10
    for r in answers:
        if r.status_code != 200:
            assert_rate_limited(r, at_least=300, at_most=360)  # a token every 360 s
    rows = await stored(http, world)
    assert len(rows) == 10 and {m["user_id"] for m in rows} == {world.alice.user_id}
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_rate_limited_total", limit="messages") == 990
    assert metric_value(text, "webinar_chat_message_creates_total", outcome="rejected",
                        reason="rate_limited") == 990
    assert metric_value(text, "webinar_chat_message_creates_total", outcome="ok") == 10
    # Another attendee has a budget of their own.
    assert (await send(http, world.bob, world.webinar.id, "me too", new_id())).status_code == 200


@pytest.mark.parametrize("server_overrides", [{"rate_messages": "3/3600",
                                               "rate_messages_staff": "6/3600"}])
async def test_moderators_and_hosts_have_a_higher_limit(http: httpx.AsyncClient,
                                                        world: World) -> None:
    async def burst(person: Person, n: int) -> list[int]:
        return [(await send(http, person, world.webinar.id, f"{person.display_name} {i}",
                            new_id())).status_code for i in range(n)]

    assert await burst(world.alice, 4) == [200] * 3 + [429]
    assert await burst(world.moderator, 7) == [200] * 6 + [429]
    assert await burst(world.host, 7) == [200] * 6 + [429]  # per user, not per role
    assert len(await stored(http, world)) == 15


@pytest.mark.parametrize("server_overrides", [{"rate_messages": "1/3600"}])
async def test_a_retry_of_a_stored_message_gets_its_409_while_limited(
        http: httpx.AsyncClient, world: World) -> None:
    cmid = new_id()
    first = await send(http, world.alice, world.webinar.id, "once", cmid)
    assert first.status_code == 200
    assert_rate_limited(await send(http, world.alice, world.webinar.id, "next", new_id()))
    again = await send(http, world.alice, world.webinar.id, "once", cmid)
    assert again.status_code == 409 and again.json()["message"] == first.json()["message"]


@pytest.mark.parametrize("server_overrides", [{"rate_messages": "2/0.4"}])
async def test_a_refused_create_is_stored_once_when_retried_after_retry_after(
        http: httpx.AsyncClient, world: World) -> None:
    assert [(await send(http, world.alice, world.webinar.id, f"m{i}", new_id())).status_code
            for i in range(2)] == [200, 200]
    cmid = new_id()
    refused = await send(http, world.alice, world.webinar.id, "third", cmid)
    assert_rate_limited(refused, at_most=1)
    assert len(await stored(http, world)) == 2  # a 429 stored nothing

    async def retried() -> bool:
        r = await send(http, world.alice, world.webinar.id, "third", cmid)
        return r.status_code == 200

    await eventually(retried, timeout=5)
    rows = await stored(http, world)
    assert [m["content"] for m in rows] == ["m0", "m1", "third"]
    assert (await send(http, world.alice, world.webinar.id, "third", cmid)).status_code == 409


@pytest.mark.parametrize("server_overrides", [{"rate_messages": "3/3600"}])
async def test_only_stored_messages_cost(http: httpx.AsyncClient, world: World) -> None:
    cmid = new_id()
    assert (await send(http, world.alice, world.webinar.id, "a", cmid)).status_code == 200
    assert (await send(http, world.alice, world.webinar.id, "a", cmid)).status_code == 409
    r = await http.patch(f"/api/webinars/{world.webinar.id}", json={"slow_mode_seconds": 60},
                         headers=auth(world.host.token))
    assert r.status_code == 200
    assert (await send(http, world.alice, world.webinar.id, "b", new_id())).status_code == 200
    # Slow mode refuses without storing: no token either.
    slow = await send(http, world.alice, world.webinar.id, "c", new_id())
    assert slow.status_code == 429 and slow.json()["code"] == "slow_mode"
    r = await http.patch(f"/api/webinars/{world.webinar.id}", json={"slow_mode_seconds": 0},
                         headers=auth(world.host.token))
    assert (await send(http, world.alice, world.webinar.id, "c", new_id())).status_code == 200
    assert_rate_limited(await send(http, world.alice, world.webinar.id, "d", new_id()))
    assert [m["content"] for m in await stored(http, world)] == ["a", "b", "c"]


# --- WebSocket handshakes ------------------------------------------------------------------------

async def handshake(server: RunningServer, *, ip: str | None = None, token: str | None = None
                    ) -> int | InvalidStatus:
    """101 for an accepted handshake, else the refusal."""
    url = server.ws_url + (f"?token={token}" if token else "")
    headers = from_ip(ip) if ip else None
    try:
        async with connect(url, additional_headers=headers, compression=None):
            return 101
    except InvalidStatus as refused:
        return refused


@pytest.mark.parametrize("server_overrides", [{**PROXY, "rate_ws_connect_ip": "2/3600"}])
async def test_websocket_handshakes_are_limited_per_address_before_accept(
        server: RunningServer, world: World) -> None:
    assert await handshake(server, ip="198.51.100.1") == 101
    assert await handshake(server, ip="198.51.100.1") == 101
    refused = await handshake(server, ip="198.51.100.1")
    assert isinstance(refused, InvalidStatus)
    response = refused.response
    assert response.status_code == 429
    assert 1700 <= int(response.headers["Retry-After"]) <= 1800
    assert orjson.loads(response.body)["code"] == "rate_limited"
    assert await handshake(server, ip="198.51.100.2") == 101
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_rate_limited_total", limit="ws_connect_ip") == 1


@pytest.mark.parametrize("server_overrides", [{"rate_ws_connect_user": "1/3600"}])
async def test_websocket_handshakes_with_a_token_in_the_url_are_limited_per_user(
        server: RunningServer, world: World) -> None:
    assert await handshake(server, token=world.alice.token) == 101
    refused = await handshake(server, token=world.alice.token)
    assert isinstance(refused, InvalidStatus) and refused.response.status_code == 429
    assert await handshake(server, token=world.bob.token) == 101
    # the token in the first frame: counted when the frame comes (tests/realtime/test_limits.py)
    assert await handshake(server) == 101


# --- the document --------------------------------------------------------------------------------

async def test_the_openapi_document_lists_429_for_the_limited_routes(
        http: httpx.AsyncClient) -> None:
    paths = (await http.get("/api/openapi.json")).json()["paths"]
    for path in ("/api/auth/login", "/api/auth/signup", "/api/messages/create"):
        response = paths[path]["post"]["responses"]["429"]
        assert "Retry-After" in response["headers"]


# --- several processes ---------------------------------------------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"  # the machine's Redis: a channel (prefix) of our own


async def test_two_processes_on_one_redis_share_a_users_budget(
        database_url: str, world: World) -> None:
    settings = settings_for(database_url, bus_url=REDIS_URL,
                             bus_channel=f"wc-test-{uuid.uuid4().hex[:8]}",
                             rate_messages="4/3600")
    one, two = RunningServer(settings), RunningServer(settings)
    await one.start()
    await two.start()
    try:
        async with httpx.AsyncClient(base_url=one.base_url) as a, \
                httpx.AsyncClient(base_url=two.base_url) as b:
            codes = [(await send(http, world.alice, world.webinar.id, f"m{i}", new_id())
                      ).status_code for i, http in enumerate((a, b, a, b, a, b))]
            assert codes == [200, 200, 200, 200, 429, 429]
            assert (await send(b, world.bob, world.webinar.id, "bob", new_id())).status_code \
                == 200
    finally:
        await one.stop()
        await two.stop()


async def test_a_limiter_whose_redis_is_down_lets_messages_through_and_counts_it(
        database_url: str, world: World) -> None:
    settings = settings_for(database_url, bus_url=f"redis://127.0.0.1:{free_port()}/0",
                             bus_channel=f"wc-test-{uuid.uuid4().hex[:8]}",
                             rate_messages="2/3600", trusted_proxies="127.0.0.1",
                             rate_login_account_ip="2/3600")
    server = RunningServer(settings)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for i in range(4):  # fails open: never lose a message because the limiter broke
                assert (await send(http, world.alice, world.webinar.id, f"m{i}", new_id())
                        ).status_code == 200
            # Log-ins keep their limit, per process.
            assert [(await login(http, world.alice.email, "wrong")).status_code
                    for _ in range(3)] == [401, 401, 429]
            text = await scrape(server)
            assert metric_value(text, "webinar_chat_rate_limiter_errors_total") >= 4 + 3
    finally:
        await server.stop()
