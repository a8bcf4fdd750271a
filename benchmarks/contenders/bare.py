"""The floor on cost: accept, append to a list; broadcast is ``for ws in clients: await
ws.send_text(text)``, the text encoded once per notification."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, WebSocket

from . import Contender, prefill_sockets, stalled, text


class Bare(Contender):
    """The bare loop. It cannot tell stalled clients from the others: it sends to all."""

    name = "bare"

    def __init__(self) -> None:
        self.clients: list[WebSocket] = []
        self.stalled: list[WebSocket] = []  # also in clients; for prefill only

    def mount(self, api: FastAPI) -> None:
        @api.websocket("/bare/ws")
        async def bare_ws(websocket: WebSocket) -> None:
            await websocket.accept()
            self.clients.append(websocket)
            stall = stalled(websocket)
            if stall:
                self.stalled.append(websocket)
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
            finally:
                self.clients.remove(websocket)
                if stall:
                    self.stalled.remove(websocket)

    def healthy(self) -> int:
        return len(self.clients)

    def connections(self) -> int:
        return len(self.clients)

    async def publish(self, i: int) -> None:
        message = text(i)
        for ws in self.clients:
            await ws.send_text(message)

    async def prefill(self, deadline: float) -> dict[str, Any]:
        return await prefill_sockets(list(self.stalled), deadline)
