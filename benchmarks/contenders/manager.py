"""The ``ConnectionManager`` of FastAPI's WebSocket documentation ("Handling disconnections
and multiple clients"): the bare loop's work in a class, so its ratio to the bare loop is
the noise floor."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from . import Contender, prefill_sockets, stalled, text


class ConnectionManager:
    """As in FastAPI's docs."""

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


class Manager(Contender):
    """The documented endpoint around :class:`ConnectionManager`; it sends to every client."""

    name = "manager"

    def __init__(self) -> None:
        self.manager = ConnectionManager()
        self.stalled: list[WebSocket] = []  # for prefill only

    def mount(self, api: FastAPI) -> None:
        manager = self.manager

        @api.websocket("/manager/ws")
        async def manager_ws(websocket: WebSocket) -> None:
            await manager.connect(websocket)
            stall = stalled(websocket)
            if stall:
                self.stalled.append(websocket)
            try:
                while True:
                    await websocket.receive_text()
            except WebSocketDisconnect:
                manager.disconnect(websocket)
            finally:
                if stall:
                    self.stalled.remove(websocket)

    def healthy(self) -> int:
        return len(self.manager.active_connections)

    def connections(self) -> int:
        return len(self.manager.active_connections)

    async def publish(self, i: int) -> None:
        await self.manager.broadcast(text(i))

    async def prefill(self, deadline: float) -> dict[str, Any]:
        return await prefill_sockets(list(self.stalled), deadline)
