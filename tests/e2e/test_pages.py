"""The pages and their files: served with a strict Content-Security-Policy (no inline script,
connections only to this origin and its own socket) and the other security headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from webinar_chat.server.pages import content_security_policy
from webinar_chat.settings import Settings

from ..helpers import PASSWORD, RunningServer, World
from ..helpers import test_settings as settings_for  # (not collected as a test)
from .chat import open_chat


@pytest.mark.parametrize("path", ["/", "/webinars/1", "/static/chat-client.js",
                                  "/static/style.css"])
async def test_security_headers(http: httpx.AsyncClient, server: RunningServer,
                                path: str) -> None:
    r = await http.get(path)
    assert r.status_code == 200
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    # no PUBLIC_URL configured: this origin only ('self' covers its ws:/wss: in CSP Level 3)
    assert csp["connect-src"] == "'self'"
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_pages_have_no_inline_script(http: httpx.AsyncClient) -> None:
    for path in ("/", "/webinars/7"):
        html = (await http.get(path)).text
        assert html.count("<script") == html.count('<script type="module" src="/static/')
        assert " on" not in html.replace("<noscript>", "").split("<body", 1)[1].split("=")[0]
    js = await http.get("/static/chat-core.js")
    assert js.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("path", ["/static/../server/pages.py", "/static/%2e%2e/cli.py",
                                  "/static/nope.js", "/static/", "/webinars/abc"])
async def test_nothing_else_is_served(http: httpx.AsyncClient, path: str) -> None:
    r = await http.get(path)
    assert r.status_code == 404
    assert r.json()["success"] is False


async def test_a_forged_host_header_is_kept_out_of_the_policy(http: httpx.AsyncClient) -> None:
    for host in ("evil.example; script-src *", "evil.example"):
        r = await http.get("/", headers={"host": host})
        assert "evil" not in r.headers["content-security-policy"]


def test_the_realtime_origin_comes_from_public_url_https_only_outside_development() -> None:
    def policy(**settings: Any) -> dict[str, str]:
        text = content_security_policy(Settings(**settings))
        return dict(part.strip().split(" ", 1) for part in text.split(";"))

    assert policy(public_url="https://chat.example.com")["connect-src"] == \
        "'self' wss://chat.example.com"
    assert policy(public_url="https://chat.example.com:8443")["connect-src"] == \
        "'self' wss://chat.example.com:8443"
    assert policy(public_url="http://localhost:8000", development=True)["connect-src"] == \
        "'self' ws://localhost:8000"
    for bad in ("http://chat.example.com", "ftp://x", "https://", "https://x/path", "x"):
        with pytest.raises(ValueError, match="PUBLIC_URL"):
            policy(public_url=bad)
    embed = policy(frame_ancestors="'self' https://webinars.example.com")
    assert embed["frame-ancestors"] == "'self' https://webinars.example.com"
    for bad in ("*", "http://plain.example", "'none' https://x.example", "javascript:x"):
        with pytest.raises(ValueError, match="FRAME_ANCESTORS"):
            policy(frame_ancestors=bad)


async def test_an_embeddable_chat_drops_x_frame_options(database_url: str, world: World) -> None:
    settings = settings_for(database_url, public_url="https://chat.example.com",
                             frame_ancestors="https://webinars.example.com")
    server = RunningServer(settings)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.get("/webinars/1")
        assert "frame-ancestors https://webinars.example.com" in r.headers["content-security-policy"]
        assert "connect-src 'self' wss://chat.example.com" in r.headers["content-security-policy"]
        assert "x-frame-options" not in r.headers
    finally:
        await server.stop()


async def test_the_policy_holds_in_the_browser(browser: Browser, server: RunningServer,
                                              world: World) -> None:
    """The running page breaks no rule of its own policy (no inline script or style)."""
    context = await browser.new_context()
    page = await context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    await page.goto(server.base_url + "/")
    chat = await open_chat(browser, server, world.alice, world.webinar.id, context=context)
    await chat.send("checking the policy")
    await chat.page.reload()
    await chat.wait_live()
    assert violations == []


async def test_log_in_flow(browser: Browser, server: RunningServer, world: World) -> None:
    """A visitor without a session is sent to log in and comes back to the chat afterwards; a
    wrong password is said inline."""
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{server.base_url}/webinars/{world.webinar.id}")
    await expect(page).to_have_url(f"{server.base_url}/?next=%2Fwebinars%2F{world.webinar.id}")
    await page.fill("#email", world.bob.email)
    await page.fill("#password", "not the password")
    await page.click("#login-button")
    await expect(page.locator("#login-error")).to_have_text("Wrong e-mail or password.")
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await expect(page).to_have_url(f"{server.base_url}/webinars/{world.webinar.id}")
    await expect(page.locator("#status")).to_have_attribute("data-status", "live")
    await expect(page.locator(".chat-title")).to_have_text(world.webinar.title)
    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#email")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('webinar-chat:session')") is None
