"""Several server nodes on PostgreSQL and a private Redis (tests/redis_server.py): in this process
(test_two_nodes.py), as `serve --workers` (test_workers.py), or as three CLI processes behind a
real nginx (`cluster`, test_nginx.py, test_concurrency.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..conftest import CliServerFactory
from ..nginx_proxy import NginxProxy
from ..redis_server import RedisProcess
from ..serve import ServeProcess

HEARTBEAT_S = 0.5


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def cluster(cli_server: CliServerFactory, redis: RedisProcess, tmp_path: Path
                  ) -> AsyncIterator[tuple[NginxProxy, list[ServeProcess]]]:
    env = {"BUS_URL": redis.url, "BUS_CHANNEL": f"wc-test-{uuid.uuid4().hex[:8]}",
           "HEARTBEAT_INTERVAL": str(HEARTBEAT_S), "BUS_SAFETY_POLL": "1"}
    processes = list(await asyncio.gather(*(cli_server(**env) for _ in range(3))))
    proxy = NginxProxy(tmp_path / "nginx", [p.port for p in processes])
    await proxy.start()
    yield proxy, processes
    await proxy.stop()
