"""Real WebSocket clients (the ``websockets`` package) of the servers in ``servers``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from .servers import Server


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next message, decoded; fails after 10 s."""
    return json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]


@asynccontextmanager
async def clients(*servers: Server) -> AsyncIterator[list[websockets.ClientConnection]]:
    """One WebSocket client per server, past its welcome."""
    # Unbounded: a client that leaves frames unread still reads the close frame behind them.
    sockets = [await websockets.connect(server.ws, max_queue=None) for server in servers]
    try:
        for ws in sockets:
            assert (await recv(ws))["type"] == "welcome"
        yield sockets
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
