"""The chat as people use it: live delivery, one message per send, text stays text, rejected
sends give the text back."""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import Browser, expect

from ..helpers import RunningServer, World, auth, eventually, metric_value, new_id, scrape, send
from .chat import open_chat, stored, stored_texts


async def test_two_users_see_each_others_messages_live(browser: Browser, server: RunningServer,
                                                       world: World,
                                                       http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    bob = await open_chat(browser, server, world.bob, wid)

    await alice.send("Hi Bob, can you hear the speaker?")
    await expect(bob.message("Hi Bob, can you hear the speaker?")).to_have_attribute(
        "data-state", "sent")
    await bob.send("Loud and clear!")
    await expect(alice.message("Loud and clear!")).to_have_attribute("data-state", "sent")
    await expect(alice.message("Hi Bob, can you hear the speaker?")).to_have_attribute(
        "data-state", "sent")

    rows = await stored(http, world.moderator, wid)
    for chat in (alice, bob):
        timeline = await chat.timeline()
        assert [m["id"] for m in timeline] == [r["id"] for r in rows]
        assert [m["text"] for m in timeline] == ["Hi Bob, can you hear the speaker?",
                                                 "Loud and clear!"]
        # One socket, one subscription: the topic is joined exactly once, by its fixed name.
        assert len(chat.joins) == 1, chat.joins
        frame = json.loads(chat.joins[0]["frame"])
        assert frame["topic"] == f"webinar:{wid}:messages" and frame["last_seq"] == 0
        assert chat.errors == []
    await expect(alice.status).to_have_text("Live")


async def test_double_click_and_enter_bounce_send_one_message(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    await alice.input.fill("clicked twice")
    await alice.page.dblclick("#send-button")
    await expect(alice.message("clicked twice")).to_have_attribute("data-state", "sent")

    await alice.input.fill("enter bounced")
    await alice.page.keyboard.down("Enter")
    await alice.page.keyboard.up("Enter")
    await alice.page.keyboard.down("Enter")
    await alice.page.keyboard.up("Enter")
    await expect(alice.message("enter bounced")).to_have_attribute("data-state", "sent")
    # The send button rests after a send: a second click lands on a disabled button.
    await alice.input.fill("third")
    await alice.page.click("#send-button")
    await expect(alice.page.locator("#send-button")).to_be_disabled()
    await expect(alice.message("third")).to_have_attribute("data-state", "sent")

    assert await stored_texts(http, world.moderator, wid) == ["clicked twice", "enter bounced",
                                                              "third"]
    assert [m["text"] for m in await alice.timeline()] == ["clicked twice", "enter bounced",
                                                            "third"]


async def test_markup_in_messages_is_shown_as_text_and_never_runs(
        browser: Browser, server: RunningServer, world: World) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    bob = await open_chat(browser, server, world.bob, wid)
    script = "<script>window.__pwned = 'script'</script>"
    image = "<img src=x onerror=\"window.__pwned='img'\">"
    await alice.send(script)
    await alice.send(image)
    await expect(bob.message("window.__pwned = 'script'")).to_have_attribute("data-state", "sent")
    await expect(bob.message("onerror")).to_have_attribute("data-state", "sent")
    await bob.page.reload()  # rendered from the list API as well as from realtime
    await expect(bob.message("onerror")).to_have_count(1)

    for chat in (alice, bob):
        texts = [m["text"] for m in await chat.timeline()]
        assert texts == [script, image]
        assert await chat.page.locator("#messages img, #messages script").count() == 0
        assert await chat.page.evaluate("window.__pwned === undefined")
        assert chat.errors == []


async def test_rejected_send_removes_message_and_restores_the_text(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    r = await http.patch(f"/api/webinars/{wid}", json={"slow_mode_seconds": 60},
                         headers=auth(world.host.token))
    assert r.status_code == 200
    alice = await open_chat(browser, server, world.alice, wid)
    dialogs: list[str] = []
    alice.page.on("dialog", lambda d: dialogs.append(d.message))
    # Alice posted from another device a moment ago: this tab does not know, the server refuses
    # (429 slow_mode) — the text goes back to the input, nothing is shown as sent.
    assert (await send(http, world.alice, wid, "From my phone", new_id())).status_code == 200
    await expect(alice.message("From my phone")).to_have_attribute("data-state", "sent")
    await alice.send("And from my laptop")
    error = alice.page.locator("#composer-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("You can send again in")
    await expect(alice.input).to_have_value("And from my laptop")
    await expect(alice.message("from my laptop")).to_have_count(0)
    # The send button counts the seconds the server named down, then Enter sends it.
    await expect(alice.page.locator("#send-button")).to_have_text(re.compile(r"Wait \d+ s"))
    assert dialogs == []
    assert [m["content"] for m in await stored(http, world.moderator, wid)] == ["From my phone"]
    # Typing again clears the error.
    await alice.input.press("End")
    await alice.input.type("?")
    await expect(error).to_be_hidden()


async def test_the_page_reports_its_monitoring_events_and_the_server_counts_them(
        browser: Browser, server: RunningServer, world: World) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid, metricsFlushMs=200)
    answers: list[int] = []
    alice.page.on("response", lambda r: answers.append(r.status)
                  if r.url.endswith("/api/metrics/events") else None)
    await alice.send("counted")
    await expect(alice.message("counted")).to_have_attribute("data-state", "sent")

    async def counted() -> bool:
        text = await scrape(server)
        return metric_value(text, "webinar_chat_client_events_total", type="send_success") == 1

    await eventually(counted, timeout=10)
    await eventually(lambda: len(answers) >= 1)  # (the page sees the answer after the count)
    assert set(answers) == {200}  # the route exists: no 404 in the console
    text = await scrape(server)
    assert metric_value(text, "webinar_chat_client_sessions_total") == 1
    assert alice.errors == []


async def test_staff_messages_carry_their_role_badge_live_and_after_a_reload(
        browser: Browser, server: RunningServer, world: World) -> None:
    wid = world.webinar.id
    host = await open_chat(browser, server, world.host, wid)
    alice = await open_chat(browser, server, world.alice, wid)
    await host.send("Welcome, I am your host")
    await alice.send("Thanks!")
    await expect(alice.message("Welcome, I am your host").locator(".role-badge")).to_have_text(
        "Host")
    await expect(alice.message("Thanks!")).to_have_attribute("data-state", "sent")
    await expect(alice.message("Thanks!").locator(".role-badge")).to_be_hidden()
    await alice.page.reload()
    await expect(alice.message("Welcome, I am your host").locator(".role-badge")).to_have_text(
        "Host")
    await expect(alice.message("Thanks!").locator(".role-badge")).to_be_hidden()
