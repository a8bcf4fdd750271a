"""Snapshot, then changes: ``snapshot_cursor`` gives a REST response the cursor it is as of,
and a client that resumes from it receives what was committed after, without a gap. In
process, on SQLite and PostgreSQL (the ``engine`` fixture); across processes, through both
brokers: ``tests/test_echo_processes.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastapi import Depends
from sqlalchemy import select

from sqla_notify import Hub
from sqla_notify.fastapi import snapshot_cursor

from .models import Forum
from .support.apps import receive
from .support.echo import App


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_resuming_from_a_snapshots_cursor_brings_exactly_what_was_committed_after(app: App, kind: str) -> None:
    client = app.client
    with client.websocket_connect("/notify/ws") as watcher:
        receive(watcher)
        before = client.post("/echo/sync", params={"name": "before"}).json()["id"]
        assert receive(watcher)["data"] == {"id": before}  # the hub has it: the snapshot is after it
        snapshot = client.get(f"/echo/{kind}")
        assert snapshot.status_code == 200
        body = snapshot.json()
        assert body["forums"] == ["before"]
        assert snapshot.headers["X-Notify-Cursor"] == body["cursor"] == app.hub.cursor
        after = client.post("/echo/async", params={"name": "after"}).json()["id"]
        assert receive(watcher)["data"] == {"id": after}
    with client.websocket_connect(f"/notify/ws?last_id={body['cursor']}") as ws:
        assert receive(ws)["type"] == "welcome"
        assert receive(ws)["data"] == {"id": after}  # not "before", nor a resync
        live = client.post("/echo/sync", params={"name": "live"}).json()["id"]
        assert receive(ws)["data"] == {"id": live}  # nothing in between


def test_the_cursor_is_read_before_the_endpoint_runs(app: App) -> None:
    """A change committed between the cursor and the query is in the data *and* arrives
    (a duplicate, as documented); read after the query, the cursor would lose it."""
    hub = app.hub

    @app.app.get("/race")
    async def race(cursor: str = Depends(snapshot_cursor(hub))) -> dict[str, Any]:
        async with app.async_sessions.begin() as s:  # another request's commit, say
            s.add(Forum(id=7, name="between"))
        deadline = time.monotonic() + 10
        while hub.cursor == cursor:  # until the hub has it: a cursor read now would be past it
            assert time.monotonic() < deadline, "the hub did not receive the commit"
            await asyncio.sleep(0)
        async with app.async_sessions() as s:
            return {"cursor": cursor, "forums": list((await s.scalars(select(Forum.name))).all())}

    body = app.client.get("/race").json()
    assert body["forums"] == ["between"]
    assert body["cursor"] != hub.cursor
    with app.client.websocket_connect(f"/notify/ws?last_id={body['cursor']}") as ws:
        assert receive(ws)["type"] == "welcome"
        assert receive(ws)["data"] == {"id": 7}


def test_a_response_the_endpoint_builds_itself_is_left_alone(app: App) -> None:
    """FastAPI copies a dependency's headers only into the response it builds: an endpoint
    that returns its own has the cursor to set (as documented)."""
    from fastapi.responses import JSONResponse

    @app.app.get("/own")
    def own(cursor: str = Depends(snapshot_cursor(app.hub))) -> JSONResponse:
        return JSONResponse({"cursor": cursor})

    response = app.client.get("/own")
    assert response.json()["cursor"] == app.hub.cursor
    assert "X-Notify-Cursor" not in response.headers


def test_snapshot_cursor_wants_a_hub() -> None:
    with pytest.raises(TypeError, match=r"snapshot_cursor\(\) expected a Hub, got str: 'hub'"):
        snapshot_cursor("hub")  # type: ignore[arg-type]
    assert callable(snapshot_cursor(Hub()))
