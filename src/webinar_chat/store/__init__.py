"""Persistence: `open_store(url)` → a migrated-schema `Store` on SQLite or PostgreSQL."""

from .db import connect
from .store import Store


async def open_store(database_url: str) -> Store:
    return Store(await connect(database_url))


__all__ = ["Store", "open_store"]
