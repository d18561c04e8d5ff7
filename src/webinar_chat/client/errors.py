"""Errors the SDK raises. Everything derives from `ChatError`; `TransientError` is internal
(network trouble the SDK retries itself) and only escapes where a caller asked for one attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

# The codes of a refusal because the user is banned (permanently) or timed out in the webinar.
BAN_CODES = frozenset({"banned", "timed_out"})


def parse_banned_until(value: Any) -> datetime | None:
    """The `banned_until` of an error answer or frame (RFC 3339), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ChatError(Exception):
    """Base class of every error raised by `webinar_chat.client`."""


class ApiError(ChatError):
    """The server answered with a permanent error (a 4xx other than 401/409/429).
    `banned_until`: for a refusal because of a timeout (`code == "timed_out"`), when it ends."""

    def __init__(self, status: int, code: str, message: str, *,
                 banned_until: datetime | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.banned_until = banned_until

    @property
    def banned(self) -> bool:
        """Refused because the user is banned or timed out (`banned_until` None: permanent)."""
        return self.code in BAN_CODES


class Banned(ApiError):
    """A request of the SDK was refused because the user is banned (`code == "banned"`,
    `banned_until` None) or timed out (`code == "timed_out"`, `banned_until` when it ends) in
    the webinar. A join refused so is a `JoinError`, a send a `SendRejected`, each with the same
    `code`, `banned` and `banned_until`."""


class AuthenticationError(ApiError):
    """Logging in failed, or the session expired and could not be renewed (no valid refresh
    token and no credentials to log in again). Create a new client with valid credentials."""


class JoinError(ApiError):
    """Joining a webinar was refused (403 not registered/banned, 404 unknown webinar)."""


class SendRejected(ApiError):
    """The server refused the message permanently (400 invalid content, 403 chat closed or not
    registered, 404 unknown webinar). Re-sending the same content will fail the same way."""

    def __init__(self, status: int, code: str, message: str, client_msg_id: str, *,
                 banned_until: datetime | None = None) -> None:
        super().__init__(status, code, message, banned_until=banned_until)
        self.client_msg_id = client_msg_id


class SendGaveUp(ChatError):
    """`send_give_up_after` elapsed without an answer. The message may or may not be stored:
    call `send(..., client_msg_id=exc.client_msg_id)` later to finish it without a duplicate."""

    def __init__(self, client_msg_id: str, last_error: str) -> None:
        super().__init__(f"gave up sending {client_msg_id}: {last_error}")
        self.client_msg_id = client_msg_id
        self.last_error = last_error


class ProtocolError(ChatError):
    """The server sent something that does not follow docs/realtime.md."""


class ClientClosed(ChatError):
    """The client was closed (left its `async with` block) while the call was waiting."""


class TransientError(ChatError):
    """Network error, timeout or 5xx: worth retrying with backoff."""
