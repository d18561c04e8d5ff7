"""HTTP routes of SPEC §3. Each handler: authenticate → validate → permission check → store →
publish → JSON. Every failure is an `ApiError` (errors.py) so every branch ends in the same shape."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..auth import permissions as perm
from ..auth.passwords import hash_password, verify_password
from ..auth.tokens import TokenError, hash_refresh_token, new_refresh_token
from ..bus import BusNotReady
from ..protocol.events import Audience, encode_for, message_payload, room_payload
from ..store.store import DuplicateMessage, EmailTaken, NotFound, SlowMode, User, now_utc
from ..transcript import FORMATS, MEDIA_TYPES, filename, transcript_chunks
from . import history_pages, responses, schemas
from .client_events import RateLimited
from .errors import ApiError, JSONResponse, validation_message
from .longpoll import changes_body, ring_body, viewer_key
from .rate_limits import client_ip, rate_limited
from .text_rules import RESERVED_DISPLAY_NAME, content_problem, display_name_key

if TYPE_CHECKING:
    from ..store.store import MessagePage
    from .hub import Room
    from .state import AppState

B = TypeVar("B", bound=BaseModel)
log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
def _state(request: Request) -> AppState:
    return request.app.state.chat  # type: ignore[no-any-return]


async def _body(request: Request, model: type[B]) -> B:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", "Request body too large")
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", validation_message(exc)) from None


def _user_id(request: Request) -> int:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "Missing bearer token",
                       headers={"WWW-Authenticate": "Bearer"})
    try:
        user_id = _state(request).tokens.verify_access(token.strip()).user_id
    except TokenError as exc:
        raise ApiError(401, exc.code, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    structlog.contextvars.bind_contextvars(user_id=user_id)  # this request's log lines
    return user_id


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _int_param(request: Request, name: str, *, default: int | None = None, low: int = 0,
               high: int = 2**63 - 1) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # Plain ASCII decimal only: int() would also take " 12", "1_000" and "１２".
    if _INTEGER.fullmatch(raw) is None:
        raise ApiError(400, "invalid_request", f"{name}: must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "invalid_request", f"{name}: must be between {low} and {high}")
    return value


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    # ASCII digits only ("１２" is a digit string to Python), and within a signed 64-bit column.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 \
            or not 1 <= int(raw) <= 2**63 - 1:
        raise ApiError(400, "invalid_request", f"{name}: must be a positive integer")
    return int(raw)


async def _access(request: Request, webinar_id: int, user_id: int, *, cached: bool
                  ) -> perm.WebinarAccess:
    """Read access through the app's cache (auth/access_cache.py); a refusal is an ApiError."""
    structlog.contextvars.bind_contextvars(webinar_id=webinar_id)
    try:
        return await _state(request).access.check(webinar_id, user_id, cached=cached)
    except perm.Denied as exc:
        raise _denied(exc) from None


def _denied(exc: perm.Denied) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, extra=exc.extra)


def ok(model: type[responses.Answer], **fields: Any) -> JSONResponse:
    """A success answer, built and checked through its model (responses.py)."""
    return responses.respond(model, success=True, **fields)


def message_ok(**fields: Any) -> JSONResponse:
    """A success answer carrying message payloads (protocol/events.py), encoded without the model:
    these are the busy routes, and tests check the payload builders against the models."""
    return JSONResponse({"success": True, **fields})


# Answers that carry a token must never be stored by a browser or a proxy cache.
NO_STORE = {"Cache-Control": "no-store"}


def tokens_ok(**fields: Any) -> JSONResponse:
    return responses.respond(responses.Session, http_headers=NO_STORE, success=True, **fields)


# --- auth ----------------------------------------------------------------------------------------

def _public_user(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "display_name": user.display_name,
            "is_admin": user.is_admin}


async def _issue_session(state: AppState, user: User, family_id: str | None = None
                         ) -> dict[str, Any]:
    access, ttl = state.tokens.issue_access(user.id)
    refresh, refresh_hash = new_refresh_token()
    expires = now_utc() + timedelta(seconds=state.settings.refresh_token_ttl_s)
    await state.store.add_refresh_token(refresh_hash, user.id, family_id or str(uuid.uuid4()),
                                        expires)
    return {"access_token": access, "refresh_token": refresh, "expires_in": ttl,
            "token_type": "Bearer", "user": _public_user(user)}


async def signup(request: Request) -> Response:
    state = _state(request)
    body = await _body(request, schemas.Signup)
    # Every well-formed sign-up counts, taken or not (409 too: it tells an address exists).
    decision = await state.limits.take("signup_ip",
                                       client_ip(request.scope, state.limits.trusted_proxies))
    if not decision.allowed:
        raise rate_limited(decision, "Too many sign-ups from this address")
    # Not the name of a host, moderator or admin (impersonation); checked before the hash.
    if await state.store.staff_display_name_taken(display_name_key(body.display_name),
                                                  display_name_key):
        raise ApiError(409, "display_name_reserved", RESERVED_DISPLAY_NAME)
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        user = await state.store.create_user(body.email, password_hash, body.display_name.strip())
    except EmailTaken:
        raise ApiError(409, "email_taken", "An account with this e-mail already exists") from None
    return tokens_ok(**await _issue_session(state, user))


async def login(request: Request) -> Response:
    state = _state(request)
    body = await _body(request, schemas.Login)
    # Failed log-ins are limited per (account, client IP), per account and per client IP
    # (docs/operations.md, "Rate limits"). A token of each is taken *before* the password is
    # checked, so that parallel guesses cannot outrun the buckets, and given back when the
    # password was right: a successful log-in consumes nothing. A refusal checks no password
    # (its answer says nothing about it) and costs no argon2 hash. Unknown accounts count too
    # (the answers must not tell which addresses exist).
    account = body.email.strip().lower()
    ip = client_ip(request.scope, state.limits.trusted_proxies)
    takes = (("login_account_ip", f"{account}\n{ip}"), ("login_account", account),
             ("login_ip", ip))
    decision = await state.limits.take_all(takes)
    if not decision.allowed:
        raise rate_limited(decision, "Too many failed log-ins")
    failed = False
    try:
        user = await state.store.get_user_by_email(body.email)
        valid = await asyncio.to_thread(verify_password, user.password_hash if user else None,
                                        body.password)
        if user is None or not valid:
            failed = True
            raise ApiError(401, "invalid_credentials", "Wrong e-mail or password")
    finally:
        if not failed:
            await state.limits.refund_all(takes)
    return tokens_ok(**await _issue_session(state, user))


async def refresh(request: Request) -> Response:
    state = _state(request)
    body = await _body(request, schemas.Refresh)
    old_hash = hash_refresh_token(body.refresh_token)
    record = await state.store.get_refresh_token(old_hash)
    if record is None or record.revoked_at is not None:
        raise ApiError(401, "invalid_token", "Invalid refresh token")
    if record.rotated_at is not None:
        # A rotated token came back: it was copied. Revoke the whole family (both holders log in
        # again) — OAuth 2.0 Security BCP, refresh token rotation.
        await state.store.revoke_refresh_family(record.family_id)
        raise ApiError(401, "token_reused", "Refresh token re-use detected; please log in again")
    if record.expires_at <= now_utc():
        raise ApiError(401, "token_expired", "Refresh token expired")
    user = await state.store.get_user(record.user_id)
    if user is None:
        raise ApiError(401, "invalid_token", "Invalid refresh token")
    access, ttl = state.tokens.issue_access(user.id)
    new_token, new_hash = new_refresh_token()
    expires = now_utc() + timedelta(seconds=state.settings.refresh_token_ttl_s)
    if not await state.store.rotate_refresh_token(old_hash, new_hash, user.id, record.family_id,
                                                  expires):
        await state.store.revoke_refresh_family(record.family_id)
        raise ApiError(401, "token_reused", "Refresh token re-use detected; please log in again")
    return tokens_ok(access_token=access, refresh_token=new_token, expires_in=ttl,
                     token_type="Bearer", user=_public_user(user))


async def logout(request: Request) -> Response:
    state = _state(request)
    body = await _body(request, schemas.Logout)
    if body.refresh_token:
        record = await state.store.get_refresh_token(hash_refresh_token(body.refresh_token))
        if record is not None:
            await state.store.revoke_refresh_family(record.family_id)
    return ok(responses.Ok)


async def me(request: Request) -> Response:
    state = _state(request)
    user = await state.store.get_user(_user_id(request))
    if user is None:
        raise ApiError(401, "invalid_token", "Unknown user")
    webinars = await state.store.list_webinars(user.id)
    return ok(responses.Me, user=_public_user(user),
              webinars=[{"id": w.id, "title": w.title, "chat_open": w.chat_open} for w in webinars])


# --- messages ------------------------------------------------------------------------------------

async def create_message(request: Request) -> Response:
    """Counted by outcome, and timed when a message is stored (metrics.py)."""
    metrics = _state(request).metrics
    started = time.perf_counter()
    try:
        response = await _create_message(request)
    except ApiError as exc:
        if exc.code == "duplicate":
            metrics.message_create("duplicate", "", None)
        else:
            metrics.message_create("rejected", exc.code, None)
        raise
    metrics.message_create("ok", "", time.perf_counter() - started)
    return response


def _checked_text(state: AppState, raw: str) -> str:
    """A message's (or an announcement's) text, stripped, or a 400 saying what is wrong."""
    content = raw.strip()
    if not content:
        raise ApiError(400, "invalid_request", "content: must not be empty")
    if len(raw) > state.settings.max_message_length:  # as sent (the document's maxLength)
        raise ApiError(400, "invalid_request",
                       f"content: at most {state.settings.max_message_length} characters")
    problem = content_problem(content)
    if problem is not None:
        raise ApiError(400, "invalid_request", f"content: {problem}")
    return content


async def _create_message(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    body = await _body(request, schemas.CreateMessage)
    if body.clientMsgId is not None:
        structlog.contextvars.bind_contextvars(client_msg_id=str(body.clientMsgId))
    content = _checked_text(state, body.content)
    access = await _access(request, body.webinarId, user_id, cached=False)
    try:
        perm.require_post(access)
    except perm.Denied as exc:
        # A retry of a message stored before the chat closed still gets its 409.
        if body.clientMsgId is not None:
            existing = await state.store.get_message_by_client_id(body.webinarId, user_id,
                                                                  body.clientMsgId)
            if existing is not None:
                raise _duplicate(existing, access.audience) from None
        raise _denied(exc) from None
    # Creates per user (docs/operations.md, "Rate limits"), moderators and hosts with their own
    # budget. Taken only now, after everything that can refuse without storing, and given back
    # when the store stores nothing (duplicate, slow mode, an error): only a stored message
    # costs. A refusal stores nothing, but a retry of a message already stored still gets its
    # 409 (the client must learn it was stored), as with slow mode.
    limit = "messages_staff" if access.is_staff else "messages"
    decision = await state.limits.take(limit, str(user_id))
    if not decision.allowed:
        if body.clientMsgId is not None:
            existing = await state.store.get_message_by_client_id(body.webinarId, user_id,
                                                                  body.clientMsgId)
            if existing is not None:
                raise _duplicate(existing, access.audience)
        raise rate_limited(decision, "Too many messages")
    stored = False
    try:
        message, change = await state.store.create_message(
            access.webinar, user_id, access.display_name, content, body.clientMsgId,
            slow_mode_applies=perm.slow_mode_applies(access), author_role=access.role,
            visibility=perm.message_visibility(access),
        )
        stored = True
    except DuplicateMessage as dup:
        raise _duplicate(dup.message, access.audience) from None
    except SlowMode as slow:
        raise ApiError(429, "slow_mode", str(slow),
                       headers={"Retry-After": str(max(1, math.ceil(slow.retry_after_s)))},
                       extra={"retry_after": round(slow.retry_after_s, 3)}) from None
    except NotFound:
        raise ApiError(404, "not_found", "Webinar not found") from None
    finally:
        if not stored:
            await state.limits.refund(limit, str(user_id))
    await state.hub.publish(change)
    return message_ok(message=message_payload(message, access.audience, user_id))


def _duplicate(message: Any, audience: Audience) -> ApiError:
    # Always the caller's own message (found by their clientMsgId): shown to them as its author.
    return ApiError(409, "duplicate", "Duplicate message detected",
                    extra={"message": message_payload(message, audience, message.user_id)})


async def list_messages(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    after = _int_param(request, "after")
    before = _int_param(request, "before")
    limit = _int_param(request, "limit", default=100, low=1, high=500)
    assert limit is not None
    access = await _access(request, webinar_id, user_id, cached=True)
    latest = after is None and before is None
    room = state.hub.rooms.get(webinar_id) if latest else None
    if room is not None:
        body = history_pages.cached_page(room.history_pages, room.released_seq, access.audience,
                                         limit, user_id)
        if body is not None:
            return JSONResponse(body)
    page = await state.store.list_messages(webinar_id, after=after,
                                           before=before if after is None else None,
                                           limit=limit, include_hidden=access.is_staff,
                                           viewer_id=user_id)
    if room is not None:
        return await _shared_latest_page(state, room, access.audience, limit, user_id, page)
    found = page.messages
    has_more = page.has_more
    if after is not None and before is not None:
        # Both: the messages between them, ascending from `after`. The page is cut at `before`;
        # once it reached `before`, nothing more lies in the range.
        found = [m for m in found if m.id < before]
        has_more = has_more and len(found) == len(page.messages)
    messages = [message_payload(m, access.audience, user_id) for m in found]
    cursor = messages[-1]["id"] if after is not None and messages else None
    return message_ok(messages=messages, has_more=has_more, last_seq=page.last_seq,
              next_after=cursor if has_more else None,
              next_before=messages[0]["id"] if after is None and has_more and messages
              else None)


async def _shared_latest_page(state: AppState, room: Room, audience: Audience, limit: int,
                              user_id: int, page: MessagePage) -> Response:
    """The latest page, kept on the room for the next readers when it is everybody's
    (server/history_pages.py): for attendees, when it holds no staff-only message (the reader's
    own) and with who else wrote one since its oldest message, who must not get it."""
    messages = [message_payload(m, audience, user_id) for m in page.messages]
    body = orjson.dumps({"success": True, "messages": messages, "has_more": page.has_more,
                         "last_seq": page.last_seq, "next_after": None,
                         "next_before": messages[0]["id"] if page.has_more and messages
                         else None})
    authors: frozenset[int] = frozenset()
    shared = True
    if audience is Audience.ATTENDEE:
        shared = all(m.visibility != "staff" for m in page.messages)
        if shared:
            oldest = page.messages[0].id if page.messages else 0
            authors = frozenset(await state.store.staff_only_authors(room.webinar_id, oldest))
    if shared:
        history_pages.keep_page(room.history_pages, room.released_seq, audience, limit,
                                history_pages.HistoryPage(body, page.last_seq, time.monotonic(),
                                                          authors))
    return JSONResponse(body)


async def list_changes(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    after_seq = _int_param(request, "after_seq", default=0)
    limit = _int_param(request, "limit", default=500, low=1, high=1000)
    assert after_seq is not None and limit is not None
    raw_wait = request.query_params.get("wait")
    try:
        wait = float(raw_wait) if raw_wait is not None else 0.0
    except ValueError:
        raise ApiError(400, "invalid_request", "wait: must be a number of seconds") from None
    if not 0 <= wait <= state.settings.long_poll_max_wait_s or math.isnan(wait):
        raise ApiError(400, "invalid_request",
                       f"wait: must be between 0 and {state.settings.long_poll_max_wait_s:g}")
    access = await _access(request, webinar_id, user_id, cached=True)
    room = await state.hub.room(webinar_id)
    if wait > 0:
        state.slow_polls += 1
        if state.presence is not None:
            state.presence.polled(webinar_id, user_id)
        await state.hub.wait_for_change(room, after_seq, wait)
        # A ban during the wait: the answer must not carry what the user may no longer see
        # (a cache hit when nothing changed; access_changes.py drops the entry when it did).
        access = await _access(request, webinar_id, user_id, cached=True)
    state.hub.settle(room)
    body = ring_body(room, viewer_key(room, (access.audience, after_seq, limit, 0), user_id))
    if body is None:  # older than the room's ring: read the feed (not memoized)
        page = await state.store.changes_after(webinar_id, after_seq, limit)
        body = changes_body([encode_for(c, access.audience, user_id) for c in page.changes],
                            page.last_seq, page.has_more)
    return JSONResponse(body)


async def _message_for_moderation(request: Request, user_id: int) -> tuple[Any, perm.WebinarAccess]:
    state = _state(request)
    message_id = _path_id(request, "message_id")
    message = await state.store.get_message(message_id)
    if message is None:
        raise ApiError(404, "not_found", "Message not found")
    access = await _access(request, message.webinar_id, user_id, cached=False)
    try:
        perm.require_visible(access, message)
    except perm.Denied as exc:
        raise _denied(exc) from None
    return message, access


async def hide_message(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    body = await _body(request, schemas.HideMessage)
    message, access = await _message_for_moderation(request, user_id)
    try:
        perm.require_moderate(access)
    except perm.Denied as exc:
        raise _denied(exc) from None
    try:
        change = await state.store.set_hidden(message, body.hidden)
    except NotFound:
        raise ApiError(404, "not_found", "Message not found") from None
    await state.hub.publish(change)
    assert change.message is not None
    return message_ok(message=message_payload(change.message, access.audience))


async def delete_message(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    message, access = await _message_for_moderation(request, user_id)
    try:
        perm.require_delete(access, message)
    except perm.Denied as exc:
        raise _denied(exc) from None
    try:
        change = await state.store.delete_message(message)
    except NotFound:
        raise ApiError(404, "not_found", "Message not found") from None
    await state.hub.publish(change)
    return ok(responses.Deleted, message={"id": message.id, "seq": change.seq})


# --- transcript export (docs/export.md) ----------------------------------------------------------

async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator with no chunk


async def export_transcript(request: Request) -> Response:
    """The webinar's whole transcript as a download, streamed a page at a time from the store
    (transcript.py): memory does not grow with the webinar. Staff and admins only."""
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    fmt = next((f for f in FORMATS if f == request.query_params.get("format", "json")), None)
    if fmt is None:
        raise ApiError(400, "invalid_request", "format: must be one of " + ", ".join(FORMATS))
    structlog.contextvars.bind_contextvars(webinar_id=webinar_id)
    try:
        webinar = await perm.check_export(state.store, webinar_id, user_id)
    except perm.Denied as exc:
        raise _denied(exc) from None
    # HEAD gets the GET's headers without reading the whole webinar for a body nobody receives.
    chunks = (_nothing() if request.method == "HEAD"
              else transcript_chunks(state.store, webinar, fmt, now_utc()))
    return StreamingResponse(chunks, media_type=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": f'attachment; filename="{filename(webinar.id, fmt)}"',
        **NO_STORE})


# --- webinars and profiles -----------------------------------------------------------------------

def _webinar_json(access: perm.WebinarAccess) -> dict[str, Any]:
    w = access.webinar
    return {"id": w.id, "title": w.title, "agency_id": w.agency_id, "client_id": w.client_id,
            "chat_open": w.chat_open, **room_payload(w.room), "last_seq": w.last_seq,
            "role": access.role}


async def get_webinar(request: Request) -> Response:
    user_id = _user_id(request)
    access = await _access(request, _path_id(request, "webinar_id"), user_id, cached=False)
    return ok(responses.WebinarAnswer, webinar=_webinar_json(access))


async def update_webinar(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    body = await _body(request, schemas.UpdateWebinar)
    access = await _access(request, webinar_id, user_id, cached=False)
    if access.role != "host":
        raise ApiError(403, "forbidden", "Only hosts can change chat settings")
    try:
        webinar, change = await state.store.update_webinar(
            webinar_id, chat_mode=body.mode(), slow_mode_seconds=body.slow_mode_seconds)
    except NotFound:
        raise ApiError(404, "not_found", "Webinar not found") from None
    return await _room_changed(request, access, webinar, change)


async def _room_changed(request: Request, access: perm.WebinarAccess, webinar: Any,
                        change: Any) -> Response:
    """After a ROOM change was stored: deliver it, drop cached accesses (they hold the webinar's
    settings) on every node, and answer with the new state."""
    state = _state(request)
    await state.hub.publish(change)
    await state.bus.publish_access(webinar.id, None)
    return ok(responses.WebinarAnswer, webinar=_webinar_json(
        perm.WebinarAccess(webinar, access.user_id, access.role, access.display_name)))


async def set_pinned(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    content: str | None = None
    if request.method == "PUT":
        body = await _body(request, schemas.SetPinned)
        content = _checked_text(state, body.content)
    access = await _access(request, webinar_id, user_id, cached=False)
    try:
        perm.require_moderate(access)
    except perm.Denied as exc:
        raise _denied(exc) from None
    try:
        webinar, change = await state.store.set_pinned(webinar_id, content)
    except NotFound:
        raise ApiError(404, "not_found", "Webinar not found") from None
    return await _room_changed(request, access, webinar, change)


async def get_profile(request: Request) -> Response:
    state = _state(request)
    viewer_id = _user_id(request)
    subject_id = _path_id(request, "user_id")
    user = await state.store.get_user(subject_id)
    if user is None:
        raise ApiError(404, "not_found", "User not found")
    profile: dict[str, Any] = {"user_id": user.id, "display_name": user.display_name}
    if await perm.may_see_email(state.store, viewer_id, subject_id):
        profile["email"] = user.email
    return ok(responses.ProfileAnswer, profile=profile)


# --- health --------------------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    # Which process answered: behind a load balancer or with --workers, operators (and tests)
    # can tell the nodes apart.
    return ok(responses.Health, status="ok", node=_state(request).bus.node_id, pid=os.getpid())


async def readyz(request: Request) -> Response:
    state = _state(request)
    checks: dict[str, str] = {}
    for name, probe in (("database", state.store.ping), ("bus", state.bus.ping)):
        try:
            await asyncio.wait_for(probe(), 2.0)
            checks[name] = "ok"
        except BusNotReady as exc:  # our own reason: "bus probe timed out", …
            checks[name] = f"error: {exc}"
        except Exception as exc:  # any failure means "not ready"; say which
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    if ready:
        return responses.respond(responses.Readiness, success=True, checks=checks)
    return responses.respond(responses.Readiness, http_status=503, success=False, checks=checks,
                             error="Not ready: " + ", ".join(n for n, v in checks.items()
                                                             if v != "ok"))


def _json_size(value: object) -> int:
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: valid JSON, too big for orjson
        return len(json.dumps(value, ensure_ascii=False).encode())


def _log_value(value: object) -> object:
    """A client-supplied value as a log field: scalars as they are (an integer beyond 64 bits,
    which the JSON log renderer cannot write, as text), anything else as its JSON."""
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)[:200]


async def client_events(request: Request) -> Response:
    """Monitoring events from the page and the SDK (server/client_events.py)."""
    state = _state(request)
    user_id = _user_id(request)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        state.metrics.client_batches.labels(outcome="too_large").inc()
        raise ApiError(413, "too_large", "Request body too large")
    try:
        batch = schemas.ClientEvents.model_validate_json(raw or b"")
    except ValidationError as exc:
        state.metrics.client_batches.labels(outcome="invalid").inc()
        raise ApiError(400, "invalid_request", validation_message(exc)) from None
    for index, event in enumerate(batch.events):
        if _json_size(event.metadata) > schemas.MAX_EVENT_METADATA_BYTES:
            state.metrics.client_batches.labels(outcome="too_large").inc()
            raise ApiError(413, "too_large", f"events[{index}].metadata: at most "
                           f"{schemas.MAX_EVENT_METADATA_BYTES} bytes")
    session_id = batch.sessionId or "-"
    try:
        state.client_events.admit(user_id, session_id)
    except RateLimited as exc:
        state.metrics.client_batches.labels(outcome="rate_limited").inc()
        state.metrics.rate_limited.labels(limit="client_events").inc()
        raise ApiError(429, "rate_limited", str(exc),
                       headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
                       extra={"retry_after": round(exc.retry_after_s, 3)}) from None
    logged = set(state.client_events.record(user_id, session_id,
                                            [event.type for event in batch.events]))
    for event in batch.events:
        if event.type in logged:
            log.info("client_event", type=event.type, session_id=session_id,
                     webinar_id=event.webinarId, at=event.timestamp,
                     **{k: _log_value(v) for k, v in event.metadata.items()
                        if k in ("reason", "reconnectTries", "status", "errorMessage",
                                 "clientMsgId", "via", "attempts")})
    state.metrics.client_batches.labels(outcome="ok").inc()
    return ok(responses.EventsAccepted, accepted=len(batch.events))


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)
