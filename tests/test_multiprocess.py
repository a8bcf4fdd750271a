"""Two real uvicorn processes sharing notifications through Redis (tests/server_app.py with
APP_REDIS), each with its own WebSocket clients, over one shared SQLite file."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets

from .test_redis import redis_url as redis_url  # the fixture: Redis or skip/fail
from .test_server import Server, recv

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def servers(tmp_path: Path, redis_url: str) -> Iterator[tuple[Server, Server]]:
    stream = f"sqla_notify_test:{uuid.uuid4().hex}"
    a = Server(tmp_path, APP_REDIS=redis_url, APP_STREAM=stream)
    try:
        b = Server(tmp_path, APP_REDIS=redis_url, APP_STREAM=stream)
    except Exception:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        redis.Redis.from_url(redis_url).delete(stream)


async def connected(server: Server) -> None:
    """Wait (bounded) until the server's broker reader is connected."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(base_url=server.base, timeout=5) as http:
        while (await http.get("/stats")).json()["broker"] != "connected":
            assert time.monotonic() < deadline, "the broker reader did not connect"
            await asyncio.sleep(0.02)


async def test_commit_on_a_reaches_client_on_b_and_a_client_moves(servers: tuple[Server, Server]) -> None:
    a, b = servers
    await connected(a)
    await connected(b)
    async with httpx.AsyncClient(timeout=10) as http:
        async with websockets.connect(b.ws) as on_b:
            await recv(on_b)
            forum = (await http.post(f"{a.base}/forums/sync", params={"name": "x"})).json()["id"]
            first = await recv(on_b)
            assert first["data"] == {"id": forum}
        # The client is away; commits on both processes.
        missed = [
            (await http.post(f"{a.base}/forums/async", params={"name": "y"})).json()["id"],
            (await http.post(f"{b.base}/forums/sync", params={"name": "z"})).json()["id"],
        ]
        async with websockets.connect(f"{a.ws}?last_id={first['id']}") as on_a:
            assert (await recv(on_a))["type"] == "welcome"
            replayed = [(await recv(on_a))["data"]["id"] for _ in missed]
            assert replayed == missed
            await http.post(f"{b.base}/burst", params={"count": 1, "name": "live"})
            assert (await recv(on_a))["data"]["name"] == "live"  # no duplicate before it


async def test_concurrent_writers_nothing_lost_or_duplicated(servers: tuple[Server, Server]) -> None:
    a, b = servers
    await connected(a)
    await connected(b)
    writes = 40
    clients = [await websockets.connect(server.ws) for server in (a, b, a, b)]
    try:
        for ws in clients:
            await recv(ws)
        async with httpx.AsyncClient(timeout=30) as http:

            async def write(i: int) -> int:
                server = (a, b)[i % 2]
                kind = ("sync", "async")[i // 2 % 2]
                response = await http.post(f"{server.base}/forums/{kind}", params={"name": f"w{i}"})
                return int(response.json()["id"])

            ids = await asyncio.gather(*(write(i) for i in range(writes)))

        async def collect(ws: websockets.ClientConnection) -> list[str]:
            return [(await recv(ws))["id"] for _ in range(writes)]

        seen = await asyncio.gather(*(collect(ws) for ws in clients))
        assert len(set(ids)) == writes
        for cursors in seen:
            assert len(set(cursors)) == writes  # each notification once
            assert cursors == seen[0]  # and in the same order on every process
        for ws in clients:  # and nothing more
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))
