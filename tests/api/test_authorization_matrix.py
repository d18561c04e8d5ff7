"""Who may do what: every route and realtime action × {anonymous, expired token, attendee of
another webinar of the same agency, attendee of another agency, attendee, moderator, host,
platform admin}, with the status each must get, on both databases. One table, read top to
bottom; a mismatch names the route, the caller and both statuses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from webinar_chat.store import Store

from ..helpers import JWT_SECRET, RunningServer, World, auth, new_id, send
from ..realtime.test_realtime import Client

ROLES = ("anonymous", "expired", "other_webinar", "other_agency", "attendee", "moderator",
         "host", "admin")


@pytest.fixture
async def callers(store: Store, world: World) -> dict[str, str | None]:
    """role → bearer token (None: no Authorization header)."""
    from webinar_chat.auth.tokens import TokenService

    tokens = TokenService(JWT_SECRET, 900)
    # an attendee of another webinar of the same client (same agency, same tenant)
    sibling = await store.create_webinar(world.webinar.client_id, "Sibling webinar")
    user = await store.create_user(f"sib-{new_id()[:8]}@example.test", "x", "Sib")
    await store.register(sibling.id, user.id, "attendee")
    expired, _ = tokens.issue_access(world.alice.user_id, ttl_s=-60)
    return {"anonymous": None, "expired": expired,
            "other_webinar": tokens.issue_access(user.id)[0],
            "other_agency": world.outsider.token, "attendee": world.alice.token,
            "moderator": world.moderator.token, "host": world.host.token,
            "admin": world.admin.token}


def expect(anonymous: int, expired: int, other_webinar: int, other_agency: int, attendee: int,
           moderator: int, host: int, admin: int) -> dict[str, int]:
    return dict(zip(ROLES, (anonymous, expired, other_webinar, other_agency, attendee,
                            moderator, host, admin), strict=True))


# The usual shapes: what a webinar's readers get, what its staff-only actions give.
READERS = expect(401, 401, 403, 403, 200, 200, 200, 403)
STAFF = expect(401, 401, 403, 403, 403, 200, 200, 403)
HOST_ONLY = expect(401, 401, 403, 403, 403, 403, 200, 403)
ADMIN_ONLY = expect(401, 401, 403, 403, 403, 403, 403, 200)
# the transcript export: the webinar's staff, and platform admins registered for nothing
STAFF_OR_ADMIN = expect(401, 401, 403, 403, 403, 200, 200, 200)
ANY_USER = expect(401, 401, 200, 200, 200, 200, 200, 200)
PUBLIC = expect(200, 200, 200, 200, 200, 200, 200, 200)
# routes by question id: a webinar the caller may not read is a 404 (no existence oracle)
QUESTION_READERS = expect(401, 401, 404, 404, 200, 200, 200, 404)
QUESTION_STAFF = expect(401, 401, 404, 404, 403, 200, 200, 404)

Request = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[httpx.Response]]


async def test_every_route_answers_every_caller_as_the_table_says(
        server: RunningServer, http: httpx.AsyncClient, world: World,
        callers: dict[str, str | None]) -> None:
    wid = world.webinar.id

    async def bobs_message() -> int:
        r = await send(http, world.bob, wid, f"from bob {new_id()[:6]}")
        assert r.status_code == 200, r.text
        return int(r.json()["message"]["id"])

    async def delete_one(c: httpx.AsyncClient, h: dict[str, str]) -> httpx.Response:
        return await c.delete(f"/api/messages/{await bobs_message()}", headers=h)

    async def hide_one(c: httpx.AsyncClient, h: dict[str, str]) -> httpx.Response:
        return await c.post(f"/api/messages/{await bobs_message()}/hide", json={"hidden": True},
                            headers=h)

    async def time_out_bob(c: httpx.AsyncClient, h: dict[str, str]) -> httpx.Response:
        r = await c.post(f"/api/webinars/{wid}/bans",
                         json={"user_id": world.bob.user_id, "duration_s": 60}, headers=h)
        if r.status_code == 200:  # bob posts for the other rows: let him back in
            undo = await c.delete(f"/api/webinars/{wid}/bans/{world.bob.user_id}",
                                  headers=auth(world.host.token))
            assert undo.status_code == 200, undo.text
        return r

    async def bobs_question() -> int:
        r = await c_post(f"/api/webinars/{wid}/questions", {"content": f"bob {new_id()[:6]}?"},
                         world.bob.token)
        return int(r.json()["question"]["id"])

    async def c_post(url: str, body: dict[str, Any], token: str) -> httpx.Response:
        r = await http.post(url, json=body, headers=auth(token))
        assert r.status_code == 200, r.text
        return r

    async def vote_one(c: httpx.AsyncClient, h: dict[str, str]) -> httpx.Response:
        return await c.post(f"/api/questions/{await bobs_question()}/vote", json={"voted": True},
                            headers=h)

    async def status_one(c: httpx.AsyncClient, h: dict[str, str]) -> httpx.Response:
        return await c.post(f"/api/questions/{await bobs_question()}/status",
                            json={"status": "answered"}, headers=h)

    routes: list[tuple[str, Request, dict[str, int]]] = [
        ("GET /api/me", lambda c, h: c.get("/api/me", headers=h), ANY_USER),
        ("GET /api/webinars/{id}", lambda c, h: c.get(f"/api/webinars/{wid}", headers=h),
         READERS),
        ("GET …/messages", lambda c, h: c.get(f"/api/webinars/{wid}/messages", headers=h),
         READERS),
        ("GET …/changes", lambda c, h: c.get(f"/api/webinars/{wid}/changes?after_seq=0",
                                            headers=h), READERS),
        ("GET …/presence", lambda c, h: c.get(f"/api/webinars/{wid}/presence", headers=h),
         READERS),
        ("POST /api/messages/create", lambda c, h: c.post(
            "/api/messages/create", json={"webinarId": wid, "content": "hi",
                                          "clientMsgId": new_id()}, headers=h), READERS),
        ("PATCH /api/webinars/{id}", lambda c, h: c.patch(
            f"/api/webinars/{wid}", json={"slow_mode_seconds": 0}, headers=h), HOST_ONLY),
        ("POST /api/messages/{id}/hide", hide_one, STAFF),
        ("GET …/export", lambda c, h: c.get(f"/api/webinars/{wid}/export", headers=h),
         STAFF_OR_ADMIN),
        ("GET …/export?format=csv", lambda c, h: c.get(f"/api/webinars/{wid}/export?format=csv",
                                                      headers=h), STAFF_OR_ADMIN),
        # an attendee may delete only their own messages: alice, not bob's
        ("DELETE /api/messages/{id}", delete_one, STAFF),
        ("GET /api/profiles/{id}", lambda c, h: c.get(f"/api/profiles/{world.bob.user_id}",
                                                      headers=h), ANY_USER),
        ("POST /api/metrics/events", lambda c, h: c.post(
            "/api/metrics/events", json={"sessionId": new_id(), "events": [
                {"type": "send_success", "metadata": {}}]}, headers=h), ANY_USER),
        ("POST /api/admin/agencies", lambda c, h: c.post(
            "/api/admin/agencies", json={"name": "New agency"}, headers=h), ADMIN_ONLY),
        ("POST /api/admin/webinars", lambda c, h: c.post(
            "/api/admin/webinars", json={"client_id": world.webinar.client_id,
                                         "title": "Another"}, headers=h), ADMIN_ONLY),
        ("POST /api/admin/registrations", lambda c, h: c.post(
            "/api/admin/registrations", json={"webinar_id": world.other_webinar.id,
                                              "user_id": world.bob.user_id}, headers=h),
         ADMIN_ONLY),
        ("POST /api/admin/bans", lambda c, h: c.post(
            "/api/admin/bans", json={"webinar_id": world.other_webinar.id,
                                     "user_id": world.outsider.user_id, "banned": False},
            headers=h), ADMIN_ONLY),
        ("POST …/bans", time_out_bob, STAFF_OR_ADMIN),
        ("GET …/bans", lambda c, h: c.get(f"/api/webinars/{wid}/bans", headers=h),
         STAFF_OR_ADMIN),
        ("DELETE …/bans/{user_id}", lambda c, h: c.delete(
            f"/api/webinars/{wid}/bans/{world.bob.user_id}", headers=h), STAFF_OR_ADMIN),
        ("POST …/questions", lambda c, h: c.post(
            f"/api/webinars/{wid}/questions", json={"content": "A question?",
                                                    "clientMsgId": new_id()}, headers=h),
         READERS),
        ("GET …/questions", lambda c, h: c.get(f"/api/webinars/{wid}/questions", headers=h),
         READERS),
        # a question of a webinar the caller may not read is not found (no existence oracle)
        ("POST /api/questions/{id}/vote", vote_one, QUESTION_READERS),
        ("POST /api/questions/{id}/status", status_one, QUESTION_STAFF),
        ("GET /healthz", lambda c, h: c.get("/healthz", headers=h), PUBLIC),
        ("GET /readyz", lambda c, h: c.get("/readyz", headers=h), PUBLIC),
        ("GET /api/openapi.json", lambda c, h: c.get("/api/openapi.json", headers=h), PUBLIC),
    ]
    mismatches = []
    for name, request, expected in routes:
        for role in ROLES:
            token = callers[role]
            response = await request(http, auth(token) if token else {})
            if response.status_code != expected[role]:
                mismatches.append(f"{name} as {role}: {response.status_code} (expected "
                                  f"{expected[role]}) {response.text[:120]}")
            elif response.status_code >= 400:
                body = response.json()
                assert body["success"] is False and body["code"], (name, role, body)
    assert not mismatches, "\n".join(mismatches)


async def test_the_author_may_delete_their_own_message_and_nobody_elses(
        http: httpx.AsyncClient, world: World) -> None:
    own = (await send(http, world.alice, world.webinar.id, "mine")).json()["message"]["id"]
    other = (await send(http, world.bob, world.webinar.id, "his")).json()["message"]["id"]
    assert (await http.delete(f"/api/messages/{other}", headers=auth(world.alice.token))
            ).status_code == 403
    assert (await http.delete(f"/api/messages/{own}", headers=auth(world.alice.token))
            ).status_code == 200


# What a socket gets when it joins the webinar: joined, or an error frame with this code.
JOIN = {"other_webinar": "forbidden", "other_agency": "forbidden", "attendee": "joined",
        "moderator": "joined", "host": "joined", "admin": "forbidden"}


async def test_every_caller_joins_the_webinar_on_the_socket_as_the_table_says(
        server: RunningServer, world: World, callers: dict[str, str | None]) -> None:
    topic = f"webinar:{world.webinar.id}:messages"
    outcomes: dict[str, Any] = {}
    for role in ROLES:
        token = callers[role]
        url = server.ws_url + (f"?token={token}" if token else "")
        async with connect(url, compression=None) as ws:
            client = Client(ws)
            try:
                await client.send(type="join", topic=topic, last_seq=0, ref="m")
                await client.wait_for(lambda c: c.closed is not None or any(
                    f.get("ref") == "m" or f["type"] in ("error",) for f in c.frames))
            except AssertionError:
                pass  # closed before any answer: the close code says why
            finally:
                client._reader.cancel()
            answers = [f for f in client.frames if f.get("ref") == "m" or f["type"] == "error"]
            if answers:
                first = answers[0]
                outcomes[role] = "joined" if first["type"] == "joined" else first.get("code")
            else:
                outcomes[role] = f"closed {client.closed.rcvd.code if client.closed and client.closed.rcvd else None}"  # noqa: E501
    for role, outcome in JOIN.items():
        assert outcomes[role] == outcome, (role, outcomes)
    # no token, or an expired one: never joined (refused with an auth error or a 4001 close)
    for role in ("anonymous", "expired"):
        assert outcomes[role] != "joined", (role, outcomes)
        assert outcomes[role] in ("unauthorized", "invalid_token", "token_expired",
                                  "closed 4001"), (role, json.dumps(outcomes))
