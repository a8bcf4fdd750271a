"""Echo suppression and snapshots across two real uvicorn processes (tests/echo_app.py),
through Redis and through PostgreSQL LISTEN/NOTIFY: a write sent to process B with the id of
a connection on process A is not sent back to that connection, and to every other; a
snapshot taken on A resumes on B."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets

from .support.echo import check_request_messages
from .support.servers import Server, connected, two_pg_servers, two_redis_servers
from .support.services import redis_url_or_skip
from .support.ws import recv

pytestmark = pytest.mark.anyio
APP = "tests.echo_app:app"


@pytest.fixture(scope="module", params=["redis", "postgresql"])
def servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """One pair per broker for the module (starting two servers is most of a test's time):
    each test makes connections of its own, and reads only what it wrote."""
    tmp_path = tmp_path_factory.mktemp("echo")
    if request.param == "postgresql":
        with two_pg_servers(tmp_path, request.config, APP) as pair:
            yield pair
        return
    with two_redis_servers(tmp_path, redis_url_or_skip(), APP) as pair:
        yield pair


@asynccontextmanager
async def connections(*servers: Server) -> AsyncIterator[list[tuple[websockets.ClientConnection, str]]]:
    """A WebSocket client per server, past its welcome, with its connection id."""
    sockets = [await websockets.connect(server.ws) for server in servers]
    try:
        yield [(ws, (await recv(ws))["connection"]) for ws in sockets]
    finally:
        for ws in sockets:
            await ws.close()


async def request_messages(ws: websockets.ClientConnection, forum: int, name: str) -> None:
    """The two notifications of one write with ``manual=true``, whatever their order."""
    check_request_messages([await recv(ws), await recv(ws)], forum, name)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_write_on_b_is_not_sent_back_to_its_connection_on_a(servers: tuple[Server, Server], kind: str) -> None:
    a, b = servers
    await connected(a, b)
    async with httpx.AsyncClient(timeout=10) as http, connections(a, a, b) as clients:
        (me, mine), (beside, _), (on_b, _) = clients

        async def write(name: str, **headers: str) -> int:
            response = await http.post(f"{b.base}/echo/{kind}", params={"name": name, "manual": "true"}, headers=headers)
            assert response.status_code == 200, response.text
            return int(response.json()["id"])

        first = await write("mine", **{"X-Notify-Connection": mine})
        for ws in (beside, on_b):  # the same process's other client, and the writer's process
            await request_messages(ws, first, "mine")
        second = await write("theirs")
        # Every process delivers in one order: the first write came before the second to
        # the others, so this connection, whose next notifications are the second's, never got it.
        for ws in (me, beside, on_b):
            await request_messages(ws, second, "theirs")


async def test_a_malformed_header_is_refused_on_every_process(servers: tuple[Server, Server]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for server in servers:
            response = await http.post(f"{server.base}/echo/async", params={"name": "x"}, headers={"X-Notify-Connection": "nope"})
            assert response.status_code == 400
            assert "X-Notify-Connection expected the connection id" in response.json()["detail"]


async def test_a_snapshot_taken_on_a_resumes_on_b(servers: tuple[Server, Server]) -> None:
    a, b = servers
    await connected(a, b)
    async with httpx.AsyncClient(timeout=10) as http, connections(a, b) as watchers:

        async def write(server: Server, name: str) -> dict[str, Any]:
            forum = (await http.post(f"{server.base}/echo/sync", params={"name": name})).json()["id"]
            for ws, _ in watchers:  # both processes have it
                assert (await recv(ws))["data"] == {"id": forum}
            return {"id": forum}

        await write(a, "before")
        snapshot = await http.get(f"{a.base}/echo/sync")
        cursor = snapshot.headers["X-Notify-Cursor"]
        assert snapshot.json()["cursor"] == cursor
        assert snapshot.json()["forums"][-1] == "before"
        after = await write(b, "after")
        async with websockets.connect(f"{b.ws}?last_id={cursor}") as ws:
            assert (await recv(ws))["type"] == "welcome"
            assert (await recv(ws))["data"] == after  # not "before", nor a resync
            live = await write(a, "live")
            assert (await recv(ws))["data"] == live  # nothing in between
