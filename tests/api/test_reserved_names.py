"""A new account cannot take the display name of a host, moderator or platform admin
(impersonation, issue #11): sign-up and admin creation answer 409 `display_name_reserved` and
store nothing; names compare by `text_rules.display_name_key` (NFKC, case, whitespace, format
characters), on both databases."""

from __future__ import annotations

import httpx
import pytest

from webinar_chat.server.text_rules import RESERVED_DISPLAY_NAME, display_name_key
from webinar_chat.store import Store

from ..helpers import World, auth, new_id

RESERVED = {"success": False, "code": "display_name_reserved", "error": RESERVED_DISPLAY_NAME}


def test_the_key_folds_what_makes_two_names_look_alike() -> None:
    assert display_name_key("  JANE   host ") == "jane host"
    assert display_name_key("Jane\u00a0Host") == "jane host"  # no-break space
    assert display_name_key("Jane\u3000\tHost") == "jane host"  # ideographic space, tab
    assert display_name_key("\uff2a\uff41\uff4e\uff45 Host") == "jane host"  # fullwidth
    assert display_name_key("Ja\u200bne Ho\u200dst\u202e") == "jane host"  # format characters
    assert display_name_key("\ufb01nance") == "finance"  # ligature
    assert display_name_key("Stra\u00dfe") == display_name_key("STRASSE")  # case folding
    assert display_name_key("Jose\u0301") == display_name_key("Jos\u00e9")  # NFC
    assert display_name_key("Jane Hosts") != "jane host"
    assert display_name_key("Jane\x07Host") == "jane\x07host"  # never raises (stored names)
    # confusables beyond NFKC are out of scope: Cyrillic U+0430 is another letter
    assert display_name_key("J\u0430ne Host") != "jane host"


@pytest.fixture
async def jane(store: Store, world: World) -> str:
    """A host of the world's webinar named "Jane Host"."""
    user = await store.create_user(f"jane-{new_id()[:8]}@example.test", "x", "Jane Host")
    await store.register(world.webinar.id, user.id, "host")
    return user.email


def account(name: str) -> dict[str, str]:
    return {"email": f"u-{new_id()[:8]}@example.test", "password": "a long enough passphrase",
            "display_name": name}


async def test_sign_up_with_a_hosts_name_is_refused_and_stores_nothing(
        http: httpx.AsyncClient, world: World, jane: str) -> None:
    for name in ("  JANE host ", "Jane Host", "jane\u00a0 HOST", "\uff2aane Host", "Host",
                 "MODERATOR", "admin"):
        body = account(name)
        r = await http.post("/api/auth/signup", json=body)
        assert (r.status_code, r.json()) == (409, RESERVED), (name, r.text)
        login = await http.post("/api/auth/login",
                                json={"email": body["email"], "password": body["password"]})
        assert login.status_code == 401, login.text  # no account was created


async def test_sign_up_with_an_attendees_name_is_allowed(
        http: httpx.AsyncClient, world: World, jane: str) -> None:
    for name in ("Alice", "bob", "Jane Hostess", "Jane"):
        r = await http.post("/api/auth/signup", json=account(name))
        assert r.status_code == 200, (name, r.text)
        assert r.json()["user"]["display_name"] == name


async def test_admin_creation_with_a_hosts_name_is_refused_too(
        http: httpx.AsyncClient, world: World, jane: str) -> None:
    headers = auth(world.admin.token)
    body = account("  JANE host ")
    r = await http.post("/api/admin/users", headers=headers, json=body)
    assert (r.status_code, r.json()) == (409, RESERVED), r.text
    r = await http.post("/api/admin/users", headers=headers, json={**body, "is_admin": True})
    assert (r.status_code, r.json()) == (409, RESERVED), r.text
    # nothing was stored: the same address with a free name is created
    r = await http.post("/api/admin/users", headers=headers,
                        json={**body, "display_name": "Jane Guest"})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["display_name"] == "Jane Guest"
