"""The app bench_latency.py measures: each POST commits one row, to SQLite or PostgreSQL, sync or async.

One uvicorn process serves every mode: one :class:`~sqla_notify.Hub`, one notifier attached
to four session factories, so the modes differ only in the database and the session kind.
Run by the benchmark in a child process; configured by environment variables (the benchmark
creates and drops the tables):

* ``BENCH_SQLITE_PATH`` and ``BENCH_SQLITE_TABLE``: the SQLite file (sync engine, and
  ``sqlite+aiosqlite`` for the async one) and its table.
* ``BENCH_PG_URL`` and ``BENCH_PG_TABLE``: a ``postgresql+psycopg://`` URL, used by both the
  sync engine and the async one (psycopg 3's async mode); empty or absent: no PostgreSQL.

Endpoints: ``POST /{db}/sync`` (a ``def`` endpoint: a sync ``Session`` in a worker thread) and
``POST /{db}/async`` (an ``async def`` one: an ``AsyncSession`` on the event loop), ``db`` being
``sqlite`` or ``postgres``. Each inserts one row and returns ``{"id": ..., "t": ...,
"committed": ...}``: ``time.time()`` just before ``commit()`` is called (where the benchmark's
clock starts) and just after it returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from sqlalchemy import String, create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_notify import Hub, Notifier
from sqla_notify.fastapi import ALL, notify_router

SQLITE_PATH = os.environ["BENCH_SQLITE_PATH"]
PG_URL = os.environ.get("BENCH_PG_URL") or None


class Base(DeclarativeBase):
    pass


class SqliteItem(Base):
    __tablename__ = os.environ.get("BENCH_SQLITE_TABLE", "bench_latency_items")
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


class PgItem(Base):
    __tablename__ = os.environ.get("BENCH_PG_TABLE", "bench_latency_items_pg")
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


@dataclass
class Database:
    """One database's model and its two attached session factories."""

    model: type[SqliteItem] | type[PgItem]
    sync: sessionmaker[Session]
    async_: async_sessionmaker[AsyncSession]
    engines: tuple[Any, Any]


hub = Hub()
notifier = Notifier(hub)


def _database(model: type[SqliteItem] | type[PgItem], sync_engine: Any, async_engine: Any) -> Database:
    return Database(
        model,
        notifier.attach(sessionmaker(sync_engine, expire_on_commit=False)),
        notifier.attach(async_sessionmaker(async_engine, expire_on_commit=False)),
        (sync_engine, async_engine),
    )


DATABASES = {
    "sqlite": _database(
        SqliteItem,
        create_engine(f"sqlite:///{SQLITE_PATH}", connect_args={"timeout": 30}),
        create_async_engine(f"sqlite+aiosqlite:///{SQLITE_PATH}", connect_args={"timeout": 30}),
    ),
}
if PG_URL:
    DATABASES["postgres"] = _database(
        PgItem,
        create_engine(PG_URL, connect_args={"application_name": "bench_latency"}),
        create_async_engine(PG_URL, connect_args={"application_name": "bench_latency"}),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:
        yield
    for db in DATABASES.values():
        db.engines[0].dispose()
        await db.engines[1].dispose()


app = FastAPI(lifespan=lifespan)
app.include_router(notify_router(hub, collections=ALL), prefix="/notify")


def _get(db: str) -> Database:
    try:
        return DATABASES[db]
    except KeyError:
        raise HTTPException(404, f"database {db!r} is not configured here (BENCH_PG_URL empty?)") from None


@app.post("/{db}/sync")
def write_sync(db: Literal["sqlite", "postgres"]) -> dict[str, float]:
    """A ``def`` endpoint: a sync session in a worker thread."""
    target = _get(db)
    with target.sync() as s:
        item = target.model(name="x")
        s.add(item)
        s.flush()
        started = time.time()  # the clock starts as commit() is called
        s.commit()
        return {"id": item.id, "t": started, "committed": time.time()}


@app.post("/{db}/async")
async def write_async(db: Literal["sqlite", "postgres"]) -> dict[str, float]:
    """An ``async def`` endpoint: an AsyncSession on the event loop."""
    target = _get(db)
    async with target.async_() as s:
        item = target.model(name="x")
        s.add(item)
        await s.flush()
        started = time.time()
        await s.commit()
        return {"id": item.id, "t": started, "committed": time.time()}
