"""Real WebSocket clients (the ``websockets`` package) of the servers in ``servers``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
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


async def receive_all(sockets: list[ClientConnection], count: int) -> list[list[dict[str, Any]]]:
    """``count`` messages from each of ``sockets`` (read side by side), and then nothing more
    within 0.3 s on any of them."""

    async def collect(ws: ClientConnection) -> list[dict[str, Any]]:
        return [await recv(ws) for _ in range(count)]

    seen = await asyncio.gather(*(collect(ws) for ws in sockets))
    for ws in sockets:  # and nothing more
        with pytest.raises(asyncio.TimeoutError):  # not the builtin TimeoutError before 3.11
            await asyncio.wait_for(ws.recv(), 0.3)
    return seen
