"""The app bench_brokers.py runs in each uvicorn process: a hub, with or without a broker.

Configured by environment variables (the driver sets them):

* ``BENCH_BROKER``: ``none`` (an in-process ``Hub()``), ``redis`` or ``postgres``.
* ``BENCH_DB_URL``: the SQLAlchemy URL the commits go to; ``BENCH_TABLE``: the table (the
  driver creates and drops it), which is also the collection clients subscribe to.
* ``BENCH_REDIS_URL`` and ``BENCH_STREAM``; ``BENCH_PG_URL`` and ``BENCH_CHANNEL``.

Endpoints (loopback benchmark use only):

* ``GET /stats``: the hub's counters, ``broker`` state included.
* ``POST /load``: commit at a steady rate in this request's worker thread, as ``def``
  endpoints do: ``count`` commits of ``rows`` rows each, the i-th one at ``start + offset +
  i * interval`` (CLOCK_MONOTONIC, shared by every process on the machine). Each is an ORM
  commit through a sync ``Session``; ``time.monotonic()`` is read just before ``commit()``.
  Returns ``[t, [row ids]]`` per commit and the thread's CPU seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_notify import Hub, Notifier
from sqla_notify.fastapi import ALL, notify_router

BROKER = os.environ.get("BENCH_BROKER", "none")


def postgres_broker() -> Any:
    """The PostgreSQL contender; the one place that knows how to build it."""
    from sqla_notify.postgres import PostgresBroker  # optional

    return PostgresBroker(os.environ["BENCH_PG_URL"], channel=os.environ["BENCH_CHANNEL"])


def make_hub() -> Hub:
    if BROKER == "none":
        return Hub()
    if BROKER == "redis":
        from sqla_notify.redis import RedisBroker  # optional

        return Hub(broker=RedisBroker(os.environ["BENCH_REDIS_URL"], stream=os.environ["BENCH_STREAM"]))
    if BROKER == "postgres":
        return Hub(broker=postgres_broker())
    raise SystemExit(f"BENCH_BROKER expected none, redis or postgres, got {BROKER!r}")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = os.environ["BENCH_TABLE"]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


DB_URL = os.environ["BENCH_DB_URL"]
if DB_URL.startswith("sqlite"):
    engine = create_engine(DB_URL, connect_args={"timeout": 30})
else:
    engine = create_engine(DB_URL, connect_args={"application_name": "bench_brokers"})
hub = make_hub()
notifier = Notifier(hub)
Session = notifier.attach(sessionmaker(engine, expire_on_commit=False))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:
        yield
    engine.dispose()


app = FastAPI(lifespan=lifespan)
app.include_router(notify_router(hub, collections=ALL), prefix="/notify")


@app.get("/stats")
def stats() -> dict[str, Any]:
    s = hub.stats()
    return {f: getattr(s, f) for f in s.__struct_fields__}


class Load(BaseModel):
    start: float
    offset: float = 0.0
    interval: float
    count: int
    rows: int = 1


@app.post("/load")
def load(spec: Load) -> dict[str, Any]:
    """Commit ``spec.count`` times on schedule (a ``def`` endpoint: a worker thread)."""
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
        with Session() as s:
            items = [Item(name="x") for _ in range(spec.rows)]
            s.add_all(items)
            s.flush()
            started = time.monotonic()  # the clock starts as commit() is called
            s.commit()
        commits.append((started, [item.id for item in items]))
    return {"commits": commits, "thread_cpu": time.thread_time() - cpu, "late": late}
