"""Q&A routes (server/questions_api.py) against a real server on both databases: input rules,
idempotent asks, one vote per user, staff-only status changes, redaction of dismissed questions
and the errors of every refusal."""

from __future__ import annotations

from typing import Any

import httpx

from ..helpers import Person, World, auth, new_id


async def ask(http: httpx.AsyncClient, person: Person, webinar_id: int, content: str,
              client_msg_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"content": content}
    if client_msg_id is not None:
        body["clientMsgId"] = client_msg_id
    return await http.post(f"/api/webinars/{webinar_id}/questions", json=body,
                           headers=auth(person.token))


async def vote(http: httpx.AsyncClient, person: Person, question_id: int,
               voted: bool = True) -> httpx.Response:
    return await http.post(f"/api/questions/{question_id}/vote", json={"voted": voted},
                           headers=auth(person.token))


async def set_status(http: httpx.AsyncClient, person: Person, question_id: int,
                     status: str) -> httpx.Response:
    return await http.post(f"/api/questions/{question_id}/status", json={"status": status},
                           headers=auth(person.token))


async def listed(http: httpx.AsyncClient, person: Person, webinar_id: int,
                 sort: str = "votes") -> dict[str, Any]:
    r = await http.get(f"/api/webinars/{webinar_id}/questions", params={"sort": sort},
                       headers=auth(person.token))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_ask_is_idempotent_and_follows_the_message_text_rules(
        http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    key = new_id()
    r = await ask(http, world.alice, wid, "  When are the slides out?  ", key)
    assert r.status_code == 200, r.text
    question = r.json()["question"]
    assert question["content"] == "When are the slides out?" and question["status"] == "open"
    assert question["votes"] == 0 and question["user"] == {"display_name": "Alice",
                                                          "role": "attendee"}
    again = await ask(http, world.alice, wid, "When are the slides out?", key.upper())
    assert again.status_code == 409 and again.json()["code"] == "duplicate"
    assert again.json()["question"] == question
    for content, status in (("   ", 400), ("x" * 2001, 400), ("a\x00b", 400), (5, 400)):
        r = await http.post(f"/api/webinars/{wid}/questions", json={"content": content},
                            headers=auth(world.alice.token))
        assert r.status_code == status, (content, r.text)
        assert r.json()["success"] is False and r.json()["code"] == "invalid_request"
    bad_key = await ask(http, world.alice, wid, "Hi?", "not-a-uuid")
    assert bad_key.status_code == 400
    assert (await ask(http, world.alice, 2**62, "Hi?")).status_code == 404
    assert (await ask(http, world.outsider, wid, "Hi?")).status_code == 403
    # A read-only chat closes the chat, not the Q&A.
    r = await http.patch(f"/api/webinars/{wid}", json={"chat_mode": "read_only"},
                         headers=auth(world.host.token))
    assert r.status_code == 200
    assert (await ask(http, world.bob, wid, "Still open for questions?")).status_code == 200
    # A timed-out attendee may not ask.
    r = await http.post(f"/api/webinars/{wid}/bans",
                        json={"user_id": world.bob.user_id, "duration_s": 60},
                        headers=auth(world.host.token))
    assert r.status_code == 200, r.text
    refused = await ask(http, world.bob, wid, "Me again?")
    assert refused.status_code == 403 and refused.json()["code"] == "timed_out"
    assert len((await listed(http, world.host, wid))["questions"]) == 2


async def test_votes_toggle_once_per_user_and_the_list_says_who_voted(
        http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    first = (await ask(http, world.alice, wid, "First?")).json()["question"]
    second = (await ask(http, world.bob, wid, "Second?")).json()["question"]
    head = (await listed(http, world.host, wid))["last_seq"]
    for person in (world.alice, world.bob, world.moderator):
        r = await vote(http, person, second["id"])
        assert r.status_code == 200 and r.json()["voted"] is True
    twice = await vote(http, world.alice, second["id"])
    assert twice.json()["question"]["votes"] == 3
    r = await vote(http, world.bob, second["id"], False)
    assert r.json()["voted"] is False and r.json()["question"]["votes"] == 2
    r = await vote(http, world.bob, second["id"], False)  # nothing to take back
    assert r.json()["question"]["votes"] == 2
    await vote(http, world.bob, first["id"])
    feed = (await http.get(f"/api/webinars/{wid}/changes", params={"after_seq": head},
                           headers=auth(world.host.token))).json()["changes"]
    assert len(feed) == 5 and {e["type"] for e in feed} == {"QUESTION"}  # 3 + 1 + 1: no no-ops
    by_votes = (await listed(http, world.alice, wid))["questions"]
    assert [(q["id"], q["votes"], q["voted"]) for q in by_votes] == [
        (second["id"], 2, True), (first["id"], 1, False)]
    newest = (await listed(http, world.bob, wid, "newest"))["questions"]
    assert [(q["id"], q["voted"]) for q in newest] == [(second["id"], False), (first["id"], True)]
    r = await http.get(f"/api/webinars/{wid}/questions", params={"sort": "loudest"},
                       headers=auth(world.alice.token))
    assert r.status_code == 400
    r = await http.post(f"/api/questions/{first['id']}/vote", json={"voted": "yes"},
                        headers=auth(world.alice.token))
    assert r.status_code == 400


async def test_staff_set_the_status_and_dismissed_questions_vanish_for_attendees(
        http: httpx.AsyncClient, world: World) -> None:
    wid = world.webinar.id
    question = (await ask(http, world.alice, wid, "Off topic?")).json()["question"]
    qid = question["id"]
    refused = await set_status(http, world.alice, qid, "answered")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (await set_status(http, world.host, qid, "closed")).status_code == 400
    r = await set_status(http, world.moderator, qid, "answered")
    assert r.status_code == 200 and r.json()["question"]["status"] == "answered"
    r = await set_status(http, world.host, qid, "dismissed")
    assert r.json()["question"]["status"] == "dismissed"
    for person in (world.alice, world.bob):  # its asker too
        assert (await listed(http, person, wid))["questions"] == []
        r = await vote(http, person, qid)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    staff = (await listed(http, world.moderator, wid))["questions"]
    assert [q["status"] for q in staff] == ["dismissed"] and staff[0]["content"] == "Off topic?"
    # Another tenant's user and unknown ids: 404, no existence oracle.
    for person, target in ((world.outsider, qid), (world.alice, 2**62)):
        assert (await vote(http, person, target)).status_code == 404
        assert (await set_status(http, person, target, "open")).status_code == 404
    r = await set_status(http, world.host, qid, "open")
    assert r.json()["question"]["status"] == "open"
    assert [q["id"] for q in (await listed(http, world.bob, wid))["questions"]] == [qid]
