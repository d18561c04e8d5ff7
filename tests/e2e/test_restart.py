"""The server restarts mid-session: pages reconnect with backoff and catch up from their last_seq
— with no gap and no duplicate — and a message written meanwhile is sent once."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, expect

from webinar_chat.store import Store

from ..helpers import RunningServer, World, eventually
from .chat import open_chat, stored


# "socket": the fallback cannot start during the outage, so the missed changes can only come from
# the socket's re-join with last_seq; "any": the default rules (fallback polls may deliver first).
@pytest.mark.parametrize("path", ["socket", "any"])
async def test_server_restart_reconnects_and_catches_up(
        browser: Browser, server: RunningServer, world: World, store: Store,
        http: httpx.AsyncClient, path: str) -> None:
    wid = world.webinar.id
    params = {"fallbackAfterFailures": 100, "silenceMs": 300000} if path == "socket" else {}
    alice = await open_chat(browser, server, world.alice, wid, **params)
    bob = await open_chat(browser, server, world.bob, wid, **params)
    await alice.send("Before the restart")
    await expect(bob.message("Before the restart")).to_have_attribute("data-state", "sent")

    await server.stop()
    for chat in (alice, bob):
        await expect(chat.status).not_to_have_attribute("data-status", "live")
    # While the server is down, the feed moves on (another server process would do this).
    webinar = await store.get_webinar(wid)
    assert webinar is not None
    for text in ("Written while down 1", "Written while down 2"):
        await store.create_message(webinar, world.host.user_id, "Host", text, None,
                                   slow_mode_applies=False)
        webinar = await store.get_webinar(wid)
        assert webinar is not None
    first = (await store.list_messages(wid, limit=10, include_hidden=True)).messages[1]
    await store.set_hidden(first, True)
    if path == "any":
        # The page long-polls as a backup once its socket failed 3 times. With the server down
        # that gets no answer either: "Reconnecting…", never "Live (backup connection)".
        failed_polls: list[str] = []
        alice.page.on("requestfailed", lambda request: failed_polls.append(request.url)
                      if "/changes?" in request.url else None)
        await eventually(lambda: len(failed_polls) >= 2, timeout=15)
        await expect(alice.status).to_have_attribute("data-status", "reconnecting")
        await expect(alice.status).to_have_text("Reconnecting…")
    typed = "Alice typed while the server was down"
    if path == "any":  # (a send would reveal the gap to the other page: not in "socket")
        await alice.send(typed)
        await expect(alice.message(typed)).to_have_attribute("data-state", "pending")

    await server.start()
    for chat in (alice, bob):
        await chat.wait_live()
    # Caught up before anything new happens: the writes of the outage, the hide included.
    for chat in (alice, bob):
        await expect(chat.message("Written while down 2")).to_have_count(1)
        await expect(chat.message("Written while down 1")).to_have_count(0)
        if path == "any":
            await expect(chat.message(typed)).to_have_attribute("data-state", "sent")
    await bob.send("After the restart")
    await expect(bob.message("After the restart")).to_have_attribute("data-state", "sent")
    rows = await stored(http, world.moderator, wid)
    visible = [r for r in rows if not r["hidden"]]
    expected = ["Before the restart", "Written while down 2",
                *([typed] if path == "any" else []), "After the restart"]
    assert [r["content"] for r in visible] == expected
    for chat in (alice, bob):
        await expect(chat.message("After the restart")).to_have_attribute("data-state", "sent")
        timeline = await chat.timeline()
        assert [m["id"] for m in timeline] == [r["id"] for r in visible]
        assert [m["text"] for m in timeline] == expected
        assert chat.errors == []
