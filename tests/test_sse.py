"""Server-Sent Events end to end, the way browsers use them: a real uvicorn server
(tests/server_app.py) and a streaming HTTP client.

Not in-process: Starlette's TestClient before 1.8 (the newest on Python 3.10) reads the whole
body of a response before returning any of it, and an event stream never ends. These tests
are among the core tests that scripts/test.sh runs on every supported Python.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets

from .support.servers import Server
from .support.ws import recv

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
        yield client


@asynccontextmanager
async def events(http: httpx.AsyncClient, url: str, **headers: str) -> AsyncIterator[AsyncIterator[str]]:
    """The lines of an SSE stream (``text/event-stream``), open for the block."""
    async with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield response.aiter_lines()


async def event(lines: AsyncIterator[str]) -> tuple[str | None, dict[str, Any]]:
    """The next event: its ``id:`` (``None`` for control messages) and its decoded data;
    fails after 10 s."""
    event_id = None
    while True:
        line = await asyncio.wait_for(lines.__anext__(), 10)
        if line.startswith("id: "):
            event_id = line.removeprefix("id: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            assert await asyncio.wait_for(lines.__anext__(), 10) == "", "expected a blank line after data"
            return event_id, data


async def test_a_stream_starts_with_welcome_and_delivers_commits_made_while_it_is_open(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with events(http, "/notify/events?collections=forums") as lines:
        no_id, welcome = await event(lines)
        assert no_id is None and welcome["type"] == "welcome"
        forum = (await http.post("/forums/sync", params={"name": "live"})).json()["id"]
        event_id, notification = await event(lines)
    assert event_id == notification["id"] and event_id != welcome["cursor"]
    assert (notification["collection"], notification["action"], notification["data"]) == ("forums", "insert", {"id": forum})


async def test_a_stream_resumes_after_the_last_event_id(server: Server, http: httpx.AsyncClient) -> None:
    """An SSE client that sends ``Last-Event-ID`` (what the browser's EventSource sends back
    when it reconnects) gets the welcome, then what it missed, each with its ``id:`` line."""
    async with websockets.connect(server.ws) as ws:
        start = (await recv(ws))["cursor"]
    forum = (await http.post("/forums/sync", params={"name": "missed"})).json()["id"]
    async with events(http, "/notify/events?collections=forums", **{"Last-Event-ID": start}) as lines:
        _, welcome = await event(lines)
        event_id, missed = await event(lines)
    assert welcome["type"] == "welcome"
    assert event_id == missed["id"] == welcome["cursor"] != start  # the missed one is the latest
    assert missed["data"] == {"id": forum}


async def test_a_stream_receives_only_the_collections_it_asked_for(server: Server, http: httpx.AsyncClient) -> None:
    async with events(http, "/notify/events?collections=containers") as lines:
        assert (await event(lines))[1]["type"] == "welcome"
        await http.post("/forums/sync", params={"name": "elsewhere"})
        await http.post("/burst", params={"count": 1, "name": "here", "collection": "containers"})
        _, notification = await event(lines)  # the forum, committed first, never arrives
    assert (notification["collection"], notification["data"]["name"]) == ("containers", "here")
