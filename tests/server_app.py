"""An app for the tests that run a real uvicorn server (tests/test_server.py).

Configured by environment variables, since it runs in a child process:
``APP_DB`` (SQLite file), ``APP_QUEUE_SIZE``, ``APP_REPLAY``, ``APP_CLOSE_GRACE``, ``APP_REDIS``,
``APP_STREAM`` and ``APP_MAXLEN`` (share notifications with other processes through a Redis
Stream that keeps ``APP_MAXLEN`` entries, default: the replay window), ``APP_PG`` and ``APP_CHANNEL``
(commit to PostgreSQL instead of SQLite, and share through LISTEN/NOTIFY).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker
from starlette.requests import HTTPConnection

from sqla_notify import Broker, Hub, Notification, Notifier
from sqla_notify.fastapi import notify_router

from .models import Base, Forum

DB = os.environ["APP_DB"]
broker: Broker | None = None
if "APP_PG" in os.environ:
    from sqla_notify.postgres import PostgresBroker

    engine = create_engine(os.environ["APP_PG"])
    async_engine = create_async_engine(os.environ["APP_PG"])
    broker = PostgresBroker(os.environ["APP_PG"], channel=os.environ["APP_CHANNEL"])
else:
    engine = create_engine(f"sqlite:///{DB}", connect_args={"timeout": 30})
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{DB}", connect_args={"timeout": 30})
if "APP_REDIS" in os.environ:
    from sqla_notify.redis import RedisBroker

    maxlen = int(os.environ["APP_MAXLEN"]) if "APP_MAXLEN" in os.environ else None
    broker = RedisBroker(os.environ["APP_REDIS"], stream=os.environ["APP_STREAM"], maxlen=maxlen)
hub = Hub(
    queue_size=int(os.environ.get("APP_QUEUE_SIZE", "1000")),
    replay=int(os.environ.get("APP_REPLAY", "1000")),
    broker=broker,
)
notifier = Notifier(hub)
SyncSession = notifier.attach(sessionmaker(engine))
AsyncSession = notifier.attach(async_sessionmaker(async_engine))


def authenticate(conn: HTTPConnection) -> str | None:
    """Token "secret-<name>" authenticates <name>; no token: anonymous (None is rejection)."""
    token = conn.query_params.get("token")
    if token is None:
        return "anonymous"
    return token.removeprefix("secret-") if token.startswith("secret-") else None


def authorize(principal: Any, n: Notification) -> bool:
    """Forums named "private-<name>" are for <name> only."""
    name = (n.data or {}).get("name", "")
    return not name.startswith("private-") or name == f"private-{principal}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)
    async with hub:
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(
    notify_router(
        hub, authenticate=authenticate, authorize=authorize,
        close_grace=float(os.environ.get("APP_CLOSE_GRACE", "10")),
    ),
    prefix="/notify",
)


@app.post("/forums/sync")
def create_sync(name: str) -> dict[str, int]:
    with SyncSession.begin() as s:
        forum = Forum(name=name)
        s.add(forum)
        s.flush()
        return {"id": forum.id}


@app.post("/forums/async")
async def create_async(name: str) -> dict[str, int]:
    async with AsyncSession.begin() as s:
        forum = Forum(name=name)
        s.add(forum)
        await s.flush()
        return {"id": forum.id}


@app.post("/forums/many")
async def create_many(count: int, name: str = "many") -> dict[str, list[int]]:
    """``count`` forums in one transaction: one batch of ``count`` notifications."""
    async with AsyncSession.begin() as s:
        forums = [Forum(name=f"{name}-{i}") for i in range(count)]
        s.add_all(forums)
        await s.flush()
        return {"ids": [forum.id for forum in forums]}


@app.post("/burst")
async def burst(count: int, size: int = 0, name: str = "burst") -> dict[str, str]:
    """``count`` manual notifications of about ``size`` bytes each, one batch per call."""
    for i in range(count):
        notifier.notify("forums", "update", {"id": i, "name": name, "pad": "x" * size})
    return {"cursor": hub.cursor}


@app.get("/stats")
async def stats() -> dict[str, int | str]:
    return {f: getattr(hub.stats(), f) for f in hub.stats().__struct_fields__}
