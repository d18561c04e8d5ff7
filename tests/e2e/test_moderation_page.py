"""Timeouts from the page (docs/webinar-features.md, "Timeouts and bans"): a host times an
attendee out from the message menu, by keyboard; the attendee sees until when, cannot write, and
is back in by themselves when the timeout is over — without a reload."""

from __future__ import annotations

from datetime import datetime

import httpx
from playwright.async_api import Browser, expect

from ..helpers import RunningServer, World, auth, send
from .chat import open_chat


async def test_a_host_times_out_an_attendee_who_sees_until_when_and_comes_back(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    assert (await send(http, world.bob, wid, "Buy cheap watches")).status_code == 200
    bob = await open_chat(browser, server, world.bob, wid)
    host = await open_chat(browser, server, world.host, wid)
    page = host.page
    spam = host.message("Buy cheap watches")
    button = spam.get_by_role("button", name="Message actions")
    await button.focus()
    await page.keyboard.press("Enter")
    menu = page.get_by_role("menu", name="Message actions")
    items = menu.get_by_role("menuitem")
    await expect(items).to_have_text(["Hide", "Delete", "Time out…", "Ban"])
    await page.keyboard.press("End")
    await page.keyboard.press("ArrowUp")
    await expect(menu.get_by_role("menuitem", name="Time out…")).to_be_focused()
    await page.keyboard.press("Enter")  # the durations, in the same menu, the first focused
    await expect(items).to_have_text(["Time out 10 s", "Time out 1 min", "Time out 5 min",
                                      "Time out 30 min", "Time out 24 h"])
    await expect(menu.get_by_role("menuitem", name="Time out 10 s")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(menu).to_be_hidden()
    await expect(button).to_be_focused()

    # The host's page knows: the menu of bob's message now offers Unban.
    listed = (await http.get(f"/api/webinars/{wid}/bans", headers=auth(world.host.token))).json()
    assert [b["user_id"] for b in listed["bans"]] == [world.bob.user_id]
    until = datetime.fromisoformat(listed["bans"][0]["banned_until"].replace("Z", "+00:00"))
    await page.keyboard.press("Enter")
    await expect(items).to_have_text(["Hide", "Delete", "Unban"])
    await page.keyboard.press("Escape")

    # Bob sees at once why and until when (his page's local time), and cannot write.
    banner = bob.page.locator("#ban-banner")
    shown = await bob.page.evaluate(
        """iso => new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit',
            second: '2-digit', hourCycle: 'h23'}).format(new Date(iso))""",
        until.isoformat())
    await expect(banner).to_be_visible(timeout=3000)
    await expect(banner).to_have_text(f"You are timed out until {shown}.")
    await expect(bob.input).to_be_disabled()
    await expect(bob.page.locator("#chat-root")).to_have_attribute("data-banned", "timed_out")

    # What is said meanwhile does not reach him...
    assert (await send(http, world.alice, wid, "Said during the timeout")).status_code == 200
    await expect(host.message("Said during the timeout")).to_be_visible()
    await expect(bob.message("Said during the timeout")).to_have_count(0)

    # ...until the timeout ends: back in by himself (no reload), with what he missed.
    await expect(banner).to_be_hidden(timeout=15_000)
    await expect(bob.input).to_be_enabled()
    await expect(bob.message("Said during the timeout")).to_be_visible(timeout=5000)
    await bob.wait_live()
    await bob.send("Sorry about that")
    await expect(host.message("Sorry about that")).to_be_visible()
    assert bob.errors == [] and host.errors == []
