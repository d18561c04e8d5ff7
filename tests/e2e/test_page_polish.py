"""The page as a new user meets it (issue #12): a message menu that works by keyboard and touch,
honest connection and sending labels, author groups and day separators, and a layout that fits a
narrow side panel beside the video."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute, expect

import webinar_chat.store.store as store_module
from webinar_chat.store import Store

from ..helpers import RunningServer, World, auth, send
from .chat import REALTIME, ChatPage, open_chat, stored

# Far from UTC, so that a day decided in UTC instead of the viewer's time would show.
ZONE = "Pacific/Auckland"

# The focused element: its accessible label and the message it belongs to.
FOCUSED = """() => {
  const el = document.activeElement;
  const li = el && el.closest('li.msg');
  return {label: el.getAttribute('aria-label') || el.textContent.trim(), role: el.getAttribute('role'),
          message: li ? li.querySelector('.content').textContent : null};
}"""
# WCAG contrast of an element's text against its own background.
CONTRAST = """el => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => {
    const [r, g, b] = rgb(c).map((v) => v / 255)
      .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const s = getComputedStyle(el);
  const [a, b] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""
# The rendered list, separators included: '# <label>' or '<content> <start|cont>'.
LAYOUT = """() => [...document.querySelectorAll('#messages > li')].map((li) =>
  li.classList.contains('day-separator') ? `# ${li.textContent}`
    : `${li.querySelector('.content').textContent} ${li.dataset.group}`)"""
NO_SIDEWAYS_SCROLL = """() => {
  const s = document.scrollingElement;
  const list = document.querySelector('.scroller');
  return {page: [s.scrollWidth, s.clientWidth], list: [list.scrollWidth, list.clientWidth]};
}"""


async def new_context(browser: Browser, width: int = 1000, height: int = 720) -> BrowserContext:
    return await browser.new_context(viewport={"width": width, "height": height}, locale="en-US",
                                     timezone_id=ZONE)


async def focused(page: Page) -> dict[str, Any]:
    return await page.evaluate(FOCUSED)  # type: ignore[no-any-return]


async def tab_to(page: Page, label: str, message: str, limit: int = 25) -> None:
    """Press Tab until the element labelled `label` of `message` has the focus."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        now = await focused(page)
        if now["label"] == label and now["message"] == message:
            return
    raise AssertionError(f"Tab never reached {label!r} of {message!r}")


async def menu_labels(chat: ChatPage) -> list[str]:
    return await chat.page.locator("#message-menu [role=menuitem]").all_inner_texts()


@contextlib.contextmanager
def clock_at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> Iterator[None]:
    """Messages stored meanwhile get `created_at` = `when` (the server runs in this process)."""
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "now_utc", lambda: when.astimezone(UTC))
        yield


async def post(http: httpx.AsyncClient, person: Any, webinar_id: int, text: str) -> int:
    r = await send(http, person, webinar_id, text)
    assert r.status_code == 200, r.text
    return int(r.json()["message"]["id"])


async def test_message_menu_works_by_keyboard_only(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    await post(http, world.alice, wid, "First question")
    await post(http, world.alice, wid, "Second question")
    host = await open_chat(browser, server, world.host, wid, context=await new_context(browser))
    page = host.page
    first = host.message("First question")
    button = first.get_by_role("button", name="Message actions")
    # Visible without hovering, and announced as a menu button.
    await expect(button).to_be_visible()
    await expect(button).to_have_attribute("aria-haspopup", "menu")
    await expect(button).to_have_attribute("aria-expanded", "false")

    # Tab reaches it (from the top of the page: the title sets the starting point).
    await page.locator(".chat-title").click()
    await tab_to(page, "Message actions", "First question")
    menu = page.get_by_role("menu", name="Message actions")
    await expect(menu).to_be_hidden()

    # Enter opens it on the first item; the arrows (wrapping), Home and End move.
    await page.keyboard.press("Enter")
    await expect(menu).to_be_visible()
    await expect(button).to_have_attribute("aria-expanded", "true")
    # (an attendee's message: staff may also time its author out or ban them)
    assert await menu_labels(host) == ["Hide", "Delete", "Time out…", "Ban"]
    assert await focused(page) == {"label": "Hide", "role": "menuitem",
                                   "message": "First question"}
    for key, expected in (("ArrowDown", "Delete"), ("ArrowDown", "Time out…"),
                          ("ArrowDown", "Ban"), ("ArrowDown", "Hide"), ("ArrowUp", "Ban"),
                          ("Home", "Hide"), ("End", "Ban")):
        await page.keyboard.press(key)
        assert (await focused(page))["label"] == expected, key
    # Escape closes it and gives the focus back to its button.
    await page.keyboard.press("Escape")
    await expect(menu).to_be_hidden()
    await expect(button).to_have_attribute("aria-expanded", "false")
    await expect(button).to_be_focused()

    # Space opens it too; Enter on Hide hides the message, the focus stays on the button.
    await page.keyboard.press(" ")
    await expect(menu).to_be_visible()
    await page.keyboard.press("Enter")
    await expect(first).to_have_attribute("data-hidden", "true")
    await expect(menu).to_be_hidden()
    await expect(button).to_be_focused()
    rows = await stored(http, world.moderator, wid)
    assert [r["hidden"] for r in rows] == [True, False]

    # ↑ opens on the last item. Delete asks for a confirmation first (the menu stays open).
    await page.keyboard.press("ArrowUp")
    assert await menu_labels(host) == ["Unhide", "Delete", "Time out…", "Ban"]
    assert (await focused(page))["label"] == "Ban"
    await page.keyboard.press("ArrowUp")
    await page.keyboard.press("ArrowUp")
    assert (await focused(page))["label"] == "Delete"
    await page.keyboard.press("Enter")
    confirm = menu.get_by_role("menuitem", name="Confirm delete")
    await expect(confirm).to_be_focused()
    # Readable while focused and while hovered (it used to be white on pale red under hover).
    assert await confirm.evaluate(CONTRAST) >= 4.5
    await confirm.hover()
    assert await confirm.evaluate(CONTRAST) >= 4.5
    await page.keyboard.press("Enter")
    await expect(first).to_have_count(0)
    assert [r["content"] for r in await stored(http, world.moderator, wid)] == ["Second question"]
    # The focus went to the next message's menu button, not to the page's body.
    assert await focused(page) == {"label": "Message actions", "role": None,
                                   "message": "Second question"}

    # A click or tap elsewhere closes an open menu.
    second = host.message("Second question")
    await second.get_by_role("button", name="Message actions").click()
    await expect(menu).to_be_visible()
    await page.locator(".chat-title").click()
    await expect(menu).to_be_hidden()
    assert host.errors == []


async def test_an_author_can_delete_their_own_message_from_the_menu(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    await post(http, world.bob, wid, "Bob's message")
    alice = await open_chat(browser, server, world.alice, wid, context=await new_context(browser))
    await alice.send("Oops, wrong chat")
    mine = alice.message("Oops, wrong chat")
    await expect(mine).to_have_attribute("data-state", "sent")
    # Nothing to do with somebody else's message: no menu button at all.
    await expect(alice.message("Bob's message").get_by_role(
        "button", name="Message actions")).to_have_count(0)
    await mine.get_by_role("button", name="Message actions").click()
    assert await menu_labels(alice) == ["Delete"]
    await alice.page.get_by_role("menuitem", name="Delete").click()
    await alice.page.get_by_role("menuitem", name="Confirm delete").click()
    await expect(mine).to_have_count(0)
    assert [r["content"] for r in await stored(http, world.moderator, wid)] == ["Bob's message"]
    assert alice.errors == []


async def test_the_status_says_connecting_until_the_first_connection(
        browser: Browser, server: RunningServer, world: World) -> None:
    context = await new_context(browser)
    mode = {"socket": "refused"}
    routes: list[WebSocketRoute] = []

    async def handler(ws: WebSocketRoute) -> None:
        routes.append(ws)
        if mode["socket"] == "refused":
            await ws.close(code=1011, reason="not yet")
        else:
            ws.connect_to_server()

    await context.route_web_socket(REALTIME, handler)
    # No switch to long-polling here: this is about the words of the first connection.
    alice = await open_chat(browser, server, world.alice, world.webinar.id, context=context,
                            live=False, fallbackAfterFailures=100, silenceMs=60000)
    await expect(alice.status).to_have_attribute("data-status", "connecting")
    await expect(alice.status).to_have_text("Connecting…")
    while len(routes) < 3:  # failed attempts before any success are still "connecting"
        await alice.page.wait_for_timeout(50)
    await expect(alice.status).to_have_text("Connecting…")

    mode["socket"] = "open"
    await expect(alice.status).to_have_text("Live")
    # Only a connection that was there and got lost is "reconnecting".
    mode["socket"] = "refused"
    await routes[-1].close(code=1012, reason="restart")
    await expect(alice.status).to_have_attribute("data-status", "reconnecting")
    await expect(alice.status).to_have_text("Reconnecting…")
    assert alice.errors == []


async def test_an_offline_message_waits_for_the_network(
        browser: Browser, server: RunningServer, world: World) -> None:
    alice = await open_chat(browser, server, world.alice, world.webinar.id,
                            context=await new_context(browser))
    await alice.context.set_offline(True)
    await expect(alice.status).to_have_attribute("data-status", "offline")
    await alice.send("Written in the tunnel")
    message = alice.message("Written in the tunnel")
    await expect(message).to_have_attribute("data-state", "pending")
    await expect(message.locator(".msg-state")).to_have_text("Waiting for network…")
    await alice.context.set_offline(False)
    await expect(message).to_have_attribute("data-state", "sent")
    await expect(message.locator(".msg-state")).to_have_text("")


async def test_author_groups_and_day_separators(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wid = world.webinar.id
    zone = ZoneInfo(ZONE)
    today = datetime.now(zone).date()

    def local(days_ago: int, hour: int, minute: int) -> datetime:
        day = today - timedelta(days=days_ago)
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)

    # 00:30 in Auckland is the day before in UTC: only a local-time decision gets this right.
    for when, person, text in ((local(2, 0, 30), world.alice, "Early bird"),
                               (local(2, 0, 32), world.alice, "Still early"),
                               (local(1, 12, 0), world.bob, "Yesterday noon"),
                               (local(1, 23, 59), world.alice, "Before midnight")):
        with clock_at(monkeypatch, when):
            await post(http, person, wid, text)
    first_today = await post(http, world.alice, wid, "Today one")
    interjection = await post(http, world.bob, wid, "Interjection")
    await post(http, world.alice, wid, "Today two")

    two_days_ago = today - timedelta(days=2)
    date_label = f"{two_days_ago:%A}, {two_days_ago:%B} {two_days_ago.day}"
    if two_days_ago.year != today.year:
        date_label += f", {two_days_ago.year}"
    alice = await open_chat(browser, server, world.alice, wid, context=await new_context(browser))
    page = alice.page
    assert await page.evaluate(LAYOUT) == [
        f"# {date_label}", "Early bird start", "Still early cont",
        "# Yesterday", "Yesterday noon start", "Before midnight start",
        "# Today", "Today one start", "Interjection start", "Today two start"]
    # A follow-up shows no name and no avatar (the name is kept for screen readers only).
    follow_up = alice.message("Still early")
    await expect(follow_up.locator(".avatar")).to_be_hidden()
    assert await follow_up.locator(".author").evaluate("el => el.getBoundingClientRect().width") <= 1
    await expect(alice.message("Early bird").locator(".author")).to_have_text("Alice (you)")

    # The message between Alice's two is hidden by a moderator: for attendees they become one
    # group (live, through the change feed) …
    r = await http.post(f"/api/messages/{interjection}/hide", json={"hidden": True},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    await expect(alice.message("Today two")).to_have_attribute("data-group", "cont")
    # … and two again when it comes back.
    r = await http.post(f"/api/messages/{interjection}/hide", json={"hidden": False},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    await expect(alice.message("Today two")).to_have_attribute("data-group", "start")
    # The first message of today is deleted: "Today" moves to the next one.
    r = await http.delete(f"/api/messages/{first_today}", headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    await expect(alice.message("Today one")).to_have_count(0)
    layout = await page.evaluate(LAYOUT)
    assert layout[-3:] == ["# Today", "Interjection start", "Today two start"]
    # A new message of the same author right after is grouped, name shown once.
    await alice.send("Today three")
    await expect(alice.message("Today three")).to_have_attribute("data-state", "sent")
    await expect(alice.message("Today three")).to_have_attribute("data-group", "cont")
    assert alice.errors == []


LONG_TITLE = ("Quarterly all-hands update with the leadership team: roadmap, hiring, "
              "and questions from everyone")


@pytest.mark.parametrize("width", [320, 360, 400])
async def test_a_narrow_side_panel_shows_everything_without_sideways_scrolling(
        browser: Browser, server: RunningServer, world: World, http: httpx.AsyncClient,
        store: Store, width: int) -> None:
    webinar = await store.create_webinar(world.webinar.client_id, LONG_TITLE)
    for person, role in ((world.host, "host"), (world.alice, "attendee")):
        await store.register(webinar.id, person.user_id, role)
    await post(http, world.alice, webinar.id, "A question with a longwordthatdoesnotbreak" * 3)
    await post(http, world.alice, webinar.id, "And another one")
    context = await new_context(browser, width=width, height=740)
    host = await open_chat(browser, server, world.host, webinar.id, context=context)
    page = host.page
    await host.send("Welcome everyone!")
    await expect(host.message("Welcome everyone!")).to_have_attribute("data-state", "sent")

    async def inside(locator: Any) -> None:
        await expect(locator).to_be_visible()
        box = await locator.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, box

    title = page.locator(".chat-title")
    await expect(title).to_have_attribute("title", LONG_TITLE)
    await inside(title)
    who = page.locator(".who")
    await expect(who).to_contain_text(world.host.display_name)
    await inside(who)
    await inside(page.get_by_role("button", name="Log out"))
    await inside(host.status)
    # presence: the icon and the number (the word goes at this width; the label stays whole)
    await expect(page.get_by_role("img", name="1 person online")).to_have_text(
        "1" if width <= 420 else "1 online", use_inner_text=True)
    await inside(page.locator("#presence"))
    await inside(host.input)
    await inside(page.locator("#send-button"))
    extent = await page.evaluate(NO_SIDEWAYS_SCROLL)
    assert extent["page"][0] <= extent["page"][1], extent
    assert extent["list"][0] <= extent["list"][1], extent

    # The menu of the last message fits on screen, and still nothing scrolls sideways.
    last = host.message("Welcome everyone!")
    await last.get_by_role("button", name="Message actions").click()
    for item in ("Hide", "Delete"):
        await inside(page.get_by_role("menuitem", name=item))
    extent = await page.evaluate(NO_SIDEWAYS_SCROLL)
    assert extent["page"][0] <= extent["page"][1], extent
    assert extent["list"][0] <= extent["list"][1], extent
    assert host.errors == []


async def test_screenshots(browser: Browser, server: RunningServer, world: World,
                           http: httpx.AsyncClient, store: Store, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Pictures to look at — host and attendee at 1280 and 360 px, offline, a long title at 320
    and 400 px — into $SCREENSHOTS_DIR (else the test's own directory), through a path a person
    takes: hide, the delete menu, a send while offline that goes out when back online."""
    out = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    os.makedirs(out, exist_ok=True)
    wid = world.webinar.id
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with clock_at(monkeypatch, yesterday):
        await post(http, world.alice, wid, "Hi all, is the recording going to be shared?")
        await post(http, world.alice, wid, "Asking for a colleague who could not make it.")
        await post(http, world.bob, wid, "Same question here")
    await post(http, world.host, wid, "Yes — we'll send the link after the session.")
    spam = await post(http, world.bob, wid, "Buy cheap watches at spam.example")
    await post(http, world.alice, wid, "Thanks! Will the slides be included as well?")
    await post(http, world.alice, wid, "And is there a Q&A at the end?")
    r = await http.post(f"/api/messages/{spam}/hide", json={"hidden": True},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200
    r = await http.put(f"/api/webinars/{wid}/pin", headers=auth(world.host.token),
                       json={"content": "Slides and recording will be mailed after the session."})
    assert r.status_code == 200
    for width in (1280, 360):
        for name, person in (("host", world.host), ("attendee", world.alice)):
            context = await new_context(browser, width=width, height=800 if width > 400 else 740)
            chat = await open_chat(browser, server, person, wid, context=context)
            await chat.page.screenshot(path=str(out / f"{name}-{width}.png"))
            if name == "host":
                await chat.page.locator(".settings-button").click()
                await expect(chat.page.locator("#chat-settings")).to_be_visible()
                await chat.page.screenshot(path=str(out / f"{name}-{width}-settings.png"))
                await chat.page.locator(".settings-button").click()
                last = chat.message("Q&A at the end")
                await last.get_by_role("button", name="Message actions").click()
                await chat.page.get_by_role("menuitem", name="Delete").click()
                await chat.page.get_by_role("menuitem", name="Confirm delete").hover()
                await chat.page.screenshot(path=str(out / f"{name}-{width}-menu.png"))
            if name == "attendee":
                await chat.context.set_offline(True)
                await chat.send(f"Sent from the train ({width} px)")
                await expect(chat.message(f"Sent from the train ({width} px)")).to_have_attribute(
                    "data-state", "pending")
                await chat.page.screenshot(path=str(out / f"{name}-{width}-offline.png"))
                await chat.context.set_offline(False)
                await expect(chat.message(f"Sent from the train ({width} px)")).to_have_attribute(
                    "data-state", "sent")
            await context.close()
    long = await store.create_webinar(world.webinar.client_id, LONG_TITLE)
    await store.register(long.id, world.host.user_id, "host")
    await post(http, world.host, long.id, "Welcome! Questions go here.")
    for width in (320, 400):
        context = await new_context(browser, width=width, height=640)
        chat = await open_chat(browser, server, world.host, long.id, context=context)
        await chat.page.screenshot(path=str(out / f"host-{width}-long-title.png"))
        await context.close()
