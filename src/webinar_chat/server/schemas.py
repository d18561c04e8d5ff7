"""Request bodies (validated by pydantic; the OpenAPI document is generated from them)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
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
from .text_rules import clean_display_name

# A database id: positive and within a signed 64-bit column (a larger one is a 400, not a driver
# overflow on the way to the database).
Id = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CreateMessage(Body):
    webinarId: Id
    content: StrictStr
    clientMsgId: StrictStr | None = Field(default=None, description="UUID chosen by the client once "
                                          "per message; re-sends reuse it (idempotency key)")

    @field_validator("clientMsgId")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a UUID") from None


class HideMessage(Body):
    hidden: StrictBool


class NewAccount(Body):
    """Sign-up and admin-created users: the display name is cleaned (text_rules.py) and the
    password must meet the rules of auth/passwords.py."""

    email: Annotated[StrictStr, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    password: Annotated[StrictStr, Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)]
    display_name: Annotated[StrictStr, Field(min_length=1, max_length=80)]

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


class CreateWebinar(Body):
    client_id: Id
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    chat_open: StrictBool = True
    slow_mode_seconds: Annotated[StrictInt, Field(ge=0, le=3600)] = 0


class UpdateWebinar(Body):
    chat_open: StrictBool | None = None
    slow_mode_seconds: Annotated[StrictInt, Field(ge=0, le=3600)] | None = None


class CreateUser(NewAccount):
    is_admin: StrictBool = False


class CreateRegistration(Body):
    webinar_id: Id
    user_id: Id
    role: Literal["attendee", "moderator", "host"] = "attendee"


class SetBanned(Body):
    webinar_id: Id
    user_id: Id
    banned: StrictBool


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
