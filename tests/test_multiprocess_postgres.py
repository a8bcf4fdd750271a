"""Two real uvicorn processes sharing PostgreSQL LISTEN/NOTIFY (tests/pg_batch_app.py), each
with two WebSocket clients, while both commit small and large transactions at once: every
client gets every notification once, each transaction's rows together and in order, and
all clients the same sequence under the same names."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from .support.servers import Server, connected, two_pg_servers
from .support.ws import clients, receive_all, recv

pytestmark = pytest.mark.anyio


@pytest.fixture
def servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Server, Server]]:
    # Queues larger than everything the test commits: this test is about the broker, not slow clients.
    with two_pg_servers(tmp_path, request.config, "tests.pg_batch_app:app", APP_QUEUE_SIZE="10000") as servers:
        yield servers


async def test_every_transaction_reaches_every_client_once_whole_and_in_order(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    await connected(a, b)
    async with clients(a, b, a, b) as sockets:
        async with httpx.AsyncClient(timeout=30) as http:

            async def small(i: int) -> list[int]:
                server, kind = (a, b)[i % 2], ("sync", "async")[i // 2 % 2]
                response = await http.post(f"{server.base}/forums/{kind}", params={"name": f"s{i}"})
                return [int(response.json()["id"])]

            async def large(i: int) -> list[int]:
                # 300 rows: about 18 kB of notifications, three NOTIFY payloads.
                server, kind = (a, b)[i % 2], ("sync", "async")[i // 2 % 2]
                response = await http.post(f"{server.base}/forums/many/{kind}", params={"count": 300, "prefix": f"l{i}-"})
                return [int(x) for x in response.json()["ids"]]

            transactions = await asyncio.gather(*(small(i) for i in range(30)), *(large(i) for i in range(4)))
        seen = await receive_all(sockets, sum(len(t) for t in transactions))

    for messages in seen:
        assert [m for m in messages if "type" in m] == []  # only notifications: no resync
        order = [m["data"]["id"] for m in messages]
        assert sorted(order) == sorted(i for t in transactions for i in t)  # each once
        for t in transactions:  # each transaction's rows together, in order
            start = order.index(t[0])
            assert order[start:start + len(t)] == t
        assert [m["id"] for m in messages] == [m["id"] for m in seen[0]]  # same order, same names


async def test_clients_of_a_crashed_worker_resume_on_a_running_one_and_get_resync_on_its_replacement(
    tmp_path: Path, pg_servers: tuple[Server, Server]
) -> None:
    """What docs/processes.md says under PostgreSQL, "Faults": LISTEN/NOTIFY keeps no log, so a
    worker started after a client's ``last_id`` has nothing to replay from."""
    a, b = pg_servers
    await connected(a, b)
    async with websockets.connect(f"{a.ws}?collections=forums") as ws, httpx.AsyncClient(timeout=10) as http:
        await recv(ws)
        await http.post(f"{a.base}/forums/sync", params={"name": "seen"})
        last_id = (await recv(ws))["id"]
        a.proc.kill()  # a crash: no graceful shutdown
        a.proc.wait(10)
        missed = (await http.post(f"{b.base}/forums/sync", params={"name": "missed"})).json()["id"]
    replacement = Server(tmp_path, a.app, **a.env)
    try:
        await connected(replacement)
        async with websockets.connect(f"{replacement.ws}?collections=forums&last_id={last_id}") as ws:
            assert (await recv(ws))["type"] == "welcome"
            assert (await recv(ws))["type"] == "resync"
        async with websockets.connect(f"{b.ws}?collections=forums&last_id={last_id}") as ws:
            assert (await recv(ws))["type"] == "welcome"
            assert (await recv(ws))["data"] == {"id": missed}  # resumed: nothing lost
    finally:
        replacement.stop()
