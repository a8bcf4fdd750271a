"""The broker contract is public: a broker over an in-memory log, written with names that
``sqla_notify`` exports and nothing else (checked below), shared by two hubs in one event
loop as two processes would share Redis. The hubs do the rest: numbering, frames, replay,
gaps, reconnecting, the outbox's retries."""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Union

import pytest

import sqla_notify
from sqla_notify import Batch, Broker, Gap, Hub, Notification, Ready, Subscriber

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


class Medium:
    """What the processes share: an append-only log, like a stream, that can go down."""

    def __init__(self) -> None:
        #: (writer's token, batch) or (writer's token, gap reason), or None for an entry the
        #: reader cannot make sense of; entry 0 is no one's, so that every cursor comes after
        #: the initial one
        self.entries: list[tuple[str, Union[list[Notification], str, None]]] = [("", [])]
        self.changed = asyncio.Condition()
        self.down = False
        self.refused_reads = 0  # the next this many reads fail at once

    async def append(self, token: str, entry: Union[list[Notification], str, None]) -> None:
        async with self.changed:
            self.entries.append((token, entry))
            self.changed.notify_all()

    async def set_down(self, down: bool) -> None:
        async with self.changed:
            self.down = down
            self.changed.notify_all()


class MemoryBroker(Broker):
    """Cursors are ``"<entry>:<index>"``, the same for every reader of the medium."""

    what = "the memory log"
    shared_cursors = True

    def __init__(self, medium: Medium, *, connect_timeout: float = 2.0) -> None:
        super().__init__(connect_timeout=connect_timeout)
        self.medium = medium
        self.position: int | None = None  # the next entry to read; None: not primed yet
        self.token = f"w{id(self)}"
        #: how the next writes fail: "before" reaching the medium, or "after" (reply lost)
        self.write_failures: list[str] = []

    def parse_cursor(self, cursor: str) -> int | None:
        entry, _, index = cursor.partition(":")
        return (int(entry) << 20) + int(index) if entry.isdigit() and index.isdigit() else None

    @property
    def initial_cursor(self) -> str:
        return "0:0"

    async def read(self, history: int) -> AsyncGenerator[Union[Batch, Gap, Ready], None]:
        medium = self.medium
        if medium.refused_reads:
            medium.refused_reads -= 1
            raise ConnectionError("the memory log refused the read")
        if medium.down:
            raise ConnectionError("the memory log is down")
        if self.position is None:  # the first connection: history, then live
            for k in range(max(1, len(medium.entries) - history), len(medium.entries)):
                yield self._event(k, history=True)
            self.position = len(medium.entries)
            yield Ready("connected before the memory log could be read")
        else:
            yield Ready()
        while True:
            async with medium.changed:
                await medium.changed.wait_for(lambda: medium.down or len(medium.entries) > (self.position or 0))
            if medium.down:
                raise ConnectionError("the memory log went down")
            while self.position < len(medium.entries):
                yield self._event(self.position)
                self.position += 1

    def _event(self, k: int, *, history: bool = False) -> Union[Batch, Gap]:
        _, entry = self.medium.entries[k]
        if entry is None:  # a broker's mistake: no ids, although its cursors are shared
            return Batch([N(0)])
        if isinstance(entry, str):
            return Gap(f"another process lost notifications: {entry}", history)
        return Batch(entry, [f"{k}:{i}" for i in range(len(entry))], history)

    async def write(self, batches: list[tuple[int, list[Notification]]], lost: str | None) -> None:
        failure = self.write_failures.pop(0) if self.write_failures else None
        if failure == "before" or self.medium.down:
            raise ConnectionError("the write did not reach the memory log")
        if lost is not None:
            await self.medium.append(self.token, lost)
        for number, batch in batches:
            await self.medium.append(f"{self.token}:{number}", batch)
        if failure == "after":
            raise ConnectionError("the reply of the write was lost")

    async def ping(self) -> None:
        if self.medium.down:
            raise ConnectionError("the memory log is down")


class ConfirmingBroker(MemoryBroker):
    """Tells which batches of a failed write arrived, by their tokens."""

    async def confirm(self, batches: list[tuple[int, list[Notification]]]) -> int:
        tokens = {token for token, _ in self.medium.entries}
        arrived = 0
        for number, _ in batches:
            if f"{self.token}:{number}" not in tokens:
                break
            arrived += 1
        return arrived


def N(i: int) -> Notification:
    return Notification("forums", "insert", {"id": i})


def decode(frame: object) -> Message:
    text = frame if isinstance(frame, str) else getattr(frame, "text")  # noqa: B009 - a frame's text
    message: Message = json.loads(text)
    return message


async def receive(sub: Subscriber, done: Callable[[list[Message]], bool], what: str) -> list[Message]:
    """Messages for ``sub`` until ``done(messages so far)``; 10 s at most."""
    got: list[Message] = []

    async def collect() -> None:
        batches = sub.frames()
        while not done(got):
            got.extend(decode(f) for f in await batches.__anext__())

    try:
        await asyncio.wait_for(collect(), 10)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out waiting for {what}; got {got}")
    return got


def data(messages: list[Message]) -> list[Any]:
    return [m["data"]["id"] for m in messages if "data" in m]


def ids(messages: list[Message]) -> list[str]:
    return [m["id"] for m in messages if "data" in m]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait, 10 s at most, for ``condition()``, checking at every step of the loop."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(poll(), 10)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
async def two_hubs() -> AsyncIterator[tuple[Hub, Hub, Medium]]:
    medium = Medium()
    async with Hub(broker=ConfirmingBroker(medium)) as a, Hub(broker=ConfirmingBroker(medium)) as b:
        assert a.stats().broker == b.stats().broker == "connected"  # start() waited for it
        yield a, b, medium


def test_this_module_uses_only_public_names() -> None:
    tree = ast.parse(Path(__file__).read_text())
    imported = [
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    ] + [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    ours = [name for name in imported if name.startswith("sqla_notify")]
    assert set(ours) == {"sqla_notify"}, ours  # the package itself, no module of it
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "sqla_notify":
            assert all(alias.name in sqla_notify.__all__ for alias in node.names)


def test_an_incomplete_broker_fails_when_constructed() -> None:
    class NoWrite(Broker):
        async def read(self, history: int) -> AsyncGenerator[Union[Batch, Gap, Ready], None]:
            yield Ready()

        async def ping(self) -> None:
            pass

    with pytest.raises(TypeError, match="write"):
        NoWrite()  # type: ignore[abstract]


def test_events_are_frozen_records() -> None:
    batch = Batch([N(1)], ["1:0"])
    with pytest.raises(AttributeError):
        batch.history = True  # type: ignore[misc]
    assert (batch.history, Gap("why").history, Ready().stale) == (False, False, "")


async def test_notifications_committed_via_either_hub_reach_clients_of_both_in_order_once(
    two_hubs: tuple[Hub, Hub, Medium],
) -> None:
    a, b, _ = two_hubs
    on_a, on_b = a.subscribe(), b.subscribe()
    a.publish([N(1), N(2)])
    b.publish([N(3)])
    a.publish([N(4)])
    got_a = await receive(on_a, lambda got: len(data(got)) == 4, "four notifications on A")
    got_b = await receive(on_b, lambda got: len(data(got)) == 4, "four notifications on B")
    assert sorted(data(got_a)) == [1, 2, 3, 4]
    assert data(got_a) == data(got_b)  # one order
    assert ids(got_a) == ids(got_b)  # one name each, the same everywhere
    assert data(got_a).index(1) + 1 == data(got_a).index(2)  # a transaction stays whole
    assert a.cursor == b.cursor == ids(got_a)[-1]
    assert a.stats().gaps == b.stats().gaps == 0


async def test_a_gap_makes_clients_resync_and_refuses_a_replay_across_it(
    two_hubs: tuple[Hub, Hub, Medium],
) -> None:
    a, b, medium = two_hubs
    on_b = b.subscribe()
    a.publish([N(1)])
    first = ids(await receive(on_b, lambda got: len(data(got)) == 1, "the first notification"))[0]
    await medium.append("elsewhere", "a process dropped 3 batches")
    got = await receive(on_b, lambda got: bool(got) and got[-1]["type"] == "resync", "the resync")
    assert got[-1]["reason"] == "another process lost notifications: a process dropped 3 batches"
    assert b.stats().gaps == 1 and b.stats().last_gap == got[-1]["reason"]
    a.publish([N(2)])
    await receive(on_b, lambda got: data(got) == [2], "the next notification")
    late = b.subscribe(last_id=first)  # its window still holds 2, but not what the gap lost
    got = await receive(late, lambda got: len(got) == 2, "welcome and resync")
    assert got[1]["type"] == "resync" and got[1]["reason"] == "cannot replay from that id; reload"


async def test_history_primes_the_window_for_replays() -> None:
    medium = Medium()
    async with Hub(broker=MemoryBroker(medium)) as earlier:
        on = earlier.subscribe()
        for i in range(1, 4):
            earlier.publish([N(i)])
        names = ids(await receive(on, lambda got: len(data(got)) == 3, "three notifications"))
    async with Hub(broker=MemoryBroker(medium), replay=10) as hub:
        assert hub.cursor == names[-1]
        sub = hub.subscribe(last_id=names[0])
        got = await receive(sub, lambda got: len(got) == 3, "welcome and the replay")
        assert ids(got) == names[1:] and data(got) == [2, 3]
        assert hub.stats().replays == 1 and hub.stats().gaps == 0


async def test_clients_that_came_before_the_broker_was_ready_resync_but_may_replay() -> None:
    medium = Medium()
    async with Hub(broker=MemoryBroker(medium)) as earlier:
        on = earlier.subscribe()
        earlier.publish([N(1)])
        earlier.publish([N(2)])
        names = ids(await receive(on, lambda got: len(data(got)) == 2, "two notifications"))
    await medium.set_down(True)
    async with Hub(broker=MemoryBroker(medium, connect_timeout=0.05), replay=10) as hub:
        assert hub.stats().broker == "disconnected"  # start() returned all the same
        early = hub.subscribe()
        await medium.set_down(False)
        got = await receive(early, lambda got: len(got) == 2, "welcome and resync")
        assert got[1] == {"type": "resync", "cursor": names[-1],
                          "reason": "connected before the memory log could be read"}  # not the history
        assert hub.stats().gaps == 1
        replayed = hub.subscribe(last_id=names[0])  # the history is in the window
        got = await receive(replayed, lambda got: len(got) == 2, "welcome and the replay")
        assert data(got) == [2]


async def test_a_read_that_raises_is_retried_with_backoff_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []

    def fastest(low: float, high: float) -> float:
        waits.append(high)  # the longest this draw could have waited
        return 0.0

    monkeypatch.setattr(random, "uniform", fastest)
    caplog.set_level(logging.WARNING, "sqla_notify")
    medium = Medium()
    medium.refused_reads = 4
    broker = MemoryBroker(medium, connect_timeout=5)
    async with Hub(broker=broker) as hub:
        # start() returns after the first attempt: a failed one
        assert hub.stats().broker == "disconnected" and broker.errors >= 1
        await until(lambda: hub.stats().broker == "connected", "the fifth attempt")
        assert broker.errors == 4
        assert waits == [0.2, 0.4, 0.5, 0.5]  # exponential, up to half a second
        warnings = [r.getMessage() for r in caplog.records if "lost the memory log" in r.getMessage()]
        assert warnings == ["sqla_notify lost the memory log (builtins.ConnectionError: "
                            "the memory log refused the read); reconnecting with backoff"]  # one per outage
        sub = hub.subscribe()
        hub.publish([N(1)])
        await receive(sub, lambda got: data(got) == [1], "a notification once connected")
    assert hub.stats().broker == "stopped"


async def test_a_lost_connection_resumes_where_it_left_off(two_hubs: tuple[Hub, Hub, Medium]) -> None:
    a, b, medium = two_hubs
    on_b = b.subscribe()
    await medium.set_down(True)
    await until(lambda: b.stats().broker == "disconnected", "B to notice")
    a.publish([N(1)])  # waits in A's outbox: the medium does not answer
    await medium.set_down(False)
    got = await receive(on_b, lambda got: data(got) == [1], "the batch that waited")
    assert [m.get("type") for m in got] == ["welcome", None]  # no resync: nothing was lost
    assert b.stats().broker == "connected"


async def test_a_failed_write_that_can_be_confirmed_is_sent_once() -> None:
    medium = Medium()
    broker = ConfirmingBroker(medium)
    async with Hub(broker=broker) as hub:
        sub = hub.subscribe()
        broker.write_failures = ["after", "before"]
        hub.publish([N(1)])  # arrives, but the write fails: confirmed, not sent again
        hub.publish([N(2)])
        await receive(sub, lambda got: data(got) == [1, 2], "both notifications")
        hub.publish([N(3)])  # the write fails before the medium: sent again
        got = await receive(sub, lambda got: data(got) == [3], "the third")
        assert [m.get("type") for m in got] == [None]
        assert len([token for token, _ in medium.entries if token]) == 3  # each written once
        assert broker.errors == 2 and hub.stats().gaps == 0


async def test_a_failed_write_that_cannot_be_confirmed_is_a_gap() -> None:
    medium = Medium()
    broker = MemoryBroker(medium)
    async with Hub(broker=broker) as hub:
        sub = hub.subscribe()
        broker.write_failures = ["after"]
        hub.publish([N(1)])
        got = await receive(sub, lambda got: bool(got) and got[-1].get("type") == "resync", "the gap marker's resync")
        assert data(got) == [1]  # it did arrive; nobody could tell
        assert got[-1]["reason"].startswith(
            "another process lost notifications: 1 batch(es) may not have reached the memory log "
            "(builtins.ConnectionError: the reply of the write was lost)"
        )
        assert broker.errors == 1 and hub.stats().gaps == 1



async def test_a_broker_serves_one_hub_at_a_time() -> None:
    broker = MemoryBroker(Medium())
    async with Hub(broker=broker) as hub:
        with pytest.raises(RuntimeError, match="already running; give each Hub its own"):
            async with Hub(broker=broker):
                pass
        sub = hub.subscribe()
        hub.publish([N(1)])
        await receive(sub, lambda got: data(got) == [1], "a notification on the first hub")
    async with Hub(broker=broker) as again:  # once stopped, it may serve another
        assert again.stats().broker == "connected"


async def test_an_event_that_fails_to_apply_is_logged_and_delivery_carries_on(
    two_hubs: tuple[Hub, Hub, Medium], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, medium = two_hubs
    on_b = b.subscribe()
    await medium.append("elsewhere", None)
    a.publish([N(1)])
    got = await receive(on_b, lambda got: data(got) == [1], "the next notification")
    assert [m.get("type") for m in got] == ["welcome", None]
    assert "could not apply Batch from" in caplog.text
    assert "expected ids, got None" in caplog.text
