"""Two real uvicorn processes sharing notifications, each with its own WebSocket clients:
through Redis (tests/server_app.py with APP_REDIS, over one shared SQLite file), and through
PostgreSQL LISTEN/NOTIFY (APP_PG: both commit to PostgreSQL, in a schema of the test's own)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets

from .support.servers import Server, connected
from .support.ws import clients, receive_all, recv

pytestmark = pytest.mark.anyio


async def test_commit_on_a_reaches_client_on_b_and_a_client_moves(redis_servers: tuple[Server, Server]) -> None:
    a, b = redis_servers
    await connected(a, b)
    async with httpx.AsyncClient(timeout=10) as http:
        async with clients(b) as (on_b,):
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


async def concurrent_writes(a: Server, b: Server, writes: int = 40) -> tuple[list[int], list[list[dict[str, Any]]]]:
    """``writes`` commits through both servers at once (sync and async sessions), received
    by two clients of each; returns the forum ids and what each client received."""
    await connected(a, b)
    async with clients(a, b, a, b) as sockets:
        async with httpx.AsyncClient(timeout=30) as http:

            async def write(i: int) -> int:
                server = (a, b)[i % 2]
                kind = ("sync", "async")[i // 2 % 2]
                response = await http.post(f"{server.base}/forums/{kind}", params={"name": f"w{i}"})
                return int(response.json()["id"])

            ids = await asyncio.gather(*(write(i) for i in range(writes)))
        return ids, await receive_all(sockets, writes)


async def test_concurrent_writers_nothing_lost_or_duplicated(redis_servers: tuple[Server, Server]) -> None:
    ids, seen = await concurrent_writes(*redis_servers)
    for messages in seen:
        assert sorted(m["data"]["id"] for m in messages) == sorted(ids)  # each once
        assert [m["id"] for m in messages] == [m["id"] for m in seen[0]]  # same order, same cursors


async def test_postgres_commit_on_a_reaches_b_and_a_client_moves(pg_servers: tuple[Server, Server]) -> None:
    a, b = pg_servers
    await connected(a, b)
    async with httpx.AsyncClient(timeout=10) as http:
        async with clients(b) as (on_b,):
            sync_id = (await http.post(f"{a.base}/forums/sync", params={"name": "x"})).json()["id"]
            async_id = (await http.post(f"{a.base}/forums/async", params={"name": "y"})).json()["id"]
            first = await recv(on_b)
            assert [first["data"], (await recv(on_b))["data"]] == [{"id": sync_id}, {"id": async_id}]
            await http.post(f"{b.base}/burst", params={"count": 1, "name": "from-b"})
            assert (await recv(on_b))["data"]["name"] == "from-b"  # once: from LISTEN only
            with pytest.raises(asyncio.TimeoutError):  # not the builtin TimeoutError before 3.11
                await asyncio.wait_for(on_b.recv(), 0.3)
        missed = (await http.post(f"{b.base}/forums/sync", params={"name": "z"})).json()["id"]
        # Every process receives NOTIFYs in commit order and names them alike: a client
        # moves to another process with its last id and gets what it missed, nothing twice.
        async with websockets.connect(f"{a.ws}?last_id={first['id']}") as on_a:
            assert (await recv(on_a))["type"] == "welcome"
            replayed = [(await recv(on_a))["data"] for _ in range(3)]
            assert replayed == [{"id": async_id}, {"id": 0, "name": "from-b", "pad": ""}, {"id": missed}]
            await http.post(f"{a.base}/burst", params={"count": 1, "name": "live"})
            assert (await recv(on_a))["data"]["name"] == "live"


async def test_postgres_concurrent_writers_nothing_lost_or_duplicated(pg_servers: tuple[Server, Server]) -> None:
    ids, seen = await concurrent_writes(*pg_servers)
    for messages in seen:
        assert sorted(m["data"]["id"] for m in messages) == sorted(ids)  # each once
        assert [m["id"] for m in messages] == [m["id"] for m in seen[0]]  # same order and names
