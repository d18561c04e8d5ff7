"""Q&A through the change feed (docs/webinar-features.md, "Q&A"): a question asked, voted on
and answered reaches every viewer live and on every catch-up path — socket replay from the ring
and from the feed, long-polls parked and not, the list — with the same final state; dismissed
questions reach attendees only as the stub, on every path; on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ..api.test_questions import ask, listed, set_status, vote
from ..helpers import RunningServer, World
from .test_realtime import realtime
from .test_room_state import changes


def questions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "QUESTION"]


def final_state(events: list[dict[str, Any]]) -> dict[int, dict[str, Any] | None]:
    """What a client holds after applying the events in order: by question id, the state of the
    highest seq (the convergence rule of the page and the SDK)."""
    state: dict[int, dict[str, Any] | None] = {}
    seqs: dict[int, int] = {}
    for e in questions(events):
        qid = e["old"]["id"]
        if e["seq"] > seqs.get(qid, -1):
            seqs[qid] = e["seq"]
            state[qid] = e["new"]
    return state


async def test_questions_converge_live_on_replay_long_poll_and_list(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    head = (await listed(http, world.host, wid))["last_seq"]
    async with realtime(server, world.host.token) as host, \
            realtime(server, world.bob.token) as bob:
        await host.join(wid, last_seq=head)
        await bob.join(wid, last_seq=head)
        parked = asyncio.create_task(changes(http, world.bob, wid, head, wait=5))
        await asyncio.sleep(0.3)
        first = (await ask(http, world.alice, wid, "When are the slides out?")).json()["question"]
        second = (await ask(http, world.bob, wid, "Is there a recording?")).json()["question"]
        for person in (world.bob, world.moderator):
            assert (await vote(http, person, first["id"])).status_code == 200
        await vote(http, world.alice, second["id"])
        await vote(http, world.alice, second["id"], False)
        answered = await set_status(http, world.host, first["id"], "answered")
        assert answered.status_code == 200
        for c in (host, bob):
            await c.wait_for(lambda c: len(questions(c.events())) == 7)
        polled_live = await parked
        live_bob, live_host = questions(bob.events()), questions(host.events())
    assert [e["seq"] for e in live_bob] == list(range(head + 1, head + 8))
    # Live, each event carried the state of its moment …
    assert live_bob[0]["new"]["status"] == "open" and live_bob[0]["new"]["votes"] == 0
    assert live_bob[3]["new"]["votes"] == 2 and live_bob[-1]["new"]["status"] == "answered"
    assert "voted" not in live_bob[3]["new"]  # personal: never in the shared events
    expected = final_state(live_bob)
    assert expected == final_state(live_host)
    assert expected[first["id"]] == answered.json()["question"]
    assert [(expected[q["id"]] or {}).get("votes") for q in (first, second)] == [2, 0]
    assert polled_live["changes"], polled_live  # the parked poll was answered by a flush
    # … read back later, every entry carries the current state: the same end however collapsed.
    async with realtime(server, world.alice.token) as alice:
        await alice.join(wid, last_seq=head)  # from the room's ring
        await alice.wait_for(lambda c: len(questions(c.events())) == 7)
        replayed = questions(alice.events())
    assert all(e["new"] == expected[e["old"]["id"]] for e in replayed)
    polled = await changes(http, world.alice, wid, head)
    assert final_state(polled["changes"]) == expected
    assert all(e["new"] == expected[e["old"]["id"]] for e in polled["changes"])
    # A fresh server reads from the feed (no ring): the same.
    await server.restart()
    async with httpx.AsyncClient(base_url=server.base_url) as again:
        polled = await changes(again, world.alice, wid, head)
    assert all(e["new"] == expected[e["old"]["id"]] for e in polled["changes"])
    async with realtime(server, world.bob.token) as fresh:
        await fresh.join(wid, last_seq=head)
        await fresh.wait_for(lambda c: len(questions(c.events())) == 7)
        assert final_state(fresh.events()) == expected
    # The list: the same states, plus the caller's own vote.
    async with httpx.AsyncClient(base_url=server.base_url) as again:
        for person, votes in ((world.bob, {first["id"]: True, second["id"]: False}),
                              (world.alice, {first["id"]: False, second["id"]: False})):
            page = await listed(again, person, wid)
            assert {q["id"]: q["voted"] for q in page["questions"]} == votes
            assert {q["id"]: {k: v for k, v in q.items() if k != "voted"}
                    for q in page["questions"]} == expected
            assert page["last_seq"] == head + 7


async def test_dismissed_questions_reach_attendees_only_as_the_stub_on_every_path(
        server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    head = (await listed(http, world.host, wid))["last_seq"]
    question = (await ask(http, world.alice, wid, "Buy my course?")).json()["question"]
    async with realtime(server, world.alice.token) as alice, \
            realtime(server, world.bob.token) as bob, \
            realtime(server, world.moderator.token) as mod:
        for c in (alice, bob, mod):
            await c.join(wid, last_seq=head + 1)
        polls = [asyncio.create_task(changes(http, p, wid, head + 1, wait=5))
                 for p in (world.alice, world.bob, world.moderator)]
        await asyncio.sleep(0.3)
        dismissed = (await set_status(http, world.host, question["id"], "dismissed")).json()
        for c in (alice, bob, mod):
            await c.wait_for(lambda c: len(questions(c.events())) == 1)
        polled = await asyncio.gather(*polls)
        live = {name: questions(c.events())[0]["new"]
                for name, c in (("alice", alice), ("bob", bob), ("mod", mod))}
    stub = {"id": question["id"], "webinar_id": wid, "hidden": True, "seq": head + 2}
    whole = dismissed["question"]
    assert whole["status"] == "dismissed" and whole["content"] == "Buy my course?"
    assert live == {"alice": stub, "bob": stub, "mod": whole}  # its asker too
    assert [p["changes"][0]["new"] for p in polled] == [stub, stub, whole]
    # Replayed from the ring and from the feed, long-polled without waiting: the ASK entry too
    # carries the current (dismissed) state — the content never reaches an attendee.
    for person, expected in ((world.alice, stub), (world.bob, stub), (world.moderator, whole)):
        async with realtime(server, person.token) as again:
            await again.join(wid, last_seq=head)
            await again.wait_for(lambda c: len(questions(c.events())) == 2)
            assert [e["new"] for e in questions(again.events())] == [expected, expected]
        feed = (await changes(http, person, wid, head))["changes"]
        assert [e["new"] for e in feed] == [expected, expected]
    assert (await listed(http, world.alice, wid))["questions"] == []
    assert [q["content"] for q in (await listed(http, world.host, wid))["questions"]] == [
        "Buy my course?"]
    # Reopened: everybody sees it again, live and read back.
    reopened = (await set_status(http, world.moderator, question["id"], "open")).json()
    feed = (await changes(http, world.bob, wid, head))["changes"]
    assert [e["new"] for e in feed] == [reopened["question"]] * 3
