"""Timeouts and bans by staff (POST/GET/DELETE /api/webinars/{id}/bans), the admin route's
duration, and what the affected user gets on every HTTP path — on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from ..helpers import World, auth, eventually, new_id, send


def _bans(world: World) -> str:
    return f"/api/webinars/{world.webinar.id}/bans"


def _until(body: dict) -> datetime:
    return datetime.fromisoformat(body["banned_until"].replace("Z", "+00:00"))


async def test_a_moderator_times_out_an_attendee_who_sees_why_and_until_when(
        http: httpx.AsyncClient, world: World) -> None:
    before = datetime.now(UTC)
    r = await http.post(_bans(world), json={"user_id": world.bob.user_id, "duration_s": 300},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    ban = r.json()["ban"]
    assert ban["banned"] is True and ban["user_id"] == world.bob.user_id
    until = _until(ban)
    assert before + timedelta(seconds=299) < until < datetime.now(UTC) + timedelta(seconds=301)
    wid = world.webinar.id
    # every HTTP path refuses him with the same code and time
    for response in (
        await send(http, world.bob, wid, "let me in", new_id()),
        await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token)),
        await http.get(f"/api/webinars/{wid}/messages", headers=auth(world.bob.token)),
        await http.get(f"/api/webinars/{wid}/changes", params={"after_seq": 0},
                       headers=auth(world.bob.token)),
    ):
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["success"] is False and body["code"] == "timed_out", body
        assert body["banned_until"] == ban["banned_until"]
        assert until.strftime("%H:%M:%S") in body["error"]
    # alice is not concerned
    assert (await send(http, world.alice, wid, "still here", new_id())).status_code == 200
    listed = (await http.get(_bans(world), headers=auth(world.host.token))).json()
    assert listed == {"success": True, "bans": [{"user_id": world.bob.user_id,
                                                 "display_name": "Bob",
                                                 "banned_until": ban["banned_until"]}]}
    # a timed-out user still has the webinar in their list (they come back)
    me = (await http.get("/api/me", headers=auth(world.bob.token))).json()
    assert wid in [w["id"] for w in me["webinars"]]


async def test_a_timeout_ends_by_itself(http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    r = await http.post(_bans(world), json={"user_id": world.bob.user_id, "duration_s": 1},
                        headers=auth(world.host.token))
    assert r.status_code == 200
    r = await http.get(f"/api/webinars/{wid}/messages", headers=auth(world.bob.token))
    assert r.status_code == 403 and r.json()["code"] == "timed_out"  # refusal now cached
    await asyncio.sleep(1.1)

    async def back() -> bool:
        r = await http.get(f"/api/webinars/{wid}/messages", headers=auth(world.bob.token))
        return r.status_code == 200

    # the cached refusal does not outlive the timeout (well under the cache's 5 s)
    await eventually(back, timeout=1.0, interval=0.1, message="still refused after the timeout")
    assert (await send(http, world.bob, wid, "I am back", new_id())).status_code == 200
    assert (await http.get(_bans(world), headers=auth(world.host.token))).json()["bans"] == []


async def test_a_permanent_ban_and_an_unban(http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    r = await http.post(_bans(world), json={"user_id": world.alice.user_id, "duration_s": None},
                        headers=auth(world.host.token))
    assert r.status_code == 200 and r.json()["ban"]["banned_until"] is None
    r = await send(http, world.alice, wid, "hello?", new_id())
    assert r.status_code == 403
    assert r.json()["code"] == "banned" and r.json()["banned_until"] is None
    me = (await http.get("/api/me", headers=auth(world.alice.token))).json()
    assert wid not in [w["id"] for w in me["webinars"]]
    r = await http.delete(f"{_bans(world)}/{world.alice.user_id}",
                          headers=auth(world.moderator.token))
    assert r.status_code == 200
    assert r.json()["ban"] == {"webinar_id": wid, "user_id": world.alice.user_id,
                               "banned": False, "banned_until": None}
    assert (await send(http, world.alice, wid, "thanks", new_id())).status_code == 200
    # a new timeout replaces a ban, and an unban ends a timeout early
    await http.post(_bans(world), json={"user_id": world.alice.user_id, "duration_s": 600},
                    headers=auth(world.host.token))
    assert (await send(http, world.alice, wid, "x", new_id())).json()["code"] == "timed_out"
    await http.delete(f"{_bans(world)}/{world.alice.user_id}", headers=auth(world.host.token))
    assert (await send(http, world.alice, wid, "y", new_id())).status_code == 200


async def test_who_may_ban_whom_and_bad_input(http: httpx.AsyncClient, world: World) -> None:
    url, bob = _bans(world), world.bob.user_id
    # attendees and outsiders may not
    for person in (world.alice, world.outsider):
        r = await http.post(url, json={"user_id": bob, "duration_s": 10},
                            headers=auth(person.token))
        assert r.status_code == 403, r.text
        r = await http.delete(f"{url}/{bob}", headers=auth(person.token))
        assert r.status_code == 403
        assert (await http.get(url, headers=auth(person.token))).status_code == 403
    # staff cannot ban staff
    for target in (world.moderator, world.host):
        r = await http.post(url, json={"user_id": target.user_id, "duration_s": 10},
                            headers=auth(world.host.token))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    # unknown users and registrations, unknown webinars
    r = await http.post(url, json={"user_id": world.outsider.user_id, "duration_s": 10},
                        headers=auth(world.host.token))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await http.post(url, json={"user_id": 999_999, "duration_s": 10},
                        headers=auth(world.host.token))
    assert r.status_code == 404
    r = await http.post("/api/webinars/999999/bans", json={"user_id": bob, "duration_s": 10},
                        headers=auth(world.admin.token))
    assert r.status_code == 404
    assert (await http.delete(f"{url}/999999", headers=auth(world.host.token))).status_code == 404
    # bad input: a clear 400
    for body, field in (({"user_id": bob, "duration_s": 0}, "duration_s"),
                        ({"user_id": bob, "duration_s": 31_536_001}, "duration_s"),
                        ({"user_id": bob, "duration_s": "10"}, "duration_s"),
                        ({"user_id": bob, "duration_s": 1.5}, "duration_s"),
                        ({"duration_s": 10}, "user_id"),
                        ({"user_id": bob}, "duration_s")):
        r = await http.post(url, json=body, headers=auth(world.host.token))
        assert r.status_code == 400, (body, r.text)
        assert r.json()["code"] == "invalid_request" and field in r.json()["error"], r.text
    # a platform admin, registered for nothing, may
    r = await http.post(url, json={"user_id": bob, "duration_s": 31_536_000},
                        headers=auth(world.admin.token))
    assert r.status_code == 200
    assert (await http.delete(f"{url}/{bob}", headers=auth(world.admin.token))).status_code == 200


async def test_the_admin_route_takes_a_duration_too(http: httpx.AsyncClient,
                                                    world: World) -> None:
    wid = world.webinar.id
    r = await http.post("/api/admin/bans", json={"webinar_id": wid, "user_id": world.bob.user_id,
                                                 "banned": True, "duration_s": 120},
                        headers=auth(world.admin.token))
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))
    assert r.json()["code"] == "timed_out" and r.json()["banned_until"]
    r = await http.post("/api/admin/bans", json={"webinar_id": wid, "user_id": world.bob.user_id,
                                                 "banned": True},
                        headers=auth(world.admin.token))
    r = await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))
    assert r.json()["code"] == "banned" and r.json()["banned_until"] is None
    r = await http.post("/api/admin/bans", json={"webinar_id": wid, "user_id": world.bob.user_id,
                                                 "banned": False},
                        headers=auth(world.admin.token))
    assert (await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))
            ).status_code == 200


async def test_a_parked_long_poll_is_answered_at_once_with_the_timeout(
        http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    url = f"/api/webinars/{wid}/changes"
    # warm up the cache so that the next poll may park on the fast path, then park one
    assert (await http.get(url, params={"after_seq": 0}, headers=auth(world.bob.token))
            ).status_code == 200
    poll = asyncio.create_task(http.get(url, params={"after_seq": 0, "wait": 20},
                                        headers=auth(world.bob.token)))
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await http.post(_bans(world), json={"user_id": world.bob.user_id, "duration_s": 60},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200
    answer = await asyncio.wait_for(poll, 5)
    assert loop.time() - started < 2.0
    assert answer.status_code == 403, answer.text
    assert answer.json()["code"] == "timed_out"
    assert answer.json()["banned_until"] == r.json()["ban"]["banned_until"]
