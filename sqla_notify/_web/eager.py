"""Run a coroutine at once, in the caller's step, and give it a task only if it waits.

A WebSocket writer's coroutine usually finishes without ever waiting: the socket takes the
frame (``transport.write``) and there is nothing more to send. Wrapping each run in a task
costs a task switch per client and notification, plus the task itself, which is what made
the hub slower than a bare ``for ws in clients: await ws.send(...)`` loop to reach the last
client of a broadcast. :func:`start` drives the coroutine's first step by hand, as Python
3.12's ``eager_start`` does, and hands it to a task only if it is still waiting when that
step ends (a client whose socket buffer is full), so that it never blocks the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ("finish", "start")


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first waits; ``None`` if it finished then, else the task that
    finishes it. An exception raised before it first waits propagates to the caller.

    Call on the event loop. The coroutine runs in the caller's context (a task would run it
    in a copy of it): it must not set context variables that the caller would then see.
    """
    try:
        awaited = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(finish(coro, awaited))


async def finish(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive ``coro``, which yielded ``awaited`` when it was last resumed by hand, to its
    end: wait for what it yielded, then resume it, as a task does. Awaited in a task,
    cancelling that task cancels what it waits for and raises ``CancelledError`` inside
    ``coro``, as cancelling its own task would; what ``coro`` raises or returns is this
    coroutine's."""
    while True:
        try:
            if awaited is None:  # a bare yield (``asyncio.sleep(0)``): one loop turn
                await asyncio.sleep(0)
            elif getattr(awaited, "_asyncio_future_blocking", None) is not None:
                # An asyncio future, yielded the way ``await future`` yields it.
                awaited._asyncio_future_blocking = False
                await awaited
            else:
                raise RuntimeError(f"a coroutine run by sqla_notify yielded {awaited!r}, not a future")
        except BaseException as exc:  # noqa: BLE001 - the coroutine decides: as in a task
            try:
                awaited = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
