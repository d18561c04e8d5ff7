"""Admin routes (platform admins only): agencies, clients, webinars, users, registrations.
The CLI's `admin` commands call the same store methods."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..auth.passwords import hash_password
from ..store.store import EmailTaken, NotFound, Webinar
from . import moderation_api, responses, schemas
from .errors import ApiError
from .http_api import _body, _path_id, _state, _user_id, ok
from .text_rules import RESERVED_DISPLAY_NAME, display_name_key

if TYPE_CHECKING:
    from .state import AppState


def _admin_webinar(w: Webinar) -> dict[str, Any]:
    return {"id": w.id, "agency_id": w.agency_id, "client_id": w.client_id, "title": w.title,
            "chat_open": w.chat_open, "chat_mode": w.chat_mode,
            "slow_mode_seconds": w.slow_mode_seconds}


async def _admin(request: Request) -> AppState:
    state = _state(request)
    user = await state.store.get_user(_user_id(request))
    if user is None or not user.is_admin:
        raise ApiError(403, "forbidden", "Admin access required")
    return state


async def create_agency(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.CreateAgency)
    agency_id = await state.store.create_agency(body.name)
    return ok(responses.AgencyAnswer, agency={"id": agency_id, "name": body.name})


async def create_client(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.CreateClient)
    try:
        client_id = await state.store.create_client(body.agency_id, body.name)
    except NotFound:
        raise ApiError(404, "not_found", "Agency not found") from None
    return ok(responses.ClientAnswer,
              client={"id": client_id, "agency_id": body.agency_id, "name": body.name})


async def create_webinar(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.CreateWebinar)
    try:
        w = await state.store.create_webinar(body.client_id, body.title, chat_mode=body.mode(),
                                             slow_mode_seconds=body.slow_mode_seconds)
    except NotFound:
        raise ApiError(404, "not_found", "Client not found") from None
    return ok(responses.AdminWebinarAnswer, webinar=_admin_webinar(w))


async def update_webinar(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.UpdateWebinar)
    try:
        w, change = await state.store.update_webinar(_path_id(request, "webinar_id"),
                                                     chat_mode=body.mode(),
                                                     slow_mode_seconds=body.slow_mode_seconds)
    except NotFound:
        raise ApiError(404, "not_found", "Webinar not found") from None
    await state.hub.publish(change)
    await state.bus.publish_access(w.id, None)
    return ok(responses.AdminWebinarAnswer, webinar=_admin_webinar(w))


async def create_user(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.CreateUser)
    # The sign-up's rule for names (http_api.signup): admins cannot create an impersonator either.
    if await state.store.staff_display_name_taken(display_name_key(body.display_name),
                                                  display_name_key):
        raise ApiError(409, "display_name_reserved", RESERVED_DISPLAY_NAME)
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        user = await state.store.create_user(body.email, password_hash, body.display_name,
                                             is_admin=body.is_admin)
    except EmailTaken:
        raise ApiError(409, "email_taken", "An account with this e-mail already exists") from None
    return ok(responses.UserAnswer, user={"id": user.id, "email": user.email,
                                          "display_name": user.display_name,
                                          "is_admin": user.is_admin})


async def create_registration(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.CreateRegistration)
    try:
        reg = await state.store.register(body.webinar_id, body.user_id, body.role)
    except NotFound as exc:
        raise ApiError(404, "not_found", f"{str(exc).capitalize()} not found") from None
    await state.bus.publish_access(reg.webinar_id, reg.user_id)
    return ok(responses.RegistrationAnswer, registration={
        "webinar_id": reg.webinar_id, "user_id": reg.user_id, "role": reg.role})


async def set_banned(request: Request) -> Response:
    state = await _admin(request)
    body = await _body(request, schemas.SetBanned)
    # (Admins may ban anyone registered, staff included; `duration_s`: a timeout.)
    await moderation_api.apply_ban(state, body.webinar_id, body.user_id, body.banned,
                                   body.duration_s)
    return ok(responses.Ok)
