"""The unmodified Supabase clients against `/realtime/v1/websocket` (docs/supabase.md):
@supabase/supabase-js 2.119.0 (Node, `tests/clients/js`) and realtime-py 2.34.1 (its own
virtualenv, `.venv-clients`), each subscribed the way the seed's page did. They reach SUBSCRIBED,
receive INSERT, UPDATE (hide/unhide) and DELETE with the right eventType/new/old, come back by
themselves after a server restart, are refused with CHANNEL_ERROR when not registered and stop
receiving after a ban. Installed by scripts/install-client-tests (run by scripts/test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import Person, RunningServer, World, auth, new_id, send

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "clients" / "js"
PY_CLIENT = ROOT / ".venv-clients" / "bin" / "python"
APIKEY = "anon-key-of-the-seed"



@pytest.fixture(autouse=True)
def clients_installed() -> None:
    """Not a skip: a missing client would hide exactly the failures this file is for."""
    missing = [what for what, there in (
        ("supabase-js", (JS_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir()),
        ("realtime-py", PY_CLIENT.exists()), ("node", shutil.which("node") is not None))
        if not there]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/install-client-tests")


@pytest.fixture
def backend() -> str:
    return "sqlite"


class ClientProcess:
    """A real client in its own process, reporting JSON lines: status / system / change."""

    def __init__(self, kind: str, process: asyncio.subprocess.Process) -> None:
        self.kind = kind
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))

    def statuses(self) -> list[str]:
        return [line["state"] for line in self.lines if line["kind"] == "status"]

    def errors(self) -> list[str]:
        return [line["error"] or "" for line in self.lines
                if line["kind"] == "status" and line["state"] == "CHANNEL_ERROR"]

    def changes(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(eventType, new, old) of every change, as the seed's handler saw them (realtime-py
        hands over the raw push; its fields are mapped the way supabase-js maps them)."""
        out = []
        for line in self.lines:
            if line["kind"] != "change":
                continue
            payload = line["payload"]
            if self.kind.startswith("js"):
                out.append((payload["eventType"], payload["new"], payload["old"]))
            else:
                data = payload["data"]
                out.append((data["type"], data.get("record") or {}, data.get("old_record") or {}))
        return out

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.kind}: {self.lines[-8:]} stderr: "
                                     f"{await self._stderr()}")
            await asyncio.sleep(0.05)

    async def _stderr(self) -> str:
        if self.process.returncode is not None and self.process.stderr is not None:
            return (await self.process.stderr.read()).decode()[-2000:]
        return "(running)"

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()


@contextlib.asynccontextmanager
async def subscriber(kind: str, server: RunningServer, person: Person,
                     webinar_id: int) -> AsyncIterator[ClientProcess]:
    """`js`: supabase-js with the seed's `setAuth(token)`; `js-accesstoken`: with the
    `accessToken` option instead (docs/supabase.md); `py`: realtime-py, token as its key."""
    if kind.startswith("js"):
        command = ["node", "--experimental-websocket", "--no-warnings",
                   str(JS_DIR / "seed_subscriber.mjs"), server.base_url, APIKEY, person.token,
                   str(webinar_id), "accesstoken" if kind == "js-accesstoken" else "setauth"]
    else:
        command = [str(PY_CLIENT), str(ROOT / "tests" / "clients" / "python" /
                                      "seed_subscriber.py"),
                   server.base_url, person.token, str(webinar_id)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=JS_DIR if kind.startswith("js") else ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    client = ClientProcess(kind, process)
    try:
        yield client
    finally:
        await client.stop()


CLIENTS = ["js", "py"]


async def hide(http: httpx.AsyncClient, world: World, message_id: int, hidden: bool) -> None:
    r = await http.post(f"/api/messages/{message_id}/hide", json={"hidden": hidden},
                        headers=auth(world.moderator.token))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", CLIENTS)
async def test_the_seeds_subscription_receives_insert_update_and_delete(
        kind: str, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with subscriber(kind, server, world.moderator, wid) as staff, \
            subscriber(kind, server, world.alice, wid) as attendee:
        for client in (staff, attendee):
            await client.wait_for(lambda c=client: "SUBSCRIBED" in c.statuses())
        message = (await send(http, world.bob, wid, "hello, supabase", new_id())).json()["message"]
        await hide(http, world, message["id"], True)
        await hide(http, world, message["id"], False)
        r = await http.delete(f"/api/messages/{message['id']}", headers=auth(world.host.token))
        assert r.status_code == 200, r.text

        await staff.wait_for(lambda: len(staff.changes()) == 4)
        kinds = [k for k, _new, _old in staff.changes()]
        assert kinds == ["INSERT", "UPDATE", "UPDATE", "DELETE"]
        (_, new, old), (_, hidden, hold), (_, shown, _), (_, gone, gold) = staff.changes()
        assert new["id"] == message["id"] and new["content"] == "hello, supabase"
        assert new["webinar_id"] == wid and old == {}
        assert hidden["hidden"] is True and hold == {"id": message["id"]}
        assert shown["hidden"] is False
        assert gone == {} and gold == {"id": message["id"]}

        # the attendee's list: the hidden message leaves it (DELETE) and comes back (INSERT)
        await attendee.wait_for(lambda: len(attendee.changes()) == 4)
        assert [k for k, _n, _o in attendee.changes()] == ["INSERT", "DELETE", "INSERT", "DELETE"]
        assert "content" not in attendee.changes()[1][1]
        assert attendee.changes()[2][1]["content"] == "hello, supabase"
        assert attendee.errors() == [] and staff.errors() == []


@pytest.mark.parametrize("kind", ["js-accesstoken", "py"])
async def test_the_client_comes_back_by_itself_after_a_server_restart(
        kind: str, server: RunningServer, world: World, http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with subscriber(kind, server, world.alice, wid) as client:
        await client.wait_for(lambda: "SUBSCRIBED" in client.statuses())
        await send(http, world.bob, wid, "before the restart", new_id())
        await client.wait_for(lambda: len(client.changes()) == 1)
        await server.restart()
        # it rejoins by itself; what was sent meanwhile is not replayed (docs/supabase.md):
        # the REST `?after=` read covers that gap
        await client.wait_for(lambda: client.statuses().count("SUBSCRIBED") >= 2, timeout=30)
        async with httpx.AsyncClient(base_url=server.base_url) as fresh:
            await send(fresh, world.bob, wid, "after the restart", new_id())
        await client.wait_for(lambda: len(client.changes()) == 2)
        assert client.changes()[1][1]["content"] == "after the restart"


async def test_the_seeds_set_auth_does_not_outlive_its_socket(
        server: RunningServer, world: World) -> None:
    """supabase-js re-reads its token (the apikey, without `accessToken`) for a new socket, so
    the seed's `setAuth(token)` alone cannot rejoin after a restart: CHANNEL_ERROR, as
    docs/supabase.md says, until the page calls setAuth again or uses `accessToken`."""
    async with subscriber("js", server, world.alice, world.webinar.id) as client:
        await client.wait_for(lambda: "SUBSCRIBED" in client.statuses())
        await server.restart()
        await client.wait_for(lambda: any("Unauthorized" in e for e in client.errors()),
                              timeout=30)
        assert client.statuses().count("SUBSCRIBED") == 1


@pytest.mark.parametrize("kind", CLIENTS)
async def test_not_registered_is_a_channel_error(kind: str, server: RunningServer,
                                                 world: World) -> None:
    async with subscriber(kind, server, world.outsider, world.webinar.id) as client:
        errors = await client.wait_for(client.errors)
        assert "not registered" in errors[0]
        assert "SUBSCRIBED" not in client.statuses()


@pytest.mark.parametrize("kind", CLIENTS)
async def test_a_banned_user_stops_receiving(kind: str, server: RunningServer, world: World,
                                             http: httpx.AsyncClient) -> None:
    wid = world.webinar.id
    async with subscriber(kind, server, world.bob, wid) as bob, \
            subscriber(kind, server, world.alice, wid) as alice:
        for client in (bob, alice):
            await client.wait_for(lambda c=client: "SUBSCRIBED" in c.statuses())
        await send(http, world.alice, wid, "before the ban", new_id())
        await bob.wait_for(lambda: len(bob.changes()) == 1)
        r = await http.post(f"/api/webinars/{wid}/bans",
                            json={"user_id": world.bob.user_id, "duration_s": None},
                            headers=auth(world.host.token))
        assert r.status_code == 200, r.text
        await send(http, world.alice, wid, "after the ban", new_id())
        await alice.wait_for(lambda: len(alice.changes()) == 2)
        await asyncio.sleep(1.0)
        assert [n["content"] for _k, n, _o in bob.changes()] == ["before the ban"]
