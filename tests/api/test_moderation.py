"""Hide / unhide / delete, and what attendees may never see by any HTTP path."""

from __future__ import annotations

import httpx

from ..helpers import World, auth, new_id, send


async def _message(http: httpx.AsyncClient, world: World, text: str = "secret plans") -> dict:
    r = await send(http, world.alice, world.webinar.id, text, new_id())
    return r.json()["message"]  # type: ignore[no-any-return]


async def test_moderator_hides_and_unhides(http: httpx.AsyncClient, world: World) -> None:
    m = await _message(http, world)
    r = await http.post(f"/api/messages/{m['id']}/hide", json={"hidden": True},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200 and r.json()["message"]["hidden"] is True
    url = f"/api/webinars/{world.webinar.id}"
    # attendees: not in the list, redacted in the change feed
    listed = (await http.get(url + "/messages", headers=auth(world.bob.token))).json()
    assert listed["messages"] == []
    changes = (await http.get(url + "/changes", headers=auth(world.bob.token))).json()["changes"]
    assert [c["type"] for c in changes] == ["INSERT", "UPDATE"]
    assert "secret plans" not in str(changes)
    assert changes[1]["old"] == {"id": m["id"]}
    assert changes[1]["new"] == {"id": m["id"], "webinar_id": world.webinar.id, "hidden": True,
                                 "seq": 2}
    # the author is an attendee too: no special view of their hidden message
    listed = (await http.get(url + "/messages", headers=auth(world.alice.token))).json()
    assert listed["messages"] == []
    # staff still see it
    staff = (await http.get(url + "/messages", headers=auth(world.host.token))).json()
    assert staff["messages"][0]["hidden"] is True and staff["messages"][0]["content"]
    r = await http.post(f"/api/messages/{m['id']}/hide", json={"hidden": False},
                        headers=auth(world.host.token))
    assert r.status_code == 200
    listed = (await http.get(url + "/messages", headers=auth(world.bob.token))).json()
    assert [x["id"] for x in listed["messages"]] == [m["id"]]


async def test_attendees_cannot_moderate(http: httpx.AsyncClient, world: World) -> None:
    m = await _message(http, world)
    r = await http.post(f"/api/messages/{m['id']}/hide", json={"hidden": True},
                        headers=auth(world.bob.token))
    assert r.status_code == 403
    r = await http.delete(f"/api/messages/{m['id']}", headers=auth(world.bob.token))
    assert r.status_code == 403
    r = await http.post(f"/api/messages/{m['id']}/hide", json={"hidden": True},
                        headers=auth(world.outsider.token))
    assert r.status_code == 403
    r = await http.post(f"/api/messages/{m['id']}/hide", json={"hidden": "yes"},
                        headers=auth(world.host.token))
    assert r.status_code == 400
    r = await http.post("/api/messages/999999/hide", json={"hidden": True},
                        headers=auth(world.host.token))
    assert r.status_code == 404


async def test_author_deletes_own_and_moderator_deletes_any(http: httpx.AsyncClient,
                                                            world: World) -> None:
    mine = await _message(http, world, "oops")
    r = await http.delete(f"/api/messages/{mine['id']}", headers=auth(world.alice.token))
    assert r.status_code == 200
    other = await _message(http, world, "spam")
    r = await http.delete(f"/api/messages/{other['id']}", headers=auth(world.moderator.token))
    assert r.status_code == 200
    r = await http.delete(f"/api/messages/{other['id']}", headers=auth(world.moderator.token))
    assert r.status_code == 404
    changes = (await http.get(f"/api/webinars/{world.webinar.id}/changes",
                              headers=auth(world.bob.token))).json()["changes"]
    assert [(c["type"], c["new"], c["old"]) for c in changes] == [
        ("INSERT", None, {"id": mine["id"]}), ("DELETE", None, {"id": mine["id"]}),
        ("INSERT", None, {"id": other["id"]}), ("DELETE", None, {"id": other["id"]})]


async def test_hidden_message_cannot_be_deleted_by_its_attendee_author(
        http: httpx.AsyncClient, world: World) -> None:
    m = await _message(http, world)
    await http.post(f"/api/messages/{m['id']}/hide", json={"hidden": True},
                    headers=auth(world.moderator.token))
    r = await http.delete(f"/api/messages/{m['id']}", headers=auth(world.alice.token))
    assert r.status_code == 404


async def test_profiles_hide_emails_from_attendees(http: httpx.AsyncClient, world: World) -> None:
    r = await http.get(f"/api/profiles/{world.alice.user_id}", headers=auth(world.bob.token))
    assert r.json()["profile"] == {"user_id": world.alice.user_id,
                                   "display_name": world.alice.display_name}
    r = await http.get(f"/api/profiles/{world.alice.user_id}", headers=auth(world.alice.token))
    assert r.json()["profile"]["email"] == world.alice.email
    r = await http.get(f"/api/profiles/{world.alice.user_id}", headers=auth(world.moderator.token))
    assert r.json()["profile"]["email"] == world.alice.email
    r = await http.get(f"/api/profiles/{world.alice.user_id}", headers=auth(world.outsider.token))
    assert "email" not in r.json()["profile"]
    assert (await http.get("/api/profiles/99999", headers=auth(world.bob.token))).status_code == 404
