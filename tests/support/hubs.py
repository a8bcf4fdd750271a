"""Driving a ``Hub`` in a test: notifications in, a ``Subscriber``'s frames out, and bounded
waits for what the hub's background tasks (broker readers, writers) do."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from sqla_notify import Hub, Notification, Subscriber


def N(i: int, collection: str = "forums") -> Notification:
    """An insert of row ``i``."""
    return Notification(collection, "insert", {"id": i})


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Wait, bounded, for ``condition()`` (the hubs' readers run as background tasks)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def frames(sub: Subscriber) -> list[dict[str, Any]]:
    """What is queued for ``sub``, decoded; empties its queue."""
    return [json.loads(f if isinstance(f, str) else f.text) for f in sub.receive_nowait()]


async def receive(
    sub: Subscriber, done: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Frames for ``sub`` until ``done(frames so far)``, bounded by ``timeout``."""
    got: list[dict[str, Any]] = []

    def check() -> bool:
        got.extend(frames(sub))
        return done(got)

    await until(check, what, timeout)
    return got


async def listening(*hubs: Hub) -> None:
    """Wait (bounded) for the listeners. ``start()`` waits for them already; this keeps the
    tests about their own subject when run against versions whose ``start()`` did not."""
    await until(lambda: all(h.stats().broker == "connected" for h in hubs), "the listeners")
