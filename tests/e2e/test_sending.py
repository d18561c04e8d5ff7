"""Sends that go wrong: a slow create, a 500, offline, a reload with the message unsent, and a
message that finally fails. Every one ends with the message stored exactly once."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.async_api import Browser, Error, Route, expect

from ..helpers import RunningServer, World, eventually
from .chat import CREATE, REALTIME, open_chat, stored


async def stored_once(http: httpx.AsyncClient, world: World, text: str) -> dict[str, Any]:
    rows = [m for m in await stored(http, world.moderator, world.webinar.id)
            if m["content"] == text]
    assert len(rows) == 1, rows
    return rows[0]


async def test_slow_create_stops_the_indicator_at_the_timeout_then_resolves_once(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    timeout_ms = 1500
    alice = await open_chat(browser, server, world.alice, world.webinar.id,
                            sendTimeoutMs=timeout_ms)
    bodies: list[dict[str, Any]] = []
    late: list[httpx.Response] = []

    async def slow_first_create(route: Route) -> None:
        bodies.append(route.request.post_data_json)
        if len(bodies) > 1:
            await route.continue_()
            return
        # The first attempt is held past the client's timeout, then reaches the server late
        # (as a slow proxy would deliver it): the server stores it while the client retries.
        await eventually(lambda: alice.page.evaluate(
            "window.__states.some(s => s.state === 'pending')"), timeout=15)
        late.append(await http.post("/api/messages/create", content=route.request.post_data,
                                    headers={"Authorization": route.request.headers["authorization"],
                                             "Content-Type": "application/json"}))
        try:
            await route.abort()
        except Error:
            pass  # the page gave up on this request already

    await alice.page.route(CREATE, slow_first_create)
    await alice.send("Sent through a very slow proxy")
    message = alice.message("Sent through a very slow proxy")
    await expect(message).to_have_attribute("data-state", "sent")
    row = await stored_once(http, world, "Sent through a very slow proxy")
    states = await alice.states(row["client_msg_id"])
    assert [s for s, _ in states] == ["sending", "pending", "sent"], states
    # The spinner stopped at the timeout: not before, and not after it.
    spinner_ms = states[1][1] - states[0][1]
    assert timeout_ms - 50 <= spinner_ms <= timeout_ms + 300, spinner_ms
    assert {b["clientMsgId"] for b in bodies} == {row["client_msg_id"]}
    assert late and late[0].status_code in (200, 409)
    assert await message.get_attribute("data-id") == str(row["id"])
    await expect(alice.page.locator("#messages .msg")).to_have_count(1)


async def test_pending_message_is_marked_and_the_sending_indicator_is_gone(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    """While the re-sends go on, the message is shown as pending, never as sending."""
    alice = await open_chat(browser, server, world.alice, world.webinar.id, sendTimeoutMs=800,
                            retryBaseMs=600000)
    hold: list[Route] = []

    async def black_hole(route: Route) -> None:
        hold.append(route)  # never answered: only the client's timeout ends it

    await alice.page.route(CREATE, black_hole)
    await alice.send("Into the void")
    message = alice.message("Into the void")
    await expect(message).to_have_attribute("data-state", "pending")
    await expect(message.locator(".msg-state")).to_have_text("Not sent yet · retrying")
    await expect(alice.page.locator("#messages .msg[data-state='sending']")).to_have_count(0)
    assert await stored(http, world.moderator, world.webinar.id) == []
    await alice.page.unroute(CREATE)


async def test_first_attempt_500_is_retried_with_the_same_id(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    alice = await open_chat(browser, server, world.alice, world.webinar.id)
    bodies: list[dict[str, Any]] = []

    async def fail_first(route: Route) -> None:
        bodies.append(route.request.post_data_json)
        if len(bodies) == 1:
            await route.fulfill(status=500, json={"success": False, "error": "Internal server "
                                                  "error", "code": "internal"})
        else:
            await route.continue_()

    await alice.page.route(CREATE, fail_first)
    await alice.send("Retried after a server error")
    await expect(alice.message("Retried after a server error")).to_have_attribute(
        "data-state", "sent")
    row = await stored_once(http, world, "Retried after a server error")
    assert len(bodies) == 2
    assert bodies[0]["clientMsgId"] == bodies[1]["clientMsgId"] == row["client_msg_id"]


async def test_answer_lost_after_commit_is_reconciled_without_a_duplicate(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    """The server stored the message but its answer became a 500 on the way back; the re-send
    gets 409 with the stored row, which replaces the optimistic message."""
    context = await browser.new_context()
    # No realtime for this page (a silent socket): only the 409 body can resolve the message.
    await context.route_web_socket(REALTIME, lambda ws: None)
    alice = await open_chat(browser, server, world.alice, world.webinar.id, context=context,
                            live=False, silenceMs=30000)
    bodies: list[dict[str, Any]] = []
    statuses: list[int] = []

    async def lose_first_answer(route: Route) -> None:
        bodies.append(route.request.post_data_json)
        response = await route.fetch()
        statuses.append(response.status)
        if len(bodies) == 1:
            await route.fulfill(status=500, json={"success": False, "error": "Bad gateway",
                                                  "code": "internal"})
        else:
            await route.fulfill(response=response)

    await alice.page.route(CREATE, lose_first_answer)
    await alice.send("Stored, but the answer was lost")
    message = alice.message("Stored, but the answer was lost")
    await expect(message).to_have_attribute("data-state", "sent")
    row = await stored_once(http, world, "Stored, but the answer was lost")
    assert {b["clientMsgId"] for b in bodies} == {row["client_msg_id"]}
    assert statuses == [200, 409]
    await expect(alice.page.locator("#messages .msg")).to_have_count(1)
    assert await message.get_attribute("data-id") == str(row["id"])


async def test_offline_send_is_queued_and_sent_once_back_online(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    alice = await open_chat(browser, server, world.alice, wid)
    bob = await open_chat(browser, server, world.bob, wid)
    await alice.context.set_offline(True)
    await expect(alice.status).to_have_attribute("data-status", "offline")
    await expect(alice.status).to_have_text("Offline")
    await alice.send("Written on the train")
    message = alice.message("Written on the train")
    await expect(message).to_have_attribute("data-state", "pending")
    await bob.send("Meanwhile, in the webinar")
    await expect(bob.message("Meanwhile, in the webinar")).to_have_attribute("data-state", "sent")
    assert [m["content"] for m in await stored(http, world.moderator, wid)] == [
        "Meanwhile, in the webinar"]

    await alice.context.set_offline(False)
    await expect(message).to_have_attribute("data-state", "sent")
    await expect(alice.status).to_have_attribute("data-status", "live")
    await expect(alice.message("Meanwhile, in the webinar")).to_have_count(1)
    await expect(bob.message("Written on the train")).to_have_count(1)
    await stored_once(http, world, "Written on the train")
    assert [m["text"] for m in await alice.timeline()] == ["Meanwhile, in the webinar",
                                                            "Written on the train"]


async def test_unsent_message_survives_a_reload_and_is_sent_once(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    # A long retry delay: nothing but the reload can send the message again.
    alice = await open_chat(browser, server, world.alice, world.webinar.id, retryBaseMs=600000)
    blocked = True
    creates: list[dict[str, Any]] = []

    async def network_down(route: Route) -> None:
        creates.append(route.request.post_data_json)
        if blocked:
            await route.abort("internetdisconnected")
        else:
            await route.continue_()

    await alice.context.route(CREATE, network_down)
    await alice.send("Please survive the reload")
    message = alice.message("Please survive the reload")
    await expect(message).to_have_attribute("data-state", "pending")
    outbox = await alice.page.evaluate(
        "Object.keys(localStorage).filter(k => k.startsWith('webinar-chat:outbox'))"
        ".map(k => localStorage.getItem(k)).join('')")
    assert "Please survive the reload" in outbox
    assert await stored(http, world.moderator, world.webinar.id) == []

    blocked = False
    await alice.page.reload()
    await expect(alice.page.locator("#chat-root")).to_have_attribute("data-ready", "1")
    await expect(message).to_have_attribute("data-state", "sent")
    row = await stored_once(http, world, "Please survive the reload")
    assert {c["clientMsgId"] for c in creates} == {row["client_msg_id"]}
    await eventually(lambda: alice.page.evaluate(
        "!Object.keys(localStorage).some(k => k.startsWith('webinar-chat:outbox'))"),
        message="outbox not emptied")
    # A second reload sends nothing again.
    sent_before = len(creates)
    await alice.page.reload()
    await expect(alice.message("Please survive the reload")).to_have_attribute("data-state", "sent")
    await alice.wait_live()
    assert len(creates) == sent_before
    await stored_once(http, world, "Please survive the reload")


async def test_message_that_keeps_failing_is_marked_failed_and_can_be_retried(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    alice = await open_chat(browser, server, world.alice, world.webinar.id, maxSendAttempts=3)
    failing = True
    attempts: list[str] = []

    async def server_broken(route: Route) -> None:
        attempts.append(route.request.post_data_json["clientMsgId"])
        if failing:
            await route.fulfill(status=503, json={"success": False, "error": "Unavailable",
                                                  "code": "unavailable"})
        else:
            await route.continue_()

    await alice.page.route(CREATE, server_broken)
    await alice.send("Persistent message")
    message = alice.message("Persistent message")
    await expect(message).to_have_attribute("data-state", "failed")
    await expect(message.locator(".msg-state")).to_have_text("Not sent")
    assert len(attempts) == 3 and len(set(attempts)) == 1
    failing = False
    await message.get_by_role("button", name="Retry").click()
    await expect(message).to_have_attribute("data-state", "sent")
    row = await stored_once(http, world, "Persistent message")
    assert set(attempts) == {row["client_msg_id"]}

    # Discard drops an unsent message for good.
    failing = True
    await alice.send("Never mind")
    await expect(alice.message("Never mind")).to_have_attribute("data-state", "failed")
    await alice.message("Never mind").get_by_role("button", name="Discard").click()
    await expect(alice.message("Never mind")).to_have_count(0)
    await alice.page.reload()
    await expect(alice.page.locator("#chat-root")).to_have_attribute("data-ready", "1")
    await expect(alice.message("Never mind")).to_have_count(0)
    await expect(alice.message("Persistent message")).to_have_count(1)
