"""The app of ``bench_latency.py`` and ``bench_brokers.py``: one hub, and endpoints that commit rows.

One notifier is attached to a sync and an async session factory per database, so commits
differ only in the database, the session kind and the hub's broker. Run by a benchmark in a
child process (``harness.Server``) and configured by environment variables (the benchmark
creates and drops the tables):

* ``BENCH_DATABASES``: JSON ``{"<db>": ["<SQLAlchemy URL>", "<table>"], ...}``; the table's
  name is also its notifications' collection. The async engine of a ``sqlite:///`` URL is
  ``sqlite+aiosqlite``; a ``postgresql+psycopg://`` URL serves both (psycopg 3's async mode).
* ``BENCH_BROKER``: ``none`` (an in-process ``Hub()``, the default), ``redis``
  (``BENCH_REDIS_URL``, ``BENCH_STREAM``) or ``postgres`` (``BENCH_PG_URL``, ``BENCH_CHANNEL``).
* ``BENCH_NAME``: PostgreSQL's ``application_name`` for the connections.

Endpoints (loopback benchmark use only):

* ``POST /{db}/sync`` (a ``def`` endpoint: a sync ``Session`` in a worker thread) and ``POST
  /{db}/async`` (an ``async def`` one: an ``AsyncSession`` on the event loop) insert one row
  and return ``{"id", "t", "committed"}``: ``time.time()`` just before ``commit()`` is called
  (where ``bench_latency.py``'s clock starts) and just after it returns.
* ``POST /{db}/load`` (``bench_brokers.py``): commit at a steady rate in this request's worker
  thread, as ``def`` endpoints do: ``count`` commits of ``rows`` rows each, the i-th one at
  ``start + offset + i * interval`` (CLOCK_MONOTONIC, shared by every process on the machine),
  ``time.monotonic()`` read just before each ``commit()``. Returns ``[t, [row ids]]`` per
  commit, the thread's CPU seconds and how far behind schedule the commits fell.
* ``GET /stats``: the hub's counters, ``broker`` state included.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker

from sqla_notify import Hub, Notifier
from sqla_notify.fastapi import ALL, notify_router

BROKER = os.environ.get("BENCH_BROKER", "none")


def make_hub() -> Hub:
    """The hub, with the broker ``BENCH_BROKER`` names: the one place that knows how to build each."""
    if BROKER == "none":
        return Hub()
    if BROKER == "redis":
        from sqla_notify.redis import RedisBroker  # optional

        return Hub(broker=RedisBroker(os.environ["BENCH_REDIS_URL"], stream=os.environ["BENCH_STREAM"]))
    if BROKER == "postgres":
        from sqla_notify.postgres import PostgresBroker  # optional

        return Hub(broker=PostgresBroker(os.environ["BENCH_PG_URL"], channel=os.environ["BENCH_CHANNEL"]))
    raise SystemExit(f"BENCH_BROKER expected none, redis or postgres, got {BROKER!r}")


class Base(DeclarativeBase):
    pass


@dataclass
class Database:
    """One database's model (its table) and its two attached session factories."""

    model: Any
    sync: sessionmaker[Session]
    async_: async_sessionmaker[AsyncSession]
    engines: tuple[Any, Any]


hub = make_hub()
notifier = Notifier(hub)


def _database(url: str, table: str) -> Database:
    model = type(f"Item_{table}", (Base,), {
        "__tablename__": table, "id": mapped_column(Integer, primary_key=True), "name": mapped_column(String(20)),
    })
    if url.startswith("sqlite"):
        args: dict[str, Any] = {"connect_args": {"timeout": 30}}
        sync_engine, async_engine = (create_engine(url, **args),
                                     create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:", 1), **args))
    else:
        args = {"connect_args": {"application_name": os.environ.get("BENCH_NAME", "bench")}}
        sync_engine, async_engine = create_engine(url, **args), create_async_engine(url, **args)
    return Database(
        model,
        notifier.attach(sessionmaker(sync_engine, expire_on_commit=False)),
        notifier.attach(async_sessionmaker(async_engine, expire_on_commit=False)),
        (sync_engine, async_engine),
    )


DATABASES = {db: _database(url, table) for db, (url, table) in json.loads(os.environ["BENCH_DATABASES"]).items()}


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
        raise HTTPException(404, f"database {db!r} is not configured here, expected one of {list(DATABASES)}") from None


@app.get("/stats")
def stats() -> dict[str, Any]:
    """The hub's counters."""
    s = hub.stats()
    return {f: getattr(s, f) for f in s.__struct_fields__}


@app.post("/{db}/sync")
def write_sync(db: str) -> dict[str, float]:
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
async def write_async(db: str) -> dict[str, float]:
    """An ``async def`` endpoint: an AsyncSession on the event loop."""
    target = _get(db)
    async with target.async_() as s:
        item = target.model(name="x")
        s.add(item)
        await s.flush()
        started = time.time()
        await s.commit()
        return {"id": item.id, "t": started, "committed": time.time()}


class Load(BaseModel):
    start: float
    offset: float = 0.0
    interval: float
    count: int
    rows: int = 1


@app.post("/{db}/load")
def load(db: str, spec: Load) -> dict[str, Any]:
    """Commit ``spec.count`` times on schedule (a ``def`` endpoint: a worker thread)."""
    target = _get(db)
    commits: list[tuple[float, list[int]]] = []
    cpu = time.thread_time()
    late = 0.0
    for i in range(spec.count):
        due = spec.start + spec.offset + i * spec.interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        with target.sync() as s:
            items = [target.model(name="x") for _ in range(spec.rows)]
            s.add_all(items)
            s.flush()
            started = time.monotonic()  # the clock starts as commit() is called
            s.commit()
        commits.append((started, [item.id for item in items]))
    return {"commits": commits, "thread_cpu": time.thread_time() - cpu, "late": late}
