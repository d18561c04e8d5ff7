"""Q&A bot: answers the frequently asked questions of a webinar's Q&A. When an attendee asks a
question that matches one of its answers, the bot (a moderator's account) replies in the chat
and marks the question answered; every other question stays open for the speakers.

Run it against the demo server (docs/sdk.md):

    DATABASE_URL=sqlite:////tmp/sdk-demo.db webinar-chat serve --demo --port 8124
    python examples/qa_bot.py --base-url http://127.0.0.1:8124 \\
        --email host@demo.test --password demo-password

then ask "Will the slides be shared?" in the page's Q&A tab. Stop it with Ctrl-C.

Reconnects, fallback and catch-up are the SDK's job: QUESTION events arrive once each, in order,
and `room.questions` holds their current state. A question is answered once: the bot marks it
answered, so after a restart its state says so and it is left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from webinar_chat.client import ChangeType, ChatClient, Question, Room

# (words that must all be in the question, the answer posted in the chat)
FAQ: tuple[tuple[tuple[str, ...], str], ...] = (
    (("slides",), "The slides will be e-mailed to every attendee after the session."),
    (("recording",), "Yes: the recording is online within 24 hours, same link as today."),
    (("certificate",), "Certificates go out by e-mail to everyone who stayed 45 minutes."),
)


def answer_for(content: str) -> str | None:
    text = content.lower()
    for words, answer in FAQ:
        if all(word in text for word in words):
            return answer
    return None


def reply(question: Question, answer: str) -> str:
    return f"@{question.display_name or 'friend'} asked “{question.content}” — {answer}"


def reply_text(name: str, content: str, keyword: str) -> str:
    """The reply to `name`'s question `content` about `keyword` (for tests and docs)."""
    answer = next(a for words, a in FAQ if keyword in words)
    return f"@{name} asked “{content}” — {answer}"


async def answer_questions(chat: ChatClient, room: Room) -> None:
    """Answer each open question the FAQ covers, once."""
    handled: set[int] = set()
    async for event in room:
        question = event.question
        if event.type is not ChangeType.QUESTION or question is None or question.hidden:
            continue
        if question.status != "open" or question.id in handled or question.content is None:
            continue
        answer = answer_for(question.content)
        if answer is None:
            continue
        handled.add(question.id)
        # The reply first (room.send stores it once however often it is retried), then the mark:
        # attendees see the answer before the question turns "answered".
        await room.send(reply(question, answer))
        await chat.set_question_status(question.id, "answered")
        print(f"answered question {question.id} of {question.display_name}", flush=True)


async def main(base_url: str, email: str, password: str, webinar_id: int | None) -> None:
    async with ChatClient(base_url, email=email, password=password) as chat:
        if webinar_id is None:
            webinars = (await chat.me())["webinars"]
            if not webinars:
                raise SystemExit(f"{email} is not registered for any webinar")
            webinar_id = int(webinars[0]["id"])
        room = await chat.join(webinar_id)
        await chat.questions(webinar_id)  # the questions asked so far, into room.questions
        print(f"Q&A bot running as {chat.user.get('display_name')} in webinar {webinar_id} "
              f"({len(room.questions)} questions so far)", flush=True)
        await answer_questions(chat, room)


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
