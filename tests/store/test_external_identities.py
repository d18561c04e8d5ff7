"""Users from the host platform in the store (migration 0006), on SQLite and PostgreSQL:
provisioning is idempotent, also between processes at the same moment, and never takes over an
existing account."""

from __future__ import annotations

import asyncio

from webinar_chat.auth.passwords import verify_password
from webinar_chat.store import Store, open_store
from webinar_chat.store.store import external_email

from ..helpers import World

ISS = "https://platform.example.test"


async def test_provisioning_links_once(store: Store) -> None:
    user_id, created = await store.provision_external_user(ISS, "s-1", "Ext@Example.test", "Ext")
    assert created
    again, created_again = await store.provision_external_user(ISS, "s-1", None, "Other")
    assert (again, created_again) == (user_id, False)
    assert await store.external_identity_user(ISS, "s-1") == user_id
    assert await store.external_identity_user("https://other.test", "s-1") is None
    user = await store.get_user(user_id)
    assert user is not None and (user.email, user.display_name) == ("ext@example.test", "Ext")
    # No password opens it: not the dummy's, not an empty one.
    for password in ("", "not-a-real-password", "!external"):
        assert not verify_password(user.password_hash, password)
    await store.set_display_name(user_id, "Renamed")
    renamed = await store.get_user(user_id)
    assert renamed is not None and renamed.display_name == "Renamed"


async def test_an_existing_address_is_never_taken_over(store: Store, world: World) -> None:
    user_id, _ = await store.provision_external_user(ISS, "s-2", world.alice.email, "Alice")
    assert user_id != world.alice.user_id
    user = await store.get_user(user_id)
    assert user is not None and user.email == external_email(ISS, "s-2")
    assert user.email.endswith("@external.invalid")


async def test_concurrent_provisioning_from_two_processes_makes_one_user(
        store: Store, database_url: str) -> None:
    other = await open_store(database_url)  # another process's pool
    try:
        for round_ in range(5):
            subject = f"race-{round_}"
            results = await asyncio.gather(
                store.provision_external_user(ISS, subject, f"{subject}@example.test", "A"),
                other.provision_external_user(ISS, subject, f"{subject}@example.test", "B"),
                store.provision_external_user(ISS, subject, None, "C"))
            assert len({user_id for user_id, _ in results}) == 1, results
            assert sum(created for _, created in results) == 1, results
        rows = await store.db.fetch("SELECT count(*) AS n FROM external_identities")
        assert rows[0]["n"] == 5
        users = await store.db.fetch(
            "SELECT count(*) AS n FROM users WHERE password_hash = '!external'")
        assert users[0]["n"] == 5  # the losers' users were rolled back
    finally:
        await other.close()
