"""Graceful shutdown: :meth:`Hub.shutdown` sends each client what waits for it, within the
grace, then closes it with 1001; under uvicorn the router runs it on SIGTERM, before uvicorn
would close the WebSockets with 1012 and drop their queues."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from sqla_notify import Hub, Notification, Subscriber

from .support.servers import Server
from .support.ws import recv

pytestmark = pytest.mark.anyio


def N(id: int) -> Notification:  # noqa: A002 - the row's id
    return Notification("forums", "insert", {"id": id})


async def settle() -> None:
    """Let call_soon callbacks (the hub's dispatch) run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def drain(sub: Subscriber) -> list[dict[str, Any]]:
    """Read ``sub`` as a transport does until the hub closes it."""
    got = []
    async for batch in sub.frames():
        got += [json.loads(f if isinstance(f, str) else f.text) for f in batch]
    return got


async def test_shutdown_sends_what_waits_then_closes_with_1001() -> None:
    async with Hub() as hub:
        reading, stalled = hub.subscribe(), hub.subscribe()
        hub.publish([N(1), N(2)])
        await settle()
        closing = asyncio.ensure_future(hub.shutdown(grace=0.5))
        await settle()
        hub.publish([N(3)])  # after the shutdown began: for the replay elsewhere
        late = hub.subscribe()  # connects while the hub goes away: sent nothing, closed at once
        assert late.close_code == 1001 and late.pending == 0
        got = await asyncio.wait_for(drain(reading), 5)
        assert [m.get("type") or m["data"]["id"] for m in got] == ["welcome", 1, 2]
        assert reading.close_code == 1001
        hub.unsubscribe(reading)  # as its transport does once the close frame went out
        assert stalled.close_code is None, "a client that has not read yet has the grace to do so"
        await asyncio.wait_for(closing, 5)
        # The grace is over: one that did not read is closed all the same, its queue dropped.
        assert stalled.close_code == 1001 and stalled.pending == 0
        assert hub.stats().frames_dropped == 3
        assert hub.stats().connections == 0
        await hub.shutdown()  # idempotent


async def test_shutdown_returns_once_every_transport_has_ended() -> None:
    async with Hub() as hub:
        subs = [hub.subscribe() for _ in range(3)]
        closing = asyncio.ensure_future(hub.shutdown(grace=60))
        for sub in subs:
            await asyncio.wait_for(drain(sub), 5)
            assert sub.close_code == 1001
        await settle()
        assert not closing.done(), "a close frame may still be on its way: the server must not cut it"
        for sub in subs:
            hub.unsubscribe(sub)
        await asyncio.wait_for(closing, 5)  # not the grace


async def test_shutdown_refuses_a_negative_grace() -> None:
    async with Hub() as hub:
        with pytest.raises(ValueError, match=r"grace=\.\.\.\) expected seconds >= 0, got -1"):
            await hub.shutdown(-1)


def test_notify_router_refuses_a_shutdown_grace_that_is_not_positive() -> None:
    from sqla_notify.fastapi import ALL, notify_router  # noqa: PLC0415 - the optional extra

    with pytest.raises(ValueError, match=r"shutdown_grace=\.\.\.\) expected seconds > 0 or None, got 0"):
        notify_router(Hub(), collections=ALL, shutdown_grace=0)


async def test_sigterm_under_uvicorn_flushes_queued_frames_then_closes_with_1001(tmp_path: Path) -> None:
    server = Server(tmp_path)
    try:
        # A client that does not read: a burst of 25 MB fills the sockets' buffers, and the
        # rest waits in its queue on the server.
        reader = await websockets.connect(server.ws, max_queue=1, max_size=None)
        assert (await recv(reader))["type"] == "welcome"
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            events = http.stream("GET", "/notify/events")
            stream = await events.__aenter__()
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("data: {\"type\":\"welcome\"")
            await http.post("/burst", params={"count": 500, "size": 50_000})
            server.proc.send_signal(signal.SIGTERM)
            # The shutdown has begun once a new client is closed with 1001 before its welcome.
            while True:
                async with websockets.connect(server.ws) as probe:
                    try:
                        message = await recv(probe)
                    except websockets.ConnectionClosed:
                        assert probe.close_code == 1001
                        break
                    assert message["type"] == "welcome", message  # not yet: try again
            # Now read: every queued frame arrives, then the close frame.
            received = 0
            async for raw in reader:
                received += 1
                assert json.loads(raw)["data"]["id"] == received - 1
            assert received == 500
            assert reader.close_code == 1001
            # The SSE stream: everything, then "goaway", then the end.
            data = [line async for line in lines if line.startswith("data: ")]
            assert len(data) == 501 and data[-1] == 'data: {"type":"goaway"}'
            await events.__aexit__(None, None, None)
        assert server.proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        server.stop()


async def test_the_hook_lets_clients_go_before_the_servers_handler_and_a_second_signal_through() -> None:
    from sqla_notify._web.shutdown import ShutdownHook  # noqa: PLC0415 - the optional extra

    called: list[int] = []
    handled = asyncio.Event()

    def server_handler(signum: int, frame: object) -> None:  # uvicorn's handle_exit, say
        called.append(signum)
        handled.set()

    previous = signal.signal(signal.SIGTERM, server_handler)
    try:
        async with Hub() as hub:
            stalled = hub.subscribe()  # never reads: the shutdown takes the whole grace
            hook = ShutdownHook(hub, grace=0.3)
            hook.install()
            hook.install()  # once
            signal.raise_signal(signal.SIGTERM)
            await settle()
            assert called == [] and hook.task is not None and not hook.task.done()
            await asyncio.wait_for(handled.wait(), 5)  # after the grace
            assert called == [signal.SIGTERM] and stalled.close_code == 1001

            # Another round: a second signal goes through at once, and only once.
            handled.clear()
            again = ShutdownHook(hub, grace=0.3)
            signal.signal(signal.SIGTERM, server_handler)
            hook_late = hub.subscribe()  # closed at once: the hub is shutting down
            assert hook_late.close_code == 1001
            again.install()
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert called == [signal.SIGTERM, signal.SIGTERM]
            await settle()
            assert again.task is not None
            await asyncio.wait_for(again.task, 5)
            await settle()
            assert called == [signal.SIGTERM, signal.SIGTERM], "the server's handler ran twice for one signal"
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_the_hook_leaves_the_default_handlers_alone() -> None:
    from sqla_notify._web.shutdown import ShutdownHook  # noqa: PLC0415 - the optional extra

    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        async with Hub() as hub:
            ShutdownHook(hub, grace=1).install()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
