"""RedisBroker faults that cost clients notifications without a ``resync``: Redis down when
the processes start, a process stalled while the stream was trimmed past it, and the delay
between Redis answering again and the batches that waited going out. Real servers: a
private redis-server per test, and real uvicorn processes (tests/server_app.py) that the
tests stop with SIGSTOP and resume with SIGCONT."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqla_notify import Hub
from sqla_notify.redis import RedisBroker

from .support.hubs import N, frames, receive, until
from .support.servers import Server, two_servers
from .support.services import PrivateRedis
from .support.ws import clients, recv

pytestmark = pytest.mark.anyio


@contextmanager
def stopped(server: Server) -> Iterator[None]:
    """The server's process frozen (SIGSTOP): its event loop runs nothing until SIGCONT."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def stats(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"{server.base}/stats")).json()  # type: ignore[no-any-return]


# -- 1. Redis down at startup ----------------------------------------------------------


async def test_start_waits_for_the_first_read_and_no_longer(redis_url: str, stream: str) -> None:
    """With Redis up the broker is ready when the hub starts (no client can connect before
    the first read, so none gets a needless resync); with Redis silent, start returns
    after ``connect_timeout`` all the same."""
    async with Hub(broker=RedisBroker(redis_url, stream=stream)) as hub:
        assert hub.stats().broker == "connected"
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        async with Hub(broker=RedisBroker(url, connect_timeout=0.5)) as hub:
            assert time.monotonic() - started < 1.5
            assert hub.stats().broker == "connecting"


async def test_clients_of_a_process_that_reached_redis_last_get_resync(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Both processes start while Redis is down and serve clients. A reaches Redis first
    and writes the batch that waited; B, frozen meanwhile, reads it only as history when it
    gets there: its client cannot be placed in the stream, so it gets ``resync``."""
    with two_servers(tmp_path, APP_REDIS=private_redis.url) as (a, b):
        async with clients(a, b) as (on_a, on_b):
            async with httpx.AsyncClient(timeout=10) as http:
                forum = (await http.post(f"{a.base}/forums/sync", params={"name": "x"})).json()["id"]
            with stopped(b):
                await asyncio.to_thread(private_redis.start)
                assert (await recv(on_a))["data"] == {"id": forum}  # A's batch went out
            got = await recv(on_b)
            assert got["type"] == "resync", got
            assert "before this server could read the Redis stream" in got["reason"]
            assert (await stats(b))["gaps"] == 1
            assert (await stats(a))["gaps"] == 0  # A read the stream before anything was in it


# -- 2. a process that falls behind ----------------------------------------------------


async def test_a_stalled_process_whose_unread_entries_were_trimmed_tells_its_clients(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """B is frozen while A writes far more than the stream keeps: when B resumes, XREAD
    skips the trimmed entries without a word; the entries' numbers show the hole."""
    private_redis.start()
    # The stream keeps 100 to 200 entries (Redis trims whole nodes of 100): A, never more
    # than 50 behind, loses nothing; B, 500 behind, loses at least 300.
    with two_servers(tmp_path, APP_REDIS=private_redis.url, APP_MAXLEN="100") as (a, b):
        async with clients(a, b) as (on_a, on_b), httpx.AsyncClient(timeout=10) as http:
            await http.post(f"{a.base}/burst", params={"count": 1, "name": "before"})
            assert (await recv(on_a))["data"]["name"] == (await recv(on_b))["data"]["name"] == "before"
            with stopped(b):
                for _ in range(10):
                    await http.post(f"{a.base}/burst", params={"count": 50, "name": "while-b-stalled"})
                    assert [(await recv(on_a))["data"]["id"] for _ in range(50)] == list(range(50))
            got: list[dict[str, Any]] = []
            while sum("data" in m for m in got) < 100:  # at least the last 100
                got.append(await recv(on_b))
            types = [m.get("type", "notification") for m in got]
            assert "resync" in types, f"B's client got {types.count('notification')} of 500, and no resync"
            resync = got[types.index("resync")]
            assert "trimmed from the Redis stream before this server read them" in resync["reason"]
            assert (await stats(b))["gaps"] == 1
            assert (await stats(a))["gaps"] == 0


# -- 8. late after recovery ------------------------------------------------------------


async def test_batches_that_waited_out_an_outage_go_out_within_a_second_of_redis(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured from redis-server accepting connections again to the client's queue
    holding the batch committed during the outage. The jitter is pinned to its upper end
    (the worst case) so that the bound holds for every draw, not for a lucky one."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # as _outbox.backoff draws
    private_redis.start()
    broker = RedisBroker(private_redis.url)
    async with Hub(broker=broker) as hub:
        sub = hub.subscribe()
        frames(sub)
        hub.publish([N(0)])
        await receive(sub, bool, "the first batch")
        private_redis.stop()
        hub.publish([N(1)])  # waits for Redis
        # A long outage: the reader failed five times and backs off (the writer likewise).
        await until(lambda: broker.errors >= 5, "five failed attempts to read", timeout=15)
        await asyncio.to_thread(private_redis.start)
        back = time.monotonic()
        await receive(sub, lambda got: any(m.get("data") == {"id": 1} for m in got),
                      "the batch that waited", timeout=15)
        late = time.monotonic() - back
        assert late <= 1.0, f"delivered {late:.2f} s after Redis was back"


# -- 6. the backlog after an outage --------------------------------------------------------


async def test_backlog_after_an_outage_is_one_resync_not_too_slow(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Clients that read as fast as they can get what waited out the outage whole when it
    fits their queue, and one documented ``backlog`` resync when it does not: never "too
    slow", never closed. The outage is redis-server frozen (SIGSTOP), so that it keeps its
    stream: a restart without persistence would be a gap of its own."""
    private_redis.start()
    assert private_redis.proc is not None
    pid = private_redis.proc.pid
    server = Server(tmp_path, APP_REDIS=private_redis.url, APP_STREAM="backlog", APP_QUEUE_SIZE="20")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http, \
                clients(server, server, server) as sockets:
            for count, fits in ((15, True), (100, False)):  # within a queue of 20, then five queues' worth
                os.kill(pid, signal.SIGSTOP)
                try:
                    await http.post("/burst", params={"count": count, "name": f"waited-{count}"})
                finally:
                    os.kill(pid, signal.SIGCONT)
                for ws in sockets:
                    if fits:
                        got = [await recv(ws) for _ in range(count)]
                        assert [m.get("data", m)["id"] for m in got] == list(range(count)), got[0]
                    else:  # what the broker's first read held, if anything, then one resync
                        got = [await recv(ws)]
                        while "type" not in got[-1]:
                            got.append(await recv(ws))
                        assert [m["data"]["id"] for m in got[:-1]] == list(range(len(got) - 1))
                        assert got[-1]["type"] == "resync" and got[-1]["reason"].startswith("backlog"), got[-1]
            await http.post("/burst", params={"count": 1, "name": "after"})
            for ws in sockets:  # still connected, and nothing else came before it
                assert (await recv(ws))["data"]["name"] == "after"
            stats = (await http.get("/stats")).json()
        assert stats["slow_disconnects"] == 0 and stats["resyncs"] == 3
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()
