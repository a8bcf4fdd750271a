"""The server side of ``bench_broadcast.py``: three ways to broadcast over WebSocket, one app.

All three contenders live in one FastAPI app, so they run in the same uvicorn process with the
same settings (the driver starts it with ``--ws-per-message-deflate false --log-level
warning``; everything else is uvicorn's default: uvloop when installed, websockets-sansio,
pings every 20 s):

* ``/bare/ws``: accept, append to a list; broadcast is ``for ws in clients: await
  ws.send_text(text)``.
* ``/manager/ws``: the "ConnectionManager" of FastAPI's WebSocket documentation
  (``active_connections``; ``broadcast`` loops ``await connection.send_text(message)``).
* ``/notify/ws``: sqla_notify's :func:`~sqla_notify.fastapi.notify_router` over a
  :class:`~sqla_notify.Hub` entered in the lifespan.

Every contender sends the same TEXT frames: a notification as the hub encodes it, about 100
bytes (``{"id":"<epoch>-<seq>","collection":"forums","action":"update","data":{...}}``); the
bare loop and the manager encode each message once, as the hub does.

Control endpoints (loopback benchmark use only):

* ``POST /broadcast/{contender}?count=N``: broadcast N notifications and return the seconds it
  took to hand them all to the sockets. Bare and manager: the loop's duration. Hub: N calls of
  ``hub.publish([Notification(...)])`` (one batch per notification, as N commits would), then
  until every subscriber's queue is empty and its writer idle, i.e. every frame is in its
  socket's transport (clients that connected with ``?role=stall`` are left out of the wait).
  With ``paced=true`` each notification is followed by ``await asyncio.sleep(0)``.
* ``POST /prefill/{contender}``: fill the ``role=stall`` clients' socket buffers until sending
  to them blocks, the steady state of a client that stopped reading a while ago.
* ``GET /rss``: the resident set size of this process (after ``gc.collect()``).
* ``GET /info``, ``GET /stats`` (hub counters), ``GET /gc`` (time spent collecting garbage),
  ``POST /profile/start``, ``POST /profile/stop``
  (cProfile of the event-loop thread, dumped to a file).

Configured by environment variables: ``BENCH_QUEUE_SIZE`` (the hub's ``queue_size``, default
1000).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import importlib.metadata
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi
import msgspec
import starlette
import uvicorn
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from starlette.requests import HTTPConnection

import sqla_notify
from sqla_notify import Hub, Notification, Subscriber
from sqla_notify.fastapi import notify_router

CONTENDERS = ("bare", "manager", "notify")
STALL = "stall"  # the principal of clients that connected with ?role=stall
HEALTHY = "healthy"
STALL_QUERY = b"role=stall"
DATA_NAME = "General discussion"  # pads the message to about 100 bytes

hub = Hub(queue_size=int(os.environ.get("BENCH_QUEUE_SIZE", "1000")))
_encoder = msgspec.json.Encoder()
_seq = 0  # the bare loop's and the manager's message counter (the hub keeps its own)
_epoch = format(time.time_ns() // 1_000_000, "x")


def _text(i: int) -> str:
    """One message for the bare loop and the manager: what the hub would send, encoded once."""
    global _seq
    _seq += 1
    return _encoder.encode({
        "id": f"{_epoch}-{_seq}", "collection": "forums", "action": "update",
        "data": {"id": i, "name": DATA_NAME},
    }).decode()


def _authenticate(conn: HTTPConnection) -> str:
    # Shared constants, so that tagging costs no memory per connection.
    return STALL if conn.scope["query_string"] == STALL_QUERY else HEALTHY


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(notify_router(hub, authenticate=_authenticate), prefix="/notify")


# -- 1. the bare loop -------------------------------------------------------------------------

bare_clients: list[WebSocket] = []
bare_stalled: list[WebSocket] = []  # also in bare_clients; for /prefill only


@app.websocket("/bare/ws")
async def bare_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    bare_clients.append(websocket)
    stalled = websocket.scope["query_string"] == STALL_QUERY
    if stalled:
        bare_stalled.append(websocket)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        bare_clients.remove(websocket)
        if stalled:
            bare_stalled.remove(websocket)


async def bare_broadcast(text: str) -> None:
    for ws in bare_clients:
        await ws.send_text(text)


# -- 2. FastAPI's documented ConnectionManager ------------------------------------------------


class ConnectionManager:
    """As in FastAPI's docs, "Handling disconnections and multiple clients"."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket) -> None:
        await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()
manager_stalled: list[WebSocket] = []  # for /prefill only


@app.websocket("/manager/ws")
async def manager_ws(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    stalled = websocket.scope["query_string"] == STALL_QUERY
    if stalled:
        manager_stalled.append(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)
    finally:
        if stalled:
            manager_stalled.remove(websocket)


# -- 3. sqla_notify's hub: the router above; helpers that look inside it ----------------------


def _check_internals() -> None:
    """This app reads a few of the hub's private attributes: fail clearly if they moved."""
    missing = [a for a in ("_queue", "_writer", "principal") if a not in Subscriber.__slots__]
    if missing or not isinstance(getattr(hub, "_subscribers", None), set):
        raise RuntimeError(f"broadcast_server.py needs updating: Hub/Subscriber internals changed ({missing})")


_check_internals()


def _subscribers() -> list[Subscriber]:
    # A benchmark's licence: the hub keeps its subscribers private.
    return list(hub._subscribers)


def _idle(sub: Subscriber) -> bool:
    """Nothing queued and no writer task running: every frame is in the transport."""
    return not sub._queue and sub._writer is None


async def _hub_drained(published: int, deadline: float) -> bool:
    """Wait until the hub dispatched ``published`` notifications and healthy writers are idle."""
    await asyncio.sleep(0)
    while time.perf_counter() < deadline:
        if hub.stats().published >= published and all(
            _idle(s) for s in hub._subscribers if s.principal is not STALL
        ):
            return True
        await asyncio.sleep(0.001)
    return False


# -- control endpoints ----------------------------------------------------------------------


def _check(contender: str) -> None:
    if contender not in CONTENDERS:
        raise HTTPException(404, f"unknown contender {contender!r}; expected one of {CONTENDERS}")


@app.post("/broadcast/{contender}")
async def broadcast(contender: str, count: int, timeout: float = 60.0, paced: bool = False) -> dict[str, Any]:
    """Send ``count`` notifications to every client of ``contender``; time the hand-off.

    ``paced``: yield to the event loop after each notification, as when commits arrive one
    at a time; the hub's writers then send each notification on its own instead of in batches.
    """
    _check(contender)
    t0 = time.perf_counter()
    if contender == "notify":
        clients = sum(1 for s in hub._subscribers if s.principal is not STALL)
        target = hub.stats().published + count
        for i in range(count):
            hub.publish([Notification("forums", "update", {"id": i, "name": DATA_NAME})])
            if paced:
                await asyncio.sleep(0)
        ok = await _hub_drained(target, t0 + timeout)
        return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": ok}
    clients = len(bare_clients) if contender == "bare" else len(manager.active_connections)
    try:
        if contender == "bare":
            for i in range(count):
                await bare_broadcast(_text(i))
                if paced:
                    await asyncio.sleep(0)
        else:
            for i in range(count):
                await manager.broadcast(_text(i))
                if paced:
                    await asyncio.sleep(0)
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # a client went away (the driver gave up)
        return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": False, "error": repr(exc)}
    return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": True}


_fillers: set[asyncio.Task[None]] = set()


async def _fill(ws: WebSocket, progress: dict[int, int]) -> None:
    """Send to one stalled client until its socket blocks (then stay blocked, as it would)."""
    i = 0
    try:
        while True:
            await ws.send_text(_text(i))
            i += 1
            progress[id(ws)] = i
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # it went away


@app.post("/prefill/{contender}")
async def prefill(contender: str, max_seconds: float = 20.0) -> dict[str, Any]:
    """Fill the ``role=stall`` clients' buffers until sending to them blocks."""
    _check(contender)
    deadline = time.perf_counter() + max_seconds
    if contender == "notify":
        # Top up each stalled client's queue whenever its writer has emptied it; once the
        # queues stay non-empty, the writers are blocked in send(). Steps of 200 frames keep
        # the queues well under queue_size, so the hub's overflow policy is not involved.
        stalled = [s for s in _subscribers() if s.principal is STALL]
        sent = dict.fromkeys(map(id, stalled), 0)
        filler = "x" * 100  # an ``error`` frame of about the size of a notification
        blocked_since: float | None = None
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            if all(s._queue and s._writer is not None for s in stalled):
                blocked_since = blocked_since or now
                if now - blocked_since >= 0.3:
                    break
            else:
                blocked_since = None
            for s in stalled:
                if not s._queue:
                    for _ in range(200):
                        hub.send_error(s, filler)
                    sent[id(s)] += 200
            await asyncio.sleep(0.02)
        return {
            "stalled": len(stalled),
            "blocked": sum(1 for s in stalled if s._queue and s._writer is not None),
            "frames_sent_each": sorted(sent.values()),
            "queued_each": sorted(len(s._queue) for s in stalled),
        }
    sockets = list(bare_stalled if contender == "bare" else manager_stalled)
    progress: dict[int, int] = dict.fromkeys(map(id, sockets), 0)
    for ws in sockets:
        task = asyncio.get_running_loop().create_task(_fill(ws, progress))
        _fillers.add(task)
        task.add_done_callback(_fillers.discard)
    last: dict[int, int] = {}
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.3)
        if progress == last:
            break  # no progress for 0.3 s: every filler is blocked in send()
        last = dict(progress)
    return {
        "stalled": len(sockets),
        "blocked": sum(1 for t in _fillers if not t.done()),
        "frames_sent_each": sorted(progress.values()),
    }


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@app.get("/rss")
async def rss() -> dict[str, int]:
    """Resident set size in bytes, after a full collection; and connection counts."""
    gc.collect()
    return {
        "rss": _rss(), "bare": len(bare_clients), "manager": len(manager.active_connections),
        "notify": hub.stats().connections,
    }


@app.get("/stats")
async def stats() -> dict[str, int | str]:
    s = hub.stats()
    return {f: getattr(s, f) for f in s.__struct_fields__}


@app.get("/info")
async def info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "loop": type(asyncio.get_running_loop()).__module__,
        "fastapi": fastapi.__version__,
        "starlette": starlette.__version__,
        "uvicorn": uvicorn.__version__,
        "websockets": importlib.metadata.version("websockets"),
        "msgspec": msgspec.__version__,
        "sqla_notify": sqla_notify.__version__,
        "queue_size": hub.queue_size,
    }


_gc_time = [0.0, 0.0, 0.0]  # seconds spent in collections of each generation
_gc_count = [0, 0, 0]
_gc_started = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        generation = info["generation"]
        _gc_time[generation] += time.perf_counter() - _gc_started
        _gc_count[generation] += 1


gc.callbacks.append(_on_gc)


@app.get("/gc")
async def gc_stats() -> dict[str, Any]:
    """Garbage collections in this process so far: count and seconds per generation."""
    return {"count": _gc_count, "seconds": _gc_time}


_profiler: cProfile.Profile | None = None


@app.post("/profile/start")
async def profile_start() -> dict[str, bool]:
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()
    return {"ok": True}


@app.post("/profile/stop")
async def profile_stop(path: str) -> dict[str, bool]:
    global _profiler
    if _profiler is None:
        return {"ok": False}
    _profiler.disable()
    _profiler.dump_stats(path)
    _profiler = None
    return {"ok": True}
