"""The router in-process: Starlette's TestClient against a real SQLite database."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from starlette.requests import HTTPConnection, Request
from starlette.websockets import WebSocketDisconnect

from sqla_notify import Hub, Notification, Notifier
from sqla_notify.fastapi import ALL, notify_router

from .models import Base, Container, Forum
from .support.apps import make_app, receive


class World:
    """An app served by TestClient, a hub, and an attached sessionmaker."""

    def __init__(self, tmp_path: Path, **router_options: Any) -> None:
        # NullPool: each connection is closed when a session is done with it, none is left to
        # the GC (Python >= 3.13 warns of those), with no dispose() for each test to call.
        engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", poolclass=NullPool)
        Base.metadata.create_all(engine)
        self.hub = Hub()
        self.sessions: sessionmaker[Session] = Notifier(self.hub).attach(sessionmaker(engine))
        self.client = TestClient(make_app(self.hub, **router_options))
        self._next_id = 0

    def add_forum(self, name: str = "f") -> int:
        self._next_id += 1
        with self.sessions.begin() as s:
            s.add(Forum(id=self._next_id, name=name))
        return self._next_id

    def add_container(self) -> int:
        self._next_id += 1
        with self.sessions.begin() as s:
            s.add(Container(id=self._next_id, name="c"))
        return self._next_id


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, collections={"forums", "containers"})
    with w.client:
        yield w


def test_welcome_then_committed_changes(world: World) -> None:
    with world.client.websocket_connect("/notify/ws") as ws:
        welcome = receive(ws)
        assert welcome == {"type": "welcome", "cursor": world.hub.cursor, "connection": welcome["connection"]}
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", welcome["connection"])
        forum = world.add_forum()
        assert receive(ws) == {"id": world.hub.cursor, "collection": "forums", "action": "insert", "data": {"id": forum}}


def test_idle_connection_holds_no_writer_task(world: World) -> None:
    """The writer task exists only while there is something to send (memory per connection)."""
    portal = world.client.portal
    assert portal is not None

    async def writers_running() -> list[bool]:
        return [sub.writing for sub in world.hub._subscribers]

    with world.client.websocket_connect("/notify/ws") as ws:
        receive(ws)
        deadline = time.monotonic() + 5
        while portal.call(writers_running) != [False]:  # its last send may still be returning
            assert time.monotonic() < deadline, "the writer task did not finish after the welcome"
        world.add_forum()
        assert receive(ws)["action"] == "insert"  # a new writer is started on demand


def test_server_side_subscription_filter(world: World) -> None:
    with world.client.websocket_connect("/notify/ws?collections=forums") as ws:
        receive(ws)
        world.add_container()  # filtered out on the server
        forum = world.add_forum()
        assert receive(ws)["data"] == {"id": forum}


def test_subscribe_and_unsubscribe(world: World) -> None:
    with world.client.websocket_connect("/notify/ws?collections=") as ws:
        receive(ws)
        ws.send_text(json.dumps({"type": "subscribe", "collections": ["containers", "forums"]}))
        assert receive(ws) == {"type": "subscribed", "collections": ["containers", "forums"]}
        ws.send_text(json.dumps({"type": "unsubscribe", "collections": ["containers"]}))
        assert receive(ws) == {"type": "subscribed", "collections": ["forums"]}
        world.add_container()
        forum = world.add_forum()
        assert receive(ws)["data"] == {"id": forum}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "invalid message: JSON is malformed"),
        ('{"type": "dance", "collections": []}', "invalid message: Invalid value 'dance' - at `$.type`"),
        ('{"type": "subscribe", "collections": "forums"}', "invalid message: Expected `array`, got `str` - at `$.collections`"),
        ('{"type": "subscribe", "collections": [1]}', "invalid message: Expected `str | object`, got `int` - at `$.collections[0]`"),
        ('{"type": "subscribe"}', "invalid message: Object missing required field `collections`"),
        ('{"type": "subscribe", "collections": ["forums"], "x": 1}', "invalid message: Object contains unknown field `x`"),
        ('{"type": "subscribe", "collections": ["users"]}', "unknown collection(s) ['users']; expected any of ['containers', 'forums']"),
        ('{"type": "subscribe", "collections": [""]}', "collection names must be 1 to 200 characters, got ['']"),
        ("x" * 5000, "message of 5000 characters is over the limit of 4096"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_survives(world: World, message: str, error: str) -> None:
    with world.client.websocket_connect("/notify/ws?collections=forums") as ws, \
            world.client.websocket_connect("/notify/ws?collections=forums") as bystander:
        receive(ws)
        receive(bystander)
        ws.send_text(message)
        reply = receive(ws)
        assert reply["type"] == "error" and reply["message"].startswith(error), reply
        forum = world.add_forum()
        # both still served: the bad message cost nothing but an error reply
        while (msg := receive(ws)).get("type") == "subscribed":
            pass
        assert msg["data"] == {"id": forum}
        assert receive(bystander)["data"] == {"id": forum}


def test_binary_frame_gets_an_error(world: World) -> None:
    with world.client.websocket_connect("/notify/ws") as ws:
        receive(ws)
        ws.send_bytes(b"\x00")
        assert receive(ws) == {"type": "error", "message": "expected a text frame holding JSON, got a binary frame"}


def test_unknown_collection_on_connect(world: World) -> None:
    with world.client.websocket_connect("/notify/ws?collections=forums,users") as ws:
        receive(ws)
        assert receive(ws)["message"].startswith("unknown collection(s) ['users']")


def test_everything_is_the_public_collections(world: World) -> None:
    with world.client.websocket_connect("/notify/ws") as ws:  # no collections=: all public ones
        receive(ws)
        ws.send_text(json.dumps({"type": "unsubscribe", "collections": ["forums"]}))
        assert receive(ws) == {"type": "subscribed", "collections": ["containers"]}


def test_unsubscribe_from_all_of_everything_is_explained(tmp_path: Path) -> None:
    world = World(tmp_path, collections=ALL)
    with world.client, world.client.websocket_connect("/notify/ws") as ws:
        receive(ws)
        ws.send_text(json.dumps({"type": "unsubscribe", "collections": ["forums"]}))
        assert receive(ws)["message"].startswith("cannot unsubscribe from part of everything")


def test_resume_with_last_id(world: World) -> None:
    with world.client.websocket_connect("/notify/ws") as ws:
        receive(ws)
        world.add_forum()
        last = receive(ws)["id"]
    missed = [world.add_forum(), world.add_forum()]
    with world.client.websocket_connect(f"/notify/ws?last_id={last}") as ws:
        assert receive(ws)["type"] == "welcome"
        assert [receive(ws)["data"]["id"] for _ in missed] == missed
        live = world.add_forum()
        assert receive(ws)["data"]["id"] == live


# -- security hooks -------------------------------------------------------------------------


def _token_user(conn: HTTPConnection) -> str | None:
    return {"t-alice": "alice", "t-bob": "bob"}.get(conn.query_params.get("token", ""))


def _own_forums(principal: Any, n: Notification) -> bool:
    # alice sees odd forum ids, bob even ones
    return n.data is not None and n.data["id"] % 2 == (1 if principal == "alice" else 0)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, authenticate=_token_user, authorize=_own_forums)
    with w.client:
        yield w


def test_rejected_connection_closes_with_1008(secured: World) -> None:
    with secured.client.websocket_connect("/notify/ws?token=wrong") as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert info.value.code == 1008


def test_authorize_filters_live_and_replayed(secured: World) -> None:
    with secured.client.websocket_connect("/notify/ws?token=t-bob") as ws:
        start = receive(ws)["cursor"]
    ids = [secured.add_forum() for _ in range(4)]  # 1, 2, 3, 4
    with secured.client.websocket_connect(f"/notify/ws?token=t-alice&last_id={start}") as alice, \
            secured.client.websocket_connect(f"/notify/ws?token=t-bob&last_id={start}") as bob:
        receive(alice), receive(bob)
        assert [receive(alice)["data"]["id"] for _ in range(2)] == [ids[0], ids[2]]
        assert [receive(bob)["data"]["id"] for _ in range(2)] == [ids[1], ids[3]]
        five, six = secured.add_forum(), secured.add_forum()
        assert receive(alice)["data"]["id"] == five
        assert receive(bob)["data"]["id"] == six


def test_sse_rejected_with_403(secured: World) -> None:
    assert secured.client.get("/notify/events?token=nope").status_code == 403


async def _async_auth(conn: HTTPConnection) -> str | None:
    return conn.headers.get("x-user")


def test_async_authenticate(tmp_path: Path) -> None:
    w = World(tmp_path, authenticate=_async_auth)
    with w.client, w.client.websocket_connect("/notify/ws", headers={"x-user": "carol"}) as ws:
        assert receive(ws)["type"] == "welcome"


# -- static files (SSE is tested end to end, in test_server.py) ------------------------------


def test_client_files_are_served(world: World) -> None:
    js = world.client.get("/notify/sqla-notify.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "export function connect" in js.text
    assert "ConnectOptions" in world.client.get("/notify/sqla-notify.d.ts").text


def test_router_needs_a_hub() -> None:
    with pytest.raises(TypeError, match="notify_router\\(\\) expected a Hub, got str: 'hub'"):
        notify_router("hub")  # type: ignore[arg-type]


def test_the_reader_of_a_client_given_up_on_ends_after_the_grace() -> None:
    """When the hub gives up on a client whose socket never takes the close frame, the
    endpoint's reader is cancelled after a second and ends quietly (the server's own
    timeouts vary; this does not depend on them)."""
    from sqla_notify.fastapi import _Writer

    class Unused:
        async def send(self, message: object) -> None:
            raise AssertionError("the writer is not started here")

    async def scenario() -> str:
        sub = Hub().subscribe()  # never sent: the writer is not started here
        received = asyncio.Event()

        async def endpoint() -> str:
            writer = _Writer(Unused(), sub, asyncio.current_task(), 0.5)  # type: ignore[arg-type]
            sub.on_close = writer.close_soon
            try:
                received.set()
                await asyncio.Event().wait()  # a client that never sends anything
            except asyncio.CancelledError:
                if not writer.reader_cancelled():
                    raise
                return "ended"
            finally:
                writer.done()
            return "not reached"

        task = asyncio.ensure_future(endpoint())
        await received.wait()
        started = time.monotonic()
        sub.close(1013)  # what the hub does to a client that stopped reading
        result = await asyncio.wait_for(task, 5)
        assert 0.4 < time.monotonic() - started < 3  # the grace, then the reader is cancelled
        assert not task.cancelled()
        if sys.version_info >= (3, 11):
            assert task.cancelling() == 0  # absorbed, not leaked
        return result

    assert asyncio.run(scenario()) == "ended"


@pytest.mark.anyio
async def test_a_send_that_has_to_wait_is_finished_by_a_writer_then_what_queued_meanwhile_follows() -> None:
    """The WebSocket writer sends a frame for an idle client inside the hub's dispatch; when
    the socket cannot take it at once (the send awaits), a task finishes that send, then sends
    what was queued meanwhile, in order, and the client is idle again."""
    from sqla_notify.fastapi import _Writer  # the transport's writer: no public name

    class Socket:
        """A WebSocket whose sends wait while ``full`` is cleared (a full socket buffer)."""

        def __init__(self) -> None:
            self.full = asyncio.Event()
            self.full.set()
            self.sent: list[int] = []

        async def send(self, message: dict[str, str]) -> None:
            await self.full.wait()
            self.sent.append(json.loads(message["text"])["data"]["id"])

    async with Hub() as hub:
        sub = hub.subscribe(["forums"])
        sub.receive_nowait()  # the welcome, as if sent
        sub.receive_nowait()
        socket = Socket()
        writer = _Writer(socket, sub, None, 1.0)  # type: ignore[arg-type]
        sub.set_writer(writer.start, writer.send_now)
        hub.publish([Notification("forums", "insert", {"id": 1})])
        await asyncio.sleep(0)  # dispatched: sent there and then, no writer task
        assert socket.sent == [1] and writer.task is None and sub.idle
        socket.full.clear()
        hub.publish([Notification("forums", "insert", {"id": 2})])
        await asyncio.sleep(0)
        assert socket.sent == [1] and writer.task is not None and sub.writing  # waits in a task
        hub.publish([Notification("forums", "insert", {"id": i}) for i in (3, 4)])
        await asyncio.sleep(0)
        assert sub.pending == 2  # queued behind the send in flight
        socket.full.set()
        await asyncio.wait_for(writer.task, 5)
        assert socket.sent == [1, 2, 3, 4] and sub.idle and not sub.writing and writer.task is None
        hub.unsubscribe(sub)


@pytest.mark.anyio
async def test_a_writer_started_outside_any_task_still_sends_the_close_frame(caplog: pytest.LogCaptureFixture) -> None:
    """The hub starts writers from a loop callback, not a task, and drives them by hand: a
    writer whose client was given up on still sends the close frame, within its grace
    (asyncio's timeouts need a task on Python 3.12+; the writer moves into one)."""
    from sqla_notify.fastapi import _Writer  # the transport's writer: no public name

    class Socket:
        def __init__(self) -> None:
            self.closed: list[tuple[int, str]] = []

        async def send(self, message: dict[str, str]) -> None:
            pass

        async def close(self, code: int, reason: str) -> None:
            self.closed.append((code, reason))

    async with Hub() as hub:
        sub = hub.subscribe(["forums"])
        socket = Socket()
        writer = _Writer(socket, sub, None, 5.0)  # type: ignore[arg-type]
        sub.set_writer(writer.start, writer.send_now)  # sends the welcome
        hub.disconnect(sub, 1008, "too many messages")  # starts the writer for the close, in a callback
        for _ in range(20):
            if socket.closed:
                break
            await asyncio.sleep(0)
        assert socket.closed == [(1008, "too many messages")]
        assert not [r for r in caplog.records if r.levelname == "ERROR"]


def _dependencies(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


@pytest.mark.parametrize("authenticate", ["none", "callable", "depends"])
def test_no_dependency_of_the_streams_lives_as_long_as_the_connection(authenticate: str) -> None:
    """A dependency with ``yield`` keeps an exit stack, a context manager and a cancel scope
    alive for the whole connection (about 3 KB each, a tenth of an idle WebSocket): the
    place a connection holds is taken and given back by the endpoint instead."""
    from fastapi import Cookie, Depends
    from fastapi.routing import APIRoute, APIWebSocketRoute

    def user(session: str | None = Cookie(None)) -> str | None:
        return session

    hook: Any = {"none": None, "callable": lambda conn: "p", "depends": Depends(user)}[authenticate]
    router = notify_router(Hub(), collections=ALL, authenticate=hook, max_connections=10)
    streams = [r for r in router.routes if isinstance(r, (APIRoute, APIWebSocketRoute)) and r.path in ("/ws", "/events")]
    assert len(streams) == 2
    for route in streams:
        calls = [d.call for d in _dependencies(route.dependant)]
        assert calls, route.path  # the Origin check and authenticate are dependencies
        held = [c for c in calls if inspect.isgeneratorfunction(c) or inspect.isasyncgenfunction(c)]
        assert held == [], f"{route.path}: dependencies with yield: {held}"


def _request(host: str) -> Request:
    """An SSE request from ``host``, as the gate sees it."""
    return Request({"type": "http", "method": "GET", "path": "/events", "headers": [], "query_string": b"",
                    "scheme": "http", "server": ("testserver", 80), "client": (host, 1234)})


@pytest.mark.anyio
async def test_the_limits_are_checked_again_when_a_connection_takes_its_place() -> None:
    """``admit`` runs before ``authenticate`` and takes no place; two connections it let in
    while there was room for one: the second to finish ``authenticate`` is refused."""
    from fastapi import HTTPException

    from sqla_notify._web.gate import Gate
    from sqla_notify._web.origin import OriginPolicy

    gate = Gate(OriginPolicy(()), max_connections=1, max_per_client=None)
    first, second = _request("10.0.0.1"), _request("10.0.0.2")
    await gate.admit(first)
    await gate.admit(second)  # both let in: nothing is held yet
    place = await gate.enter(first)
    with pytest.raises(HTTPException) as refused:
        await gate.enter(second)
    assert (refused.value.status_code, gate.connections, gate.refused_limit) == (503, 1, 1)
    gate.leave(place)
    assert (await gate.enter(second), gate.connections, gate.per_client) == ("10.0.0.2", 1, {"10.0.0.2": 1})


@pytest.mark.anyio
async def test_connections_inside_authenticate_count_against_the_limits_before_it() -> None:
    """A client that opens handshakes and never finishes them is turned away before
    ``authenticate`` is called again, as a full process is; ``enter`` counts only those
    that hold a place, and the count is given back however ``authenticate`` ends."""
    from fastapi import HTTPException

    from sqla_notify._web.gate import Gate
    from sqla_notify._web.origin import OriginPolicy

    per_client = Gate(OriginPolicy(()), max_connections=None, max_per_client=1)
    whole = Gate(OriginPolicy(()), max_connections=1, max_per_client=None)
    for gate, other, refused in ((per_client, "10.0.0.2", False), (whole, "10.0.0.2", True)):
        with gate.authenticating(_request("10.0.0.1")):
            assert (gate.pending, gate.pending_per_client, gate.stats(0).authenticating) == (1, {"10.0.0.1": 1}, 1)
            with pytest.raises(HTTPException):
                await gate.admit(_request("10.0.0.1"))
            if refused:
                with pytest.raises(HTTPException):
                    await gate.admit(_request(other))
            else:
                await gate.admit(_request(other))
        with pytest.raises(RuntimeError), gate.authenticating(_request("10.0.0.1")):
            raise RuntimeError("authenticate failed")
        assert (gate.pending, gate.pending_per_client) == (0, {})
        await gate.admit(_request("10.0.0.1"))
        with gate.authenticating(_request("10.0.0.1")):
            place = await gate.enter(_request("10.0.0.1"))  # its own authentication is over by then
        assert gate.connections == 1
        gate.leave(place)


@pytest.mark.parametrize("path", ["/notify/ws", "/notify/events"])
def test_a_connection_that_fails_while_subscribing_gives_its_place_back(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import asynccontextmanager
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    hub = Hub()
    router = notify_router(hub, collections=ALL, max_connections=1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub:
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(router, prefix="/notify")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("subscribe failed")

    with TestClient(app) as client:
        monkeypatch.setattr(hub, "subscribe", broken)
        with pytest.raises(RuntimeError, match="subscribe failed"):
            if path.endswith("/ws"):
                with client.websocket_connect(path):
                    pass
            else:
                client.get(path)
        assert router.stats().connections == 0
        monkeypatch.undo()
        with client.websocket_connect("/notify/ws") as ws:  # the one place is free
            assert receive(ws)["type"] == "welcome"
