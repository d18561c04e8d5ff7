"""The listening socket's accept queue (`LISTEN_BACKLOG`, docs/operations.md "Webinar start"):
`webinar-chat serve` as an operator runs it (`--workers 2`, where the parent binds the socket the
workers share: tests/cluster/test_workers.py). A queue of uvicorn's default 2,048 overflowed when 10,000
attendees connected at a webinar's start: the kernel dropped their SYNs and each retried after
1, 3, 7 s."""

from __future__ import annotations

from ..helpers import SOMAXCONN, listen_queue_size
from .conftest import CliServerFactory


async def test_the_accept_queue_is_as_deep_as_the_kernel_allows(
        cli_server: CliServerFactory) -> None:
    server = await cli_server()
    assert listen_queue_size(server.port) == min(65535, SOMAXCONN)


async def test_listen_backlog_sets_it(cli_server: CliServerFactory) -> None:
    server = await cli_server(LISTEN_BACKLOG="100")
    assert listen_queue_size(server.port) == min(100, SOMAXCONN)
