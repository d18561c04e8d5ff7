"""`webinar-chat demo`: a demo agency, webinar, host and two attendees (idempotent)."""

from __future__ import annotations

import asyncio
from typing import Any

from .auth.passwords import hash_password
from .store import Store

DEMO_PASSWORD = "demo-password"
DEMO_USERS = (
    ("host@demo.test", "Hannah Host", "host"),
    ("alice@demo.test", "Alice Attendee", "attendee"),
    ("bob@demo.test", "Bob Attendee", "attendee"),
)
DEMO_TITLE = "Launch webinar (demo)"


async def ensure_demo(store: Store, base_url: str) -> dict[str, Any]:
    users = []
    webinar_id = None
    existing = await store.get_user_by_email(DEMO_USERS[0][0])
    if existing is not None:
        webinars = await store.list_webinars(existing.id)
        webinar_id = next((w.id for w in webinars if w.title == DEMO_TITLE), None)
    if webinar_id is None:
        agency = await store.create_agency("Demo Agency")
        client = await store.create_client(agency, "Demo Client")
        webinar = await store.create_webinar(client, DEMO_TITLE)
        webinar_id = webinar.id
    password_hash = await asyncio.to_thread(hash_password, DEMO_PASSWORD)
    for email, name, role in DEMO_USERS:
        user = await store.get_user_by_email(email)
        if user is None:
            user = await store.create_user(email, password_hash, name)
        await store.register(webinar_id, user.id, role)
        users.append({"email": email, "password": DEMO_PASSWORD, "role": role,
                      "display_name": name, "user_id": user.id})
    page = await store.list_messages(webinar_id, limit=1, include_hidden=True)
    if not page.messages:
        webinar_row = await store.get_webinar(webinar_id)
        assert webinar_row is not None
        for (email, name, role), text in zip(DEMO_USERS, (
            "Welcome everyone! Ask your questions here.",
            "Hi from Lisbon! Will the slides be shared afterwards?",
            "Audio is great on my side.",
        ), strict=True):
            user = await store.get_user_by_email(email)
            assert user is not None
            await store.create_message(webinar_row, user.id, name, text, None,
                                       slow_mode_applies=False, author_role=role)
    return {"base_url": base_url, "webinar_id": webinar_id,
            "url": f"{base_url}/webinars/{webinar_id}", "users": users}
