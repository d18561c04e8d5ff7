"""All persistence of webinar-chat, written once for SQLite and PostgreSQL.

The change feed is built here: every write to `messages` takes the next per-webinar `seq` from
`webinars.last_seq` inside its transaction (docs/delivery.md, guarantee 3). Callers get back the
`Change` to publish; publishing is the caller's job (server/hub.py), after commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..protocol.events import CHAT_MODES, Change, ChangeOp, Message, Question, RoomState
from . import questions as _questions
from .db import Database, NotNullViolation, Plan, Row, UniqueViolation, q, single

ROLES = ("attendee", "moderator", "host")
# The password hash of users provisioned from a host platform's token: not an argon2 hash, so
# no password verifies against it (auth/passwords.verify_password), not even the dummy's.
EXTERNAL_PASSWORD_HASH = "!external"


def external_email(issuer: str, subject: str) -> str:
    """The address of an external user whose token has no usable e-mail: unique per identity,
    under a domain that can never receive mail (RFC 6761)."""
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:24]
    return f"{digest}@external.invalid"


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class EmailTaken(StoreError):
    pass


class DuplicateMessage(StoreError):
    """The same user already stored this `client_msg_id` in this webinar; `message` is that row."""

    def __init__(self, message: Message) -> None:
        super().__init__("Duplicate message detected")
        self.message = message


class SlowMode(StoreError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("Slow mode: wait before sending again")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Webinar:
    id: int
    agency_id: int
    client_id: int
    title: str
    chat_mode: str  # protocol.events.CHAT_MODES
    slow_mode_seconds: int
    last_seq: int  # the feed position this state was read at (docs/webinar-features.md)
    pinned_content: str | None = None
    pinned_at: datetime | None = None

    @property
    def chat_open(self) -> bool:
        """May attendees post at all (everyone or hosts_only)?"""
        return self.chat_mode != "read_only"

    @property
    def room(self) -> RoomState:
        return RoomState(self.chat_mode, self.slow_mode_seconds, self.pinned_content,
                         self.pinned_at)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    display_name: str
    is_admin: bool
    password_hash: str


@dataclass(frozen=True, slots=True)
class Registration:
    webinar_id: int
    user_id: int
    role: str
    banned: bool
    # With `banned`: when the timeout ends (None: a permanent ban). A lapsed timeout is no ban
    # (auth/permissions.access_from); the row keeps it until the next ban or unban.
    banned_until: datetime | None = None

    def banned_at(self, now: datetime) -> bool:
        return self.banned and (self.banned_until is None or self.banned_until > now)


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token_hash: str
    user_id: int
    family_id: str
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[Message]
    has_more: bool
    # Head of the change feed read *before* the page: join realtime with it and nothing is missed.
    last_seq: int


@dataclass(frozen=True, slots=True)
class ChangePage:
    changes: list[Change]
    has_more: bool
    last_seq: int  # highest seq in `changes`, or the requested `after_seq` when empty


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One message of a transcript export (Store.transcript_pages). A deleted message's row is
    gone (delete_message) and only its DELETE change is left: it comes back with its id, the
    change's `seq` and `deleted_at`, and None for everything the store no longer has."""

    id: int
    seq: int
    created_at: datetime | None
    user_id: int | None
    display_name: str | None
    content: str | None
    hidden: bool | None
    deleted_at: datetime | None
    # The author's role in the webinar when they posted (messages.author_role, the badge) and
    # who may see the message (messages.visibility: everyone, or staff for hosts_only mode).
    author_role: str | None
    visibility: str | None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _opt_datetime(value: Any) -> datetime | None:
    return None if value is None else to_datetime(value)


_MESSAGE_COLUMNS = """m.id, m.agency_id, m.client_id, m.webinar_id, m.user_id, m.content, m.created_at,
    m.hidden, m.client_msg_id, m.seq, COALESCE(p.display_name, '') AS display_name, m.author_role,
    m.visibility"""

_WEBINAR_COLUMNS = """w.id, w.agency_id, w.client_id, w.title, w.chat_mode, w.slow_mode_seconds,
    w.last_seq, w.pinned_content, w.pinned_at"""

_MESSAGE_SELECT = f"""SELECT {_MESSAGE_COLUMNS}
    FROM messages m LEFT JOIN profiles p ON p.user_id = m.user_id"""


def history_sql(dialect: str, *, newer: bool, include_hidden: bool) -> str:
    """One page of a webinar's messages ($1 webinar, $2 message id, $3 limit[, $4 the attendee
    reading]): the `limit` next
    after $2 in ascending order (`newer`), or the `limit` just before $2 in descending order.

    It must walk the index on (webinar_id, id) and stop after `limit` rows. PostgreSQL's planner
    may instead walk the primary key and filter on webinar_id: its estimate assumes a webinar's
    rows are spread evenly over the ids, which is wrong for a webinar that was busy long ago and
    is quiet now (the walk then reads most of the table), and with a stale visibility map or a
    generic prepared plan it does so even for quiet webinars. `= ANY(ARRAY[$1])` is the same
    filter but is not folded into a constant, so the ORDER BY on (webinar_id, id) can only be
    served by that index; any other path would have to sort all the webinar's rows. SQLite's
    planner always takes the index for the plain equality. Plans: bench `after`, docs/benchmarks.md.
    """
    webinar = "m.webinar_id = ANY(ARRAY[$1::bigint])" if dialect == "postgresql" else "m.webinar_id = $1"
    # Attendees ($4: the reader): no hidden messages, and staff-only ones only if their own.
    hidden = ("" if include_hidden
              else " AND NOT m.hidden AND (m.visibility = 'everyone' OR m.user_id = $4)")
    if newer:
        return (_MESSAGE_SELECT + f" WHERE {webinar} AND m.id > $2{hidden}"
                " ORDER BY m.webinar_id ASC, m.id ASC LIMIT $3")
    return (_MESSAGE_SELECT + f" WHERE {webinar} AND m.id < $2{hidden}"
            " ORDER BY m.webinar_id DESC, m.id DESC LIMIT $3")


# Page size of Store.transcript_pages: a page is one statement, so on SQLite (one reader
# thread) an export of any size holds the reader for one page at a time, between other reads.
TRANSCRIPT_PAGE_SIZE = 1000


def transcript_sql(dialect: str) -> str:
    """One page of a webinar's transcript ($1 webinar, $2 message id, $3 limit): the `limit`
    entries after $2 by id, messages and deleted messages merged. Each branch walks its own index
    in id order and stops after `limit` rows: messages on (webinar_id, id) — with history_sql's
    `ANY(ARRAY[…])` on PostgreSQL, for the same reason — and DELETE changes on the partial index
    message_changes_deletes (webinar_id, message_id). One statement: one snapshot, so a message
    deleted while the page is read is in exactly one branch. The NULLs are cast so that both
    branches' columns have one type on PostgreSQL (SQLite ignores the types)."""
    webinar = ("m.webinar_id = ANY(ARRAY[$1::bigint])" if dialect == "postgresql"
               else "m.webinar_id = $1")
    return f"""SELECT * FROM (
        SELECT m.id, m.seq, m.created_at, m.user_id, COALESCE(p.display_name, '') AS display_name,
               m.content, m.hidden, CAST(NULL AS TIMESTAMPTZ) AS deleted_at, m.author_role,
               m.visibility
        FROM messages m LEFT JOIN profiles p ON p.user_id = m.user_id
        WHERE {webinar} AND m.id > $2
        ORDER BY m.webinar_id ASC, m.id ASC LIMIT $3) AS live
    UNION ALL
    SELECT * FROM (
        SELECT c.message_id AS id, c.seq, CAST(NULL AS TIMESTAMPTZ) AS created_at,
               CAST(NULL AS BIGINT) AS user_id, CAST(NULL AS TEXT) AS display_name,
               CAST(NULL AS TEXT) AS content, CAST(NULL AS BOOLEAN) AS hidden,
               c.changed_at AS deleted_at, CAST(NULL AS TEXT) AS author_role,
               CAST(NULL AS TEXT) AS visibility
        FROM message_changes c
        WHERE c.webinar_id = $1 AND c.op = 'DELETE' AND c.message_id > $2
        ORDER BY c.webinar_id ASC, c.message_id ASC LIMIT $3) AS gone
    ORDER BY id ASC LIMIT $3"""


def _transcript_entry(row: Row) -> TranscriptEntry:
    deleted = row["deleted_at"] is not None
    return TranscriptEntry(
        id=row["id"],
        seq=row["seq"],
        created_at=_opt_datetime(row["created_at"]),
        user_id=row["user_id"],
        display_name=row["display_name"],
        content=row["content"],
        hidden=None if deleted else bool(row["hidden"]),
        deleted_at=_opt_datetime(row["deleted_at"]),
        author_role=row["author_role"],
        visibility=row["visibility"],
    )



def _message(row: Row) -> Message:
    cmid = row["client_msg_id"]
    return Message(
        id=row["id"],
        agency_id=row["agency_id"],
        client_id=row["client_id"],
        webinar_id=row["webinar_id"],
        user_id=row["user_id"],
        content=row["content"],
        created_at=to_datetime(row["created_at"]),
        hidden=bool(row["hidden"]),
        client_msg_id=None if cmid is None else str(cmid),
        seq=row["seq"],
        display_name=row["display_name"],
        author_role=row["author_role"],
        visibility=row["visibility"],
    )


def _webinar(row: Row) -> Webinar:
    return Webinar(
        id=row["id"],
        agency_id=row["agency_id"],
        client_id=row["client_id"],
        title=row["title"],
        chat_mode=row["chat_mode"],
        slow_mode_seconds=row["slow_mode_seconds"],
        last_seq=row["last_seq"],
        pinned_content=row["pinned_content"],
        pinned_at=_opt_datetime(row["pinned_at"]),
    )


class _Conflict(Exception):
    """Internal: abort the transaction because the idempotency key already exists."""


# --- plan pieces shared by the write transactions (sans-I/O; see store/db.py) ----------------------

def _next_seq(webinar_id: int) -> Plan[int]:
    # First statement of every change: takes the webinar's row lock (PostgreSQL) until commit —
    # the feed's commit-order guarantee (docs/delivery.md, guarantee 3).
    row = yield q("UPDATE webinars SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
                  webinar_id)
    if row is None:
        raise NotFound("webinar")
    return int(row["last_seq"])


def _record_change(webinar_id: int, seq: int, message_id: int, op: ChangeOp,
                   now: datetime) -> Plan[None]:
    yield q("""INSERT INTO message_changes (webinar_id, seq, message_id, op, changed_at)
               VALUES ($1, $2, $3, $4, $5)""", webinar_id, seq, message_id, op.value, now)


def _record_room_change(webinar_id: int, seq: int, now: datetime) -> Plan[None]:
    # Kind `room`, message_id 0: read back with the room state current then (changes_after).
    yield q("""INSERT INTO message_changes (webinar_id, seq, message_id, op, changed_at, kind)
               VALUES ($1, $2, 0, 'UPDATE', $3, 'room')""", webinar_id, seq, now)


def _claim_slow_mode(webinar: Webinar, user_id: int, now: datetime) -> Plan[None]:
    """Record this post's time, or raise SlowMode if the previous one is too recent. Runs under
    the webinar lock, so two quick sends cannot both pass."""
    window = timedelta(seconds=webinar.slow_mode_seconds)
    claimed = yield q("""UPDATE registrations SET last_posted_at = $3
                         WHERE webinar_id = $1 AND user_id = $2
                           AND (last_posted_at IS NULL OR last_posted_at <= $4)
                         RETURNING user_id""", webinar.id, user_id, now, now - window)
    if claimed is None:
        row = yield q("""SELECT last_posted_at FROM registrations
                         WHERE webinar_id = $1 AND user_id = $2""", webinar.id, user_id)
        raise _slow_mode_wait(webinar, _opt_datetime(row["last_posted_at"]) if row else None, now)


def _slow_mode_wait(webinar: Webinar, last_posted_at: datetime | None, now: datetime) -> SlowMode:
    if last_posted_at is None:
        return SlowMode(float(webinar.slow_mode_seconds))
    wait = (last_posted_at + timedelta(seconds=webinar.slow_mode_seconds) - now).total_seconds()
    return SlowMode(max(wait, 0.001))


# PostgreSQL's create in one statement (Store._create_message_pg): $1 agency, $2 client,
# $3 webinar, $4 user, $5 content, $6 now, $7 client_msg_id[, $8 slow-mode cutoff], then the
# author's role and the visibility ($8 $9, or $9 $10 with slow mode: every parameter must be used,
# for its type). The seq comes
# first (the row lock that orders commits, as in _next_seq); `claim` is _claim_slow_mode's UPDATE.
# Data-modifying CTEs all run to completion in one snapshot; the final INSERT's LEFT JOIN yields a
# NULL message_id, hence the abort, when `m` wrote nothing.
_CREATE_MESSAGE_PG_TEMPLATE = """
WITH s AS (
    UPDATE webinars SET last_seq = last_seq + 1 WHERE id = $3 RETURNING last_seq
), {claim}m AS (
    INSERT INTO messages (agency_id, client_id, webinar_id, user_id, content, created_at, hidden,
                          client_msg_id, seq, author_role, visibility)
    SELECT $1, $2, $3, $4, $5, $6, FALSE, $7, s.last_seq, {role}, {visibility} FROM s{claimed}
    ON CONFLICT (webinar_id, user_id, client_msg_id) DO NOTHING
    RETURNING id
)
INSERT INTO message_changes (webinar_id, seq, message_id, op, changed_at)
SELECT $3, s.last_seq, m.id, 'INSERT', $6 FROM s LEFT JOIN m ON TRUE
RETURNING seq, message_id
"""
_CREATE_MESSAGE_PG = _CREATE_MESSAGE_PG_TEMPLATE.format(claim="", claimed="", role="$8",
                                                        visibility="$9")
# The claim reads `s`, so it runs after the webinar lock is taken (same lock order as the plan).
_CREATE_MESSAGE_SLOW_PG = _CREATE_MESSAGE_PG_TEMPLATE.format(
    claim="""r AS (
    UPDATE registrations SET last_posted_at = $6 FROM s
    WHERE registrations.webinar_id = $3 AND registrations.user_id = $4
      AND (registrations.last_posted_at IS NULL OR registrations.last_posted_at <= $8)
    RETURNING registrations.user_id
), """,
    claimed=" JOIN r ON TRUE", role="$9", visibility="$10")


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.fetchrow("SELECT 1 AS ok")

    # --- tenants -------------------------------------------------------------------------------

    async def create_agency(self, name: str) -> int:
        row = await self._insert("INSERT INTO agencies (name, created_at) VALUES ($1, $2) RETURNING id",
                                 name, now_utc())
        return int(row["id"])

    async def create_client(self, agency_id: int, name: str) -> int:
        if await self.db.fetchrow("SELECT id FROM agencies WHERE id = $1", agency_id) is None:
            raise NotFound("agency")
        row = await self._insert(
            "INSERT INTO clients (agency_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
            agency_id, name, now_utc(),
        )
        return int(row["id"])

    async def create_webinar(
        self, client_id: int, title: str, *, chat_mode: str = "everyone",
        slow_mode_seconds: int = 0
    ) -> Webinar:
        if chat_mode not in CHAT_MODES:
            raise ValueError(f"chat_mode must be one of {CHAT_MODES}")
        client = await self.db.fetchrow("SELECT agency_id FROM clients WHERE id = $1", client_id)
        if client is None:
            raise NotFound("client")
        row = await self._insert(
            """INSERT INTO webinars (agency_id, client_id, title, chat_open, chat_mode,
                   slow_mode_seconds, last_seq, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, 0, $7)
               RETURNING id""",
            client["agency_id"], client_id, title, chat_mode != "read_only", chat_mode,
            slow_mode_seconds, now_utc(),
        )
        webinar = await self.get_webinar(int(row["id"]))
        assert webinar is not None
        return webinar

    async def update_webinar(
        self, webinar_id: int, *, chat_mode: str | None = None,
        slow_mode_seconds: int | None = None
    ) -> tuple[Webinar, Change]:
        """Change the room state and append its ROOM change, in one transaction under the
        webinar's feed lock. `chat_open` is written with the mode for processes of the release
        before chat modes (migration 0004)."""
        if chat_mode is not None and chat_mode not in CHAT_MODES:
            raise ValueError(f"chat_mode must be one of {CHAT_MODES}")
        now = now_utc()

        def plan() -> Plan[Row]:
            seq = yield from _next_seq(webinar_id)
            yield q("""UPDATE webinars SET chat_mode = COALESCE($2, chat_mode),
                           slow_mode_seconds = COALESCE($3, slow_mode_seconds)
                       WHERE id = $1""", webinar_id, chat_mode, slow_mode_seconds)
            yield q("UPDATE webinars SET chat_open = (chat_mode <> 'read_only') WHERE id = $1",
                    webinar_id)
            yield from _record_room_change(webinar_id, seq, now)
            row: Row = yield q(f"SELECT {_WEBINAR_COLUMNS} FROM webinars w WHERE w.id = $1",
                               webinar_id)
            return row

        return self._room_changed(_webinar(await self.db.run(plan())))

    async def set_pinned(self, webinar_id: int, content: str | None) -> tuple[Webinar, Change]:
        """Pin `content` (replacing any earlier pin), or unpin with None; a ROOM change."""
        now = now_utc()

        def plan() -> Plan[Row]:
            seq = yield from _next_seq(webinar_id)
            yield q("UPDATE webinars SET pinned_content = $2, pinned_at = $3 WHERE id = $1",
                    webinar_id, content, now if content is not None else None)
            yield from _record_room_change(webinar_id, seq, now)
            row: Row = yield q(f"SELECT {_WEBINAR_COLUMNS} FROM webinars w WHERE w.id = $1",
                               webinar_id)
            return row

        return self._room_changed(_webinar(await self.db.run(plan())))

    @staticmethod
    def _room_changed(webinar: Webinar) -> tuple[Webinar, Change]:
        return webinar, Change(webinar.id, webinar.last_seq, ChangeOp.ROOM, 0, None, webinar.room)

    async def get_webinar(self, webinar_id: int) -> Webinar | None:
        row = await self.db.fetchrow(
            f"SELECT {_WEBINAR_COLUMNS} FROM webinars w WHERE w.id = $1", webinar_id)
        return None if row is None else _webinar(row)

    async def list_agencies(self) -> list[Row]:
        return await self.db.fetch("SELECT id, name FROM agencies ORDER BY id")

    async def list_clients(self) -> list[Row]:
        return await self.db.fetch("SELECT id, agency_id, name FROM clients ORDER BY id")

    async def list_webinars(self, user_id: int | None = None) -> list[Webinar]:
        if user_id is None:
            rows = await self.db.fetch(
                f"SELECT {_WEBINAR_COLUMNS} FROM webinars w ORDER BY w.id"
            )
        else:
            rows = await self.db.fetch(
                f"""SELECT {_WEBINAR_COLUMNS}
                   FROM webinars w JOIN registrations r ON r.webinar_id = w.id
                   WHERE r.user_id = $1 AND (NOT r.banned OR r.banned_until IS NOT NULL)
                   ORDER BY w.id""",
                user_id,
            )
        return [_webinar(r) for r in rows]

    # --- users and registrations ---------------------------------------------------------------

    async def create_user(
        self, email: str, password_hash: str, display_name: str, *, is_admin: bool = False
    ) -> User:
        email = email.strip().lower()
        now = now_utc()
        def plan() -> Plan[int]:
            row = yield q("""INSERT INTO users (email, password_hash, is_admin, created_at)
                             VALUES ($1, $2, $3, $4) RETURNING id""",
                          email, password_hash, is_admin, now)
            yield q("INSERT INTO profiles (user_id, display_name, updated_at) VALUES ($1, $2, $3)",
                    row["id"], display_name, now)
            return int(row["id"])

        try:
            user_id = await self.db.run(plan())
        except UniqueViolation as exc:
            raise EmailTaken(email) from exc
        return User(user_id, email, display_name, is_admin, password_hash)

    _USER_SELECT = """SELECT u.id, u.email, u.password_hash, u.is_admin,
                             COALESCE(p.display_name, '') AS display_name
                      FROM users u LEFT JOIN profiles p ON p.user_id = u.id"""

    @staticmethod
    def _user(row: Row) -> User:
        return User(row["id"], row["email"], row["display_name"], bool(row["is_admin"]),
                    row["password_hash"])

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self.db.fetchrow(self._USER_SELECT + " WHERE u.email = $1", email.strip().lower())
        return None if row is None else self._user(row)

    async def get_user(self, user_id: int) -> User | None:
        row = await self.db.fetchrow(self._USER_SELECT + " WHERE u.id = $1", user_id)
        return None if row is None else self._user(row)

    async def register(self, webinar_id: int, user_id: int, role: str) -> Registration:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if await self.get_webinar(webinar_id) is None:
            raise NotFound("webinar")
        if await self.get_user(user_id) is None:
            raise NotFound("user")
        await self._write(
            """INSERT INTO registrations (webinar_id, user_id, role, banned, created_at)
               VALUES ($1, $2, $3, FALSE, $4)
               ON CONFLICT (webinar_id, user_id) DO UPDATE SET role = excluded.role""",
            webinar_id, user_id, role, now_utc(),
        )
        return Registration(webinar_id, user_id, role, False)

    async def set_banned(self, webinar_id: int, user_id: int, banned: bool,
                         until: datetime | None = None) -> None:
        """Ban (`until` None: permanently; else a timeout that ends by itself) or unban."""
        row = await self._write(
            """UPDATE registrations SET banned = $3, banned_until = $4
               WHERE webinar_id = $1 AND user_id = $2
               RETURNING user_id""",
            webinar_id, user_id, banned, until if banned else None,
        )
        if row is None:
            raise NotFound("registration")

    async def list_bans(self, webinar_id: int, now: datetime
                        ) -> list[tuple[int, str, datetime | None]]:
        """The webinar's banned and timed-out users now: (user_id, display_name, banned_until)."""
        rows = await self.db.fetch(
            """SELECT r.user_id, COALESCE(p.display_name, '') AS display_name, r.banned_until
               FROM registrations r LEFT JOIN profiles p ON p.user_id = r.user_id
               WHERE r.webinar_id = $1 AND r.banned
                 AND (r.banned_until IS NULL OR r.banned_until > $2)
               ORDER BY r.user_id""",
            webinar_id, now,
        )
        return [(int(r["user_id"]), r["display_name"], _opt_datetime(r["banned_until"]))
                for r in rows]

    async def webinar_access(
        self, webinar_id: int, user_id: int
    ) -> tuple[Webinar, Registration | None, str] | None:
        """The webinar, the user's registration for it and their display name, in one query: the
        input of every permission decision (auth/permissions.py). None for an unknown webinar."""
        row = await self.db.fetchrow(
            f"""SELECT {_WEBINAR_COLUMNS}, r.role, r.banned, r.banned_until,
                      COALESCE(p.display_name, '') AS display_name
               FROM webinars w
               LEFT JOIN registrations r ON r.webinar_id = w.id AND r.user_id = $2
               LEFT JOIN profiles p ON p.user_id = $2
               WHERE w.id = $1""",
            webinar_id, user_id,
        )
        if row is None:
            return None
        registration = (
            None if row["role"] is None
            else Registration(webinar_id, user_id, row["role"], bool(row["banned"]),
                              _opt_datetime(row["banned_until"]))
        )
        return _webinar(row), registration, row["display_name"]

    async def shares_staffed_webinar(self, staff_user_id: int, other_user_id: int) -> bool:
        """True when `staff_user_id` moderates/hosts a webinar `other_user_id` is registered for."""
        row = await self.db.fetchrow(
            """SELECT 1 AS ok FROM registrations s JOIN registrations o ON o.webinar_id = s.webinar_id
               WHERE s.user_id = $1 AND s.role IN ('moderator', 'host') AND NOT s.banned
                 AND o.user_id = $2 LIMIT 1""",
            staff_user_id, other_user_id,
        )
        return row is not None

    async def staff_display_name_taken(self, normalised: str,
                                       normalise: Callable[[str], str]) -> bool:
        """True when a platform admin, or a moderator or host of any webinar (banned or not:
        people know the name as staff's), has a display name with `normalise(name) ==
        normalised` — `normalise` is the function that made `normalised`
        (server/text_rules.display_name_key).

        Compared here, in Python: the key is NFKC and case folding, which neither database can
        compute alike, and storing a key column would need a migration and a backfill for a
        rule that may still change. Staff are few, so their names are read whole; the cost is
        the scan of `registrations` by role (no index on it), once per account created."""
        rows = await self.db.fetch(
            """SELECT p.display_name FROM users u JOIN profiles p ON p.user_id = u.id
               WHERE u.is_admin
               UNION
               SELECT p.display_name FROM registrations r JOIN profiles p ON p.user_id = r.user_id
               WHERE r.role IN ('moderator', 'host')""")
        return any(normalise(row["display_name"]) == normalised for row in rows)

    # --- users from the host platform (server/identities.py, migration 0006) -------------------

    async def external_identity_user(self, issuer: str, subject: str) -> int | None:
        row = await self.db.fetchrow(
            "SELECT user_id FROM external_identities WHERE issuer = $1 AND subject = $2",
            issuer, subject)
        return None if row is None else int(row["user_id"])

    async def provision_external_user(self, issuer: str, subject: str, email: str | None,
                                      display_name: str) -> tuple[int, bool]:
        """The user linked to (issuer, subject), created with its profile and link if there is
        none: (user id, created). Idempotent under concurrency on both databases: a concurrent
        provisioning of the same subject fails on the link's primary key, rolls its user back
        and reads the winner's. `email` is used only while no account has it (an external
        token never takes over an existing account); else an address under external.invalid.
        The user has no password: its hash is one that no password verifies against."""
        fallback = external_email(issuer, subject)
        wanted = email.strip().lower() if email else fallback
        for attempt in range(3):
            address = wanted if attempt == 0 else fallback
            now = now_utc()

            def plan(address: str = address, now: datetime = now) -> Plan[tuple[int, bool]]:
                row = yield q("""SELECT user_id FROM external_identities
                                 WHERE issuer = $1 AND subject = $2""", issuer, subject)
                if row is not None:
                    return int(row["user_id"]), False
                taken = yield q("SELECT id FROM users WHERE email = $1", address)
                if taken is not None:
                    address = fallback
                user = yield q("""INSERT INTO users (email, password_hash, is_admin, created_at)
                                  VALUES ($1, $2, FALSE, $3) RETURNING id""",
                               address, EXTERNAL_PASSWORD_HASH, now)
                yield q("""INSERT INTO profiles (user_id, display_name, updated_at)
                           VALUES ($1, $2, $3)""", user["id"], display_name, now)
                yield q("""INSERT INTO external_identities (issuer, subject, user_id, created_at)
                           VALUES ($1, $2, $3, $4)""", issuer, subject, user["id"], now)
                return int(user["id"]), True

            try:
                return await self.db.run(plan())
            except UniqueViolation:
                # Another process linked the subject (or took the address) meanwhile.
                user_id = await self.external_identity_user(issuer, subject)
                if user_id is not None:
                    return user_id, False
        raise StoreError("could not provision the external user")

    async def set_display_name(self, user_id: int, display_name: str) -> None:
        await self._write("UPDATE profiles SET display_name = $2, updated_at = $3 WHERE user_id = $1",
                          user_id, display_name, now_utc())

    # --- refresh tokens ------------------------------------------------------------------------

    async def add_refresh_token(
        self, token_hash: str, user_id: int, family_id: str, expires_at: datetime
    ) -> None:
        await self._write(
            """INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)
               VALUES ($1, $2, $3, $4, $5)""",
            token_hash, user_id, family_id, expires_at, now_utc(),
        )

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        row = await self.db.fetchrow(
            """SELECT token_hash, user_id, family_id, expires_at, rotated_at, revoked_at
               FROM refresh_tokens WHERE token_hash = $1""",
            token_hash,
        )
        if row is None:
            return None
        return RefreshToken(row["token_hash"], row["user_id"], row["family_id"],
                            to_datetime(row["expires_at"]), _opt_datetime(row["rotated_at"]),
                            _opt_datetime(row["revoked_at"]))

    async def rotate_refresh_token(
        self, old_hash: str, new_hash: str, user_id: int, family_id: str, expires_at: datetime
    ) -> bool:
        """Atomically retire `old_hash` and issue `new_hash` in the same family. False when the
        old token was already rotated or revoked (a concurrent or replayed use)."""
        now = now_utc()

        def plan() -> Plan[bool]:
            row = yield q("""UPDATE refresh_tokens SET rotated_at = $2
                             WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL
                             RETURNING token_hash""", old_hash, now)
            if row is None:
                return False
            yield q("""INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at,
                           created_at)
                       VALUES ($1, $2, $3, $4, $5)""",
                    new_hash, user_id, family_id, expires_at, now)
            return True

        return await self.db.run(plan())

    async def revoke_refresh_family(self, family_id: str) -> None:
        await self._write(
            """UPDATE refresh_tokens SET revoked_at = $2
               WHERE family_id = $1 AND revoked_at IS NULL""",
            family_id, now_utc(),
        )

    # --- messages and the change feed ----------------------------------------------------------

    async def get_message(self, message_id: int) -> Message | None:
        row = await self.db.fetchrow(_MESSAGE_SELECT + " WHERE m.id = $1", message_id)
        return None if row is None else _message(row)

    async def get_message_by_client_id(
        self, webinar_id: int, user_id: int, client_msg_id: str
    ) -> Message | None:
        row = await self.db.fetchrow(
            _MESSAGE_SELECT
            + " WHERE m.webinar_id = $1 AND m.user_id = $2 AND m.client_msg_id = $3",
            webinar_id, user_id, client_msg_id,
        )
        return None if row is None else _message(row)

    async def create_message(
        self,
        webinar: Webinar,
        user_id: int,
        display_name: str,
        content: str,
        client_msg_id: str | None,
        *,
        slow_mode_applies: bool,
        author_role: str = "attendee",
        visibility: str = "everyone",
    ) -> tuple[Message, Change]:
        """Store a message and its INSERT change in one transaction.

        Raises DuplicateMessage (carrying the stored row) when this user already stored
        `client_msg_id` here — checked before slow mode, so a retry is never told to wait — and
        SlowMode when the user posted less than `slow_mode_seconds` ago."""
        now = now_utc()
        slow = slow_mode_applies and webinar.slow_mode_seconds > 0
        if self.dialect == "postgresql":
            seq, message_id = await self._create_message_pg(webinar, user_id, content,
                                                            client_msg_id, now, slow, author_role,
                                                            visibility)
        else:
            seq, message_id = await self._create_message_plan(webinar, user_id, content,
                                                              client_msg_id, now, slow,
                                                              author_role, visibility)
        message = Message(message_id, webinar.agency_id, webinar.client_id, webinar.id, user_id,
                          content, now, False, client_msg_id, seq, display_name, author_role,
                          visibility)
        return message, Change(webinar.id, seq, ChangeOp.INSERT, message.id, message)

    async def _create_message_plan(self, webinar: Webinar, user_id: int, content: str,
                                   client_msg_id: str | None, now: datetime,
                                   slow: bool, author_role: str,
                                   visibility: str) -> tuple[int, int]:
        """SQLite: the create as a plan, run in one hop on the writer thread."""

        def plan() -> Plan[tuple[int, int]]:
            seq = yield from _next_seq(webinar.id)
            row = yield q("""INSERT INTO messages (agency_id, client_id, webinar_id, user_id,
                                 content, created_at, hidden, client_msg_id, seq, author_role,
                                 visibility)
                             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8, $9, $10)
                             ON CONFLICT (webinar_id, user_id, client_msg_id) DO NOTHING
                             RETURNING id""",
                          webinar.agency_id, webinar.client_id, webinar.id, user_id, content, now,
                          client_msg_id, seq, author_role, visibility)
            if row is None:
                raise _Conflict
            if slow:
                yield from _claim_slow_mode(webinar, user_id, now)
            yield from _record_change(webinar.id, seq, row["id"], ChangeOp.INSERT, now)
            return seq, int(row["id"])

        try:
            return await self.db.run(plan())
        except _Conflict:
            assert client_msg_id is not None
            existing = await self.get_message_by_client_id(webinar.id, user_id, client_msg_id)
            assert existing is not None  # the row that conflicted is committed and never rolled back
            raise DuplicateMessage(existing) from None

    async def _create_message_pg(self, webinar: Webinar, user_id: int, content: str,
                                 client_msg_id: str | None, now: datetime,
                                 slow: bool, author_role: str,
                                 visibility: str) -> tuple[int, int]:
        """PostgreSQL: the same transaction as one statement, so one round trip holds the
        webinar's row lock instead of five. When no message row is written (the idempotency key
        exists, or slow mode refused the claim), the change row's message_id is NULL and its NOT
        NULL constraint aborts the whole statement: the seq taken is rolled back with it, so the
        feed stays dense. Then a read tells a duplicate (checked first, so a retry is never told
        to wait) from slow mode."""
        args: list[Any] = [webinar.agency_id, webinar.client_id, webinar.id, user_id, content,
                           now, client_msg_id]
        if slow:
            args.append(now - timedelta(seconds=webinar.slow_mode_seconds))
        args += (author_role, visibility)
        try:
            row = await self.db.fetchrow(_CREATE_MESSAGE_SLOW_PG if slow else _CREATE_MESSAGE_PG,
                                         *args)
        except NotNullViolation as exc:
            if exc.column != "message_id":
                raise
            existing = (await self.get_message_by_client_id(webinar.id, user_id, client_msg_id)
                        if client_msg_id is not None else None)
            if existing is not None:
                raise DuplicateMessage(existing) from None
            if not slow:
                raise  # nothing else leaves the message row out
            raise await self._slow_mode(webinar, user_id, now) from None
        if row is None:
            raise NotFound("webinar")
        return int(row["seq"]), int(row["message_id"])

    async def _slow_mode(self, webinar: Webinar, user_id: int, now: datetime) -> SlowMode:
        row = await self.db.fetchrow("""SELECT last_posted_at FROM registrations
                                        WHERE webinar_id = $1 AND user_id = $2""",
                                     webinar.id, user_id)
        return _slow_mode_wait(webinar, _opt_datetime(row["last_posted_at"]) if row else None, now)

    async def set_hidden(self, message: Message, hidden: bool) -> Change:
        now = now_utc()

        def plan() -> Plan[int]:
            seq = yield from _next_seq(message.webinar_id)
            row = yield q("UPDATE messages SET hidden = $2, seq = $3 WHERE id = $1 RETURNING id",
                          message.id, hidden, seq)
            if row is None:
                raise NotFound("message")
            yield from _record_change(message.webinar_id, seq, message.id, ChangeOp.UPDATE, now)
            return seq

        seq = await self.db.run(plan())
        updated = replace(message, hidden=hidden, seq=seq)
        return Change(message.webinar_id, seq, ChangeOp.UPDATE, message.id, updated)

    async def delete_message(self, message: Message) -> Change:
        now = now_utc()

        def plan() -> Plan[int]:
            seq = yield from _next_seq(message.webinar_id)
            row = yield q("DELETE FROM messages WHERE id = $1 RETURNING id", message.id)
            if row is None:
                raise NotFound("message")
            yield from _record_change(message.webinar_id, seq, message.id, ChangeOp.DELETE, now)
            return seq

        seq = await self.db.run(plan())
        return Change(message.webinar_id, seq, ChangeOp.DELETE, message.id, None)

    async def list_messages(
        self,
        webinar_id: int,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        include_hidden: bool,
        viewer_id: int = 0,
    ) -> MessagePage:
        """Ascending by id. `after`: the next `limit` messages; `before`: the `limit` messages just
        before it; neither: the latest `limit`. `has_more` says whether the page was cut."""
        head = await self.db.fetchrow("SELECT last_seq FROM webinars WHERE id = $1", webinar_id)
        if head is None:
            raise NotFound("webinar")
        reader = () if include_hidden else (viewer_id,)
        if after is not None:
            rows = await self.db.fetch(
                history_sql(self.dialect, newer=True, include_hidden=include_hidden),
                webinar_id, after, limit + 1, *reader,
            )
            has_more = len(rows) > limit
            rows = rows[:limit]
        else:
            rows = await self.db.fetch(
                history_sql(self.dialect, newer=False, include_hidden=include_hidden),
                webinar_id, before if before is not None else 2**63 - 1, limit + 1, *reader,
            )
            has_more = len(rows) > limit
            rows = rows[:limit][::-1]
        return MessagePage([_message(r) for r in rows], has_more, int(head["last_seq"]))

    async def staff_only_authors(self, webinar_id: int, since_id: int) -> set[int]:
        """Who wrote a visible staff-only message in the webinar from message `since_id` on: the
        attendees whose latest history page is their own (server/history_pages.py)."""
        rows = await self.db.fetch(
            """SELECT DISTINCT user_id FROM messages
               WHERE webinar_id = $1 AND id >= $2 AND visibility = 'staff' AND NOT hidden""",
            webinar_id, since_id)
        return {int(r["user_id"]) for r in rows}

    async def changes_after(self, webinar_id: int, after_seq: int, limit: int = 500) -> ChangePage:
        """Changes with `seq > after_seq` in order, each with its message's current state."""
        rows = await self.db.fetch(
            f"""SELECT c.seq AS change_seq, c.op, c.kind, c.message_id AS change_message_id,
                       {_MESSAGE_COLUMNS}, {_questions.FEED_COLUMNS}
                FROM message_changes c
                LEFT JOIN messages m ON m.id = c.message_id AND c.kind = 'message'
                LEFT JOIN profiles p ON p.user_id = m.user_id
                {_questions.FEED_JOINS}
                WHERE c.webinar_id = $1 AND c.seq > $2
                ORDER BY c.seq ASC LIMIT $3""",
            webinar_id, after_seq, limit + 1,
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        # ROOM entries carry the room state now, as message entries the message's state now.
        room = None
        if any(r["kind"] == "room" for r in rows):
            webinar = await self.get_webinar(webinar_id)
            room = webinar.room if webinar is not None else RoomState()
        # QUESTION entries carry the question's state now (None if it is gone).
        changes = [
            Change(webinar_id, r["change_seq"], ChangeOp.ROOM, 0, None, room)
            if r["kind"] == "room" else
            Change(webinar_id, r["change_seq"], ChangeOp.QUESTION, r["change_message_id"], None,
                   question=(_questions.question_from_row(r, "q_") if r["q_id"] is not None
                             else None))
            if r["kind"] == "question" else
            Change(
                webinar_id,
                r["change_seq"],
                ChangeOp(r["op"]),
                r["change_message_id"],
                _message(r) if r["id"] is not None else None,
            )
            for r in rows
        ]
        return ChangePage(changes, has_more, changes[-1].seq if changes else after_seq)

    async def transcript_page(self, webinar_id: int, after_id: int,
                              limit: int = TRANSCRIPT_PAGE_SIZE) -> list[TranscriptEntry]:
        """The `limit` transcript entries after message id `after_id`, ascending (transcript_sql)."""
        rows = await self.db.fetch(transcript_sql(self.dialect), webinar_id, after_id, limit)
        return [_transcript_entry(r) for r in rows]

    async def transcript_pages(self, webinar_id: int, *, page_size: int = TRANSCRIPT_PAGE_SIZE
                               ) -> AsyncIterator[list[TranscriptEntry]]:
        """Every message of the webinar, deleted ones included, ascending by id, a page at a time:
        the next page is read only when the caller asks for it, so memory does not grow with the
        webinar. Keyset pagination on the id: each page is what the database holds when that page
        is read, and no entry is repeated or skipped however writes interleave (a message is
        either still there or has its DELETE change; new messages have higher ids)."""
        after = 0
        while True:
            page = await self.transcript_page(webinar_id, after, page_size)
            if page:
                yield page
            if len(page) < page_size:
                return
            after = page[-1].id

    # --- Q&A (store/questions.py) ----------------------------------------------------------------

    async def get_question(self, question_id: int) -> Question | None:
        return await _questions.get_question(self.db, question_id)

    async def get_question_by_client_id(self, webinar_id: int, user_id: int,
                                        client_msg_id: str) -> Question | None:
        return await _questions.get_by_client_id(self.db, webinar_id, user_id, client_msg_id)

    async def ask_question(self, webinar: Webinar, user_id: int, content: str,
                           client_msg_id: str | None, *, author_role: str = "attendee"
                           ) -> tuple[Question, Change]:
        return await _questions.ask(self.db, webinar, user_id, content, client_msg_id,
                                    author_role)

    async def vote_question(self, question: Question, user_id: int, voted: bool
                            ) -> tuple[Question, Change | None]:
        return await _questions.vote(self.db, question, user_id, voted)

    async def set_question_status(self, question: Question, status: str
                                  ) -> tuple[Question, Change | None]:
        return await _questions.set_status(self.db, question, status)

    async def list_questions(self, webinar_id: int, *, sort: str, include_dismissed: bool,
                             viewer_id: int, limit: int = _questions.MAX_LIST
                             ) -> tuple[list[tuple[Question, bool]], bool, int]:
        return await _questions.list_questions(self.db, webinar_id, sort=sort,
                                               include_dismissed=include_dismissed,
                                               viewer_id=viewer_id, limit=limit)

    async def question_transcript_pages(self, webinar_id: int, *,
                                        page_size: int = TRANSCRIPT_PAGE_SIZE
                                        ) -> AsyncIterator[list[Question]]:
        """Every question of the webinar by id, a page at a time (as transcript_pages)."""
        after = 0
        while True:
            page = await _questions.transcript_page(self.db, webinar_id, after, page_size)
            if page:
                yield page
            if len(page) < page_size:
                return
            after = page[-1].id

    async def head_seq(self, webinar_id: int) -> int | None:
        row = await self.db.fetchrow("SELECT last_seq FROM webinars WHERE id = $1", webinar_id)
        return None if row is None else int(row["last_seq"])

    async def _insert(self, sql: str, *args: Any) -> Row:
        row = await self._write(sql, *args)
        assert row is not None
        return row

    async def _write(self, sql: str, *args: Any) -> Row | None:
        """One write statement as its own transaction; its RETURNING row, if any."""
        row: Row | None = await self.db.run(single(q(sql, *args)))
        return row
