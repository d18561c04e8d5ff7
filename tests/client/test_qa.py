"""The SDK's Q&A (ask, vote/unvote, set status, list; `room.questions` from events) and
examples/qa_bot.py, against a real server."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from webinar_chat.client import ApiError, ChatClient

from ..helpers import World, auth, eventually
from .conftest import ClientFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qa_bot.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qa_bot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_room_questions_follow_events_and_own_votes(make_client: ClientFactory,
                                                          world: World) -> None:
    wid = world.webinar.id
    alice: ChatClient = await make_client(world.alice)
    host: ChatClient = await make_client(world.host)
    alice_room = await alice.join(wid, events=False)
    host_room = await host.join(wid, events=False)
    asked = await alice.ask(wid, "  Will the slides be shared?  ")
    assert asked.content == "Will the slides be shared?" and asked.status == "open"
    again = await alice.ask(wid, "Will the slides be shared?", client_msg_id="6f1c1b1e-0d1e-"
                            "4c55-9a7e-1f0a8e9b3c2d")
    same = await alice.ask(wid, "retry", client_msg_id="6f1c1b1e-0d1e-4c55-9a7e-1f0a8e9b3c2d")
    assert same.id == again.id and same.content == "Will the slides be shared?"
    voted = await host.vote(asked.id)
    assert voted.voted is True and voted.votes == 1
    assert (await host.vote(asked.id)).votes == 1  # once per user
    await alice.vote(again.id)
    await alice.unvote(again.id)
    answered = await host.set_question_status(asked.id, "answered")
    assert answered.answered
    await host.set_question_status(again.id, "dismissed")
    with pytest.raises(ValueError):
        await host.set_question_status(again.id, "closed")
    await eventually(lambda: len(alice_room.questions) == 1 and alice_room.questions.get(
        asked.id) is not None and alice_room.questions.get(asked.id).answered)  # type: ignore[union-attr]
    await eventually(lambda: (host_room.questions.get(again.id) or asked).status == "dismissed")
    # Attendees: the dismissed one is gone; staff keep it. Own votes: from the toggle answers.
    assert [q.id for q in alice_room.questions.sorted()] == [asked.id]
    assert host_room.questions.voted(asked.id) and not alice_room.questions.voted(asked.id)
    assert [q.id for q in host_room.questions.sorted("newest")] == [again.id, asked.id]
    # A client that joins later converges on the same state; its votes come from the list.
    late: ChatClient = await make_client(world.host)
    late_room = await late.join(wid, after_seq=0, events=False)
    listed = await late.questions(wid)
    assert {q.id: q.voted for q in listed} == {asked.id: True, again.id: False}
    await eventually(lambda: late_room.last_seq == host_room.last_seq)
    assert late_room.questions.sorted() == host_room.questions.sorted()
    with pytest.raises(ApiError) as refused:
        await alice.set_question_status(asked.id, "open")
    assert refused.value.status == 403


async def test_the_qa_bot_answers_faq_questions_once_and_leaves_the_rest_open(
        make_client: ClientFactory, world: World, http: httpx.AsyncClient) -> None:
    qa_bot = load_example()
    wid = world.webinar.id
    bot_client: ChatClient = await make_client(world.moderator)
    room = await bot_client.join(wid)
    bot = asyncio.create_task(qa_bot.answer_questions(bot_client, room))
    try:
        ids = {}
        for key, text in (("slides", "Will the SLIDES be shared afterwards?"),
                          ("colour", "What is your favourite colour?"),
                          ("recording", "Is there a recording?")):
            r = await http.post(f"/api/webinars/{wid}/questions", json={"content": text},
                                headers=auth(world.alice.token))
            assert r.status_code == 200, r.text
            ids[key] = r.json()["question"]["id"]

        async def statuses() -> dict[int, str]:
            r = await http.get(f"/api/webinars/{wid}/questions", headers=auth(world.bob.token))
            return {q["id"]: q["status"] for q in r.json()["questions"]}

        async def answered() -> bool:
            s = await statuses()
            return s[ids["slides"]] == "answered" and s[ids["recording"]] == "answered"

        await eventually(answered)
        assert (await statuses())[ids["colour"]] == "open"
        r = await http.get(f"/api/webinars/{wid}/messages", headers=auth(world.bob.token))
        replies = [m for m in r.json()["messages"] if m["user"]["role"] == "moderator"]
        assert [m["content"] for m in replies] == [
            qa_bot.reply_text("Alice", "Will the SLIDES be shared afterwards?", "slides"),
            qa_bot.reply_text("Alice", "Is there a recording?", "recording")]
        # Reopened by a host: open again, but the bot answers each question once.
        await http.post(f"/api/questions/{ids['slides']}/status", json={"status": "open"},
                        headers=auth(world.host.token))
        await asyncio.sleep(0.5)
        assert (await statuses())[ids["slides"]] == "open"
        r = await http.get(f"/api/webinars/{wid}/messages", headers=auth(world.bob.token))
        assert len([m for m in r.json()["messages"] if m["user"]["role"] == "moderator"]) == 2
    finally:
        bot.cancel()
        await asyncio.gather(bot, return_exceptions=True)
