"""Response bodies: one pydantic model per answer of every route, errors included. The OpenAPI
document (app.py) declares them, schemathesis checks every answer against them (scripts/test),
and the handlers build their answers through `respond`, which validates the fields against the
model — so an answer that drifts from the document fails where it is made, not in a client.

Models forbid unknown fields (`additionalProperties: false`): the document says exactly what an
answer holds. A field that is absent, rather than null, in some answers (a profile's `email`) has
no default value and is left out with `exclude_unset`.

Message payloads are the exception to "built through the model": messages, changes and the
realtime frames are encoded by `protocol/events.py` once per audience, with orjson, on the paths
that carry every message to thousands of readers; validating each there would cost more than the
encoding. tests/api/test_openapi.py checks those builders against `Message`/`ChangeEvent` for
every audience and state, and schemathesis checks the answers that carry them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import JSONResponse

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
Role = Literal["attendee", "moderator", "host"]


def _absent_not_null(schema: dict[str, Any]) -> None:
    """For a field that an answer leaves out rather than sets to null: the document says "this
    type, when present" (pydantic would say "this type or null, default null")."""
    variants = [v for v in schema.pop("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:
        schema.update(variants[0])
    else:
        schema["anyOf"] = variants
    schema.pop("default", None)


def Optional(description: str) -> Any:  # noqa: N802 - reads as a type in the models below
    return Field(None, description=description, json_schema_extra=_absent_not_null)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ok(Answer):
    success: Literal[True]


class Error(Answer):
    """Every refusal and failure: 4xx and 500."""

    success: Literal[False]
    error: str = Field(description="What went wrong, in one sentence for a person")
    code: str = Field(description="Stable machine-readable reason (docs/realtime.md lists them)")
    retry_after: float | None = Optional("429: seconds to wait before retrying")
    message: Message | None = Optional("409 duplicate: the message stored earlier with this "
                                       "clientMsgId")
    question: Question | None = Optional("409 duplicate question: the question stored earlier "
                                         "with this clientMsgId")
    banned_until: str | None = Field(None, description="403 `timed_out`: when the timeout ends "
                                     "(RFC 3339, UTC); 403 `banned`: null (permanent)")


# --- users and sessions --------------------------------------------------------------------------

class PublicUser(Answer):
    id: Id
    email: str
    display_name: str
    is_admin: bool


class Session(Answer):
    """Sign-up, log-in and refresh: a short-lived access token and a rotating refresh token."""

    success: Literal[True]
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="Seconds until the access token expires")
    token_type: Literal["Bearer"]
    user: PublicUser


class MyWebinar(Answer):
    id: Id
    title: str
    chat_open: bool


class Me(Answer):
    success: Literal[True]
    user: PublicUser
    webinars: list[MyWebinar]


class Profile(Answer):
    user_id: Id
    display_name: str
    email: str | None = Optional("Only for yourself, or for a moderator or host of a webinar "
                                 "you share; absent otherwise")


class ProfileAnswer(Answer):
    success: Literal[True]
    profile: Profile


# --- messages and the change feed ----------------------------------------------------------------

class Author(Answer):
    display_name: str
    role: Role = Field(description="The author's role in the webinar when they posted: the badge "
                       "(the same on every path, forever)")


class VisibleMessage(Answer):
    id: Id
    webinar_id: Id
    user_id: Id
    content: str
    created_at: str = Field(description="RFC 3339, UTC, milliseconds", json_schema_extra={
        "format": "date-time"})
    hidden: bool
    client_msg_id: str | None
    seq: Seq
    user: Author
    visibility: Literal["everyone", "staff"] = Field(description=(
        "`staff`: an attendee's message posted in hosts_only mode, seen by staff and its "
        "author only"))


class HiddenMessage(Answer):
    """What an attendee gets of a hidden message: that it exists and is hidden, nothing else."""

    id: Id
    webinar_id: Id
    hidden: Literal[True]
    seq: Seq


Message = VisibleMessage | HiddenMessage


class MessageCreated(Answer):
    success: Literal[True]
    message: VisibleMessage


class MessageAnswer(Answer):
    success: Literal[True]
    message: Message


class MessagePage(Answer):
    success: Literal[True]
    messages: list[Message]
    has_more: bool
    last_seq: Seq = Field(description="The webinar's feed position when the page was read")
    next_after: Id | None = Field(description="`after` for the next page (with `after`)")
    next_before: Id | None = Field(description="`before` for the older page (without `after`)")


class DeletedRef(Answer):
    id: Id
    seq: Seq


class Deleted(Answer):
    success: Literal[True]
    message: DeletedRef


class OldRef(Answer):
    id: Id


class ChangeEvent(Answer):
    seq: Seq
    type: Literal["INSERT", "UPDATE", "DELETE"]
    new: Message | None = Field(description="The message's state; null once it was deleted")
    old: OldRef | None = Field(description="Set for UPDATE and DELETE")


class Pinned(Answer):
    content: str
    pinned_at: str = Field(description="RFC 3339, UTC, milliseconds", json_schema_extra={
        "format": "date-time"})


ChatMode = Literal["everyone", "hosts_only", "read_only"]


class RoomView(Answer):
    """The room state: complete in every ROOM event (docs/webinar-features.md)."""

    chat_mode: ChatMode
    slow_mode_seconds: int
    pinned: Pinned | None


class RoomEvent(Answer):
    seq: Seq
    type: Literal["ROOM"]
    new: RoomView
    old: None


# --- Q&A (docs/webinar-features.md) ---------------------------------------------------------------

QuestionStatus = Literal["open", "answered", "dismissed"]


class VisibleQuestion(Answer):
    id: Id
    webinar_id: Id
    user_id: Id
    content: str
    created_at: str = Field(description="RFC 3339, UTC, milliseconds", json_schema_extra={
        "format": "date-time"})
    status: QuestionStatus
    votes: int = Field(ge=0)
    seq: Seq = Field(description="The change-feed seq of its current state")
    user: Author


class HiddenQuestion(Answer):
    """What an attendee gets of a dismissed question: that it exists and is gone from view."""

    id: Id
    webinar_id: Id
    hidden: Literal[True]
    seq: Seq


Question = VisibleQuestion | HiddenQuestion


class ListedQuestion(VisibleQuestion):
    voted: bool = Field(description="Whether the caller upvoted it (personal: not in events)")


class QuestionEvent(Answer):
    seq: Seq
    type: Literal["QUESTION"]
    new: Question | None = Field(description="The question's state; null if it is gone")
    old: OldRef


class QuestionCreated(Answer):
    success: Literal[True]
    question: VisibleQuestion


class QuestionVoted(Answer):
    success: Literal[True]
    question: Question
    voted: bool = Field(description="Whether the caller's vote is now counted")


class QuestionAnswer(Answer):
    success: Literal[True]
    question: Question


class QuestionList(Answer):
    success: Literal[True]
    questions: list[ListedQuestion] = Field(description=(
        "By `sort`: votes (most first, then oldest) or newest; attendees get no dismissed ones"))
    has_more: bool = Field(description="More questions than one answer carries (1000)")
    last_seq: Seq = Field(description="The webinar's feed position read before the list")


class ChangePage(Answer):
    success: Literal[True]
    changes: list[ChangeEvent | RoomEvent | QuestionEvent]
    last_seq: Seq
    has_more: bool


# --- webinars ------------------------------------------------------------------------------------

class WebinarView(Answer):
    id: Id
    title: str
    agency_id: Id
    client_id: Id
    chat_open: bool = Field(description="false exactly when chat_mode is read_only")
    chat_mode: ChatMode
    slow_mode_seconds: int
    pinned: Pinned | None
    last_seq: Seq = Field(description=(
        "The feed position this state was read at: a ROOM event with a higher seq replaces it"))
    role: Role


class WebinarAnswer(Answer):
    success: Literal[True]
    webinar: WebinarView


# --- transcript export (docs/export.md) ----------------------------------------------------------
# Written row by row as the store reads them (transcript.py), not through `respond`: tests check
# `transcript.row` against these models, and schemathesis checks the streamed documents.

Timestamp = Annotated[str, Field(description="RFC 3339, UTC, milliseconds",
                                 json_schema_extra={"format": "date-time"})]


class TranscriptWebinar(Answer):
    id: Id
    title: str
    agency_id: Id
    client_id: Id


class TranscriptMessage(Answer):
    """A message as it is stored, hidden or not."""

    id: Id
    seq: Seq = Field(description="The change-feed seq of its current state")
    created_at: Timestamp
    user_id: Id
    display_name: str = Field(description="The author's display name now")
    content: str
    hidden: bool
    deleted: Literal[False]
    deleted_at: None
    author_role: Role = Field(description="The author's role in the webinar when they posted "
                              "(the badge)")
    visibility: Literal["everyone", "staff"] = Field(description=(
        "`staff`: an attendee's message posted in hosts_only mode, seen by staff and its "
        "author only"))


class TranscriptDeletedMessage(Answer):
    """A deleted message: the store keeps only its id and its deletion (the DELETE change)."""

    id: Id
    seq: Seq = Field(description="The change-feed seq of its deletion")
    created_at: None
    user_id: None
    display_name: None
    content: None
    hidden: None
    deleted: Literal[True]
    deleted_at: Timestamp
    author_role: None
    visibility: None


class TranscriptQuestion(Answer):
    """A Q&A question as it is stored, dismissed or not."""

    id: Id
    seq: Seq = Field(description="The change-feed seq of its current state")
    created_at: Timestamp
    user_id: Id
    display_name: str = Field(description="The asker's display name now")
    content: str
    status: QuestionStatus
    votes: int = Field(ge=0)


class Transcript(Answer):
    """`GET /api/webinars/{id}/export?format=json`: the webinar's every message by id, deleted
    ones included. Sections added later (Q&A `questions`) come as new keys after `messages`."""

    webinar: TranscriptWebinar
    exported_at: Timestamp = Field(description="When the export started")
    messages: list[TranscriptMessage | TranscriptDeletedMessage] = Field(
        description="Ascending by id; each page as the database held it when it was read")
    questions: list[TranscriptQuestion] = Field(
        description="The Q&A questions, every status, ascending by id, with their votes")


# --- admin ---------------------------------------------------------------------------------------

class Agency(Answer):
    id: Id
    name: str


class AgencyAnswer(Answer):
    success: Literal[True]
    agency: Agency


class Client(Answer):
    id: Id
    agency_id: Id
    name: str


class ClientAnswer(Answer):
    success: Literal[True]
    client: Client


class AdminWebinar(Answer):
    id: Id
    agency_id: Id
    client_id: Id
    title: str
    chat_open: bool
    chat_mode: ChatMode
    slow_mode_seconds: int


class AdminWebinarAnswer(Answer):
    success: Literal[True]
    webinar: AdminWebinar


class UserAnswer(Answer):
    success: Literal[True]
    user: PublicUser


class Registration(Answer):
    webinar_id: Id
    user_id: Id
    role: Role


class RegistrationAnswer(Answer):
    success: Literal[True]
    registration: Registration


# --- operations ----------------------------------------------------------------------------------

class Health(Answer):
    success: Literal[True]
    status: Literal["ok"]
    node: str = Field(description="The answering process's bus node id")
    pid: int


class Readiness(Answer):
    """200 when every check is `ok`; 503 (with `error` naming the failing checks) otherwise."""

    success: bool
    checks: dict[str, str] = Field(description="`database`, `bus`: `ok` or `error: …`")
    error: str | None = Optional("Only when not ready")


class EventsAccepted(Answer):
    success: Literal[True]
    accepted: int


# --- timeouts and bans (docs/webinar-features.md) -------------------------------------------------

class BanState(Answer):
    webinar_id: Id
    user_id: Id
    banned: bool = Field(description="false after an unban")
    banned_until: Timestamp | None = Field(description="When the timeout ends; null: permanent "
                                           "(or not banned)")


class BanAnswer(Answer):
    success: Literal[True]
    ban: BanState


class BannedUser(Answer):
    user_id: Id
    display_name: str
    banned_until: Timestamp | None = Field(description="When the timeout ends; null: permanent")


class BanList(Answer):
    success: Literal[True]
    bans: list[BannedUser] = Field(description="Banned and timed-out users now, by user id")


class PresenceAnswer(Answer):
    success: Literal[True]
    count: int = Field(ge=0, description="Users connected to the webinar now, by socket or "
                       "long-poll, staff included; approximate across processes (a few seconds "
                       "late, a user on two processes counted twice). Nobody is named")


Error.model_rebuild()  # `Message` and `Question` are defined after it


def respond(model: type[Answer], *, http_status: int = 200,
            http_headers: dict[str, str] | None = None, **fields: Any) -> JSONResponse:
    """The answer `model(**fields)`, validated: a field the model does not declare, or of the
    wrong type, is a bug in the handler and raises here (a 500 with a log line)."""
    answer = model(**fields)
    return JSONResponse(answer.model_dump(mode="json", exclude_unset=True),
                        status_code=http_status, headers=http_headers)
