"""End to end against a real uvicorn server (tests/server_app.py) with real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from . import rawws
from .support.servers import Server, wait_stats
from .support.ws import recv

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        yield client


async def test_sync_and_async_commits_reach_client(server: Server, http: httpx.AsyncClient) -> None:
    async with websockets.connect(server.ws) as ws:
        assert (await recv(ws))["type"] == "welcome"
        sync_id = (await http.post("/forums/sync", params={"name": "a"})).json()["id"]
        assert (await recv(ws))["data"] == {"id": sync_id}
        async_id = (await http.post("/forums/async", params={"name": "b"})).json()["id"]
        assert (await recv(ws))["data"] == {"id": async_id}


async def test_filtering_and_authorization(server: Server, http: httpx.AsyncClient) -> None:
    async with websockets.connect(f"{server.ws}?token=secret-alice&collections=forums") as alice, \
            websockets.connect(f"{server.ws}?token=secret-bob&collections=forums") as bob, \
            websockets.connect(f"{server.ws}?collections=containers") as elsewhere:
        for ws in (alice, bob, elsewhere):
            await recv(ws)
        await http.post("/burst", params={"count": 3, "name": "private-alice"})
        await http.post("/burst", params={"count": 1, "name": "public"})
        assert [(await recv(alice))["data"]["name"] for _ in range(4)] == ["private-alice"] * 3 + ["public"]
        assert (await recv(bob))["data"]["name"] == "public"  # nothing private came before it
        with pytest.raises(asyncio.TimeoutError):  # subscribed elsewhere: nothing at all
            await asyncio.wait_for(elsewhere.recv(), 0.3)


async def test_rejected_token_closes_1008(server: Server) -> None:
    async with websockets.connect(f"{server.ws}?token=stolen") as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_resume_after_disconnect(server: Server, http: httpx.AsyncClient) -> None:
    async with websockets.connect(server.ws) as ws:
        await recv(ws)
        await http.post("/burst", params={"count": 1})
        last = (await recv(ws))["id"]
    await http.post("/burst", params={"count": 5})
    async with websockets.connect(f"{server.ws}?last_id={last}") as ws:
        assert (await recv(ws))["type"] == "welcome"
        assert [(await recv(ws))["data"]["id"] for _ in range(5)] == list(range(5))
        await http.post("/burst", params={"count": 1, "name": "live"})
        assert (await recv(ws))["data"]["name"] == "live"


async def test_bad_input_over_the_network(server: Server, http: httpx.AsyncClient) -> None:
    async with websockets.connect(server.ws) as bad, websockets.connect(server.ws) as good:
        await recv(bad), await recv(good)
        for message in ["{", '{"type": 1}', json.dumps({"type": "subscribe", "collections": ["x" * 300]}), "y" * 10_000]:
            await bad.send(message)
            assert (await recv(bad))["type"] == "error"
        await http.post("/burst", params={"count": 1})
        assert (await recv(bad))["action"] == (await recv(good))["action"] == "update"


async def test_many_clients_each_get_everything_once(server: Server, http: httpx.AsyncClient) -> None:
    clients = [await websockets.connect(server.ws) for _ in range(100)]
    try:
        for ws in clients:
            await recv(ws)
        for _ in range(4):
            await http.post("/burst", params={"count": 5})

        async def drain(ws: ClientConnection) -> list[str]:
            return [(await recv(ws))["id"] for _ in range(20)]

        received = await asyncio.gather(*(drain(ws) for ws in clients))
        assert all(ids == received[0] for ids in received) and len(set(received[0])) == 20
        stats = (await http.get("/stats")).json()
        assert stats["connections"] == 100 and stats["frames_dropped"] == 0
    finally:
        await asyncio.gather(*(ws.close() for ws in clients))


async def test_client_vanishing_mid_send_is_quiet(server: Server, http: httpx.AsyncClient) -> None:
    """A client that drops its TCP connection while frames are on their way logs nothing
    (``server.stop()`` fails on a logged traceback) and the server carries on."""
    for _ in range(3):
        clients = [await websockets.connect(server.ws) for _ in range(20)]
        for ws in clients:
            await recv(ws)
        await http.post("/burst", params={"count": 200, "size": 5_000})
        for ws in clients:
            ws.transport.abort()  # no close handshake: sends to them fail
        await http.post("/burst", params={"count": 200, "size": 5_000})
    async with websockets.connect(server.ws) as ws:
        await recv(ws)
        await http.post("/burst", params={"count": 1, "name": "after"})
        assert (await recv(ws))["data"]["name"] == "after"
    deadline = time.monotonic() + 10
    while (await http.get("/stats")).json()["connections"] != 0:  # bounded wait for the teardown
        assert time.monotonic() < deadline, "aborted connections were not cleaned up"
        await asyncio.sleep(0.05)


def _stalled_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then does not read."""
    return rawws.connect(port, rcvbuf=4096)  # fills up quickly


async def test_stalled_client_does_not_delay_others(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_QUEUE_SIZE="16")
    stalled = _stalled_client(server.port)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http, \
                websockets.connect(server.ws, max_size=None, max_queue=None) as healthy:
            await recv(healthy)

            async def read_all() -> tuple[int, int]:
                total = resyncs = 0
                while total < 300:
                    message = await recv(healthy)
                    total += message.get("collection") == "forums"
                    resyncs += message.get("type") == "resync"
                return total, resyncs

            started = time.monotonic()
            reader = asyncio.ensure_future(read_all())  # a healthy client reads as it goes
            for _ in range(30):  # 30 × 10 notifications of 20 kB: far more than the stalled socket holds
                await http.post("/burst", params={"count": 10, "size": 20_000})
            total, resyncs = await reader
            elapsed = time.monotonic() - started
            stats = (await http.get("/stats")).json()
            deadline = time.monotonic() + 10
            while stats["slow_disconnects"] == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # polling the server's view, bounded by the deadline
                stats = (await http.get("/stats")).json()
        assert total == 300 and resyncs == 0 and elapsed < 10
        assert stats["slow_disconnects"] == 1 and stats["frames_dropped"] > 0
        assert stats["connections"] == 1  # the healthy one
        # Reading again, within the grace, it gets what was on its way, then the close frame.
        _, code = rawws.messages_until_close(stalled)
        assert code == 1013
    finally:
        stalled.close()
        server.stop()


async def test_server_restart_means_resync(tmp_path: Path) -> None:
    server = Server(tmp_path)
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        await http.post("/burst", params={"count": 1})
    async with websockets.connect(server.ws) as ws:
        last = (await recv(ws))["cursor"]
    server.stop()
    server = Server(tmp_path)
    try:
        async with websockets.connect(f"{server.ws}?last_id={last}") as ws:
            await recv(ws)
            assert (await recv(ws))["type"] == "resync"  # another hub: cannot replay
    finally:
        server.stop()


@pytest.mark.parametrize(("shutdown_grace", "code"), [("5", 1001), ("none", 1012)])
async def test_a_server_stopping_closes_websockets_with_1001_or_without_the_hook_1012(
    tmp_path: Path, shutdown_grace: str, code: int
) -> None:
    """What docs/protocol.md promises for Ctrl+C or SIGTERM under uvicorn: the router's
    shutdown hook closes open WebSockets with 1001 (going away) after sending what waited;
    without it (``shutdown_grace=None``) uvicorn closes them with 1012 (service restart)
    before the app's lifespan, and so the hub, ends."""
    server = Server(tmp_path, APP_SHUTDOWN_GRACE=shutdown_grace)
    try:
        async with websockets.connect(server.ws) as ws:
            await recv(ws)
            server.proc.terminate()  # SIGTERM; Ctrl+C (SIGINT) takes the same path in uvicorn
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    finally:
        server.stop()


async def test_client_given_up_on_sees_1013_when_it_reads_again(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_QUEUE_SIZE="16")
    stalled = _stalled_client(server.port)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            for _ in range(30):  # far more than its socket and queue hold: it is given up on
                await http.post("/burst", params={"count": 10, "size": 20_000})
            await wait_stats(http, "slow_disconnects", 1)
            # The scenario: the client resumes reading two seconds later (more than the
            # one second after which the connection used to be cut without a close frame).
            await asyncio.sleep(2)
            messages, code = await asyncio.to_thread(rawws.messages_until_close, stalled)
        assert code == 1013, f"no close frame: the client would see 1006 after {len(messages)} messages"
        assert messages[0]["type"] == "welcome"
    finally:
        stalled.close()
        server.stop()


async def test_transaction_larger_than_the_queue_reaches_a_reading_client(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_QUEUE_SIZE="16")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http, \
                websockets.connect(f"{server.ws}?collections=forums") as ws:
            await recv(ws)  # welcome
            await http.post("/forums/many", params={"count": 16})  # as large as the queue: whole
            got = [await recv(ws) for _ in range(16)]
            assert [m["action"] for m in got] == ["insert"] * 16
            assert [m["data"]["id"] for m in got] == list(range(1, 17))
            await http.post("/forums/many", params={"count": 100})  # larger: one resync
            resync = await recv(ws)
            assert resync["type"] == "resync" and resync["reason"].startswith("backlog")
            await http.post("/forums/sync", params={"name": "after"})
            after = await recv(ws)  # still connected, and the stream goes on after the resync
            assert after["data"]["id"] == 117
            stats = (await http.get("/stats")).json()
        assert stats["slow_disconnects"] == 0 and stats["resyncs"] == 1
    finally:
        server.stop()


async def test_resumes_whose_replay_fills_the_queue_arrive_whole(tmp_path: Path) -> None:
    # A window larger than the queue, and a replay of a queue's worth, while writes go on:
    # a live notification often arrives before the resumed client's transport first takes
    # its queue (SSE starts reading it only once the response has begun).
    server = Server(tmp_path, APP_QUEUE_SIZE="1000", APP_REPLAY="50000")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            async with websockets.connect(server.ws) as ws:
                start = (await recv(ws))["cursor"]
            await http.post("/burst", params={"count": 999})
            stop = asyncio.Event()

            async def write() -> None:  # one write after another, while clients resume
                while not stop.is_set():
                    await http.post("/burst", params={"count": 1, "name": "live"})

            async def resume(transport: str) -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = []
                if transport == "ws":
                    async with websockets.connect(f"{server.ws}?last_id={start}", max_size=None) as ws:
                        return [await recv(ws) for _ in range(1001)]  # welcome, 999 replayed, 1 live
                async with http.stream("GET", "/notify/events", headers={"Last-Event-ID": start}) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            got.append(json.loads(line[6:]))
                            if len(got) == 1001:
                                break
                return got

            writer = asyncio.ensure_future(write())
            try:
                for transport in ("sse", "ws"):  # five at once, on each transport
                    results = await asyncio.gather(*(resume(transport) for _ in range(5)))
                    for got in results:
                        assert got[0]["type"] == "welcome", got[0]
                        assert [m.get("type", "notification") for m in got[1:]] == ["notification"] * 1000, \
                            [m for m in got if "type" in m][:3]
                        assert [m["data"]["id"] for m in got[1:1000]] == list(range(999))
            finally:
                stop.set()
                await writer
    finally:
        server.stop()


async def test_garbage_last_id_gets_resync_and_no_traceback(server: Server) -> None:
    async with websockets.connect(server.ws) as ws:
        epoch = (await recv(ws))["cursor"].split("-")[0]
    for last_id in (f"{epoch}-\u00b2", f"{epoch}-" + "9" * 5000):
        async with websockets.connect(f"{server.ws}?last_id={quote(last_id)}") as ws:
            assert (await recv(ws))["type"] == "welcome"
            assert (await recv(ws))["type"] == "resync"
    # server.stop() (the fixture) fails the test if the server logged a traceback
