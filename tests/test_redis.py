"""RedisBroker: several hubs sharing one Redis Stream (the machine's Redis, a private stream
per test), and faults against a private redis-server that the test starts and stops."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from sqla_notify import Hub, Notification, Notifier
from sqla_notify.redis import RedisBroker

from .models import Base, Forum
from .support.hubs import N, frames, receive, until
from .support.services import PrivateRedis

pytestmark = pytest.mark.anyio


@pytest.fixture
async def two_hubs(redis_url: str, stream: str) -> AsyncIterator[tuple[Hub, Hub]]:
    """Two hubs, as two processes would have, sharing one stream."""
    async with Hub(broker=RedisBroker(redis_url, stream=stream)) as a, \
            Hub(broker=RedisBroker(redis_url, stream=stream)) as b:
        await until(lambda: a.stats().broker == b.stats().broker == "connected", "both readers")
        yield a, b


async def test_every_process_delivers_every_batch_once(two_hubs: tuple[Hub, Hub]) -> None:
    a, b = two_hubs
    on_a, on_b = a.subscribe(), b.subscribe()
    frames(on_a), frames(on_b)  # the welcomes
    a.publish([N(1), N(2)])
    b.publish([N(3)])
    got_a = await receive(on_a, lambda got: len(got) == 3, "three notifications on A")
    got_b = await receive(on_b, lambda got: len(got) == 3, "three notifications on B")
    assert got_a == got_b  # same order, same cursors, everywhere
    assert sorted(m["data"]["id"] for m in got_a) == [1, 2, 3]
    ids = [m["data"]["id"] for m in got_a]
    assert ids.index(1) + 1 == ids.index(2)  # a transaction stays together and in order
    assert a.stats().published == b.stats().published == 3  # A did not deliver its own twice
    assert a.cursor == b.cursor == got_a[-1]["id"]


async def test_client_moves_to_another_process_and_misses_nothing(two_hubs: tuple[Hub, Hub]) -> None:
    a, b = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    a.publish([N(1)])
    first = await receive(on_b, bool, "the first notification on B")
    b.unsubscribe(on_b)  # the client drops...
    a.publish([N(2), N(3)])
    b.publish([N(4)])
    await until(lambda: a.stats().published == 4, "A to read all four")
    on_a = a.subscribe(last_id=first[0]["id"])  # ...and reconnects to A with its last id
    replayed = frames(on_a)[1:]
    assert sorted(m["data"]["id"] for m in replayed) == [2, 3, 4]
    a.publish([N(5)])
    live = await receive(on_a, bool, "the live one")
    assert [m["data"]["id"] for m in live] == [5]  # no duplicate, no gap


async def test_a_new_process_can_replay_what_came_before_it(redis_url: str, stream: str) -> None:
    async with Hub(broker=RedisBroker(redis_url, stream=stream)) as a:
        sub = a.subscribe()
        a.publish([N(1)])
        a.publish([N(2)])
        got = (await receive(sub, lambda got: len(got) == 3, "welcome and two on A"))[1:]
        async with Hub(broker=RedisBroker(redis_url, stream=stream)) as late:
            await until(lambda: late.stats().broker == "connected", "the late reader")
            assert late.cursor == a.cursor  # primed from the stream's tail
            replayed = frames(late.subscribe(last_id=got[0]["id"]))[1:]
            assert replayed == got[1:]


async def test_history_primes_the_window_but_is_not_sent_as_news(redis_url: str, stream: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    first = cast(str, raw.xadd(stream, {"b": json.dumps([{"collection": "forums", "action": "insert", "data": {"id": 1}}])}))
    raw.xadd(stream, {"b": json.dumps([{"collection": "forums", "action": "insert", "data": {"id": 2}}])})
    raw.xadd(stream, {"gap": "lost before"})
    raw.xadd(stream, {"b": json.dumps([{"collection": "forums", "action": "insert", "data": {"id": 3}}])})
    hub = Hub(broker=RedisBroker(redis_url, stream=stream))
    connected_early = hub.subscribe()  # connected before the reader primes the window
    frames(connected_early)
    async with hub:
        assert hub.stats().broker == "connected"  # start waited for the first read
        # History is not news, nor is an old gap; but a client that connected before the
        # first read cannot be placed in it: one resync, at the newest entry.
        assert [(m["type"], m["cursor"]) for m in frames(connected_early)] == [("resync", hub.cursor)]
        assert hub.stats().gaps == 1
        after_3 = frames(hub.subscribe(last_id=f"{first}:0"))
        assert [m["type"] for m in after_3] == ["welcome", "resync"]  # no replay across the gap
        hub.publish([N(4)])
        live = await receive(connected_early, bool, "a live one")
        assert [m["data"] for m in live] == [{"id": 4}]


async def test_resume_from_before_the_stream_gets_resync(redis_url: str, stream: str) -> None:
    async with Hub(replay=5, broker=RedisBroker(redis_url, stream=stream)) as hub:
        await until(lambda: hub.stats().broker == "connected", "the reader")
        sub = hub.subscribe()
        hub.publish([N(0)])
        await until(lambda: hub.stats().published == 1, "the first")
        old = frames(sub)[-1]["id"]
        for i in range(1, 20):
            hub.publish([N(i)])
        await until(lambda: hub.stats().published == 20, "all twenty")
        assert [m["type"] for m in frames(hub.subscribe(last_id=old))] == ["welcome", "resync"]
        assert [m["type"] for m in frames(hub.subscribe(last_id="1-0:0"))] == ["welcome", "resync"]
        assert [m["type"] for m in frames(hub.subscribe(last_id="nonsense"))] == ["welcome", "resync"]


async def test_garbage_in_the_stream_is_skipped(redis_url: str, stream: str) -> None:
    async with Hub(broker=RedisBroker(redis_url, stream=stream)) as hub:
        await until(lambda: hub.stats().broker == "connected", "the reader")
        sub = hub.subscribe()
        frames(sub)
        raw = redis.Redis.from_url(redis_url)
        raw.xadd(stream, {"b": "not json"})
        raw.xadd(stream, {"other": "x"})
        hub.publish([N(1)])
        got = await receive(sub, bool, "the good one after the garbage")
        assert [m["data"] for m in got] == [{"id": 1}]


async def test_commits_from_a_worker_thread_reach_every_hub(two_hubs: tuple[Hub, Hub], engine: Engine) -> None:
    """Captured notifications (collection names from SQLAlchemy tables, odd values) cross
    Redis intact; the sync session commits in a worker thread, as in a ``def`` endpoint."""
    a, b = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    Base.metadata.create_all(engine)
    sessions = Notifier(a).attach(sessionmaker(engine))

    def commit() -> None:
        with sessions.begin() as s:
            s.add(Forum(id=1, name="f"))

    await asyncio.to_thread(commit)
    Notifier(a).notify("odd", "update", {"value": object()})  # not JSON: sent as its str()
    got = await receive(on_b, lambda got: len(got) == 2, "both on B")
    assert [(m["collection"], m["action"]) for m in got] == [("forums", "insert"), ("odd", "update")]
    assert got[0]["data"] == {"id": 1} and got[1]["data"]["value"].startswith("<object object")


def test_broker_url_is_checked() -> None:
    with pytest.raises(ValueError, match="expected None, a Broker, or a URL"):
        Hub(broker="amqp://localhost")
    with pytest.raises(ValueError, match="stream=...\\) expected a non-empty str"):
        RedisBroker(stream="")
    with pytest.raises(ValueError, match="max_pending=...\\) expected an int >= 1, got 0"):
        RedisBroker(max_pending=0)


# -- faults, against a private redis-server ----------------------------------------------------


async def test_redis_down_at_startup_then_up(private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    async with Hub(broker=RedisBroker(private_redis.url)) as hub:
        sub = hub.subscribe()
        frames(sub)
        started = time.monotonic()
        hub.publish([N(1)])  # returns at once although nothing listens
        assert time.monotonic() - started < 0.1
        await until(lambda: hub.stats().broker == "disconnected", "the reader to notice")
        await until(lambda: "lost Redis" in caplog.text, "the warning")
        # The reason, not just the type (redis-py 8's repr says only "network:ConnectionError").
        assert "redis.exceptions.ConnectionError: Error " in caplog.text and "connecting to 127.0.0.1" in caplog.text
        private_redis.start()
        await until(lambda: hub.stats().broker == "connected", "the reader to connect", timeout=15)
        got = await receive(sub, bool, "the batch that waited", timeout=15)
        assert [m["data"] for m in got] == [{"id": 1}]  # it waited, in order; nothing was lost


async def test_redis_restart_mid_stream_means_resync(private_redis: PrivateRedis) -> None:
    private_redis.start()
    async with Hub(broker=RedisBroker(private_redis.url)) as hub:
        await until(lambda: hub.stats().broker == "connected", "the reader")
        sub = hub.subscribe()
        hub.publish([N(1)])
        await until(lambda: hub.stats().published == 1, "the first notification")
        before = frames(sub)[-1]["id"]
        private_redis.stop()  # and its stream with it: it keeps nothing on disk
        hub.publish([N(2)])  # commits carry on meanwhile
        await until(lambda: hub.stats().broker == "disconnected", "the reader to notice")
        private_redis.start()
        got = await receive(sub, lambda got: any(m.get("type") == "resync" for m in got),
                            "resync after the restart", timeout=15)
        assert hub.stats().gaps >= 1
        hub.publish([N(3)])
        await receive(sub, lambda got: any(m.get("data") == {"id": 3} for m in got),
                      "live notifications again", timeout=15)
        # No replay across the gap: a client that saw only what came before must reload.
        assert [m["type"] for m in frames(hub.subscribe(last_id=before))] == ["welcome", "resync"]


async def test_connection_killed_but_redis_kept_its_data_means_no_resync(private_redis: PrivateRedis) -> None:
    """The reader proves continuity on reconnection (its last entry is still in the
    stream): a dropped connection alone costs the clients nothing."""
    private_redis.start()
    broker = RedisBroker(private_redis.url)
    async with Hub(broker=broker) as hub:
        await until(lambda: hub.stats().broker == "connected", "the reader")
        sub = hub.subscribe()
        frames(sub)
        hub.publish([N(1)])
        await receive(sub, bool, "the first")
        killed = redis.Redis.from_url(private_redis.url).client_kill_filter(_type="normal", skipme=True)
        assert killed >= 2  # the reader's and the writer's connections
        await until(lambda: hub.stats().broker == "disconnected" or broker.errors > 0, "the reader to notice")
        await until(lambda: hub.stats().broker == "connected", "the reader to reconnect", timeout=15)
        hub.publish([N(2)])
        got = await receive(sub, bool, "the next one", timeout=15)
        assert [m.get("data") for m in got] == [{"id": 2}]  # no resync, no duplicate
        assert hub.stats().gaps == 0


async def test_a_write_whose_reply_was_lost_is_not_sent_twice(redis_url: str, stream: str) -> None:
    """A pipeline that reached Redis although the call failed (the reply was lost) is
    recognised by its tokens and not written again: no duplicate, no needless resync."""
    broker = RedisBroker(redis_url, stream=stream)
    real_write = broker.write
    failures = [ConnectionError("reply lost")]

    async def reply_lost(batches: list[tuple[int, list[Notification]]], lost: str | None) -> None:
        await real_write(batches, lost)
        if failures:
            raise failures.pop()

    broker.write = reply_lost  # type: ignore[method-assign]
    async with Hub(broker=broker) as hub:
        await until(lambda: hub.stats().broker == "connected", "the reader")
        sub = hub.subscribe()
        frames(sub)
        hub.publish([N(1)])
        await receive(sub, bool, "the batch")
        hub.publish([N(2)])  # the outbox carries on after confirming
        got = await receive(sub, bool, "the next batch")
        assert [m.get("data") for m in got] == [{"id": 2}]
        assert redis.Redis.from_url(redis_url).xlen(stream) == 2  # each written once
        assert hub.stats().gaps == 0 and broker.errors == 1


def test_the_password_of_the_url_is_never_shown() -> None:
    broker = RedisBroker("redis://app:s3cr3t@127.0.0.1:6379/0")
    assert "s3cr3t" not in repr(broker) and "app:***@127.0.0.1:6379" in repr(broker)


async def test_a_stopped_broker_primes_the_next_hub_again(redis_url: str, stream: str) -> None:
    broker = RedisBroker(redis_url, stream=stream)
    async with Hub(broker=broker) as hub:
        sub = hub.subscribe()
        frames(sub)
        hub.publish([N(1)])
        first = (await receive(sub, bool, "the batch"))[0]["id"]
    async with Hub(broker=broker) as again:
        assert again.cursor == first  # its window holds the stream's tail
        sub = again.subscribe(last_id="0-0:0")
        assert [m.get("data") for m in frames(sub)][1:] == [{"id": 1}]  # a replay, not a resync
