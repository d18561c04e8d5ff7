"""The `webinar-chat` command as a user runs it: real processes, a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .helpers import free_port

EXE = [sys.executable, "-m", "webinar_chat"]


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}"}
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
