"""What to do with each answer to `POST /api/messages/create` (SPEC §3/§5). Pure: the I/O loop
in `client.py` performs the outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Stored:
    """The message is stored; `message` is the server's row. `duplicate`: it was stored by an
    earlier attempt (409), which is a success for an idempotent retry."""

    message: Mapping[str, Any]
    duplicate: bool


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Re-send with the same client_msg_id after `delay` seconds (None: the backoff schedule)."""

    reason: str
    delay: float | None = None


@dataclass(frozen=True, slots=True)
class RenewToken:
    """The access token was refused (401): renew it, then re-send at once."""

    code: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A permanent refusal: re-sending cannot help."""

    status: int
    code: str
    message: str
    banned_until: str | None = None  # a timeout's end (code `timed_out`)


SendOutcome = Stored | RetryLater | RenewToken | Rejected


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify_send_response(status: int, body: Any, retry_after: str | None) -> SendOutcome:
    """Decide what an HTTP answer to a create means. `body` is the decoded JSON (anything else
    if the body was not JSON — e.g. an HTML error page from a proxy)."""
    data: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    code = str(data.get("code") or "")
    error = str(data.get("error") or "")
    message = data.get("message")
    if status == 200:
        if isinstance(message, Mapping):
            return Stored(message, duplicate=False)
        # Stored, but the answer is unreadable: the retry gets a 409 carrying the row.
        return RetryLater("200 without a message")
    if status == 409 and isinstance(message, Mapping):
        return Stored(message, duplicate=True)
    if status == 401:
        return RenewToken(code or "unauthorized")
    if status == 429:
        delay = parse_retry_after(retry_after)
        if delay is None and isinstance(data.get("retry_after"), int | float):
            delay = float(data["retry_after"])
        return RetryLater(f"429 {code or 'rate_limited'}", delay if delay is not None else 1.0)
    if status in (408, 425) or status >= 500 or status < 200:
        return RetryLater(f"HTTP {status}")
    until = data.get("banned_until")
    return Rejected(status, code or f"http_{status}", error or f"HTTP {status}",
                    until if isinstance(until, str) else None)
