"""encode/broadcaster's ``Broadcast("memory://")`` behind the endpoint of its README: per
connection a task group, an unbounded queue and a sender task; a notification is ``await
broadcast.publish("forums", text)``.

A benchmark's licence: broadcaster keeps each subscriber's queue private; this module reads
it, to fill the stalled clients' queues and to know when the healthy ones are drained.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import anyio
import broadcaster
from fastapi import FastAPI, WebSocket

from . import FILLER, Contender, prefill_queues, queues_drained, stalled, text

CHANNEL = "forums"
if not hasattr(broadcaster._base.Subscriber(asyncio.Queue()), "_queue"):
    raise RuntimeError("contenders/broadcaster.py needs updating: broadcaster's Subscriber has no _queue")


class Broadcaster(Contender):
    """The README's endpoint: a receiver that publishes what the client sends, a sender per subscriber."""

    name = "broadcaster"

    def __init__(self) -> None:
        self.broadcast = broadcaster.Broadcast("memory://")
        self.queues: dict[asyncio.Queue[Any], bool] = {}  # every subscriber's queue -> whether its client stalls

    def mount(self, api: FastAPI) -> None:
        broadcast, queues = self.broadcast, self.queues

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
                queues[queue] = stalled(websocket)
                try:
                    async for event in subscriber:  # type: ignore[attr-defined]
                        await websocket.send_text(event.message)
                finally:
                    del queues[queue]

    async def enter(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self.broadcast)

    def _healthy(self) -> list[asyncio.Queue[Any]]:
        return [q for q, stall in self.queues.items() if not stall]

    def healthy(self) -> int:
        return len(self._healthy())

    def connections(self) -> int:
        return len(self.queues)

    async def publish(self, i: int) -> None:
        await self.broadcast.publish(CHANNEL, text(i))

    async def drained(self, deadline: float) -> bool:
        return await queues_drained(lambda: [self.broadcast._backend._published, *self._healthy()], deadline)

    async def prefill(self, deadline: float) -> dict[str, Any]:
        return await prefill_queues(
            [(id(q), q.empty, lambda: True,
              lambda q=q: [q.put_nowait(broadcaster.Event(CHANNEL, FILLER)) for _ in range(200)])
             for q, stall in self.queues.items() if stall],
            deadline,
        )
