"""python-socketio's ``AsyncServer`` (ASGI mode, default settings: pings every 25 s) in front
of the FastAPI app; a notification is ``await sio.emit("n", message)`` to every connected
client (one task per client per emit, an unbounded queue and a writer task per client),
arriving as the text frame ``42["n",{...}]``. It gets the dict and encodes its packet once
per ``emit``, then prefixes Engine.IO's ``4`` per client in its writer.

A benchmark's licence: this module reads python-engineio's private per-socket queue, to
know when the healthy clients are drained.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from fastapi import FastAPI

from . import FILLER, Contender, message, prefill_queues, queues_drained


class SocketIO(Contender):
    """``socketio.ASGIApp(sio, other_asgi_app=api)``: it answers ``/socket.io/``, FastAPI the rest."""

    name = "socketio"

    def __init__(self) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
        self.stalled: dict[str, bool] = {}  # connected sid -> whether its client stalls

        @self.sio.event
        async def connect(sid: str, environ: dict[str, Any]) -> None:
            self.stalled[sid] = "role=stall" in environ.get("QUERY_STRING", "")

        @self.sio.event
        async def disconnect(sid: str, *args: Any) -> None:
            self.stalled.pop(sid, None)

    def mount(self, api: FastAPI) -> None:
        pass  # served by wrap()

    def wrap(self, app: Any) -> Any:
        # It looks at each connection's path once; messages are not wrapped.
        return socketio.ASGIApp(self.sio, other_asgi_app=app)

    def _queue(self, sid: str) -> asyncio.Queue[Any] | None:
        """The Engine.IO socket's outgoing queue (private to python-engineio)."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return None if socket is None else socket.queue

    def _healthy(self) -> list[asyncio.Queue[Any]]:
        queues = (self._queue(sid) for sid, stall in list(self.stalled.items()) if not stall)
        return [q for q in queues if q is not None]

    def healthy(self) -> int:
        return sum(1 for stall in self.stalled.values() if not stall)

    def connections(self) -> int:
        return len(self.stalled)

    async def publish(self, i: int) -> None:
        await self.sio.emit("n", message(i))

    async def drained(self, deadline: float) -> bool:
        return await queues_drained(self._healthy, deadline)

    async def prefill(self, deadline: float) -> dict[str, Any]:
        async def emit(sid: str) -> None:
            for _ in range(200):
                await self.sio.emit("f", FILLER, to=sid)

        return await prefill_queues(
            [(sid, lambda sid=sid: (q := self._queue(sid)) is None or q.empty(), lambda: True,
              lambda sid=sid: emit(sid)) for sid, stall in self.stalled.items() if stall],
            deadline,
        )
