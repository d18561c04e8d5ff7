"""The liveness and soak tests run `webinar-chat serve` in a child process (the `cli_server`
fixture of tests/conftest.py, tests/serve.py), on SQLite unless a test asks for PostgreSQL."""

from __future__ import annotations

import pytest

from ..conftest import CliServerFactory

__all__ = ["CliServerFactory"]


@pytest.fixture
def backend() -> str:
    return "sqlite"
