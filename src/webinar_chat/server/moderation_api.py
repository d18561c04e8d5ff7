"""Timeouts and bans by a webinar's staff (docs/webinar-features.md, "Timeouts and bans").

- `POST /api/webinars/{id}/bans` `{user_id, duration_s}`: a timeout of `duration_s` seconds, or
  a permanent ban (`null`).
- `DELETE /api/webinars/{id}/bans/{user_id}`: unban (also ends a timeout early).
- `GET /api/webinars/{id}/bans`: who is banned or timed out now.

Allowed for the webinar's moderators and hosts (not banned themselves) and platform admins (no
registration needed, as for the transcript export). Staff cannot ban staff: the target must be a
registered attendee who is not a platform admin. Every change is published as an access change
(`bus.publish_access`), so the user's live subscriptions and parked long-polls are re-checked
and refused at once, on every node.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from starlette.requests import Request
from starlette.responses import Response

from ..auth import permissions as perm
from ..protocol.events import iso_utc
from ..store.store import NotFound, now_utc
from . import responses, schemas
from .errors import ApiError
from .http_api import _body, _denied, _path_id, _state, _user_id, ok

if TYPE_CHECKING:
    from .state import AppState

log = structlog.get_logger(__name__)


async def _staff(request: Request, webinar_id: int) -> tuple[AppState, int]:
    """The caller, if they may ban in this webinar: 404 unknown webinar, 403 otherwise."""
    state = _state(request)
    user_id = _user_id(request)
    structlog.contextvars.bind_contextvars(webinar_id=webinar_id)
    user = await state.store.get_user(user_id)
    if user is not None and user.is_admin:
        if await state.store.get_webinar(webinar_id) is None:
            raise ApiError(404, "not_found", "Webinar not found")
        return state, user_id
    try:
        access = await perm.check_access(state.store, webinar_id, user_id)
        perm.require_moderate(access)
    except perm.Denied as exc:
        raise _denied(exc) from None
    return state, user_id


async def _target(state: AppState, webinar_id: int, user_id: int) -> None:
    """The user to ban must be registered for the webinar and not staff (404 / 403)."""
    found = await state.store.webinar_access(webinar_id, user_id)
    registration = None if found is None else found[1]
    if registration is None:
        raise ApiError(404, "not_found", "Registration not found")
    user = await state.store.get_user(user_id)
    if registration.role in perm.STAFF_ROLES or (user is not None and user.is_admin):
        raise ApiError(403, "forbidden", "Moderators, hosts and admins cannot be banned")


async def apply_ban(state: AppState, webinar_id: int, user_id: int, banned: bool,
                    duration_s: int | None) -> datetime | None:
    """Store the ban (or unban) and tell every node; the timeout's end, or None."""
    until = now_utc() + timedelta(seconds=duration_s) if banned and duration_s else None
    try:
        await state.store.set_banned(webinar_id, user_id, banned, until)
    except NotFound:
        raise ApiError(404, "not_found", "Registration not found") from None
    await state.bus.publish_access(webinar_id, user_id)
    log.info("ban_changed", target_user_id=user_id, banned=banned,
             banned_until=None if until is None else iso_utc(until))
    return until


def _ban_answer(webinar_id: int, user_id: int, banned: bool, until: datetime | None) -> Response:
    return ok(responses.BanAnswer, ban={
        "webinar_id": webinar_id, "user_id": user_id, "banned": banned,
        "banned_until": None if until is None else iso_utc(until)})


async def ban_user(request: Request) -> Response:
    webinar_id = _path_id(request, "webinar_id")
    state, _ = await _staff(request, webinar_id)
    body = await _body(request, schemas.Ban)
    await _target(state, webinar_id, body.user_id)
    until = await apply_ban(state, webinar_id, body.user_id, True, body.duration_s)
    return _ban_answer(webinar_id, body.user_id, True, until)


async def unban_user(request: Request) -> Response:
    webinar_id = _path_id(request, "webinar_id")
    target = _path_id(request, "user_id")
    state, _ = await _staff(request, webinar_id)
    await _target(state, webinar_id, target)
    await apply_ban(state, webinar_id, target, False, None)
    return _ban_answer(webinar_id, target, False, None)


async def list_bans(request: Request) -> Response:
    webinar_id = _path_id(request, "webinar_id")
    state, _ = await _staff(request, webinar_id)
    rows = await state.store.list_bans(webinar_id, now_utc())
    return ok(responses.BanList, bans=[
        {"user_id": user_id, "display_name": name,
         "banned_until": None if until is None else iso_utc(until)}
        for user_id, name, until in rows])
