"""The OpenAPI document against the server that serves it (scripts/api-contract fuzzes the same
thing from outside with schemathesis): every answer declared by a model, the message builders of
protocol/events.py against those models, the text patterns against the rules they describe, and
the method handling (`Allow`, 405, OPTIONS)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from tests.helpers import World, auth, new_id, send
from webinar_chat import transcript
from webinar_chat.protocol.events import (
    Audience,
    Change,
    ChangeOp,
    Message,
    Question,
    RoomState,
    event_payload,
    message_payload,
    question_payload,
)
from webinar_chat.server import responses
from webinar_chat.server.text_rules import (
    clean_display_name,
    content_pattern,
    content_problem,
    display_name_pattern,
)
from webinar_chat.store.store import TranscriptEntry


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


async def test_every_operation_declares_its_answers(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/api/openapi.json")).json()
    components = doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for status, answer in op["responses"].items():
                assert "content" in answer, (method, path, status)
                schema = next(iter(answer["content"].values()))["schema"]
                assert schema, (method, path, status)
            assert {"200", "500"} <= set(op["responses"]), (method, path)
            if "{" in path or op.get("requestBody") or op.get("parameters"):
                assert "400" in op["responses"], (method, path)
            if op.get("security"):
                assert "401" in op["responses"], (method, path)
    # Every reference resolves inside the document (pydantic's nested `$defs` are hoisted).
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    assert "$defs" not in str(doc)
    assert doc["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/Readiness"}
    answer = components["MessagePage"]
    assert answer["additionalProperties"] is False
    assert set(answer["required"]) == {"success", "messages", "has_more", "last_seq",
                                       "next_after", "next_before"}


async def test_the_document_says_what_the_settings_say(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/api/openapi.json")).json()
    content = doc["components"]["schemas"]["CreateMessage"]["properties"]["content"]
    assert content["maxLength"] == 2000 and content["minLength"] == 1
    wait = next(p for p in doc["paths"]["/api/webinars/{webinar_id}/changes"]["get"]["parameters"]
                if p["name"] == "wait")
    assert wait["schema"]["maximum"] == 25
    webinar_id = doc["components"]["schemas"]["SetBanned"]["properties"]["webinar_id"]
    assert webinar_id["minimum"] == 1 and webinar_id["maximum"] == 2**63 - 1


# --- the busy routes' payload builders against the models ----------------------------------------

def _message(hidden: bool, client_msg_id: str | None = "6f1c1b1e-0d1e-4c55-9a7e-1f0a8e9b3c2d"
             ) -> Message:
    return Message(id=7, agency_id=1, client_id=1, webinar_id=3, user_id=5, content="hi",
                   created_at=datetime(2026, 12, 2, 12, 0, tzinfo=UTC), hidden=hidden,
                   client_msg_id=client_msg_id, seq=9, display_name="Alice")


@pytest.mark.parametrize("audience", list(Audience))
@pytest.mark.parametrize("hidden", [False, True])
def test_message_and_change_payloads_match_the_models(audience: Audience, hidden: bool) -> None:
    message = _message(hidden)
    payload = message_payload(message, audience)
    adapter: TypeAdapter[Any] = TypeAdapter(responses.Message)
    parsed = adapter.validate_python(payload)
    if hidden and audience is Audience.ATTENDEE:
        assert isinstance(parsed, responses.HiddenMessage)
    else:
        assert isinstance(parsed, responses.VisibleMessage)
    responses.MessagePage.model_validate({"success": True, "messages": [payload],
                                          "has_more": False, "last_seq": 9, "next_after": None,
                                          "next_before": None})
    for op in (ChangeOp.INSERT, ChangeOp.UPDATE, ChangeOp.DELETE):
        change = Change(3, 9, op, 7, None if op is ChangeOp.DELETE else message)
        responses.ChangeEvent.model_validate(event_payload(change, audience))
    for room in (RoomState(), RoomState("hosts_only", 30, "Break until 11:00",
                                        datetime(2026, 12, 2, 10, 0, tzinfo=UTC))):
        event = event_payload(Change(3, 10, ChangeOp.ROOM, 0, None, room), audience)
        responses.RoomEvent.model_validate(event)
        responses.ChangePage.model_validate({"success": True, "changes": [event],
                                             "last_seq": 10, "has_more": False})
    responses.MessageCreated.model_validate({"success": True, "message": message_payload(
        _message(False, None), audience)})


@pytest.mark.parametrize("audience", list(Audience))
@pytest.mark.parametrize("status", ["open", "answered", "dismissed"])
def test_question_payloads_and_events_match_the_models(audience: Audience, status: str) -> None:
    question = Question(11, 1, 1, 3, 5, "Slides?", datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
                        status, 2, None, 14, "Alice")
    payload = question_payload(question, audience)
    parsed = TypeAdapter(responses.Question).validate_python(payload)
    redacted = status == "dismissed" and audience is Audience.ATTENDEE
    assert isinstance(parsed, responses.HiddenQuestion if redacted else responses.VisibleQuestion)
    if redacted:
        assert payload == {"id": 11, "webinar_id": 3, "hidden": True, "seq": 14}
    else:
        responses.QuestionList.model_validate({"success": True, "questions": [
            {**payload, "voted": False}], "has_more": False, "last_seq": 14})
    for change in (Change(3, 14, ChangeOp.QUESTION, 11, None, question=question),
                   Change(3, 15, ChangeOp.QUESTION, 11, None)):
        event = event_payload(change, audience)
        assert event["type"] == "QUESTION" and event["old"] == {"id": 11}
        responses.QuestionEvent.model_validate(event)
        responses.ChangePage.model_validate({"success": True, "changes": [event],
                                             "last_seq": 15, "has_more": False})
    row = transcript.question_row(question)
    responses.TranscriptQuestion.model_validate(row)
    assert list(row) == list(transcript.QUESTION_COLUMNS)


def test_the_models_refuse_what_the_document_does_not_list() -> None:
    payload = message_payload(_message(False), Audience.STAFF)
    with pytest.raises(ValidationError):
        responses.VisibleMessage.model_validate({**payload, "email": "a@b.c"})
    with pytest.raises(ValidationError):
        responses.respond(responses.Health, success=True, status="ok", node="n")  # no pid


@pytest.mark.parametrize("state", ["visible", "hidden", "deleted"])
def test_transcript_rows_match_the_models(state: str) -> None:
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    entry = (TranscriptEntry(7, 12, None, None, None, None, None, at, None, None)
             if state == "deleted"
             else TranscriptEntry(7, 9, at, 5, "Alice", "=1+1", state == "hidden", None,
                                  "moderator", "staff" if state == "hidden" else "everyone"))
    row = transcript.row(entry)
    if state != "deleted":
        assert (row["author_role"], row["visibility"]) == (entry.author_role, entry.visibility)
        for field, bad in (("author_role", "admin"), ("visibility", "public"), ("author_role", None)):
            with pytest.raises(ValidationError):
                responses.TranscriptMessage.model_validate({**row, field: bad})
    parsed = TypeAdapter(responses.TranscriptMessage | responses.TranscriptDeletedMessage
                         ).validate_python(row)
    assert isinstance(parsed, responses.TranscriptDeletedMessage if state == "deleted"
                      else responses.TranscriptMessage)
    responses.Transcript.model_validate({
        "webinar": {"id": 3, "title": "T", "agency_id": 1, "client_id": 2},
        "exported_at": "2026-12-02T12:00:00.000Z", "messages": [row], "questions": []})
    assert list(row) == list(transcript.COLUMNS)  # the CSV's columns are the JSON's keys


async def test_the_export_declares_json_and_csv(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/api/openapi.json")).json()
    op = doc["paths"]["/api/webinars/{webinar_id}/export"]["get"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "500"}
    content = op["responses"]["200"]["content"]
    assert content == {"application/json": {"schema": {"$ref": "#/components/schemas/Transcript"}},
                       "text/csv": {"schema": {"type": "string"}}}
    assert doc["components"]["schemas"]["Transcript"]["additionalProperties"] is False
    assert set(op["responses"]["200"]["headers"]) == {"Content-Disposition", "Cache-Control"}
    assert [p["name"] for p in op["parameters"]] == ["webinar_id", "format"]
    assert op["parameters"][1]["schema"]["enum"] == ["json", "csv"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]
    assert metrics["content"] == {"text/plain": {"schema": {"type": "string"}}}


# --- the text patterns against the rules -----------------------------------------------------------

def test_the_content_pattern_accepts_exactly_what_the_server_accepts() -> None:
    pattern = re.compile(content_pattern())
    for code in range(0x110000):
        char = chr(code)
        accepted = content_problem(char) is None and char.strip() != ""
        assert bool(pattern.fullmatch(char)) == accepted, hex(code)
    for text in ("a\nb", "  x  ", "\t\n", "a\x00b", "a\x1bb", "\u3000\u3000", "é\r\n"):
        accepted = content_problem(text) is None and text.strip() != ""
        assert bool(pattern.fullmatch(text)) == accepted, repr(text)


def _name_ok(name: str) -> bool:
    try:
        clean_display_name(name)
    except ValueError:
        return False
    return True


def test_the_display_name_pattern_accepts_what_the_server_accepts() -> None:
    pattern = re.compile(display_name_pattern())
    differs = [code for code in range(0x110000)
               if bool(pattern.fullmatch(chr(code))) != _name_ok(chr(code))]
    # Exactly the two kinds the pattern cannot name (text_rules.py): surrogates, which no JSON
    # body can carry, and the format characters above U+FFFF, refused beyond the pattern.
    assert all(0xD800 <= code <= 0xDFFF or (code > 0xFFFF and unicodedata.category(chr(code))
                                            == "Cf") for code in differs)
    for name in ("Ada", " Ada ", "\u200b", "\u200bA", "A\u2028B", "A\x00", "  ", "李 雷",
                 "\U0001F600", "\ufeff\u00ad"):
        assert bool(pattern.fullmatch(name)) == _name_ok(name), repr(name)


# --- the server against the document ---------------------------------------------------------------

async def test_an_integral_number_is_an_integer(http: httpx.AsyncClient, world: World) -> None:
    """JSON Schema's `integer` takes 3.0; so does the server, and it still refuses 3.5."""
    r = await http.post("/api/messages/create", headers=auth(world.alice.token),
                        json={"webinarId": float(world.webinar.id), "content": "hi",
                              "clientMsgId": new_id()})
    assert r.status_code == 200 and r.json()["message"]["webinar_id"] == world.webinar.id
    r = await http.post("/api/messages/create", headers=auth(world.alice.token),
                        json={"webinarId": world.webinar.id + 0.5, "content": "hi"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


async def test_a_client_msg_id_is_a_uuid_in_its_text_form(http: httpx.AsyncClient,
                                                          world: World) -> None:
    hex_only = new_id().replace("-", "")
    for bad in (hex_only, "{" + new_id() + "}", "urn:uuid:" + new_id(), ""):
        r = await http.post("/api/messages/create", headers=auth(world.alice.token),
                            json={"webinarId": world.webinar.id, "content": "x",
                                  "clientMsgId": bad})
        assert r.status_code == 400 and "clientMsgId" in r.json()["error"], bad
    upper = new_id().upper()
    r = await send(http, world.alice, world.webinar.id, "upper", upper)
    assert r.status_code == 200 and r.json()["message"]["client_msg_id"] == upper.lower()


async def test_methods_allow_and_options(http: httpx.AsyncClient, world: World) -> None:
    path = f"/api/webinars/{world.webinar.id}"
    r = await http.options(path)
    assert r.status_code == 204 and r.headers["allow"] == "GET, HEAD, PATCH"
    r = await http.put(path, headers=auth(world.host.token), json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, PATCH"
    assert r.json() == {"success": False, "error": "Method not allowed",
                        "code": "method_not_allowed"}
    # A static path wins over a parameter in its place, whatever the method.
    r = await http.delete("/api/messages/create", headers=auth(world.host.token))
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await http.head("/healthz")
    assert r.status_code == 200 and r.content == b""


async def test_answers_match_their_models(http: httpx.AsyncClient, world: World) -> None:
    """A few answers of each kind, parsed by the models with unknown fields forbidden."""
    h = auth(world.alice.token)
    sent = await send(http, world.alice, world.webinar.id, "hello", new_id())
    responses.MessageCreated.model_validate(sent.json())
    responses.Me.model_validate((await http.get("/api/me", headers=h)).json())
    responses.WebinarAnswer.model_validate(
        (await http.get(f"/api/webinars/{world.webinar.id}", headers=h)).json())
    responses.MessagePage.model_validate(
        (await http.get(f"/api/webinars/{world.webinar.id}/messages", headers=h)).json())
    responses.ChangePage.model_validate(
        (await http.get(f"/api/webinars/{world.webinar.id}/changes", headers=h)).json())
    responses.PresenceAnswer.model_validate(
        (await http.get(f"/api/webinars/{world.webinar.id}/presence", headers=h)).json())
    profile = (await http.get(f"/api/profiles/{world.bob.user_id}", headers=h)).json()
    assert "email" not in profile["profile"]
    responses.ProfileAnswer.model_validate(profile)
    responses.Health.model_validate((await http.get("/healthz")).json())
    responses.Readiness.model_validate((await http.get("/readyz")).json())
    responses.Error.model_validate((await http.get("/api/me")).json())
