"""Counted across two real uvicorn processes sharing one Redis stream: every row of every
transaction reaches every client of both processes once, the rows of a transaction
together and in order, while the broker's connections are killed under load."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest
import redis

from .support.servers import two_servers
from .support.services import PrivateRedis
from .support.ws import clients, receive_all, recv

pytestmark = pytest.mark.anyio


async def test_every_row_reaches_every_client_once_whole_and_in_order(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    private_redis.start()
    with two_servers(tmp_path, APP_REDIS=private_redis.url) as (a, b):
        async with clients(a, b, a, b) as sockets, httpx.AsyncClient(timeout=30) as http:
            # Every reader has read something: a dropped connection is then proven harmless.
            await http.post(f"{a.base}/forums/many", params={"count": 1})
            for ws in sockets:
                await recv(ws)
            sizes = random.Random(7).choices([1, 2, 3, 5], k=60)
            done, a_third_done = 0, asyncio.Event()

            async def commit(i: int) -> list[int]:
                nonlocal done
                server = (a, b)[i % 2]
                if sizes[i] == 1 and i % 4 == 1:  # a sync session too, in a worker thread
                    response = await http.post(f"{server.base}/forums/sync", params={"name": f"t{i}"})
                    ids = [response.json()["id"]]
                else:
                    response = await http.post(f"{server.base}/forums/many", params={"count": sizes[i], "name": f"t{i}"})
                    ids = list(response.json()["ids"])
                done += 1
                if done == len(sizes) // 3:
                    a_third_done.set()
                return ids

            async def kill_connections() -> None:
                await a_third_done.wait()  # while the commits go on
                killed = redis.Redis.from_url(private_redis.url).client_kill_filter(_type="normal", skipme=True)
                assert killed >= 2

            transactions, _ = await asyncio.gather(
                asyncio.gather(*(commit(i) for i in range(len(sizes)))), kill_connections()
            )
            seen = await receive_all(sockets, sum(sizes))
        for messages in seen:
            assert all("data" in m for m in messages), [m for m in messages if "data" not in m]
            ids = [m["data"]["id"] for m in messages]
            assert sorted(ids) == sorted(i for t in transactions for i in t)  # each once
            for rows_of_one in transactions:  # together, in order
                start = ids.index(rows_of_one[0])
                assert ids[start:start + len(rows_of_one)] == rows_of_one
            assert [m["id"] for m in messages] == [m["id"] for m in seen[0]]  # one order everywhere
