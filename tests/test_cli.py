"""The `webinar-chat` command as a user runs it: real processes, a real SQLite file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from webinar_chat.store import Store
from webinar_chat.transcript import COLUMNS

from .helpers import World, free_port

EXE = [sys.executable, "-m", "webinar_chat"]


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return run_on(f"sqlite:///{db}", *args)


def run_on(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([*EXE, *args], env=env, capture_output=True, text=True, timeout=60)


def test_demo_json_and_admin_commands(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    assert run("migrate", db=db).returncode == 0
    first = run("demo", "--json", "--port", "9123", db=db)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["base_url"] == "http://localhost:9123"
    assert {u["role"] for u in info["users"]} == {"host", "attendee"}
    assert all(u["email"] and u["password"] for u in info["users"])
    again = json.loads(run("demo", "--json", db=db).stdout)  # idempotent: same webinar
    assert again["webinar_id"] == info["webinar_id"]

    agency = json.loads(run("admin", "create-agency", "Acme", db=db).stdout)["id"]
    client = json.loads(run("admin", "create-client", str(agency), "Acme Corp", db=db).stdout)["id"]
    webinar = json.loads(run("admin", "create-webinar", str(client), "Town hall", "--slow-mode", "5",
                             db=db).stdout)["id"]
    user = json.loads(run("admin", "create-user", "zoe@x.test", "long password", "Zoe",
                          db=db).stdout)["id"]
    reg = json.loads(run("admin", "register", str(webinar), str(user), "--role", "moderator",
                         db=db).stdout)
    assert reg == {"webinar_id": webinar, "user_id": user, "role": "moderator"}
    # a moderator's name, however it is spelled, is not a new user's (and nothing is stored)
    reserved = run("admin", "create-user", "zoe2@x.test", "long password", "  ZOE ", db=db)
    assert reserved.returncode == 1 and "display_name: This display name belongs to a host, " \
        "moderator or admin" in reserved.stderr, reserved.stderr
    other = run("admin", "create-user", "zoe2@x.test", "long password", "Zoe Two", db=db)
    assert other.returncode == 0, other.stderr  # the address was not taken by the refusal
    updated = json.loads(run("admin", "update-webinar", str(webinar), "--chat-open", "false",
                             db=db).stdout)
    assert updated["chat_open"] is False and updated["slow_mode_seconds"] == 5
    listing = json.loads(run("admin", "list", db=db).stdout)
    assert [w["title"] for w in listing["webinars"]][-1] == "Town hall"
    missing = run("admin", "create-client", "9999", "Nobody", db=db)
    assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_serve_starts_with_demo_data_on_the_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    proc = subprocess.Popen([*EXE, "serve", "--demo", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        login = httpx.post(base + "/api/auth/login",
                           json={"email": "alice@demo.test", "password": "demo-password"})
        token = login.json()["access_token"]
        messages = httpx.get(base + "/api/webinars/1/messages",
                             headers={"Authorization": f"Bearer {token}"}).json()["messages"]
        assert len(messages) == 3  # the demo conversation
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    assert "Demo chat: http://localhost:" in output
    assert "alice@demo.test" in output


async def test_admin_export_streams_the_transcript_to_stdout_or_a_file(
        database_url: str, store: Store, world: World, tmp_path: Path) -> None:
    """On both databases: the same rows as the HTTP export (transcript.py), deleted and hidden
    messages included, JSON on stdout by default, CSV into --output."""
    posted = []
    for person, text, role, visibility in (
            (world.host, "Hello", "host", "everyone"),
            (world.alice, "=cmd|' /C calc'!A0", "attendee", "staff"),  # posted in hosts_only
            (world.alice, "gone soon", "attendee", "everyone")):
        message, _ = await store.create_message(world.webinar, person.user_id,
                                                person.display_name, text, None,
                                                slow_mode_applies=False, author_role=role,
                                                visibility=visibility)
        posted.append(message)
    await store.set_hidden(posted[0], True)
    await store.delete_message(posted[2])
    wid = str(world.webinar.id)

    # subprocess.run blocks; in a thread, so that this test's event loop (the store) is free
    as_json = await asyncio.to_thread(run_on, database_url, "admin", "export", "--webinar-id", wid)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["webinar"]["id"] == world.webinar.id
    assert [(m["id"], m["content"], m["hidden"], m["deleted"]) for m in body["messages"]] == [
        (posted[0].id, "Hello", True, False), (posted[1].id, "=cmd|' /C calc'!A0", False, False),
        (posted[2].id, None, None, True)]
    assert [(m["author_role"], m["visibility"]) for m in body["messages"]] == [
        ("host", "everyone"), ("attendee", "staff"), (None, None)]

    out = tmp_path / "transcript.csv"
    as_csv = await asyncio.to_thread(run_on, database_url, "admin", "export", "--webinar-id", wid,
                                     "--format", "csv", "--output", str(out))
    assert as_csv.returncode == 0, as_csv.stderr
    assert json.loads(as_csv.stdout) == {"webinar_id": world.webinar.id, "format": "csv",
                                         "output": str(out)}
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode(), newline="")))
    assert rows[0] == list(COLUMNS)
    assert [r[COLUMNS.index("content")] for r in rows[1:]] == ["Hello", "'=cmd|' /C calc'!A0", ""]
    assert [r[COLUMNS.index("deleted")] for r in rows[1:]] == ["false", "false", "true"]
    assert [(r[COLUMNS.index("author_role")], r[COLUMNS.index("visibility")]) for r in rows[1:]] \
        == [("host", "everyone"), ("attendee", "staff"), ("", "")]

    missing = tmp_path / "missing.json"
    unknown = await asyncio.to_thread(run_on, database_url, "admin", "export", "--webinar-id",
                                      "999999", "--output", str(missing))
    assert unknown.returncode == 1 and "NotFound" in unknown.stderr, unknown.stderr
    assert not missing.exists()  # no file left behind by a failed export
