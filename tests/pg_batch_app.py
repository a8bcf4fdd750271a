"""tests/server_app.py, plus endpoints that commit many rows in one transaction: with
``APP_PG``, their batch is larger than one NOTIFY payload (tests/test_multiprocess_postgres.py)."""

from __future__ import annotations

from .models import Forum
from .server_app import AsyncSession, SyncSession, app

__all__ = ("app",)


@app.post("/forums/many/sync")
def create_many_sync(count: int, prefix: str) -> dict[str, list[int]]:
    with SyncSession.begin() as s:
        forums = [Forum(name=f"{prefix}{i}") for i in range(count)]
        s.add_all(forums)
        s.flush()
        return {"ids": [f.id for f in forums]}


@app.post("/forums/many/async")
async def create_many_async(count: int, prefix: str) -> dict[str, list[int]]:
    async with AsyncSession.begin() as s:
        forums = [Forum(name=f"{prefix}{i}") for i in range(count)]
        s.add_all(forums)
        await s.flush()
        return {"ids": [f.id for f in forums]}
