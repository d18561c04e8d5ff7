"""A page written the seed's way (supabase-js from its UMD bundle, `setAuth(token)`, a
`postgres_changes` subscription with INSERT / UPDATE / DELETE handlers) in real Chromium, pointed
at webinar-chat instead of Supabase (docs/supabase.md): it subscribes, shows messages live, and a
hidden message leaves the attendee's list and comes back when unhidden."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from ..helpers import RunningServer, World, auth, free_port, new_id, send

ROOT = Path(__file__).resolve().parents[2]
UMD = ROOT / "tests" / "clients" / "js" / "node_modules" / "@supabase" / "supabase-js" / "dist" \
    / "umd" / "supabase.js"

# The seed's chat page, reduced to its realtime part.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="supabase.js"></script></head>
<body><p id="status">…</p><ul id="list"></ul>
<script>
const params = new URLSearchParams(location.search);
const webinarId = params.get('webinar');
const client = window.supabase.createClient(params.get('url'), 'anon-key');
const list = document.getElementById('list');
function show(m) {
  if (m.hidden || list.querySelector(`[data-id="${m.id}"]`)) return;
  const li = document.createElement('li');
  li.dataset.id = m.id;
  li.textContent = m.content;
  list.append(li);
}
function drop(id) { list.querySelector(`[data-id="${id}"]`)?.remove(); }
(async () => {
  await client.realtime.setAuth(params.get('token'));
  client.channel('webinar:' + webinarId + ':messages')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'messages',
      filter: 'webinar_id=eq.' + webinarId }, (payload) => {
      if (payload.eventType === 'INSERT') show(payload.new);
      else if (payload.eventType === 'UPDATE') payload.new.hidden ? drop(payload.new.id)
        : show(payload.new);
      else if (payload.eventType === 'DELETE') drop(payload.old.id);
    })
    .subscribe((status, err) => {
      document.getElementById('status').textContent = status + (err ? ': ' + err.message : '');
    });
})();
</script></body></html>
"""


@pytest.fixture
def page_site(tmp_path: Path) -> Iterator[str]:
    """The page and the bundle, served from their own origin (a real cross-origin embed)."""
    if not UMD.exists():
        pytest.fail("supabase-js missing: run scripts/install-client-tests")
    (tmp_path / "index.html").write_text(PAGE)
    shutil.copy(UMD, tmp_path / "supabase.js")
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        with contextlib.suppress(Exception):
            httpd.server_close()


@pytest.fixture
def server_overrides(page_site: str) -> dict[str, Any]:
    return {"heartbeat_interval_s": 0.5, "realtime_allowed_origins": (page_site,)}


async def test_a_seed_style_page_follows_the_chat(browser: Browser, server: RunningServer,
                                                  world: World, http: httpx.AsyncClient,
                                                  page_site: str) -> None:
    wid = world.webinar.id
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    query = httpx.QueryParams(url=server.base_url, token=world.alice.token, webinar=str(wid))
    await page.goto(f"{page_site}/index.html?{query}")
    await expect(page.locator("#status")).to_have_text("SUBSCRIBED")
    assert errors == []

    first = (await send(http, world.host, wid, "Welcome to the webinar", new_id())).json()
    await send(http, world.bob, wid, "Glad to be here", new_id())
    items = page.locator("#list li")
    await expect(items).to_have_text(["Welcome to the webinar", "Glad to be here"])

    message_id = first["message"]["id"]
    r = await http.post(f"/api/messages/{message_id}/hide", json={"hidden": True},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    await expect(items).to_have_text(["Glad to be here"])
    r = await http.post(f"/api/messages/{message_id}/hide", json={"hidden": False},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text
    await expect(items).to_have_text(["Glad to be here", "Welcome to the webinar"])
    r = await http.delete(f"/api/messages/{message_id}", headers=auth(world.host.token))
    assert r.status_code == 200, r.text
    await expect(items).to_have_text(["Glad to be here"])
    assert errors == []
