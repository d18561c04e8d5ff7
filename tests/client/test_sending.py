"""What each answer to a create means for the send loop — pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from webinar_chat.client import realtime_url_for
from webinar_chat.client.sending import (
    Rejected,
    RenewToken,
    RetryLater,
    Stored,
    classify_send_response,
    parse_retry_after,
)

ROW = {"id": 1, "webinar_id": 2, "seq": 3}


def test_200_and_409_with_the_row_are_both_stored() -> None:
    assert classify_send_response(200, {"success": True, "message": ROW}, None) == Stored(
        ROW, duplicate=False)
    assert classify_send_response(
        409, {"success": False, "error": "Duplicate message detected", "code": "duplicate",
              "message": ROW}, None) == Stored(ROW, duplicate=True)


def test_an_unreadable_200_is_retried_to_get_the_409() -> None:
    assert isinstance(classify_send_response(200, None, None), RetryLater)


def test_401_renews_the_token() -> None:
    assert classify_send_response(401, {"code": "token_expired"}, None) == RenewToken(
        "token_expired")
    assert classify_send_response(401, None, None) == RenewToken("unauthorized")


def test_429_waits_retry_after() -> None:
    outcome = classify_send_response(429, {"code": "slow_mode", "retry_after": 2.5}, "3")
    assert isinstance(outcome, RetryLater) and outcome.delay == 3.0
    outcome = classify_send_response(429, {"code": "slow_mode", "retry_after": 2.5}, None)
    assert isinstance(outcome, RetryLater) and outcome.delay == 2.5
    outcome = classify_send_response(429, None, None)
    assert isinstance(outcome, RetryLater) and outcome.delay == 1.0


def test_429_rate_limited_is_retried_after_retry_after_too() -> None:
    body = {"success": False, "error": "Too many messages; retry in 4 s", "code": "rate_limited",
            "retry_after": 4}
    assert classify_send_response(429, body, "4") == RetryLater("429 rate_limited", 4.0)
    assert classify_send_response(429, body, None) == RetryLater("429 rate_limited", 4.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425])
def test_server_and_proxy_errors_are_retried_with_backoff(status: int) -> None:
    outcome = classify_send_response(status, "<html>bad gateway</html>", None)
    assert isinstance(outcome, RetryLater) and outcome.delay is None


@pytest.mark.parametrize("status, code", [(400, "invalid_request"), (403, "forbidden"),
                                          (404, "not_found"), (413, "too_large")])
def test_other_4xx_are_permanent(status: int, code: str) -> None:
    outcome = classify_send_response(status, {"error": "nope", "code": code}, None)
    assert outcome == Rejected(status, code, "nope")


def test_409_without_a_row_is_permanent() -> None:
    assert isinstance(classify_send_response(409, {"code": "conflict"}, None), Rejected)


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None and parse_retry_after("", now) is None
    assert parse_retry_after("-5", now) == 0.0


def test_realtime_url_for() -> None:
    assert realtime_url_for("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/realtime"
    assert realtime_url_for("https://chat.example.com/") == "wss://chat.example.com/realtime"
    assert realtime_url_for("https://example.com/chat") == "wss://example.com/chat/realtime"
