"""sqla_notify.metrics: the /metrics route, scraped and parsed after real traffic."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from sqla_notify import Hub, Notifier
from sqla_notify._timing import BROKER_LAG, DELIVERY, Buckets
from sqla_notify.fastapi import ALL, notify_router
from sqla_notify.metrics import NotifyCollector, metrics_router, observe_with_opentelemetry, readings
from sqla_notify.postgres import PostgresBroker

from .models import Base, Forum
from .support.hubs import N, until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    """GET /metrics, parsed by prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class World:
    def __init__(self, tmp_path: Path, hub: Hub) -> None:
        self.hub = hub
        self.engine = create_engine(f"sqlite:///{tmp_path / 'metrics.db'}")
        Base.metadata.create_all(self.engine)
        self.notifier = Notifier(hub)
        self.sessions = self.notifier.attach(sessionmaker(self.engine))

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> Any:
            async with hub:
                yield

        app = FastAPI(lifespan=lifespan)
        self.router = notify_router(hub, collections=ALL)
        app.include_router(self.router, prefix="/notify")
        app.include_router(metrics_router(hub, router=self.router, notifier=self.notifier))
        self.app = app

    def add_forum(self, name: str = "f") -> int:
        with self.sessions.begin() as session:
            forum = Forum(name=name)
            session.add(forum)
            session.flush()
            return forum.id


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, Hub(queue_size=2))
    yield w
    w.engine.dispose()


def test_scrape_after_a_commit_a_slow_client_a_resync_and_a_replay(world: World) -> None:
    latency_before = DELIVERY.snapshot()[1]
    with TestClient(world.app) as client:
        portal = client.portal
        assert portal is not None
        with client.websocket_connect("/notify/ws") as ws:
            json.loads(ws.receive_text())  # welcome
            world.add_forum()
            first = json.loads(ws.receive_text())
            assert first["action"] == "insert"
            # The writer observes once the send has returned: just after the client got it.
            wait(lambda: DELIVERY.snapshot()[1] > latency_before, "the commit→send observation")

            async def slow_clients() -> None:
                hub = world.hub
                stalled, idle = hub.subscribe(), hub.subscribe()
                stalled.receive_nowait()  # took its welcome and never comes back: busy
                for k in range(5):  # 2 fit; the 3rd: resync ("too slow"); the 5th: closed (1013)
                    hub.publish([N(100 + k)])
                    await until(lambda k=k: hub.stats().published == 2 + k, "the publication")
                assert stalled.close_code == 1013
                # ``idle`` took nothing, not even its welcome: not slow, backlogged (the 3rd
                # and the 5th each replace what waited after the welcome with a resync).
                assert idle.close_code is None

            portal.call(slow_clients)
            for _ in range(5):
                ws.receive_text()  # the live client got all five
        with client.websocket_connect(f"/notify/ws?last_id={first['id']}") as again:
            json.loads(again.receive_text())  # welcome, then the five it missed
            replayed = [json.loads(again.receive_text()) for _ in range(5)]
            assert [f["data"]["id"] for f in replayed] == [100, 101, 102, 103, 104]
            samples = scrape(client)

    assert value(samples, "sqla_notify_connections") == 2  # the replayed client and ``idle``
    assert value(samples, "sqla_notify_router_connections") == 1
    assert value(samples, "sqla_notify_notifications_published_total") == 6
    assert value(samples, "sqla_notify_notifier_batches_total") == 1  # the commit (the rest: publish())
    assert value(samples, "sqla_notify_slow_disconnects_total") == 1
    assert value(samples, "sqla_notify_resyncs_total") == 3  # 1 too slow, 2 backlog
    assert value(samples, "sqla_notify_replays_total") == 1
    assert value(samples, "sqla_notify_frames_dropped_total") >= 2  # what waited for the slow client
    assert value(samples, "sqla_notify_frames_sent_total") >= 6 + 5
    assert value(samples, "sqla_notify_router_refused_total", reason="origin") == 0
    assert ("sqla_notify_broker_state", (("state", "connected"),)) not in samples  # no broker
    # Queue depth, at scrape time: ``idle`` holds its welcome and a resync, the replayed
    # client what its writer has not taken yet (it read everything: most likely 0).
    assert value(samples, "sqla_notify_queue_depth_count") == 2
    assert value(samples, "sqla_notify_queue_depth_bucket", le="+Inf") == 2
    assert value(samples, "sqla_notify_queue_depth_bucket", le="0.0") <= 1
    # Latency: at least the first commit's frame, weighted by the frames of its wake-up.
    count = value(samples, "sqla_notify_commit_to_send_seconds_count")
    assert count > latency_before
    assert value(samples, "sqla_notify_commit_to_send_seconds_bucket", le="+Inf") == count
    assert value(samples, "sqla_notify_commit_to_send_seconds_sum") >= 0


@pytest.mark.anyio
async def test_queue_depths_are_read_per_client() -> None:
    async with Hub(queue_size=2) as hub:
        reader, waiting = hub.subscribe(), hub.subscribe()
        reader.receive_nowait()
        hub.publish([N(1)])
        await until(lambda: hub.stats().published == 1, "the publication")
        assert sorted(hub.queue_depths()) == [1, 2]  # a notification; the welcome and it
        hub.unsubscribe(waiting)
        assert hub.queue_depths() == [1]


def test_buckets_are_cumulative_and_le_inclusive() -> None:
    b = Buckets((0.1, 1.0))
    for v, w in ((0.1, 1), (0.5, 2), (7.0, 1)):
        b.observe(v, w)
    cumulative, count, total = b.snapshot()
    assert cumulative == [(0.1, 1), (1.0, 3), (float("inf"), 4)]
    assert count == 4 and total == pytest.approx(8.1)
    with pytest.raises(ValueError, match="increasing"):
        Buckets((1.0, 0.5))


def test_redis_broker_state_and_lag(redis_url: str, stream: str, tmp_path: Path) -> None:
    from sqla_notify.redis import RedisBroker

    lag_before = BROKER_LAG.snapshot()[1]
    world = World(tmp_path, Hub(broker=RedisBroker(redis_url, stream=stream)))
    try:
        with TestClient(world.app) as client:
            portal = client.portal
            assert portal is not None
            with client.websocket_connect("/notify/ws") as ws:
                json.loads(ws.receive_text())
                world.add_forum()
                assert json.loads(ws.receive_text())["action"] == "insert"
            samples = scrape(client)
    finally:
        world.engine.dispose()
    assert value(samples, "sqla_notify_broker_state", state="connected") == 1
    assert value(samples, "sqla_notify_broker_state", state="disconnected") == 0
    assert value(samples, "sqla_notify_broker_pending_batches") == 0
    assert value(samples, "sqla_notify_broker_gaps_total") == 0
    assert value(samples, "sqla_notify_broker_rejected_total") == 0  # Redis signs nothing
    assert value(samples, "sqla_notify_broker_lag_seconds_count") > lag_before


def test_postgres_payloads_carry_when_they_were_sent() -> None:
    """The broker lag of PostgreSQL counts from a time the payload carries (just before the
    sender's COMMIT); a payload from a version without it counts from its reading."""
    broker = PostgresBroker("postgresql://127.0.0.1/unused")
    before = time.time()
    (payload,) = broker.payloads([N(1)])
    (batch,) = broker._deliver(payload)
    assert batch.written_at is not None and before <= batch.written_at <= time.time()  # type: ignore[union-attr]
    old = '{"i":"0123456789abcdef","o":0,"b":[{"collection":"c","action":"insert"}]}'
    (batch,) = broker._deliver(old)
    assert batch.written_at is None  # type: ignore[union-attr]


def test_opentelemetry_instruments_read_the_same_counters() -> None:
    created: dict[str, tuple[str, Any]] = {}

    class Meter:  # the two calls of the OpenTelemetry API that it makes
        def create_observable_counter(self, name: str, callbacks: list[Any], description: str) -> None:
            created[name] = ("counter", callbacks[0])

        def create_observable_gauge(self, name: str, callbacks: list[Any], description: str) -> None:
            created[name] = ("gauge", callbacks[0])

    hub = Hub()
    hub.publish([N(1)])  # not running: counted as dropped
    observe_with_opentelemetry(hub, meter=Meter())
    assert set(created) == {r.name for r in readings(hub)}
    kind, callback = created["sqla_notify_dropped_not_running"]
    assert kind == "counter"
    assert [o.value for o in callback(None)] == [1]
    assert created["sqla_notify_connections"][0] == "gauge"
    observe_with_opentelemetry(hub)  # the API's own (no-op until an SDK is configured) accepts them


def test_the_route_needs_a_hub() -> None:
    with pytest.raises(TypeError, match="expected a Hub"):
        metrics_router(object())  # type: ignore[arg-type]


def test_a_wakeup_is_one_observation_weighted_by_its_frames() -> None:
    from sqla_notify._hub.subscriber import Entry
    from sqla_notify._timing import LATENCY_BOUNDS, sent

    def entry(committed: float) -> Entry:
        return Entry(1, "e-1", N(1), "{}", committed)

    for late in (0.0004, 0.0015, 0.003, 0.2, 3.0, 100.0, -1.0):
        before, _, _ = DELIVERY.snapshot()
        sent([entry(1000.0), "{}", entry(1000.0)], _clock=functools.partial(float.__add__, 1000.0, late))
        after, _, _ = DELIVERY.snapshot()
        added = [a - b for (_, a), (_, b) in zip(after, before)]
        # cumulative: 0 below the bucket of ``late``, 3 (the batch's length) from it on
        first = next(i for i, n in enumerate(added) if n)
        assert set(added[first:]) == {3} and not any(added[:first])
        le = (*LATENCY_BOUNDS, float("inf"))[first]
        assert max(late, 0.0) <= le and (first == 0 or late > LATENCY_BOUNDS[first - 1])
    count = DELIVERY.snapshot()[1]
    sent(["{}", entry(1.0)])  # a welcome first: the connection's first wake-up, not counted
    sent([entry(0.0)])  # no commit time (a replay marked as such)
    sent([])
    assert DELIVERY.snapshot()[1] == count


def test_without_a_collector_the_writers_do_not_time(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqla_notify import _timing

    monkeypatch.setattr(_timing, "observing", False)  # as in a process that built no collector
    count = DELIVERY.snapshot()[1]
    with TestClient(world.app) as client, client.websocket_connect("/notify/ws") as ws:
        portal = client.portal
        assert portal is not None
        json.loads(ws.receive_text())
        world.add_forum()
        assert json.loads(ws.receive_text())["action"] == "insert"

        async def writing() -> list[bool]:
            return [sub.writing for sub in world.hub._subscribers]

        wait(lambda: portal.call(writing) == [False], "the writer's end")
    assert DELIVERY.snapshot()[1] == count
    assert not _timing.observing
    NotifyCollector(world.hub)
    assert _timing.observing


def test_module_surfaces_are_documented() -> None:
    import inspect

    from sqla_notify import health, metrics

    assert health.__all__ == ("Health", "health_router", "liveness", "readiness")
    assert metrics.__all__ == (
        "BROKER_STATES", "NotifyCollector", "Reading", "metrics_router", "observe_with_opentelemetry", "readings",
    )
    for module in (health, metrics):
        assert inspect.getdoc(module)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


@pytest.mark.anyio
async def test_a_real_server_times_websocket_and_sse_sends(tmp_path: Path) -> None:
    """uvicorn, a WebSocket client and an SSE stream: each send is observed by its transport."""
    import httpx
    import websockets

    from .support.servers import Server

    server = Server(tmp_path, APP_METRICS="1")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:

            async def observed() -> float:
                samples = {
                    s.name: s.value
                    for family in text_string_to_metric_families((await http.get("/metrics")).text)
                    for s in family.samples
                }
                return samples["sqla_notify_commit_to_send_seconds_count"]

            async def until_more(than: float) -> float:
                deadline = time.monotonic() + 10
                while (now := await observed()) <= than:
                    assert time.monotonic() < deadline, "the send was not observed"
                return now

            start = await observed()
            async with websockets.connect(server.ws) as ws:
                assert json.loads(await ws.recv())["type"] == "welcome"
                await http.post("/forums/sync", params={"name": "ws"})
                assert json.loads(await ws.recv())["action"] == "insert"
                after_ws = await until_more(start)
            async with http.stream("GET", "/notify/events?collections=forums") as response:
                lines = response.aiter_lines()
                while not (await lines.__anext__()).startswith("data: "):
                    pass  # the welcome
                await http.post("/forums/sync", params={"name": "sse"})
                while not (await lines.__anext__()).startswith("data: "):
                    pass
                await until_more(after_ws)
    finally:
        server.stop()
