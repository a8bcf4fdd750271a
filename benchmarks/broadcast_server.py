"""The server side of ``bench_broadcast.py``: every contender (``contenders/``) in one app.

The contenders run in the same uvicorn process with the same settings (the driver starts it
with ``--ws-per-message-deflate false --log-level warning``; everything else is uvicorn's
default: uvloop when installed, websockets-sansio, pings every 20 s), each at
``/<name>/ws`` (python-socketio at ``/socket.io/``). Every contender sends the same
notification of about 100 bytes, encoded once per notification.

Control endpoints (loopback benchmark use only):

* ``POST /broadcast/{contender}?count=N``: publish N notifications, then wait until every
  healthy client's frames are in its transport (:meth:`Contender.drained`); return the
  seconds, the healthy clients and ``started_at`` (``time.perf_counter()`` as it began:
  CLOCK_MONOTONIC, shared with the clients' processes). ``paced=true``: ``await
  asyncio.sleep(0)`` after each notification. The notifications are published from a task
  of their own (since 2026-12-01; before, from the request's coroutine, whose whole stack
  each paced turn resumed).
* ``POST /prefill/{contender}``: fill the ``role=stall`` clients' socket buffers until sending
  to them blocks, the steady state of a client that stopped reading a while ago.
* ``GET /rss`` (after ``gc.collect()``, with each contender's connections), ``GET /info``
  (versions, the pid and the file-descriptor limit the server got),
  ``GET /stats?contender=notify|redis`` (a hub's counters), and ``GET /gc`` (collections so far).

Configured by environment variables: ``BENCH_QUEUE_SIZE`` (the hubs' ``queue_size``, default
1000), ``BENCH_START_CHUNK``, ``BENCH_REDIS_URL``, ``BENCH_REDIS_STREAM`` and
``BENCH_REDIS_CONNECT`` (``contenders/hub.py``); ``BENCH_PROFILE=<dir>``: cProfile every
``/broadcast`` request (the loop's work until it returns: the contender's sends too), one
profile per contender (and ``-paced``), written to ``<dir>/<contender>-<pid>.prof`` when the server stops.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import importlib.metadata
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import fastapi
import msgspec
import starlette
import uvicorn
from fastapi import FastAPI, HTTPException, WebSocketDisconnect

import sqla_notify
from contenders import ORDER, Contender
from contenders.bare import Bare
from contenders.broadcaster import Broadcaster
from contenders.hub import QUEUE_SIZE, contenders as hubs
from contenders.manager import Manager
from contenders.socketio import SocketIO

CONTENDERS: dict[str, Contender] = {c.name: c for c in (Bare(), Manager(), *hubs(), Broadcaster(), SocketIO())}


PROFILE = os.environ.get("BENCH_PROFILE")
_profiles: dict[str, cProfile.Profile] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for c in CONTENDERS.values():
            await c.enter(stack)
        yield
    for name, profile in _profiles.items():
        profile.dump_stats(os.path.join(PROFILE or ".", f"{name}-{os.getpid()}.prof"))


api = FastAPI(lifespan=lifespan)
app: Any = api
for _c in CONTENDERS.values():
    _c.mount(api)
    app = _c.wrap(app)


def _get(contender: str) -> Contender:
    try:
        return CONTENDERS[contender]
    except KeyError:
        raise HTTPException(404, f"unknown contender {contender!r}; expected one of {tuple(CONTENDERS)} "
                                 "(redis needs BENCH_REDIS_URL and BENCH_REDIS_STREAM)") from None


@api.post("/broadcast/{contender}")
async def run_broadcast(contender: str, count: int, timeout: float = 60.0, paced: bool = False) -> dict[str, Any]:
    """Send ``count`` notifications to every client of ``contender``; time the hand-off."""
    c = _get(contender)
    profile = _profiles.setdefault(f"{contender}-paced" if paced else contender, cProfile.Profile()) if PROFILE else None
    if profile is not None:
        profile.enable()
    try:
        t0 = time.perf_counter()
        clients = c.healthy()
        try:
            # In a task of its own: paced, each ``await asyncio.sleep(0)`` then resumes only
            # the publishing loop, not this request's whole FastAPI/Starlette stack (about
            # 5,700 instructions a turn, bench_framecost.py), which a post to one client
            # would carry alone and a post to 1,000 would share.
            await asyncio.create_task(c.send(count, paced))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # a client went away (the driver gave up)
            return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": False, "error": repr(exc),
                    "started_at": t0}
        ok = await c.drained(t0 + timeout)
        return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": ok, "started_at": t0}
    finally:
        if profile is not None:
            profile.disable()


@api.post("/prefill/{contender}")
async def prefill(contender: str, max_seconds: float = 20.0) -> dict[str, Any]:
    """Fill the ``role=stall`` clients' buffers until sending to them blocks."""
    return await _get(contender).prefill(time.perf_counter() + max_seconds)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@api.get("/rss")
async def rss() -> dict[str, int]:
    """Resident set size in bytes, after a full collection; and connection counts."""
    gc.collect()
    return {"rss": _rss(), **{name: CONTENDERS[name].connections() if name in CONTENDERS else 0 for name in ORDER}}


@api.get("/stats")
async def stats(contender: str = "notify") -> dict[str, Any]:
    """A hub's counters; for the Redis hub also its broker's failed calls (``broker_errors``)."""
    out = _get(contender).stats()
    if out is None:
        raise HTTPException(404, f"no hub for contender {contender!r}")
    return out


@api.get("/info")
async def info() -> dict[str, Any]:
    redis = CONTENDERS.get("redis")
    return {
        "pid": os.getpid(), "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "python": sys.version.split()[0], "loop": type(asyncio.get_running_loop()).__module__,
        "fastapi": fastapi.__version__, "starlette": starlette.__version__, "uvicorn": uvicorn.__version__,
        "msgspec": msgspec.__version__, "sqla_notify": sqla_notify.__version__, "queue_size": QUEUE_SIZE,
        **{name: importlib.metadata.version(name)
           for name in ("websockets", "broadcaster", "python-socketio", "python-engineio")},
        "redis": None if redis is None else {
            "stream": os.environ.get("BENCH_REDIS_STREAM"), "broker": (redis.stats() or {})["broker"],
            "redis-py": importlib.metadata.version("redis"),
        },
    }


_gc_time = [0.0, 0.0, 0.0]  # seconds spent in collections of each generation
_gc_cpu = [0.0, 0.0, 0.0]  # and CPU seconds: on a busy machine, wall time counts other processes' turns
_gc_count = [0, 0, 0]
_gc_started = _gc_cpu_started = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started, _gc_cpu_started
    if phase == "start":
        _gc_started, _gc_cpu_started = time.perf_counter(), time.process_time()
    else:
        _gc_time[info["generation"]] += time.perf_counter() - _gc_started
        _gc_cpu[info["generation"]] += time.process_time() - _gc_cpu_started
        _gc_count[info["generation"]] += 1


gc.callbacks.append(_on_gc)


@api.get("/gc")
async def gc_stats() -> dict[str, Any]:
    """Garbage collections in this process so far: count, seconds and CPU seconds per generation."""
    return {"count": _gc_count, "seconds": _gc_time, "cpu_seconds": _gc_cpu}
