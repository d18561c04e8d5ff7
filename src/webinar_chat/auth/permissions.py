"""The one place that decides who may read, post, moderate and see what.

Every HTTP route and every realtime join goes through `check_access` and the `require_*` helpers
below. A decision needs: the webinar (tenant, chat open/closed), the user's registration (role,
banned). Tenancy follows from registrations: a user registered for agency A's webinar has no
registration for agency B's, so every read or write there is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..protocol.events import Audience, Message, iso_utc, visible_to
from ..store.store import Registration, Store, Webinar, now_utc

STAFF_ROLES = frozenset({"moderator", "host"})


class Denied(Exception):
    """A refused action: `status` is the HTTP status, `code` the machine-readable reason,
    `extra` more fields for the JSON error and the realtime error frame (a ban's
    `banned_until`). `until`: a refusal that ends by itself then (a timeout)."""

    def __init__(self, status: int, code: str, message: str, *,
                 extra: dict[str, Any] | None = None, until: datetime | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.until = until

    def lapsed(self, now: datetime | None = None) -> bool:
        """True once a timeout's refusal is over (a cached one must not outlive it)."""
        return self.until is not None and self.until <= (now or now_utc())


def banned(registration: Registration) -> Denied:
    """The refusal of a banned or timed-out user, on every path (HTTP, socket, long-poll)."""
    until = registration.banned_until
    if until is None:
        return Denied(403, "banned", "You are banned from this webinar's chat",
                      extra={"banned_until": None})
    return Denied(403, "timed_out", f"You are timed out of this webinar's chat until "
                  f"{until.astimezone(UTC):%H:%M:%S} UTC",
                  extra={"banned_until": iso_utc(until)}, until=until)


@dataclass(frozen=True, slots=True)
class WebinarAccess:
    webinar: Webinar
    user_id: int
    role: str
    display_name: str

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def audience(self) -> Audience:
        return Audience.STAFF if self.is_staff else Audience.ATTENDEE


async def check_access(store: Store, webinar_id: int, user_id: int) -> WebinarAccess:
    """May this user read this webinar's chat? Raises Denied (404 unknown, 403 not registered or
    banned); returns what the other checks need."""
    found = await store.webinar_access(webinar_id, user_id)
    if found is None:
        raise Denied(404, "not_found", "Webinar not found")
    webinar, registration, display_name = found
    return access_from(webinar, registration, user_id, display_name)


def access_from(
    webinar: Webinar, registration: Registration | None, user_id: int, display_name: str
) -> WebinarAccess:
    if registration is None:
        raise Denied(403, "forbidden", "You are not registered for this webinar")
    if registration.banned_at(now_utc()):  # a timeout that ended is no ban
        raise banned(registration)
    return WebinarAccess(webinar, user_id, registration.role, display_name)


def require_post(access: WebinarAccess) -> None:
    # Staff may still post in a read-only chat (announcements); attendees may not.
    if not access.webinar.chat_open and not access.is_staff:
        raise Denied(403, "chat_closed", "The chat is read-only: only hosts and moderators "
                     "can post")


def message_visibility(access: WebinarAccess) -> str:
    """`staff` for an attendee posting in hosts_only mode: seen by staff and the author only."""
    if access.webinar.chat_mode == "hosts_only" and not access.is_staff:
        return "staff"
    return "everyone"


def slow_mode_applies(access: WebinarAccess) -> bool:
    return not access.is_staff


def require_moderate(access: WebinarAccess) -> None:
    if not access.is_staff:
        raise Denied(403, "forbidden", "Only moderators and hosts can do this")


def require_delete(access: WebinarAccess, message: Message) -> None:
    if not access.is_staff and message.user_id != access.user_id:
        raise Denied(403, "forbidden", "You can only delete your own messages")


def require_visible(access: WebinarAccess, message: Message) -> None:
    """Hidden messages do not exist for attendees (404, not 403: no existence oracle)."""
    if not visible_to(message, access.audience, access.user_id):
        raise Denied(404, "not_found", "Message not found")


async def check_export(store: Store, webinar_id: int, user_id: int) -> Webinar:
    """May this user export the webinar's whole transcript (hidden and deleted messages
    included)? Its moderators and hosts, unless banned, and platform admins, who need no
    registration (as for the admin routes). Raises Denied: 404 unknown webinar, 403 otherwise.
    Always read fresh: an export is rare, and a ban must stop the next one at once."""
    user = await store.get_user(user_id)
    if user is not None and user.is_admin:
        webinar = await store.get_webinar(webinar_id)
        if webinar is None:
            raise Denied(404, "not_found", "Webinar not found")
        return webinar
    access = await check_access(store, webinar_id, user_id)
    if not access.is_staff:
        raise Denied(403, "forbidden", "Only moderators, hosts and admins can export the chat")
    return access.webinar


async def may_see_email(store: Store, viewer_id: int, subject_id: int) -> bool:
    return viewer_id == subject_id or await store.shares_staffed_webinar(viewer_id, subject_id)
