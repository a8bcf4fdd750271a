"""The contenders of ``bench_broadcast.py``: one module each, plugged into ``broadcast_server.py``.

A contender is a way to broadcast over WebSocket that users would otherwise pick. Each
module defines a :class:`Contender` subclass that says, inside the one benchmark server
process, how a client connects (:meth:`Contender.mount`), how one notification is published
(:meth:`Contender.publish`), when every healthy client's frames have been handed to its
socket (:meth:`Contender.drained`) and how the stalled clients' buffers are filled
(:meth:`Contender.prefill`). The server, the load generator, the rounds and the tables are
the harness's; a new contender is a new module and a line in :data:`ORDER`.

Clients that connect with ``?role=stall`` are the stalled ones: they stop reading, and
every contender leaves them out of :meth:`Contender.healthy` and :meth:`Contender.drained`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import msgspec
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

#: Every contender's name, in the order the tables list them.
ORDER = ("bare", "manager", "notify", "redis", "broadcaster", "socketio")
#: ``--filtered`` (issue 12): posts to 1,000 clients, each subscribed to the whole collection
#: (``whole``), to a collection of its own whole (``split``: :func:`harness.split_name`) or to one
#: forum of its own (``filtered``); ``unwatched`` publishes on the ``filtered`` hub to forums
#: nobody watches and has no clients of its own.
FILTERED = ("whole", "split", "filtered", "unwatched")
STALL_QUERY = b"role=stall"
DATA_NAME = "General discussion"  # pads the message to about 100 bytes
FILLER = "x" * 100  # a frame of about the size of a notification, to fill stalled buffers

_encoder = msgspec.json.Encoder()
_seq = 0  # the message counter of the contenders that are not the hub (it keeps its own)
_epoch = format(time.time_ns() // 1_000_000, "x")


def message(i: int) -> dict[str, Any]:
    """One notification as the hub would send it (python-socketio gets this and encodes it)."""
    global _seq
    _seq += 1
    return {"id": f"{_epoch}-{_seq}", "collection": "forums", "action": "update", "data": {"id": i, "name": DATA_NAME}}


def text(i: int) -> str:
    """One message for the bare loop, the manager and broadcaster: encoded once."""
    return _encoder.encode(message(i)).decode()


def stalled(websocket: WebSocket) -> bool:
    """Whether this client connected as one that stops reading."""
    return bool(websocket.scope["query_string"] == STALL_QUERY)


class Contender:
    """One way to broadcast, inside the benchmark server. Subclasses set :attr:`name` and
    implement :meth:`mount`, :meth:`publish`, :meth:`healthy`, :meth:`connections` and
    :meth:`prefill`; the others have defaults."""

    #: The key in the driver's tables, and the prefix of its WebSocket path.
    name = ""

    def mount(self, api: FastAPI) -> None:
        """Add this contender's WebSocket endpoint to ``api``."""
        raise NotImplementedError

    def wrap(self, app: Any) -> Any:
        """The ASGI app to serve instead of ``app`` (python-socketio sits in front of it)."""
        return app

    async def enter(self, stack: AsyncExitStack) -> None:
        """Start what the contender needs for the app's lifespan (on ``stack``)."""

    def healthy(self) -> int:
        """Connected clients that read."""
        raise NotImplementedError

    def connections(self) -> int:
        """Connected clients, stalled ones included."""
        raise NotImplementedError

    async def publish(self, i: int) -> None:
        """Publish the ``i``-th notification of a burst to every client."""
        raise NotImplementedError

    async def send(self, count: int, paced: bool) -> None:
        """Publish ``count`` notifications; ``paced``: yield to the loop after each one."""
        for i in range(count):
            await self.publish(i)
            if paced:
                await asyncio.sleep(0)

    async def drained(self, deadline: float) -> bool:
        """Wait until every healthy client's frames are in its transport; ``False`` at ``deadline``."""
        return True

    async def prefill(self, deadline: float) -> dict[str, Any]:
        """Fill the stalled clients' buffers until sending to them blocks."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any] | None:
        """Counters of a hub; ``None`` for the others."""
        return None


async def queues_drained(queues: Callable[[], list[Any]], deadline: float) -> bool:
    """Wait until each of the healthy clients' queues (``queues()``) is empty."""
    await asyncio.sleep(0)
    while time.perf_counter() < deadline:
        if all(q.empty() for q in queues()):
            return True
        await asyncio.sleep(0.001)
    return False


async def prefill_queues(
    clients: list[tuple[Any, Callable[[], bool], Callable[[], bool], Callable[[], Any]]], deadline: float,
) -> dict[str, Any]:
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


_fillers: set[asyncio.Task[None]] = set()


async def prefill_sockets(sockets: list[WebSocket], deadline: float) -> dict[str, Any]:
    """Fill clients that have no queue: send to each until its socket blocks (a task each,
    left blocked, as it would be), until none has progressed for 0.3 s."""
    progress: dict[int, int] = dict.fromkeys(map(id, sockets), 0)

    async def fill(ws: WebSocket) -> None:
        i = 0
        try:
            while True:
                await ws.send_text(text(i))
                i += 1
                progress[id(ws)] = i
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # it went away

    for ws in sockets:
        task = asyncio.get_running_loop().create_task(fill(ws))
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


