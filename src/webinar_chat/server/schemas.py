"""Request bodies (validated by pydantic; the OpenAPI document is generated from them)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..auth.passwords import MIN_PASSWORD_LENGTH, password_problem
from .text_rules import WHITESPACE, clean_display_name


def _integral(value: object) -> object:
    """`1270.0` is an integer in JSON (and in the JSON Schema the document declares), so it is
    taken as 1270; `1270.5`, `true` and `"1270"` stay refused by the strict int check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# (The bounds go on the int itself, before the validator: after it, pydantic would write them into
# the JSON Schema as `ge`/`le`, which JSON Schema does not know, instead of minimum/maximum.)
# A database id: positive and within a signed 64-bit column (a larger one is a 400, not a driver
# overflow on the way to the database).
Id = Annotated[StrictInt, Field(ge=1, le=2**63 - 1), BeforeValidator(_integral)]
SlowModeSeconds = Annotated[StrictInt, Field(ge=0, le=3600), BeforeValidator(_integral)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class CreateMessage(Body):
    webinarId: Id
    content: Annotated[StrictStr, Field(
        min_length=1, description="Trimmed before it is stored. At most MAX_MESSAGE_LENGTH "
        "characters; no control characters but newline, tab and CR; not only spaces")]
    clientMsgId: StrictStr | None = Field(
        default=None, json_schema_extra={"format": "uuid"},
        description="UUID chosen by the client once per message; re-sends reuse it "
        "(idempotency key). Stored in lower case")

    @field_validator("clientMsgId")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        # The RFC 9562 text form only (what `format: uuid` means): uuid.UUID would also take
        # braces, a `urn:uuid:` prefix and 32 bare hex digits.
        if value is None:
            return None
        if _UUID_TEXT.fullmatch(value) is None:
            raise ValueError("must be a UUID (8-4-4-4-12 hex digits)")
        return str(uuid.UUID(value))


class HideMessage(Body):
    hidden: StrictBool


class AskQuestion(Body):
    """A Q&A question (docs/webinar-features.md, "Q&A"): the text rules of a message."""

    content: Annotated[StrictStr, Field(
        min_length=1, description="Trimmed before it is stored. At most MAX_MESSAGE_LENGTH "
        "characters; no control characters but newline, tab and CR; not only spaces")]
    clientMsgId: StrictStr | None = Field(
        default=None, json_schema_extra={"format": "uuid"},
        description="UUID chosen by the client once per question; re-sends reuse it "
        "(idempotency key). Stored in lower case")

    @field_validator("clientMsgId")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _UUID_TEXT.fullmatch(value) is None:
            raise ValueError("must be a UUID (8-4-4-4-12 hex digits)")
        return str(uuid.UUID(value))


class VoteQuestion(Body):
    voted: StrictBool = Field(description="true: upvote (once per user); false: take it back")


class SetQuestionStatus(Body):
    status: Literal["open", "answered", "dismissed"] = Field(
        description="answered: marked as answered; dismissed: hidden from attendees; open: "
        "reopened")


# Something, an @, something; no space anywhere. The spaces are listed, not `\s`, which means
# different characters to pydantic's Rust engine and to ECMA-262 (text_rules.py).
EMAIL_PATTERN = f"^[^@{WHITESPACE}]+@[^@{WHITESPACE}]+$"


class NewAccount(Body):
    """Sign-up and admin-created users: the display name is cleaned (text_rules.py) and the
    password must meet the rules of auth/passwords.py."""

    email: Annotated[StrictStr, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
    password: Annotated[StrictStr, Field(
        min_length=MIN_PASSWORD_LENGTH, max_length=256,
        description="Also refused (400, beyond what a schema can say): fewer than 4 different "
        "characters, one of the 30,000 most common leaked passwords, or the account's own e-mail "
        "or name")]
    display_name: Annotated[StrictStr, Field(
        min_length=1, max_length=80, description="Trimmed and NFC-normalised; one line, no "
        "control characters, at least one visible character")]

    @field_validator("display_name")
    @classmethod
    def _display_name(cls, value: str) -> str:
        return clean_display_name(value)

    @model_validator(mode="after")
    def _password(self) -> NewAccount:
        problem = password_problem(self.password, email=self.email,
                                   display_name=self.display_name)
        if problem is not None:
            raise PydanticCustomError("weak_password", "password: {problem}", {"problem": problem})
        return self


class Signup(NewAccount):
    pass


class Login(Body):
    email: Annotated[StrictStr, Field(max_length=254)]
    password: Annotated[StrictStr, Field(max_length=256)]


class Refresh(Body):
    refresh_token: Annotated[StrictStr, Field(max_length=200)]


class Logout(Body):
    refresh_token: Annotated[StrictStr, Field(max_length=200)] | None = None


class CreateAgency(Body):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]


class CreateClient(Body):
    agency_id: Id
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]


ChatMode = Literal["everyone", "hosts_only", "read_only"]


class CreateWebinar(Body):
    client_id: Id
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    chat_open: StrictBool | None = Field(None, description="false: read_only (with chat_mode, "
                                         "chat_mode wins)")
    chat_mode: ChatMode | None = None
    slow_mode_seconds: SlowModeSeconds = 0

    def mode(self) -> str:
        return _mode(self.chat_mode, self.chat_open) or "everyone"


class UpdateWebinar(Body):
    chat_open: StrictBool | None = Field(None, description="false: read_only, true: everyone "
                                         "(with chat_mode, chat_mode wins)")
    chat_mode: ChatMode | None = None
    slow_mode_seconds: SlowModeSeconds | None = None

    def mode(self) -> str | None:
        return _mode(self.chat_mode, self.chat_open)


def _mode(chat_mode: str | None, chat_open: bool | None) -> str | None:
    if chat_mode is not None:
        return chat_mode
    if chat_open is None:
        return None
    return "everyone" if chat_open else "read_only"


class SetPinned(Body):
    content: Annotated[StrictStr, Field(
        min_length=1, description="The announcement, with the text rules of a message: trimmed "
        "before it is stored, at most MAX_MESSAGE_LENGTH characters, no control characters but "
        "newline, tab and CR, not only spaces")]


class CreateUser(NewAccount):
    is_admin: StrictBool = False


class CreateRegistration(Body):
    webinar_id: Id
    user_id: Id
    role: Literal["attendee", "moderator", "host"] = "attendee"


# A timeout's length (POST …/bans): 1 s to 365 days; null is a permanent ban.
BanSeconds = Annotated[StrictInt, Field(ge=1, le=31_536_000), BeforeValidator(_integral)]


class SetBanned(Body):
    webinar_id: Id
    user_id: Id
    banned: StrictBool
    duration_s: BanSeconds | None = Field(None, description="With banned: a timeout of this "
                                          "many seconds; absent or null: permanent")


class Ban(Body):
    """POST /api/webinars/{id}/bans (staff): time out or ban one registered attendee."""

    user_id: Id
    duration_s: BanSeconds | None = Field(description="Seconds (1–31536000) of a timeout; null: "
                                          "a permanent ban")


# Monitoring events (POST /api/metrics/events; server/client_events.py).
MAX_EVENTS_PER_BATCH = 100
MAX_EVENT_METADATA_BYTES = 2048


class ClientEvent(Body):
    type: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    timestamp: Annotated[StrictStr, Field(max_length=40)] | None = None
    webinarId: Id | None = None
    userId: Id | None = Field(default=None, description="Ignored: events are attributed to the "
                              "authenticated user")
    metadata: dict[str, object] = Field(default_factory=dict, description="Free-form context "
                                        f"(reconnectTries, errorMessage, …); at most "
                                        f"{MAX_EVENT_METADATA_BYTES} bytes as JSON")


class ClientEvents(Body):
    sessionId: Annotated[StrictStr, Field(min_length=1, max_length=64,
                                          pattern=r"^[A-Za-z0-9._:-]+$")] | None = Field(
        default=None, description="One per page load or SDK client (the rate limit's key)")
    events: Annotated[list[ClientEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]
