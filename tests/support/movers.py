"""WebSocket clients that behave as the browser client does when a server goes away (1001 or
1012): they reconnect at once, after a small jitter, with their last id, to the other
server, and a steady writer; for the rolling-restart tests."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from .servers import Server

GOING_AWAY = (1001, 1012)


@dataclass
class Move:
    """One client's move from a server that went away."""

    code: int  #: the close code it got
    last_before: float  #: when it got its last notification before the close (monotonic)
    closed: float  #: when the close frame arrived
    first_after: float | None = None  #: when the first notification came on the new connection


@dataclass
class Mover:
    """A client of ``home`` that moves to ``away`` when ``home`` goes away."""

    home: Server
    away: Server
    ids: list[int] = field(default_factory=list)  #: the forum ids it received, in order
    cursors: list[str] = field(default_factory=list)  #: their cursors
    moves: list[Move] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)  #: resyncs, errors, other closes
    target: int | None = None  #: how many notifications make it complete
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    ws: websockets.ClientConnection | None = None
    finished: bool = False
    last_at: float = 0.0  #: when the latest notification came (monotonic)

    async def run(self) -> None:
        """Receive until :meth:`stop`; move once, as the browser client would."""
        url = self.home.ws
        while True:
            query = f"?last_id={self.cursors[-1]}" if self.cursors else ""
            self.ws = ws = await websockets.connect(url + query, max_queue=None, open_timeout=10)
            try:
                async for raw in ws:
                    self._receive(json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            if self.finished:
                return
            code = ws.close_code
            if code not in GOING_AWAY or url == self.away.ws:
                self.unexpected.append(("closed", code, ws.close_reason))
                return
            self.moves.append(Move(code, self.last_at, time.monotonic()))
            await asyncio.sleep(random.uniform(0, 0.25))  # the browser client's jitter
            url = self.away.ws

    def _receive(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        kind = message.get("type", "notification")  # a notification has no type
        if kind == "welcome":
            self.welcomed.set()
        elif kind == "notification":
            self.ids.append(message["data"]["id"])
            self.cursors.append(message["id"])
            if self.moves and self.moves[-1].first_after is None:
                self.moves[-1].first_after = now
            self.last_at = now
            self.check()
        else:
            self.unexpected.append(message)

    def check(self) -> None:
        """Set :attr:`complete` once ``target`` notifications arrived."""
        if self.target is not None and len(self.ids) >= self.target:
            self.complete.set()

    async def stop(self) -> None:
        """Close its connection, and end :meth:`run`."""
        self.finished = True
        if self.ws is not None:
            await self.ws.close()


async def write_steadily(servers: list[Server], rate: float, until: asyncio.Event) -> list[int]:
    """Create forums at ``rate`` per second through the servers in turn (skipping one that
    refuses: it is restarting) until ``until`` is set; the ids committed."""
    committed: list[int] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with httpx.AsyncClient(timeout=10) as http:
        i = 0
        while not until.is_set():
            for attempt in range(len(servers)):
                server = servers[(i + attempt) % len(servers)]
                try:
                    response = await http.post(f"{server.base}/forums/sync", params={"name": f"w{i}"})
                except httpx.TransportError:
                    continue
                if response.status_code == 200:
                    committed.append(int(response.json()["id"]))
                    break
            else:
                raise AssertionError("no server took the write")
            i += 1
            # Steady: the next write at its own time, not after a pause (a slow write does
            # not shift the rest).
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
    return committed
