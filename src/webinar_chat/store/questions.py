"""Q&A persistence (docs/webinar-features.md, "Q&A"): questions, their votes and their feed
entries. `Store` delegates here; every write is one transaction that first takes the webinar's
feed lock (`_next_seq`, docs/delivery.md guarantee 3) and appends exactly one `message_changes`
entry of kind `question` (`message_id`: the question's id) — or none, rolled back with its seq,
when it changes nothing (a second vote, a status it already has).

Written once for SQLite and PostgreSQL as plans (store/db.py): SQLite runs each on its writer
thread in one hop, PostgreSQL statement by statement inside one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..protocol.events import QUESTION_STATUSES, Change, ChangeOp, Question
from .db import Plan, Row, q

if TYPE_CHECKING:
    from .db import Database
    from .store import Webinar

# Most questions one list answer carries (GET /api/webinars/{id}/questions): beyond it `has_more`.
MAX_LIST = 1000
SORTS = ("votes", "newest")

_FIELDS = ("id", "agency_id", "client_id", "webinar_id", "user_id", "content", "created_at",
           "status", "votes", "client_msg_id", "seq", "author_role")

QUESTION_COLUMNS = (", ".join(f"q.{f}" for f in _FIELDS)
                    + ", COALESCE(qp.display_name, '') AS display_name")
QUESTION_SELECT = (f"SELECT {QUESTION_COLUMNS} FROM questions q "
                   "LEFT JOIN profiles qp ON qp.user_id = q.user_id")

# The question columns of a feed read (Store.changes_after), prefixed so that they do not clash
# with the message's: joined as `qq` (questions) and `qp` (the asker's profile).
FEED_COLUMNS = (", ".join(f"qq.{f} AS q_{f}" for f in _FIELDS)
                + ", COALESCE(qp.display_name, '') AS q_display_name")
FEED_JOINS = """LEFT JOIN questions qq ON qq.id = c.message_id AND c.kind = 'question'
                LEFT JOIN profiles qp ON qp.user_id = qq.user_id"""


class DuplicateQuestion(Exception):
    """This user already asked with this `client_msg_id` in this webinar; `question` is it."""

    def __init__(self, question: Question) -> None:
        super().__init__("Duplicate question detected")
        self.question = question


class _Unchanged(Exception):
    """Internal: roll the transaction (and its seq) back, nothing changed."""


class _Conflict(Exception):
    """Internal: the idempotency key exists; roll back."""


def question_from_row(row: Row, prefix: str = "") -> Question:
    from .store import to_datetime

    cmid = row[prefix + "client_msg_id"]
    return Question(
        id=row[prefix + "id"], agency_id=row[prefix + "agency_id"],
        client_id=row[prefix + "client_id"], webinar_id=row[prefix + "webinar_id"],
        user_id=row[prefix + "user_id"], content=row[prefix + "content"],
        created_at=to_datetime(row[prefix + "created_at"]), status=row[prefix + "status"],
        votes=int(row[prefix + "votes"]), client_msg_id=None if cmid is None else str(cmid),
        seq=row[prefix + "seq"], display_name=row[prefix + "display_name"],
        author_role=row[prefix + "author_role"])


def question_change(question: Question) -> Change:
    return Change(question.webinar_id, question.seq, ChangeOp.QUESTION, question.id, None,
                  question=question)


def _record(webinar_id: int, seq: int, question_id: int, op: str, now: datetime) -> Plan[None]:
    yield q("""INSERT INTO message_changes (webinar_id, seq, message_id, op, changed_at, kind)
               VALUES ($1, $2, $3, $4, $5, 'question')""", webinar_id, seq, question_id, op, now)


async def get_question(db: Database, question_id: int) -> Question | None:
    row = await db.fetchrow(QUESTION_SELECT + " WHERE q.id = $1", question_id)
    return None if row is None else question_from_row(row)


async def get_by_client_id(db: Database, webinar_id: int, user_id: int,
                           client_msg_id: str) -> Question | None:
    row = await db.fetchrow(QUESTION_SELECT + " WHERE q.webinar_id = $1 AND q.user_id = $2"
                            " AND q.client_msg_id = $3", webinar_id, user_id, client_msg_id)
    return None if row is None else question_from_row(row)


async def ask(db: Database, webinar: Webinar, user_id: int, content: str,
              client_msg_id: str | None, author_role: str) -> tuple[Question, Change]:
    """Store a question (status open, no votes) and its feed entry. Raises DuplicateQuestion
    with the stored row when this user already asked with `client_msg_id` here."""
    from .store import _next_seq, now_utc

    now = now_utc()

    def plan() -> Plan[Row]:
        seq = yield from _next_seq(webinar.id)
        row = yield q("""INSERT INTO questions (agency_id, client_id, webinar_id, user_id, content,
                             created_at, status, votes, client_msg_id, seq, author_role)
                         VALUES ($1, $2, $3, $4, $5, $6, 'open', 0, $7, $8, $9)
                         ON CONFLICT (webinar_id, user_id, client_msg_id) DO NOTHING
                         RETURNING id""",
                      webinar.agency_id, webinar.client_id, webinar.id, user_id, content, now,
                      client_msg_id, seq, author_role)
        if row is None:
            raise _Conflict
        yield from _record(webinar.id, seq, int(row["id"]), "INSERT", now)
        stored = yield q(QUESTION_SELECT + " WHERE q.id = $1", row["id"])
        return stored  # type: ignore[no-any-return]

    try:
        question = question_from_row(await db.run(plan()))
    except _Conflict:
        assert client_msg_id is not None
        existing = await get_by_client_id(db, webinar.id, user_id, client_msg_id)
        assert existing is not None  # the row that conflicted is committed
        raise DuplicateQuestion(existing) from None
    return question, question_change(question)


async def vote(db: Database, question: Question, user_id: int, voted: bool
               ) -> tuple[Question, Change | None]:
    """Add (`voted`) or take back the user's vote. The question's state after, and its change —
    None when the vote already was so (nothing written, no seq taken)."""
    from .store import NotFound, _next_seq, now_utc

    now = now_utc()

    def plan() -> Plan[Row]:
        seq = yield from _next_seq(question.webinar_id)
        if voted:
            row = yield q("""INSERT INTO question_votes (question_id, user_id, created_at)
                             VALUES ($1, $2, $3) ON CONFLICT (question_id, user_id) DO NOTHING
                             RETURNING question_id""", question.id, user_id, now)
        else:
            row = yield q("""DELETE FROM question_votes WHERE question_id = $1 AND user_id = $2
                             RETURNING question_id""", question.id, user_id)
        if row is None:
            raise _Unchanged
        row = yield q("""UPDATE questions SET seq = $2, votes = (
                             SELECT COUNT(*) FROM question_votes WHERE question_id = $1)
                         WHERE id = $1 RETURNING id""", question.id, seq)
        if row is None:
            raise NotFound("question")
        yield from _record(question.webinar_id, seq, question.id, "UPDATE", now)
        stored = yield q(QUESTION_SELECT + " WHERE q.id = $1", question.id)
        return stored  # type: ignore[no-any-return]

    try:
        updated = question_from_row(await db.run(plan()))
    except _Unchanged:
        current = await get_question(db, question.id)
        if current is None:
            raise NotFound("question") from None
        return current, None
    return updated, question_change(updated)


async def set_status(db: Database, question: Question, status: str
                     ) -> tuple[Question, Change | None]:
    """Mark answered, dismiss or reopen; None for the change when it already had `status`."""
    from .store import NotFound, _next_seq, now_utc

    if status not in QUESTION_STATUSES:
        raise ValueError(f"status must be one of {QUESTION_STATUSES}")
    now = now_utc()

    def plan() -> Plan[Row]:
        seq = yield from _next_seq(question.webinar_id)
        row = yield q("""UPDATE questions SET status = $2, seq = $3
                         WHERE id = $1 AND status <> $2 RETURNING id""", question.id, status, seq)
        if row is None:
            raise _Unchanged
        yield from _record(question.webinar_id, seq, question.id, "UPDATE", now)
        stored = yield q(QUESTION_SELECT + " WHERE q.id = $1", question.id)
        return stored  # type: ignore[no-any-return]

    try:
        updated = question_from_row(await db.run(plan()))
    except _Unchanged:
        current = await get_question(db, question.id)
        if current is None:
            raise NotFound("question") from None
        return current, None
    return updated, question_change(updated)


async def list_questions(db: Database, webinar_id: int, *, sort: str, include_dismissed: bool,
                         viewer_id: int, limit: int = MAX_LIST
                         ) -> tuple[list[tuple[Question, bool]], bool, int]:
    """The webinar's questions with whether `viewer_id` voted for each, `has_more`, and the feed
    head read *before* them (join the feed from it and nothing is missed). `votes`: most votes
    first, then oldest; `newest`: newest first. Attendees (not `include_dismissed`) do not get
    dismissed ones."""
    from .store import NotFound

    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}")
    head = await db.fetchrow("SELECT last_seq FROM webinars WHERE id = $1", webinar_id)
    if head is None:
        raise NotFound("webinar")
    hidden = "" if include_dismissed else " AND q.status <> 'dismissed'"
    order = "q.votes DESC, q.id ASC" if sort == "votes" else "q.id DESC"
    rows = await db.fetch(
        f"""SELECT {QUESTION_COLUMNS}, v.user_id AS voter
            FROM questions q LEFT JOIN profiles qp ON qp.user_id = q.user_id
            LEFT JOIN question_votes v ON v.question_id = q.id AND v.user_id = $2
            WHERE q.webinar_id = $1{hidden} ORDER BY {order} LIMIT $3""",
        webinar_id, viewer_id, limit + 1)
    found = [(question_from_row(r), r["voter"] is not None) for r in rows[:limit]]
    return found, len(rows) > limit, int(head["last_seq"])


async def transcript_page(db: Database, webinar_id: int, after_id: int, limit: int
                          ) -> list[Question]:
    """The `limit` questions after id `after_id`, ascending, every status (the export)."""
    rows = await db.fetch(QUESTION_SELECT + " WHERE q.webinar_id = $1 AND q.id > $2"
                          " ORDER BY q.webinar_id ASC, q.id ASC LIMIT $3",
                          webinar_id, after_id, limit)
    return [question_from_row(r) for r in rows]
