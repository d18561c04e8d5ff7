"""When the WebSocket is blocked, refused or silent, the page long-polls the change feed:
messages still flow both ways, moderation still reaches everyone, and the status says so."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Request, WebSocketRoute, expect

from ..helpers import RunningServer, World, eventually
from .chat import REALTIME, ChatPage, open_chat, stored


async def block_realtime(context: BrowserContext, mode: str) -> list[WebSocketRoute]:
    """Every socket of `context` to /realtime never reaches the server: `refused` closes it at
    once (a proxy that rejects the upgrade); `silent` leaves it open and swallows every frame
    (a proxy or extension that black-holes it)."""
    attempts: list[WebSocketRoute] = []

    async def handler(ws: WebSocketRoute) -> None:
        attempts.append(ws)
        if mode == "refused":
            await ws.close(code=1011, reason="blocked by proxy")

    await context.route_web_socket(REALTIME, handler)
    return attempts


async def no_message_stuck(chat: ChatPage) -> None:
    await expect(chat.page.locator("#messages .msg[data-state='sending']")).to_have_count(0)
    await expect(chat.page.locator("#messages .msg[data-state='pending']")).to_have_count(0)


@pytest.mark.parametrize("mode", ["refused", "silent"])
async def test_blocked_socket_falls_back_to_long_polling(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient,
        mode: str) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    context = await browser.new_context()
    attempts = await block_realtime(context, mode)
    metrics: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/api/metrics/events"):
            metrics.append(request.post_data_json)

    context.on("request", on_request)
    # The first batch of monitoring events leaves 1.5 s after the first event: after the switch.
    bob = await open_chat(browser, server, world.bob, wid, context=context, live=False,
                          metricsFlushMs=1500)
    await expect(bob.status).to_have_attribute("data-status", "fallback")
    # Said in words a person understands; the technical word stays in the tooltip.
    await expect(bob.status).to_have_text("Live (backup connection)")
    await expect(bob.status).to_have_attribute("title", re.compile("fallback"))

    await bob.send("Sent from behind the proxy")
    await expect(alice.message("Sent from behind the proxy")).to_have_attribute(
        "data-state", "sent")
    await expect(bob.message("Sent from behind the proxy")).to_have_attribute(
        "data-state", "sent")
    await alice.send("Received behind the proxy")
    await expect(bob.message("Received behind the proxy")).to_have_attribute(
        "data-state", "sent")
    await no_message_stuck(bob)
    assert [m["id"] for m in await bob.timeline()] == [
        r["id"] for r in await stored(http, world.moderator, wid)]
    # The socket is still being retried in the background …
    assert len(attempts) >= (3 if mode == "refused" else 1)
    # … and the switch was reported to the monitoring route, once: later batches (reconnect
    # attempts) may follow, but none repeats it.
    await eventually(lambda: len(metrics) >= 1, message="no monitoring batch was sent")
    tries = len(attempts)
    more = 2 if mode == "refused" else 1  # a silent socket takes silenceMs to be given up
    await eventually(lambda: len(attempts) >= tries + more, timeout=8,
                     message="socket not retried")
    await expect(bob.status).to_have_attribute("data-status", "fallback")
    events = [e for batch in metrics for e in batch["events"]]
    switches = [e for e in events if e["type"] == "fallback_activated"]
    assert len(switches) == 1, events
    event = switches[0]
    assert event["webinarId"] == wid and event["userId"] == world.bob.user_id
    assert event["metadata"]["reason"] == ("socket_failures" if mode == "refused" else "silence")
    assert bob.errors == []


async def test_fallback_turns_off_when_the_socket_recovers(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    context = await browser.new_context()
    await block_realtime(context, "refused")
    bob = await open_chat(browser, server, world.bob, wid, context=context, live=False)
    await expect(bob.status).to_have_attribute("data-status", "fallback")
    await alice.send("while bob polls")
    await expect(bob.message("while bob polls")).to_be_visible()

    await context.unroute_all()
    await context.route_web_socket(REALTIME, lambda ws: ws.connect_to_server())
    await expect(bob.status).to_have_attribute("data-status", "live")
    # The socket joined with Bob's last_seq: no replay duplicates, nothing missed.
    await alice.send("after the socket came back")
    await expect(bob.message("after the socket came back")).to_have_attribute("data-state", "sent")
    rows = await stored(http, world.moderator, wid)
    assert [m["id"] for m in await bob.timeline()] == [r["id"] for r in rows]
    join = json.loads(bob.joins[-1]["frame"])
    assert join["last_seq"] >= 1


async def test_moderation_reaches_socket_and_fallback_attendees(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    moderator = await open_chat(browser, server, world.moderator, wid)
    alice = await open_chat(browser, server, world.alice, wid)
    context = await browser.new_context()
    await block_realtime(context, "refused")
    bob = await open_chat(browser, server, world.bob, wid, context=context, live=False)
    await expect(bob.status).to_have_attribute("data-status", "fallback")

    await alice.send("Buy cheap watches at spam.example")
    await alice.send("A fine question about the roadmap")
    for chat in (moderator, alice, bob):
        await expect(chat.message("cheap watches")).to_have_attribute("data-state", "sent")
        await expect(chat.message("roadmap")).to_have_attribute("data-state", "sent")

    # Hide: gone for attendees (live and polling), kept and marked for the moderator.
    spam = moderator.message("cheap watches")
    actions = spam.get_by_role("button", name="Message actions")
    await actions.click()
    await spam.get_by_role("menuitem", name="Hide").click()
    await expect(spam).to_have_attribute("data-hidden", "true")
    await expect(spam.locator(".hidden-badge")).to_be_visible()
    await expect(alice.message("cheap watches")).to_have_count(0)
    await expect(bob.message("cheap watches")).to_have_count(0)

    # Unhide brings it back everywhere.
    await actions.click()
    await spam.get_by_role("menuitem", name="Unhide").click()
    await expect(alice.message("cheap watches")).to_have_count(1)
    await expect(bob.message("cheap watches")).to_have_count(1)

    # Delete (confirmed inline, no dialog) removes it for everyone.
    await actions.click()
    await spam.get_by_role("menuitem", name="Delete").click()
    await spam.get_by_role("menuitem", name="Confirm delete").click()
    for chat in (moderator, alice, bob):
        await expect(chat.message("cheap watches")).to_have_count(0)
        await expect(chat.message("roadmap")).to_have_count(1)
    assert [m["content"] for m in await stored(http, world.moderator, wid)] == [
        "A fine question about the roadmap"]
    # Attendees get no moderation controls (and no menu on other people's messages).
    await expect(bob.message("roadmap").get_by_role("button", name="Message actions")
                 ).to_have_count(0)
    await alice.message("roadmap").get_by_role("button", name="Message actions").click()
    await expect(alice.page.get_by_role("menuitem")).to_have_text(["Delete"])  # her own
    for chat in (moderator, alice, bob):
        assert chat.errors == []
