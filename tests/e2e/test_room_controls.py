"""Host controls in real Chromium (docs/webinar-features.md): the host switches the chat mode,
sets slow mode and pins an announcement from the page; an attendee on the socket and one on the
long-poll fallback follow live, and after a reload they are in exactly the same state."""

from __future__ import annotations

import json
import re

import anyio
import httpx
from playwright.async_api import Browser, expect

from ..helpers import RunningServer, World, auth
from .chat import ChatPage, open_chat
from .test_fallback import block_realtime


async def room_view(chat: ChatPage) -> dict[str, object]:
    root = chat.page.locator("#chat-root")
    pinned = chat.page.locator("#pinned")
    return {
        "mode": await root.get_attribute("data-chat-mode"),
        "pinned": await pinned.locator(".pinned-text").text_content()
        if await pinned.is_visible() else None,
        "can_post": await chat.input.is_enabled(),
        "placeholder": await chat.input.get_attribute("placeholder"),
        "messages": [m["text"] for m in await chat.timeline()],
    }


async def test_host_controls_reach_socket_and_fallback_viewers_and_survive_a_reload(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    host = await open_chat(browser, server, world.host, wid)
    alice = await open_chat(browser, server, world.alice, wid)
    behind_proxy = await browser.new_context(viewport={"width": 380, "height": 720})
    await block_realtime(behind_proxy, "refused")
    bob = await open_chat(browser, server, world.bob, wid, context=behind_proxy, live=False)
    await expect(bob.status).to_have_attribute("data-status", "fallback")
    attendees = (alice, bob)
    # Attendees have no settings; the host's panel opens from the header.
    for chat in attendees:
        await expect(chat.page.locator(".settings-button")).to_be_hidden()
    await host.page.locator(".settings-button").click()
    await expect(host.page.locator("#chat-settings")).to_be_visible()

    # Messages to hosts only: said to attendees at once, and their messages stay private.
    await host.page.select_option("#chat-mode", "hosts_only")
    for chat in attendees:
        await expect(chat.page.locator("#chat-root")).to_have_attribute("data-chat-mode",
                                                                        "hosts_only")
        await expect(chat.page.locator("#notice-banner")).to_contain_text(
            "seen by the hosts only")
        await expect(chat.input).to_have_attribute("placeholder", re.compile("only they see"))
    await alice.send("A question only for the hosts")
    for chat in (host, alice):
        mine = chat.message("only for the hosts")
        await expect(mine).to_have_attribute("data-state", "sent")
        await expect(mine.locator(".staff-only-badge")).to_be_visible()
    await host.send("A public answer")
    await expect(bob.message("A public answer")).to_have_count(1)
    await expect(bob.message("only for the hosts")).to_have_count(0)

    # The announcement, pinned from the panel, above everyone's list.
    await host.page.fill("#pin-input", "Welcome! Q&A starts at 11:30")
    await host.page.click("#pin-button")
    for chat in (host, alice, bob):
        await expect(chat.page.locator("#pinned .pinned-text")).to_have_text(
            "Welcome! Q&A starts at 11:30")
    await expect(alice.page.locator("#pinned .unpin")).to_be_hidden()

    # Read-only: attendees' composers close, the host's stays.
    await host.page.select_option("#chat-mode", "read_only")
    for chat in attendees:
        await expect(chat.input).to_be_disabled()
        await expect(chat.input).to_have_attribute("placeholder", "Only hosts can post right now")
    await expect(host.input).to_be_enabled()

    # Slow mode: after a send, the attendee's button counts the seconds down.
    await host.page.select_option("#chat-mode", "everyone")
    await host.page.select_option("#slow-mode", "10")
    await expect(alice.page.locator(".chat-subtitle")).to_contain_text("one message every 10 s")
    await expect(alice.input).to_be_enabled()
    await alice.send("Slowly now")
    await expect(alice.message("Slowly now")).to_have_attribute("data-state", "sent")
    await expect(alice.page.locator("#send-button")).to_have_text(re.compile(r"Wait \d+ s"))
    await expect(alice.page.locator("#send-button")).to_be_disabled()

    # Everyone converged on the server's state; a reload (socket or fallback) shows the same.
    state = (await http.get(f"/api/webinars/{wid}", headers=auth(world.bob.token))).json()
    assert state["webinar"]["chat_mode"] == "everyone"
    assert state["webinar"]["pinned"]["content"] == "Welcome! Q&A starts at 11:30"
    for chat in attendees:
        before = await room_view(chat)
        await chat.page.reload()
        await expect(chat.page.locator("#chat-root")).to_have_attribute("data-ready", "1")
        await expect(chat.page.locator("#pinned .pinned-text")).to_have_text(
            "Welcome! Q&A starts at 11:30")
        await expect(chat.page.locator("#messages .msg")).to_have_count(len(before["messages"]))
        after = await room_view(chat)
        assert after == {**before, "can_post": True}, chat.person.display_name
    assert "A question only for the hosts" in (await room_view(alice))["messages"]
    assert "A question only for the hosts" not in (await room_view(bob))["messages"]
    for chat in (host, alice, bob):
        assert chat.errors == []


async def test_staff_download_the_transcript_from_the_page(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    moderator = await open_chat(browser, server, world.moderator, wid)
    await moderator.send("Hello, transcript")
    await expect(moderator.message("Hello, transcript")).to_have_attribute("data-state", "sent")
    await moderator.page.locator(".settings-button").click()
    # Moderators get the announcement and the download, not the host's mode controls.
    await expect(moderator.page.locator("#chat-mode")).to_be_hidden()
    checks = {"csv": lambda text: "Hello, transcript" in text.splitlines()[1],
              "json": lambda text: json.loads(text)["messages"][0]["content"]
              == "Hello, transcript"}
    for fmt, check in checks.items():
        async with moderator.page.expect_download() as info:
            await moderator.page.click(f"#export-{fmt}")
        download = await info.value
        assert download.suggested_filename.endswith(f".{fmt}")
        text = await anyio.Path(await download.path()).read_text(encoding="utf-8-sig")
        assert check(text), fmt
    assert moderator.errors == []
