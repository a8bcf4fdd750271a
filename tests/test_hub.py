"""The Hub on its own: hand-off, cursors, replay, filtering, overflow, stats."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import threading
import types
from typing import Any

import pytest

from sqla_notify import Entry, Frame, Hub, HubStats, Notification, Subscriber
from sqla_notify import _report
from sqla_notify._hub import subscriber as _subscriber
from sqla_notify._hub.hub import _START_CHUNK, _START_MAX

from .support.hubs import receive

pytestmark = pytest.mark.anyio


def N(collection: str = "forums", id: int = 1, action: str = "insert") -> Notification:
    return Notification(collection, action, {"id": id})


async def settle() -> None:
    """Let call_soon callbacks (the hub's dispatch) run."""
    for _ in range(3):
        await asyncio.sleep(0)


def texts(sub: Subscriber) -> list[dict[str, Any]]:
    """Everything queued for ``sub``, decoded, emptying its queue."""
    return [json.loads(frame if isinstance(frame, str) else frame.text) for frame in sub.receive_nowait()]


async def test_publish_from_loop_and_threads() -> None:
    async with Hub() as hub:
        sub = hub.subscribe()
        hub.publish([N(id=1)])
        worker = threading.Thread(target=hub.publish, args=([N(id=2), N(id=3)],))
        worker.start()
        worker.join()
        for _ in range(100):  # the thread's batch arrives through call_soon_threadsafe
            await settle()
            if hub.stats().published == 3:
                break
        got = texts(sub)
    assert got[0] == {"type": "welcome", "cursor": got[0]["cursor"], "connection": sub.id}
    assert sorted(m["data"]["id"] for m in got[1:]) == [1, 2, 3]
    # cursors are "<epoch>-<seq>", consecutive, and the welcome one came before all
    epoch = got[0]["cursor"].split("-")[0]
    assert [m["id"] for m in got[1:]] == [f"{epoch}-{i}" for i in (1, 2, 3)]


async def test_batches_handed_over_in_one_loop_step_are_delivered_by_one_callback_in_order_each_with_its_commit_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqla_notify._hub.hub as hub_module

    async with Hub() as hub:
        sub = hub.subscribe()
        sub.receive_nowait()
        loop = asyncio.get_running_loop()
        scheduled: list[object] = []
        call_soon = loop.call_soon

        def counting(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
            scheduled.append(callback)
            return call_soon(callback, *args, **kwargs)

        clock = iter([100.0, 101.0, 102.0])
        monkeypatch.setattr(loop, "call_soon", counting)
        monkeypatch.setattr(hub_module, "time", types.SimpleNamespace(time=lambda: next(clock)))
        hub.publish([N(id=1)])
        hub.publish([N(id=2), N(id=3)])
        hub.publish([N(id=4)])
        assert len(scheduled) == 1  # one callback for the three
        monkeypatch.undo()
        await settle()
        got = sub.receive_nowait()
    assert [(e.notification.data, e.committed) for e in got if isinstance(e, Entry)] == [
        ({"id": 1}, 100.0), ({"id": 2}, 101.0), ({"id": 3}, 101.0), ({"id": 4}, 102.0),
    ]


async def test_a_burst_of_hand_overs_waiting_for_the_loop_adds_no_object_the_collector_tracks() -> None:
    # A burst published in one loop step waits for the drain; what the hub keeps per
    # hand-over must not be another object for the collector to count and walk.
    async with Hub(queue_size=2000) as hub:
        sub = hub.subscribe()
        sub.receive_nowait()
        batch = [N(id=1)]  # the same list each time: only what the hub adds is counted
        hub.publish(batch)  # the first schedules the drain
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for _ in range(1000):
                hub.publish(batch)
            added = len(gc.get_objects()) - before
        finally:
            gc.enable()
        assert added < 100, added  # a tuple per hand-over: 1,000
        await settle()
        assert len([f for f in sub.receive_nowait() if isinstance(f, Entry)]) == 1001


async def test_a_burst_of_posts_each_in_a_list_of_its_own_leaves_no_tracked_object_per_post() -> None:
    # As capture and bench_broadcast publish: a new list per notification. The hub keeps the
    # notification, not its list (which the caller then frees), and delivers it as before.
    async with Hub(queue_size=2000) as hub:
        sub = hub.subscribe()
        sub.receive_nowait()
        posts = [N(id=i) for i in range(1000)]
        hub.publish([N(id=-1)])
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for n in posts:
                hub.publish([n])
            added = len(gc.get_objects()) - before
        finally:
            gc.enable()
        assert added < 100, added  # each list kept until the drain: 1,000
        hub.publish([N(id=1000), N(id=1001)])  # a batch of several: as it was
        await settle()
        got = [f.notification.data for f in sub.receive_nowait() if isinstance(f, Entry)]
    assert got == [{"id": i} for i in range(-1, 1002)]


async def test_encoded_once_for_all_clients() -> None:
    async with Hub() as hub:
        a, b = hub.subscribe(), hub.subscribe()
        hub.publish([N()])
        await settle()
        frame_a, frame_b = a.receive_nowait()[-1], b.receive_nowait()[-1]
    assert frame_a is frame_b  # the same entry, its text encoded once


async def test_subscription_filter_and_update() -> None:
    async with Hub() as hub:
        sub = hub.subscribe(frozenset({"forums"}))
        texts(sub)
        hub.publish([N("forums", 1), N("containers", 2)])
        await settle()
        assert [m["collection"] for m in texts(sub)] == ["forums"]
        hub.update(sub, frozenset({"containers"}))
        hub.publish([N("forums", 3), N("containers", 4)])
        await settle()
        assert texts(sub) == [
            {"type": "subscribed", "collections": ["containers"]},
            {"id": hub.cursor, "collection": "containers", "action": "insert", "data": {"id": 4}},
        ]


async def test_authorize_applies_to_live_and_replay() -> None:
    def only_even(principal: Any, n: Notification) -> bool:
        return principal == "alice" and n.data is not None and n.data["id"] % 2 == 0

    async with Hub() as hub:
        start = hub.cursor
        hub.publish([N(id=i) for i in range(1, 5)])
        await settle()
        sub = hub.subscribe(last_id=start, principal="alice", authorize=only_even)
        hub.publish([N(id=5), N(id=6)])
        await settle()
        assert [m["data"]["id"] for m in texts(sub)[1:]] == [2, 4, 6]


async def test_resume_replays_exactly_what_was_missed() -> None:
    async with Hub() as hub:
        hub.publish([N(id=1), N(id=2)])
        await settle()
        last_seen = hub.cursor
        hub.publish([N(id=3), N(id=4)])
        await settle()
        sub = hub.subscribe(last_id=last_seen)
        hub.publish([N(id=5)])
        await settle()
        got = texts(sub)
    assert got[0]["type"] == "welcome"
    assert [m["data"]["id"] for m in got[1:]] == [3, 4, 5]  # no gap, no duplicate
    assert hub.stats().replays == 1


@pytest.mark.parametrize("last_id", ["0-1", "garbage", "", "abc-def"])
async def test_unknown_or_foreign_id_gets_resync(last_id: str) -> None:
    async with Hub() as hub:
        hub.publish([N()])
        await settle()
        sub = hub.subscribe(last_id=last_id or None)
        got = texts(sub)
    if last_id:
        assert got[1] == {"type": "resync", "cursor": hub.cursor, "reason": "cannot replay from that id; reload"}
    else:
        assert [m["type"] for m in got] == ["welcome"]


async def test_id_older_than_window_gets_resync() -> None:
    async with Hub(replay=3) as hub:
        start = hub.cursor
        hub.publish([N(id=i) for i in range(5)])
        await settle()
        got = texts(hub.subscribe(last_id=start))
    assert got[1]["type"] == "resync" and len(got) == 2


async def test_quiet_collection_resumes_without_resync() -> None:
    # Busy "containers" pushed the quiet client's last "forums" id out of the window, but
    # the client missed no forum: it must not be asked to reload everything.
    async with Hub(replay=3) as hub:
        hub.publish([N("forums", 1)])
        await settle()
        last = hub.cursor
        hub.publish([N("containers", i) for i in range(10)])
        await settle()
        quiet = texts(hub.subscribe(frozenset({"forums"}), last_id=last))
        everything = texts(hub.subscribe(None, last_id=last))
    assert [m.get("type") for m in quiet] == ["welcome"]
    assert everything[1]["type"] == "resync"


async def test_client_that_stops_reading_gets_resync_then_1013() -> None:
    async with Hub(queue_size=3) as hub:
        sub = hub.subscribe()
        texts(sub)  # its writer took the welcome and is still sending it: busy
        hub.publish([N(id=1)])
        hub.publish([N(id=2), N(id=3)])  # queued whole: the bound applies between transactions
        hub.publish([N(id=4)])  # a queue's worth waits and the writer has not come back
        await settle()
        got = texts(sub)
        assert [m["type"] for m in got] == ["resync"]
        assert got[0]["reason"].startswith("too slow") and got[0]["cursor"] == hub.cursor
        assert sub.close_code is None  # told once; it carries on
        for i in range(5, 9):  # took the resync and stopped reading again
            hub.publish([N(id=i)])
        await settle()
        assert sub.close_code is None  # its writer took frames since the resync: told again
        assert [m["type"] for m in texts(sub)] == ["resync"]
        for i in range(9, 16):  # ... and now, told again without reading it: given up on
            hub.publish([N(id=i)])
        await settle()
        assert sub.close_code == 1013
        stats = hub.stats()
    assert stats.slow_disconnects == 1 and stats.connections == 0
    assert stats.frames_dropped >= 6 and stats.resyncs == 3


async def test_overflow_close_policy() -> None:
    async with Hub(queue_size=2, overflow="close") as hub:
        sub = hub.subscribe()
        texts(sub)
        hub.publish([N(id=1), N(id=2)])
        hub.publish([N(id=3)])
        await settle()
    assert sub.close_code == 1013


async def test_transaction_larger_than_the_queue_is_one_resync_at_its_end() -> None:
    async with Hub(queue_size=3) as hub:
        sub = hub.subscribe()
        texts(sub)
        hub.publish([N(id=1)])
        hub.publish([N(id=i) for i in range(2, 12)])  # ten rows: more than the queue holds
        await settle()
        end = hub.cursor
        hub.publish([N(id=12)])
        await settle()
        got = texts(sub)
        stats, code = hub.stats(), sub.close_code
    # Never part of the transaction: the resync says "reload as of its end", then it goes on.
    assert [m.get("type") or m["data"]["id"] for m in got] == ["resync", 12]
    assert got[0]["cursor"] == end and got[0]["reason"].startswith("backlog")
    assert code is None and stats.slow_disconnects == 0 and stats.resyncs == 1


async def test_burst_before_the_writer_runs_is_a_backlog_not_a_slow_client() -> None:
    async with Hub(queue_size=3) as hub:
        sub = hub.subscribe()
        texts(sub)
        assert sub.receive_nowait() == []  # its writer sent the welcome and came back: idle
        for i in range(1, 7):  # six transactions in one loop step: the writer never ran
            hub.publish([N(id=i)])
        await settle()
        got = texts(sub)
        stats, code = hub.stats(), sub.close_code
    assert [m.get("type") or m["data"]["id"] for m in got] == ["resync", 5, 6]
    assert got[0]["reason"].startswith("backlog") and got[0]["cursor"].endswith("-4")
    assert code is None and stats.slow_disconnects == 0


async def test_replay_that_fills_the_queue_arrives_whole_after_the_welcome() -> None:
    async with Hub(replay=20, queue_size=5) as hub:
        hub.publish([N(id=0)])
        await settle()
        start = hub.cursor
        for i in range(1, 16):
            hub.publish([N(id=i)])
        await settle()
        sub = hub.subscribe(last_id=start)  # 15 to replay: three queues' worth
        hub.publish([N(id=16)])  # live, before the writer's first step
        await settle()
        got = texts(sub)
    assert got[0]["type"] == "welcome"
    assert [m["data"]["id"] for m in got[1:]] == list(range(1, 17))


async def test_frames_iterator_and_shutdown() -> None:
    hub = Hub()
    async with hub:
        sub = hub.subscribe()
        frames = sub.frames()
        first = await frames.__anext__()
        assert len(first) == 1  # the welcome
        hub.publish([N(id=1), N(id=2)])
        batch = await asyncio.wait_for(frames.__anext__(), 5)
        assert len(batch) == 2  # drained together
        waiting = asyncio.ensure_future(frames.__anext__())
        await settle()
    with pytest.raises(StopAsyncIteration):  # leaving "async with hub" ends every stream
        await asyncio.wait_for(waiting, 5)
    assert sub.close_code == 1001


async def test_keepalive_yields_empty_batches() -> None:
    async with Hub() as hub:
        frames = hub.subscribe().frames(keepalive=0.01)
        await frames.__anext__()  # welcome
        assert await asyncio.wait_for(frames.__anext__(), 5) == []


async def test_not_running_drops_and_counts() -> None:
    hub = Hub()
    hub.publish([N()])
    assert hub.stats() == HubStats(0, 0, 0, 0, 0, 0, dropped_not_running=1)
    async with hub:
        with pytest.raises(RuntimeError, match="already running"):
            await hub.__aenter__()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replay": -1}, "replay=...\\) expected an int >= 0, got -1"),
        ({"queue_size": 0}, "queue_size=...\\) expected an int >= 1, got 0"),
        ({"overflow": "drop"}, "overflow=...\\) expected 'resync' or 'close', got 'drop'"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Hub(**kwargs)


async def test_failing_authorize_denies_and_spares_others(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(principal: Any, n: Notification) -> bool:
        raise KeyError("role")

    monkeypatch.setattr(_subscriber, "AUTHORIZE_ERRORS", _report.HookErrors("authorize"))  # a fresh throttle

    async with Hub() as hub:
        victim = hub.subscribe(authorize=broken)
        bystander = hub.subscribe()
        hub.publish([N(id=1)])
        await settle()
        assert [m.get("type") for m in texts(victim)] == ["welcome"]
        assert [m.get("id") is not None for m in texts(bystander)] == [False, True]
    # Logged by type, never with the principal, the notification or the message (item 8).
    assert "authorize raised builtins.KeyError" in caplog.text and "'role'" not in caplog.text


async def test_a_burst_starts_each_writer_once() -> None:
    """Writers start after the dispatches that are ready (a burst), once per subscriber: one
    writer run then sends the whole burst instead of one run per notification."""
    hub = Hub()
    async with hub:
        sub = hub.subscribe()
        sub.receive_nowait()
        starts: list[int] = []

        def start() -> None:  # a writer that sends everything at once
            starts.append(len(sub.receive_nowait()))
            sub.writer_done()

        sub.set_writer(start)
        for i in range(3):
            hub.publish([N(id=i)])
        await settle()
        assert starts == [3]
    await settle()  # shutting down: the writer starts for the close frame; nothing else is left
    assert starts == [3, 0] and sub.close_code == 1001


async def test_writers_that_wait_start_a_few_per_loop_step() -> None:
    """A notification to many clients starts every writer that sends at once (finishes) in
    the same event-loop step, but at most _START_CHUNK writers that are left waiting (tasks)
    per step: never thousands of pending tasks at once (they would survive into the
    collector's old generations and cause full collections)."""
    async with Hub() as hub:
        count = 2 * _START_CHUNK + 5
        started: list[int] = []

        def start(i: int, waits: bool) -> bool:
            started.append(i)
            return waits

        subs = [hub.subscribe() for _ in range(2 * count)]
        for i, sub in enumerate(subs):
            sub.receive_nowait()
            # Every other writer waits: the others finish at once and do not count.
            sub.set_writer(functools.partial(start, i, i % 2 == 1))
        hub.publish([N(id=1)])
        await asyncio.sleep(0)  # the dispatch runs; it schedules the first chunk
        waited: list[int] = []  # writers left waiting, per step
        while len(started) < 2 * count and len(waited) < 10:
            before = len(started)
            await asyncio.sleep(0)
            waited.append(sum(i % 2 for i in started[before:]))
        # Each step ends at its _START_CHUNK-th waiting writer (the finished ones met before it
        # started too), until what is left holds fewer.
        assert waited == [_START_CHUNK, _START_CHUNK, 5]
        assert sorted(started) == list(range(2 * count))  # each once


async def test_writers_that_finish_at_once_all_start_in_one_loop_step() -> None:
    """Writers that send at once and finish leave nothing behind: up to _START_MAX of them
    start in one step, as a bare send loop would send to every client in one go."""
    async with Hub() as hub:
        count = _START_MAX + 3
        started: list[int] = []
        subs = [hub.subscribe() for _ in range(count)]
        for i, sub in enumerate(subs):
            sub.receive_nowait()
            sub.set_writer(functools.partial(started.append, i))  # returns None: finished
        hub.publish([N(id=1)])
        await asyncio.sleep(0)
        chunks: list[int] = []
        while len(started) < count and len(chunks) < 10:
            before = len(started)
            await asyncio.sleep(0)
            chunks.append(len(started) - before)
        assert chunks == [_START_MAX, 3]


async def test_names_given_by_a_broker_resume_and_expire_with_the_window() -> None:
    """A broker that delivers to every process in one order names notifications alike
    (PostgreSQL): a client resumes from such a name while it is in the window."""
    async with Hub(replay=3) as hub:
        hub._dispatch([N(id=1), N(id=2)], ["b1:0", "b1:1"])
        hub._dispatch([N(id=3)], ["b2:0"])
        assert hub.cursor == "b2:0"
        resumed = texts(hub.subscribe(last_id="b1:0"))
        assert [m.get("id") for m in resumed] == [None, "b1:1", "b2:0"]  # welcome, then the rest
        hub._dispatch([N(id=4)], ["b3:0"])  # b1:0 leaves the window
        assert [m["type"] for m in texts(hub.subscribe(last_id="b1:0"))] == ["welcome", "resync"]
        assert [m.get("id") for m in texts(hub.subscribe(last_id="b1:1"))] == [None, "b2:0", "b3:0"]


@pytest.mark.parametrize("last_id", ["{epoch}-²", "{epoch}-" + "9" * 5000, "{epoch}-1\nevent: x", "", "-"])
async def test_garbage_last_id_is_a_resync(last_id: str) -> None:
    async with Hub() as hub:
        hub.publish([N()])
        await settle()
        epoch = hub.cursor.split("-")[0]
        got = texts(hub.subscribe(last_id=last_id.replace("{epoch}", epoch)))
    assert [m["type"] for m in got] == ["welcome", "resync"]


async def test_broker_ids_that_could_break_framing_never_go_out() -> None:
    async with Hub() as hub:
        sub = hub.subscribe()
        texts(sub)
        hub._dispatch([N(id=1)], ["abc:0\nevent: forged"])
        hub._dispatch([N(id=2)], ["abc:1"])
        got = texts(sub)
        stats = hub.stats()
    assert [m.get("type") or m["id"] for m in got] == ["resync", "abc:1"]
    assert stats.gaps == 1 and "invalid id" in stats.last_gap


async def test_a_transaction_that_cannot_be_built_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def notifications(self) -> list[Notification]:
            raise RuntimeError("cannot build")

    async with Hub() as hub:
        sub = hub.subscribe()
        hub._publish_pending(Broken())  # type: ignore[arg-type]
        hub.publish([N(id=1)])  # what comes after is delivered
        got = await receive(sub, lambda got: len(got) == 2, "the welcome and the next batch")
    assert [m.get("data") for m in got] == [None, {"id": 1}]
    assert hub.stats().build_errors == 1
    assert [r.event for r in caplog.records] == ["capture_error"]  # type: ignore[attr-defined]


async def test_a_lone_notification_goes_to_the_transport_at_once_a_burst_is_queued_for_one_writer_run() -> None:
    """A hand-over alone in its loop step is sent at once (the transport's ``send``); several
    in one step (a burst of commits) are queued, and the client's writer sends them in one run."""
    async with Hub() as hub:
        sub = hub.subscribe(["forums"])
        sub.receive_nowait()
        sub.receive_nowait()  # the welcome, as if sent: idle
        at_once: list[Frame] = []
        runs: list[int] = []

        def send(frame: Frame) -> bool:
            at_once.append(frame)
            return True

        def start() -> None:
            runs.append(len(sub.receive_nowait()))
            sub.receive_nowait()  # [] : done

        sub.set_writer(start, send)
        hub.publish([N(id=1)])
        await asyncio.sleep(0)
        assert len(at_once) == 1 and runs == []
        for i in range(3):  # three commits in one step
            hub.publish([N(id=10 + i)])
        await asyncio.sleep(0)  # the drain queues them; the writer starts at the end of the step
        await asyncio.sleep(0)
        assert len(at_once) == 1 and runs == [3]
        hub.publish([N(id=20)])  # alone again: at once
        await asyncio.sleep(0)
        assert len(at_once) == 2 and runs == [3]
        hub.unsubscribe(sub)
