"""Driving the chat page: log in through the real log-in page, read the rendered timeline, and
look at what the server stored."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from playwright.async_api import Browser, BrowserContext, Page, expect

from ..helpers import PASSWORD, Person, RunningServer, auth

# Shortened timings (the page reads them from its URL, chat-core.js readConfig) so that every
# failure path plays out in a second or two instead of tens of seconds.
FAST: dict[str, int] = {
    "silenceMs": 2000,
    "heartbeatMs": 1000,
    "reconnectBaseMs": 100,
    "reconnectCapMs": 800,
    "pollRetryMs": 300,
    "pollJitterMs": 100,
    "pollWaitS": 5,
    "retryBaseMs": 200,
    "retryCapMs": 800,
    "sendTimeoutMs": 4000,
}
REALTIME = re.compile(r"/realtime(\?.*)?$")
# Records every state a message element goes through, with the page's clock: transitions too
# short for polling assertions (a pending that lasts 200 ms) are still seen.
STATE_RECORDER = """
window.__states = [];
new MutationObserver((mutations) => {
  const record = (li) => window.__states.push(
    {cmid: li.dataset.clientMsgId, state: li.dataset.state, t: performance.now()});
  for (const m of mutations) {
    if (m.type === 'attributes' && m.target.matches && m.target.matches('li.msg')) record(m.target);
    if (m.type === 'childList') {
      for (const n of m.addedNodes) if (n.matches && n.matches('li.msg')) record(n);
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true,
                      attributeFilter: ['data-state']});
"""
CREATE = "**/api/messages/create"


@dataclass
class ChatPage:
    context: BrowserContext
    page: Page
    person: Person
    errors: list[str] = field(default_factory=list)
    joins: list[dict[str, Any]] = field(default_factory=list)
    frames_sent: list[str] = field(default_factory=list)

    @property
    def status(self) -> Any:
        return self.page.locator("#status")

    @property
    def input(self) -> Any:
        return self.page.locator("#message-input")

    def message(self, text: str) -> Any:
        return self.page.locator("#messages .msg").filter(
            has=self.page.locator(".content", has_text=text))

    async def send(self, text: str) -> None:
        await self.input.fill(text)
        await self.input.press("Enter")

    async def timeline(self) -> list[dict[str, Any]]:
        """The rendered messages in order: id (None while unsent), state, text."""
        return await self.page.eval_on_selector_all(  # type: ignore[no-any-return]
            "#messages .msg",
            """els => els.map(li => ({id: li.dataset.id ? Number(li.dataset.id) : null,
                state: li.dataset.state, text: li.querySelector('.content').textContent,
                cmid: li.dataset.clientMsgId || null}))""")

    async def states(self, client_msg_id: str | None = None) -> list[tuple[str, float]]:
        """[(state, page time in ms)] of one message (or all), consecutive repeats merged."""
        log = await self.page.evaluate("window.__states || []")
        out: list[tuple[str, float]] = []
        for entry in log:
            if client_msg_id is not None and entry["cmid"] != client_msg_id:
                continue
            if not out or out[-1][0] != entry["state"]:
                out.append((entry["state"], entry["t"]))
        return out

    async def wait_live(self) -> None:
        await expect(self.status).to_have_attribute("data-status", "live")


def chat_path(webinar_id: int, **params: Any) -> str:
    query = urlencode({**FAST, **params})
    return f"/webinars/{webinar_id}?{query}"


async def open_chat(browser: Browser, server: RunningServer, person: Person, webinar_id: int,
                    *, context: BrowserContext | None = None, live: bool = True,
                    **params: Any) -> ChatPage:
    """Log `person` in through the log-in page and land on the chat (own browser context unless
    `context` is given)."""
    context = context or await browser.new_context(viewport={"width": 1000, "height": 720})
    page = await context.new_page()
    await page.add_init_script(STATE_RECORDER)
    chat = ChatPage(context, page, person)
    page.on("pageerror", lambda exc: chat.errors.append(str(exc)))

    def on_socket(ws: Any) -> None:
        def sent(payload: str | bytes) -> None:
            if isinstance(payload, str):
                chat.frames_sent.append(payload)
                if '"join"' in payload:
                    chat.joins.append({"url": ws.url, "frame": payload})
        ws.on("framesent", sent)

    page.on("websocket", on_socket)
    await page.goto(f"{server.base_url}/?next={quote(chat_path(webinar_id, **params), safe='')}")
    await page.fill("#email", person.email)
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#chat-root")).to_have_attribute("data-ready", "1")
    if live:
        await chat.wait_live()
    return chat


async def stored(http: httpx.AsyncClient, staff: Person, webinar_id: int) -> list[dict[str, Any]]:
    """Every message the server has for the webinar (as a moderator sees them, hidden included)."""
    r = await http.get(f"/api/webinars/{webinar_id}/messages?limit=500", headers=auth(staff.token))
    assert r.status_code == 200, r.text
    return r.json()["messages"]  # type: ignore[no-any-return]


async def stored_texts(http: httpx.AsyncClient, staff: Person, webinar_id: int) -> list[str]:
    return [m["content"] for m in await stored(http, staff, webinar_id)]
