"""The server side of ``bench_broadcast.py``: six ways to broadcast over WebSocket, one app.

All six contenders live in one ASGI app (python-socketio's ``ASGIApp`` in front of a FastAPI
app that serves the other five), so they run in the same uvicorn process with the
same settings (the driver starts it with ``--ws-per-message-deflate false --log-level
warning``; everything else is uvicorn's default: uvloop when installed, websockets-sansio,
pings every 20 s):

* ``/bare/ws``: accept, append to a list; broadcast is ``for ws in clients: await
  ws.send_text(text)``.
* ``/manager/ws``: the "ConnectionManager" of FastAPI's WebSocket documentation
  (``active_connections``; ``broadcast`` loops ``await connection.send_text(message)``).
* ``/notify/ws``: sqla_notify's :func:`~sqla_notify.fastapi.notify_router` over a
  :class:`~sqla_notify.Hub` entered in the lifespan.
* ``/redis/ws``: the same router over a second hub, ``Hub(broker=RedisBroker(url,
  stream=...))``, when ``BENCH_REDIS_URL`` and ``BENCH_REDIS_STREAM`` are set (otherwise this
  contender is absent). A notification published to it is written to the Redis Stream
  (``XADD``), read back by the hub's reader (``XREAD``) and only then delivered to this
  process's clients: the whole trip of a multi-process deployment, with one process. The
  lifespan waits (up to ``BENCH_REDIS_CONNECT`` seconds, default 10) until the broker has
  primed from the stream and may write, so the first burst does not wait for the connection;
  ``GET /info`` reports the broker's state.
* ``/broadcaster/ws``: encode/broadcaster's ``Broadcast("memory://")``, the endpoint of its
  README (a receiver task in an anyio task group; the sender iterates
  ``broadcast.subscribe(channel)`` and calls ``send_text``); a notification is
  ``await broadcast.publish("forums", text)``.
* ``/socket.io/?EIO=4&transport=websocket``: python-socketio's ``AsyncServer`` (ASGI mode,
  default settings: pings every 25 s); a notification is ``await sio.emit("n", message)`` to
  every connected client, which arrives as the text frame ``42["n",{...}]``.

Every contender sends the same notification, about 100 bytes
(``{"id":"<epoch>-<seq>","collection":"forums","action":"update","data":{...}}``), encoded
once per notification: the hub does so itself; the bare loop, the manager and broadcaster get
the encoded text; python-socketio gets the dict and encodes its packet once per ``emit``
(then prefixes Engine.IO's ``4`` per client, in its writer).

Control endpoints (loopback benchmark use only):

* ``POST /broadcast/{contender}?count=N``: broadcast N notifications and return the seconds it
  took to hand them all to the sockets. Bare and manager: the loop's duration. Hub (either
  one): N calls of ``hub.publish([Notification(...)])`` (one batch per notification, as N
  commits would), then until the hub has delivered all N (through Redis: read them back from
  the stream) and every subscriber's queue is empty and its writer idle, i.e. every frame is
  in its socket's transport (clients that connected with ``?role=stall`` are left out of the
  wait).
  Broadcaster and python-socketio: the publish/emit calls, then until every healthy client's
  queue is empty (its writer may still be sending the last frames it took). The response
  carries ``started_at``, the server's ``time.perf_counter()`` as it began (CLOCK_MONOTONIC,
  shared with the clients' processes). With ``paced=true`` each notification is followed by
  ``await asyncio.sleep(0)``.
* ``POST /prefill/{contender}``: fill the ``role=stall`` clients' socket buffers until sending
  to them blocks, the steady state of a client that stopped reading a while ago.
* ``GET /rss``: the resident set size of this process (after ``gc.collect()``).
* ``GET /info``, ``GET /stats?contender=notify|redis`` (a hub's counters; for Redis also the
  broker's failed calls), ``GET /gc`` (time spent collecting garbage),
  ``POST /profile/start``, ``POST /profile/stop``
  (cProfile of the event-loop thread, dumped to a file).

Configured by environment variables: ``BENCH_QUEUE_SIZE`` (the hubs' ``queue_size``, default
1000); ``BENCH_START_CHUNK`` (how many client writers the hub starts per event-loop step,
for ``bench_writer_start.py``); ``BENCH_REDIS_URL``, ``BENCH_REDIS_STREAM`` and ``BENCH_REDIS_CONNECT`` (above).
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
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import broadcaster
import fastapi
import msgspec
import socketio
import starlette
import uvicorn
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from starlette.requests import HTTPConnection

import sqla_notify
from sqla_notify import Hub, Notification, Subscriber
from sqla_notify import fastapi as _fastapi
from sqla_notify.fastapi import notify_router

# Every collection. Versions before ALL took collections=None for that: this server also
# runs against older checkouts (PYTHONPATH=...), to compare them with this one in one run.
ALL = getattr(_fastapi, "ALL", None)

CONTENDERS = ("bare", "manager", "notify", "redis", "broadcaster", "socketio")
QUEUED = ("notify", "redis", "broadcaster", "socketio")  # a queue and a writer per client
STALL = "stall"  # the principal of clients that connected with ?role=stall
HEALTHY = "healthy"
STALL_QUERY = b"role=stall"
DATA_NAME = "General discussion"  # pads the message to about 100 bytes

QUEUE_SIZE = int(os.environ.get("BENCH_QUEUE_SIZE", "1000"))
if os.environ.get("BENCH_START_CHUNK"):  # bench_writer_start.py: how many writers start per loop step
    import sqla_notify._hub

    sqla_notify._hub._START_CHUNK = int(os.environ["BENCH_START_CHUNK"])
hub = Hub(queue_size=QUEUE_SIZE)
REDIS_URL = os.environ.get("BENCH_REDIS_URL")
REDIS_STREAM = os.environ.get("BENCH_REDIS_STREAM")
redis_hub: Hub | None = None
if REDIS_URL and REDIS_STREAM:
    from sqla_notify.redis import RedisBroker  # optional: only with the Redis contender

    redis_hub = Hub(queue_size=QUEUE_SIZE, broker=RedisBroker(REDIS_URL, stream=REDIS_STREAM))
# The hubs by contender: the same router and client protocol, in-process or through Redis.
HUBS: dict[str, Hub] = {"notify": hub} if redis_hub is None else {"notify": hub, "redis": redis_hub}
_encoder = msgspec.json.Encoder()
_seq = 0  # the bare loop's and the manager's message counter (the hub keeps its own)
_epoch = format(time.time_ns() // 1_000_000, "x")


def _message(i: int) -> dict[str, Any]:
    """One notification as the hub would send it (python-socketio gets this and encodes it)."""
    global _seq
    _seq += 1
    return {
        "id": f"{_epoch}-{_seq}", "collection": "forums", "action": "update",
        "data": {"id": i, "name": DATA_NAME},
    }


def _text(i: int) -> str:
    """One message for the bare loop, the manager and broadcaster: encoded once."""
    return _encoder.encode(_message(i)).decode()


def _authenticate(conn: HTTPConnection) -> str:
    # Shared constants, so that tagging costs no memory per connection.
    return STALL if conn.scope["query_string"] == STALL_QUERY else HEALTHY


broadcast = broadcaster.Broadcast("memory://")


async def _redis_connected(h: Hub, seconds: float) -> bool:
    """Wait until the hub's Redis broker has primed its window and started its writer."""
    deadline = time.perf_counter() + seconds
    while h.stats().broker != "connected":
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        await stack.enter_async_context(broadcast)
        if redis_hub is not None:
            await stack.enter_async_context(redis_hub)
            # Not fatal: /info reports the state, and the driver decides.
            await _redis_connected(redis_hub, float(os.environ.get("BENCH_REDIS_CONNECT", "10")))
        yield


api = FastAPI(lifespan=lifespan)
for _name, _hub in HUBS.items():
    api.include_router(notify_router(_hub, authenticate=_authenticate, collections=ALL), prefix=f"/{_name}")


# -- 1. the bare loop -------------------------------------------------------------------------

bare_clients: list[WebSocket] = []
bare_stalled: list[WebSocket] = []  # also in bare_clients; for /prefill only


@api.websocket("/bare/ws")
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


@api.websocket("/manager/ws")
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


# -- 3. sqla_notify's hubs (in-process, and through Redis): the routers above; helpers -------


def _check_internals() -> None:
    """This app reads a few of the hub's private attributes: fail clearly if they moved."""
    missing = [a for a in ("_queue", "_writing", "principal") if a not in Subscriber.__slots__]
    if missing or not isinstance(getattr(hub, "_subscribers", None), set):
        raise RuntimeError(f"broadcast_server.py needs updating: Hub/Subscriber internals changed ({missing})")
    if not hasattr(broadcaster._base.Subscriber(asyncio.Queue()), "_queue"):
        raise RuntimeError("broadcast_server.py needs updating: broadcaster's Subscriber has no _queue")


_check_internals()


def _subscribers(h: Hub) -> list[Subscriber]:
    # A benchmark's licence: the hub keeps its subscribers private.
    return list(h._subscribers)


def _idle(sub: Subscriber) -> bool:
    """Nothing queued and no writer task running: every frame is in the transport.

    Private slots, not ``sub.pending`` and ``sub.writing``: this runs for every client every
    millisecond of a burst, on the server's loop, and two property calls cost about three
    times as much, which the hub's figures would then carry.
    """
    return not sub._queue and not sub._writing


async def _hub_drained(h: Hub, published: int, deadline: float) -> bool:
    """Wait until hub ``h`` delivered ``published`` notifications (with a broker: read them back)
    and its healthy writers are idle."""
    await asyncio.sleep(0)
    while time.perf_counter() < deadline:
        if h.stats().published >= published and all(
            _idle(s) for s in h._subscribers if s.principal is not STALL
        ):
            return True
        await asyncio.sleep(0.001)
    return False


async def _queues_drained(queues: Any, deadline: float) -> bool:
    """Wait until each of the healthy clients' queues (``queues()``) is empty."""
    await asyncio.sleep(0)
    while time.perf_counter() < deadline:
        if all(q.empty() for q in queues()):
            return True
        await asyncio.sleep(0.001)
    return False


# -- 4. encode/broadcaster, memory backend: the endpoint of its README ------------------------

CHANNEL = "forums"
# Every subscriber's queue -> whether its client stalls; a benchmark's licence (broadcaster
# keeps the queue private), for /prefill and for waiting until the healthy ones are drained.
broadcaster_queues: dict[asyncio.Queue[Any], bool] = {}


@api.websocket("/broadcaster/ws")
async def broadcaster_ws(websocket: WebSocket) -> None:
    await websocket.accept()

    async with anyio.create_task_group() as task_group:
        # run until first is complete
        async def run_receiver() -> None:
            await broadcaster_receiver(websocket)
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_receiver)
        await broadcaster_sender(websocket)


async def broadcaster_receiver(websocket: WebSocket) -> None:
    async for message in websocket.iter_text():  # the clients send nothing: ends at disconnect
        await broadcast.publish(channel=CHANNEL, message=message)


async def broadcaster_sender(websocket: WebSocket) -> None:
    async with broadcast.subscribe(channel=CHANNEL) as subscriber:
        queue = subscriber._queue
        broadcaster_queues[queue] = websocket.scope["query_string"] == STALL_QUERY
        try:
            async for event in subscriber:  # type: ignore[attr-defined]
                await websocket.send_text(event.message)
        finally:
            del broadcaster_queues[queue]


def _broadcaster_healthy() -> list[asyncio.Queue[Any]]:
    return [q for q, stalled in broadcaster_queues.items() if not stalled]


# -- 5. python-socketio: an AsyncServer in front of the FastAPI app ---------------------------

sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
sio_stalled: dict[str, bool] = {}  # connected sid -> whether its client stalls


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    sio_stalled[sid] = "role=stall" in environ.get("QUERY_STRING", "")


@sio.event
async def disconnect(sid: str, *args: Any) -> None:
    sio_stalled.pop(sid, None)


def _sio_queue(sid: str) -> asyncio.Queue[Any] | None:
    """The Engine.IO socket's outgoing queue (private to python-engineio)."""
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    socket = sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
    return None if socket is None else socket.queue


def _sio_healthy() -> list[asyncio.Queue[Any]]:
    queues = (_sio_queue(sid) for sid, stalled in list(sio_stalled.items()) if not stalled)
    return [q for q in queues if q is not None]


# The app uvicorn serves: python-socketio answers /socket.io/, FastAPI everything else
# (lifespan included). It looks at each connection's path once; messages are not wrapped.
app = socketio.ASGIApp(sio, other_asgi_app=api)


# -- control endpoints ----------------------------------------------------------------------


def _check(contender: str) -> None:
    if contender not in CONTENDERS:
        raise HTTPException(404, f"unknown contender {contender!r}; expected one of {CONTENDERS}")
    if contender == "redis" and redis_hub is None:
        raise HTTPException(404, "the redis contender needs BENCH_REDIS_URL and BENCH_REDIS_STREAM")


@api.post("/broadcast/{contender}")
async def run_broadcast(contender: str, count: int, timeout: float = 60.0, paced: bool = False) -> dict[str, Any]:
    """Send ``count`` notifications to every client of ``contender``; time the hand-off.

    ``paced``: yield to the event loop after each notification, as when commits arrive one
    at a time; the hub's writers then send each notification on its own instead of in batches.
    """
    _check(contender)
    t0 = time.perf_counter()
    if contender in HUBS:
        h = HUBS[contender]
        clients = sum(1 for s in h._subscribers if s.principal is not STALL)
        target = h.stats().published + count
        for i in range(count):
            h.publish([Notification("forums", "update", {"id": i, "name": DATA_NAME})])
            if paced:
                await asyncio.sleep(0)
        ok = await _hub_drained(h, target, t0 + timeout)
        return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": ok, "started_at": t0}
    if contender == "broadcaster":
        clients = len(_broadcaster_healthy())
        for i in range(count):
            await broadcast.publish(CHANNEL, _text(i))
            if paced:
                await asyncio.sleep(0)
        ok = await _queues_drained(
            lambda: [broadcast._backend._published, *_broadcaster_healthy()], t0 + timeout,
        )
        return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": ok, "started_at": t0}
    if contender == "socketio":
        clients = sum(1 for stalled in sio_stalled.values() if not stalled)
        for i in range(count):
            await sio.emit("n", _message(i))
            if paced:
                await asyncio.sleep(0)
        ok = await _queues_drained(_sio_healthy, t0 + timeout)
        return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": ok, "started_at": t0}
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
        return {
            "seconds": time.perf_counter() - t0, "clients": clients, "ok": False, "error": repr(exc),
            "started_at": t0,
        }
    return {"seconds": time.perf_counter() - t0, "clients": clients, "ok": True, "started_at": t0}


_fillers: set[asyncio.Task[None]] = set()
FILLER = "x" * 100  # a frame of about the size of a notification


async def _prefill_queues(clients: list[tuple[Any, Any, Any, Any]], deadline: float) -> dict[str, Any]:
    """Fill stalled clients that have a queue and a writer: top up each queue with 200 frames
    whenever its writer has emptied it, until every queue stays non-empty for 0.3 s (the
    writers are then blocked in send()). ``clients``: (key, is_empty, writer_running, top_up)."""
    sent = {key: 0 for key, *_ in clients}
    blocked_since: float | None = None
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        if all(not is_empty() and running() for _, is_empty, running, _ in clients):
            blocked_since = blocked_since or now
            if now - blocked_since >= 0.3:
                break
        else:
            blocked_since = None
        for key, is_empty, _, top_up in clients:
            if is_empty():
                result = top_up()
                if asyncio.iscoroutine(result):
                    await result
                sent[key] += 200
        await asyncio.sleep(0.02)
    return {
        "stalled": len(clients),
        "blocked": sum(1 for _, is_empty, running, _ in clients if not is_empty() and running()),
        "frames_sent_each": sorted(sent.values()),
    }


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


@api.post("/prefill/{contender}")
async def prefill(contender: str, max_seconds: float = 20.0) -> dict[str, Any]:
    """Fill the ``role=stall`` clients' buffers until sending to them blocks."""
    _check(contender)
    deadline = time.perf_counter() + max_seconds
    if contender in HUBS:
        # Top up each stalled client's queue whenever its writer has emptied it; once the
        # queues stay non-empty, the writers are blocked in send(). Steps of 200 frames keep
        # the queues well under queue_size, so the hub's overflow policy is not involved.
        # (Straight into the queues: the Redis hub's stalled clients fill as the other's.)
        h = HUBS[contender]
        stalled = [s for s in _subscribers(h) if s.principal is STALL]
        return await _prefill_queues(
            [(id(s), lambda s=s: s.pending == 0, lambda s=s: s.writing,
              lambda s=s: [h.send_error(s, FILLER) for _ in range(200)]) for s in stalled],
            deadline,
        )
    if contender == "broadcaster":
        queues = [q for q, stalled in broadcaster_queues.items() if stalled]
        return await _prefill_queues(
            [(id(q), q.empty, lambda: True,
              lambda q=q: [q.put_nowait(broadcaster.Event(CHANNEL, FILLER)) for _ in range(200)])
             for q in queues],
            deadline,
        )
    if contender == "socketio":
        sids = [sid for sid, stalled in sio_stalled.items() if stalled]

        async def emit(sid: str) -> None:
            for _ in range(200):
                await sio.emit("f", FILLER, to=sid)

        return await _prefill_queues(
            [(sid, lambda sid=sid: (q := _sio_queue(sid)) is None or q.empty(), lambda: True,
              lambda sid=sid: emit(sid)) for sid in sids],
            deadline,
        )
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


@api.get("/rss")
async def rss() -> dict[str, int]:
    """Resident set size in bytes, after a full collection; and connection counts."""
    gc.collect()
    return {
        "rss": _rss(), "bare": len(bare_clients), "manager": len(manager.active_connections),
        "notify": hub.stats().connections, "redis": 0 if redis_hub is None else redis_hub.stats().connections,
        "broadcaster": len(broadcaster_queues), "socketio": len(sio_stalled),
    }


@api.get("/stats")
async def stats(contender: str = "notify") -> dict[str, int | str]:
    """A hub's counters; for the Redis hub also its broker's failed calls (``broker_errors``)."""
    if contender not in HUBS:
        raise HTTPException(404, f"no hub for contender {contender!r}; expected one of {tuple(HUBS)}")
    h = HUBS[contender]
    s = h.stats()
    out: dict[str, int | str] = {f: getattr(s, f) for f in s.__struct_fields__}
    if h._broker is not None:
        out["broker_errors"] = h._broker.errors  # type: ignore[attr-defined]
    return out


@api.get("/info")
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
        "broadcaster": importlib.metadata.version("broadcaster"),
        "python-socketio": importlib.metadata.version("python-socketio"),
        "python-engineio": importlib.metadata.version("python-engineio"),
        "queue_size": hub.queue_size,
        "redis": None if redis_hub is None else {
            "stream": REDIS_STREAM, "broker": redis_hub.stats().broker,
            "redis-py": importlib.metadata.version("redis"),
        },
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


@api.get("/gc")
async def gc_stats() -> dict[str, Any]:
    """Garbage collections in this process so far: count and seconds per generation."""
    return {"count": _gc_count, "seconds": _gc_time}


_profiler: cProfile.Profile | None = None


@api.post("/profile/start")
async def profile_start() -> dict[str, bool]:
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()
    return {"ok": True}


@api.post("/profile/stop")
async def profile_stop(path: str) -> dict[str, bool]:
    global _profiler
    if _profiler is None:
        return {"ok": False}
    _profiler.disable()
    _profiler.dump_stats(path)
    _profiler = None
    return {"ok": True}
