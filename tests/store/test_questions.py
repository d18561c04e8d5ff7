"""Q&A in the store (store/questions.py), on SQLite and PostgreSQL: each write appends one feed
entry under the webinar's lock, a write that changes nothing appends none, the feed reads back
the current state, and asks are idempotent by client_msg_id."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from webinar_chat.protocol.events import ChangeOp
from webinar_chat.store import Store
from webinar_chat.store.questions import DuplicateQuestion

from ..helpers import World


async def test_ask_vote_status_each_append_one_entry_and_noops_append_none(
        store: Store, world: World) -> None:
    w = world.webinar
    question, asked = await store.ask_question(w, world.alice.user_id, "When are slides out?",
                                               None)
    assert asked.op is ChangeOp.QUESTION and asked.seq == 1 and asked.message_id == question.id
    assert question.status == "open" and question.votes == 0 and question.seq == 1
    assert question.display_name == "Alice" and question.author_role == "attendee"
    voted, c2 = await store.vote_question(question, world.bob.user_id, True)
    assert c2 is not None and voted.votes == 1 and voted.seq == 2
    again, none = await store.vote_question(question, world.bob.user_id, True)  # twice: nothing
    assert none is None and again.votes == 1 and again.seq == 2
    _, c3 = await store.vote_question(question, world.alice.user_id, True)
    _, c4 = await store.vote_question(question, world.bob.user_id, False)
    unvoted, none = await store.vote_question(question, world.bob.user_id, False)
    assert none is None and unvoted.votes == 1
    answered, c5 = await store.set_question_status(question, "answered")
    same, none = await store.set_question_status(question, "answered")
    assert none is None and same.seq == answered.seq
    assert [c.seq for c in (c3, c4, c5) if c] == [3, 4, 5]
    assert await store.head_seq(w.id) == 5
    page = await store.changes_after(w.id, 0)
    assert [c.seq for c in page.changes] == [1, 2, 3, 4, 5]
    assert all(c.op is ChangeOp.QUESTION and c.message is None for c in page.changes)
    # Every entry carries the current state, as for messages.
    assert {c.question for c in page.changes} == {answered}
    assert answered.status == "answered" and answered.votes == 1 and answered.seq == 5
    with pytest.raises(ValueError):
        await store.set_question_status(question, "closed")


async def test_asks_are_idempotent_and_listing_sorts_and_says_who_voted(
        store: Store, world: World) -> None:
    w = world.webinar
    key = str(uuid.uuid4())
    first, _ = await store.ask_question(w, world.alice.user_id, "First?", key)
    with pytest.raises(DuplicateQuestion) as dup:
        await store.ask_question(w, world.alice.user_id, "First? (retry)", key)
    assert dup.value.question == first
    assert await store.head_seq(w.id) == 1  # the refused ask burnt no seq
    # the same key of another user is another question
    second, _ = await store.ask_question(w, world.bob.user_id, "Second?", key)
    third, _ = await store.ask_question(w, world.bob.user_id, "Third?", None)
    await store.vote_question(second, world.alice.user_id, True)
    await store.vote_question(second, world.bob.user_id, True)
    await store.vote_question(third, world.alice.user_id, True)
    await store.set_question_status(first, "dismissed")
    found, more, head = await store.list_questions(w.id, sort="votes", include_dismissed=True,
                                                   viewer_id=world.alice.user_id)
    assert [(qn.id, voted) for qn, voted in found] == [(second.id, True), (third.id, True),
                                                       (first.id, False)]
    assert not more and head == await store.head_seq(w.id)
    found, _, _ = await store.list_questions(w.id, sort="newest", include_dismissed=False,
                                             viewer_id=world.bob.user_id)
    assert [(qn.id, voted) for qn, voted in found] == [(third.id, False), (second.id, True)]


async def test_concurrent_votes_count_every_voter_once(store: Store, world: World) -> None:
    question, _ = await store.ask_question(world.webinar, world.alice.user_id, "Busy?", None)
    voters = [world.alice, world.bob, world.moderator, world.host]
    results = await asyncio.gather(*(store.vote_question(question, p.user_id, True)
                                     for p in voters for _ in range(3)))
    assert sum(1 for _, change in results if change is not None) == 4
    final = await store.get_question(question.id)
    assert final is not None and final.votes == 4
    page = await store.changes_after(world.webinar.id, 0)
    assert [c.seq for c in page.changes] == list(range(1, 6))  # dense
