"""Fixtures: `backend` (sqlite, postgres), a fresh migrated database per test, a store, a real
server on a free port, an HTTP client, and a `world` of tenants and users."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from webinar_chat import logs
from webinar_chat.auth.tokens import TokenService
from webinar_chat.settings import Settings
from webinar_chat.store import Store, open_store

from .helpers import JWT_SECRET, RunningServer, World, fresh_database, make_world, test_settings
from .serve import ServeProcess

CliServerFactory = Callable[..., Awaitable[ServeProcess]]


def pytest_configure(config: pytest.Config) -> None:
    """The process's logging as `webinar-chat serve` installs it, in the format this run's
    environment selects (scripts/test runs the API and realtime suites once per format), for the
    tests that start no server too (store, SDK)."""
    settings = Settings.from_env()
    logs.configure_logging(settings.log_level, json=settings.log_json)


@pytest.fixture(autouse=True)
def no_log_call_fails() -> Iterator[None]:
    """Fails any test during which a log call could not be formatted or written — in the test
    servers, the SDK, the store or the test code (logs.failures() counts them process-wide)."""
    failures = logs.failures()
    before = failures.count
    yield
    new = failures.count - before
    assert new == 0, f"{new} log call(s) failed: {list(failures.recent)[-new:]}"


def _dump_pending_tasks(test: str, after_s: float) -> None:
    tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
    print(f"\n--- {test}: still running after {after_s:.0f} s; {len(tasks)} pending asyncio "
          "task(s) ---", file=sys.stderr, flush=True)
    for task in tasks:
        task.print_stack(file=sys.stderr)


@pytest.fixture(autouse=True)
def pending_tasks_dumped_when_hung(request: pytest.FixtureRequest) -> Iterator[None]:
    """A little before pytest-timeout (pyproject.toml) ends a run that hangs, print where every
    unfinished asyncio task waits: the main thread's stack alone shows only the event loop's
    select(), not which await never returns."""
    after_s = 0.85 * float(request.config.getini("timeout") or 0)
    if not after_s:
        yield
        return
    timer = threading.Timer(after_s, _dump_pending_tasks, args=(request.node.nodeid, after_s))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Store and contract tests run on both databases."""
    return str(request.param)


@pytest.fixture
def sqlite_only() -> str:
    return "sqlite"


@pytest.fixture
async def database_url(backend: str, tmp_path: Any) -> AsyncIterator[str]:
    async with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await open_store(database_url)
    yield s
    await s.close()


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(JWT_SECRET, 900)


@pytest.fixture
async def world(store: Store, tokens: TokenService) -> World:
    return await make_world(store, tokens)


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    """Override in a test module to change server settings."""
    return {}


@pytest.fixture
async def server(database_url: str, world: World, server_overrides: dict[str, Any]
                 ) -> AsyncIterator[RunningServer]:
    running = RunningServer(test_settings(database_url, **server_overrides))
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def cli_server(database_url: str, world: object, tmp_path: Path
                     ) -> AsyncIterator[CliServerFactory]:
    """`await cli_server(HEARTBEAT_INTERVAL="0.3", …)` → a started `ServeProcess` on the test's
    database (the `world` is created first). Stopped at the end of the test, and its log is
    checked: no traceback, no failed log call, no error record (pass `allowed_errors=(event,…)`
    for a test that provokes some)."""
    started: list[tuple[ServeProcess, tuple[str, ...]]] = []

    async def factory(allowed_errors: tuple[str, ...] = (), args: tuple[str, ...] = (),
                      **env: str) -> ServeProcess:
        server = ServeProcess(database_url, tmp_path / f"server-{len(started)}.log", env=env,
                              args=args)
        started.append((server, allowed_errors))
        await server.start()
        return server

    yield factory
    for server, _ in started:
        await server.stop()
    for server, allowed in started:
        problems = server.problems(allowed)
        assert not problems, "server log:\n" + "\n".join(problems[:20])
