"""sqla_notify's :class:`~sqla_notify.Hub` behind :func:`~sqla_notify.fastapi.notify_router`:
in-process (``notify``), and through Redis (``redis``: ``Hub(broker=RedisBroker(url,
stream=...))``), the same router and client protocol.

Through Redis, ``publish`` only queues the notification for the broker, which writes it to
the stream (pipelined ``XADD``); the hub delivers it to this process's clients once its
``XREAD`` has read it back, so every figure includes that round trip. The server serves the
``redis`` contender when ``BENCH_REDIS_URL`` and ``BENCH_REDIS_STREAM`` are set; its lifespan
waits (``BENCH_REDIS_CONNECT`` seconds, default 10) until the broker has connected.

A benchmark's licence: the hub keeps its set of subscribers private; this module reads it
(and, before the public Subscriber interface, their private fields; checked when built, so
a change fails clearly) to know when every frame is in
a transport and to fill the stalled clients' queues. It also works against older checkouts
(``PYTHONPATH``), for comparisons in one run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from sqla_notify import Hub, Notification, Subscriber
from sqla_notify import fastapi as _fastapi
from sqla_notify.fastapi import notify_router

from harness import split_name

from . import DATA_NAME, FILLER, STALL_QUERY, Contender, prefill_queues

# Every collection. Versions before ALL took collections=None for that.
ALL = getattr(_fastapi, "ALL", None)
STALL = "stall"  # the principal of stalled clients; shared constants cost no memory per connection
HEALTHY = "healthy"
QUEUE_SIZE = int(os.environ.get("BENCH_QUEUE_SIZE", "1000"))
if os.environ.get("BENCH_START_CHUNK"):  # bench_writer_start.py: how many writers start per loop step
    import sqla_notify._hub.hub

    sqla_notify._hub.hub._START_CHUNK = int(os.environ["BENCH_START_CHUNK"])



def _authenticate(conn: HTTPConnection) -> str:
    return STALL if conn.scope["query_string"] == STALL_QUERY else HEALTHY


# Whether a subscriber has frames queued, and whether its writer runs: public since the
# Subscriber interface (issue 13), private fields before it (older checkouts, --against).
if hasattr(Subscriber, "pending") and hasattr(Subscriber, "writing"):
    FIELDS: tuple[str, ...] = ()

    def _queued(sub: Subscriber) -> bool:
        return sub.pending != 0

    def _writing(sub: Subscriber) -> bool:
        return bool(sub.writing)

    def _idle(sub: Subscriber) -> bool:
        """Nothing queued and no writer task running: every frame is in the transport.

        Private slots, not ``sub.pending`` and ``sub.writing``: this runs for every client
        every millisecond of a burst, on the server's loop, and two property calls cost about
        three times as much, which the hub's figures would then carry.
        """
        return not sub._queue and not sub._writing
else:
    FIELDS = ("_queue", "_writer")

    def _queued(sub: Subscriber) -> bool:
        return bool(sub._queue)

    def _writing(sub: Subscriber) -> bool:
        return sub._writer is not None

    def _idle(sub: Subscriber) -> bool:
        """Nothing queued and no writer task running: every frame is in the transport."""
        return not sub._queue and sub._writer is None


class HubContender(Contender):
    """One hub behind ``notify_router`` at ``/<name>/ws``; with ``redis=(url, stream)``, through Redis."""

    def __init__(self, name: str, redis: tuple[str, str] | None = None) -> None:
        self.name = name
        broker = None
        if redis is not None:
            from sqla_notify.redis import RedisBroker  # optional: only with the Redis contender

            broker = RedisBroker(redis[0], stream=redis[1])
        self.hub = Hub(queue_size=QUEUE_SIZE) if broker is None else Hub(queue_size=QUEUE_SIZE, broker=broker)
        self.target = 0
        missing = [a for a in (*FIELDS, "principal") if not hasattr(Subscriber, a) and a not in Subscriber.__slots__]
        if missing or not isinstance(getattr(self.hub, "_subscribers", None), set):
            raise RuntimeError(f"contenders/hub.py needs updating: Hub/Subscriber internals changed ({missing})")

    def mount(self, api: FastAPI) -> None:
        api.include_router(notify_router(self.hub, authenticate=_authenticate, collections=ALL), prefix=f"/{self.name}")

    async def enter(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self.hub)
        if self.hub._broker is not None:  # not fatal: /info reports the state, and the driver decides
            deadline = time.perf_counter() + float(os.environ.get("BENCH_REDIS_CONNECT", "10"))
            while self.hub.stats().broker != "connected" and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)

    def healthy(self) -> int:
        return sum(1 for s in self.hub._subscribers if s.principal is not STALL)

    def connections(self) -> int:
        return self.hub.stats().connections

    async def send(self, count: int, paced: bool) -> None:
        # One batch per notification, as ``count`` commits would; publish itself does not await.
        h = self.hub
        self.target = h.stats().published + count
        for i in range(count):
            h.publish([Notification("forums", "update", {"id": i, "name": DATA_NAME})])
            if paced:
                await asyncio.sleep(0)

    async def drained(self, deadline: float) -> bool:
        """Until the hub delivered the burst (through Redis: read it back) and its healthy writers are idle."""
        h = self.hub
        await asyncio.sleep(0)
        while h.stats().published < self.target:  # through Redis: until the hub has read the burst back
            if time.perf_counter() >= deadline:
                return False
            await asyncio.sleep(0.001)
        # One pass over every client, then only over those still sending: this poll runs on
        # the server's loop while frames are still going out, and a pass over all 1,000
        # clients each millisecond would take CPU from the hub that the bare loop (whose
        # publish returns when its sends have) never pays.
        busy = [s for s in h._subscribers if s.principal is not STALL and not _idle(s)]
        while busy:
            if time.perf_counter() >= deadline:
                return False
            await asyncio.sleep(0.001)
            busy = [s for s in busy if not _idle(s)]
        return True

    async def prefill(self, deadline: float) -> dict[str, Any]:
        # Steps of 200 frames keep the queues well under queue_size, so the hub's overflow
        # policy is not involved; straight into the queues, so both hubs fill alike.
        h = self.hub
        return await prefill_queues(
            [(id(s), lambda s=s: not _queued(s), lambda s=s: _writing(s),
              lambda s=s: [h.send_error(s, FILLER) for _ in range(200)])
             for s in list(h._subscribers) if s.principal is STALL],
            deadline,
        )

    def stats(self) -> dict[str, Any]:
        s = self.hub.stats()
        out: dict[str, Any] = {f: getattr(s, f) for f in s.__struct_fields__}
        if self.hub._broker is not None:
            out["broker_errors"] = self.hub._broker.errors  # type: ignore[attr-defined]
        return out


class Posts(HubContender):
    """``bench_broadcast.py --filtered``: a hub behind ``notify_router(filters={"posts":
    {"forum_id"}})``, publishing posts as capture would (``filter_after={"forum_id": f}``).

    ``whole``: its clients subscribe to ``posts`` whole, and a burst of ``count`` publishes
    ``count`` posts (each to every client). ``filtered``: each client subscribes to a forum
    of its own (``loadgen.py`` numbers them), and a burst of ``count`` publishes ``count``
    posts *per forum watched*, in random order, so that each client gets ``count`` frames
    either way. ``split``: the same, unfiltered: each client subscribes whole to a
    collection of its own (:func:`harness.split_name` of its forum), and the posts go to
    those collections, built the same way but without ``filter_after``: one frame per post,
    routed by collection name, what ``filtered`` is compared with like for like.
    ``unwatched`` (``shared``: the ``filtered`` contender): ``count`` posts on that hub to
    forums nobody watches; it has no clients of its own.
    """

    def __init__(self, name: str, shared: Posts | None = None) -> None:
        super().__init__(name)
        if shared is not None:
            self.hub = shared.hub
        self._order: tuple[frozenset[int], list[int]] = (frozenset(), [])

    def mount(self, api: FastAPI) -> None:
        if self.name == "split":
            api.include_router(notify_router(self.hub, authenticate=_authenticate, collections=ALL),
                               prefix=f"/{self.name}")
        elif self.name != "unwatched":
            api.include_router(notify_router(self.hub, authenticate=_authenticate, collections=["posts"],
                                             filters={"posts": {"forum_id"}}), prefix=f"/{self.name}")

    async def enter(self, stack: AsyncExitStack) -> None:
        if self.name != "unwatched":
            await stack.enter_async_context(self.hub)

    def healthy(self) -> int:
        return 0 if self.name == "unwatched" else super().healthy()

    def connections(self) -> int:
        return 0 if self.name == "unwatched" else super().connections()

    def _watched(self) -> list[int]:
        """The forums the healthy clients watch, in an order shuffled once per set of them."""
        healthy = [s.selection for s in self.hub._subscribers if s.principal is not STALL and s.selection is not None]
        if self.name == "split":
            forums = frozenset(int(c[1:]) for s in healthy for c in s.whole)
        else:
            forums = frozenset(key for s in healthy for f in s.filtered.get("posts", ()) for _, keys in f[:1]
                               for key in keys)
        if forums != self._order[0]:
            order = sorted(forums)
            # Seeded: split's clients (forums of their own, numbered apart from filtered's)
            # get their posts in the same order, forum for forum by rank.
            random.Random(0).shuffle(order)
            self._order = (forums, order)
        return self._order[1]

    def _forums(self, count: int) -> list[int]:
        if self.name == "unwatched":
            return [-1 - i for i in range(count)]  # the clients watch forums >= 0
        if self.name == "whole":
            return [i % 1000 for i in range(count)]  # any: nobody filters
        # Each forum ``count`` times; each round starts at a new place of the shuffled order.
        order = self._watched()
        return [f for r in range(count) for f in order[r % len(order):] + order[:r % len(order)]] if order else []

    async def send(self, count: int, paced: bool) -> None:
        forums = self._forums(count)  # first: about 0.05 µs per post, next to the hub's several
        h = self.hub
        self.target = h.stats().published + len(forums)
        if self.name == "split":
            names = {f: split_name(f) for f in set(forums)}  # a dict lookup per post, as "posts" is a constant
            for i, f in enumerate(forums):
                h.publish([Notification(names[f], "insert", {"id": i, "forum_id": f, "title": DATA_NAME})])
                if paced:
                    await asyncio.sleep(0)
            return
        for i, f in enumerate(forums):
            h.publish([Notification("posts", "insert", {"id": i, "forum_id": f, "title": DATA_NAME},
                                    filter_after={"forum_id": f})])
            if paced:
                await asyncio.sleep(0)


def contenders() -> list[HubContender]:
    """The in-process hub, the hub through Redis if the environment names a stream, and
    ``--filtered``'s four (:class:`Posts`)."""
    url, stream = os.environ.get("BENCH_REDIS_URL"), os.environ.get("BENCH_REDIS_STREAM")
    filtered = Posts("filtered")
    return ([HubContender("notify")] + ([HubContender("redis", (url, stream))] if url and stream else [])
            + [Posts("whole"), Posts("split"), filtered, Posts("unwatched", filtered)])
