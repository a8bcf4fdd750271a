"""The app bench_latency.py measures: each POST commits one row, through a sync or an async session.

Run by the benchmark in a child process (uvicorn); ``BENCH_DB`` names the SQLite file.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import String, create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_notify import Hub, Notifier
from sqla_notify.fastapi import notify_router

DB = os.environ["BENCH_DB"]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


engine = create_engine(f"sqlite:///{DB}", connect_args={"timeout": 30})
async_engine = create_async_engine(f"sqlite+aiosqlite:///{DB}", connect_args={"timeout": 30})
hub = Hub()
notifier = Notifier(hub)
Sync = notifier.attach(sessionmaker(engine, expire_on_commit=False))
Async = notifier.attach(async_sessionmaker(async_engine, expire_on_commit=False))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    async with hub:
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(notify_router(hub), prefix="/notify")


@app.post("/sync")
def write_sync() -> dict[str, float]:
    """A ``def`` endpoint: a sync session in a worker thread."""
    with Sync() as s:
        item = Item(name="x")
        s.add(item)
        s.flush()
        started = time.time()  # the clock starts as commit() is called
        s.commit()
        return {"id": item.id, "t": started}


@app.post("/async")
async def write_async() -> dict[str, float]:
    """An ``async def`` endpoint: an AsyncSession on the event loop."""
    async with Async() as s:
        item = Item(name="x")
        s.add(item)
        await s.flush()
        started = time.time()
        await s.commit()
        return {"id": item.id, "t": started}
