"""Sign-up, log-in, refresh rotation with re-use detection, log-out; error shapes; OpenAPI."""

from __future__ import annotations

import httpx
import pytest

from ..helpers import PASSWORD, World, auth, new_id


async def test_signup_login_and_me(http: httpx.AsyncClient, world: World) -> None:
    r = await http.post("/api/auth/signup", json={"email": "New@Example.test",
                                                  "password": "long enough pw",
                                                  "display_name": "Newbie"})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] and body["access_token"] and body["refresh_token"]
    assert body["user"]["email"] == "new@example.test" and body["expires_in"] > 0
    again = await http.post("/api/auth/signup", json={"email": "new@example.test",
                                                      "password": "long enough pw",
                                                      "display_name": "Dup"})
    assert again.status_code == 409
    bad = await http.post("/api/auth/signup", json={"email": "x@y", "password": "short",
                                                    "display_name": "S"})
    assert bad.status_code == 400
    login = await http.post("/api/auth/login", json={"email": world.alice.email,
                                                     "password": PASSWORD})
    assert login.status_code == 200
    me = await http.get("/api/me", headers=auth(login.json()["access_token"]))
    assert me.json()["user"]["id"] == world.alice.user_id
    assert [w["id"] for w in me.json()["webinars"]] == [world.webinar.id]
    wrong = await http.post("/api/auth/login", json={"email": world.alice.email,
                                                     "password": "wrong password"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    unknown = await http.post("/api/auth/login", json={"email": "nobody@x.test",
                                                       "password": "whatever1"})
    assert unknown.status_code == 401


async def test_refresh_rotates_and_reuse_revokes_the_family(http: httpx.AsyncClient,
                                                            world: World) -> None:
    login = (await http.post("/api/auth/login", json={"email": world.bob.email,
                                                      "password": PASSWORD})).json()
    first = login["refresh_token"]
    r = await http.post("/api/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first and r.json()["access_token"]
    # the old token comes back (stolen copy): 401 and the whole family is revoked
    reuse = await http.post("/api/auth/refresh", json={"refresh_token": first})
    assert reuse.status_code == 401 and reuse.json()["code"] == "token_reused"
    revoked = await http.post("/api/auth/refresh", json={"refresh_token": second})
    assert revoked.status_code == 401
    bogus = await http.post("/api/auth/refresh", json={"refresh_token": "nope"})
    assert bogus.status_code == 401


async def test_logout_revokes_the_refresh_token(http: httpx.AsyncClient, world: World) -> None:
    login = (await http.post("/api/auth/login", json={"email": world.bob.email,
                                                      "password": PASSWORD})).json()
    r = await http.post("/api/auth/logout", json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await http.post("/api/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 401


async def test_unknown_route_wrong_method_and_bad_body_are_json(http: httpx.AsyncClient,
                                                                world: World) -> None:
    r = await http.get("/api/nope")
    assert r.status_code == 404 and r.json() == {"success": False, "error": "Not found",
                                                 "code": "not_found"}
    r = await http.put("/api/messages/create")
    assert r.status_code == 405 and r.json()["success"] is False
    r = await http.post("/api/auth/login", content=b"\xff\xfe", headers={
        "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["success"] is False


async def test_unexpected_exception_is_a_logged_json_500(http: httpx.AsyncClient, world: World,
                                                         server: object,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    state = server.app_state  # type: ignore[attr-defined]
    await state.store.db.close()  # the database goes away under the running server
    r = await http.get(f"/api/webinars/{world.webinar.id}/messages",
                       headers={**auth(world.alice.token), "X-Request-ID": "req-db-gone-1"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "req-db-gone-1"
    assert r.json() == {"success": False, "error": "Internal server error", "code": "internal",
                        "request_id": "req-db-gone-1"}
    # One log line for it (the production pipeline: text or JSON), carrying the request id.
    lines = [line for line in capsys.readouterr().err.splitlines() if "unhandled_error" in line]
    assert len(lines) == 1 and "req-db-gone-1" in lines[0] and "error" in lines[0]
    ready = await http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")


async def test_health_and_openapi(http: httpx.AsyncClient, world: World) -> None:
    assert (await http.get("/healthz")).json()["success"] is True
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "bus": "ok"}
    doc = (await http.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    create = doc["paths"]["/api/messages/create"]["post"]
    assert set(create["responses"]) >= {"200", "400", "401", "403", "404", "409", "429"}
    schema = doc["components"]["schemas"]["CreateMessage"]
    assert set(schema["required"]) == {"webinarId", "content"}
    assert "/api/webinars/{webinar_id}/changes" in doc["paths"]


async def test_admin_api_builds_a_webinar(http: httpx.AsyncClient, world: World) -> None:
    h = auth(world.admin.token)
    assert (await http.post("/api/admin/agencies", json={"name": "X"},
                            headers=auth(world.host.token))).status_code == 403
    agency = (await http.post("/api/admin/agencies", json={"name": "New"}, headers=h)).json()
    client = (await http.post("/api/admin/clients", json={"agency_id": agency["agency"]["id"],
                                                          "name": "C"}, headers=h)).json()
    webinar = (await http.post("/api/admin/webinars", json={"client_id": client["client"]["id"],
                                                            "title": "T"}, headers=h)).json()
    wid = webinar["webinar"]["id"]
    r = await http.post("/api/admin/registrations", json={"webinar_id": wid,
                                                          "user_id": world.bob.user_id,
                                                          "role": "moderator"}, headers=h)
    assert r.status_code == 200
    r = await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))
    assert r.json()["webinar"]["role"] == "moderator"
    r = await http.post("/api/admin/registrations", json={"webinar_id": 999999,
                                                          "user_id": world.bob.user_id},
                        headers=h)
    assert r.status_code == 404
    r = await http.post("/api/admin/bans", json={"webinar_id": wid, "user_id": world.bob.user_id,
                                                 "banned": True}, headers=h)
    assert r.status_code == 200
    assert (await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))).status_code \
        == 403


async def test_a_verified_token_still_expires_on_time(http: httpx.AsyncClient, world: World) -> None:
    """Verified tokens are cached per process; the cache must never outlive `exp`."""
    from webinar_chat.auth.tokens import TokenService

    from ..helpers import JWT_SECRET, eventually

    # `exp` is in whole seconds: a 1 s token issued at x.99 s could be expired 10 ms later.
    short, _ = TokenService(JWT_SECRET, 900).issue_access(world.alice.user_id, ttl_s=2)
    assert (await http.get("/api/me", headers=auth(short))).status_code == 200  # now cached

    async def rejected() -> bool:
        r = await http.get("/api/me", headers=auth(short))
        return r.status_code == 401 and r.json()["code"] == "token_expired"

    await eventually(rejected, timeout=6, interval=0.1, message="expired token still accepted")


async def test_every_answer_is_nosniff_and_token_answers_are_never_stored(
        http: httpx.AsyncClient, world: World) -> None:
    signup = await http.post("/api/auth/signup", json={
        "email": f"new-{new_id()[:8]}@example.test", "password": "a long enough passphrase",
        "display_name": "Newcomer"})
    login = await http.post("/api/auth/login", json={"email": world.alice.email,
                                                     "password": PASSWORD})
    refresh = await http.post("/api/auth/refresh",
                              json={"refresh_token": login.json()["refresh_token"]})
    for r in (signup, login, refresh):
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
    others = [await http.get("/api/me", headers=auth(world.alice.token)),
              await http.get("/nowhere"), await http.get("/healthz"),
              await http.post("/api/messages/create", content=b"{bad")]
    for r in others:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers.get_list("x-content-type-options") == ["nosniff"]
