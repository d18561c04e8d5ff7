"""Errors the SDK raises. Everything derives from `ChatError`; `TransientError` is internal
(network trouble the SDK retries itself) and only escapes where a caller asked for one attempt."""

from __future__ import annotations


class ChatError(Exception):
    """Base class of every error raised by `webinar_chat.client`."""


class ApiError(ChatError):
    """The server answered with a permanent error (a 4xx other than 401/409/429)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AuthenticationError(ApiError):
    """Logging in failed, or the session expired and could not be renewed (no valid refresh
    token and no credentials to log in again). Create a new client with valid credentials."""


class JoinError(ApiError):
    """Joining a webinar was refused (403 not registered/banned, 404 unknown webinar)."""


class SendRejected(ApiError):
    """The server refused the message permanently (400 invalid content, 403 chat closed or not
    registered, 404 unknown webinar). Re-sending the same content will fail the same way."""

    def __init__(self, status: int, code: str, message: str, client_msg_id: str) -> None:
        super().__init__(status, code, message)
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
