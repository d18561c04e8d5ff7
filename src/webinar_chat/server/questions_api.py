"""Q&A routes (docs/webinar-features.md, "Q&A"): questions separate from the chat, delivered
through the webinar's change feed as QUESTION events.

- `POST /api/webinars/{id}/questions` `{content, clientMsgId?}`: ask (idempotent by clientMsgId:
  a re-send gets 409 with the stored question). Allowed to everyone registered who is not banned
  or timed out, in every chat mode — read_only closes the chat, not the Q&A.
- `GET /api/webinars/{id}/questions?sort=votes|newest`: the list, each with the caller's own
  `voted`, and the feed position read before it (`last_seq`).
- `POST /api/questions/{id}/vote` `{voted}`: upvote once / take it back; a vote that changes
  nothing appends nothing to the feed.
- `POST /api/questions/{id}/status` `{status}`: open / answered / dismissed (moderators, hosts).

A dismissed question is redacted for attendees on every path (protocol/events.question_payload);
for them it does not exist (404 on its routes), as for a hidden message. A question of a webinar
the caller may not read is a 404 as well (no existence oracle across tenants); a banned caller
gets their ban's 403.
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from ..auth import permissions as perm
from ..protocol.events import Audience, Question, question_payload, question_visible_to
from ..store.questions import SORTS, DuplicateQuestion
from ..store.store import NotFound
from . import responses, schemas
from .errors import ApiError
from .http_api import _access, _body, _checked_text, _denied, _path_id, _state, _user_id, ok
from .rate_limits import rate_limited


def _duplicate(question: Question, audience: Audience) -> ApiError:
    return ApiError(409, "duplicate", "Duplicate question detected",
                    extra={"question": question_payload(question, audience)})


async def ask_question(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    body = await _body(request, schemas.AskQuestion)
    if body.clientMsgId is not None:
        structlog.contextvars.bind_contextvars(client_msg_id=body.clientMsgId)
    content = _checked_text(state, body.content)
    access = await _access(request, webinar_id, user_id, cached=False)
    # The message budget (docs/operations.md, "Rate limits"): a question costs what a message
    # does, only once stored; a retry of a stored question still gets its 409.
    limit = "messages_staff" if access.is_staff else "messages"
    decision = await state.limits.take(limit, str(user_id))
    if not decision.allowed:
        if body.clientMsgId is not None:
            existing = await state.store.get_question_by_client_id(webinar_id, user_id,
                                                                   body.clientMsgId)
            if existing is not None:
                raise _duplicate(existing, access.audience)
        raise rate_limited(decision, "Too many messages")
    stored = False
    try:
        question, change = await state.store.ask_question(
            access.webinar, user_id, content, body.clientMsgId, author_role=access.role)
        stored = True
    except DuplicateQuestion as dup:
        raise _duplicate(dup.question, access.audience) from None
    except NotFound:
        raise ApiError(404, "not_found", "Webinar not found") from None
    finally:
        if not stored:
            await state.limits.refund(limit, str(user_id))
    await state.hub.publish(change)
    return ok(responses.QuestionCreated, question=question_payload(question, access.audience))


async def list_questions(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    webinar_id = _path_id(request, "webinar_id")
    sort = request.query_params.get("sort", "votes")
    if sort not in SORTS:
        raise ApiError(400, "invalid_request", "sort: must be one of " + ", ".join(SORTS))
    access = await _access(request, webinar_id, user_id, cached=True)
    try:
        found, has_more, last_seq = await state.store.list_questions(
            webinar_id, sort=sort, include_dismissed=access.is_staff, viewer_id=user_id)
    except NotFound:
        raise ApiError(404, "not_found", "Webinar not found") from None
    questions = [{**question_payload(q, access.audience), "voted": voted} for q, voted in found]
    return ok(responses.QuestionList, questions=questions, has_more=has_more, last_seq=last_seq)


async def _question(request: Request, user_id: int) -> tuple[Question, perm.WebinarAccess]:
    """The question of the path and the caller's access to its webinar: 404 when unknown, when
    the caller may not read that webinar (another tenant's, not registered) and, for attendees,
    when it is dismissed; a ban stays its 403."""
    state = _state(request)
    question = await state.store.get_question(_path_id(request, "question_id"))
    if question is None:
        raise ApiError(404, "not_found", "Question not found")
    try:
        access = await _access(request, question.webinar_id, user_id, cached=False)
    except ApiError as exc:
        if exc.code in ("banned", "timed_out"):
            raise
        raise ApiError(404, "not_found", "Question not found") from None
    if not question_visible_to(question, access.audience):
        raise ApiError(404, "not_found", "Question not found")
    return question, access


async def vote_question(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    body = await _body(request, schemas.VoteQuestion)
    question, access = await _question(request, user_id)
    try:
        updated, change = await state.store.vote_question(question, user_id, body.voted)
    except NotFound:
        raise ApiError(404, "not_found", "Question not found") from None
    if change is not None:
        await state.hub.publish(change)
    return ok(responses.QuestionVoted, question=question_payload(updated, access.audience),
              voted=body.voted)


async def set_question_status(request: Request) -> Response:
    state = _state(request)
    user_id = _user_id(request)
    body = await _body(request, schemas.SetQuestionStatus)
    question, access = await _question(request, user_id)
    try:
        perm.require_moderate(access)
    except perm.Denied as exc:
        raise _denied(exc) from None
    try:
        updated, change = await state.store.set_question_status(question, body.status)
    except NotFound:
        raise ApiError(404, "not_found", "Question not found") from None
    if change is not None:
        await state.hub.publish(change)
    payload: dict[str, Any] = question_payload(updated, access.audience)
    return ok(responses.QuestionAnswer, question=payload)
