"""Greeter bot: welcomes each new attendee by name when they write their first chat message.

Run it against the demo server (docs/sdk.md):

    DATABASE_URL=sqlite:////tmp/sdk-demo.db webinar-chat serve --demo --port 8124
    python examples/greeter_bot.py --base-url http://127.0.0.1:8124 \\
        --email host@demo.test --password demo-password

then post as alice@demo.test in the browser (or with the SDK). Stop it with Ctrl-C.

Everything hard — reconnecting, falling back to long-polling, renewing tokens, not sending a
greeting twice when a request is retried — is the SDK's job; this file is only the bot's logic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from webinar_chat.client import ChangeType, ChatClient, Room


def greeting(name: str | None) -> str:
    return f"Welcome to the chat, {name or 'friend'}! 👋 Ask away — the speakers read along."


async def greet_newcomers(room: Room, me: int | None) -> None:
    """Send one welcome per person, for their first message seen by this bot. People who
    already wrote in the history loaded on join are not new."""
    known = {m.user_id for m in room.messages if m.user_id is not None}
    async for event in room:
        message = event.new
        if event.type is not ChangeType.INSERT or message is None or message.user_id is None:
            continue  # edits, hides, deletes
        if message.user_id == me or message.user_id in known:
            continue
        known.add(message.user_id)
        # room.send retries with the same client_msg_id until stored: one greeting, never two.
        await room.send(greeting(message.display_name))
        print(f"greeted {message.display_name} (user {message.user_id})", flush=True)


async def main(base_url: str, email: str, password: str, webinar_id: int | None) -> None:
    async with ChatClient(base_url, email=email, password=password) as chat:
        if webinar_id is None:
            webinars = (await chat.me())["webinars"]
            if not webinars:
                raise SystemExit(f"{email} is not registered for any webinar")
            webinar_id = int(webinars[0]["id"])
        room = await chat.join(webinar_id)
        print(f"greeter running as {chat.user.get('display_name')} in webinar {webinar_id} "
              f"({len(room.messages)} messages in history)", flush=True)
        await greet_newcomers(room, chat.user_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("CHAT_URL", "http://127.0.0.1:8124"))
    parser.add_argument("--email", default=os.environ.get("CHAT_EMAIL", "host@demo.test"))
    parser.add_argument("--password", default=os.environ.get("CHAT_PASSWORD", "demo-password"))
    parser.add_argument("--webinar", type=int, default=None,
                        help="webinar id (default: the first webinar of this user)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.base_url, args.email, args.password, args.webinar))
