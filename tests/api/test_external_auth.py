"""Tokens from the host platform against a real server (docs/external-auth.md): an HS256 secret
and a JWKS file (RS256, ES256), provisioning on first use, registrations from the admin API or
from a claim, every route, the long-poll and its fast path, /realtime (URL, `auth` frame, a
join's `token`), the handshake's per-user limit, key rotation from a JWKS served over HTTP, and
every refusal with its documented code."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from ..external_tokens import (
    AUDIENCE,
    ISSUER,
    SECRET,
    JwksServer,
    claims,
    ec_key,
    hs256,
    hs256_with_public_key,
    jwks,
    rsa_key,
    signed,
    unsigned,
)
from ..helpers import RunningServer, World, auth, eventually, new_id
from ..helpers import test_settings as settings_for
from ..realtime.test_realtime import Client, realtime

CLAIMS = {"external_jwt_secret": SECRET, "external_jwt_issuer": ISSUER,
          "external_jwt_audience": AUDIENCE,
          "external_jwt_webinars_claim": "app_metadata.webinars",
          "external_jwt_role_claim": "app_metadata.role",
          "external_jwt_name_claim": "user_metadata.full_name,name"}


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks((rsa_key("a"), "rsa-a"), (ec_key("a"), "ec-a"))))
    return path


@pytest.fixture
def server_overrides(jwks_file: Path) -> dict[str, Any]:
    return {**CLAIMS, "external_jwt_jwks_file": str(jwks_file)}


async def me(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/api/me", headers=auth(token))


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["success"] is False and response.headers["www-authenticate"] == "Bearer"
    return str(body["code"])


def errors(client: Client) -> list[str]:
    return [f["code"] for f in client.of_type("error")]


# --- provisioning and access (SQLite and PostgreSQL) ---------------------------------------------

async def test_hs256_token_provisions_a_user_whom_an_admin_registers(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    token = hs256(claims("platform-user-1", email="carol@platform.test",
                         user_metadata={"full_name": "Carol Platform"}))
    r = await me(http, token)
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert (user["display_name"], user["email"], user["is_admin"]) == (
        "Carol Platform", "carol@platform.test", False)
    messages = f"/api/webinars/{world.webinar.id}/messages"
    assert (await http.get(messages, headers=auth(token))).status_code == 403  # not registered
    registered = await http.post("/api/admin/registrations", headers=auth(world.admin.token),
                                 json={"webinar_id": world.webinar.id, "user_id": user["id"],
                                       "role": "attendee"})
    assert registered.status_code == 200, registered.text
    assert (await http.get(messages, headers=auth(token))).status_code == 200
    sent = await http.post("/api/messages/create", headers=auth(token), json={
        "webinarId": world.webinar.id, "content": "hello from the platform",
        "clientMsgId": new_id()})
    assert sent.status_code == 200, sent.text
    assert sent.json()["message"]["user"]["display_name"] == "Carol Platform"
    # A later token of the same subject: the same user, with the platform's new name.
    renamed = hs256(claims("platform-user-1", name="Carol P."))
    again = (await me(http, renamed)).json()["user"]
    assert (again["id"], again["display_name"]) == (user["id"], "Carol P.")
    # Log-in with a password never works for such a user.
    login = await http.post("/api/auth/login", json={"email": "carol@platform.test",
                                                     "password": "not-a-real-password"})
    assert login.status_code == 401


async def test_a_staff_name_is_not_taken_from_a_token(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    # The rule of sign-ups (server/text_rules.py): a host's or moderator's name is theirs.
    impostor = (await me(http, hs256(claims("impostor-123456789", name="  HOST ")))).json()
    assert impostor["user"]["display_name"] == "User impostor"
    honest = (await me(http, hs256(claims("honest", name="Honest")))).json()["user"]
    renamed = (await me(http, hs256(claims("honest", name="Moderator")))).json()["user"]
    assert (renamed["id"], renamed["display_name"]) == (honest["id"], "Honest")
    recased = (await me(http, hs256(claims("honest", name="HONEST")))).json()["user"]
    assert recased["display_name"] == "HONEST"  # their own name, in another case


async def test_a_webinars_claim_registers_with_the_claimed_role(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    token = hs256(claims("platform-mod", name="Mod From Platform",
                         app_metadata={"webinars": [world.webinar.id], "role": "moderator"}))
    r = await http.get(f"/api/webinars/{world.webinar.id}", headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.json()["webinar"]["role"] == "moderator"
    # Not the other webinar, which the claim does not list.
    other = await http.get(f"/api/webinars/{world.other_webinar.id}", headers=auth(token))
    assert other.status_code == 403


async def test_jwks_file_rs256_and_es256_tokens(server: RunningServer, world: World,
                                                http: httpx.AsyncClient) -> None:
    for key, kid in ((rsa_key("a"), "rsa-a"), (ec_key("a"), "ec-a")):
        token = signed(claims(f"jwks-{kid}", name=f"Signed {kid}",
                              app_metadata={"webinars": [world.webinar.id]}), key, kid)
        r = await me(http, token)
        assert r.status_code == 200, r.text
        assert r.json()["user"]["display_name"] == f"Signed {kid}"
        listed = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                                headers=auth(token))
        assert listed.status_code == 200


async def test_two_first_requests_at_once_make_one_user(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    tokens = [hs256(claims("at-once", name="Twice")) for _ in range(4)]
    answers = await asyncio.gather(*(me(http, t) for t in tokens))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["user"]["id"] for r in answers}) == 1
    store = server.app_state.store
    rows = await store.db.fetch("SELECT count(*) AS n FROM external_identities")
    assert rows[0]["n"] == 1


async def test_long_poll_with_an_external_token_then_its_fast_path(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    token = hs256(claims("poller", name="Poller", app_metadata={"webinars": [world.webinar.id]}))
    changes = f"/api/webinars/{world.webinar.id}/changes"
    poll = asyncio.create_task(http.get(changes, params={"after_seq": 0, "wait": 10},
                                        headers=auth(token)))
    state = server.app_state
    await eventually(lambda: state.tokens.cached(token) is not None)
    await asyncio.sleep(0.1)
    sent = await http.post("/api/messages/create", headers=auth(world.alice.token),
                           json={"webinarId": world.webinar.id, "content": "to the poller",
                                 "clientMsgId": new_id()})
    assert sent.status_code == 200
    first = await poll
    assert first.status_code == 200, first.text
    assert [c["new"]["content"] for c in first.json()["changes"]] == ["to the poller"]
    # Known good now: the next polls may be answered without ASGI.
    before = state.fast_polls
    for _ in range(3):
        r = await http.get(changes, params={"after_seq": 0, "wait": 1}, headers=auth(token))
        assert r.status_code == 200 and r.json()["last_seq"] == 1
    assert state.fast_polls > before


# --- refusals --------------------------------------------------------------------------------------

def refused_tokens() -> dict[str, tuple[str, str]]:
    """name → (token, code)."""
    past = int(time.time()) - 60
    return {
        "expired HS256": (hs256(claims(exp=past)), "token_expired"),
        "expired RS256": (signed(claims(exp=past), rsa_key("a"), "rsa-a"), "token_expired"),
        "wrong secret": (hs256(claims(), "another-secret-" + "z" * 30), "invalid_token"),
        "wrong RSA key": (signed(claims(), rsa_key("b"), "rsa-a"), "invalid_token"),
        "wrong issuer": (hs256(claims(iss="https://evil.test")), "invalid_token"),
        "wrong audience": (hs256(claims(aud="anon")), "invalid_token"),
        "alg none": (unsigned(claims()), "invalid_token"),
        "alg not configured": (signed(claims(), rsa_key("a"), "rsa-a", alg="RS512"),
                               "invalid_token"),
        "HS256 with the public key": (hs256_with_public_key(claims(), rsa_key("a"), "rsa-a"),
                                      "invalid_token"),
        "no subject": (hs256(claims(sub=None) | {"sub": ""}), "invalid_token"),
        "unknown kid": (signed(claims(), rsa_key("c"), "rsa-c"), "invalid_token"),
    }


def no_sub() -> str:
    payload = claims()
    del payload["sub"]
    return hs256(payload)


async def test_every_refusal_on_the_api(server: RunningServer, world: World,
                                        http: httpx.AsyncClient) -> None:
    cases = refused_tokens()
    cases["missing subject"] = (no_sub(), "invalid_token")
    for name, (token, code) in cases.items():
        for path in ("/api/me", f"/api/webinars/{world.webinar.id}/messages"):
            assert refusal(await http.get(path, headers=auth(token))) == code, (name, path)
        r = await http.get(f"/api/webinars/{world.webinar.id}/changes",
                           params={"after_seq": 0, "wait": 1}, headers=auth(token))
        assert refusal(r) == code, (name, "long-poll")
    rows = await server.app_state.store.db.fetch("SELECT count(*) AS n FROM external_identities")
    assert rows[0]["n"] == 0  # nobody was provisioned


async def test_every_refusal_on_realtime(server: RunningServer, world: World) -> None:
    cases = refused_tokens()
    cases["missing subject"] = (no_sub(), "invalid_token")
    topic = f"webinar:{world.webinar.id}:messages"
    for name, (token, code) in cases.items():
        async with realtime(server, token) as url_client:  # in the URL
            await url_client.wait_for(lambda c: bool(c.of_type("error")))
            assert errors(url_client) == [code], name
        async with realtime(server) as client:
            await client.wait_for(lambda c: bool(c.of_type("hello")))
            await client.send(type="auth", token=token)  # in an `auth` frame
            await client.wait_for(lambda c: bool(c.of_type("error")))
            await client.send(type="join", topic=topic, token=token, ref="j")  # in a join
            await client.wait_for(lambda c: len(c.of_type("error")) == 2)
            assert errors(client) == [code, code], name
            assert not client.of_type("auth_ok") and not client.of_type("joined")


# --- realtime with valid tokens --------------------------------------------------------------------

async def test_realtime_url_auth_frame_and_join_token_provision_on_first_use(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    webinars = {"webinars": [world.webinar.id]}
    topic = f"webinar:{world.webinar.id}:messages"
    in_url = hs256(claims("rt-url", name="Url", app_metadata=webinars))
    in_auth = signed(claims("rt-auth", name="Auth", app_metadata=webinars), ec_key("a"), "ec-a")
    in_join = signed(claims("rt-join", name="Join", app_metadata=webinars), rsa_key("a"), "rsa-a")
    async with realtime(server, in_url) as a, realtime(server) as b, realtime(server) as c:
        await a.wait_for(lambda x: bool(x.of_type("auth_ok")))
        await b.wait_for(lambda x: bool(x.of_type("hello")))
        await b.send(type="auth", token=in_auth)
        await b.wait_for(lambda x: bool(x.of_type("auth_ok")))
        await c.wait_for(lambda x: bool(x.of_type("hello")))
        for client in (a, b):
            await client.join(world.webinar.id, last_seq=0)
        await c.send(type="join", topic=topic, token=in_join, last_seq=0, ref="j")
        for client in (a, b, c):
            await client.wait_for(lambda x: bool(x.of_type("joined")))
            assert not client.of_type("error")
        sent = await http.post("/api/messages/create", headers=auth(world.alice.token), json={
            "webinarId": world.webinar.id, "content": "live to all", "clientMsgId": new_id()})
        assert sent.status_code == 200
        for client in (a, b, c):
            await client.wait_for(lambda x: len(x.events()) == 1)
    ids = {(await me(http, t)).json()["user"]["display_name"] for t in (in_url, in_auth, in_join)}
    assert ids == {"Url", "Auth", "Join"}


async def test_the_handshake_counts_an_external_url_token_for_its_user(
        database_url: str, world: World, jwks_file: Path) -> None:
    settings = settings_for(database_url, **CLAIMS, external_jwt_jwks_file=str(jwks_file),
                             rate_ws_connect_user="1/600")
    server = RunningServer(settings)
    await server.start()
    try:
        first = hs256(claims("counted", name="Counted"))
        second = hs256(claims("counted", name="Counted"))  # another token, the same user
        async with realtime(server, first) as client:
            await client.wait_for(lambda x: bool(x.of_type("auth_ok")))
        with pytest.raises(InvalidStatus) as info:
            async with realtime(server, second):
                pass
        assert info.value.response.status_code == 429
    finally:
        await server.stop()


# --- key rotation from a JWKS URL ------------------------------------------------------------------

async def test_key_rotation_from_a_jwks_url(database_url: str, world: World) -> None:
    async with JwksServer(jwks((rsa_key("a"), "rot-a"))) as issuer:
        settings = settings_for(database_url, external_jwt_jwks_url=issuer.url,
                                 external_jwt_issuer=ISSUER, external_jwt_audience=AUDIENCE,
                                 external_jwt_jwks_min_refetch_s=30)
        server = RunningServer(settings)
        await server.start()
        try:
            assert issuer.fetches == 1  # read at start
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                used_a = signed(claims("rotating", name="Rot"), rsa_key("a"), "rot-a")
                assert (await me(http, used_a)).status_code == 200
                # The issuer rotates: key B with a new kid, key A withdrawn.
                issuer.document = jwks((ec_key("b"), "rot-b"))
                token_b = signed(claims("rotating", name="Rot"), ec_key("b"), "rot-b")
                r = await me(http, token_b)
                assert r.status_code == 200, r.text
                assert issuer.fetches == 2  # one refetch for the unknown kid
                fresh_a = signed(claims("rotating"), rsa_key("a"), "rot-a")
                for token in (used_a, fresh_a):  # a token seen before is not trusted either
                    assert refusal(await me(http, token)) == "invalid_token"
                # Made-up kids cannot make us hammer the issuer: no refetch within 30 s.
                for n in range(5):
                    made_up = signed(claims(), rsa_key("a"), f"made-up-{n}")
                    assert refusal(await me(http, made_up)) == "invalid_token"
                assert issuer.fetches == 2
                assert (await me(http, token_b)).status_code == 200
        finally:
            await server.stop()


async def test_the_supabase_endpoint_takes_host_platform_tokens(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    """A Supabase-style page with the platform's own token (docs/supabase.md): in the join's
    access_token, and as the connection's apikey; the user is provisioned on first use."""
    from ..realtime.phoenix_client import phoenix, seed_binding

    wid = world.webinar.id
    topic = f"realtime:webinar:{wid}:messages"
    in_join = hs256(claims("sb-join", name="Joined Viewer", app_metadata={"webinars": [wid]}))
    in_key = hs256(claims("sb-key", name="Keyed Viewer", app_metadata={"webinars": [wid]}))
    async with phoenix(server) as first, phoenix(server, apikey=in_key) as second:
        _ref, reply = await first.join(topic, [seed_binding(wid)], in_join)
        assert reply["status"] == "ok", reply
        _ref, reply = await second.join(topic, [seed_binding(wid)], None)
        assert reply["status"] == "ok", reply
        r = await http.post("/api/messages/create",
                            json={"webinarId": wid, "content": "from the host", "clientMsgId": new_id()},
                            headers=auth(world.host.token))
        assert r.status_code == 200, r.text
        for client in (first, second):
            await client.wait_for(lambda c=client: c.changes())
    r = await me(http, in_join)
    assert r.status_code == 200 and r.json()["user"]["display_name"] == "Joined Viewer"
