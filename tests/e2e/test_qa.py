"""Q&A in real Chromium (docs/webinar-features.md, "Q&A"): an attendee asks from the Q&A tab,
the host sees it live, attendees upvote (one on the long-poll fallback), the host marks it
answered and dismisses another; after a reload every viewer shows exactly the same questions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, expect

from ..helpers import RunningServer, World, auth
from .chat import ChatPage, open_chat
from .test_fallback import block_realtime


def question(chat: ChatPage, text: str) -> Any:
    return chat.page.locator("#questions .question").filter(
        has=chat.page.locator(".question-content", has_text=text))


async def qa_view(chat: ChatPage) -> list[dict[str, Any]]:
    """The rendered questions in order: text, votes, own vote, status."""
    return await chat.page.eval_on_selector_all(  # type: ignore[no-any-return]
        "#questions .question",
        """els => els.map(li => ({text: li.querySelector('.question-content').textContent,
            votes: Number(li.querySelector('.vote-count').textContent),
            voted: li.querySelector('.vote-button').getAttribute('aria-pressed') === 'true',
            status: li.dataset.status}))""")


async def open_qa(chat: ChatPage) -> None:
    await chat.page.locator("#tab-qa").click()
    await expect(chat.page.locator("#tab-qa")).to_have_attribute("aria-selected", "true")
    await expect(chat.page.locator("#qa-panel")).to_be_visible()
    await expect(chat.input).to_be_hidden()  # the chat's composer gives way


async def test_ask_vote_answer_live_on_socket_and_fallback_and_after_a_reload(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    host = await open_chat(browser, server, world.host, wid)
    alice = await open_chat(browser, server, world.alice, wid)
    # Bob watches from a 360 px side panel behind a proxy that refuses WebSockets.
    behind_proxy = await browser.new_context(viewport={"width": 360, "height": 700})
    await block_realtime(behind_proxy, "refused")
    bob = await open_chat(browser, server, world.bob, wid, context=behind_proxy, live=False)
    await expect(bob.status).to_have_attribute("data-status", "fallback")
    for chat in (host, alice, bob):
        await open_qa(chat)
        await expect(chat.page.locator(".qa-empty")).to_be_visible()

    # The attendee asks; everyone sees it live, with the open count on the tab.
    await alice.page.fill("#question-input", "Will the slides be shared?")
    await alice.page.locator("#question-input").press("Enter")
    await expect(alice.page.locator("#question-input")).to_have_value("")
    await alice.page.fill("#question-input", "Off topic: anyone selling a bike?")
    await alice.page.click("#ask-button")
    for chat in (host, alice, bob):
        await expect(question(chat, "slides be shared")).to_have_count(1)
        await expect(question(chat, "selling a bike")).to_have_count(1)
        await expect(chat.page.locator("#tab-qa .tab-count")).to_have_text("2")
    # Attendees have no staff buttons; the host has them.
    await expect(question(alice, "slides").locator("[data-action='answered']")).to_have_count(0)
    await expect(question(host, "slides").locator("[data-action='answered']")).to_be_visible()

    # Upvotes: a toggle (aria-pressed), once per person, from the socket and from the fallback.
    for chat in (alice, bob):
        vote = question(chat, "slides").locator(".vote-button")
        await expect(vote).to_have_attribute("aria-pressed", "false")
        await vote.click()
        await expect(vote).to_have_attribute("aria-pressed", "true")
    for chat in (host, alice, bob):
        await expect(question(chat, "slides").locator(".vote-count")).to_have_text("2")
    await question(bob, "slides").locator(".vote-button").click()  # bob takes his back …
    await expect(question(host, "slides").locator(".vote-count")).to_have_text("1")
    await expect(question(bob, "slides").locator(".vote-button")).to_have_attribute(
        "aria-pressed", "false")
    await question(bob, "slides").locator(".vote-button").click()  # … and gives it again
    for chat in (host, alice, bob):
        await expect(question(chat, "slides").locator(".vote-count")).to_have_text("2")
    # Sorted by votes by default: the upvoted question first; newest puts the bike first.
    assert [q["text"] for q in await qa_view(bob)][0] == "Will the slides be shared?"
    await bob.page.locator(".sort-button[data-sort='newest']").click()
    await expect(bob.page.locator(".sort-button[data-sort='newest']")).to_have_attribute(
        "aria-pressed", "true")
    await expect(bob.page.locator("#questions .question").first).to_contain_text("bike")

    # The host marks it answered and dismisses the other: attendees lose the dismissed one.
    await question(host, "slides").locator("[data-action='answered']").click()
    await question(host, "selling a bike").locator("[data-action='dismissed']").click()
    for chat in (alice, bob):
        await expect(question(chat, "slides")).to_have_attribute("data-status", "answered")
        await expect(question(chat, "slides").locator(".question-status")).to_have_text(
            "Answered")
        await expect(question(chat, "selling a bike")).to_have_count(0)
    await expect(question(host, "selling a bike")).to_have_attribute("data-status", "dismissed")
    await expect(question(host, "selling a bike").locator("[data-action='open']")).to_be_visible()

    # The side panel fits: nothing wider than 360 px.
    width = await bob.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, width

    # A reload (socket and fallback) shows exactly the same questions and own votes.
    listed = (await http.get(f"/api/webinars/{wid}/questions",
                             headers=auth(world.alice.token))).json()["questions"]
    assert [(q["content"], q["votes"], q["status"]) for q in listed] == [
        ("Will the slides be shared?", 2, "answered")]
    await bob.page.locator(".sort-button[data-sort='votes']").click()
    for chat in (alice, bob, host):
        before = await qa_view(chat)
        await chat.page.reload()
        await expect(chat.page.locator("#chat-root")).to_have_attribute("data-ready", "1")
        await open_qa(chat)
        await expect(chat.page.locator("#questions .question")).to_have_count(len(before))
        await expect(question(chat, "slides").locator(".vote-count")).to_have_text("2")
        assert await qa_view(chat) == before, chat.person.display_name
    assert [q["voted"] for q in await qa_view(alice)] == [True]
    assert [q["voted"] for q in await qa_view(host)] == [False, False]
    for chat in (host, alice, bob):
        assert chat.errors == []


async def test_the_qa_panel_fits_320_to_420_px_side_panels(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient,
        tmp_path: Path) -> None:
    """Long questions and names wrap, staff buttons wrap under the question, nothing scrolls
    sideways; pictures into $SCREENSHOTS_DIR (else the test's own directory)."""
    out = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    os.makedirs(out, exist_ok=True)
    wid = world.webinar.id
    texts = ["Will the slides and the recording be shared after the session, and where?",
             "Supercalifragilisticexpialidocious-internationalisation-question-without-spaces",
             "Is there a Q&A at the end?"]
    ids = []
    for text in texts:
        r = await http.post(f"/api/webinars/{wid}/questions", json={"content": text},
                            headers=auth(world.alice.token))
        ids.append(r.json()["question"]["id"])
    for person in (world.bob, world.moderator):
        await http.post(f"/api/questions/{ids[0]}/vote", json={"voted": True},
                        headers=auth(person.token))
    await http.post(f"/api/questions/{ids[2]}/status", json={"status": "answered"},
                    headers=auth(world.host.token))
    for width in (320, 420):
        for name, person in (("host", world.host), ("attendee", world.alice)):
            context = await browser.new_context(viewport={"width": width, "height": 700})
            chat = await open_chat(browser, server, person, wid, context=context)
            await open_qa(chat)
            await expect(chat.page.locator("#questions .question")).to_have_count(3)
            extent = await chat.page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                " document.querySelector('#questions').scrollWidth,"
                " document.querySelector('#questions').clientWidth]")
            assert extent[0] <= extent[1] and extent[2] <= extent[3], (name, width, extent)
            await chat.page.screenshot(path=str(out / f"qa-{name}-{width}.png"))
            assert chat.errors == []
            await context.close()
