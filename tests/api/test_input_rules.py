"""What text the API accepts (server/text_rules.py, auth/passwords.py), on both databases alike:
control characters in content and names → 400 (PostgreSQL answered NUL with a 500, SQLite
stored it), names that show nothing → 400, weak or common passwords for new accounts → 400; and a
refused request stores nothing."""

from __future__ import annotations

import httpx
import pytest

from ..helpers import World, auth, new_id, send


def signup_body(**fields: str) -> dict[str, str]:
    return {"email": f"u-{new_id()[:8]}@example.test", "password": "a long enough passphrase",
            "display_name": "Someone", **fields}


@pytest.mark.parametrize("content", ["a\x00b", "bell\x07", "esc \x1b[31mred", "del\x7f",
                                     "c1 \x85 next line"])
async def test_control_characters_in_content_are_refused_and_nothing_is_stored(
        http: httpx.AsyncClient, world: World, content: str) -> None:
    wid = world.webinar.id
    r = await send(http, world.alice, wid, content, new_id())
    assert r.status_code == 400, r.text
    assert r.json() == {"success": False, "code": "invalid_request",
                        "error": "content: must not contain control characters (other than "
                                 "newline and tab)"}
    listed = await http.get(f"/api/webinars/{wid}/messages", headers=auth(world.alice.token))
    assert listed.json()["messages"] == []


async def test_newlines_and_tabs_stay_allowed(http: httpx.AsyncClient, world: World) -> None:
    r = await send(http, world.alice, world.webinar.id, "line one\nline\ttwo\r\nthree")
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == "line one\nline\ttwo\r\nthree"


@pytest.mark.parametrize(("password", "why"), [
    ("password", "at least 10 characters"),
    ("12345678", "at least 10 characters"),
    (" " * 12, "too simple"),
    ("aaaaaaaaaaaa", "too simple"),
    ("qwertyuiop", "too common"),
    ("Password1234", "too common"),
    ("1234567890", "too common"),
])
async def test_weak_passwords_are_refused_with_the_reason(
        http: httpx.AsyncClient, password: str, why: str) -> None:
    r = await http.post("/api/auth/signup", json=signup_body(password=password))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_request"
    assert r.json()["error"].startswith("password: ") and why in r.json()["error"]


async def test_a_password_that_is_the_users_own_address_or_name_is_refused(
        http: httpx.AsyncClient) -> None:
    r = await http.post("/api/auth/signup", json=signup_body(
        email="margaret.hamilton@example.test", password="margaret.hamilton"))
    assert r.status_code == 400 and "e-mail address or name" in r.json()["error"]
    r = await http.post("/api/auth/signup", json=signup_body(display_name="Grace Hopper 1906",
                                                             password="grace hopper 1906"))
    assert r.status_code == 400 and "e-mail address or name" in r.json()["error"]


@pytest.mark.parametrize(("name", "why"), [
    ("\u200b\u200b\u200b", "must contain visible characters"),
    ("\u200d \ufeff", "must contain visible characters"),
    ("   ", "must contain visible characters"),
    ("Eve\x00", "must not contain control characters"),
    ("Eve\x1b[2J", "must not contain control characters"),
    ("two\u2028lines", "must be one line"),
])
async def test_display_names_that_show_nothing_or_hide_controls_are_refused(
        http: httpx.AsyncClient, name: str, why: str) -> None:
    r = await http.post("/api/auth/signup", json=signup_body(display_name=name))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"display_name: {why}"


async def test_display_names_are_stored_trimmed(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/auth/signup", json=signup_body(display_name="  Ada Lovelace \t"))
    assert r.status_code == 200, r.text
    assert r.json()["user"]["display_name"] == "Ada Lovelace"


@pytest.mark.parametrize("path", ["/api/webinars/9223372036854775808/messages",
                                  "/api/webinars/" + "9" * 5000 + "/messages",
                                  "/api/webinars/0/messages", "/api/webinars/%EF%BC%91/messages",
                                  "/api/messages/99999999999999999999/hide"])
async def test_ids_in_paths_outside_a_64_bit_column_are_400(
        http: httpx.AsyncClient, world: World, path: str) -> None:
    method = http.post if path.endswith("/hide") else http.get
    kwargs = {"json": {"hidden": True}} if path.endswith("/hide") else {}
    r = await method(path, headers=auth(world.moderator.token), **kwargs)  # type: ignore[operator]
    assert r.status_code == 400, (path[:60], r.status_code, r.text[:200])
    assert r.json()["code"] == "invalid_request"


@pytest.mark.parametrize("query", ["after=9223372036854775808", "after=1_0", "after=%201",
                                   "after=" + "1" * 5000, "limit=0", "limit=abc",
                                   "before=-5"])
async def test_integers_in_queries_are_plain_and_in_range(
        http: httpx.AsyncClient, world: World, query: str) -> None:
    r = await http.get(f"/api/webinars/{world.webinar.id}/messages?{query}",
                       headers=auth(world.alice.token))
    assert r.status_code == 400, (query[:40], r.text[:200])
    assert r.json()["code"] == "invalid_request"
