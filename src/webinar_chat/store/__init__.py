"""Persistence: `open_store(url)` → a migrated-schema `Store` on SQLite or PostgreSQL."""

from .db import OnError, connect
from .store import Store


async def open_store(database_url: str, on_error: OnError | None = None) -> Store:
    return Store(await connect(database_url, on_error))


__all__ = ["Store", "open_store"]
